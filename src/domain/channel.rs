//! The ways herald reaches a person: the WhatsApp Cloud API (rich templates) and SMS (plain
//! text, for those who can't get the rich version), and when the second stands in for the
//! first (fallback). Names as in the job format (DESIGN §1.5).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A channel, as it appears in jobs, the ledger, reports and the `channel` metric label.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    #[default]
    #[serde(rename = "whatsapp")]
    WhatsApp,
    Sms,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::WhatsApp => "whatsapp",
            ChannelKind::Sms => "sms",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "whatsapp" => Ok(ChannelKind::WhatsApp),
            "sms" => Ok(ChannelKind::Sms),
            other => Err(format!(
                "unknown channel {other:?} (expected \"whatsapp\" or \"sms\")"
            )),
        }
    }
}

/// Which WhatsApp results send the SMS version instead (job field `fallback.when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackTrigger {
    /// The number is not on WhatsApp (131026 at send or in a `failed` status).
    NotOnWhatsapp,
    /// Any other final failure.
    Failed,
    /// No `delivered`/`read` status within `undelivered_after`.
    Undelivered,
}

/// A job's fallback rule (DESIGN §1.5): when the SMS version goes instead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FallbackRule {
    pub when: Vec<FallbackTrigger>,
    /// The deadline of [`FallbackTrigger::Undelivered`], from the send.
    pub undelivered_after: Option<std::time::Duration>,
}

impl FallbackTrigger {
    /// The name in the job format.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotOnWhatsapp => "not_on_whatsapp",
            Self::Failed => "failed",
            Self::Undelivered => "undelivered",
        }
    }
}

impl FallbackRule {
    pub fn on(&self, trigger: FallbackTrigger) -> bool {
        self.when.contains(&trigger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for kind in [ChannelKind::WhatsApp, ChannelKind::Sms] {
            assert_eq!(kind.as_str().parse::<ChannelKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<ChannelKind>(&json).unwrap(), kind);
        }
        assert!("WhatsApp".parse::<ChannelKind>().is_err());
        assert_eq!(ChannelKind::default(), ChannelKind::WhatsApp);
    }

    #[test]
    fn triggers_have_the_job_formats_names() {
        let when: Vec<FallbackTrigger> =
            serde_json::from_str(r#"["not_on_whatsapp", "failed", "undelivered"]"#).unwrap();
        assert_eq!(
            when,
            [
                FallbackTrigger::NotOnWhatsapp,
                FallbackTrigger::Failed,
                FallbackTrigger::Undelivered
            ]
        );
        for t in when {
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
        assert!(serde_json::from_str::<FallbackTrigger>(r#""bounced""#).is_err());
    }
}
