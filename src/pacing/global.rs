//! Send slots shared by every worker. One row per business number in the store holds the
//! number's *theoretical arrival time* (GCRA); a worker leases a handful of consecutive slots
//! (≈100 ms of the rate) in one statement, and sends exactly at those instants. Slots of all
//! workers interleave on one evenly spaced timeline, so the rate holds across any number of
//! processes, and no one-second window at the API can exceed it.
//!
//! The slots are instants on the store's clock. Each worker maps them onto its own monotonic
//! clock with an offset estimated like NTP does: the store's `now` lies between the moments
//! the query was sent and answered, so the midpoint is off by at most half the round trip.
//! The estimate with the smallest error bound wins, so a reply delayed by a busy machine (tens
//! of milliseconds on 2 cores) does not shift a whole lease onto its neighbour's slots.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;
use tracing::warn;

use super::SlotSource;
use crate::domain::SenderId;
use crate::store::Store;
use crate::telemetry::metrics;

/// How late a slot may still be used (scheduling delay on a busy machine); anything later is
/// skipped, never bunched onto other workers' slots. Late slots can push at most 10 ms worth of
/// the rate into a one-second window: a third of the 3 % the default headroom leaves free.
/// Not tied to the slot interval: at high rates that is microseconds (0 at 10⁸/s), and every
/// slot would count as missed by the time it was looked at.
const SLOT_TOLERANCE: Duration = Duration::from_millis(10);

/// How fast the store's wall clock may drift from this process's monotonic clock (NTP slews
/// at most 500 ppm): an old offset estimate loses this much accuracy per second of age.
const MAX_DRIFT_PPM: u64 = 500;

/// Maps the store's clock (µs since the Unix epoch) onto this process's [`Instant`]s.
#[derive(Debug)]
struct ClockMap {
    base: Instant,
    best: Option<OffsetSample>,
}

#[derive(Debug, Clone, Copy)]
struct OffsetSample {
    /// Store µs minus local µs since `base`.
    offset_us: i64,
    /// Half the round trip: how far off the sample may be when taken.
    error_us: u64,
    taken: Instant,
}

impl OffsetSample {
    /// How far off the sample may be now: its round-trip error plus the drift since.
    fn error_at(&self, now: Instant) -> u64 {
        let age_us = now.saturating_duration_since(self.taken).as_micros() as u64;
        self.error_us + age_us * MAX_DRIFT_PPM / 1_000_000
    }
}

impl ClockMap {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            best: None,
        }
    }

    fn local_us(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.base).as_micros() as i64
    }

    /// Takes one observation: the store said `store_now_us` between `sent` and `answered`.
    fn observe(&mut self, sent: Instant, answered: Instant, store_now_us: i64) {
        let mid = (self.local_us(sent) + self.local_us(answered)) / 2;
        let sample = OffsetSample {
            offset_us: store_now_us - mid,
            error_us: answered.saturating_duration_since(sent).as_micros() as u64 / 2,
            taken: answered,
        };
        if self
            .best
            .is_none_or(|best| sample.error_us <= best.error_at(answered))
        {
            self.best = Some(sample);
        }
    }

    /// The local instant of a store instant (after at least one observation).
    fn local(&self, store_us: i64) -> Instant {
        let offset = self.best.map_or(0, |b| b.offset_us);
        let local = store_us - offset;
        match u64::try_from(local) {
            Ok(us) => self.base + Duration::from_micros(us),
            Err(_) => self.base,
        }
    }
}

/// Leases slots from the store and hands them out locally, one per send.
pub struct LeasedSlots {
    store: Arc<dyn Store>,
    /// Slots leased but not used yet, per sender, as local instants. Each sender's queue has a
    /// lock of its own, held across its lease statement: one number's lease never holds up
    /// the sends of another (with one lock for all, every lease's round trip stalled every
    /// number, and slots that came due meanwhile were skipped as missed).
    queues: std::sync::Mutex<HashMap<SenderId, Arc<Mutex<VecDeque<Instant>>>>>,
    clock: std::sync::Mutex<ClockMap>,
    /// How much of the rate one lease covers.
    lease_span: Duration,
    /// The store said it has no shared slots (SQLite): stop asking.
    unsupported: AtomicBool,
}

impl LeasedSlots {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            queues: std::sync::Mutex::new(HashMap::new()),
            clock: std::sync::Mutex::new(ClockMap::new()),
            lease_span: Duration::from_millis(100),
            unsupported: AtomicBool::new(false),
        }
    }

    /// Slots per lease at `rate`: about `lease_span` worth, at least one.
    fn lease_size(&self, rate: f64) -> u32 {
        ((rate * self.lease_span.as_secs_f64()).floor() as u32).clamp(1, 1000)
    }
}

#[async_trait]
impl SlotSource for LeasedSlots {
    async fn acquire(&self, sender: &SenderId, rate: f64) -> bool {
        if self.unsupported.load(Ordering::Relaxed) {
            return false;
        }
        let queue = Arc::clone(
            self.queues
                .lock()
                .expect("slot queues lock")
                .entry(sender.clone())
                .or_default(),
        );
        let slot = loop {
            {
                let mut q = queue.lock().await;
                // Slots already in the past were missed (a stall in this process): skip them
                // rather than send them late, next to other workers' slots. Each slot is used
                // at its instant or never, so the shared timeline stays evenly spaced.
                let now = Instant::now();
                let mut missed = 0;
                while q.front().is_some_and(|t| *t + SLOT_TOLERANCE < now) {
                    q.pop_front();
                    missed += 1;
                }
                if missed > 0 {
                    metrics::slots_missed(sender.as_str(), missed);
                }
                if let Some(t) = q.pop_front() {
                    break t;
                }
                let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
                let n = self.lease_size(rate);
                let sent = Instant::now();
                match self.store.lease_slots(sender, interval, n).await {
                    Ok(Some(lease)) => {
                        let mut clock = self.clock.lock().expect("clock lock");
                        clock.observe(sent, Instant::now(), lease.store_now_us);
                        let step = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
                        for i in 0..i64::from(n) {
                            q.push_back(clock.local(lease.first_us + step * i));
                        }
                        continue;
                    }
                    Ok(None) => {
                        self.unsupported.store(true, Ordering::Relaxed);
                        return false;
                    }
                    Err(e) => warn!(error = %e, "cannot lease send slots; retrying"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokio::time::sleep_until(slot.into()).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(clock: &ClockMap, ms: u64) -> Instant {
        clock.base + Duration::from_millis(ms)
    }

    #[test]
    fn a_slot_maps_to_the_midpoint_of_the_round_trip() {
        let mut clock = ClockMap::new();
        // The store's clock reads 5 s ahead of ours; the query took 2 ms.
        let store_now = 5_000_000 + 11_000;
        clock.observe(at(&clock, 10), at(&clock, 12), store_now);
        assert_eq!(clock.local(store_now + 50_000), at(&clock, 61));
    }

    #[test]
    fn a_late_reply_does_not_move_the_slots() {
        let mut clock = ClockMap::new();
        clock.observe(at(&clock, 10), at(&clock, 11), 1_000_000 + 10_500);
        let before = clock.local(2_000_000);
        // The process stalled 80 ms before it read the answer: a poor sample, ignored.
        clock.observe(at(&clock, 100), at(&clock, 180), 1_000_000 + 101_000);
        assert_eq!(clock.local(2_000_000), before);
        // A later sample with a short round trip replaces it.
        clock.observe(at(&clock, 200), at(&clock, 200), 1_000_000 + 203_000);
        assert_eq!(clock.local(2_000_000), before - Duration::from_millis(3));
    }

    #[test]
    fn an_old_estimate_gives_way_as_drift_may_have_grown() {
        let mut clock = ClockMap::new();
        clock.observe(at(&clock, 0), at(&clock, 0), 0);
        // 2 ms round trip, 10 s later: 10 s × 500 ppm = 5 ms of possible drift > 1 ms.
        clock.observe(at(&clock, 10_000), at(&clock, 10_002), 10_001_000 + 3_000);
        assert_eq!(clock.local(20_004_000), at(&clock, 20_001));
    }
}
