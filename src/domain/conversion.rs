//! Conversion events (DESIGN §1.6): a shop reports an order so herald stops that customer's
//! follow-up and counts the conversion for the campaign and the channel that reached them.
//! One format on every path in — an AMQP message, an HTTP body (one event or a list), a CSV row
//! — parsed here into a checked [`Conversion`], or refused with the field and the reason.
//! A reason never echoes a phone number.
//!
//! Keys: herald derives `key#sms` (the SMS fallback of a WhatsApp message, see
//! `engine::fallback_timer::SMS_KEY_SUFFIX`) and `key#follow-up` (the follow-up) from a
//! recipient's key. A conversion belongs to the recipient's **main** key, so a shop that echoes
//! either derived key is attributed to the main one ([`main_key`]).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::channel::ChannelKind;
use super::ids::{CampaignId, IdempotencyKey};
use super::phone::{PhoneError, PhoneNumber};
use super::strict_json;

/// The only event version this herald understands.
pub const SUPPORTED_VERSION: u64 = 1;
/// Most events one HTTP body (or one store batch) may carry.
pub const MAX_EVENTS: usize = 10_000;
/// Largest body accepted, checked before parsing: 10,000 events of a few hundred bytes fit.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Longest `event_id`: the shop's order id, possibly namespaced.
pub const MAX_EVENT_ID_CHARS: usize = 256;
/// Longest `event` name (`order`, `purchase`, `signup`): a label, not free text.
pub const MAX_EVENT_CHARS: usize = 64;
/// How far in the future `at` may lie: clocks drift and time zones get mixed up, but an
/// order dated next week is a mistake.
pub const MAX_FUTURE: chrono::Duration = chrono::Duration::days(1);
/// Largest amount: twelve digits before the point keep micros inside an `i64`.
const MAX_WHOLE_DIGITS: usize = 12;
/// Most decimals an amount may have (money as shops write it; 4 covers every currency).
const MAX_DECIMALS: usize = 4;

/// The key suffix of a recipient's follow-up message: its main key + `#follow-up`.
pub const FOLLOW_UP_KEY_SUFFIX: &str = "#follow-up";
/// The key suffix of a WhatsApp message's SMS fallback (the same as
/// `engine::fallback_timer::SMS_KEY_SUFFIX`; the domain does not depend on the engine).
pub const SMS_KEY_SUFFIX: &str = "#sms";

/// The recipient's main key for a key herald derived from it: `abc#sms`, `abc#follow-up` and
/// `abc#follow-up#sms` all belong to `abc`.
pub fn main_key(key: &str) -> &str {
    let mut k = key;
    loop {
        match k
            .strip_suffix(SMS_KEY_SUFFIX)
            .or_else(|| k.strip_suffix(FOLLOW_UP_KEY_SUFFIX))
        {
            Some(shorter) => k = shorter,
            None => return k,
        }
    }
}

/// What an order was worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionValue {
    /// Millionths of the currency unit (exact: parsed from the decimal string).
    pub amount_micros: i64,
    /// ISO 4217 code, three upper-case letters.
    pub currency: String,
}

/// A checked conversion event.
#[derive(Clone, PartialEq, Eq)]
pub struct Conversion {
    /// The shop's id of the event: a second event with the same id is the same event.
    pub event_id: String,
    pub campaign: CampaignId,
    /// The customer's number, normalised (E.164), when the shop gave one.
    pub to: Option<PhoneNumber>,
    /// The recipient's main key ([`main_key`]), when the shop gave one.
    pub key: Option<IdempotencyKey>,
    /// What happened: `order`, `purchase`, …
    pub event: String,
    pub at: DateTime<Utc>,
    pub value: Option<ConversionValue>,
}

impl fmt::Debug for Conversion {
    /// The number masked, like everywhere a value could reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conversion")
            .field("event_id", &self.event_id)
            .field("campaign", &self.campaign)
            .field("to", &self.to)
            .field("key", &self.key)
            .field("event", &self.event)
            .field("at", &self.at)
            .field("value", &self.value)
            .finish()
    }
}

/// What recording a batch of conversions did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversionTally {
    /// New events written (attributed or not).
    pub stored: u64,
    /// Events whose `event_id` was already recorded (or repeated in the batch): ignored.
    pub duplicates: u64,
    /// Of the stored ones, those no recipient of the campaign matched.
    pub unattributed: u64,
}

impl ConversionTally {
    pub fn add(&mut self, other: ConversionTally) {
        self.stored += other.stored;
        self.duplicates += other.duplicates;
        self.unattributed += other.unattributed;
    }
}

/// A campaign's conversions on one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversionSummary {
    /// The channel that reached the customer; `None` for unattributed events.
    pub channel: Option<ChannelKind>,
    pub conversions: u64,
    /// Of those, how many came after the customer's follow-up went out.
    pub after_follow_up: u64,
    /// Revenue per currency, in micros.
    pub revenue: BTreeMap<String, i64>,
}

/// Why an event (or a body of events) was refused. The message names the field and says why;
/// it travels in the dead-letter header, the HTTP answer and CLI errors, never with a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error("body is {0} bytes, more than the {MAX_BODY_BYTES} allowed")]
    TooLarge(usize),
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error("expected one event (a JSON object) or a list of events")]
    NotAnObjectOrList,
    #[error("the list has no events")]
    Empty,
    #[error("{0} events, more than the {MAX_EVENTS} allowed at once")]
    TooMany(usize),
    #[error("missing field `version`")]
    MissingVersion,
    #[error("unsupported version {0} (this herald understands version {SUPPORTED_VERSION})")]
    UnsupportedVersion(String),
    #[error("field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
    /// An event of a list (0-based index).
    #[error("events[{index}]: {error}")]
    InList {
        index: usize,
        error: Box<ConversionError>,
    },
    /// A row of a CSV file (1-based line, the header being line 1).
    #[error("line {line}: {error}")]
    Line {
        line: u64,
        error: Box<ConversionError>,
    },
}

impl ConversionError {
    fn field(field: &'static str, reason: impl ToString) -> Self {
        Self::Field {
            field,
            reason: reason.to_string(),
        }
    }

    /// The error without its list index or line: what was wrong with the event.
    pub fn innermost(&self) -> &ConversionError {
        match self {
            Self::InList { error, .. } | Self::Line { error, .. } => error.innermost(),
            other => other,
        }
    }

    /// Short fixed label, for the dead-letter reason code.
    pub fn label(&self) -> &'static str {
        match self.innermost() {
            Self::TooLarge(_) => "too_large",
            Self::Json(_) => "invalid_json",
            Self::MissingVersion | Self::UnsupportedVersion(_) => "unsupported_version",
            _ => "invalid_conversion",
        }
    }
}

/// The fields of one event as text, from a JSON object or a CSV row, before checking.
#[derive(Debug, Default)]
struct RawEvent<'a> {
    event_id: Option<&'a str>,
    campaign_id: Option<&'a str>,
    to: Option<&'a str>,
    key: Option<&'a str>,
    event: Option<&'a str>,
    at: Option<&'a str>,
    value: Option<(Option<&'a str>, Option<&'a str>)>,
}

impl Conversion {
    /// Parses one event (an AMQP message body): a JSON object.
    pub fn parse(body: &[u8], now: DateTime<Utc>) -> Result<Self, ConversionError> {
        match parse_json(body)? {
            Value::Object(map) => Self::from_object(&map, now),
            _ => Err(ConversionError::NotAnObject),
        }
    }

    /// Parses an HTTP body: one event, or a list of at most [`MAX_EVENTS`]. All or nothing:
    /// the first bad event refuses the whole body, naming its index.
    pub fn parse_many(body: &[u8], now: DateTime<Utc>) -> Result<Vec<Self>, ConversionError> {
        Self::from_value(parse_json(body)?, now)
    }

    /// [`Conversion::parse_many`] of a parsed JSON value.
    pub fn from_value(value: Value, now: DateTime<Utc>) -> Result<Vec<Self>, ConversionError> {
        match value {
            Value::Object(map) => Ok(vec![Self::from_object(&map, now)?]),
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(ConversionError::Empty);
                }
                if items.len() > MAX_EVENTS {
                    return Err(ConversionError::TooMany(items.len()));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| {
                        let in_list = |error| ConversionError::InList {
                            index,
                            error: Box::new(error),
                        };
                        match item {
                            Value::Object(map) => Self::from_object(map, now).map_err(in_list),
                            _ => Err(in_list(ConversionError::NotAnObject)),
                        }
                    })
                    .collect()
            }
            _ => Err(ConversionError::NotAnObjectOrList),
        }
    }

    /// Checks one event object.
    pub fn from_object(
        map: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Self, ConversionError> {
        match map.get("version") {
            None | Some(Value::Null) => return Err(ConversionError::MissingVersion),
            // `1.0` is the same number (serialisers that write every number as a float).
            Some(Value::Number(n)) if n.as_f64() == Some(SUPPORTED_VERSION as f64) => {}
            Some(other) => return Err(ConversionError::UnsupportedVersion(shown_version(other))),
        }
        let value = match map.get("value") {
            None | Some(Value::Null) => None,
            Some(Value::Object(v)) => Some((
                text(v, "amount", "value.amount")?,
                text(v, "currency", "value.currency")?,
            )),
            Some(_) => {
                return Err(ConversionError::field(
                    "value",
                    "must be an object like {\"amount\": \"89.90\", \"currency\": \"EUR\"}",
                ));
            }
        };
        let raw = RawEvent {
            event_id: text(map, "event_id", "event_id")?,
            campaign_id: text(map, "campaign_id", "campaign_id")?,
            to: text(map, "to", "to")?,
            key: text(map, "key", "key")?,
            event: text(map, "event", "event")?,
            at: text(map, "at", "at")?,
            value,
        };
        check(raw, now)
    }

    /// Checks one CSV row (columns as in [`CSV_HEADER`]); empty cells are absent values.
    pub fn from_row(row: &ConversionRow, now: DateTime<Utc>) -> Result<Self, ConversionError> {
        fn opt(s: &str) -> Option<&str> {
            Some(s.trim()).filter(|s| !s.is_empty())
        }
        let (amount, currency) = (opt(&row.amount), opt(&row.currency));
        let raw = RawEvent {
            event_id: opt(&row.event_id),
            campaign_id: opt(&row.campaign_id),
            to: opt(&row.to),
            key: opt(&row.key),
            event: opt(&row.event),
            at: opt(&row.at),
            value: (amount.is_some() || currency.is_some()).then_some((amount, currency)),
        };
        check(raw, now)
    }
}

/// The header of a conversions CSV, in order.
pub const CSV_HEADER: [&str; 8] = [
    "event_id",
    "campaign_id",
    "to",
    "key",
    "event",
    "at",
    "amount",
    "currency",
];

/// One row of a conversions CSV, as text.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ConversionRow {
    pub event_id: String,
    pub campaign_id: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub key: String,
    pub event: String,
    pub at: String,
    #[serde(default)]
    pub amount: String,
    #[serde(default)]
    pub currency: String,
}

/// Reads and checks a whole conversions CSV (header as [`CSV_HEADER`], in any order; `to` or
/// `key` may be empty but not both, `amount` and `currency` both or neither). Returns every
/// event, or the errors of the bad rows with their line numbers (at most `max_errors`): one
/// bad row refuses the file.
pub fn parse_csv(
    reader: impl std::io::Read,
    now: DateTime<Utc>,
    max_errors: usize,
) -> Result<Vec<Conversion>, Vec<ConversionError>> {
    let at_line = |line: u64, error: ConversionError| ConversionError::Line {
        line,
        error: Box::new(error),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = rdr
        .headers()
        .map_err(|e| vec![at_line(1, ConversionError::field("header", csv_reason(&e)))])?
        .clone();
    let missing: Vec<&str> = CSV_HEADER
        .iter()
        .copied()
        .filter(|name| !headers.iter().any(|h| h == *name))
        .collect();
    if !missing.is_empty() {
        let reason = format!(
            "missing column(s) {} (the header is {})",
            missing.join(", "),
            CSV_HEADER.join(",")
        );
        return Err(vec![at_line(1, ConversionError::field("header", reason))]);
    }
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for record in rdr.records() {
        let checked = record
            .map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                at_line(line, ConversionError::field("row", csv_reason(&e)))
            })
            .and_then(|record| {
                let line = record.position().map_or(0, |p| p.line());
                record
                    .deserialize::<ConversionRow>(Some(&headers))
                    .map_err(|e| ConversionError::field("row", csv_reason(&e)))
                    .and_then(|row| Conversion::from_row(&row, now))
                    .map_err(|e| at_line(line, e))
            });
        match checked {
            Ok(c) => events.push(c),
            Err(e) => {
                errors.push(e);
                if errors.len() >= max_errors {
                    break;
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(errors)
    }
}

/// What is wrong with a CSV record, without any cell's value.
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".into(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("has {len} fields where the header has {expected_len}")
        }
        csv::ErrorKind::Io(io) => format!("cannot be read: {io}"),
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(i) => format!("field {}: {}", i + 1, deserialize_reason(err)),
            None => deserialize_reason(err),
        },
        _ => "cannot be read".into(),
    }
}

fn deserialize_reason(err: &csv::DeserializeError) -> String {
    match err.kind() {
        csv::DeserializeErrorKind::Message(m) if m.starts_with("missing field") => m.clone(),
        csv::DeserializeErrorKind::InvalidUtf8(_) => "is not valid UTF-8".into(),
        _ => "cannot be read as text".into(),
    }
}

/// Parses a body as strict JSON (a key twice is refused), bounded in size.
fn parse_json(body: &[u8]) -> Result<Value, ConversionError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ConversionError::TooLarge(body.len()));
    }
    strict_json::parse(body).map_err(ConversionError::Json)
}

/// A string field of an object: absent, `null` and blank are `None`; another type is refused.
fn text<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    field: &'static str,
) -> Result<Option<&'a str>, ConversionError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim()).filter(|s| !s.is_empty())),
        Some(_) if field == "value.amount" => Err(ConversionError::field(
            field,
            "must be a decimal string like \"89.90\" (not a JSON number: it would be rounded)",
        )),
        Some(_) => Err(ConversionError::field(field, "must be a string")),
    }
}

/// Checks the fields of one event, wherever they came from.
fn check(raw: RawEvent<'_>, now: DateTime<Utc>) -> Result<Conversion, ConversionError> {
    let event_id = check_event_id(raw.event_id)?;
    let campaign = CampaignId::parse(
        raw.campaign_id
            .ok_or_else(|| ConversionError::field("campaign_id", "missing"))?,
    )
    .map_err(|e| ConversionError::field("campaign_id", e))?;
    let to = raw
        .to
        .map(|t| PhoneNumber::parse(t).map_err(|e| ConversionError::field("to", phone_reason(&e))))
        .transpose()?;
    let key = raw.key.map(check_key).transpose()?;
    if to.is_none() && key.is_none() {
        return Err(ConversionError::field(
            "to",
            "missing: an event names the customer by `to` (their number) or `key` (the message's key)",
        ));
    }
    let event = check_event(raw.event)?;
    let at = check_at(raw.at, now)?;
    let value = raw
        .value
        .map(|(amount, currency)| {
            Ok::<_, ConversionError>(ConversionValue {
                amount_micros: parse_amount(amount)?,
                currency: check_currency(currency)?,
            })
        })
        .transpose()?;
    Ok(Conversion {
        event_id,
        campaign,
        to,
        key,
        event,
        at,
        value,
    })
}

fn check_event_id(raw: Option<&str>) -> Result<String, ConversionError> {
    let id = raw.ok_or_else(|| ConversionError::field("event_id", "missing"))?;
    if id.chars().count() > MAX_EVENT_ID_CHARS {
        return Err(ConversionError::field(
            "event_id",
            format!("must be at most {MAX_EVENT_ID_CHARS} characters"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(ConversionError::field(
            "event_id",
            "must not contain control characters",
        ));
    }
    Ok(id.to_owned())
}

/// The recipient's main key for the key the shop gave.
fn check_key(raw: &str) -> Result<IdempotencyKey, ConversionError> {
    let key = IdempotencyKey::parse(raw).map_err(|e| ConversionError::field("key", e))?;
    let main = main_key(key.as_str());
    if main.trim().is_empty() {
        return Err(ConversionError::field(
            "key",
            "is only a suffix (#sms, #follow-up): give the message's key",
        ));
    }
    Ok(if main.len() == key.as_str().len() {
        key
    } else {
        IdempotencyKey::from_trusted(main)
    })
}

/// Why a number is refused, in fixed words: the crate's message could quote the input.
fn phone_reason(e: &PhoneError) -> &'static str {
    match e {
        PhoneError::MissingPlus => "must start with '+' and the country code",
        PhoneError::Unparsable(_) => "is not a phone number",
        PhoneError::Invalid => "is not a valid number for its country",
    }
}

fn check_event(raw: Option<&str>) -> Result<String, ConversionError> {
    let event = raw.ok_or_else(|| ConversionError::field("event", "missing"))?;
    let fine = event.chars().count() <= MAX_EVENT_CHARS
        && event
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !fine {
        return Err(ConversionError::field(
            "event",
            format!(
                "must be a name like \"order\": at most {MAX_EVENT_CHARS} letters, digits, '_', '-' or '.'"
            ),
        ));
    }
    Ok(event.to_owned())
}

fn check_at(raw: Option<&str>, now: DateTime<Utc>) -> Result<DateTime<Utc>, ConversionError> {
    let raw = raw.ok_or_else(|| ConversionError::field("at", "missing"))?;
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|e| {
            ConversionError::field(
                "at",
                format!("{e} (use RFC 3339, like 2026-11-27T09:12:00Z)"),
            )
        })?
        .with_timezone(&Utc);
    if at > now + MAX_FUTURE {
        return Err(ConversionError::field(
            "at",
            "is more than a day in the future",
        ));
    }
    Ok(at)
}

/// A non-negative decimal string with at most [`MAX_DECIMALS`] decimals, exactly in micros.
fn parse_amount(raw: Option<&str>) -> Result<i64, ConversionError> {
    let bad = || {
        ConversionError::field(
            "value.amount",
            format!(
                "must be a non-negative decimal like \"89.90\", at most {MAX_DECIMALS} decimals"
            ),
        )
    };
    let raw = raw.ok_or_else(|| ConversionError::field("value.amount", "missing"))?;
    let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(frac)
        || frac.len() > MAX_DECIMALS
        || (raw.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    if whole.trim_start_matches('0').len() > MAX_WHOLE_DIGITS {
        return Err(ConversionError::field("value.amount", "is too large"));
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    Ok(whole * 1_000_000 + frac)
}

fn check_currency(raw: Option<&str>) -> Result<String, ConversionError> {
    let currency = raw.ok_or_else(|| ConversionError::field("value.currency", "missing"))?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ConversionError::field(
            "value.currency",
            "must be an ISO 4217 code of three upper-case letters, like EUR",
        ));
    }
    Ok(currency.to_owned())
}

/// A version as the reason may echo it: a number, cut short; anything else only by its type
/// (a string there could be anything, a phone number included).
fn shown_version(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string().chars().take(32).collect(),
        Value::String(_) => "(a string)".into(),
        Value::Bool(_) => "(a boolean)".into(),
        Value::Array(_) => "(a list)".into(),
        _ => "(an object)".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn event() -> Value {
        json!({
            "version": 1, "event_id": "order-991", "campaign_id": "black-friday-2026",
            "to": "+49 151 1234-5678", "event": "order", "at": "2026-11-27T09:12:00Z",
            "value": { "amount": "89.90", "currency": "EUR" }
        })
    }

    fn parse(v: &Value) -> Result<Conversion, ConversionError> {
        Conversion::parse(v.to_string().as_bytes(), now())
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = event();
        if value.is_null() {
            v.as_object_mut().unwrap().remove(field);
        } else {
            v[field] = value;
        }
        v
    }

    #[test]
    fn the_design_example_parses_with_the_number_normalised_and_the_amount_in_micros() {
        let c = parse(&event()).unwrap();
        assert_eq!(c.event_id, "order-991");
        assert_eq!(c.campaign.as_str(), "black-friday-2026");
        assert_eq!(c.to.as_ref().unwrap().as_str(), "+4915112345678");
        assert_eq!(c.key, None);
        assert_eq!(c.event, "order");
        assert_eq!(c.at.to_rfc3339(), "2026-11-27T09:12:00+00:00");
        assert_eq!(
            c.value,
            Some(ConversionValue {
                amount_micros: 89_900_000,
                currency: "EUR".into()
            })
        );
        assert!(!format!("{c:?}").contains("12345678"), "{c:?}");
    }

    #[test]
    fn a_key_alone_names_the_customer_and_derived_keys_become_the_main_one() {
        let mut v = with("to", Value::Null);
        v["key"] = json!("order-991-reminder#follow-up");
        let c = parse(&v).unwrap();
        assert_eq!(c.key.unwrap().as_str(), "order-991-reminder");
        assert_eq!(c.to, None);
        assert_eq!(main_key("k#sms"), "k");
        assert_eq!(main_key("k#follow-up"), "k");
        assert_eq!(main_key("k#follow-up#sms"), "k");
        assert_eq!(main_key("k"), "k");
        assert_eq!(main_key("k#other"), "k#other");
    }

    #[test]
    fn the_sms_suffix_is_the_fallbacks_own() {
        assert_eq!(crate::engine::sms_key("k"), format!("k{SMS_KEY_SUFFIX}"));
    }

    #[test]
    fn value_is_optional_and_amounts_are_exact() {
        let c = parse(&with("value", Value::Null)).unwrap();
        assert_eq!(c.value, None);
        for (amount, micros) in [
            ("0", 0),
            ("7", 7_000_000),
            ("0.5", 500_000),
            ("12.3456", 12_345_600),
            ("999999999999.9999", 999_999_999_999_999_900),
        ] {
            let v = with("value", json!({ "amount": amount, "currency": "USD" }));
            assert_eq!(
                parse(&v).unwrap().value.unwrap().amount_micros,
                micros,
                "{amount}"
            );
        }
    }

    #[test]
    fn one_version_is_understood_and_1_0_is_the_same_number() {
        assert!(parse(&with("version", json!(1.0))).is_ok());
        assert_eq!(
            parse(&with("version", json!(2))).unwrap_err(),
            ConversionError::UnsupportedVersion("2".into())
        );
        assert_eq!(
            parse(&with("version", Value::Null)).unwrap_err(),
            ConversionError::MissingVersion
        );
        assert_eq!(
            parse(&with("version", json!(2))).unwrap_err().label(),
            "unsupported_version"
        );
    }

    /// Bad events, each refused naming its field.
    #[test]
    fn bad_events_are_refused_naming_the_field() {
        let long = "x".repeat(MAX_EVENT_ID_CHARS + 1);
        let cases: Vec<(&str, Value, &str)> = vec![
            ("event_id", Value::Null, "missing"),
            ("event_id", json!(""), "missing"),
            ("event_id", json!("  "), "missing"),
            ("event_id", json!(long), "at most"),
            ("event_id", json!("a\u{0}b"), "control"),
            ("event_id", json!(991), "must be a string"),
            ("campaign_id", Value::Null, "missing"),
            ("campaign_id", json!("x".repeat(300)), "at most"),
            ("to", json!("015112345678"), "'+'"),
            ("to", json!("+49 1"), "not"),
            ("to", json!("+hello"), "not a phone number"),
            ("event", Value::Null, "missing"),
            ("event", json!(""), "missing"),
            ("event", json!("order now!"), "a name like"),
            ("event", json!("o".repeat(65)), "at most"),
            ("at", Value::Null, "missing"),
            ("at", json!("27.11.2026"), "RFC 3339"),
            ("at", json!("2026-11-27 09:12"), "RFC 3339"),
            ("at", json!("2026-11-29T12:00:00Z"), "future"),
            ("value", json!("89.90 EUR"), "must be an object"),
            (
                "value",
                json!({ "amount": 89.9, "currency": "EUR" }),
                "not a JSON number",
            ),
            (
                "value",
                json!({ "amount": "-1", "currency": "EUR" }),
                "non-negative",
            ),
            (
                "value",
                json!({ "amount": "1.23456", "currency": "EUR" }),
                "4 decimals",
            ),
            (
                "value",
                json!({ "amount": "1,50", "currency": "EUR" }),
                "non-negative",
            ),
            (
                "value",
                json!({ "amount": "1.", "currency": "EUR" }),
                "non-negative",
            ),
            (
                "value",
                json!({ "amount": ".5", "currency": "EUR" }),
                "non-negative",
            ),
            (
                "value",
                json!({ "amount": "1e3", "currency": "EUR" }),
                "non-negative",
            ),
            (
                "value",
                json!({ "amount": "1000000000000", "currency": "EUR" }),
                "too large",
            ),
            ("value", json!({ "currency": "EUR" }), "missing"),
            ("value", json!({ "amount": "1" }), "missing"),
            (
                "value",
                json!({ "amount": "1", "currency": "eur" }),
                "three upper-case",
            ),
            (
                "value",
                json!({ "amount": "1", "currency": "EURO" }),
                "three upper-case",
            ),
        ];
        for (field, value, needle) in cases {
            let err = parse(&with(field, value.clone())).unwrap_err();
            let shown = err.to_string();
            let named = match field {
                "value" if !value.is_string() => shown.contains("`value."),
                _ => shown.contains(&format!("`{field}`")),
            };
            assert!(named, "{field} = {value}: {shown}");
            assert!(shown.contains(needle), "{field} = {value}: {shown}");
            assert_eq!(err.label(), "invalid_conversion", "{shown}");
            assert!(
                !shown.contains("12345678") && !shown.contains("015112"),
                "{shown}"
            );
        }
    }

    #[test]
    fn an_event_needs_to_or_key() {
        let err = parse(&with("to", Value::Null)).unwrap_err();
        assert!(
            err.to_string().contains("`to`") && err.to_string().contains("`key`"),
            "{err}"
        );
        let mut v = with("to", json!(""));
        v["key"] = json!("#sms");
        assert!(parse(&v).unwrap_err().to_string().contains("`key`"));
    }

    #[test]
    fn bodies_are_one_event_or_a_bounded_list_refused_whole_with_the_index() {
        let one = Conversion::parse_many(event().to_string().as_bytes(), now()).unwrap();
        assert_eq!(one.len(), 1);
        let list = json!([event(), with("event_id", json!("order-992"))]);
        assert_eq!(
            Conversion::parse_many(list.to_string().as_bytes(), now())
                .unwrap()
                .len(),
            2
        );
        let bad = json!([event(), event(), with("at", json!("yesterday"))]);
        let err = Conversion::parse_many(bad.to_string().as_bytes(), now()).unwrap_err();
        assert!(
            err.to_string().starts_with("events[2]: field `at`"),
            "{err}"
        );
        assert_eq!(err.label(), "invalid_conversion");
        for (body, want) in [
            ("[]", ConversionError::Empty),
            ("\"x\"", ConversionError::NotAnObjectOrList),
        ] {
            assert_eq!(
                Conversion::parse_many(body.as_bytes(), now()).unwrap_err(),
                want
            );
        }
        let too_many = Value::Array(vec![event(); MAX_EVENTS + 1]);
        assert_eq!(
            Conversion::parse_many(too_many.to_string().as_bytes(), now()).unwrap_err(),
            ConversionError::TooMany(MAX_EVENTS + 1)
        );
        // AMQP carries one event per message.
        let list = json!([event()]).to_string();
        assert_eq!(
            Conversion::parse(list.as_bytes(), now()).unwrap_err(),
            ConversionError::NotAnObject
        );
        let err = Conversion::parse(br#"{"version":1,"version":1}"#, now()).unwrap_err();
        assert_eq!(err.label(), "invalid_json");
    }

    const CSV: &str = "event_id,campaign_id,to,key,event,at,amount,currency
order-1,bf,+4915112345678,,order,2026-11-27T09:12:00Z,89.90,EUR
order-2,bf,,k-2#sms,order,2026-11-27T09:13:00+01:00,,
";

    #[test]
    fn csv_rows_parse_with_empty_cells_as_absent() {
        let events = parse_csv(CSV.as_bytes(), now(), 20).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].value.as_ref().unwrap().amount_micros, 89_900_000);
        assert_eq!(events[1].key.as_ref().unwrap().as_str(), "k-2");
        assert_eq!(events[1].to, None);
        assert_eq!(events[1].value, None);
    }

    #[test]
    fn bad_csv_rows_are_named_by_line_and_field() {
        let csv = format!(
            "{CSV}order-3,bf,,,order,2026-11-27T09:12:00Z,,\norder-4,bf,+4915112345678,,order,2026-11-27T09:12:00Z,5,\nshort,row\n"
        );
        let errors = parse_csv(csv.as_bytes(), now(), 20).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(shown[0].starts_with("line 4: field `to`"), "{shown:?}");
        assert!(
            shown[1].starts_with("line 5: field `value.currency`"),
            "{shown:?}"
        );
        assert!(shown[2].starts_with("line 6:"), "{shown:?}");
        assert!(shown.iter().all(|s| !s.contains("12345678")), "{shown:?}");
        assert_eq!(parse_csv(csv.as_bytes(), now(), 1).unwrap_err().len(), 1);
        let err = parse_csv("event_id,to\n".as_bytes(), now(), 20).unwrap_err();
        assert!(err[0].to_string().contains("campaign_id"), "{:?}", err);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_never_echoes_a_number(
            field in proptest::sample::select(vec![
                "event_id", "campaign_id", "to", "key", "event", "at", "version",
            ]),
            garbage in "[+0-9a-z .:#-]{0,40}",
        ) {
            let v = with(field, json!(format!("{garbage}+4915198765432")));
            if let Err(e) = parse(&v) {
                let shown = e.to_string();
                proptest::prop_assert!(!shown.contains("98765432"), "{}", shown);
            }
        }

        #[test]
        fn amounts_round_trip_through_micros(whole in 0u64..1_000_000_000_000, frac in 0u32..10_000) {
            let raw = format!("{whole}.{frac:04}");
            let v = with("value", json!({ "amount": raw, "currency": "EUR" }));
            let micros = parse(&v).unwrap().value.unwrap().amount_micros;
            proptest::prop_assert_eq!(micros, whole as i64 * 1_000_000 + i64::from(frac) * 100);
        }
    }
}
