//! Meta's webhook notifications, translated into what herald does about them: delivery
//! updates for the ledger, inbound messages (stored minimally; they open the customer-service
//! window and may carry an opt-in keyword), consent revocations (131050, opt-out words,
//! `user_preferences`), template status changes. Pure: bytes in, decisions out, so every case is tested without a
//! server or a database; [`super::webhooks`] applies the result to the store.
//!
//! The envelope (`entry[].changes[]`) must parse or the whole POST is refused. Items inside it
//! are read one by one: a status or message herald cannot read is counted `invalid` and
//! skipped, and the rest of the batch still applies — Meta would redeliver a refused POST for
//! days, and the good updates in it should not wait for that.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::domain::inbound::message_type;
use crate::domain::{Category, IdempotencyKey, InboundMessage, PhoneNumber, SenderId};
use crate::policy::opt_out::OptOutWords;
use crate::policy::window;
use crate::store::DeliveryUpdate;
use crate::telemetry::metrics::{webhook_kind as kind, webhook_result as result};

/// Meta's error code for marketing sent to a user who stopped marketing from the business.
pub const MARKETING_OPT_OUT_CODE: i64 = 131_050;

/// A body that is signed but is not a webhook notification at all: answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a webhook notification: {0}")]
pub struct ParseError(String);

/// Everything one POST asks herald to do.
#[derive(Debug, Default)]
pub struct Notification {
    /// Status updates, in the order received; the store folds and orders them.
    pub deliveries: Vec<DeliveryUpdate>,
    /// Messages customers wrote, in the order received.
    pub inbound: Vec<Inbound>,
    /// Opt-outs, at most one per (number, category) per POST.
    pub revocations: Vec<Revocation>,
    pub template_statuses: Vec<TemplateStatus>,
    /// Events settled without the store (`ignored`, `invalid`), by (kind, result).
    pub settled: BTreeMap<(&'static str, &'static str), u64>,
    /// Things worth a log line that changed nothing.
    pub notes: Vec<Note>,
}

/// A consent revocation to record, for the WhatsApp channel only: Meta's webhooks speak for
/// WhatsApp, and an opt-out there says nothing about SMS (sms.md §6: opt-outs per channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub phone: PhoneNumber,
    /// `None`: every category (the person wrote STOP).
    pub category: Option<Category>,
    /// When the person opted out, as Meta reports it — not when the webhook arrived, so a
    /// redelivery days later cannot override a consent granted in between.
    pub at: DateTime<Utc>,
    /// Recorded with the revocation as its proof: `inbound:STOP`, `webhook:131050`, …
    pub source: String,
    /// The webhook event kind it came from (metric label).
    pub kind: &'static str,
}

/// A message a customer wrote, as it will be stored, and what it said — kept only in memory,
/// to match opt-in keywords; stored only as the proof of an opt-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub message: InboundMessage,
    /// The text body, button payload and text, reply id and title: whatever the customer sent.
    pub texts: Vec<String>,
}

/// A `message_template_status_update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateStatus {
    pub name: String,
    pub language: String,
    /// Meta's event, upper case: APPROVED, PAUSED, DISABLED, REJECTED, …
    pub status: String,
}

/// Something in the POST that changed nothing but an operator may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// An item that could not be read. `what` names the place and the problem, never a value
    /// (values can be phone numbers).
    Invalid { kind: &'static str, what: String },
    /// A user resumed marketing. Not a consent: a new one must be recorded with its proof.
    MarketingResumed { phone: PhoneNumber },
    /// A field herald does not handle (account updates, quality ratings, …).
    UnhandledField { field: String },
}

impl Notification {
    fn settle(&mut self, kind: &'static str, result: &'static str) {
        *self.settled.entry((kind, result)).or_default() += 1;
    }

    fn invalid(&mut self, kind: &'static str, what: String) {
        self.settle(kind, result::INVALID);
        self.notes.push(Note::Invalid { kind, what });
    }

    fn revoke(&mut self, revocation: Revocation) {
        match self
            .revocations
            .iter_mut()
            .find(|r| r.phone == revocation.phone && r.category == revocation.category)
        {
            // The earliest opt-out of the batch is when the person stopped.
            Some(existing) => existing.at = existing.at.min(revocation.at),
            None => self.revocations.push(revocation),
        }
    }
}

/// Reads a verified webhook body.
pub fn parse(body: &[u8], words: &OptOutWords) -> Result<Notification, ParseError> {
    parse_at(body, words, Utc::now())
}

/// [`parse`], with `received` as the time the POST arrived: inbound messages count from Meta's
/// timestamp, but never from later than this (`policy::window::written_at`).
pub fn parse_at(
    body: &[u8],
    words: &OptOutWords,
    received: DateTime<Utc>,
) -> Result<Notification, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let envelope: Envelope =
        serde_path_to_error::deserialize(&mut de).map_err(|e| ParseError(describe(&e)))?;
    de.end()
        .map_err(|e| ParseError(describe_json(&e, "after the JSON document")))?;
    let mut out = Notification::default();
    if envelope.object != "whatsapp_business_account" {
        out.settle(kind::OTHER, result::IGNORED);
        out.notes.push(Note::UnhandledField {
            field: format!("object {}", bounded(&envelope.object)),
        });
        return Ok(out);
    }
    for (e, entry) in envelope.entry.into_iter().enumerate() {
        for (c, change) in entry.changes.into_iter().enumerate() {
            let at = format!("entry[{e}].changes[{c}].value");
            match change.field.as_str() {
                "messages" => messages(change.value, &at, words, received, &mut out),
                "user_preferences" => user_preferences(change.value, &at, &mut out),
                "message_template_status_update" => template_status(change.value, &at, &mut out),
                other => {
                    out.settle(kind::OTHER, result::IGNORED);
                    out.notes.push(Note::UnhandledField {
                        field: bounded(other),
                    });
                }
            }
        }
    }
    Ok(out)
}

fn messages(
    value: Value,
    at: &str,
    words: &OptOutWords,
    received: DateTime<Utc>,
    out: &mut Notification,
) {
    let value: MessagesValue = match item(value, at) {
        Ok(v) => v,
        Err(what) => return out.invalid(kind::STATUS, what),
    };
    let sender = value
        .metadata
        .as_ref()
        .and_then(|m| m.phone_number_id.as_deref())
        .and_then(|id| SenderId::parse(id).ok());
    for (i, raw) in value.statuses.into_iter().enumerate() {
        match item::<Status>(raw, &format!("{at}.statuses[{i}]")) {
            Ok(s) => status(s, out),
            Err(what) => out.invalid(kind::STATUS, what),
        }
    }
    for (i, raw) in value.messages.into_iter().enumerate() {
        match item::<Message>(raw, &format!("{at}.messages[{i}]")) {
            Ok(m) => inbound(
                m,
                &format!("{at}.messages[{i}]"),
                sender.as_ref(),
                words,
                received,
                out,
            ),
            Err(what) => out.invalid(kind::MESSAGE, what),
        }
    }
}

fn status(s: Status, out: &mut Notification) {
    if !matches!(s.status.as_str(), "sent" | "delivered" | "read" | "failed") {
        // `deleted`, `warning`, …: nothing for the ledger.
        return out.settle(kind::STATUS, result::IGNORED);
    }
    let at = s.timestamp.unwrap_or_else(Utc::now);
    let error_code = s.errors.iter().find_map(|e| e.code);
    if s.status == "failed" && error_code == Some(MARKETING_OPT_OUT_CODE) {
        match s.recipient_id.as_deref().and_then(phone_from_wa_id) {
            Some(phone) => out.revoke(Revocation {
                phone,
                category: Some(Category::Marketing),
                at,
                source: format!("webhook:{MARKETING_OPT_OUT_CODE}"),
                kind: kind::STATUS,
            }),
            None => out.notes.push(Note::Invalid {
                kind: kind::STATUS,
                what: "failed 131050 without a usable recipient_id: consent not revoked".into(),
            }),
        }
    }
    let billed_category = s
        .pricing
        .filter(|p| p.billable == Some(true))
        .and_then(|p| p.category);
    out.deliveries.push(DeliveryUpdate {
        wamid: s.id,
        key: s
            .biz_opaque_callback_data
            .as_deref()
            .and_then(|k| IdempotencyKey::parse(k).ok()),
        status: s.status,
        at,
        error_code,
        billed_category,
    });
}

fn inbound(
    m: Message,
    at: &str,
    sender: Option<&SenderId>,
    words: &OptOutWords,
    received: DateTime<Utc>,
    out: &mut Notification,
) {
    let Some(phone) = phone_from_wa_id(&m.from) else {
        return out.invalid(kind::MESSAGE, format!("{at}.from: not a phone number"));
    };
    let written = window::written_at(m.timestamp, received);
    let texts: Vec<String> = [
        m.text.map(|t| t.body),
        m.button.as_ref().and_then(|b| b.payload.clone()),
        m.button.and_then(|b| b.text),
        m.interactive
            .as_ref()
            .and_then(|i| i.button_reply.as_ref())
            .map(|r| r.id.clone()),
        m.interactive
            .as_ref()
            .and_then(|i| i.button_reply.as_ref())
            .map(|r| r.title.clone()),
        m.interactive
            .as_ref()
            .and_then(|i| i.list_reply.as_ref())
            .map(|r| r.id.clone()),
        m.interactive.and_then(|i| i.list_reply).map(|r| r.title),
    ]
    .into_iter()
    .flatten()
    .filter(|t| !t.is_empty())
    .collect();
    if let Some(word) = texts.iter().find_map(|t| words.matches(t)) {
        out.revoke(Revocation {
            phone: phone.clone(),
            category: None,
            at: written,
            source: format!("inbound:{word}"),
            kind: kind::MESSAGE,
        });
    }
    // Stored (it opens the window) when Meta says which message and which number it is;
    // an opt-out above applies either way.
    match (m.id.filter(|id| !id.trim().is_empty()), sender) {
        (Some(wamid), Some(sender)) => out.inbound.push(Inbound {
            message: InboundMessage {
                wamid,
                from: phone,
                sender: sender.clone(),
                at: written,
                kind: message_type(m.kind.as_deref()),
                referral: m.referral.is_some_and(|r| !r.is_null()),
                proof_text: None,
            },
            texts,
        }),
        (None, _) => out.invalid(kind::MESSAGE, format!("{at}.id: missing")),
        (_, None) => out.invalid(
            kind::MESSAGE,
            format!("{at}: no metadata.phone_number_id for the business number"),
        ),
    }
}

fn user_preferences(value: Value, at: &str, out: &mut Notification) {
    let value: PreferencesValue = match item(value, at) {
        Ok(v) => v,
        Err(what) => return out.invalid(kind::USER_PREFERENCES, what),
    };
    for (i, raw) in value.user_preferences.into_iter().enumerate() {
        let at = format!("{at}.user_preferences[{i}]");
        let p: Preference = match item(raw, &at) {
            Ok(p) => p,
            Err(what) => {
                out.invalid(kind::USER_PREFERENCES, what);
                continue;
            }
        };
        if p.category != "marketing_messages" {
            out.settle(kind::USER_PREFERENCES, result::IGNORED);
            continue;
        }
        let Some(phone) = phone_from_wa_id(&p.wa_id) else {
            out.invalid(
                kind::USER_PREFERENCES,
                format!("{at}.wa_id: not a phone number"),
            );
            continue;
        };
        match p.value.to_ascii_lowercase().as_str() {
            "stop" => out.revoke(Revocation {
                phone,
                category: Some(Category::Marketing),
                at: p.timestamp.unwrap_or_else(Utc::now),
                source: "user_preferences:stop".into(),
                kind: kind::USER_PREFERENCES,
            }),
            "resume" => {
                out.settle(kind::USER_PREFERENCES, result::IGNORED);
                out.notes.push(Note::MarketingResumed { phone });
            }
            _ => out.invalid(
                kind::USER_PREFERENCES,
                format!("{at}.value: not stop or resume"),
            ),
        }
    }
}

fn template_status(value: Value, at: &str, out: &mut Notification) {
    match item::<TemplateUpdate>(value, at) {
        Ok(t) => out.template_statuses.push(TemplateStatus {
            name: t.message_template_name,
            language: t.message_template_language,
            status: t.event.to_ascii_uppercase(),
        }),
        Err(what) => out.invalid(kind::TEMPLATE, what),
    }
}

/// A recipient as Meta names it (`wa_id`, `recipient_id`: E.164 digits without `+`). A number
/// the phone library calls invalid is still taken when it is plausibly E.164: losing an
/// opt-out is a compliance failure, recording one for a number herald never messages is not.
fn phone_from_wa_id(digits: &str) -> Option<PhoneNumber> {
    let digits = digits.trim().trim_start_matches('+');
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let e164 = format!("+{digits}");
    Some(PhoneNumber::parse(&e164).unwrap_or_else(|_| PhoneNumber::from_trusted(e164)))
}

fn item<T: DeserializeOwned>(value: Value, at: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let place = if path == "." {
            at.to_owned()
        } else {
            format!("{at}.{path}")
        };
        format!("{place}: {}", shape(e.inner()))
    })
}

/// Where and what, for a body-level error.
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let at = if path == "." {
        "the body".to_owned()
    } else {
        path
    };
    describe_json(e.inner(), &at)
}

fn describe_json(e: &serde_json::Error, at: &str) -> String {
    format!(
        "{} at {at} (line {}, column {})",
        shape(e),
        e.line(),
        e.column()
    )
}

/// The kind of a JSON error without its message: serde's messages quote the offending value
/// (`invalid type: string "4915…"`), which may be a phone number.
fn shape(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category as C;
    match e.classify() {
        C::Io => "read error",
        C::Syntax => "invalid JSON",
        C::Eof => "truncated JSON",
        C::Data if e.to_string().starts_with("missing field") => "a required field is missing",
        C::Data => "a field has the wrong type",
    }
}

/// A label from the outside, cut short for a log line.
fn bounded(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

// --- Meta's shapes (only what herald reads; unknown fields are ignored) -------------------

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    object: String,
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    field: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
struct MessagesValue {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    statuses: Vec<Value>,
    #[serde(default)]
    messages: Vec<Value>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    phone_number_id: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    id: String,
    status: String,
    #[serde(default, deserialize_with = "unix_time")]
    timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    recipient_id: Option<String>,
    #[serde(default)]
    biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    pricing: Option<Pricing>,
    #[serde(default)]
    errors: Vec<StatusError>,
}

#[derive(Deserialize)]
struct Pricing {
    #[serde(default)]
    billable: Option<bool>,
    #[serde(default)]
    category: Option<String>,
}

#[derive(Deserialize)]
struct StatusError {
    #[serde(default)]
    code: Option<i64>,
}

#[derive(Deserialize)]
struct Message {
    from: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    referral: Option<Value>,
    #[serde(default, deserialize_with = "unix_time")]
    timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    text: Option<Text>,
    #[serde(default)]
    button: Option<Button>,
    #[serde(default)]
    interactive: Option<Interactive>,
}

#[derive(Deserialize)]
struct Text {
    body: String,
}

#[derive(Deserialize)]
struct Button {
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Interactive {
    #[serde(default)]
    button_reply: Option<Reply>,
    #[serde(default)]
    list_reply: Option<Reply>,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    id: String,
    #[serde(default)]
    title: String,
}

#[derive(Deserialize)]
struct PreferencesValue {
    #[serde(default)]
    user_preferences: Vec<Value>,
}

#[derive(Deserialize)]
struct Preference {
    wa_id: String,
    category: String,
    value: String,
    #[serde(default, deserialize_with = "unix_time")]
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct TemplateUpdate {
    event: String,
    message_template_name: String,
    message_template_language: String,
}

/// Unix seconds, as a string (statuses, messages) or a number (`user_preferences`).
fn unix_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(i64),
    }
    let secs = match Option::<Raw>::deserialize(d)? {
        None => return Ok(None),
        Some(Raw::Number(n)) => n,
        Some(Raw::Text(s)) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom("timestamp is not unix seconds"))?,
    };
    DateTime::from_timestamp(secs, 0)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("timestamp out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(body: &str) -> Notification {
        parse(body.as_bytes(), &OptOutWords::default()).expect("parses")
    }

    fn wrap(field: &str, value: &str) -> String {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"{field}","value":{value}}}]}}]}}"#
        )
    }

    #[test]
    fn a_billable_status_carries_its_pricing_category_and_key() {
        let n = parse_str(&wrap(
            "messages",
            r#"{"statuses":[{"id":"wamid.A","status":"delivered","timestamp":"1763726410",
                "recipient_id":"4915123456789","biz_opaque_callback_data":"k:c:1",
                "pricing":{"billable":true,"pricing_model":"PMP","category":"marketing"}}]}"#,
        ));
        let d = &n.deliveries[0];
        assert_eq!(d.wamid, "wamid.A");
        assert_eq!(d.key.as_ref().map(|k| k.as_str()), Some("k:c:1"));
        assert_eq!(d.status, "delivered");
        assert_eq!(d.at.timestamp(), 1_763_726_410);
        assert_eq!(d.billed_category.as_deref(), Some("marketing"));
        assert!(n.revocations.is_empty());
    }

    #[test]
    fn a_free_status_is_not_billed() {
        let n = parse_str(&wrap(
            "messages",
            r#"{"statuses":[{"id":"w","status":"sent","timestamp":"1",
                "pricing":{"billable":false,"category":"service"}}]}"#,
        ));
        assert_eq!(n.deliveries[0].billed_category, None);
    }

    #[test]
    fn failed_131050_revokes_marketing_at_the_status_time() {
        let n = parse_str(&wrap(
            "messages",
            r#"{"statuses":[{"id":"w","status":"failed","timestamp":"1763726401",
                "recipient_id":"4917698765432","errors":[{"code":131050,"title":"x"}]}]}"#,
        ));
        assert_eq!(n.deliveries[0].error_code, Some(131_050));
        let r = &n.revocations[0];
        assert_eq!(r.phone.as_str(), "+4917698765432");
        assert_eq!(r.category, Some(Category::Marketing));
        assert_eq!(r.at.timestamp(), 1_763_726_401);
        assert_eq!(r.source, "webhook:131050");
    }

    #[test]
    fn other_failures_revoke_nothing() {
        let n = parse_str(&wrap(
            "messages",
            r#"{"statuses":[{"id":"w","status":"failed","timestamp":"1",
                "recipient_id":"4917698765432","errors":[{"code":131026}]}]}"#,
        ));
        assert_eq!(n.deliveries[0].error_code, Some(131_026));
        assert!(n.revocations.is_empty());
    }

    #[test]
    fn stop_text_and_unsubscribe_buttons_revoke_every_category() {
        let n = parse_str(&wrap(
            "messages",
            r#"{"metadata":{"phone_number_id":"106540352242922"},"messages":[
                {"from":"4915123456789","id":"m1","timestamp":"1763726500","type":"text","text":{"body":" stop! "}},
                {"from":"4917698765432","id":"m2","timestamp":"1763726510","type":"button","button":{"payload":"PROMO_NO","text":"Abmelden"}},
                {"from":"4917698765433","id":"m3","timestamp":"1763726510","type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"b1","title":"Unsubscribe"}}},
                {"from":"4915123456780","id":"m4","timestamp":"1763726520","type":"text","text":{"body":"Where is my order?"}}
            ]}"#,
        ));
        let sources: Vec<&str> = n.revocations.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(
            sources,
            ["inbound:STOP", "inbound:ABMELDEN", "inbound:UNSUBSCRIBE"]
        );
        assert!(n.revocations.iter().all(|r| r.category.is_none()));
        assert_eq!(n.revocations[0].at.timestamp(), 1_763_726_500);
        // Every message is stored too (opt-outs and questions alike): each opens the window.
        let kinds: Vec<&str> = n.inbound.iter().map(|i| i.message.kind).collect();
        assert_eq!(kinds, ["text", "button", "interactive", "text"]);
        assert!(n.inbound.iter().all(|i| i.message.proof_text.is_none()));
        assert_eq!(n.inbound[1].texts, ["PROMO_NO", "Abmelden"]);
        assert!(n.notes.is_empty(), "{:?}", n.notes);
    }

    fn fixture(name: &str) -> Notification {
        let path = format!(
            "{}/tests/fixtures/webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        parse(&body, &OptOutWords::default()).expect("parses")
    }

    #[test]
    fn inbound_fixtures_become_stored_messages() {
        let text = fixture("inbound-text-keyword.json");
        let m = &text.inbound[0].message;
        assert_eq!(m.kind, "text");
        assert_eq!(m.from.as_str(), "+4915123456789");
        assert_eq!(m.sender.as_str(), "106540352242922");
        assert!(m.wamid.starts_with("wamid."));
        assert!(!m.referral);
        assert_eq!(text.inbound[0].texts, ["SNEAKERS"]);
        assert!(text.revocations.is_empty());

        let referral = fixture("inbound-referral.json");
        assert!(referral.inbound[0].message.referral);

        let button = fixture("inbound-button-reply.json");
        assert_eq!(button.inbound[0].message.kind, "button");

        let unsupported = fixture("inbound-unsupported.json");
        assert_eq!(unsupported.inbound[0].message.kind, "unsupported");
        assert!(unsupported.notes.is_empty(), "{:?}", unsupported.notes);
    }

    #[test]
    fn unknown_message_types_are_stored_as_unsupported_and_need_an_id_and_a_number() {
        let n = parse_str(&wrap(
            "messages",
            r#"{"metadata":{"phone_number_id":"106540352242922"},"messages":[
                {"from":"4915123456789","id":"m1","timestamp":"1","type":"hologram","hologram":{}},
                {"from":"4915123456789","timestamp":"1","type":"text","text":{"body":"hi"}}
            ]}"#,
        ));
        assert_eq!(n.inbound.len(), 1);
        assert_eq!(n.inbound[0].message.kind, "unsupported");
        assert_eq!(n.settled.get(&(kind::MESSAGE, result::INVALID)), Some(&1));
        let n = parse_str(&wrap(
            "messages",
            r#"{"messages":[{"from":"4915123456789","id":"m1","type":"text","text":{"body":"STOP"}}]}"#,
        ));
        assert!(n.inbound.is_empty(), "no business number: not stored");
        assert_eq!(n.revocations.len(), 1, "the opt-out applies anyway");
    }

    #[test]
    fn a_timestamp_ahead_of_arrival_counts_from_arrival() {
        let body = wrap(
            "messages",
            r#"{"metadata":{"phone_number_id":"1"},"messages":[
                {"from":"4915123456789","id":"m1","timestamp":"2000000000","type":"text","text":{"body":"hi"}}]}"#,
        );
        let received = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let n = parse_at(body.as_bytes(), &OptOutWords::default(), received).unwrap();
        assert_eq!(n.inbound[0].message.at, received);
    }

    #[test]
    fn repeated_stops_in_one_post_become_one_revocation_at_the_first() {
        let n = parse_str(&wrap(
            "messages",
            r#"{"messages":[
                {"from":"4915123456789","timestamp":"20","type":"text","text":{"body":"STOP"}},
                {"from":"4915123456789","timestamp":"10","type":"text","text":{"body":"stop"}}
            ]}"#,
        ));
        assert_eq!(n.revocations.len(), 1);
        assert_eq!(n.revocations[0].at.timestamp(), 10);
    }

    #[test]
    fn user_preferences_stop_revokes_marketing_and_resume_only_notes() {
        let n = parse_str(&wrap(
            "user_preferences",
            r#"{"user_preferences":[
                {"wa_id":"4916011122233","category":"marketing_messages","value":"stop","timestamp":1763726600},
                {"wa_id":"4916011122234","category":"marketing_messages","value":"resume","timestamp":1763726700}
            ]}"#,
        ));
        assert_eq!(n.revocations.len(), 1);
        assert_eq!(n.revocations[0].category, Some(Category::Marketing));
        assert_eq!(n.revocations[0].at.timestamp(), 1_763_726_600);
        assert!(matches!(&n.notes[..], [Note::MarketingResumed { .. }]));
    }

    #[test]
    fn a_template_status_update_names_template_language_and_event() {
        let n = parse_str(&wrap(
            "message_template_status_update",
            r#"{"event":"PAUSED","message_template_id":1,"message_template_name":"old_promo",
                "message_template_language":"de","reason":null}"#,
        ));
        assert_eq!(
            n.template_statuses,
            [TemplateStatus {
                name: "old_promo".into(),
                language: "de".into(),
                status: "PAUSED".into()
            }]
        );
    }

    #[test]
    fn a_bad_item_is_skipped_and_the_rest_applies() {
        let n = parse_str(&wrap(
            "messages",
            r#"{"statuses":[{"status":"read"},{"id":"w","status":"read","timestamp":"5"}]}"#,
        ));
        assert_eq!(n.deliveries.len(), 1);
        assert_eq!(n.settled.get(&(kind::STATUS, result::INVALID)), Some(&1));
        match &n.notes[0] {
            Note::Invalid { what, .. } => {
                assert!(what.contains("statuses[0]"), "{what}");
                assert!(what.contains("missing"), "{what}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_descriptions_never_quote_values() {
        let n = parse_str(&wrap(
            "messages",
            r#"{"messages":[{"from":4915123456789,"type":"text","text":{"body":"STOP"}}]}"#,
        ));
        let Note::Invalid { what, .. } = &n.notes[0] else {
            panic!("{:?}", n.notes)
        };
        assert!(!what.contains("4915123456789"), "{what}");
        let e = parse(br#"{"entry":"+4915123456789"}"#, &OptOutWords::default()).unwrap_err();
        assert!(!e.to_string().contains("4915123456789"), "{e}");
    }

    #[test]
    fn bodies_that_are_not_notifications_are_errors() {
        for body in [
            "",
            "not json",
            "{}",
            r#"{"entry":{}}"#,
            r#"{"entry":[]} trailing"#,
            "[1,2]",
        ] {
            assert!(
                parse(body.as_bytes(), &OptOutWords::default()).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn other_objects_and_fields_are_ignored() {
        let n = parse_str(r#"{"object":"page","entry":[]}"#);
        assert_eq!(n.settled.get(&(kind::OTHER, result::IGNORED)), Some(&1));
        let n = parse_str(&wrap("account_update", r#"{"event":"VERIFIED"}"#));
        assert_eq!(n.settled.get(&(kind::OTHER, result::IGNORED)), Some(&1));
        assert!(n.deliveries.is_empty());
    }

    #[test]
    fn wa_ids_become_e164_numbers() {
        assert_eq!(
            phone_from_wa_id("4915123456789").map(|p| p.as_str().to_owned()),
            Some("+4915123456789".into())
        );
        assert_eq!(phone_from_wa_id("12"), None);
        assert_eq!(phone_from_wa_id("49151abc"), None);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&body, &OptOutWords::default());
        }

        #[test]
        fn parsing_wrapped_garbage_never_panics(value in "[\\[\\]{}\",:a-z0-9 ]{0,120}") {
            let _ = parse(wrap("messages", &value).as_bytes(), &OptOutWords::default());
        }
    }
}
