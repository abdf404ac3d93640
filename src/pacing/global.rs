//! Send slots shared by every worker. One row per business number in the store holds the
//! number's *theoretical arrival time* (GCRA); a worker leases a handful of consecutive slots
//! (≈100 ms of the rate) in one statement, and sends exactly at those instants. Slots of all
//! workers interleave on one evenly spaced timeline, so the rate holds across any number of
//! processes, and no one-second window at the API can exceed it.

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

/// How late a slot may still be used: scheduling delay on a busy machine, but never more than
/// one slot interval, so a late slot can at most touch the next one — never bunch several
/// (at 80/s that is 10 ms; at 1,000/s, 1 ms). Anything later is skipped.
const SLOT_TOLERANCE: Duration = Duration::from_millis(10);

/// Leases slots from the store and hands them out locally, one per send.
pub struct LeasedSlots {
    store: Arc<dyn Store>,
    /// Slots leased but not used yet, per sender, as local instants.
    queues: Mutex<HashMap<SenderId, VecDeque<Instant>>>,
    /// How much of the rate one lease covers.
    lease_span: Duration,
    /// The store said it has no shared slots (SQLite): stop asking.
    unsupported: AtomicBool,
}

impl LeasedSlots {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            queues: Mutex::new(HashMap::new()),
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
        let slot = loop {
            {
                let mut queues = self.queues.lock().await;
                let q = queues.entry(sender.clone()).or_default();
                // Slots already in the past were missed (a stall in this process): skip them
                // rather than send them late, next to other workers' slots. Each slot is used
                // at its instant or never, so the shared timeline stays evenly spaced.
                let now = Instant::now();
                let tolerance = SLOT_TOLERANCE.min(Duration::from_secs_f64(1.0 / rate.max(0.001)));
                while q.front().is_some_and(|t| *t + tolerance < now) {
                    q.pop_front();
                }
                if let Some(t) = q.pop_front() {
                    break t;
                }
                let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
                let n = self.lease_size(rate);
                match self.store.lease_slots(sender, interval, n).await {
                    Ok(Some(lease)) => {
                        let now = Instant::now();
                        for i in 0..n {
                            let at = lease.first_in + interval * i;
                            q.push_back(now + at);
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
