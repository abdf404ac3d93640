//! Consent: the proof that a person agreed to a category of messages on one channel, and what
//! herald knows about one number for one category and channel when it decides whether to send.
//! Consent is per channel (UWG §7(2), ePrivacy Art. 13): a WhatsApp opt-in is not consent to
//! SMS, and vice versa.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Category, ChannelKind, PhoneNumber};

/// Proof that a person agreed to receive a category of messages on one channel (GDPR: when,
/// where, what).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub phone: PhoneNumber,
    pub category: Category,
    /// The channel the person agreed to be messaged on; it allows no other.
    pub channel: ChannelKind,
    pub granted_at: DateTime<Utc>,
    /// Where it was given: `checkout`, `web-form`, `import:crm-2026-11`…
    pub source: String,
    /// What the person saw or did: the opt-in text, a form id, a signed record reference.
    pub proof: String,
}

/// What the store knows about one number for one category on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    /// Consent recorded for this category and channel and not revoked since.
    Granted,
    /// No consent on record for this category and channel.
    Missing,
    /// Consent revoked (or never given and an opt-out recorded), or the number is suppressed.
    OptedOut,
}
