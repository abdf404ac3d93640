//! Herald's one notion of "now" for what waits on time: follow-ups due 24 h after a send,
//! fallback deadlines, timers. In production it is the system clock; tests and the demo move
//! it forward (`advance`) so "24 h later" happens at once, without sleeping and without
//! touching what must stay real (leases, HTTP timeouts, pacing).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The system clock plus an offset that only grows. Clones share the offset: moving one moves
/// every engine, recorder and timer that holds a clone.
#[derive(Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system time.
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// The time now, as herald's timers see it.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Acquire))
    }

    /// Moves the clock forward by `by` (never back: a timer that fired stays fired).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::AcqRel);
    }

    /// How far ahead of the system clock it runs.
    pub fn offset(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.offset_ms.load(Ordering::Acquire)).unwrap_or(0))
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock(system + {:?})", self.offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_move_together_and_only_forward() {
        let clock = Clock::system();
        let other = clock.clone();
        let before = other.now();
        clock.advance(Duration::from_secs(24 * 3600));
        let after = other.now();
        assert!(after - before >= chrono::Duration::hours(24));
        assert!(after - before < chrono::Duration::hours(25));
        assert_eq!(other.offset(), Duration::from_secs(24 * 3600));
    }
}
