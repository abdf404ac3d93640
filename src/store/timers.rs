//! Durable timers ("do `kind` for `key` at `due`"): the statements both dialects share. Times
//! are the caller's `now` (never the database clock), so a test or a replay can move time; the
//! payload is JSON text the store never looks into. Only claiming differs per dialect.

use chrono::{DateTime, Utc};

use super::{StoreError, StoreResult};

/// One timer per (kind, key): a second schedule keeps the first.
pub(crate) const SCHEDULE: &str = "INSERT INTO timers (kind, key, due_at, payload, created_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (kind, key) DO NOTHING";

/// Fired at most once: only the current holder, only while unfired.
pub(crate) const COMPLETE: &str = "UPDATE timers SET fired_at = $4, lease_until = NULL
     WHERE kind = $1 AND key = $2 AND owner = $3 AND fired_at IS NULL";

pub(crate) const RELEASE: &str =
    "UPDATE timers SET owner = NULL, lease_until = NULL, due_at = COALESCE($4, due_at)
     WHERE kind = $1 AND key = $2 AND owner = $3 AND fired_at IS NULL";

pub(crate) const CANCEL: &str =
    "DELETE FROM timers WHERE kind = $1 AND key = $2 AND fired_at IS NULL";

pub(crate) const PENDING_BY_KIND: &str = "SELECT kind, count(*) AS n FROM timers
     WHERE fired_at IS NULL GROUP BY kind ORDER BY kind";

/// The payload as the text the `payload` column holds.
pub(crate) fn payload_text(payload: &serde_json::Value) -> String {
    payload.to_string()
}

/// The payload read back from its column.
pub(crate) fn parse_payload(text: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("timer payload: {e}")))
}

/// When a lease taken at `now` for `lease` ends.
pub(crate) fn lease_end(now: DateTime<Utc>, lease: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
