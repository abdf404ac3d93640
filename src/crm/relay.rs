//! The relay: claims outbox rows in id order with a lease, spreads them over the sink's lanes
//! by recipient key (a key's events always share a lane, so they go out in order), marks what
//! the sink took and hands back the rest with exponential back-off and jitter, durable in the
//! row (`next_attempt_at`). An event no sink took within [`RelayConfig::dead_after`] of being
//! recorded moves to the dead-letter table. Runs in every `worker` and `serve`; several at
//! once share the outbox safely (claims are leased; Postgres serialises them).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Sink;
use crate::domain::{Clock, MessageRole};
use crate::policy::backoff::retry_delay;
use crate::store::{OutboxEvent, Store, StoreError};
use crate::telemetry::metrics;

/// The relay's bounds and timings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events claimed per round: a round's POSTs/publishes must finish well within `lease`.
    pub batch: usize,
    /// How long a claim holds; a dead relay's events are taken over after it.
    pub lease: Duration,
    /// How often an idle relay looks for new events.
    pub poll: Duration,
    /// First back-off after a sink refused a batch; doubles per attempt.
    pub retry_base: Duration,
    /// Longest back-off.
    pub retry_cap: Duration,
    /// An event still unpublished this long after it was recorded goes dead.
    pub dead_after: Duration,
    /// How often the outbox-depth gauge is refreshed.
    pub gauge_every: Duration,
    /// "Now" for back-off and dead-lettering: the system clock, moved by tests.
    pub clock: Clock,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(500),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            dead_after: Duration::from_secs(24 * 3600),
            gauge_every: Duration::from_secs(15),
            clock: Clock::system(),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundOutcome {
    pub claimed: usize,
    pub published: u64,
    /// Handed back for a retry.
    pub failed: u64,
    /// Moved to the dead-letter table.
    pub dead: u64,
}

/// Moves events from the outbox to a sink.
pub struct Relay {
    store: Arc<dyn Store>,
    sink: Arc<dyn Sink>,
    config: RelayConfig,
    owner: String,
}

impl Relay {
    pub fn new(store: Arc<dyn Store>, sink: Arc<dyn Sink>, config: RelayConfig) -> Self {
        let owner = format!("relay-{}", uuid::Uuid::new_v4().simple());
        Self {
            store,
            sink,
            config,
            owner,
        }
    }

    /// One round: claim, deliver per lane, mark. Tests drive the relay with this.
    pub async fn try_round(&self) -> Result<RoundOutcome, StoreError> {
        let now = self.config.clock.now();
        let claimed = self
            .store
            .claim_recipient_events(&self.owner, self.config.lease, now, self.config.batch)
            .await?;
        let mut round = RoundOutcome {
            claimed: claimed.len(),
            ..RoundOutcome::default()
        };
        if claimed.is_empty() {
            return Ok(round);
        }
        let lanes = lanes(claimed, self.sink.lanes());
        let results = join_all(lanes.iter().map(|lane| self.sink.deliver(lane))).await;
        let mut published: Vec<i64> = Vec::new();
        let mut failed: Vec<&OutboxEvent> = Vec::new();
        let mut error = None;
        for (lane, (taken, err)) in lanes.iter().zip(results) {
            published.extend(lane[..taken].iter().map(|e| e.id));
            failed.extend(&lane[taken..]);
            if let Some(e) = err {
                error.get_or_insert(e.to_string());
            }
        }
        let done = self.config.clock.now();
        round.published = self
            .store
            .complete_recipient_events(&self.owner, &published, done)
            .await?;
        if !failed.is_empty() {
            let attempts = failed.iter().map(|e| e.attempts).max().unwrap_or(0) + 1;
            let wait = retry_delay(
                attempts,
                self.config.retry_base,
                self.config.retry_cap,
                0.5 + rand::random::<f64>() / 2.0,
            );
            let ids: Vec<i64> = failed.iter().map(|e| e.id).collect();
            let error = error.unwrap_or_else(|| "not taken".into());
            round.dead = self
                .store
                .fail_recipient_events(
                    &self.owner,
                    &ids,
                    &error,
                    done + chrono::Duration::from_std(wait).unwrap_or_default(),
                    done - chrono::Duration::from_std(self.config.dead_after).unwrap_or_default(),
                    done,
                )
                .await?;
            round.failed = ids.len() as u64 - round.dead;
            warn!(
                sink = self.sink.name(),
                error = %error,
                failed = round.failed,
                dead = round.dead,
                retry_in = ?wait,
                "recipient events not taken; retrying later"
            );
        }
        metrics::crm_events(self.sink.name(), round.published, round.failed, round.dead);
        Ok(round)
    }

    /// Refreshes the outbox gauges.
    pub async fn measure(&self) -> Result<(), StoreError> {
        let (pending, oldest) = self.store.recipient_event_backlog().await?;
        let oldest = oldest.map_or(0.0, |t| {
            (self.config.clock.now() - t).num_milliseconds().max(0) as f64 / 1000.0
        });
        metrics::crm_outbox(pending, oldest);
        Ok(())
    }

    /// Rounds until `stop`: at once again after a full batch, after `poll` otherwise, and
    /// after a back-off when the store fails.
    pub async fn run(self, stop: CancellationToken) {
        let mut last_gauge: Option<tokio::time::Instant> = None;
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            if last_gauge.is_none_or(|t| t.elapsed() >= self.config.gauge_every) {
                if let Err(e) = self.measure().await {
                    debug!(error = %e, "outbox depth not measured");
                }
                last_gauge = Some(tokio::time::Instant::now());
            }
            let wait = match self.try_round().await {
                Ok(r) if r.failed == 0 && r.dead == 0 => {
                    failures = 0;
                    if r.claimed == self.config.batch {
                        Duration::ZERO
                    } else {
                        self.config.poll
                    }
                }
                // A sink that refuses (down, slow, full) is not asked again at once: its
                // events back off in their rows, and the relay itself slows down.
                Ok(_) => {
                    failures += 1;
                    self.config.poll.saturating_mul(1 << failures.min(6))
                }
                Err(e) => {
                    failures += 1;
                    warn!(error = %e, "recipient events relay: store error; retrying");
                    self.config.poll.saturating_mul(1 << failures.min(6))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
}

/// Spreads claimed events over `n` lanes by recipient key (its `#sms` and `#follow-up`
/// messages included), keeping id order within each lane; empty lanes are dropped.
fn lanes(events: Vec<OutboxEvent>, n: usize) -> Vec<Vec<OutboxEvent>> {
    let n = n.max(1);
    let mut lanes: Vec<Vec<OutboxEvent>> = (0..n).map(|_| Vec::new()).collect();
    for e in events {
        let mut h = DefaultHasher::new();
        MessageRole::of_key(&e.message_key).1.hash(&mut h);
        lanes[(h.finish() % n as u64) as usize].push(e);
    }
    lanes.retain(|l| !l.is_empty());
    lanes
}

/// Starts a relay in its own task until `stop`.
pub fn spawn_relay(
    store: Arc<dyn Store>,
    sink: Arc<dyn Sink>,
    config: RelayConfig,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(Relay::new(store, sink, config).run(stop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RecipientState;

    fn event(id: i64, key: &str) -> OutboxEvent {
        OutboxEvent {
            id,
            message_key: key.into(),
            state: RecipientState::Sent,
            payload: "{}".into(),
            attempts: 0,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_recipients_events_share_a_lane_in_id_order() {
        let events = vec![
            event(1, "a"),
            event(2, "b"),
            event(3, "a#sms"),
            event(4, "c"),
            event(5, "a#follow-up"),
        ];
        let lanes = lanes(events, 4);
        let lane_of_a = lanes
            .iter()
            .find(|l| l.iter().any(|e| e.message_key == "a"))
            .unwrap();
        let ids: Vec<i64> = lane_of_a
            .iter()
            .filter(|e| e.message_key.starts_with('a'))
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, [1, 3, 5]);
        assert_eq!(lanes.iter().map(Vec::len).sum::<usize>(), 5);
        for l in &lanes {
            assert!(l.windows(2).all(|w| w[0].id < w[1].id));
        }
    }
}
