//! Retention (GDPR Art. 5(1)(e), storage limitation): how long each class of personal data is
//! kept before the purge deletes it. `HERALD_RETENTION` (`ledger=400d,inbound=30d,…`) is
//! parsed here once into a [`RetentionPolicy`]; the store's purge asks it for each class's
//! cutoff. Pure: no clock, no I/O. Aggregates (campaign totals) are not personal and are kept.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

const DAY: u64 = 24 * 3600;

/// A class of personal data with its own retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataClass {
    /// Final ledger rows (key, recipient, wamid, outcome), by their last update.
    Ledger,
    /// Inbound messages by arrival, and customer-service windows by their end.
    Inbound,
    /// Conversion events (orders), by arrival.
    Conversions,
    /// Revoked consents and their revocations, by the revocation. Active consents: never.
    Consents,
    /// Messaging-tier rows (who a portfolio reached), by the last time reached.
    Tier,
    /// Fired timers (fallbacks, follow-ups, opt-in confirmations), by when they fired.
    Timers,
    /// Suppressions (erased or opted-out numbers, by hash). Never purged unless set.
    Suppressions,
    /// The audit log of admin actions (who paused, exported, erased), by when it happened.
    Audit,
    /// Recipient events for CRMs: published outbox rows by publication, dead ones by when
    /// they went dead.
    Events,
}

/// One class's row of the retention table: its name in `HERALD_RETENTION`, its default, the
/// shortest period herald accepts and why.
#[derive(Debug, Clone, Copy)]
pub struct ClassRule {
    pub class: DataClass,
    pub name: &'static str,
    /// `None`: kept until erased.
    pub default: Option<Duration>,
    /// Shorter periods are refused: below it herald would forget something it still needs.
    pub floor: Duration,
    /// Why the default (and the floor), for `herald purge --help` and the README.
    pub why: &'static str,
}

/// The retention table: every class, its default and why (the README's table says the same).
pub const RULES: [ClassRule; 9] = [
    ClassRule {
        class: DataClass::Ledger,
        name: "ledger",
        default: Some(Duration::from_secs(400 * DAY)),
        // A key is sent at most once while its row exists: a job replayed after its keys are
        // purged would send again. A month outlives any redelivery or re-enqueue.
        floor: Duration::from_secs(30 * DAY),
        why: "a year of campaign reports and disputes over a send, plus a month; counts are kept as campaign totals",
    },
    ClassRule {
        class: DataClass::Inbound,
        name: "inbound",
        default: Some(Duration::from_secs(30 * DAY)),
        // Meta redelivers a webhook for up to 7 days; the message id is what ignores it.
        floor: Duration::from_secs(7 * DAY),
        why: "windows last 24-72 h; a month covers support questions. Opt-in proofs live on in the consent",
    },
    ClassRule {
        class: DataClass::Conversions,
        name: "conversions",
        default: Some(Duration::from_secs(400 * DAY)),
        // The event id ignores a shop's retries; a week outlives them.
        floor: Duration::from_secs(7 * DAY),
        why: "as long as the ledger rows they are attributed to",
    },
    ClassRule {
        class: DataClass::Consents,
        name: "consents",
        default: Some(Duration::from_secs(1096 * DAY)),
        floor: Duration::ZERO,
        why: "a revoked consent's proof and its revocation prove the opt-out was honoured: kept 3 years (the limitation period) after the revocation; an active consent is never purged",
    },
    ClassRule {
        class: DataClass::Tier,
        name: "tier",
        default: Some(Duration::from_secs(2 * DAY)),
        // The tier counts unique numbers reached in a rolling 24 h window.
        floor: Duration::from_secs(DAY),
        why: "the messaging tier counts the last 24 h; a day of margin",
    },
    ClassRule {
        class: DataClass::Timers,
        name: "timers",
        default: Some(Duration::from_secs(30 * DAY)),
        // A fired timer makes a redelivered webhook (up to 7 days) schedule nothing twice.
        floor: Duration::from_secs(7 * DAY),
        why: "a fired timer keeps a redelivered webhook from firing it twice (Meta retries for 7 days)",
    },
    ClassRule {
        class: DataClass::Suppressions,
        name: "suppressions",
        default: None,
        floor: Duration::ZERO,
        why: "never purged by default: they keep an erased or opted-out number from being messaged again",
    },
    ClassRule {
        class: DataClass::Audit,
        name: "audit",
        default: Some(Duration::from_secs(365 * DAY)),
        // An erasure or export must still be provable when the data subject or the authority
        // asks, which takes weeks; a month is the least that answers a complaint.
        floor: Duration::from_secs(30 * DAY),
        why: "a year proves who exported, erased or paused what (GDPR Art. 5(2) accountability); contacts appear by keyed hash only",
    },
    ClassRule {
        class: DataClass::Events,
        name: "events",
        default: Some(Duration::from_secs(30 * DAY)),
        // A published event's row is what keeps a redelivered webhook (up to 7 days) from
        // publishing it twice.
        floor: Duration::from_secs(7 * DAY),
        why: "a published event keeps a redelivered webhook from publishing it twice (Meta retries for 7 days); dead events wait a month for an operator",
    },
];

impl DataClass {
    /// Every class, in the table's order.
    pub fn all() -> impl Iterator<Item = DataClass> {
        RULES.iter().map(|r| r.class)
    }

    pub fn rule(self) -> &'static ClassRule {
        &RULES[self as usize]
    }

    /// The name in `HERALD_RETENTION` and the `class` label of `herald_purged_rows_total`.
    pub fn as_str(self) -> &'static str {
        self.rule().name
    }
}

impl fmt::Display for DataClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a `HERALD_RETENTION` value was refused; each names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error("'{0}' is not class=duration (e.g. ledger=400d)")]
    Malformed(String),
    #[error("unknown data class '{0}' (known: {known})", known = known_names())]
    UnknownClass(String),
    #[error("{class}: '{value}' is not a duration ({reason}; e.g. 400d, 720h, or never)")]
    BadDuration {
        class: DataClass,
        value: String,
        reason: String,
    },
    #[error("{class}: {value} is shorter than the {floor} herald needs ({why})", floor = format_period(*floor), why = class.rule().why)]
    TooShort {
        class: DataClass,
        value: String,
        floor: Duration,
    },
    #[error("{0} is given twice")]
    Repeated(DataClass),
}

fn known_names() -> String {
    RULES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
}

/// How long each class is kept (`None`: until erased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    periods: [Option<Duration>; RULES.len()],
}

impl Default for RetentionPolicy {
    /// The documented defaults ([`RULES`]).
    fn default() -> Self {
        Self {
            periods: RULES.map(|r| r.default),
        }
    }
}

impl RetentionPolicy {
    /// Parses `class=duration,…` over the defaults: a class not named keeps its default.
    /// Durations are humantime's (`400d`, `720h`, `3y`) or `never` (kept until erased). An
    /// empty value is the defaults.
    pub fn parse(spec: &str) -> Result<Self, RetentionError> {
        let mut policy = Self::default();
        let mut seen = [false; RULES.len()];
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| RetentionError::Malformed(part.to_owned()))?;
            let (name, value) = (name.trim(), value.trim());
            let rule = RULES
                .iter()
                .find(|r| r.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| RetentionError::UnknownClass(name.to_owned()))?;
            let i = rule.class as usize;
            if std::mem::replace(&mut seen[i], true) {
                return Err(RetentionError::Repeated(rule.class));
            }
            policy.periods[i] = if value.eq_ignore_ascii_case("never") {
                None
            } else {
                let d =
                    humantime::parse_duration(value).map_err(|e| RetentionError::BadDuration {
                        class: rule.class,
                        value: value.to_owned(),
                        reason: e.to_string(),
                    })?;
                if d < rule.floor || d.is_zero() {
                    return Err(RetentionError::TooShort {
                        class: rule.class,
                        value: value.to_owned(),
                        floor: rule.floor.max(Duration::from_secs(1)),
                    });
                }
                Some(d)
            };
        }
        Ok(policy)
    }

    /// How long `class` is kept; `None`: until erased.
    pub fn period(&self, class: DataClass) -> Option<Duration> {
        self.periods[class as usize]
    }

    /// Rows of `class` older than this at `now` are purged; `None`: none are.
    pub fn cutoff(&self, class: DataClass, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let period = chrono::Duration::from_std(self.period(class)?).ok()?;
        now.checked_sub_signed(period)
    }
}

impl fmt::Display for RetentionPolicy {
    /// `ledger=400d,inbound=30d,…`: what `HERALD_RETENTION` would say for this policy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = DataClass::all()
            .map(|c| {
                let p = self.period(c).map_or("never".to_owned(), format_period);
                format!("{c}={p}")
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A period as an operator writes it: whole days as `400d`, whole hours as `36h`, else
/// humantime's form.
pub fn format_period(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() == 0 && s > 0 && s.is_multiple_of(DAY) {
        format!("{}d", s / DAY)
    } else if d.subsec_nanos() == 0 && s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        humantime::format_duration(d).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n * DAY))
    }

    #[test]
    fn the_defaults_are_the_documented_table() {
        let p = RetentionPolicy::default();
        assert_eq!(p.period(DataClass::Ledger), days(400));
        assert_eq!(p.period(DataClass::Inbound), days(30));
        assert_eq!(p.period(DataClass::Conversions), days(400));
        assert_eq!(p.period(DataClass::Consents), days(1096));
        assert_eq!(p.period(DataClass::Tier), days(2));
        assert_eq!(p.period(DataClass::Timers), days(30));
        assert_eq!(p.period(DataClass::Suppressions), None);
        assert_eq!(p.period(DataClass::Audit), days(365));
        assert_eq!(p.period(DataClass::Events), days(30));
        assert_eq!(RetentionPolicy::parse("").unwrap(), p);
        assert_eq!(
            p.to_string(),
            "ledger=400d,inbound=30d,conversions=400d,consents=1096d,tier=2d,timers=30d,suppressions=never,audit=365d,events=30d"
        );
        // The table is indexed by class: its order must be the enum's.
        for (i, r) in RULES.iter().enumerate() {
            assert_eq!(r.class as usize, i, "{}", r.name);
        }
    }

    #[test]
    fn named_classes_replace_their_default_and_the_rest_keep_it() {
        let p =
            RetentionPolicy::parse(" ledger=200d , inbound=720h,conversions=90d,suppressions=5y")
                .unwrap();
        assert_eq!(p.period(DataClass::Ledger), days(200));
        assert_eq!(p.period(DataClass::Inbound), days(30));
        assert_eq!(p.period(DataClass::Conversions), days(90));
        assert_eq!(p.period(DataClass::Tier), days(2));
        assert!(p.period(DataClass::Suppressions).is_some());
        let never = RetentionPolicy::parse("ledger=never,Timers=NEVER").unwrap();
        assert_eq!(never.period(DataClass::Ledger), None);
        assert_eq!(never.period(DataClass::Timers), None);
    }

    #[test]
    fn an_unknown_class_is_refused_by_name() {
        let e = RetentionPolicy::parse("ledger=400d,inbox=30d").unwrap_err();
        assert_eq!(e, RetentionError::UnknownClass("inbox".into()));
        let shown = e.to_string();
        assert!(
            shown.contains("'inbox'") && shown.contains("conversions"),
            "{shown}"
        );
    }

    #[test]
    fn a_bad_duration_is_refused_naming_its_class() {
        let e = RetentionPolicy::parse("inbound=thirty days").unwrap_err();
        assert!(
            matches!(&e, RetentionError::BadDuration { class: DataClass::Inbound, value, .. } if value == "thirty days"),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("inbound: 'thirty days'"), "{e}");
        for bad in [
            "ledger",
            "=30d",
            "ledger=",
            "ledger=400d,ledger=300d",
            "ledger=0s",
        ] {
            assert!(RetentionPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn periods_herald_still_needs_are_refused() {
        let e = RetentionPolicy::parse("tier=1h").unwrap_err();
        assert!(
            matches!(
                e,
                RetentionError::TooShort {
                    class: DataClass::Tier,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("1d"), "{e}");
        assert!(RetentionPolicy::parse("ledger=29d").is_err());
        assert!(RetentionPolicy::parse("ledger=30d").is_ok());
        assert!(RetentionPolicy::parse("timers=6d").is_err());
        assert!(RetentionPolicy::parse("consents=1s").is_ok());
        assert!(RetentionPolicy::parse("audit=29d").is_err());
        assert!(RetentionPolicy::parse("audit=30d").is_ok());
    }

    #[test]
    fn the_cutoff_is_now_minus_the_period_and_none_for_never() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = RetentionPolicy::default();
        assert_eq!(
            p.cutoff(DataClass::Tier, now).unwrap().to_rfc3339(),
            "2026-11-25T12:00:00+00:00"
        );
        assert_eq!(p.cutoff(DataClass::Suppressions, now), None);
    }

    #[test]
    fn periods_print_as_operators_write_them() {
        assert_eq!(format_period(Duration::from_secs(400 * DAY)), "400d");
        assert_eq!(format_period(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(format_period(Duration::from_secs(90)), "1m 30s");
    }
}
