//! Job format v1 (DESIGN §1.2): the JSON a campaign system publishes, parsed into a checked
//! [`Job`]. A job-level problem (bad JSON, wrong version, missing field, too many recipients,
//! unknown category) rejects the whole job with the field and the reason; a recipient-level
//! problem (invalid number, listed twice) skips only that recipient with a recorded reason.
//! The channel fields of §1.5 (`recipients[].channel`, `recipients[].vars`, `sms`, `fallback`)
//! are read in [`sms`], `follow_up` in [`follow_up`].

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::channel::{ChannelKind, FallbackRule};
use super::ids::{CampaignId, IdError, IdempotencyKey, JobId, SenderId};
use super::outcome::{Category, SkipReason};
use super::phone::{PhoneError, PhoneNumber};
use super::strict_json;

mod follow_up;
mod session;
mod sms;

pub use follow_up::{FollowUpRule, MAX_AFTER, MIN_AFTER, Reached};
pub use session::{SESSION_TYPES, SessionMessage, session_message};
pub use sms::{SmsVersion, iso_duration};

/// The only job version this herald understands.
pub const SUPPORTED_VERSION: u64 = 1;
/// Most recipients one job may carry (DESIGN §1.2); bounds a worker's memory per job.
pub const MAX_RECIPIENTS: usize = 10_000;
/// Largest job body accepted, checked before parsing: 10,000 recipients with components fit
/// comfortably; anything larger is a mistake or an attack.
pub const MAX_JOB_BYTES: usize = 16 * 1024 * 1024;

/// Why a job was rejected. The message names the field and says why; it travels in the
/// dead-letter header and in CLI errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("job is {0} bytes, more than the {MAX_JOB_BYTES} allowed")]
    TooLarge(usize),
    #[error("job is not valid JSON: {0}")]
    Json(String),
    #[error("job must be a JSON object")]
    NotAnObject,
    #[error("missing field `version`")]
    MissingVersion,
    #[error("unsupported job version {0} (this herald understands version {SUPPORTED_VERSION})")]
    UnsupportedVersion(String),
    #[error("field `{field}`: {reason}")]
    Field { field: String, reason: String },
    #[error("job has {0} recipients, more than the {MAX_RECIPIENTS} allowed per job")]
    TooManyRecipients(usize),
    #[error("job has no recipients")]
    NoRecipients,
}

impl JobError {
    fn field(field: impl Into<String>, reason: impl ToString) -> Self {
        Self::Field {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    fn id(field: &str, e: IdError) -> Self {
        Self::field(field, e)
    }
}

/// The template a job sends, as the campaign system names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TemplateRef {
    pub name: String,
    pub language: String,
    pub category: Category,
}

/// One recipient to send to, with its key and its merged components.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub key: IdempotencyKey,
    pub to: PhoneNumber,
    /// Job components merged with this recipient's; shared when the recipient adds none.
    pub components: Arc<Vec<Value>>,
    /// The channel the customer prefers (`whatsapp` unless the job says `sms`).
    pub channel: ChannelKind,
    /// Values for the SMS text's `{{name}}` placeholders.
    pub vars: Option<Arc<Map<String, Value>>>,
}

/// A recipient skipped while parsing (invalid number, listed twice), recorded with its reason.
#[derive(Debug, Clone)]
pub struct SkippedRecipient {
    pub key: IdempotencyKey,
    /// The `to` as given: it may not be a phone number at all. Masked wherever it is shown.
    pub to: String,
    pub reason: SkipReason,
}

/// A checked job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub campaign: CampaignId,
    pub sender: SenderId,
    /// The template, for recipients outside the customer-service window (or all, without
    /// `session`). A job has a template, a session message, or both.
    pub template: Option<TemplateRef>,
    /// The free-form message for recipients whose customer-service window is open.
    pub session: Option<SessionMessage>,
    /// The category consent is checked for: the template's, or the job's `category` for a
    /// session message alone (marketing unless it says otherwise).
    pub category: Category,
    /// Valid, distinct recipients in the order given.
    pub recipients: Vec<Recipient>,
    /// Recipients skipped at parse time.
    pub skipped: Vec<SkippedRecipient>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The SMS version, for recipients who prefer SMS and for fallback.
    pub sms: Option<SmsVersion>,
    /// When the SMS version stands in for the WhatsApp message.
    pub fallback: Option<FallbackRule>,
    /// The follow-up to those who did not convert.
    pub follow_up: Option<FollowUpRule>,
}

#[derive(Deserialize)]
struct WireJob {
    job_id: String,
    campaign_id: String,
    sender: String,
    #[serde(default)]
    template: Option<WireTemplate>,
    #[serde(default)]
    session: Option<Value>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    components: Vec<Value>,
    recipients: Vec<WireRecipient>,
    #[serde(default)]
    not_before: Option<DateTime<Utc>>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    sms: Option<sms::WireSms>,
    #[serde(default)]
    fallback: Option<sms::WireFallback>,
    #[serde(default)]
    follow_up: Option<follow_up::WireFollowUp>,
}

#[derive(Deserialize)]
struct WireTemplate {
    name: String,
    language: String,
    category: String,
}

#[derive(Deserialize)]
struct WireRecipient {
    to: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    components: Option<Vec<Value>>,
    #[serde(default)]
    channel: Option<ChannelKind>,
    #[serde(default)]
    vars: Option<Map<String, Value>>,
}

impl Job {
    /// Parses and checks a job body.
    pub fn parse(body: &[u8]) -> Result<Self, JobError> {
        if body.len() > MAX_JOB_BYTES {
            return Err(JobError::TooLarge(body.len()));
        }
        let value = strict_json::parse(body).map_err(JobError::Json)?;
        let Value::Object(map) = &value else {
            return Err(JobError::NotAnObject);
        };
        match map.get("version") {
            None => return Err(JobError::MissingVersion),
            // `1.0` is the same number: serialisers that write every number as a float (some
            // JavaScript and spreadsheet exports) must not have their jobs refused for it.
            Some(Value::Number(n)) if n.as_f64() == Some(SUPPORTED_VERSION as f64) => {}
            Some(other) => return Err(JobError::UnsupportedVersion(truncated(other))),
        }
        if let Some(path) = text_with_control_character(&value, &mut String::new()) {
            return Err(JobError::field(path, "contains a control character"));
        }
        if let Some(Value::Array(r)) = map.get("recipients")
            && r.len() > MAX_RECIPIENTS
        {
            return Err(JobError::TooManyRecipients(r.len()));
        }
        let wire: WireJob = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            match inner.strip_prefix("missing field ") {
                Some(name) if path == "." => {
                    JobError::field(name.trim_matches('`'), "missing field")
                }
                _ => JobError::field(path, without_values(&inner)),
            }
        })?;
        Self::from_wire(wire)
    }

    fn from_wire(w: WireJob) -> Result<Self, JobError> {
        let id = JobId::parse(&w.job_id).map_err(|e| JobError::id("job_id", e))?;
        let campaign =
            CampaignId::parse(&w.campaign_id).map_err(|e| JobError::id("campaign_id", e))?;
        let sender = SenderId::parse(&w.sender).map_err(|e| JobError::id("sender", e))?;
        let template = w
            .template
            .map(template_ref)
            .transpose()
            .map_err(|(f, r)| JobError::field(f, r))?;
        let session = w
            .session
            .map(|s| session_message(s, "session"))
            .transpose()
            .map_err(|(f, r)| JobError::field(f, r))?;
        let category = job_category(template.as_ref(), session.is_some(), w.category)?;
        if let (Some(nb), Some(exp)) = (w.not_before, w.expires_at)
            && exp <= nb
        {
            return Err(JobError::field(
                "expires_at",
                "must be later than not_before",
            ));
        }
        if w.recipients.is_empty() {
            return Err(JobError::NoRecipients);
        }
        for (i, c) in w.components.iter().enumerate() {
            check_component(c).map_err(|r| JobError::field(format!("components[{i}]"), r))?;
        }

        let sms = w
            .sms
            .map(sms::sms_version)
            .transpose()
            .map_err(|(field, reason)| JobError::field(field, reason))?;
        let fallback = w
            .fallback
            .map(sms::fallback_rule)
            .transpose()
            .map_err(|(field, reason)| JobError::field(field, reason))?;
        let follow_up = w
            .follow_up
            .map(|f| follow_up::follow_up_rule(f, sms.as_ref().map(|s| s.from.as_str())))
            .transpose()
            .map_err(|(field, reason)| JobError::field(field, reason))?;
        if sms.is_none() {
            if fallback.is_some() {
                return Err(JobError::field("sms", "is required when `fallback` is set"));
            }
            if let Some(i) = w
                .recipients
                .iter()
                .position(|r| r.channel == Some(ChannelKind::Sms))
            {
                return Err(JobError::field(
                    "sms",
                    format!("is required: recipients[{i}].channel is \"sms\""),
                ));
            }
        }

        let job_components = Arc::new(w.components);
        let mut seen_keys = HashSet::with_capacity(w.recipients.len());
        let mut seen_numbers = HashSet::with_capacity(w.recipients.len());
        let mut recipients = Vec::with_capacity(w.recipients.len());
        let mut skipped = Vec::new();
        let numbers = parse_numbers(&w.recipients);
        for ((i, r), parsed) in w.recipients.into_iter().enumerate().zip(numbers) {
            let (name, language) = key_names(template.as_ref());
            let key = match (&r.key, &parsed) {
                (Some(k), _) => IdempotencyKey::parse(k)
                    .map_err(|e| JobError::id(&format!("recipients[{i}].key"), e))?,
                (None, Ok(to)) => IdempotencyKey::derive(&campaign, to, name, language),
                (None, Err(_)) => {
                    IdempotencyKey::derive_from_raw(&campaign, r.to.trim(), name, language)
                }
            };
            if !seen_keys.insert(key.clone()) {
                // The same key twice is the same message: it has one outcome, already covered.
                continue;
            }
            let to = match parsed {
                Ok(to) => to,
                Err(_) => {
                    skipped.push(SkippedRecipient {
                        key,
                        to: r.to,
                        reason: SkipReason::InvalidNumber,
                    });
                    continue;
                }
            };
            if !seen_numbers.insert(to.clone()) {
                skipped.push(SkippedRecipient {
                    key,
                    to: to.as_str().to_owned(),
                    reason: SkipReason::Duplicate,
                });
                continue;
            }
            let components = match r.components {
                None => Arc::clone(&job_components),
                Some(own) if own.is_empty() => Arc::clone(&job_components),
                Some(own) => {
                    for (j, c) in own.iter().enumerate() {
                        check_component(c).map_err(|reason| {
                            JobError::field(format!("recipients[{i}].components[{j}]"), reason)
                        })?;
                    }
                    Arc::new(merge_components(&job_components, own))
                }
            };
            let channel = r.channel.unwrap_or_default();
            if let Some(sms) = &sms
                && (channel == ChannelKind::Sms || fallback.is_some())
            {
                check_vars(sms, r.vars.as_ref(), "sms.text")
                    .map_err(|reason| JobError::field(format!("recipients[{i}].vars"), reason))?;
            }
            if let Some(sms) = follow_up.as_ref().and_then(|f| f.sms.as_ref())
                && channel == ChannelKind::Sms
            {
                check_vars(sms, r.vars.as_ref(), "follow_up.sms_text")
                    .map_err(|reason| JobError::field(format!("recipients[{i}].vars"), reason))?;
            }
            recipients.push(Recipient {
                key,
                to,
                components,
                channel,
                vars: r.vars.map(Arc::new),
            });
        }
        Ok(Self {
            id,
            campaign,
            sender,
            template,
            session,
            category,
            recipients,
            skipped,
            not_before: w.not_before,
            expires_at: w.expires_at,
            sms,
            fallback,
            follow_up,
        })
    }

    /// The message name the ledger keeps for the job's keys: the template's, or `session`.
    pub fn message_name(&self) -> (&str, &str) {
        key_names(self.template.as_ref())
    }

    /// The SMS text for recipient `idx` (placeholders filled), when the job has an SMS version.
    pub fn sms_text(&self, idx: usize) -> Option<String> {
        let sms = self.sms.as_ref()?;
        Some(sms.render(self.recipients.get(idx)?.vars.as_deref()))
    }

    /// Whether any recipient may get the SMS version (prefers SMS, or fallback is set).
    pub fn needs_sms(&self) -> bool {
        self.fallback.is_some()
            || self
                .recipients
                .iter()
                .any(|r| r.channel == ChannelKind::Sms)
    }

    /// Number of distinct keys in the job: sendable recipients plus those skipped at parse.
    pub fn key_count(&self) -> usize {
        self.recipients.len() + self.skipped.len()
    }
}

/// Every recipient's number parsed, in order. libphonenumber's patterns are most of a job's
/// parsing time (≈ 10 µs a number), so a large job's numbers are parsed on every core.
fn parse_numbers(recipients: &[WireRecipient]) -> Vec<Result<PhoneNumber, PhoneError>> {
    const PER_THREAD: usize = 1000;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(recipients.len().div_ceil(PER_THREAD))
        .clamp(1, 8);
    let parse = |chunk: &[WireRecipient]| -> Vec<_> {
        chunk.iter().map(|r| PhoneNumber::parse(&r.to)).collect()
    };
    if threads == 1 {
        return parse(recipients);
    }
    let chunk = recipients.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = recipients
            .chunks(chunk)
            .map(|c| scope.spawn(move || parse(c)))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// What a key is derived from and the ledger names: the template, or `session` for a job
/// with a session message alone.
fn key_names(template: Option<&TemplateRef>) -> (&str, &str) {
    template.map_or(("session", ""), |t| (t.name.as_str(), t.language.as_str()))
}

/// The category a job's consent is checked for. A session message alone may say it
/// (`category`); without it, marketing — the strictest: a campaign's free-form message is
/// advertising unless the campaign system says it is not.
fn job_category(
    template: Option<&TemplateRef>,
    has_session: bool,
    given: Option<String>,
) -> Result<Category, JobError> {
    let given = given
        .map(|c| c.parse::<Category>())
        .transpose()
        .map_err(|e| JobError::field("category", e))?;
    match (template, given) {
        (None, _) if !has_session => Err(JobError::field(
            "template",
            "missing field (a job needs `template`, `session`, or both)",
        )),
        (Some(t), Some(c)) if c != t.category => Err(JobError::field(
            "category",
            "must be the template's category (or be left out)",
        )),
        (Some(t), _) => Ok(t.category),
        (None, given) => Ok(given.unwrap_or(Category::Marketing)),
    }
}

/// The version as given, cut short: it is echoed in the reason of a rejected job.
fn truncated(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(32) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// A serde message without the offending value: `invalid type: integer `4915701800000`,
/// expected a string` becomes `invalid type: integer, expected a string`. A rejected job's
/// reason goes to logs, AMQP headers and events, and the value may be a phone number or a
/// name. What follows `expected` is the schema's wording and is kept.
fn without_values(msg: &str) -> String {
    // `missing field `to`` and the like quote the schema, not the data.
    let quotes_a_value = [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
    ]
    .iter()
    .any(|p| msg.starts_with(p));
    if !quotes_a_value {
        return msg.to_owned();
    }
    let (head, tail) = match msg.find(", expected") {
        Some(i) => msg.split_at(i),
        None => (msg, ""),
    };
    let mut out = String::with_capacity(msg.len());
    let mut quote: Option<char> = None;
    for c in head.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '`' || c == '"' => quote = Some(c),
            None => out.push(c),
        }
    }
    let mut out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    out.push_str(tail);
    out
}

/// The path of the first string (value or object key) holding a control character, if any.
/// Identifiers and numbers may hold none; free text (component parameters) may break lines
/// and tabs but nothing else: a NUL byte, for one, can't be stored by Postgres, and a job
/// carrying one must be refused with its reason, not retried as if the database were down.
fn text_with_control_character(v: &Value, path: &mut String) -> Option<String> {
    let bad = |s: &str, free_text: bool| {
        s.chars()
            .any(|c| c.is_control() && !(free_text && matches!(c, '\n' | '\r' | '\t')))
    };
    let free_text = path.contains("components");
    match v {
        Value::String(s) if bad(s, free_text) => Some(path_or_root(path)),
        Value::Array(items) => {
            let len = path.len();
            for (i, item) in items.iter().enumerate() {
                let _ = write!(path, "[{i}]");
                if let Some(p) = text_with_control_character(item, path) {
                    return Some(p);
                }
                path.truncate(len);
            }
            None
        }
        Value::Object(map) => {
            let len = path.len();
            for (k, item) in map {
                if bad(k, false) {
                    return Some(format!("{} (a key)", path_or_root(path)));
                }
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                if let Some(p) = text_with_control_character(item, path) {
                    return Some(p);
                }
                path.truncate(len);
            }
            None
        }
        _ => None,
    }
}

fn path_or_root(path: &str) -> String {
    if path.is_empty() {
        ".".into()
    } else {
        path.to_owned()
    }
}

/// A recipient who may get the SMS needs a plain value for every placeholder of its text.
fn check_vars(
    sms: &SmsVersion,
    vars: Option<&Map<String, Value>>,
    text_field: &str,
) -> Result<(), String> {
    for name in &sms.placeholders {
        match vars.and_then(|v| v.get(name)) {
            Some(Value::String(_) | Value::Number(_) | Value::Bool(_)) => {}
            Some(_) => return Err(format!("`{name}` must be a string or a number")),
            None => return Err(format!("has no `{name}`, which {text_field} uses")),
        }
    }
    Ok(())
}

/// Checks a `template` object; errors name the field under `template.`.
fn template_ref(w: WireTemplate) -> Result<TemplateRef, (String, String)> {
    let field = |f: &str, r: String| (format!("template.{f}"), r);
    if w.name.trim().is_empty() {
        return Err(field("name", "must not be empty".into()));
    }
    if w.language.trim().is_empty() {
        return Err(field("language", "must not be empty".into()));
    }
    let category = w
        .category
        .parse::<Category>()
        .map_err(|e| field("category", e.to_string()))?;
    Ok(TemplateRef {
        name: w.name,
        language: w.language,
        category,
    })
}

fn check_component(c: &Value) -> Result<(), String> {
    let Value::Object(m) = c else {
        return Err("a component must be an object".into());
    };
    match m.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(()),
        _ => Err("a component needs a string `type`".into()),
    }
}

/// Identity of a component for merging: its type, plus `sub_type` and `index` for buttons.
fn component_slot(c: &Value) -> (String, String, String) {
    let get = |k: &str| match c.get(k) {
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    (get("type"), get("sub_type"), get("index"))
}

/// Merges job-level components with a recipient's: the recipient wins per component slot
/// (type, and index for buttons); other job components are kept in order.
pub fn merge_components(job: &[Value], recipient: Vec<Value>) -> Vec<Value> {
    let mut merged: Vec<Value> = job.to_vec();
    for c in recipient {
        let slot = component_slot(&c);
        match merged.iter_mut().find(|m| component_slot(m) == slot) {
            Some(existing) => *existing = c,
            None => merged.push(c),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job_json() -> Value {
        json!({
          "version": 1,
          "job_id": "bf26-000017",
          "campaign_id": "black-friday-2026",
          "sender": "106540352242922",
          "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
          "components": [ { "type": "header", "parameters": [ { "type": "image", "image": { "id": "4711" } } ] } ],
          "recipients": [
            { "to": "+4915112345678", "components": [ { "type": "body", "parameters": [ { "type": "text", "text": "Anna" } ] } ] },
            { "to": "+4917698765432", "key": "order-991-reminder" }
          ],
          "not_before": "2026-11-27T08:00:00Z",
          "expires_at": "2026-11-28T00:00:00Z"
        })
    }

    fn parse(v: &Value) -> Result<Job, JobError> {
        Job::parse(v.to_string().as_bytes())
    }

    fn field(r: Result<Job, JobError>) -> String {
        match r {
            Err(JobError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_session_message_goes_alone_or_with_a_template() {
        let mut v = job_json();
        v["session"] = json!({"type":"text","text":"Die Sneaker sind da, Anna!"});
        let both = parse(&v).unwrap();
        assert!(both.template.is_some());
        assert_eq!(
            both.session.as_ref().unwrap().body(),
            Some("Die Sneaker sind da, Anna!")
        );
        assert_eq!(both.category, Category::Marketing);

        v.as_object_mut().unwrap().remove("template");
        let alone = parse(&v).unwrap();
        assert!(alone.template.is_none());
        assert_eq!(
            alone.category,
            Category::Marketing,
            "marketing unless the job says"
        );
        assert_eq!(alone.message_name(), ("session", ""));
        assert!(
            alone.recipients[0]
                .key
                .as_str()
                .starts_with("k:black-friday-2026:")
        );
        assert_ne!(alone.recipients[0].key, both.recipients[0].key);

        v["category"] = json!("utility");
        assert_eq!(parse(&v).unwrap().category, Category::Utility);
    }

    #[test]
    fn session_problems_name_their_field() {
        let mut v = job_json();
        v.as_object_mut().unwrap().remove("template");
        assert_eq!(field(parse(&v)), "template");
        v["session"] = json!({"type":"text","text":""});
        assert_eq!(field(parse(&v)), "session.text");
        v["session"] = json!({"type":"template"});
        assert_eq!(field(parse(&v)), "session.type");
        v["session"] = json!({"type":"text","text":"hi"});
        v["category"] = json!("promo");
        assert_eq!(field(parse(&v)), "category");
        let mut v = job_json();
        v["session"] = json!({"type":"text","text":"hi"});
        v["category"] = json!("utility");
        assert_eq!(
            field(parse(&v)),
            "category",
            "must agree with the template's"
        );
    }

    #[test]
    fn the_design_example_parses() {
        let job = parse(&job_json()).unwrap();
        assert_eq!(job.id.as_str(), "bf26-000017");
        assert_eq!(job.category, Category::Marketing);
        assert_eq!(job.recipients.len(), 2);
        assert_eq!(job.recipients[1].key.as_str(), "order-991-reminder");
        assert!(
            job.recipients[0]
                .key
                .as_str()
                .starts_with("k:black-friday-2026:")
        );
        assert_eq!(job.recipients[0].components.len(), 2);
        assert_eq!(job.recipients[1].components.len(), 1);
        assert!(job.not_before.is_some() && job.expires_at.is_some());
    }

    #[test]
    fn bad_json_is_rejected_with_position() {
        let err = Job::parse(b"{\"version\": 1,").unwrap_err();
        assert!(
            matches!(err, JobError::Json(ref m) if m.contains("line 1")),
            "{err}"
        );
    }

    #[test]
    fn unsupported_versions_are_rejected() {
        let mut v = job_json();
        v["version"] = json!(2);
        assert_eq!(
            parse(&v).unwrap_err(),
            JobError::UnsupportedVersion("2".into())
        );
        v.as_object_mut().unwrap().remove("version");
        assert_eq!(parse(&v).unwrap_err(), JobError::MissingVersion);
    }

    #[test]
    fn missing_fields_are_named() {
        let mut v = job_json();
        v.as_object_mut().unwrap().remove("campaign_id");
        let err = parse(&v).unwrap_err();
        assert_eq!(err.to_string(), "field `campaign_id`: missing field");
        let mut v = job_json();
        v["recipients"][1].as_object_mut().unwrap().remove("to");
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("recipients[1]") && err.contains("to"), "{err}");
    }

    #[test]
    fn wrong_types_name_their_path() {
        let mut v = job_json();
        v["recipients"][0]["to"] = json!(4915112345678u64);
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("recipients[0].to"), "{err}");
    }

    #[test]
    fn more_than_ten_thousand_recipients_are_rejected() {
        let mut v = job_json();
        v["recipients"] = Value::Array(vec![json!({"to": "+4915112345678"}); MAX_RECIPIENTS + 1]);
        assert_eq!(parse(&v).unwrap_err(), JobError::TooManyRecipients(10_001));
    }

    #[test]
    fn unknown_categories_are_rejected() {
        let mut v = job_json();
        v["template"]["category"] = json!("promo");
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.starts_with("field `template.category`"), "{err}");
    }

    #[test]
    fn invalid_numbers_skip_the_recipient_not_the_job() {
        let mut v = job_json();
        v["recipients"][0]["to"] = json!("+49 1");
        let job = parse(&v).unwrap();
        assert_eq!(job.recipients.len(), 1);
        assert_eq!(job.skipped.len(), 1);
        assert_eq!(job.skipped[0].reason, SkipReason::InvalidNumber);
        // Its key is stable, so re-running the job records it once.
        let again = parse(&v).unwrap();
        assert_eq!(again.skipped[0].key, job.skipped[0].key);
    }

    #[test]
    fn a_large_job_parsed_on_several_threads_keeps_its_order_and_its_skips() {
        let mut v = job_json();
        let mut to: Vec<String> = (0..3_500)
            .map(|i| format!("+49151{:08}", 10_000_000 + i))
            .collect();
        to[1_700] = "+49 1".into(); // invalid, in the second thread's share
        to[3_100] = to[10].clone(); // the same number again, across threads
        v["recipients"] = to
            .iter()
            .enumerate()
            .map(|(i, n)| match i {
                // With a key of its own: a second message to the same number, skipped.
                3_100 => json!({ "to": n, "key": "again" }),
                _ => json!({ "to": n }),
            })
            .collect();
        let job = parse(&v).unwrap();
        assert_eq!(job.recipients.len(), 3_498);
        let sent: Vec<&str> = job.recipients.iter().map(|r| r.to.as_str()).collect();
        let expected: Vec<&str> = to
            .iter()
            .enumerate()
            .filter(|(i, _)| ![1_700, 3_100].contains(i))
            .map(|(_, n)| n.as_str())
            .collect();
        assert_eq!(sent, expected, "recipients in the job's order");
        let skips: Vec<_> = job.skipped.iter().map(|s| s.reason).collect();
        assert_eq!(skips, [SkipReason::InvalidNumber, SkipReason::Duplicate]);
    }

    #[test]
    fn a_recipient_listed_twice_is_sent_once() {
        let mut v = job_json();
        v["recipients"] = json!([
            {"to": "+4915112345678"},
            {"to": "+49 151 12345678"},
            {"to": "+4915112345678", "key": "explicit"},
        ]);
        let job = parse(&v).unwrap();
        assert_eq!(job.recipients.len(), 1);
        // Same derived key: collapsed. Different key, same number: skipped as duplicate.
        assert_eq!(job.skipped.len(), 1);
        assert_eq!(job.skipped[0].reason, SkipReason::Duplicate);
        assert_eq!(job.key_count(), 2);
    }

    #[test]
    fn recipient_components_win_per_slot() {
        let job = vec![
            json!({"type": "header", "parameters": [1]}),
            json!({"type": "body", "parameters": [2]}),
            json!({"type": "button", "sub_type": "url", "index": "0", "parameters": [3]}),
        ];
        let own = vec![
            json!({"type": "body", "parameters": ["mine"]}),
            json!({"type": "button", "sub_type": "url", "index": "1", "parameters": [4]}),
        ];
        let merged = merge_components(&job, own);
        assert_eq!(merged.len(), 4);
        assert_eq!(merged[1]["parameters"][0], "mine");
        assert_eq!(merged[2]["index"], "0");
    }

    #[test]
    fn expiry_before_start_is_rejected() {
        let mut v = job_json();
        v["expires_at"] = json!("2026-11-26T00:00:00Z");
        assert!(parse(&v).unwrap_err().to_string().contains("expires_at"));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v = job_json();
        v["priority"] = json!("high");
        v["recipients"][0]["locale"] = json!("de");
        assert!(parse(&v).is_ok());
    }

    #[test]
    fn the_published_schema_requires_what_the_parser_requires() {
        let schema: Value =
            serde_json::from_str(include_str!("../../../schema/job-v1.schema.json")).unwrap();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for field in &required {
            let mut v = job_json();
            v.as_object_mut().unwrap().remove(*field);
            assert!(parse(&v).is_err(), "parser accepts a job without {field}");
        }
        for optional in ["components", "not_before", "expires_at"] {
            assert!(!required.contains(&optional));
            let mut v = job_json();
            v.as_object_mut().unwrap().remove(optional);
            assert!(parse(&v).is_ok(), "parser requires {optional}");
        }
        assert_eq!(
            schema["properties"]["recipients"]["maxItems"],
            json!(MAX_RECIPIENTS)
        );
    }

    #[test]
    fn rejections_never_echo_a_value() {
        let mut v = job_json();
        v["recipients"][0]["to"] = json!(4915701800000u64);
        let err = parse(&v).unwrap_err().to_string();
        assert_eq!(
            err,
            "field `recipients[0].to`: invalid type: integer, expected a string"
        );
        let mut v = job_json();
        v["not_before"] = json!("+4915701800000");
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.starts_with("field `not_before`"), "{err}");
        assert!(!err.contains("4915701800000"), "{err}");
        let mut v = job_json();
        v["recipients"][1]["key"] = json!(["+4915701800000"]);
        let err = parse(&v).unwrap_err().to_string();
        assert!(!err.contains("4915701800000"), "{err}");
    }

    #[test]
    fn a_control_character_in_any_string_field_rejects_the_job_naming_the_field() {
        type Edit<'a> = &'a dyn Fn(&mut Value);
        let cases: [(Edit, &str); 6] = [
            (
                &|v| v["recipients"][0]["to"] = json!("+4915112\u{0}345678"),
                "recipients[0].to",
            ),
            (
                &|v| v["template"]["name"] = json!("flash\u{0}sale"),
                "template.name",
            ),
            (
                &|v| v["template"]["language"] = json!("de\u{0}"),
                "template.language",
            ),
            (&|v| v["job_id"] = json!("j\u{0}1"), "job_id"),
            (
                &|v| v["recipients"][1]["key"] = json!("k\u{7}1"),
                "recipients[1].key",
            ),
            (
                &|v| v["components"][0]["parameters"][0]["image"]["id"] = json!("47\u{0}11"),
                "components[0].parameters[0].image.id",
            ),
        ];
        for (set, field) in cases {
            let mut v = job_json();
            set(&mut v);
            let err = parse(&v).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("field `{field}`: contains a control character"),
                "{v}"
            );
        }
        // Line breaks in free text are fine.
        let mut v = job_json();
        v["recipients"][0]["components"][0]["parameters"][0]["text"] = json!("Anna\nMüller");
        assert!(parse(&v).is_ok());
    }

    #[test]
    fn duplicate_keys_are_rejected_not_last_wins() {
        let body = br#"{"version":1,"job_id":"j","campaign_id":"c","sender":"1","job_id":"k",
            "template":{"name":"t","language":"de","category":"marketing"},
            "recipients":[{"to":"+4915112345678"}]}"#;
        let err = Job::parse(body).unwrap_err().to_string();
        assert!(err.contains("duplicate key `job_id`"), "{err}");
        let body = br#"{"version":1,"job_id":"j","campaign_id":"c","sender":"1",
            "template":{"name":"t","language":"de","category":"marketing"},
            "recipients":[{"to":"+4915112345678","to":"+4917698765432"}]}"#;
        let err = Job::parse(body).unwrap_err().to_string();
        assert!(err.contains("duplicate key `to`"), "{err}");
        assert!(!err.contains("4917698765432"), "{err}");
    }

    #[test]
    fn version_one_point_zero_is_version_one() {
        let body = job_json()
            .to_string()
            .replacen("\"version\":1", "\"version\":1.0", 1);
        assert!(body.contains("1.0"));
        assert!(Job::parse(body.as_bytes()).is_ok());
        let mut v = job_json();
        v["version"] = json!(1.5);
        assert!(matches!(parse(&v), Err(JobError::UnsupportedVersion(_))));
    }

    /// DESIGN §1.5's example: one recipient on WhatsApp with SMS fallback, one preferring SMS.
    fn channel_job() -> Value {
        let mut v = job_json();
        v["recipients"] = json!([
            { "to": "+4915112345678", "vars": { "name": "Anna" } },
            { "to": "+4917698765432", "channel": "sms", "vars": { "name": "Ben" } }
        ]);
        v["sms"] = json!({ "from": "ACME", "text": "ACME: Sneaker -30 % nur heute, {{name}}: https://acme.example/s STOP: Antwort STOP" });
        v["fallback"] = json!({ "when": ["not_on_whatsapp", "failed", "undelivered"], "undelivered_after": "PT30M" });
        v
    }

    /// DESIGN §1.5's follow-up: readers who did not order get the reminder after 24 h.
    fn follow_up_job() -> Value {
        let mut v = channel_job();
        v["follow_up"] = json!({
            "after": "PT24H", "if": "read", "unless": "converted",
            "template": { "name": "flash_sale_reminder", "language": "de", "category": "marketing" },
            "components": [ { "type": "body", "parameters": [ { "type": "text", "text": "10 %" } ] } ]
        });
        v
    }

    #[test]
    fn the_follow_up_example_parses() {
        let job = parse(&follow_up_job()).unwrap();
        let f = job.follow_up.as_ref().unwrap();
        assert_eq!(f.after, std::time::Duration::from_secs(24 * 3600));
        assert_eq!(f.reached, Reached::Read);
        assert!(f.unless_converted);
        assert_eq!(f.template.name, "flash_sale_reminder");
        assert_eq!(f.components.len(), 1);
        assert!(f.sms.is_none() && f.text.is_none());
        // Defaults: any sent message, and never after a conversion.
        let mut v = follow_up_job();
        v["follow_up"].as_object_mut().unwrap().remove("if");
        v["follow_up"].as_object_mut().unwrap().remove("unless");
        let f = parse(&v).unwrap().follow_up.unwrap();
        assert_eq!(f.reached, Reached::Sent);
        assert!(f.unless_converted);
        v["follow_up"]["unless"] = json!("none");
        assert!(!parse(&v).unwrap().follow_up.unwrap().unless_converted);
    }

    #[test]
    fn a_bad_follow_up_rule_rejects_the_job_naming_the_field() {
        let field_of = |v: &Value| match parse(v) {
            Err(JobError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        };
        for (path, value, field) in [
            ("after", json!("PT30S"), "follow_up.after"),
            ("after", json!("P31D"), "follow_up.after"),
            ("after", json!("tomorrow"), "follow_up.after"),
            ("if", json!("clicked"), "follow_up.if"),
            ("unless", json!("ordered"), "follow_up.unless"),
            ("text", json!("  "), "follow_up.text"),
            ("sms_text", json!("Noch {{rabatt"), "follow_up.sms_text"),
            ("colour", json!("red"), "follow_up.colour"),
        ] {
            let mut v = follow_up_job();
            v["follow_up"][path] = value;
            let got = field_of(&v);
            assert!(got.starts_with(field), "{path}: {got}");
        }
        let mut v = follow_up_job();
        v["follow_up"]["template"]["category"] = json!("promo");
        assert_eq!(field_of(&v), "follow_up.template.category");
        let mut v = follow_up_job();
        v["follow_up"]["template"]["name"] = json!("");
        assert_eq!(field_of(&v), "follow_up.template.name");
        let mut v = follow_up_job();
        v["follow_up"]["components"] = json!([42]);
        assert_eq!(field_of(&v), "follow_up.components[0]");
        // An SMS follow-up needs the job's sender ID, and every SMS customer its values.
        let mut v = follow_up_job();
        v["follow_up"]["sms_text"] = json!("ACME: noch 10 % extra, {{name}}! STOP: Antwort STOP");
        assert!(parse(&v).unwrap().follow_up.unwrap().sms.is_some());
        v["recipients"][1]["vars"] = json!({});
        v["sms"]["text"] = json!("ACME: Sneaker -30 %");
        v.as_object_mut().unwrap().remove("fallback");
        assert_eq!(field_of(&v), "recipients[1].vars");
        let mut v = job_json();
        v["follow_up"] = follow_up_job()["follow_up"].clone();
        v["follow_up"]["sms_text"] = json!("ACME: noch 10 %");
        assert_eq!(field_of(&v), "follow_up.sms_text");
    }

    #[test]
    fn the_channel_example_parses_with_preferences_vars_and_fallback() {
        let job = parse(&channel_job()).unwrap();
        assert_eq!(job.recipients[0].channel, ChannelKind::WhatsApp);
        assert_eq!(job.recipients[1].channel, ChannelKind::Sms);
        let sms = job.sms.as_ref().unwrap();
        assert_eq!(sms.placeholders, ["name"]);
        assert!(
            sms.render(job.recipients[1].vars.as_deref())
                .starts_with("ACME: Sneaker -30 % nur heute, Ben:")
        );
        let fallback = job.fallback.as_ref().unwrap();
        assert_eq!(fallback.when.len(), 3);
        assert_eq!(
            fallback.undelivered_after,
            Some(std::time::Duration::from_secs(1800))
        );
        assert!(job.needs_sms());
        assert!(!parse(&job_json()).unwrap().needs_sms());
    }

    #[test]
    fn a_job_that_may_send_sms_without_a_text_or_a_value_is_rejected_naming_the_field() {
        let field_of = |v: &Value| match parse(v) {
            Err(JobError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        };
        let mut v = channel_job();
        v.as_object_mut().unwrap().remove("sms");
        assert_eq!(field_of(&v), "sms");
        v.as_object_mut().unwrap().remove("fallback");
        assert_eq!(field_of(&v), "sms", "recipients[1] prefers sms");

        let mut v = channel_job();
        v["recipients"][0].as_object_mut().unwrap().remove("vars");
        assert_eq!(
            field_of(&v),
            "recipients[0].vars",
            "fallback may send it the SMS"
        );
        let mut v = channel_job();
        v["recipients"][1]["vars"] = json!({ "name": { "first": "Ben" } });
        assert_eq!(field_of(&v), "recipients[1].vars");

        let mut v = channel_job();
        v["recipients"][1]["channel"] = json!("fax");
        assert_eq!(field_of(&v), "recipients[1].channel");
        let mut v = channel_job();
        v["fallback"]["when"] = json!(["bounced"]);
        assert_eq!(field_of(&v), "fallback.when[0]");
        let mut v = channel_job();
        v["fallback"]["undelivered_after"] = json!("30 minutes");
        assert_eq!(field_of(&v), "fallback.undelivered_after");
        let mut v = channel_job();
        v["sms"]["text"] = json!("");
        assert_eq!(field_of(&v), "sms.text");
        let mut v = channel_job();
        v["sms"]["unicode"] = json!(true);
        assert_eq!(
            field_of(&v),
            "sms.unicode",
            "an unknown field in sms is a mistake"
        );
    }

    #[test]
    fn without_fallback_only_sms_recipients_need_vars() {
        let mut v = channel_job();
        v.as_object_mut().unwrap().remove("fallback");
        v["recipients"][0].as_object_mut().unwrap().remove("vars");
        let job = parse(&v).unwrap();
        assert!(job.needs_sms());
        assert!(job.recipients[0].vars.is_none());
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Job::parse(&bytes);
        }
    }
}
