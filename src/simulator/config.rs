//! What a simulator instance pretends to be: its limits, its latency and faults, the templates
//! and business numbers it knows, and where it posts status webhooks. Plain data with defaults
//! that behave like a healthy Cloud API with no latency, so `SimConfig::default()` is a good
//! start for tests and benchmarks.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::customers::{self, Fate};
use super::smsc::SmscConfig;
use crate::domain::Category;

/// Meta's default throughput per business number.
pub const DEFAULT_RATE_PER_SEC: u32 = 80;
/// Throughput of a number on the `HIGH` level (after Meta's automatic upgrade): unconfigured
/// numbers report `HIGH` when their rate is at least this.
pub const HIGH_RATE_PER_SEC: u32 = 1_000;
/// The WABA that numbers and templates without an `account_id` belong to in webhooks.
pub const DEFAULT_ACCOUNT_ID: &str = "102290129340398";
/// The business number customers write to when the caller names none and no numbers are
/// configured: the one the fixtures and the demo use.
pub const DEFAULT_PHONE_NUMBER_ID: &str = "106540352242922";

/// Configuration of one simulator instance. Every field is public: tests build it with
/// `SimConfig { rate_per_sec: 10, ..Default::default() }`.
#[derive(Clone)]
pub struct SimConfig {
    /// Accepted sends per business number in any sliding second (strict; 130429 beyond).
    pub rate_per_sec: u32,
    /// Per-number rates by `phone_number_id`, instead of `rate_per_sec`. (A number's
    /// throughput level is only reported, never enforced: set the rate to match it.)
    pub rate_overrides: HashMap<String, u32>,
    /// Sends one number may make to one recipient at once (131056 beyond); 0 disables the limit.
    pub pair_burst: u32,
    /// Refill of the pair limit: one send per recipient per interval.
    pub pair_interval: Duration,
    /// Added to every answer of the send endpoint, errors included.
    pub latency: Duration,
    /// Uniformly random extra latency in `[0, latency_jitter]`.
    pub latency_jitter: Duration,
    /// Recipients (E.164, spacing ignored) that answer 131026.
    pub undeliverable: HashSet<String>,
    /// A further share of recipients answering 131026, chosen by a hash of the number, so the
    /// same numbers are undeliverable on every run.
    pub undeliverable_ratio: f64,
    /// The templates the simulated accounts own.
    pub templates: Vec<SimTemplate>,
    /// With no `templates`, accept any template name and language (benchmarks, load tests).
    pub accept_unknown_templates: bool,
    /// Known business numbers. When non-empty, other `phone_number_id`s get error 100.
    pub numbers: Vec<SimNumber>,
    /// When set, requests without `Authorization: Bearer <this>` get 190.
    pub access_token: Option<String>,
    /// Share of sends answered with a server error (500/131000 or 503/131016), not accepted.
    pub fault_5xx_ratio: f64,
    /// Share of sends answered after a further `fault_slow_delay` (to trip client timeouts).
    pub fault_slow_ratio: f64,
    pub fault_slow_delay: Duration,
    /// Share of sends that are accepted (counted, webhooks follow) but whose connection is then
    /// closed without an answer: the "unknown outcome" a dispatcher must not blindly resend.
    pub fault_drop_ratio: f64,
    /// Share of sends answered 130429 on top of the real rate enforcement (retry tests).
    pub fault_130429_ratio: f64,
    /// Where to POST status webhooks (`sent`, then `delivered` and `read` as the customers
    /// below decide) for accepted messages.
    pub webhook_url: Option<String>,
    /// Share of accepted messages that reach the customer's phone and get a `delivered`
    /// status; the rest stay at `sent`. Picked by a salted hash of the recipient's number, so
    /// the same customers are reached on every run ([`SimConfig::fate_of`]).
    pub delivered_share: f64,
    /// Share of delivered messages that the customer opens: a `read` status follows the
    /// `delivered` one. Picked like `delivered_share`, with another salt. 0 = nobody reads.
    pub read_share: f64,
    /// Simulated time from the `sent` webhook to `delivered`.
    pub delivered_delay: Duration,
    /// Simulated time from the `delivered` webhook to `read`.
    pub read_delay: Duration,
    /// How much faster than real time the simulated time runs: the two delays above take
    /// `delay / speed` of real time (3600: an hour passes in a second). Status timestamps are
    /// simulated time — the start plus the real time elapsed times `speed` — so they read
    /// like the hours being simulated. Latency, limits and the SMSC keep real time.
    pub speed: f64,
    /// Key of the webhooks' `X-Hub-Signature-256`; without it they go unsigned.
    pub app_secret: Option<String>,
    /// An SMSC (SMPP 3.4 server) for the SMS channel beside the Cloud API; `None` = off.
    pub smsc: Option<SmscConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            rate_per_sec: DEFAULT_RATE_PER_SEC,
            rate_overrides: HashMap::new(),
            pair_burst: 45,
            pair_interval: Duration::from_secs(6),
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            undeliverable: HashSet::new(),
            undeliverable_ratio: 0.0,
            templates: Vec::new(),
            accept_unknown_templates: true,
            numbers: Vec::new(),
            access_token: None,
            fault_5xx_ratio: 0.0,
            fault_slow_ratio: 0.0,
            fault_slow_delay: Duration::from_secs(5),
            fault_drop_ratio: 0.0,
            fault_130429_ratio: 0.0,
            webhook_url: None,
            delivered_share: 1.0,
            read_share: 0.0,
            delivered_delay: Duration::ZERO,
            read_delay: Duration::ZERO,
            speed: 1.0,
            app_secret: None,
            smsc: None,
        }
    }
}

impl SimConfig {
    /// Rejects settings that cannot mean anything, with the field's name.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, ratio) in [
            ("undeliverable_ratio", self.undeliverable_ratio),
            ("fault_5xx_ratio", self.fault_5xx_ratio),
            ("fault_slow_ratio", self.fault_slow_ratio),
            ("fault_drop_ratio", self.fault_drop_ratio),
            ("fault_130429_ratio", self.fault_130429_ratio),
            ("delivered_share", self.delivered_share),
            ("read_share", self.read_share),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                bail!("{name} must be between 0 and 1, got {ratio}");
            }
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            bail!("speed must be a positive number, got {}", self.speed);
        }
        if self.pair_burst > 0 && self.pair_interval.is_zero() {
            bail!("pair_interval must be positive when pair_burst is set");
        }
        if let Some(url) = &self.webhook_url {
            reqwest::Url::parse(url).with_context(|| format!("webhook_url '{url}'"))?;
        }
        let mut seen = HashSet::new();
        for n in &self.numbers {
            if !seen.insert(n.id.as_str()) {
                bail!("phone number id {} is configured twice", n.id);
            }
        }
        if let Some(smsc) = &self.smsc {
            smsc.validate()?;
        }
        Ok(())
    }

    /// Whether a message to `recipient` (E.164; spacing and `+` ignored) that is accepted gets
    /// `delivered` and then `read`: the same answer on every run, so tests and demos can
    /// predict the simulated customers.
    pub fn fate_of(&self, recipient: &str) -> Fate {
        customers::fate(self, &super::state::digits(recipient))
    }

    /// The rate enforced for a number.
    pub fn rate_for(&self, phone_number_id: &str) -> u32 {
        self.rate_overrides
            .get(phone_number_id)
            .copied()
            .unwrap_or(self.rate_per_sec)
    }
}

impl fmt::Debug for SimConfig {
    /// Spelled out by hand so the access token and app secret never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("rate_per_sec", &self.rate_per_sec)
            .field("rate_overrides", &self.rate_overrides)
            .field("pair_burst", &self.pair_burst)
            .field("pair_interval", &self.pair_interval)
            .field("latency", &self.latency)
            .field("latency_jitter", &self.latency_jitter)
            .field("undeliverable", &self.undeliverable.len())
            .field("undeliverable_ratio", &self.undeliverable_ratio)
            .field("templates", &self.templates)
            .field("accept_unknown_templates", &self.accept_unknown_templates)
            .field("numbers", &self.numbers)
            .field("access_token", &redacted(&self.access_token))
            .field("fault_5xx_ratio", &self.fault_5xx_ratio)
            .field("fault_slow_ratio", &self.fault_slow_ratio)
            .field("fault_slow_delay", &self.fault_slow_delay)
            .field("fault_drop_ratio", &self.fault_drop_ratio)
            .field("fault_130429_ratio", &self.fault_130429_ratio)
            .field("webhook_url", &self.webhook_url)
            .field("delivered_share", &self.delivered_share)
            .field("read_share", &self.read_share)
            .field("delivered_delay", &self.delivered_delay)
            .field("read_delay", &self.read_delay)
            .field("speed", &self.speed)
            .field("app_secret", &redacted(&self.app_secret))
            .field("smsc", &self.smsc)
            .finish()
    }
}

/// How a secret shows in `Debug` output: whether it is set, never its value.
pub(crate) fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

/// A message template as the simulated account holds it. Reads the shape of
/// `GET /{waba_id}/message_templates` entries, so a saved template list works as a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimTemplate {
    pub name: String,
    pub language: String,
    /// Meta writes categories upper-case (`MARKETING`); both cases are read.
    #[serde(
        serialize_with = "category_upper",
        deserialize_with = "category_any_case"
    )]
    pub category: Category,
    #[serde(default = "TemplateStatus::approved")]
    pub status: TemplateStatus,
    /// The WABA owning the template; `None` = every account (and any sender) has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Meta's template id; derived from name and language when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Echoed by the template list; the simulator does not check parameters against them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Value>,
}

impl SimTemplate {
    /// An approved template of any account.
    pub fn approved(name: &str, language: &str, category: Category) -> Self {
        Self {
            name: name.to_owned(),
            language: language.to_owned(),
            category,
            status: TemplateStatus::Approved,
            account_id: None,
            id: None,
            components: Vec::new(),
        }
    }

    /// The same template with another status.
    pub fn with_status(mut self, status: TemplateStatus) -> Self {
        self.status = status;
        self
    }
}

fn category_upper<S: Serializer>(c: &Category, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&c.as_str().to_ascii_uppercase())
}

fn category_any_case<'de, D: Deserializer<'de>>(d: D) -> Result<Category, D::Error> {
    let raw = String::deserialize(d)?;
    raw.parse().map_err(serde::de::Error::custom)
}

/// A template's review status, as Meta names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemplateStatus {
    Approved,
    Pending,
    Rejected,
    Paused,
    Disabled,
    Flagged,
    InAppeal,
    Reinstated,
    Archived,
    Deleted,
    LimitExceeded,
}

impl TemplateStatus {
    fn approved() -> Self {
        Self::Approved
    }

    /// Only approved (or reinstated) templates may be sent.
    pub fn sendable(self) -> bool {
        matches!(self, Self::Approved | Self::Reinstated)
    }
}

/// A business phone number and the fields `GET /{phone_number_id}` reports. Reads the shape
/// of that answer (`phone-number.json`), so a saved answer works as a file.
///
/// Quality, status and tier are Meta's strings, echoed and never decided on here, so new
/// values need no code change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimNumber {
    pub id: String,
    #[serde(default = "defaults::display_phone_number")]
    pub display_phone_number: String,
    #[serde(default = "defaults::verified_name")]
    pub verified_name: String,
    /// GREEN, YELLOW or RED.
    #[serde(default = "defaults::quality_rating")]
    pub quality_rating: String,
    /// CONNECTED, FLAGGED, RESTRICTED, …
    #[serde(default = "defaults::status")]
    pub status: String,
    /// STANDARD or HIGH (reported only; the enforced rate comes from the config).
    #[serde(
        rename = "throughput",
        default = "defaults::throughput_level",
        with = "throughput_level"
    )]
    pub throughput_level: String,
    /// The portfolio's messaging limit: TIER_250, TIER_2K, TIER_10K, TIER_100K, TIER_UNLIMITED.
    #[serde(
        rename = "whatsapp_business_manager_messaging_limit",
        alias = "messaging_limit",
        default = "defaults::messaging_limit"
    )]
    pub messaging_limit: String,
    /// The WABA owning the number; used in webhooks' `entry[].id` and to match templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

impl SimNumber {
    /// A connected, green number with the given id and default fields.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            display_phone_number: defaults::display_phone_number(),
            verified_name: defaults::verified_name(),
            quality_rating: defaults::quality_rating(),
            status: defaults::status(),
            throughput_level: defaults::throughput_level(),
            messaging_limit: defaults::messaging_limit(),
            account_id: None,
        }
    }

    /// The WABA id this number posts webhooks as.
    pub fn account(&self) -> &str {
        self.account_id.as_deref().unwrap_or(DEFAULT_ACCOUNT_ID)
    }
}

mod defaults {
    pub fn display_phone_number() -> String {
        "+1 555-0100".into()
    }
    pub fn verified_name() -> String {
        "Herald Simulator".into()
    }
    pub fn quality_rating() -> String {
        "GREEN".into()
    }
    pub fn status() -> String {
        "CONNECTED".into()
    }
    pub fn throughput_level() -> String {
        "STANDARD".into()
    }
    /// Unlimited, so a load test against an unconfigured number is not capped by a tier.
    pub fn messaging_limit() -> String {
        "TIER_UNLIMITED".into()
    }
}

/// Graph nests the level: `"throughput": {"level": "STANDARD"}`.
mod throughput_level {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Throughput {
        level: String,
    }

    pub fn serialize<S: Serializer>(level: &str, s: S) -> Result<S::Ok, S::Error> {
        Throughput {
            level: level.to_owned(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Throughput::deserialize(d)?.level)
    }
}

/// Reads a JSON file holding a list of `T`: a plain array, Graph's `{"data": [...]}` page, or
/// a single object.
pub fn load_list<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut obj) => match obj.remove("data") {
            Some(Value::Array(items)) => items,
            _ => vec![Value::Object(obj)],
        },
        _ => bail!("{} must hold a JSON list or object", path.display()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value(item).with_context(|| format!("{} item {i}", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/graph/{name}"))
    }

    #[test]
    fn the_template_list_fixture_loads_as_templates() {
        let templates: Vec<SimTemplate> = load_list(&fixture("message-templates.json")).unwrap();
        assert_eq!(templates.len(), 4);
        assert_eq!(templates[0].name, "flash_sale");
        assert_eq!(templates[0].category, Category::Marketing);
        assert_eq!(templates[3].status, TemplateStatus::Paused);
        assert_eq!(templates[0].id.as_deref(), Some("1402215870584471"));
        let back = serde_json::to_value(&templates[1]).unwrap();
        assert_eq!(back["category"], "UTILITY");
        assert_eq!(back["status"], "APPROVED");
    }

    #[test]
    fn the_phone_number_fixture_loads_as_a_number() {
        let numbers: Vec<SimNumber> = load_list(&fixture("phone-number.json")).unwrap();
        assert_eq!(numbers.len(), 1);
        let n = &numbers[0];
        assert_eq!(n.id, "106540352242922");
        assert_eq!(n.throughput_level, "STANDARD");
        assert_eq!(n.messaging_limit, "TIER_10K");
        assert_eq!(n.verified_name, "Acme Mode");
    }

    #[test]
    fn overrides_win_over_the_common_rate() {
        let config = SimConfig {
            rate_per_sec: 50,
            rate_overrides: HashMap::from([("1".to_owned(), 7)]),
            ..Default::default()
        };
        assert_eq!(config.rate_for("1"), 7);
        assert_eq!(config.rate_for("2"), 50);
    }

    #[test]
    fn nonsense_ratios_are_rejected_with_the_field_name() {
        let config = SimConfig {
            fault_drop_ratio: 1.5,
            ..Default::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("fault_drop_ratio"), "{err}");
        assert!(SimConfig::default().validate().is_ok());
        for (config, field) in [
            (
                SimConfig {
                    read_share: -0.1,
                    ..Default::default()
                },
                "read_share",
            ),
            (
                SimConfig {
                    delivered_share: 1.01,
                    ..Default::default()
                },
                "delivered_share",
            ),
            (
                SimConfig {
                    speed: 0.0,
                    ..Default::default()
                },
                "speed",
            ),
            (
                SimConfig {
                    speed: f64::INFINITY,
                    ..Default::default()
                },
                "speed",
            ),
        ] {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = SimConfig {
            access_token: Some("EAAG-secret-token".into()),
            app_secret: Some("app-secret-value".into()),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret-token") && !shown.contains("secret-value"));
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn an_invalid_smsc_makes_the_whole_config_invalid() {
        let config = SimConfig {
            smsc: Some(SmscConfig {
                undeliverable_share: -0.1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("smsc.undeliverable_share"), "{err}");
    }
}
