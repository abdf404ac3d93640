//! How fast to send to one number when Meta answers 130429 (throughput exceeded): additive
//! increase, multiplicative decrease, with two guards that keep it from collapsing.
//!
//! - **One reaction per rate.** A request carries the generation of the rate it was paced at;
//!   a 130429 for a request paced at an older rate says nothing about the current one (those
//!   answers were in flight when the rate already dropped), so it is not counted again.
//! - **Slowing down must not cost throughput.** When herald is over a number's real limit,
//!   sending slower gets as many messages accepted as before (the surplus was refused anyway).
//!   When 130429s do not follow our rate (another app on the number, Meta-side trouble, a
//!   simulator injecting faults), sending slower only gets fewer accepted. So after a decrease,
//!   once the new rate has seen enough answers, a further 130429 is judged by the accepted
//!   rate (rate × share not refused): if it fell clearly, the decreases since the last
//!   recovery are undone and 130429s are left to the retry back-off for a hold period,
//!   instead of driving the rate to the floor.
//!
//! Quiet time brings the rate back up by a fixed step. Everything takes `now` as an argument,
//! so it is tested without sleeping.

use std::time::{Duration, Instant};

use super::backoff::{decrease_rate, recover_rate};

/// Tuning of the adaptive rate.
#[derive(Debug, Clone)]
pub struct AdaptiveConfig {
    /// Factor applied on a decrease.
    pub decrease_factor: f64,
    /// Least time between two decreases: answers need about a round trip to reflect a rate.
    pub min_gap: Duration,
    /// Quiet time (no 130429 at the current rate) after which the rate steps back up.
    pub recovery_interval: Duration,
    /// Size of a step up, as a share of the ceiling.
    pub recovery_step: f64,
    /// Lowest rate (messages per second).
    pub floor: f64,
    /// Answers at a new rate before its 130429 share is compared with the old one.
    pub min_samples: u64,
    /// Slowing down "cost throughput" when the accepted rate fell below this fraction of
    /// the accepted rate before the decrease.
    pub helped_below: f64,
    /// How long 130429s are left to the retry back-off after slowing down did not help.
    pub insensitive_hold: Duration,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            decrease_factor: 0.5,
            min_gap: Duration::from_secs(1),
            recovery_interval: Duration::from_secs(2),
            recovery_step: 0.1,
            floor: 1.0,
            min_samples: 20,
            helped_below: 0.8,
            insensitive_hold: Duration::from_secs(30),
        }
    }
}

/// Answers seen at one rate.
#[derive(Debug, Clone, Copy)]
struct Tally {
    sent: u64,
    throttled: u64,
    since: Instant,
}

impl Tally {
    fn new(since: Instant) -> Self {
        Self {
            sent: 0,
            throttled: 0,
            since,
        }
    }

    /// Enough answers over a long enough time (Meta's limit is per second) to compare.
    fn telling(self, config: &AdaptiveConfig, now: Instant) -> bool {
        self.sent >= config.min_samples && now.duration_since(self.since) >= config.min_gap
    }

    fn share(self) -> f64 {
        self.throttled as f64 / self.sent.max(1) as f64
    }

    /// Messages per second accepted at `rate` with this share refused.
    fn accepted_at(self, rate: f64) -> f64 {
        rate * (1.0 - self.share()).max(0.0)
    }
}

/// What a 130429 changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reaction {
    /// Counted, nothing changed (an older rate's answer, too soon, or held).
    None,
    /// The rate went down to this.
    Decreased(f64),
    /// Slowing down did not help: the rate went back up to this, and 130429s are held.
    Undone(f64),
}

/// The adaptive rate of one number.
#[derive(Debug, Clone)]
pub struct AdaptiveRate {
    config: AdaptiveConfig,
    ceiling: f64,
    rate: f64,
    generation: u64,
    current: Tally,
    /// The rate and tally in force before the last decrease, while its effect is judged.
    before_decrease: Option<(f64, Tally)>,
    /// The rate before the first of the decreases since the last recovery: what an undo
    /// restores.
    chain_start: Option<f64>,
    last_change: Instant,
    last_decrease: Option<Instant>,
    last_throttle: Option<Instant>,
    hold_until: Option<Instant>,
}

impl AdaptiveRate {
    pub fn new(ceiling: f64, config: AdaptiveConfig, now: Instant) -> Self {
        Self {
            config,
            ceiling,
            rate: ceiling,
            generation: 0,
            current: Tally::new(now),
            before_decrease: None,
            chain_start: None,
            last_change: now,
            last_decrease: None,
            last_throttle: None,
            hold_until: None,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// One send paced now; returns the generation to hand back with its answer.
    pub fn on_send(&mut self) -> u64 {
        self.current.sent += 1;
        self.generation
    }

    /// Steps the rate up after a quiet interval; returns the new rate when it changed.
    pub fn maybe_recover(&mut self, now: Instant) -> Option<f64> {
        let quiet_since = self
            .last_throttle
            .map_or(self.last_change, |t| t.max(self.last_change));
        if self.rate >= self.ceiling
            || now.duration_since(quiet_since) < self.config.recovery_interval
        {
            return None;
        }
        let next = recover_rate(
            self.rate,
            self.ceiling * self.config.recovery_step,
            self.ceiling,
        );
        self.change(next, now);
        // A rate reached by recovery is judged afresh.
        self.before_decrease = None;
        self.chain_start = None;
        Some(next)
    }

    /// A 130429 for a request paced at `generation`.
    pub fn on_throttled(&mut self, generation: u64, now: Instant) -> Reaction {
        if generation != self.generation {
            return Reaction::None;
        }
        self.current.throttled += 1;
        self.last_throttle = Some(now);
        if self.hold_until.is_some_and(|t| now < t) {
            return Reaction::None;
        }
        if self
            .last_decrease
            .is_some_and(|t| now.duration_since(t) < self.config.min_gap)
        {
            return Reaction::None;
        }
        if let Some((old_rate, old)) = self.before_decrease {
            if !self.current.telling(&self.config, now) {
                return Reaction::None;
            }
            let accepted = self.current.accepted_at(self.rate);
            if accepted < old.accepted_at(old_rate) * self.config.helped_below {
                let restored = self.chain_start.unwrap_or(old_rate);
                self.change(restored, now);
                self.before_decrease = None;
                self.chain_start = None;
                self.hold_until = Some(now + self.config.insensitive_hold);
                return Reaction::Undone(restored);
            }
        }
        let next = decrease_rate(self.rate, self.config.decrease_factor, self.config.floor);
        self.chain_start.get_or_insert(self.rate);
        // A rate that saw too little to compare (the first 130429 came at once) is not the
        // yardstick for the next one; the decrease still happens.
        self.before_decrease = self
            .current
            .telling(&self.config, now)
            .then_some((self.rate, self.current));
        self.last_decrease = Some(now);
        self.change(next, now);
        Reaction::Decreased(next)
    }

    fn change(&mut self, rate: f64, now: Instant) {
        self.rate = rate;
        self.generation += 1;
        self.current = Tally::new(now);
        self.last_change = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives `secs` seconds of sending at the current rate, with a 130429 for each request
    /// `throttle(rate, i)` says; returns the messages sent.
    fn drive(
        a: &mut AdaptiveRate,
        start: Instant,
        secs: u64,
        mut throttle: impl FnMut(f64, u64, f64) -> bool,
    ) -> f64 {
        let mut t = start;
        let end = start + Duration::from_secs(secs);
        let mut i = 0u64;
        let mut sent = 0.0;
        while t < end {
            a.maybe_recover(t);
            let g = a.on_send();
            i += 1;
            // The answer comes back a round trip (50 ms) later.
            if throttle(a.rate(), i, t.duration_since(start).as_secs_f64()) {
                a.on_throttled(g, t + ms(50));
            } else {
                sent += 1.0;
            }
            t += Duration::from_secs_f64(1.0 / a.rate());
        }
        sent
    }

    #[test]
    fn a_burst_of_in_flight_throttles_halves_the_rate_once() {
        let now = Instant::now();
        let mut a = AdaptiveRate::new(80.0, AdaptiveConfig::default(), now);
        let g = a.on_send();
        assert_eq!(a.on_throttled(g, now), Reaction::Decreased(40.0));
        for i in 0..20 {
            assert_eq!(a.on_throttled(g, now + ms(i)), Reaction::None);
        }
        assert_eq!(a.rate(), 40.0);
    }

    #[test]
    fn quiet_time_recovers_in_steps_to_the_ceiling() {
        let now = Instant::now();
        let mut a = AdaptiveRate::new(100.0, AdaptiveConfig::default(), now);
        let g = a.on_send();
        a.on_throttled(g, now);
        assert_eq!(a.rate(), 50.0);
        assert_eq!(a.maybe_recover(now + ms(1900)), None);
        assert_eq!(a.maybe_recover(now + ms(2000)), Some(60.0));
        let mut t = now + ms(2000);
        for _ in 0..10 {
            t += ms(2000);
            a.maybe_recover(t);
        }
        assert_eq!(a.rate(), 100.0);
    }

    #[test]
    fn throttling_that_follows_the_rate_keeps_it_under_the_limit() {
        // Meta's limit is 60/s; herald starts at 80: above 60/s, one request in four is 130429.
        let now = Instant::now();
        let mut a = AdaptiveRate::new(80.0, AdaptiveConfig::default(), now);
        drive(&mut a, now, 60, |rate, i, _| rate > 60.0 && i % 4 == 0);
        assert!(a.rate() <= 60.0 + 8.0, "{}", a.rate());
        assert!(a.rate() >= 30.0, "{}", a.rate());
    }

    #[test]
    fn a_number_far_below_its_configured_rate_is_slowed_to_its_real_limit() {
        // Configured for 1,000/s, the number is really at 80/s: most answers are 130429.
        let now = Instant::now();
        let mut a = AdaptiveRate::new(970.0, AdaptiveConfig::default(), now);
        let mut window = (0.0f64, 0u64);
        let sent = drive(&mut a, now, 30, |_, _, t| {
            // At most 80 accepted in each second.
            if t.floor() != window.0 {
                window = (t.floor(), 0);
            }
            window.1 += 1;
            window.1 > 80
        });
        assert!(a.rate() <= 160.0, "{}", a.rate());
        assert!(sent / 30.0 > 60.0, "{}", sent / 30.0);
    }

    #[test]
    fn throttling_that_ignores_the_rate_does_not_drive_it_to_the_floor() {
        // One answer in five is 130429 whatever the rate (the case that used to end at
        // 1.4 msg/s): slowing down does not help, so the rate stays near the ceiling.
        let now = Instant::now();
        let mut a = AdaptiveRate::new(77.6, AdaptiveConfig::default(), now);
        let sent = drive(&mut a, now, 60, |_, i, _| i % 5 == 0);
        let per_sec = sent / 60.0;
        assert!(per_sec > 0.6 * 77.6 * 0.8, "{per_sec} msg/s");
        assert!(a.rate() > 30.0, "{}", a.rate());
    }
}
