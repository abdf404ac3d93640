//! `POST /{version}/{phone_number_id}/messages` (and `/marketing_messages`): the hot path.
//! Checks run in Meta's order — token, request shape, number, template, recipient, pair limit,
//! throughput — then injected faults and latency. Everything before the answer is synchronous
//! and takes one per-number lock; the only await is the simulated latency.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::to_bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::config::{SimConfig, TemplateStatus};
use super::customers;
use super::errors::{ApiError, Code};
use super::listener::Connection;
use super::state::{Refusal, Shared, digits};
use super::webhooks::StatusEvent;
use super::{authorize, check_version};
use crate::domain::Category;

/// Bodies beyond this are refused unread; a template send is a few kilobytes.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Meta's limit on `biz_opaque_callback_data`.
const MAX_CALLBACK_DATA_CHARS: usize = 512;

/// Which send endpoint was called: decides the pricing category of the webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    MarketingMessages,
}

pub async fn messages(
    state: State<Arc<Shared>>,
    connection: ConnectInfo<Connection>,
    path: Path<(String, String)>,
    request: Request,
) -> Response {
    send(state, connection, path, request, Endpoint::Messages).await
}

pub async fn marketing_messages(
    state: State<Arc<Shared>>,
    connection: ConnectInfo<Connection>,
    path: Path<(String, String)>,
    request: Request,
) -> Response {
    send(
        state,
        connection,
        path,
        request,
        Endpoint::MarketingMessages,
    )
    .await
}

/// An accepted send, to be answered once the latency has passed.
struct Accepted {
    input: String,
    wa_id: String,
    wamid: String,
    /// Accepted and counted, but the connection is cut instead of answered.
    drop_connection: bool,
}

async fn send(
    State(sim): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    Path((version, phone_number_id)): Path<(String, String)>,
    request: Request,
    endpoint: Endpoint,
) -> Response {
    // The whole request rather than `HeaderMap` and `Bytes` extractors: those copy the headers.
    let (parts, body) = request.into_parts();
    let decided = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => decide(
            &sim,
            &version,
            &phone_number_id,
            &parts.headers,
            &body,
            endpoint,
        ),
        Err(_) => Err(ApiError::invalid_parameter(format!(
            "The request body is larger than {MAX_BODY_BYTES} bytes."
        ))),
    };
    if let Err(error) = &decided {
        sim.count_rejected(error.code);
    }
    let delay = latency(&sim);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match decided {
        Ok(accepted) if accepted.drop_connection => {
            connection.cut();
            StatusCode::OK.into_response()
        }
        Ok(accepted) => Json(SendSuccess {
            messaging_product: "whatsapp",
            contacts: [Contact {
                input: &accepted.input,
                wa_id: &accepted.wa_id,
            }],
            messages: [MessageRef {
                id: &accepted.wamid,
                message_status: "accepted",
            }],
        })
        .into_response(),
        Err(error) => error.into_response(),
    }
}

/// The request body, borrowed from the bytes. Only what Meta validates is read; components
/// are skipped without being built.
#[derive(Deserialize)]
struct SendRequest<'a> {
    #[serde(borrow, default)]
    messaging_product: Option<Text<'a>>,
    #[serde(borrow, default)]
    to: Option<Text<'a>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    template: Option<TemplateParam<'a>>,
    #[serde(borrow, default)]
    biz_opaque_callback_data: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct TemplateParam<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    language: Option<LanguageParam<'a>>,
}

#[derive(Deserialize)]
struct LanguageParam<'a> {
    #[serde(borrow, default)]
    code: Option<Text<'a>>,
}

/// A JSON string borrowed from the request body, or copied where escapes force it. (serde
/// borrows a `Cow` only as a bare field, not inside an `Option`.)
struct Text<'a>(Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
        }

        deserializer.deserialize_str(TextVisitor).map(Text)
    }
}

/// A request that passed validation.
struct ValidSend<'a> {
    to: &'a str,
    template: &'a str,
    language: &'a str,
    callback_data: Option<&'a str>,
}

/// Meta's request validation: error 100 naming the parameter.
fn validate<'a>(request: &'a SendRequest<'a>) -> Result<ValidSend<'a>, ApiError> {
    match request.messaging_product.as_deref() {
        Some("whatsapp") => {}
        Some(other) => {
            return Err(ApiError::invalid_parameter(format!(
                "Param messaging_product must be 'whatsapp', got '{other}'"
            )));
        }
        None => {
            return Err(ApiError::invalid_parameter(
                "The parameter messaging_product is required.",
            ));
        }
    }
    let to = request
        .to
        .as_deref()
        .filter(|to| !to.trim().is_empty())
        .ok_or_else(|| ApiError::invalid_parameter("The parameter to is required."))?;
    let well_formed = to.chars().any(|c| c.is_ascii_digit())
        && to
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')'));
    if !well_formed {
        return Err(ApiError::invalid_parameter(
            "Param to must be a phone number.",
        ));
    }
    match request.kind.as_deref() {
        Some("template") => {}
        other => {
            return Err(ApiError::invalid_parameter(format!(
                "Param type must be 'template' (the simulator sends templates only), got {}",
                other.map_or("nothing".to_owned(), |k| format!("'{k}'"))
            )));
        }
    }
    let template = request
        .template
        .as_ref()
        .ok_or_else(|| ApiError::invalid_parameter("The parameter template is required."))?;
    let name = template
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_parameter("The parameter template['name'] is required.")
        })?;
    let language = template
        .language
        .as_ref()
        .and_then(|l| l.code.as_deref())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_parameter("The parameter template['language']['code'] is required.")
        })?;
    let callback_data = request.biz_opaque_callback_data.as_deref();
    if callback_data.is_some_and(|d| d.chars().count() > MAX_CALLBACK_DATA_CHARS) {
        return Err(ApiError::invalid_parameter(format!(
            "Param biz_opaque_callback_data must be at most {MAX_CALLBACK_DATA_CHARS} characters long."
        )));
    }
    Ok(ValidSend {
        to,
        template: name,
        language,
        callback_data,
    })
}

/// Every check, in order, and the bookkeeping of an acceptance.
fn decide(
    sim: &Shared,
    version: &str,
    phone_number_id: &str,
    headers: &HeaderMap,
    body: &[u8],
    endpoint: Endpoint,
) -> Result<Accepted, ApiError> {
    check_version(version)?;
    // Graph authenticates before it reads parameters: a bad token with a bad body is a 190.
    authorize(sim, headers)?;
    let request: SendRequest<'_> = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_parameter(format!("The request body is not valid JSON: {e}"))
    })?;
    let send = validate(&request)?;
    if !sim.knows_number(phone_number_id) {
        return Err(ApiError::unknown_object("post", phone_number_id));
    }
    let category = template_category(sim, phone_number_id, &send)?;
    let wa_id = digits(send.to);
    if sim.undeliverable(&wa_id) {
        return Err(ApiError::new(Code::Undeliverable));
    }

    let config = &sim.config;
    let refusal = injected_refusal(config);
    let drop_connection =
        config.fault_drop_ratio > 0.0 && rand::rng().random_bool(config.fault_drop_ratio);

    sim.slot(phone_number_id)
        .admit(&wa_id, refusal)
        .map_err(ApiError::new)?;

    sim.count_accepted(send.callback_data);
    let wamid = sim.next_wamid();
    if let Some(queue) = &sim.webhooks {
        let event = StatusEvent {
            wamid: wamid.clone(),
            phone_number_id: phone_number_id.to_owned(),
            recipient_id: wa_id.clone(),
            callback_data: send.callback_data.map(str::to_owned),
            category: match endpoint {
                Endpoint::MarketingMessages => "marketing_lite",
                Endpoint::Messages => category.as_str(),
            },
            accepted_at: sim.clock.now_unix(),
            fate: customers::fate(config, &wa_id),
        };
        queue.push(event, &sim.webhook_lost);
    }
    Ok(Accepted {
        input: send.to.to_owned(),
        wa_id,
        wamid,
        drop_connection,
    })
}

/// A random 130429 or server error, drawn before the limits are asked so that it can be
/// applied only to a send they would have accepted.
fn injected_refusal(config: &SimConfig) -> Refusal {
    let mut rng = rand::rng();
    if config.fault_130429_ratio > 0.0 && rng.random_bool(config.fault_130429_ratio) {
        Refusal::RateLimit
    } else if config.fault_5xx_ratio > 0.0 && rng.random_bool(config.fault_5xx_ratio) {
        // Meta's two server-side failures: an internal error and an unavailable service.
        Refusal::ServerError(if rng.random_bool(0.5) {
            Code::Internal
        } else {
            Code::Unavailable
        })
    } else {
        Refusal::None
    }
}

/// The template's category if it may be sent: 132001 if missing (or another account's),
/// 132015 if paused, 132016 if disabled. Unchecked templates price as marketing, the
/// bulk case.
fn template_category(
    sim: &Shared,
    phone_number_id: &str,
    send: &ValidSend<'_>,
) -> Result<Category, ApiError> {
    if !sim.checks_templates() {
        return Ok(Category::Marketing);
    }
    let missing = || ApiError::template_missing(send.template, send.language);
    let template = sim
        .template(send.template, send.language)
        .ok_or_else(missing)?;
    // Another account's template does not exist for this sender.
    if template
        .account_id
        .as_deref()
        .is_some_and(|owner| owner != sim.account_of(phone_number_id))
    {
        return Err(missing());
    }
    match template.status {
        status if status.sendable() => Ok(template.category),
        TemplateStatus::Paused => Err(ApiError::new(Code::TemplatePaused)),
        TemplateStatus::Disabled => Err(ApiError::new(Code::TemplateDisabled)),
        _ => Err(missing()),
    }
}

/// The configured latency, its jitter and, for a share of requests, the slow fault.
fn latency(sim: &Shared) -> Duration {
    let config = &sim.config;
    let mut delay = config.latency;
    let mut rng = rand::rng();
    if !config.latency_jitter.is_zero() {
        delay += config.latency_jitter.mul_f64(rng.random::<f64>());
    }
    if config.fault_slow_ratio > 0.0 && rng.random_bool(config.fault_slow_ratio) {
        delay += config.fault_slow_delay;
    }
    delay
}

#[derive(Serialize)]
struct SendSuccess<'a> {
    messaging_product: &'static str,
    contacts: [Contact<'a>; 1],
    messages: [MessageRef<'a>; 1],
}

#[derive(Serialize)]
struct Contact<'a> {
    input: &'a str,
    wa_id: &'a str,
}

#[derive(Serialize)]
struct MessageRef<'a> {
    id: &'a str,
    message_status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<(), String> {
        let request: SendRequest<'_> = serde_json::from_str(body).map_err(|e| e.to_string())?;
        validate(&request).map(|_| ()).map_err(|e| format!("{e:?}"))
    }

    const VALID: &str = r#"{"messaging_product":"whatsapp","to":"+4915112345678","type":"template",
        "template":{"name":"flash_sale","language":{"code":"de"},"components":[{"type":"body"}]}}"#;

    #[test]
    fn a_complete_template_send_is_valid() {
        assert_eq!(parse(VALID), Ok(()));
    }

    #[test]
    fn each_missing_or_wrong_field_is_named() {
        let cases = [
            (
                r#""messaging_product":"whatsapp","#,
                "",
                "messaging_product is required",
            ),
            (
                r#""messaging_product":"whatsapp""#,
                r#""messaging_product":"sms""#,
                "'sms'",
            ),
            (r#""to":"+4915112345678","#, "", "to is required"),
            (
                r#""+4915112345678""#,
                r#""call me""#,
                "must be a phone number",
            ),
            (r#""type":"template","#, r#""type":"text","#, "'text'"),
            (r#""name":"flash_sale","#, "", "template['name']"),
            (r#"{"code":"de"}"#, "{}", "['language']['code']"),
        ];
        for (from, to, expect) in cases {
            let body = VALID.replacen(from, to, 1);
            assert_ne!(body, VALID, "case {from} did not apply");
            let err = parse(&body).unwrap_err();
            assert!(err.contains(expect), "{from} -> {err}");
        }
    }

    #[test]
    fn strings_with_escapes_are_read_too() {
        let body = VALID.replacen("flash_sale", "flash\\u005fsale", 1);
        let request: SendRequest<'_> = serde_json::from_str(&body).unwrap();
        let send = validate(&request).unwrap();
        assert_eq!(send.template, "flash_sale");
        assert_eq!(send.to, "+4915112345678");
    }

    #[test]
    fn callback_data_is_limited_to_512_characters() {
        let at_limit = VALID.replacen(
            "\"type\"",
            &format!(
                "\"biz_opaque_callback_data\":\"{}\",\"type\"",
                "ä".repeat(512)
            ),
            1,
        );
        assert_eq!(parse(&at_limit), Ok(()));
        let over = VALID.replacen(
            "\"type\"",
            &format!(
                "\"biz_opaque_callback_data\":\"{}\",\"type\"",
                "k".repeat(513)
            ),
            1,
        );
        assert!(parse(&over).unwrap_err().contains("512"));
    }
}
