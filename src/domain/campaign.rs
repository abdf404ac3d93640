//! A campaign as herald controls it: its state (active, paused, cancelled — cancelling is
//! final), and its budget with what has been committed against it.

use serde::{Deserialize, Serialize};

use super::CampaignId;

/// A campaign's control state, honoured by every worker within seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignState {
    Active,
    Paused,
    Cancelled,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named by [`CampaignState::as_str`]; `None` for any other text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: CampaignId,
    pub state: CampaignState,
    /// Why it was paused or cancelled (operator, or the error code that stopped it).
    pub reason: Option<String>,
    /// The most the campaign may spend, if its owner set a limit.
    pub budget: Option<Budget>,
    /// Estimated cost of every message sent or being sent so far (in the rate card's currency):
    /// charged before a request goes out, given back when it fails.
    pub committed_micros: u64,
}

impl Campaign {
    /// What the campaign may still spend (`None` without a budget).
    pub fn budget_left(&self) -> Option<u64> {
        self.budget
            .as_ref()
            .map(|b| b.micros.saturating_sub(self.committed_micros))
    }
}

/// A campaign's spending limit, in millionths of `currency` (the rate card's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub micros: u64,
    pub currency: String,
}

/// The answer to charging a batch of sends against a campaign's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCharge {
    /// Per send, in order: whether it fits.
    pub admitted: Vec<bool>,
    /// The budget left after this charge, with its currency; `None` without a budget.
    pub left: Option<Budget>,
}
