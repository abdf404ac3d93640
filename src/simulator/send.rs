//! `POST /{version}/{phone_number_id}/messages` (and `/marketing_messages`): the hot path.
//! Checks run in Meta's order — token, request shape, number, template, recipient, the
//! customer-service window (free-form messages only), pair limit, throughput — then injected
//! faults and latency. Everything before the answer is synchronous and takes one per-number
//! lock (a template send asks the windows only once an inbound message opened one); the only
//! await is the simulated latency.

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
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::config::{SimConfig, TemplateStatus};
use super::customers;
use super::errors::{ApiError, Code};
use super::listener::Connection;
use super::state::{Kind, Refusal, Shared, digits};
use super::webhooks::StatusEvent;
use super::windows::{self, Sent};
use super::{authorize, check_version};
use crate::domain::Category;

/// Bodies beyond this are refused unread; a template send is a few kilobytes.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Meta's limit on `biz_opaque_callback_data`.
const MAX_CALLBACK_DATA_CHARS: usize = 512;
/// Meta's limit on a free-form text's `text.body`.
const MAX_TEXT_BODY_CHARS: usize = 4096;
/// The free-form message types besides `text`, each carried in a field of its name.
const SESSION_TYPES: [&str; 9] = [
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
];

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
#[derive(Debug)]
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
    /// The free-form types' contents: only their shape is checked.
    #[serde(borrow, default)]
    text: Option<Param<TextParam<'a>>>,
    #[serde(default)]
    image: Option<Shape>,
    #[serde(default)]
    video: Option<Shape>,
    #[serde(default)]
    audio: Option<Shape>,
    #[serde(default)]
    document: Option<Shape>,
    #[serde(default)]
    sticker: Option<Shape>,
    #[serde(default)]
    location: Option<Shape>,
    #[serde(default)]
    contacts: Option<Shape>,
    #[serde(default)]
    interactive: Option<Shape>,
    #[serde(default)]
    reaction: Option<Shape>,
}

impl SendRequest<'_> {
    /// The content field of a free-form type other than `text`.
    fn session_content(&self, kind: &str) -> Option<Shape> {
        match kind {
            "image" => self.image,
            "video" => self.video,
            "audio" => self.audio,
            "document" => self.document,
            "sticker" => self.sticker,
            "location" => self.location,
            "contacts" => self.contacts,
            "interactive" => self.interactive,
            "reaction" => self.reaction,
            _ => None,
        }
    }
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

#[derive(Deserialize)]
struct TextParam<'a> {
    #[serde(borrow, default)]
    body: Option<Text<'a>>,
}

/// The JSON kind of a value whose contents the simulator does not read (a media object, a
/// location, …), found without building it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Object,
    /// An array and whether it holds anything (`contacts` is a list).
    Array {
        empty: bool,
    },
    /// A string, number or boolean.
    Scalar,
}

/// A field that should be an object: read as `T` when it is one, otherwise only noted, so a
/// wrong shape is Meta's error 100 naming the field rather than a JSON syntax error.
enum Param<T> {
    Object(T),
    NotObject,
}

/// The visits of JSON scalars, all answering `$value`: a scalar is neither an object nor a list.
macro_rules! scalars_are {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShapeVisitor;

        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            scalars_are!(Shape::Scalar);

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Shape::Object)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut empty = true;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    empty = false;
                }
                Ok(Shape::Array { empty })
            }
        }

        deserializer.deserialize_any(ShapeVisitor)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Param<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ParamVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ParamVisitor<T> {
            type Value = Param<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            scalars_are!(Param::NotObject);

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Param<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Param::Object)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Param<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Param::NotObject)
            }
        }

        deserializer.deserialize_any(ParamVisitor(std::marker::PhantomData))
    }
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
    content: Content<'a>,
    callback_data: Option<&'a str>,
}

/// What a valid send carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content<'a> {
    Template {
        name: &'a str,
        language: &'a str,
    },
    /// A free-form message: sendable only inside the customer's service window.
    Session,
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
    let content = match request.kind.as_deref() {
        Some("template") => template_content(request)?,
        Some("text") => text_content(request)?,
        Some(kind) if SESSION_TYPES.contains(&kind) => session_content(request, kind)?,
        other => {
            return Err(ApiError::invalid_parameter(format!(
                "Param type must be 'template', 'text' or one of {}, got {}",
                SESSION_TYPES.map(|t| format!("'{t}'")).join(", "),
                other.map_or("nothing".to_owned(), |k| format!("'{k}'"))
            )));
        }
    };
    let callback_data = request.biz_opaque_callback_data.as_deref();
    if callback_data.is_some_and(|d| d.chars().count() > MAX_CALLBACK_DATA_CHARS) {
        return Err(ApiError::invalid_parameter(format!(
            "Param biz_opaque_callback_data must be at most {MAX_CALLBACK_DATA_CHARS} characters long."
        )));
    }
    Ok(ValidSend {
        to,
        content,
        callback_data,
    })
}

fn template_content<'a>(request: &'a SendRequest<'a>) -> Result<Content<'a>, ApiError> {
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
    Ok(Content::Template { name, language })
}

/// A free-form text: `text.body`, non-empty and at most 4096 characters.
fn text_content<'a>(request: &'a SendRequest<'a>) -> Result<Content<'a>, ApiError> {
    let body = match &request.text {
        None => None,
        Some(Param::Object(text)) => text.body.as_deref(),
        Some(Param::NotObject) => {
            return Err(ApiError::invalid_parameter(
                "Param text must be an object with a body.",
            ));
        }
    };
    let body = body.ok_or_else(|| {
        ApiError::invalid_parameter("The parameter text['body'] is required for type text.")
    })?;
    if body.trim().is_empty() {
        return Err(ApiError::invalid_parameter(
            "Param text['body'] must not be empty.",
        ));
    }
    // Bytes bound characters from above: most bodies need no count.
    if body.len() > MAX_TEXT_BODY_CHARS && body.chars().count() > MAX_TEXT_BODY_CHARS {
        return Err(ApiError::invalid_parameter(format!(
            "Param text['body'] must be at most {MAX_TEXT_BODY_CHARS} characters long."
        )));
    }
    Ok(Content::Session)
}

/// A free-form message of another type: an object under the type's name (a non-empty list
/// for `contacts`, as Meta takes it). Its contents are not checked.
fn session_content<'a>(request: &SendRequest<'_>, kind: &str) -> Result<Content<'a>, ApiError> {
    let want_list = kind == "contacts";
    match request.session_content(kind) {
        None => Err(ApiError::invalid_parameter(format!(
            "The parameter {kind} is required for type {kind}."
        ))),
        Some(Shape::Object) if !want_list => Ok(Content::Session),
        Some(Shape::Array { empty: false }) if want_list => Ok(Content::Session),
        Some(_) if want_list => Err(ApiError::invalid_parameter(
            "Param contacts must be a non-empty list of contacts.",
        )),
        Some(_) => Err(ApiError::invalid_parameter(format!(
            "Param {kind} must be an object."
        ))),
    }
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
    if endpoint == Endpoint::MarketingMessages && send.content == Content::Session {
        return Err(ApiError::invalid_parameter(
            "Param type must be 'template': marketing_messages sends marketing templates only.",
        ));
    }
    if !sim.knows_number(phone_number_id) {
        return Err(ApiError::unknown_object("post", phone_number_id));
    }
    let sent = match send.content {
        Content::Template { name, language } => {
            let category = template_category(sim, phone_number_id, name, language)?;
            Sent::Template(match endpoint {
                Endpoint::MarketingMessages => "marketing_lite",
                Endpoint::Messages => category.as_str(),
            })
        }
        Content::Session => Sent::Session,
    };
    let wa_id = digits(send.to);
    if sim.undeliverable(&wa_id) {
        return Err(ApiError::new(Code::Undeliverable));
    }
    // Free-form messages only inside the window; templates only ask it for their price.
    let (kind, session_window) = match sent {
        Sent::Session => {
            let window = sim
                .windows
                .at(phone_number_id, &wa_id, sim.clock.now_unix());
            if !window.is_open() {
                return Err(ApiError::new(Code::ReEngagement));
            }
            (Kind::Session, Some(window))
        }
        Sent::Template(_) => (Kind::Template, None),
    };

    let config = &sim.config;
    let refusal = injected_refusal(config);
    let drop_connection =
        config.fault_drop_ratio > 0.0 && rand::rng().random_bool(config.fault_drop_ratio);

    sim.slot(phone_number_id)
        .admit(&wa_id, refusal, kind)
        .map_err(ApiError::new)?;

    sim.count_accepted(send.callback_data, kind);
    let wamid = sim.next_wamid();
    if let Some(queue) = &sim.webhooks {
        let accepted_at = sim.clock.now_unix();
        // One atomic load for a template while no inbound message has opened a window.
        let window =
            session_window.unwrap_or_else(|| sim.windows.at(phone_number_id, &wa_id, accepted_at));
        let event = StatusEvent {
            wamid: wamid.clone(),
            phone_number_id: phone_number_id.to_owned(),
            recipient_id: wa_id.clone(),
            callback_data: send.callback_data.map(str::to_owned),
            price: windows::price(sent, window),
            accepted_at,
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
    name: &str,
    language: &str,
) -> Result<Category, ApiError> {
    if !sim.checks_templates() {
        return Ok(Category::Marketing);
    }
    let missing = || ApiError::template_missing(name, language);
    let template = sim.template(name, language).ok_or_else(missing)?;
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
            (r#""type":"template","#, r#""type":"fax","#, "'fax'"),
            (r#""type":"template","#, "", "got nothing"),
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
        assert_eq!(
            send.content,
            Content::Template {
                name: "flash_sale",
                language: "de"
            }
        );
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

    /// A free-form send of `kind` with `content` under its name.
    fn session(kind: &str, content: &str) -> String {
        format!(
            r#"{{"messaging_product":"whatsapp","recipient_type":"individual","to":"+4915112345678","type":"{kind}","{kind}":{content}}}"#
        )
    }

    #[test]
    fn every_free_form_type_is_valid_with_its_content() {
        assert_eq!(
            parse(&session(
                "text",
                r#"{"preview_url":false,"body":"Hi Anna"}"#
            )),
            Ok(())
        );
        for kind in SESSION_TYPES {
            let content = if kind == "contacts" {
                r#"[{"name":{"formatted_name":"Anna"}}]"#
            } else {
                r#"{"id":"1234","nested":{"a":[1,2,{"b":null}]}}"#
            };
            assert_eq!(parse(&session(kind, content)), Ok(()), "{kind}");
            let body = session(kind, content);
            let request: SendRequest<'_> = serde_json::from_str(&body).unwrap();
            assert_eq!(validate(&request).unwrap().content, Content::Session);
        }
    }

    #[test]
    fn a_free_form_type_without_its_content_names_the_missing_param() {
        for kind in SESSION_TYPES.into_iter().chain(["text"]) {
            let body = format!(
                r#"{{"messaging_product":"whatsapp","to":"+4915112345678","type":"{kind}"}}"#
            );
            let err = parse(&body).unwrap_err();
            assert!(err.contains(&format!("parameter {kind}")), "{kind}: {err}");
            assert!(err.contains("InvalidParameter"), "{kind}: {err}");
        }
    }

    #[test]
    fn a_free_form_content_of_the_wrong_shape_names_the_param() {
        for (kind, content, says) in [
            (
                "image",
                r#""https://example.com/a.jpg""#,
                "Param image must be an object",
            ),
            ("location", "[1,2]", "Param location must be an object"),
            ("reaction", "true", "Param reaction must be an object"),
            ("interactive", "42", "Param interactive must be an object"),
            (
                "contacts",
                r#"{"name":{}}"#,
                "Param contacts must be a non-empty list",
            ),
            ("contacts", "[]", "Param contacts must be a non-empty list"),
            ("text", r#""Hi""#, "Param text must be an object"),
            (
                "text",
                r#"{"preview_url":true}"#,
                "text['body'] is required",
            ),
            ("text", r#"{"body":"  "}"#, "text['body'] must not be empty"),
        ] {
            let err = parse(&session(kind, content)).unwrap_err();
            assert!(err.contains(says), "{kind} {content}: {err}");
        }
    }

    #[test]
    fn a_text_body_may_hold_4096_characters_and_no_more() {
        let at_limit = session("text", &format!(r#"{{"body":"{}"}}"#, "ä".repeat(4096)));
        assert_eq!(parse(&at_limit), Ok(()));
        let over = session("text", &format!(r#"{{"body":"{}"}}"#, "a".repeat(4097)));
        let err = parse(&over).unwrap_err();
        assert!(
            err.contains("text['body']") && err.contains("4096"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_type_is_named() {
        let err = parse(&session("fax", "{}")).unwrap_err();
        assert!(err.contains("'fax'"), "{err}");
    }

    use std::sync::atomic::Ordering::Relaxed;
    use tokio::sync::mpsc;

    use crate::simulator::config::SimTemplate;
    use crate::simulator::webhooks::WebhookQueue;
    use crate::simulator::windows::Price;

    const SENDER: &str = "106540352242922";
    const CUSTOMER: &str = "4915112345678";

    /// A simulator state whose status webhooks land in the returned receiver.
    fn sim_with_queue() -> (Shared, mpsc::Receiver<StatusEvent>) {
        let (queue, rx) = WebhookQueue::new();
        let config = SimConfig {
            templates: vec![
                SimTemplate::approved("flash_sale", "de", Category::Marketing),
                SimTemplate::approved("order_update", "de", Category::Utility),
            ],
            ..SimConfig::default()
        };
        (
            Shared::new(config, "127.0.0.1:1".parse().unwrap(), Some(queue)),
            rx,
        )
    }

    fn post(sim: &Shared, body: &str) -> Result<Accepted, ApiError> {
        decide(
            sim,
            "v25.0",
            SENDER,
            &HeaderMap::new(),
            body.as_bytes(),
            Endpoint::Messages,
        )
    }

    fn template(name: &str) -> String {
        VALID.replacen("flash_sale", name, 1)
    }

    fn text() -> String {
        session("text", r#"{"body":"Your order ships today."}"#)
    }

    /// The price the status webhooks of the last accepted send carry.
    fn price_of_last(rx: &mut mpsc::Receiver<StatusEvent>) -> Price {
        rx.try_recv().expect("a status event was queued").price
    }

    #[test]
    fn a_free_form_send_without_an_open_window_is_131047_and_uses_up_nothing() {
        let (sim, mut rx) = sim_with_queue();
        let err = post(&sim, &text()).expect_err("refused");
        assert_eq!(err.code, Code::ReEngagement);
        assert_eq!(err.code.number(), 131047);
        assert_eq!(err.code.status(), StatusCode::BAD_REQUEST);
        assert!(rx.try_recv().is_err());
        assert_eq!(sim.stats().accepted, 0);
        // Another customer's window does not count.
        sim.windows
            .open(SENDER, "4915100000000", sim.clock.now_unix(), false);
        assert_eq!(post(&sim, &text()).unwrap_err().code, Code::ReEngagement);
        // Nor does the same customer's window with another business number.
        sim.windows.open("1", CUSTOMER, sim.clock.now_unix(), false);
        assert_eq!(post(&sim, &text()).unwrap_err().code, Code::ReEngagement);
    }

    #[test]
    fn inside_the_window_a_free_form_send_is_accepted_free_and_counted_as_session() {
        let (sim, mut rx) = sim_with_queue();
        sim.windows
            .open(SENDER, CUSTOMER, sim.clock.now_unix(), false);
        let accepted = post(&sim, &text()).expect("accepted");
        assert_eq!(accepted.wa_id, CUSTOMER);
        assert_eq!(
            price_of_last(&mut rx),
            Price {
                billable: false,
                kind: "free_customer_service",
                category: "service"
            }
        );
        let image = session("image", r#"{"id":"1234"}"#);
        assert!(post(&sim, &image).is_ok());
        assert!(post(&sim, &template("flash_sale")).is_ok());
        let stats = sim.stats();
        assert_eq!((stats.accepted, stats.session_accepted), (3, 2));
        let number = &stats.numbers[SENDER];
        assert_eq!((number.accepted, number.session_accepted), (3, 2));
    }

    #[test]
    fn templates_are_priced_by_the_window_they_are_sent_in() {
        let billed = |category| Price {
            billable: true,
            kind: "regular",
            category,
        };
        let (sim, mut rx) = sim_with_queue();
        // No window: billed at the template's category.
        post(&sim, &template("order_update")).unwrap();
        assert_eq!(price_of_last(&mut rx), billed("utility"));
        // An ordinary window: utility free, marketing billed.
        sim.windows
            .open(SENDER, CUSTOMER, sim.clock.now_unix(), false);
        post(&sim, &template("order_update")).unwrap();
        assert_eq!(
            price_of_last(&mut rx),
            Price {
                billable: false,
                kind: "free_customer_service",
                category: "utility"
            }
        );
        post(&sim, &template("flash_sale")).unwrap();
        assert_eq!(price_of_last(&mut rx), billed("marketing"));
        // A free entry point: every template free.
        sim.windows
            .open(SENDER, CUSTOMER, sim.clock.now_unix(), true);
        post(&sim, &template("flash_sale")).unwrap();
        assert_eq!(
            price_of_last(&mut rx),
            Price {
                billable: false,
                kind: "free_entry_point",
                category: "referral_conversion"
            }
        );
        // Closed again: billed.
        sim.windows.close(None, None, sim.clock.now_unix());
        post(&sim, &template("flash_sale")).unwrap();
        assert_eq!(price_of_last(&mut rx), billed("marketing"));
        assert_eq!(sim.webhook_lost.load(Relaxed), 0);
    }

    #[test]
    fn marketing_messages_takes_templates_only() {
        let (sim, _rx) = sim_with_queue();
        sim.windows
            .open(SENDER, CUSTOMER, sim.clock.now_unix(), false);
        let err = decide(
            &sim,
            "v25.0",
            SENDER,
            &HeaderMap::new(),
            text().as_bytes(),
            Endpoint::MarketingMessages,
        )
        .unwrap_err();
        assert_eq!(err.code, Code::InvalidParameter);
    }
}
