//! The mark stage, between the gate and the pacer: a key becomes `sending` in the ledger only
//! just before its request can go out, a group at a time, so a crash (`kill -9`) leaves as
//! `unknown` only the requests in flight and the keys marked ahead of them.
//!
//! It takes gated items (and every retry), checks the job's expiry and the pair limit, marks a
//! group in one statement and hands the marked items to the pacer. How many marked keys may
//! wait for the pacer (the *depth*, [`depth`]) is ≈ 10 ms of the number's rate, or half the
//! sender's requests in flight when that is more: on a slow link hundreds are in flight anyway,
//! and marking them one or two at a time (what the pacer frees while one statement runs) made
//! thousands of statements a second per process. The marker waits until the queue has drained
//! to half the depth and then marks the other half in one statement, so the pacer still has
//! half the depth to send while the statement runs, and never waits for the database. A key
//! the ledger no longer lets this run mark (its lease lapsed and another run took it over) is
//! not sent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tracing::warn;

use super::run::{Event, Item, Run};
use crate::domain::{IdempotencyKey, Outcome, SkipReason};
use crate::pacing::PairLimiter;
use crate::store::Store;

/// The least number of marked keys that may wait for the pacer: `ahead` of `rate` (by default
/// 10 ms: 10 at Meta's highest 1,000/s), at least 2 (so the next group is marked while the
/// current one is paced), at most [`MAX_DEPTH`] / 2 (only load tests run numbers fast enough
/// to reach it: one statement for many keys).
pub(super) fn mark_ahead(rate_per_sec: f64, ahead: Duration) -> usize {
    (rate_per_sec * ahead.as_secs_f64())
        .ceil()
        .clamp(2.0, (MAX_DEPTH / 2) as f64) as usize
}

/// The most keys ever marked ahead of their send by one run (the capacity of the queue to the
/// pacer).
pub(super) const MAX_DEPTH: usize = 512;

/// How many marked keys may wait for the pacer now: the base from [`mark_ahead`], or half the
/// sender's requests in flight when that is more (a crash then leaves at most half as many
/// keys again `unknown` as it would anyway), never more than [`MAX_DEPTH`].
pub(super) fn depth(base: usize, in_flight: usize) -> usize {
    base.max(in_flight / 2).clamp(2, MAX_DEPTH)
}

/// The mark stage's dependencies.
pub(super) struct Marker {
    pub(super) store: Arc<dyn Store>,
    pub(super) pairs: Arc<PairLimiter>,
    /// Pair-limit waits up to this long are done in-process.
    pub(super) inline_limit: Duration,
    /// The least depth of the queue to the pacer ([`mark_ahead`] of the number's rate).
    pub(super) base_depth: usize,
    /// The sender's in-flight bound (its semaphore's permits when nothing is in flight).
    pub(super) inflight_limit: usize,
}

impl Marker {
    /// Marks items and passes them on to the pacer until both inputs are closed: the
    /// producer's `work` and the dispatcher's `remarks` (unmarked items back from a wait).
    pub(super) async fn run(
        &self,
        run: Arc<Run>,
        mut work: mpsc::Receiver<Item>,
        mut remarks: mpsc::UnboundedReceiver<Item>,
        marked: mpsc::Sender<Item>,
    ) {
        let mut work_open = true;
        loop {
            let first = tokio::select! {
                biased;
                Some(item) = remarks.recv() => item,
                got = work.recv(), if work_open => match got {
                    Some(item) => item,
                    None => {
                        work_open = false;
                        run.producer_done.store(true, Ordering::Release);
                        run.idle.notify_one();
                        continue;
                    }
                },
                else => break,
            };
            // Wait until the pacer's queue has drained to half the depth, then take up to the
            // other half of what is ready: one statement per half-depth of sends, while the
            // pacer still has the first half to go on with.
            let in_flight = self
                .inflight_limit
                .saturating_sub(run.inflight.available_permits());
            let depth = depth(self.base_depth, in_flight);
            let group_size = (depth / 2).max(1);
            let max = marked.max_capacity();
            // `reserve_many(n)` returns once the queue holds at most `max - n` items.
            let room = tokio::select! {
                r = marked.reserve_many(max - depth + group_size) => r,
                _ = run.stopping.cancelled() => Err(mpsc::error::SendError(())),
            };
            let Ok(mut room) = room else {
                // The run stopped, or the pacer ended: the key goes back unsent.
                run.hand_back(first);
                continue;
            };
            let mut group = vec![first];
            while group.len() < group_size {
                if let Ok(item) = remarks.try_recv() {
                    group.push(item);
                } else if let Ok(item) = work.try_recv() {
                    group.push(item);
                } else {
                    break;
                }
            }
            let Some(group) = self.admit(&run, group) else {
                continue;
            };
            let Some(fates) = self.mark(&run, &group).await else {
                for item in group {
                    run.hand_back(item);
                }
                continue;
            };
            // The room was reserved before the statement: every marked item has its place.
            for (mut item, ok) in group.into_iter().zip(fates) {
                if !ok {
                    run.finish(Event::Lost { idx: item.idx });
                    continue;
                }
                item.marked = true;
                match room.next() {
                    Some(permit) => permit.send(item),
                    None => run.hand_back(item),
                }
            }
        }
    }

    /// What of a group may be marked now: nothing once the run stops, nothing after the
    /// job's expiry, and no recipient whose pair limit says wait (those come back later).
    fn admit(&self, run: &Arc<Run>, group: Vec<Item>) -> Option<Vec<Item>> {
        if run.stopped() {
            for item in group {
                run.hand_back(item);
            }
            return None;
        }
        if run.job.expires_at.is_some_and(|exp| exp <= Utc::now()) {
            for item in group {
                run.finish(Event::Final {
                    idx: item.idx,
                    outcome: Outcome::Skipped {
                        reason: SkipReason::Expired,
                    },
                    attempts: item.tries.attempts,
                    held: false,
                });
            }
            return None;
        }
        let group: Vec<Item> = group
            .into_iter()
            .filter(|item| {
                let r = &run.job.recipients[item.idx];
                match self.pairs.check(&run.job.sender, &r.to) {
                    Ok(()) => true,
                    Err(wait) => {
                        run.retry_after(*item, wait, self.inline_limit);
                        false
                    }
                }
            })
            .collect();
        (!group.is_empty()).then_some(group)
    }

    /// Marks a group's unmarked items `sending` (a retry is marked already), retrying a
    /// failing database until the run stops. Returns, per item, whether it may be sent;
    /// `None`: the run stopped first (the group goes back unsent).
    async fn mark(&self, run: &Run, group: &[Item]) -> Option<Vec<bool>> {
        let keys: Vec<IdempotencyKey> = group
            .iter()
            .filter(|i| !i.marked)
            .map(|i| run.key(i.idx).clone())
            .collect();
        if keys.is_empty() {
            return Some(vec![true; group.len()]);
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match self.store.mark_sending(&run.owner, &keys).await {
                Ok(fates) => {
                    let mut fates = fates.into_iter();
                    return Some(
                        group
                            .iter()
                            .map(|i| i.marked || fates.next().unwrap_or(false))
                            .collect(),
                    );
                }
                Err(e) if !run.stopped() => {
                    warn!(error = %e, "cannot mark keys as sending; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_milliseconds_of_the_rate_are_marked_ahead() {
        let ms = Duration::from_millis;
        assert_eq!(mark_ahead(1.0, ms(10)), 2);
        assert_eq!(mark_ahead(80.0 * 0.97, ms(10)), 2);
        assert_eq!(mark_ahead(1000.0 * 0.97, ms(10)), 10);
        assert_eq!(mark_ahead(1000.0 * 0.97, ms(100)), 97);
        assert_eq!(mark_ahead(1_000_000.0, ms(10)), 256);
    }

    #[test]
    fn the_depth_grows_with_the_requests_in_flight_and_stays_bounded() {
        // Low latency: the base (10 ms of the rate) decides.
        assert_eq!(depth(10, 3), 10);
        // 250 ms at 1,000/s: ~250 in flight, so half as many may wait marked.
        assert_eq!(depth(10, 250), 125);
        assert_eq!(depth(2, 0), 2);
        assert_eq!(depth(2, 5), 2);
        assert_eq!(depth(256, 5_000), MAX_DEPTH);
    }
}
