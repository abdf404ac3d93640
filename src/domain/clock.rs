//! Herald's one notion of "now" for what waits on time: follow-ups due 24 h after a send,
//! fallback deadlines, timers. In production it is the system clock; tests and the demo move
//! it forward (`advance`) so "24 h later" happens at once, without sleeping and without
//! touching what must stay real (leases, HTTP timeouts, pacing). A test that needs timers
//! already due for another process on the system clock sets it behind (`offset_by`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The system clock plus an offset, which `advance` only grows. Clones share the offset:
/// moving one moves every engine, recorder and timer that holds a clone.
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

    /// Moves the clock by `by`, back as well as forward: for a test whose timers must be due
    /// for another process on the system clock (set behind by their wait, what it schedules
    /// falls due for the system clock at once). Not for what already fired on this clock.
    pub fn offset_by(&self, by: chrono::Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::AcqRel);
    }

    /// How far ahead of the system clock it runs (zero when it runs behind).
    pub fn offset(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.offset_ms.load(Ordering::Acquire)).unwrap_or(0))
    }

    /// How far from the system clock it runs, behind when negative.
    pub fn signed_offset(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Acquire))
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.offset_ms.load(Ordering::Acquire);
        let by = Duration::from_millis(ms.unsigned_abs());
        if ms < 0 {
            write!(f, "Clock(system - {by:?})")
        } else {
            write!(f, "Clock(system + {by:?})")
        }
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

    #[test]
    fn offset_by_moves_it_back_as_well_as_forward() {
        let clock = Clock::system();
        let other = clock.clone();
        clock.offset_by(chrono::Duration::minutes(-61));
        let then = other.now();
        let behind = Utc::now() - then;
        assert!(behind >= chrono::Duration::minutes(61), "{behind}");
        assert!(behind < chrono::Duration::minutes(62), "{behind}");
        assert_eq!(other.offset(), Duration::ZERO);
        assert_eq!(other.signed_offset(), chrono::Duration::minutes(-61));
        assert_eq!(format!("{other:?}"), "Clock(system - 3660s)");
        clock.offset_by(chrono::Duration::minutes(90));
        clock.advance(Duration::from_secs(60));
        assert_eq!(other.signed_offset(), chrono::Duration::minutes(30));
        assert_eq!(format!("{other:?}"), "Clock(system + 1800s)");
    }
}
