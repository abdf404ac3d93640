//! Consent: the proof that a person agreed to a category of messages, and what herald knows
//! about one number for one category when it decides whether to send.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Category, PhoneNumber};

/// Proof that a person agreed to receive a category of messages (GDPR: when, where, what).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub phone: PhoneNumber,
    pub category: Category,
    pub granted_at: DateTime<Utc>,
    /// Where it was given: `checkout`, `web-form`, `import:crm-2026-11`…
    pub source: String,
    /// What the person saw or did: the opt-in text, a form id, a signed record reference.
    pub proof: String,
}

/// What the store knows about one number for one category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    /// Consent recorded and not revoked since.
    Granted,
    /// No consent on record for this category.
    Missing,
    /// Consent revoked (or never given and an opt-out recorded), or the number is suppressed.
    OptedOut,
}
