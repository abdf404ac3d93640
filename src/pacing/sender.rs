//! The per-number pacer.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::domain::SenderId;
use crate::policy::adaptive::{AdaptiveConfig, AdaptiveRate, Reaction};
use crate::telemetry::metrics;

/// How pacing adapts. Defaults follow the reference: leave headroom for inbound traffic,
/// slow down on throttling, recover step by step.
#[derive(Debug, Clone)]
pub struct PacerConfig {
    /// Share of the number's limit herald uses for broadcasts. 0.97 keeps every second under
    /// the limit with margin for clock jitter; lower it (0.8) when the number also carries
    /// heavy inbound traffic.
    pub headroom: f64,
    /// How 130429 moves the rate (`policy::adaptive`).
    pub adaptive: AdaptiveConfig,
}

impl Default for PacerConfig {
    fn default() -> Self {
        Self {
            headroom: 0.97,
            adaptive: AdaptiveConfig::default(),
        }
    }
}

/// A source of send slots shared by every worker (Postgres GCRA leases). With SQLite (one
/// process) there is none and the local bucket is authoritative.
#[async_trait]
pub trait SlotSource: Send + Sync {
    /// Waits until this process may send one more message for `sender` at `rate` per second.
    /// Returns `false` when the source does not pace this store (single-process SQLite): the
    /// local bucket then decides.
    async fn acquire(&self, sender: &SenderId, rate: f64) -> bool;
}

/// Paces one business number.
pub struct SenderPacer {
    sender: SenderId,
    config: PacerConfig,
    /// The number's limit from Meta (80 or 1,000 per second).
    limit: f64,
    /// The adaptive rate (130429 slows it, quiet time restores it): `policy::adaptive`.
    aimd: Mutex<AdaptiveRate>,
    /// Replaced whenever the rate changes; sends wait on the current one.
    limiter: RwLock<Arc<DefaultDirectRateLimiter>>,
    paused_until: Mutex<Option<Instant>>,
    global: Option<Arc<dyn SlotSource>>,
    wait_metric: ::metrics::Histogram,
}

/// A bucket of rate r and burst b admits up to b + r sends in one sliding second — which is
/// how naive limiters overshoot Meta's cap. herald spaces sends evenly and allows only the
/// burst of half the headroom (`(limit − ceiling) / 2`, at least 1), so `b + r ≤ limit`
/// holds in every window with the other half left for network jitter, while short stalls (a
/// ledger write, timer granularity) can still be made up.
fn limiter_for(rate: f64, burst: u32) -> Arc<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let quota = Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    Arc::new(RateLimiter::direct(quota))
}

/// The burst that keeps `burst + ceiling ≤ limit` with margin.
fn burst_for(limit: f64, ceiling: f64) -> u32 {
    (((limit - ceiling) / 2.0).floor() as u32).max(1)
}

impl SenderPacer {
    pub fn new(
        sender: SenderId,
        limit_per_sec: u32,
        config: PacerConfig,
        global: Option<Arc<dyn SlotSource>>,
    ) -> Self {
        let limit = f64::from(limit_per_sec.max(1));
        let ceiling = limit * config.headroom;
        metrics::sender_rates(sender.as_str(), limit, ceiling);
        let wait_metric = metrics::rate_wait_handle(sender.as_str());
        Self {
            sender,
            limit,
            aimd: Mutex::new(AdaptiveRate::new(
                ceiling,
                config.adaptive.clone(),
                Instant::now(),
            )),
            limiter: RwLock::new(limiter_for(ceiling, burst_for(limit, ceiling))),
            paused_until: Mutex::new(None),
            global,
            config,
            wait_metric,
        }
    }

    fn ceiling(&self) -> f64 {
        self.limit * self.config.headroom
    }

    /// The rate herald paces this number at now.
    pub fn effective_rate(&self) -> f64 {
        self.aimd.lock().expect("pacer lock").rate()
    }

    /// Waits for the next send slot; returns the generation of the rate it was paced at, to
    /// hand back to [`on_throttled`](Self::on_throttled) with a 130429.
    pub async fn acquire(&self) -> u64 {
        let start = Instant::now();
        let paused = *self.paused_until.lock().expect("pacer lock");
        if let Some(until) = paused
            && until > start
        {
            tokio::time::sleep_until(until.into()).await;
        }
        self.maybe_recover();
        let rate = self.effective_rate();
        let paced = match &self.global {
            Some(global) => global.acquire(&self.sender, rate).await,
            None => false,
        };
        if !paced {
            let limiter = Arc::clone(&self.limiter.read().expect("pacer lock"));
            limiter.until_ready().await;
        }
        self.wait_metric.record(start.elapsed().as_secs_f64());
        self.aimd.lock().expect("pacer lock").on_send()
    }

    fn set_rate(&self, rate: f64) {
        *self.limiter.write().expect("pacer lock") =
            limiter_for(rate, burst_for(self.limit, self.ceiling()));
        metrics::sender_rates(self.sender.as_str(), self.limit, rate);
    }

    fn maybe_recover(&self) {
        let mut aimd = self.aimd.lock().expect("pacer lock");
        if let Some(rate) = aimd.maybe_recover(Instant::now()) {
            self.set_rate(rate);
        }
    }

    /// Meta answered 130429 to a request paced at `generation` (from [`acquire`]): the
    /// adaptive rate decides whether to slow down (`policy::adaptive`).
    ///
    /// [`acquire`]: Self::acquire
    pub fn on_throttled(&self, generation: u64) {
        let mut aimd = self.aimd.lock().expect("pacer lock");
        match aimd.on_throttled(generation, Instant::now()) {
            Reaction::None => {}
            Reaction::Decreased(rate) | Reaction::Undone(rate) => self.set_rate(rate),
        }
    }

    /// Stops sends for `d` (131057 throughput upgrade, app call limits).
    pub fn pause_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut p = self.paused_until.lock().expect("pacer lock");
        if p.is_none_or(|cur| cur < until) {
            *p = Some(until);
        }
    }
}

/// The pacers of one process, one per business number, shared by all jobs.
#[derive(Default)]
pub struct PacerRegistry {
    config: PacerConfig,
    global: Option<Arc<dyn SlotSource>>,
    pacers: Mutex<HashMap<SenderId, (u32, Arc<SenderPacer>)>>,
}

impl PacerRegistry {
    pub fn new(config: PacerConfig, global: Option<Arc<dyn SlotSource>>) -> Self {
        Self {
            config,
            global,
            pacers: Mutex::new(HashMap::new()),
        }
    }

    /// The pacer of `sender`; recreated if its limit changed (after `senders sync`).
    pub fn get(&self, sender: &SenderId, limit_per_sec: u32) -> Arc<SenderPacer> {
        let mut pacers = self.pacers.lock().expect("registry lock");
        match pacers.get(sender) {
            Some((limit, p)) if *limit == limit_per_sec => Arc::clone(p),
            _ => {
                let p = Arc::new(SenderPacer::new(
                    sender.clone(),
                    limit_per_sec,
                    self.config.clone(),
                    self.global.clone(),
                ));
                pacers.insert(sender.clone(), (limit_per_sec, Arc::clone(&p)));
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(limit: u32) -> SenderPacer {
        SenderPacer::new(
            SenderId::parse("1").unwrap(),
            limit,
            PacerConfig::default(),
            None,
        )
    }

    #[tokio::test]
    async fn sends_are_spaced_evenly_at_the_rate() {
        let p = pacer(100);
        let start = Instant::now();
        for _ in 0..20 {
            p.acquire().await;
        }
        // 20 sends at 97/s, burst 1: the 20th comes ~19 periods after the first.
        let elapsed = start.elapsed().as_secs_f64();
        assert!(elapsed >= 19.0 / 97.0 * 0.95, "{elapsed}");
    }

    #[tokio::test]
    async fn throttling_halves_the_rate_once_per_burst() {
        let p = pacer(80);
        let start = p.effective_rate();
        let generation = p.acquire().await;
        p.on_throttled(generation);
        assert!((p.effective_rate() - start / 2.0).abs() < 1e-9);
        p.on_throttled(generation); // an answer paced at the old rate: same signal
        assert!((p.effective_rate() - start / 2.0).abs() < 1e-9);
    }

    #[test]
    fn burst_plus_rate_never_exceeds_the_limit() {
        assert_eq!(burst_for(80.0, 80.0 * 0.97), 1);
        assert_eq!(burst_for(1000.0, 970.0), 15);
        assert_eq!(burst_for(80.0, 80.0), 1);
        for limit in [20.0, 80.0, 1000.0] {
            for headroom in [0.8, 0.9, 0.97] {
                let ceiling = limit * headroom;
                let b = f64::from(burst_for(limit, ceiling));
                assert!(b + ceiling <= limit || b == 1.0, "{limit} {headroom}");
            }
        }
    }
}
