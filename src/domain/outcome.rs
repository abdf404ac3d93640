//! The categories templates are priced by, and the one outcome every idempotency key ends with
//! (DESIGN §1.3). The string forms are the contract: they appear in reports, metrics labels and
//! the store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A template's category: decides consent and price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
}

impl Category {
    pub const ALL: [Category; 3] = [Self::Marketing, Self::Utility, Self::Authentication];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Marketing => "marketing",
            Self::Utility => "utility",
            Self::Authentication => "authentication",
        }
    }
}

impl FromStr for Category {
    type Err = String;

    /// Accepts Meta's upper-case form (`MARKETING`) and herald's lower-case one.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "marketing" => Ok(Self::Marketing),
            "utility" => Ok(Self::Utility),
            "authentication" => Ok(Self::Authentication),
            other => Err(format!(
                "unknown category '{other}' (expected marketing, utility or authentication)"
            )),
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a recipient was not sent to. A fixed set: these are metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    NoConsent,
    OptedOut,
    Duplicate,
    Expired,
    InvalidNumber,
    CampaignCancelled,
    BudgetExhausted,
    /// A follow-up: the customer converted (ordered) before it was due.
    Converted,
    /// A follow-up: the first message was not read (`if: read`).
    NotRead,
    /// A follow-up: the first message was not delivered (`if: delivered`), or its delivery
    /// failed.
    NotDelivered,
    /// A follow-up: the first message went by SMS and the rule has no `sms_text`.
    NoSmsVersion,
    /// A session message only, and the customer-service window was closed (at send time, or
    /// Meta said so with 131047).
    WindowClosed,
    /// A campaign with a budget, and the rate card has no price for the recipient's market
    /// and the message's category: never sent as if it were free.
    UnpricedMarket,
    /// Meta does not deliver this template category to the recipient's market (marketing to
    /// US numbers, 131049): the rate card's `refuses`, checked before sending.
    UnsupportedMarket,
}

impl SkipReason {
    pub const ALL: [SkipReason; 14] = [
        Self::NoConsent,
        Self::OptedOut,
        Self::Duplicate,
        Self::Expired,
        Self::InvalidNumber,
        Self::CampaignCancelled,
        Self::BudgetExhausted,
        Self::Converted,
        Self::NotRead,
        Self::NotDelivered,
        Self::NoSmsVersion,
        Self::WindowClosed,
        Self::UnpricedMarket,
        Self::UnsupportedMarket,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoConsent => "no_consent",
            Self::OptedOut => "opted_out",
            Self::Duplicate => "duplicate",
            Self::Expired => "expired",
            Self::InvalidNumber => "invalid_number",
            Self::CampaignCancelled => "campaign_cancelled",
            Self::BudgetExhausted => "budget_exhausted",
            Self::Converted => "converted",
            Self::NotRead => "not_read",
            Self::NotDelivered => "not_delivered",
            Self::NoSmsVersion => "no_sms_version",
            Self::WindowClosed => "window_closed",
            Self::UnpricedMarket => "unpriced_market",
            Self::UnsupportedMarket => "unsupported_market",
        }
    }
}

impl FromStr for SkipReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown skip reason '{s}'"))
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The final outcome of one idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Meta accepted the message; `wamid` identifies it in status webhooks.
    Sent { wamid: String },
    /// Meta refused it for good, with its error code.
    Failed { code: i64 },
    /// herald decided not to send.
    Skipped { reason: SkipReason },
    /// The request may have been accepted (timeout or reset after it was written). Never resent;
    /// resolved from status webhooks.
    Unknown,
}

impl Outcome {
    /// The outcome's name as stored and reported: sent, failed, skipped or unknown.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sent { .. } => "sent",
            Self::Failed { .. } => "failed",
            Self::Skipped { .. } => "skipped",
            Self::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_parse_in_metas_and_heralds_spelling() {
        assert_eq!("MARKETING".parse::<Category>(), Ok(Category::Marketing));
        assert_eq!("utility".parse::<Category>(), Ok(Category::Utility));
        assert!("service".parse::<Category>().is_err());
    }

    #[test]
    fn skip_reasons_round_trip_through_their_names() {
        for r in SkipReason::ALL {
            assert_eq!(r.as_str().parse::<SkipReason>(), Ok(r));
        }
    }
}
