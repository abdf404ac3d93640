//! The ways herald reaches a person: the WhatsApp Cloud API (rich templates) and SMS (plain
//! text, for those who can't get the rich version). Names as in the job format (DESIGN §1.5).

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
}
