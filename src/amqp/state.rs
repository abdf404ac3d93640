//! What a running worker tells its health endpoints: readiness (connected to the broker and
//! the database, not draining) and liveness (the consume loop still ticks). Plain atomics
//! behind an `Arc`, so the HTTP server reads them without locks or channels.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A worker's health, shared with the health server.
#[derive(Debug, Default)]
pub struct WorkerState {
    /// A channel is consuming `{prefix}.jobs` right now.
    broker: AtomicBool,
    /// The last store round trip worked (false after an engine error until one succeeds).
    database: AtomicBool,
    /// SIGTERM received: take no new work (readiness goes false at once).
    draining: AtomicBool,
    /// Milliseconds since the Unix epoch of the last sign of life of the consume loop; 0 until
    /// it first runs. A wall-clock value so any thread can compare it without sharing an
    /// `Instant`.
    last_progress_ms: AtomicU64,
    /// Jobs being processed (deliveries taken and not yet acked or handed back).
    jobs_in_flight: AtomicUsize,
}

impl WorkerState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ready for work: connected to broker and database, and not draining. Kubernetes stops
    /// counting a pod that is not ready; a worker is behind no Service, so this is for
    /// rollouts (`maxUnavailable: 0` waits for it) and dashboards.
    pub fn is_ready(&self) -> bool {
        self.broker.load(Ordering::Acquire)
            && self.database.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
    }

    pub fn database_ok(&self) -> bool {
        self.database.load(Ordering::Acquire)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn jobs_in_flight(&self) -> usize {
        self.jobs_in_flight.load(Ordering::Acquire)
    }

    /// Time since the consume loop last ticked, or `None` before it started. The loop ticks
    /// at least every [`TICK`](crate::amqp::worker::TICK) even when idle, so a liveness probe
    /// may call a worker stuck when this grows well past that.
    pub fn since_progress(&self) -> Option<Duration> {
        match self.last_progress_ms.load(Ordering::Acquire) {
            0 => None,
            at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
        }
    }

    pub(crate) fn set_broker(&self, up: bool) {
        self.broker.store(up, Ordering::Release);
    }

    pub(crate) fn set_database(&self, up: bool) {
        self.database.store(up, Ordering::Release);
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn tick(&self) {
        self.last_progress_ms.store(now_ms(), Ordering::Release);
    }

    pub(crate) fn job_started(&self) {
        self.jobs_in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn job_ended(&self) {
        self.jobs_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_broker_and_database_and_no_drain() {
        let s = WorkerState::new();
        assert!(!s.is_ready());
        s.set_broker(true);
        assert!(!s.is_ready());
        s.set_database(true);
        assert!(s.is_ready());
        s.set_draining();
        assert!(!s.is_ready());
    }

    #[test]
    fn progress_is_unknown_until_the_first_tick() {
        let s = WorkerState::new();
        assert_eq!(s.since_progress(), None);
        s.tick();
        assert!(s.since_progress().unwrap() < Duration::from_secs(5));
    }
}
