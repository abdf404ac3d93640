//! A durable timer: "do `kind` for `key` at `due`", kept by the store so it survives restarts
//! and fires at most once (fallback deadlines, follow-ups, retention). The kind is the name of
//! the work; the payload is whatever that work needs, as JSON.

use chrono::{DateTime, Utc};

/// A due timer, claimed with a lease by one owner: do its work, then complete it (or release
/// it to hand it back). A lease that lapses lets another owner take it over.
#[derive(Debug, Clone, PartialEq)]
pub struct DueTimer {
    /// What to do: the name of the work, e.g. `sms_fallback`.
    pub kind: String,
    /// For what: unique within its kind (an idempotency key, a campaign id, …).
    pub key: String,
    /// When it became due.
    pub due: DateTime<Utc>,
    pub payload: serde_json::Value,
    /// How many times it has been claimed, this claim included: more than one means an
    /// earlier owner's lease lapsed (it may have done part of the work).
    pub claims: u32,
}
