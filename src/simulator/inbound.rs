//! Customers who write first (`POST /__sim/inbound`): the simulator posts an inbound-message
//! webhook in Meta's shape — a text, a quick-reply button, an interactive reply or an
//! unsupported type, optionally from a click-to-WhatsApp ad — signed like the status webhooks,
//! and opens the customer's service window before herald sees it. `POST /__sim/windows/close`
//! closes windows again. Errors are `{"error": "…"}` and never repeat a phone number: 400 a bad
//! request, 409 no webhook_url to post to, 502 the receiver did not answer.
//!
//! The request is read field by field from JSON rather than derived, so that no error message
//! quotes a value the caller sent (serde's would: `invalid type: integer 4915…`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::config::DEFAULT_PHONE_NUMBER_ID;
use super::state::{Shared, digits};
use super::webhooks::sign;

/// How long herald may take to answer one inbound POST; it acknowledges in well under a
/// second, and the caller of `/__sim/inbound` waits for every repetition.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most repetitions of one message: enough to play Meta's redeliveries.
const MAX_REPEAT: u32 = 10;
/// The longest text a customer's message holds, like a business's.
const MAX_TEXT_CHARS: usize = 4096;
/// The longest wamid, profile name or referral field the simulator takes.
const MAX_FIELD_CHARS: usize = 512;
/// Meta's error code on a message of a type the Cloud API does not support.
const UNSUPPORTED_CODE: u32 = 131051;

/// What the customer sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InboundType {
    /// A text message: `text.body`.
    #[default]
    Text,
    /// A tap on a template's quick-reply button: `button {payload, text}`.
    Button,
    /// A tap on an interactive message's reply button: `interactive.button_reply {id, title}`.
    Interactive,
    /// A message type the Cloud API does not support (a poll, …): `errors` with 131051.
    Unsupported,
}

impl InboundType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Button => "button",
            Self::Interactive => "interactive",
            Self::Unsupported => "unsupported",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [
            Self::Text,
            Self::Button,
            Self::Interactive,
            Self::Unsupported,
        ]
        .into_iter()
        .find(|t| t.as_str() == raw)
    }
}

/// The click-to-WhatsApp ad a message came from, in Meta's `referral` shape. Its presence opens
/// a 72 h free entry point instead of a 24 h window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    pub source_url: String,
    pub source_id: String,
    pub source_type: String,
    pub headline: String,
    pub body: String,
    pub media_type: String,
    pub image_url: String,
    pub ctwa_clid: String,
}

impl Default for Referral {
    /// A plausible ad, for `"referral": true`.
    fn default() -> Self {
        Self {
            source_url: "https://fb.me/3cr4Wqqkv".into(),
            source_id: "120210000000000001".into(),
            source_type: "ad".into(),
            headline: "Black Friday: 30 % off sneakers".into(),
            body: "Write us on WhatsApp for your code.".into(),
            media_type: "image".into(),
            image_url: "https://scontent.xx.fbcdn.net/v/t45.1600-4/ad.jpg".into(),
            ctwa_clid: "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0-eM-GABDLOPaOdRMv-_zfUQ2a".into(),
        }
    }
}

/// A customer's message to post (`POST /__sim/inbound`, [`SimHandle::inbound`]). It serialises
/// as that endpoint's body; the endpoint reads it with [`InboundRequest::from_json`], which also
/// takes `"referral": true`.
///
/// [`SimHandle::inbound`]: super::SimHandle::inbound
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundRequest {
    /// The customer's number: `+49…` or digits.
    pub from: String,
    /// The business number's `phone_number_id`; default the first configured number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(rename = "type")]
    pub kind: InboundType,
    /// The text's body, the button's text or the reply's title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The button's payload or the reply's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The ad the customer came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referral: Option<Referral>,
    /// The message's wamid; default a fresh one. The same id again is a redelivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The customer's profile name; default "Customer".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The wamid of the business's message being answered (`context.id`), as Meta adds to
    /// button replies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// How many times the same body is posted (1–10), as Meta redelivers.
    pub repeat: u32,
}

impl InboundRequest {
    /// A text from `from` with the defaults for everything else.
    pub fn text(from: &str, body: &str) -> Self {
        Self {
            from: from.to_owned(),
            to: None,
            kind: InboundType::Text,
            text: Some(body.to_owned()),
            payload: None,
            referral: None,
            id: None,
            name: None,
            context: None,
            repeat: 1,
        }
    }

    /// Reads the JSON body of `POST /__sim/inbound`; errors name the field, never its value.
    pub fn from_json(body: &[u8]) -> Result<Self, InboundError> {
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
            return Err(bad(
                "the body must be a JSON object such as {\"from\": \"+49…\", \"text\": \"Hi\"}",
            ));
        };
        let request = Self {
            from: string(&mut fields, "from")?.ok_or_else(|| bad("'from' is required"))?,
            to: string(&mut fields, "to")?,
            kind: match string(&mut fields, "type")? {
                None => InboundType::Text,
                Some(raw) => InboundType::parse(&raw).ok_or_else(|| {
                    bad("'type' must be one of text, button, interactive, unsupported")
                })?,
            },
            text: string(&mut fields, "text")?,
            payload: string(&mut fields, "payload")?,
            referral: match fields.remove("referral") {
                None | Some(Value::Null | Value::Bool(false)) => None,
                Some(Value::Bool(true)) => Some(Referral::default()),
                Some(Value::Object(given)) => Some(referral(given)?),
                Some(_) => return Err(bad("'referral' must be true or an object")),
            },
            id: string(&mut fields, "id")?,
            name: string(&mut fields, "name")?,
            context: string(&mut fields, "context")?,
            repeat: match fields.remove("repeat") {
                None | Some(Value::Null) => 1,
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad("'repeat' must be a whole number from 1 to 10"))?,
                Some(_) => return Err(bad("'repeat' must be a whole number from 1 to 10")),
            },
        };
        if let Some(key) = fields.keys().next() {
            return Err(unknown_field(key));
        }
        Ok(request)
    }
}

/// Takes a string field; a field of another type is an error naming it.
fn string(fields: &mut Map<String, Value>, name: &str) -> Result<Option<String>, InboundError> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("'{name}' must be a string"))),
    }
}

/// The ad's fields over the defaults.
fn referral(mut given: Map<String, Value>) -> Result<Referral, InboundError> {
    let mut ad = Referral::default();
    for (name, field) in [
        ("source_url", &mut ad.source_url),
        ("source_id", &mut ad.source_id),
        ("source_type", &mut ad.source_type),
        ("headline", &mut ad.headline),
        ("body", &mut ad.body),
        ("media_type", &mut ad.media_type),
        ("image_url", &mut ad.image_url),
        ("ctwa_clid", &mut ad.ctwa_clid),
    ] {
        if let Some(value) = string(&mut given, name)
            .map_err(|_| bad(format!("'referral.{name}' must be a string")))?
        {
            *field = value;
        }
    }
    match given.keys().next() {
        Some(key) => Err(unknown_field(&format!("referral.{key}"))),
        None => Ok(ad),
    }
}

/// An unknown field, named unless the name might be someone's number.
fn unknown_field(key: &str) -> InboundError {
    if key.chars().any(|c| c.is_ascii_digit()) || key.chars().count() > 40 {
        bad("the body has an unknown field")
    } else {
        bad(format!("unknown field '{key}'"))
    }
}

fn bad(message: impl Into<String>) -> InboundError {
    InboundError::BadRequest(message.into())
}

/// Why nothing was posted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error(
        "the simulator has no webhook_url to post inbound messages to (start it with --webhook-url)"
    )]
    NoWebhookUrl,
    #[error("{0}")]
    BadRequest(String),
    #[error("the simulator cannot build an HTTP client to post with")]
    NoClient,
}

impl InboundError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NoWebhookUrl => StatusCode::CONFLICT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NoClient => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What happened to a posted message: its wamid and herald's answer to each POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundPosted {
    pub id: String,
    /// The HTTP status herald answered the first POST with; `None` when it did not answer.
    pub status: Option<u16>,
    /// The status of every POST, in order (one per repetition).
    pub statuses: Vec<Option<u16>>,
    /// Why a POST got no answer (the first such).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl InboundPosted {
    /// Whether herald answered every POST with a 2xx.
    pub fn acknowledged(&self) -> bool {
        self.statuses
            .iter()
            .all(|s| s.is_some_and(|s| (200..300).contains(&s)))
    }
}

/// A request checked against the simulator: who writes to which number, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inbound {
    /// The wamid to post under, when the caller chose one.
    id: Option<String>,
    /// The customer's digits (`wa_id`).
    from: String,
    phone_number_id: String,
    name: String,
    message: Message,
    referral: Option<Referral>,
    context: Option<String>,
}

/// The message's content by type.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    Text { body: String },
    Button { payload: String, text: String },
    Interactive { id: String, title: String },
    Unsupported,
}

impl Inbound {
    fn parse(sim: &Shared, request: InboundRequest) -> Result<Self, InboundError> {
        let from = customer_digits(&request.from).ok_or_else(|| {
            bad("'from' must be the customer's number: an optional + and 7 to 15 digits")
        })?;
        let phone_number_id = match request.to {
            Some(to) => {
                let to = to.trim();
                if to.is_empty() || !to.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("'to' must be a phone_number_id (digits)"));
                }
                if !sim.knows_number(to) {
                    return Err(bad(
                        "'to' is not a business number of this simulator (see its --numbers)",
                    ));
                }
                to.to_owned()
            }
            None => sim
                .config
                .numbers
                .first()
                .map_or(DEFAULT_PHONE_NUMBER_ID, |n| n.id.as_str())
                .to_owned(),
        };
        let text = request
            .text
            .map(|t| within("text", t, MAX_TEXT_CHARS))
            .transpose()?;
        let payload = request
            .payload
            .map(|p| within("payload", p, MAX_FIELD_CHARS))
            .transpose()?;
        // A reply needs its payload or its text; the other one defaults to it.
        let reply = |kind: &str| match (payload.clone(), text.clone()) {
            (None, None) => Err(bad(format!("type {kind} needs 'payload' or 'text'"))),
            (p, t) => Ok((
                p.clone().or_else(|| t.clone()).unwrap_or_default(),
                t.or(p).unwrap_or_default(),
            )),
        };
        let message = match request.kind {
            InboundType::Text => Message::Text {
                body: text.clone().unwrap_or_else(|| "Hello".to_owned()),
            },
            InboundType::Button => {
                let (payload, text) = reply("button")?;
                Message::Button { payload, text }
            }
            InboundType::Interactive => {
                let (id, title) = reply("interactive")?;
                Message::Interactive { id, title }
            }
            InboundType::Unsupported => Message::Unsupported,
        };
        if !(1..=MAX_REPEAT).contains(&request.repeat) {
            return Err(bad("'repeat' must be a whole number from 1 to 10"));
        }
        let name = request
            .name
            .map(|n| within("name", n, MAX_FIELD_CHARS))
            .transpose()?
            .unwrap_or_else(|| "Customer".to_owned());
        let context = request.context.map(|c| wamid("context", c)).transpose()?;
        let id = request.id.map(|id| wamid("id", id)).transpose()?;
        if let Some(ad) = &request.referral {
            for field in [
                &ad.source_url,
                &ad.source_id,
                &ad.source_type,
                &ad.headline,
                &ad.body,
                &ad.media_type,
                &ad.image_url,
                &ad.ctwa_clid,
            ] {
                if field.chars().count() > MAX_FIELD_CHARS {
                    return Err(bad(format!(
                        "the referral's fields hold at most {MAX_FIELD_CHARS} characters"
                    )));
                }
            }
        }
        Ok(Self {
            id,
            from,
            phone_number_id,
            name,
            message,
            referral: request.referral,
            context,
        })
    }
}

/// A customer's number as digits, if it is one: an optional `+`, then 7 to 15 digits (spaces
/// and dashes ignored).
fn customer_digits(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let rest = raw.strip_prefix('+').unwrap_or(raw);
    let plausible = rest
        .chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-');
    let d = digits(rest);
    (plausible && (7..=15).contains(&d.len())).then_some(d)
}

fn within(name: &str, value: String, max: usize) -> Result<String, InboundError> {
    if value.trim().is_empty() {
        Err(bad(format!("'{name}' must not be empty")))
    } else if value.chars().count() > max {
        Err(bad(format!("'{name}' holds at most {max} characters")))
    } else {
        Ok(value)
    }
}

fn wamid(name: &str, value: String) -> Result<String, InboundError> {
    let value = within(name, value, MAX_FIELD_CHARS)?;
    if value.chars().any(char::is_whitespace) {
        return Err(bad(format!("'{name}' must be a wamid, without spaces")));
    }
    Ok(value)
}

/// Posts the customer's message `repeat` times to the webhook receiver, after opening (or
/// extending) their window, and says what herald answered.
pub async fn post(sim: &Shared, request: InboundRequest) -> Result<InboundPosted, InboundError> {
    let url = sim
        .config
        .webhook_url
        .as_deref()
        .ok_or(InboundError::NoWebhookUrl)?;
    let repeat = request.repeat;
    let inbound = Inbound::parse(sim, request)?;
    let client = sim
        .inbound_client
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(POST_TIMEOUT)
                .user_agent("facebookexternalua")
                .build()
                .ok()
        })
        .as_ref()
        .ok_or(InboundError::NoClient)?;
    let id = inbound.id.clone().unwrap_or_else(|| sim.next_wamid());
    let now = sim.clock.now_unix();
    // Before herald hears of it: a reply sent while handling the webhook finds the window open.
    sim.windows.open(
        &inbound.phone_number_id,
        &inbound.from,
        now,
        inbound.referral.is_some(),
    );
    let body = notification(sim, &inbound, &id, now);
    let signature = sim
        .config
        .app_secret
        .as_deref()
        .map(|secret| sign(secret, &body));
    let mut statuses = Vec::with_capacity(repeat as usize);
    let mut error = None;
    for _ in 0..repeat {
        let mut request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(signature) = &signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        let status = match request.send().await {
            Ok(response) => Some(response.status().as_u16()),
            Err(e) => {
                tracing::warn!(error = %e, "webhook receiver did not answer an inbound message");
                error.get_or_insert_with(|| format!("the webhook receiver did not answer: {e}"));
                None
            }
        };
        let counter = if status.is_some_and(|s| (200..300).contains(&s)) {
            &sim.inbound_posted
        } else {
            &sim.inbound_failed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        statuses.push(status);
    }
    Ok(InboundPosted {
        id,
        status: statuses.first().copied().flatten(),
        statuses,
        error,
    })
}

/// `POST /__sim/inbound`: 200 with what herald answered, 502 when it did not answer a POST.
pub async fn inbound(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = match InboundRequest::from_json(&body) {
        Ok(request) => request,
        Err(e) => return error(&e),
    };
    match post(&sim, request).await {
        Ok(posted) => {
            let status = if posted.error.is_some() {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::OK
            };
            (status, Json(posted)).into_response()
        }
        Err(e) => error(&e),
    }
}

/// Which windows to close (`POST /__sim/windows/close`): an empty body (all) or
/// `{"from": …, "to": …}`, each optional.
fn close_request(body: &[u8]) -> Result<(Option<String>, Option<String>), InboundError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None));
    }
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad(
            "the body must be empty or a JSON object {\"from\": \"+49…\", \"to\": \"<phone_number_id>\"}",
        ));
    };
    let from = string(&mut fields, "from")?;
    let to = string(&mut fields, "to")?;
    match fields.keys().next() {
        Some(key) => Err(unknown_field(key)),
        None => Ok((from, to)),
    }
}

/// Closes the windows of customer `from` (any number form), of business number `to`, of both
/// or (with neither) all; says how many were open.
pub fn close(sim: &Shared, from: Option<&str>, to: Option<&str>) -> Result<usize, InboundError> {
    let from = from
        .map(|from| {
            customer_digits(from).ok_or_else(|| {
                bad("'from' must be the customer's number: an optional + and 7 to 15 digits")
            })
        })
        .transpose()?;
    Ok(sim
        .windows
        .close(to.map(str::trim), from.as_deref(), sim.clock.now_unix()))
}

/// `POST /__sim/windows/close`: `{"closed": n}`.
pub async fn close_windows(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let closed =
        close_request(&body).and_then(|(from, to)| close(&sim, from.as_deref(), to.as_deref()));
    match closed {
        Ok(closed) => Json(json!({ "closed": closed })).into_response(),
        Err(e) => error(&e),
    }
}

fn error(e: &InboundError) -> Response {
    (e.status(), Json(json!({ "error": e.to_string() }))).into_response()
}

#[derive(Serialize)]
struct Notification<'a> {
    object: &'static str,
    entry: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    changes: [Change<'a>; 1],
}

#[derive(Serialize)]
struct Change<'a> {
    field: &'static str,
    value: ChangeValue<'a>,
}

#[derive(Serialize)]
struct ChangeValue<'a> {
    messaging_product: &'static str,
    metadata: Metadata<'a>,
    contacts: [Contact<'a>; 1],
    messages: [MessageOut<'a>; 1],
}

#[derive(Serialize)]
struct Metadata<'a> {
    display_phone_number: &'a str,
    phone_number_id: &'a str,
}

#[derive(Serialize)]
struct Contact<'a> {
    profile: Profile<'a>,
    wa_id: &'a str,
}

#[derive(Serialize)]
struct Profile<'a> {
    name: &'a str,
}

/// One message in Meta's key order: `context` and `referral` first, the type's content last.
#[derive(Serialize)]
struct MessageOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Context<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referral: Option<&'a Referral>,
    from: &'a str,
    id: &'a str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<[UnsupportedError; 1]>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<TextOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    button: Option<ButtonOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interactive: Option<InteractiveOut<'a>>,
}

#[derive(Serialize)]
struct Context<'a> {
    from: &'a str,
    id: &'a str,
}

#[derive(Serialize)]
struct TextOut<'a> {
    body: &'a str,
}

#[derive(Serialize)]
struct ButtonOut<'a> {
    payload: &'a str,
    text: &'a str,
}

#[derive(Serialize)]
struct InteractiveOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    button_reply: ReplyOut<'a>,
}

#[derive(Serialize)]
struct ReplyOut<'a> {
    id: &'a str,
    title: &'a str,
}

#[derive(Serialize)]
struct UnsupportedError {
    code: u32,
    title: &'static str,
    message: &'static str,
    error_data: ErrorData,
}

#[derive(Serialize)]
struct ErrorData {
    details: &'static str,
}

/// The raw body of the inbound webhook, as Meta posts it.
fn notification(sim: &Shared, inbound: &Inbound, id: &str, now: u64) -> Vec<u8> {
    let display = sim.display_digits_of(&inbound.phone_number_id);
    let mut message = MessageOut {
        context: inbound
            .context
            .as_deref()
            .map(|id| Context { from: &display, id }),
        referral: inbound.referral.as_ref(),
        from: &inbound.from,
        id,
        timestamp: now.to_string(),
        errors: None,
        kind: "text",
        text: None,
        button: None,
        interactive: None,
    };
    match &inbound.message {
        Message::Text { body } => message.text = Some(TextOut { body }),
        Message::Button { payload, text } => {
            message.kind = "button";
            message.button = Some(ButtonOut { payload, text });
        }
        Message::Interactive { id, title } => {
            message.kind = "interactive";
            message.interactive = Some(InteractiveOut {
                kind: "button_reply",
                button_reply: ReplyOut { id, title },
            });
        }
        Message::Unsupported => {
            message.kind = "unsupported";
            message.errors = Some([UnsupportedError {
                code: UNSUPPORTED_CODE,
                title: "Message type unknown",
                message: "Message type unknown",
                error_data: ErrorData {
                    details: "Message type is currently not supported.",
                },
            }]);
        }
    }
    serde_json::to_vec(&Notification {
        object: "whatsapp_business_account",
        entry: [Entry {
            id: sim.account_of(&inbound.phone_number_id),
            changes: [Change {
                field: "messages",
                value: ChangeValue {
                    messaging_product: "whatsapp",
                    metadata: Metadata {
                        display_phone_number: &display,
                        phone_number_id: &inbound.phone_number_id,
                    },
                    contacts: [Contact {
                        profile: Profile {
                            name: &inbound.name,
                        },
                        wa_id: &inbound.from,
                    }],
                    messages: [message],
                },
            }],
        }],
    })
    .expect("an inbound notification always serialises")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::simulator::config::{SimConfig, SimNumber};
    use crate::simulator::windows::InWindow;

    fn webhook_fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The simulator as the fixtures' business number.
    fn fixtures_sim(config: SimConfig) -> Shared {
        let mut number = SimNumber::new("106540352242922");
        number.display_phone_number = "+49 30 901820".into();
        number.account_id = Some("102290129340398".into());
        Shared::new(
            SimConfig {
                numbers: vec![number],
                ..config
            },
            "127.0.0.1:1".parse().unwrap(),
            None,
        )
    }

    /// The request that plays a fixture's message: its fields read back from the fixture.
    fn request_for(fixture: &Value) -> (InboundRequest, u64) {
        let value = &fixture["entry"][0]["changes"][0]["value"];
        let m = &value["messages"][0];
        let s = |v: &Value| v.as_str().map(str::to_owned);
        let kind = InboundType::parse(m["type"].as_str().unwrap()).unwrap();
        let (text, payload) = match kind {
            InboundType::Text => (s(&m["text"]["body"]), None),
            InboundType::Button => (s(&m["button"]["text"]), s(&m["button"]["payload"])),
            InboundType::Interactive => {
                let reply = &m["interactive"]["button_reply"];
                (s(&reply["title"]), s(&reply["id"]))
            }
            InboundType::Unsupported => (None, None),
        };
        let request = InboundRequest {
            from: format!("+{}", m["from"].as_str().unwrap()),
            to: s(&value["metadata"]["phone_number_id"]),
            kind,
            text,
            payload,
            referral: m
                .get("referral")
                .map(|r| serde_json::from_value(r.clone()).unwrap()),
            id: s(&m["id"]),
            name: s(&value["contacts"][0]["profile"]["name"]),
            context: s(&m["context"]["id"]),
            repeat: 1,
        };
        (request, m["timestamp"].as_str().unwrap().parse().unwrap())
    }

    fn built(sim: &Shared, request: InboundRequest, now: u64) -> Vec<u8> {
        let inbound = Inbound::parse(sim, request).unwrap();
        let id = inbound.id.clone().unwrap();
        notification(sim, &inbound, &id, now)
    }

    /// Every key path of a JSON document (`entry.changes.value.messages.text.body`).
    fn key_paths(value: &Value, prefix: &str, into: &mut BTreeSet<String>) {
        match value {
            Value::Object(fields) => {
                for (key, v) in fields {
                    let path = format!("{prefix}.{key}");
                    key_paths(v, &path, into);
                    into.insert(path);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| key_paths(v, prefix, into)),
            _ => {}
        }
    }

    const FIXTURES: [&str; 7] = [
        "inbound-stop-text",
        "inbound-quick-reply-abmelden",
        "inbound-text-keyword",
        "inbound-button-reply",
        "inbound-interactive-reply",
        "inbound-referral",
        "inbound-unsupported",
    ];

    /// Meta's two inbound fixtures and the simulator's five: the builder writes each one with
    /// the same keys, in the same order, byte for byte.
    #[test]
    fn the_builder_writes_the_fixtures_shapes_byte_for_byte() {
        let sim = fixtures_sim(SimConfig::default());
        for name in FIXTURES {
            let raw = webhook_fixture(&format!("{name}.json"));
            let fixture: Value = serde_json::from_slice(&raw).unwrap();
            let (request, timestamp) = request_for(&fixture);
            let body = built(&sim, request, timestamp);
            let ours: Value = serde_json::from_slice(&body).unwrap();
            let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
            key_paths(&fixture, "", &mut want);
            key_paths(&ours, "", &mut got);
            assert_eq!(got, want, "{name}: the keys differ");
            assert_eq!(
                String::from_utf8(body).unwrap(),
                String::from_utf8(raw).unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn the_fixtures_are_signed_with_the_test_secret_and_have_no_trailing_newline() {
        for name in FIXTURES {
            let body = webhook_fixture(&format!("{name}.json"));
            assert_ne!(body.last(), Some(&b'\n'), "{name}");
            let sig = String::from_utf8(webhook_fixture(&format!("{name}.sig"))).unwrap();
            assert_eq!(sign("test-app-secret", &body), sig.trim(), "{name}");
        }
    }

    #[test]
    fn each_type_gets_its_content_and_replies_default_one_field_to_the_other() {
        let sim = fixtures_sim(SimConfig::default());
        let message = |request: InboundRequest| -> Value {
            let body = built(
                &sim,
                InboundRequest {
                    id: Some("wamid.X".into()),
                    ..request
                },
                1,
            );
            serde_json::from_slice::<Value>(&body).unwrap()["entry"][0]["changes"][0]["value"]
                ["messages"][0]
                .clone()
        };
        let base = InboundRequest::text("+49 151 2345 6789", "Hi");
        let text = message(base.clone());
        assert_eq!(text["from"], "4915123456789");
        assert_eq!(text["text"]["body"], "Hi");
        assert!(text.get("context").is_none() && text.get("referral").is_none());
        let button = message(InboundRequest {
            kind: InboundType::Button,
            text: None,
            payload: Some("YES".into()),
            ..base.clone()
        });
        assert_eq!(button["button"], json!({"payload": "YES", "text": "YES"}));
        let reply = message(InboundRequest {
            kind: InboundType::Interactive,
            ..base.clone()
        });
        assert_eq!(
            reply["interactive"],
            json!({"type": "button_reply", "button_reply": {"id": "Hi", "title": "Hi"}})
        );
        let unsupported = message(InboundRequest {
            kind: InboundType::Unsupported,
            ..base.clone()
        });
        assert_eq!(unsupported["type"], "unsupported");
        assert_eq!(unsupported["errors"][0]["code"], 131051);
        assert!(unsupported.get("text").is_none());
        let from_ad = message(InboundRequest {
            referral: Some(Referral::default()),
            ..base
        });
        assert_eq!(from_ad["referral"]["source_type"], "ad");
        assert_eq!(from_ad["type"], "text");
    }

    #[test]
    fn the_request_defaults_to_a_text_from_a_customer_to_the_first_number() {
        let sim = fixtures_sim(SimConfig::default());
        let request = InboundRequest::from_json(br#"{"from": "+4915123456789"}"#).unwrap();
        assert_eq!(request.repeat, 1);
        let inbound = Inbound::parse(&sim, request).unwrap();
        assert_eq!(inbound.phone_number_id, "106540352242922");
        assert_eq!(inbound.from, "4915123456789");
        assert_eq!(inbound.name, "Customer");
        assert!(matches!(inbound.message, Message::Text { .. }));
        let unconfigured = Shared::new(SimConfig::default(), "127.0.0.1:1".parse().unwrap(), None);
        let inbound = Inbound::parse(&unconfigured, InboundRequest::text("4915123456789", "Hi"));
        assert_eq!(inbound.unwrap().phone_number_id, DEFAULT_PHONE_NUMBER_ID);
        let full = InboundRequest::from_json(
            br#"{"from":"4915123456789","to":"106540352242922","type":"button","text":"Yes",
                "payload":"YES","referral":{"headline":"Sale"},"id":"wamid.A","name":"Anna",
                "context":"wamid.B","repeat":3}"#,
        )
        .unwrap();
        assert_eq!(full.kind, InboundType::Button);
        assert_eq!(full.referral.as_ref().unwrap().headline, "Sale");
        assert_eq!(full.referral.as_ref().unwrap().source_type, "ad");
        assert_eq!((full.repeat, full.context.as_deref()), (3, Some("wamid.B")));
        let with_true = InboundRequest::from_json(br#"{"from":"+4915123456789","referral":true}"#);
        assert_eq!(with_true.unwrap().referral, Some(Referral::default()));
    }

    /// What the CLI serialises is what the endpoint reads.
    #[test]
    fn a_serialised_request_reads_back_the_same() {
        let request = InboundRequest {
            to: Some("106540352242922".into()),
            kind: InboundType::Interactive,
            payload: Some("size_42".into()),
            referral: Some(Referral::default()),
            id: Some("wamid.A".into()),
            name: Some("Anna".into()),
            context: Some("wamid.B".into()),
            repeat: 3,
            ..InboundRequest::text("+4915123456789", "Size 42")
        };
        let body = serde_json::to_vec(&request).unwrap();
        assert_eq!(InboundRequest::from_json(&body), Ok(request));
        let plain = InboundRequest::text("+4915123456789", "Hi");
        let body = serde_json::to_vec(&plain).unwrap();
        assert_eq!(InboundRequest::from_json(&body), Ok(plain));
    }

    /// Bad requests are named by field and never quote what was sent: a phone number may be in it.
    #[test]
    fn bad_requests_say_which_field_and_never_repeat_a_number() {
        let sim = fixtures_sim(SimConfig::default());
        let number = "4915123456789";
        for (body, says) in [
            ("[]".to_owned(), "JSON object"),
            ("{}".to_owned(), "'from' is required"),
            (
                format!(r#"{{"from": {number}}}"#),
                "'from' must be a string",
            ),
            (
                format!(r#"{{"from": "+{number}", "repeat": "{number}"}}"#),
                "'repeat'",
            ),
            (
                format!(r#"{{"from": "+{number}", "repeat": 0}}"#),
                "'repeat'",
            ),
            (
                format!(r#"{{"from": "+{number}", "repeat": 11}}"#),
                "'repeat'",
            ),
            (
                format!(r#"{{"from": "+{number}", "repeat": 1.5}}"#),
                "'repeat'",
            ),
            (
                format!(r#"{{"from": "+{number}", "type": "{number}"}}"#),
                "'type'",
            ),
            (
                format!(r#"{{"from": "+{number}", "to": "+{number}"}}"#),
                "'to'",
            ),
            (format!(r#"{{"from": "+{number}", "to": "999"}}"#), "'to'"),
            (format!(r#"{{"from": "call +{number}"}}"#), "'from'"),
            (r#"{"from": "+49151"}"#.to_owned(), "'from'"),
            (format!(r#"{{"from": "+{number}", "text": ""}}"#), "'text'"),
            (
                format!(r#"{{"from": "+{number}", "type": "button"}}"#),
                "'payload' or 'text'",
            ),
            (
                format!(r#"{{"from": "+{number}", "referral": "{number}"}}"#),
                "'referral'",
            ),
            (
                format!(r#"{{"from": "+{number}", "referral": {{"headline": 1}}}}"#),
                "referral.headline",
            ),
            (
                format!(r#"{{"from": "+{number}", "referral": {{"clid": "x"}}}}"#),
                "referral.clid",
            ),
            (
                format!(r#"{{"from": "+{number}", "id": "wamid. A"}}"#),
                "'id'",
            ),
            (
                format!(r#"{{"from": "+{number}", "payloads": "x"}}"#),
                "unknown field 'payloads'",
            ),
            (
                format!(r#"{{"from": "+{number}", "{number}": "x"}}"#),
                "unknown field",
            ),
        ] {
            let err = InboundRequest::from_json(body.as_bytes())
                .and_then(|request| Inbound::parse(&sim, request))
                .expect_err(&body)
                .to_string();
            assert!(err.contains(says), "{body}: {err}");
            assert!(!err.contains("4915123"), "{body}: {err}");
            assert_eq!(
                InboundError::BadRequest(err).status(),
                StatusCode::BAD_REQUEST
            );
        }
    }

    #[tokio::test]
    async fn without_a_webhook_url_nothing_is_posted_and_no_window_opens() {
        let sim = fixtures_sim(SimConfig::default());
        let err = post(&sim, InboundRequest::text("+4915123456789", "Hi"))
            .await
            .unwrap_err();
        assert_eq!(err, InboundError::NoWebhookUrl);
        assert_eq!(err.status(), StatusCode::CONFLICT);
        assert_eq!(
            sim.windows
                .at("106540352242922", "4915123456789", sim.clock.now_unix()),
            InWindow::Closed
        );
    }

    #[tokio::test]
    async fn a_posted_message_opens_the_window_even_when_nobody_answers() {
        // A port nobody listens on: the customer still wrote.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/webhooks", listener.local_addr().unwrap());
        drop(listener);
        let sim = fixtures_sim(SimConfig {
            webhook_url: Some(url),
            ..SimConfig::default()
        });
        let posted = post(
            &sim,
            InboundRequest {
                referral: Some(Referral::default()),
                repeat: 2,
                ..InboundRequest::text("+4915123456789", "Hi")
            },
        )
        .await
        .unwrap();
        assert_eq!(posted.statuses, [None, None]);
        assert!(posted.error.is_some() && !posted.acknowledged());
        let stats = sim.stats();
        assert_eq!((stats.inbound_posted, stats.inbound_failed), (0, 2));
        let now = sim.clock.now_unix();
        assert_eq!(
            sim.windows
                .at("106540352242922", "4915123456789", now + 48 * 3600),
            InWindow::FreeEntry
        );
        assert_eq!(close(&sim, Some("+49 1512 3456789"), None), Ok(1));
        assert_eq!(
            sim.windows.at("106540352242922", "4915123456789", now),
            InWindow::Closed
        );
        assert!(close(&sim, Some("+49"), None).is_err());
    }

    #[test]
    fn a_close_request_is_empty_or_names_customer_and_number() {
        assert_eq!(close_request(b""), Ok((None, None)));
        assert_eq!(close_request(b" \n"), Ok((None, None)));
        assert_eq!(
            close_request(br#"{"from":"+4915123456789","to":"1"}"#),
            Ok((Some("+4915123456789".into()), Some("1".into())))
        );
        assert!(close_request(b"{").is_err());
        assert!(close_request(br#"{"who":"x"}"#).is_err());
    }
}
