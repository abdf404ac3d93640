//! Keeps repeated errors from flooding the logs. A webhook endpoint probed with bad
//! signatures, or a store that is down while Meta redelivers thousands of POSTs, would
//! otherwise write the same line thousands of times a second. Each event key logs at most once
//! per interval; the next line says how many were suppressed in between, so nothing is hidden.
//!
//! ```
//! use herald::telemetry::log_limit;
//! if let Some(suppressed) = log_limit::admit("webhook.bad_signature") {
//!     tracing::warn!(suppressed, "webhook rejected: bad X-Hub-Signature-256");
//! }
//! ```

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How often one key may log through [`admit`]: often enough to see an ongoing problem in
/// `kubectl logs`, rarely enough that a flood costs nothing.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Per-key log budgets. Keys are `&'static str` on purpose: a key made from request data
/// could grow the map without bound.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    slots: Mutex<HashMap<&'static str, Slot>>,
}

#[derive(Debug)]
struct Slot {
    last: Instant,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when an event with `key` may be logged now, `n` being how many were held back
    /// since the last one; `None` when it should stay quiet.
    pub fn admit(&self, key: &'static str) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: &'static str, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked mid-update of a counter: the
        // map is still usable, and logging must never panic in turn.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get_mut(key) {
            Some(slot) if now.saturating_duration_since(slot.last) < self.interval => {
                slot.suppressed += 1;
                None
            }
            Some(slot) => {
                let suppressed = std::mem::take(&mut slot.suppressed);
                slot.last = now;
                Some(suppressed)
            }
            None => {
                slots.insert(
                    key,
                    Slot {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// The process-wide limiter with [`DEFAULT_INTERVAL`].
pub fn admit(key: &'static str) -> Option<u64> {
    static LIMITER: LazyLock<LogLimiter> = LazyLock::new(|| LogLimiter::new(DEFAULT_INTERVAL));
    LIMITER.admit(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_logs_once_per_interval_and_reports_what_it_held_back() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.admit_at("k", t0), Some(0));
        assert_eq!(limiter.admit_at("k", t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit_at("k", t0 + Duration::from_secs(9)), None);
        assert_eq!(limiter.admit_at("k", t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(limiter.admit_at("k", t0 + Duration::from_secs(11)), None);
        assert_eq!(limiter.admit_at("k", t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn keys_have_separate_budgets() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.admit_at("a", t0), Some(0));
        assert_eq!(limiter.admit_at("b", t0), Some(0));
        assert_eq!(limiter.admit_at("a", t0), None);
    }
}
