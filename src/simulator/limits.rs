//! The simulator's rate arithmetic, as plain data structures over `Instant`s: the strict
//! sliding one-second window Meta enforces per business number (130429), and the pair limit
//! per (number, recipient) with a burst that borrows from the future (131056).
//!
//! Both are split into a `check` and a `record` step so the caller can decide on every limit
//! first and only then commit: a request refused by one limit must not use up another.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::hashing::HashedMap;

/// Accepted requests of one number in the last `span`: a request is admitted only if the
/// window `(now - span, now]` would then hold at most `limit` of them.
///
/// A deque of timestamps rather than a token bucket, because the bucket admits `burst + rate`
/// in one sliding second (see the reference, §2) and this is the yardstick herald's pacing is
/// measured against. Memory is bounded by the limit: at most `limit` entries survive pruning.
#[derive(Debug)]
pub struct SlidingWindow {
    span: Duration,
    /// Admission times, oldest first. Pruned of everything at least `span` old on each use.
    hits: VecDeque<Instant>,
    /// The largest number of admissions ever seen inside one window. The count of any sliding
    /// window peaks right after an admission, so sampling after each push sees every maximum.
    max_in_window: u64,
}

impl SlidingWindow {
    pub fn new(span: Duration) -> Self {
        Self {
            span,
            hits: VecDeque::new(),
            max_in_window: 0,
        }
    }

    /// Whether one more admission at `now` would keep the window at or under `limit`.
    pub fn has_room(&mut self, now: Instant, limit: u32) -> bool {
        self.prune(now);
        self.hits.len() < limit as usize
    }

    /// Records an admission at `now` (call [`has_room`](Self::has_room) first). `now` must not
    /// go backwards between calls; the caller takes it under the same lock.
    pub fn record(&mut self, now: Instant) {
        self.prune(now);
        self.hits.push_back(now);
        self.max_in_window = self.max_in_window.max(self.hits.len() as u64);
    }

    /// Admissions inside the window ending at `now`.
    #[cfg(test)]
    pub fn count(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.hits.len()
    }

    /// The highest count any window has reached since creation or [`clear`](Self::clear).
    pub fn max_in_window(&self) -> u64 {
        self.max_in_window
    }

    pub fn clear(&mut self) {
        self.hits.clear();
        self.max_in_window = 0;
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&oldest) = self.hits.front() {
            if now.saturating_duration_since(oldest) < self.span {
                break;
            }
            self.hits.pop_front();
        }
    }
}

/// Sends per (number, recipient) as a GCRA: one send per `interval` on average, up to `burst`
/// at once. The state per recipient is one instant, the "theoretical arrival time" (TAT): the
/// moment the recipient's allowance would be fully used up again. Recipients are keyed by
/// their [`stable_hash`](super::hashing::stable_hash).
///
/// Recipients whose TAT lies in the past hold no information (their burst is full again), so
/// they are swept out whenever the map has doubled since the last sweep: a campaign to ten
/// million recipients keeps only the ones sent to in the last `burst × interval`.
#[derive(Debug)]
pub struct PairLimiter {
    interval: Duration,
    burst: u32,
    tat: HashedMap<Instant>,
    sweep_at: usize,
}

/// The map size below which sweeping is not worth the pass over it.
const MIN_SWEEP: usize = 4096;

impl PairLimiter {
    /// `burst == 0` disables the limit.
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self {
            interval,
            burst,
            tat: HashedMap::default(),
            sweep_at: MIN_SWEEP,
        }
    }

    fn enabled(&self) -> bool {
        self.burst > 0
    }

    /// The allowance a recipient may borrow from the future: `burst - 1` intervals.
    fn tolerance(&self) -> Duration {
        self.interval * self.burst.saturating_sub(1)
    }

    /// Whether a send to `recipient` at `now` is within the pair limit.
    pub fn allows(&self, recipient: u64, now: Instant) -> bool {
        if !self.enabled() {
            return true;
        }
        match self.tat.get(&recipient) {
            Some(&tat) => tat <= now + self.tolerance(),
            None => true,
        }
    }

    /// Records a send to `recipient` at `now` (call [`allows`](Self::allows) first).
    pub fn record(&mut self, recipient: u64, now: Instant) {
        if !self.enabled() {
            return;
        }
        let interval = self.interval;
        match self.tat.get_mut(&recipient) {
            Some(tat) => *tat = (*tat).max(now) + interval,
            None => {
                self.tat.insert(recipient, now + interval);
                if self.tat.len() >= self.sweep_at {
                    self.tat.retain(|_, tat| *tat > now);
                    self.sweep_at = (self.tat.len() * 2).max(MIN_SWEEP);
                }
            }
        }
    }

    /// Recipients currently tracked.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.tat.len()
    }

    pub fn clear(&mut self) {
        self.tat.clear();
        self.sweep_at = MIN_SWEEP;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Admits like the simulator does: check, then record.
    fn admit(w: &mut SlidingWindow, now: Instant, limit: u32) -> bool {
        let ok = w.has_room(now, limit);
        if ok {
            w.record(now);
        }
        ok
    }

    #[test]
    fn the_window_admits_exactly_the_limit_within_one_second() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(SECOND);
        for i in 0..80 {
            assert!(admit(&mut w, t0 + ms(i), 80), "request {i} should pass");
        }
        assert!(!admit(&mut w, t0 + ms(500), 80));
        assert!(!admit(&mut w, t0 + ms(999), 80));
        assert_eq!(w.count(t0 + ms(999)), 80);
        assert_eq!(w.max_in_window(), 80);
    }

    #[test]
    fn a_slot_frees_exactly_one_second_after_its_admission() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(SECOND);
        assert!(admit(&mut w, t0, 2));
        assert!(admit(&mut w, t0 + ms(400), 2));
        // The first admission is still inside (t - 1 s, t] just before its anniversary.
        assert!(!admit(&mut w, t0 + ms(999), 2));
        // At exactly one second it has left the window.
        assert!(admit(&mut w, t0 + SECOND, 2));
        assert!(!admit(&mut w, t0 + ms(1399), 2));
        assert!(admit(&mut w, t0 + ms(1400), 2));
    }

    #[test]
    fn a_fixed_window_boundary_does_not_let_twice_the_rate_through() {
        // 10 at the end of one calendar second and 10 at the start of the next would pass
        // a fixed-window limiter; the sliding window refuses the second ten.
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(SECOND);
        for i in 0..10 {
            assert!(admit(&mut w, t0 + ms(990 + i), 10));
        }
        for i in 0..10 {
            assert!(!admit(&mut w, t0 + ms(1000 + i), 10));
        }
        assert_eq!(w.max_in_window(), 10);
    }

    #[test]
    fn evenly_spaced_requests_at_the_rate_all_pass() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(SECOND);
        // 80/s spaced 12.5 ms apart for five seconds.
        for i in 0..400u64 {
            assert!(admit(&mut w, t0 + Duration::from_micros(i * 12_500), 80));
        }
        assert_eq!(w.max_in_window(), 80);
    }

    #[test]
    fn max_in_window_reports_the_densest_second_not_the_latest() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(SECOND);
        for i in 0..5 {
            w.record(t0 + ms(i));
        }
        w.record(t0 + ms(5000));
        assert_eq!(w.count(t0 + ms(5000)), 1);
        assert_eq!(w.max_in_window(), 5);
        w.clear();
        assert_eq!(w.max_in_window(), 0);
        assert_eq!(w.count(t0 + ms(5000)), 0);
    }

    #[test]
    fn the_pair_limit_allows_a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut p = PairLimiter::new(45, Duration::from_secs(6));
        for i in 0..45 {
            assert!(p.allows(1, t0), "burst send {i}");
            p.record(1, t0);
        }
        assert!(!p.allows(1, t0));
        assert!(!p.allows(1, t0 + ms(5999)));
        // Other recipients of the same number are unaffected.
        assert!(p.allows(2, t0));
        // One interval later, exactly one more.
        assert!(p.allows(1, t0 + Duration::from_secs(6)));
        p.record(1, t0 + Duration::from_secs(6));
        assert!(!p.allows(1, t0 + Duration::from_secs(6)));
    }

    #[test]
    fn the_pair_burst_refills_after_a_long_pause() {
        let t0 = Instant::now();
        let mut p = PairLimiter::new(3, Duration::from_secs(6));
        for _ in 0..3 {
            p.record(1, t0);
        }
        assert!(!p.allows(1, t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(18);
        for _ in 0..3 {
            assert!(p.allows(1, later));
            p.record(1, later);
        }
        assert!(!p.allows(1, later));
    }

    #[test]
    fn a_burst_of_zero_disables_the_pair_limit() {
        let t0 = Instant::now();
        let mut p = PairLimiter::new(0, Duration::from_secs(6));
        for _ in 0..1000 {
            assert!(p.allows(1, t0));
            p.record(1, t0);
        }
        assert_eq!(p.tracked(), 0);
    }

    #[test]
    fn recipients_with_a_full_burst_are_swept_out() {
        let t0 = Instant::now();
        let mut p = PairLimiter::new(45, ms(10));
        for i in 0..MIN_SWEEP - 1 {
            p.record(i as u64 + 100, t0);
        }
        assert_eq!(p.tracked(), MIN_SWEEP - 1);
        // Everything recorded at t0 has refilled by now; the next insert sweeps it away.
        p.record(7, t0 + ms(20));
        assert_eq!(p.tracked(), 1);
    }
}
