//! A business number that sends, and a template as Meta approved it for one account: what the
//! gate asks before anything goes out. Plain data; the store keeps them.

use serde::{Deserialize, Serialize};

use super::{Category, SenderId};

/// Whether a business number may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub id: SenderId,
    /// WhatsApp Business Account (WABA) id: templates are approved per account.
    pub account_id: String,
    /// Business portfolio: owns the messaging tier shared by all its numbers.
    pub portfolio_id: String,
    pub display_number: String,
    /// Messages per second Meta allows this number (80 by default, 1,000 after upgrade).
    pub rate_per_sec: u32,
    /// Unique users per rolling 24 h for the portfolio; `None` = unlimited.
    pub tier_limit: Option<u32>,
    /// Meta's status (CONNECTED, FLAGGED, …) or `STOPPED` when herald stopped it after a
    /// sender-fatal error. Only CONNECTED sends.
    pub status: String,
    /// Why herald stopped it, if it did (error code and message).
    pub status_reason: Option<String>,
}

impl Sender {
    pub fn can_send(&self) -> bool {
        self.status == "CONNECTED"
    }
}

/// A template as approved (or not) for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub account_id: String,
    pub name: String,
    pub language: String,
    pub category: Category,
    /// Meta's status: APPROVED, PENDING, REJECTED, PAUSED, DISABLED, …
    pub status: String,
}

impl Template {
    /// Only APPROVED (or REINSTATED) templates may be sent.
    pub fn is_sendable(&self) -> bool {
        matches!(self.status.as_str(), "APPROVED" | "REINSTATED")
    }
}
