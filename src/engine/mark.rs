//! The mark stage, between the gate and the pacer: a key becomes `sending` in the ledger only
//! just before its request can go out, a few at a time, so a crash (`kill -9`) leaves as
//! `unknown` only the requests in flight and the handful marked ahead of them.
//!
//! It takes gated items (and every retry), checks the job's expiry and the pair limit, marks a small group in
//! one statement (group commit: while one statement runs, the next group gathers) and hands
//! the marked items to the pacer through a channel only [`mark_ahead`] deep (≈ 10 ms of the
//! number's rate). So the pacer never waits for the database, and no more than that many keys
//! are ever marked before their turn. A key the ledger no longer lets this run mark (its lease
//! lapsed and another run took it over) is not sent.

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

/// How many marked keys may wait for the pacer: `ahead` of `rate` (by default 10 ms: 10 at
/// Meta's highest 1,000/s), at least 2 (so the next group is marked while the current one is
/// paced), at most 256 (only load tests run numbers fast enough to reach it: one statement for
/// many keys).
pub(super) fn mark_ahead(rate_per_sec: f64, ahead: Duration) -> usize {
    (rate_per_sec * ahead.as_secs_f64())
        .ceil()
        .clamp(2.0, 256.0) as usize
}

/// The mark stage's dependencies.
pub(super) struct Marker {
    pub(super) store: Arc<dyn Store>,
    pub(super) pairs: Arc<PairLimiter>,
    /// Pair-limit waits up to this long are done in-process.
    pub(super) inline_limit: Duration,
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
            // Take what else is ready, as much as the pacer's queue has room for.
            let room = marked.capacity().max(1);
            let mut group = vec![first];
            while group.len() < room {
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
            for (mut item, ok) in group.into_iter().zip(fates) {
                if !ok {
                    run.finish(Event::Lost { idx: item.idx });
                    continue;
                }
                item.marked = true;
                if let Err(mpsc::error::SendError(item)) = marked.send(item).await {
                    // The dispatcher ended (stop): the key goes back unsent.
                    run.hand_back(item);
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
}
