//! The engine's settings and the handles a caller steers a run with.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::{Clock, EventOptions};
use crate::policy::next_step::RetryTiming;
use crate::store::StoreError;

/// Bounds and timings of the engine. Every default says why.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Keys claimed (and gated) per ledger round trip: large enough to amortise the
    /// statement, small enough that a pause stops claiming quickly.
    pub claim_batch: usize,
    /// Requests in flight per sender. Hides API latency: 1,000/s at 250 ms needs ~250.
    pub max_inflight_per_sender: usize,
    /// How far ahead of its send (in time of the number's rate) a key is marked `sending`:
    /// the mark stage's group size (see `mark::mark_ahead`).
    pub mark_ahead: Duration,
    /// How long a claim stays ours without renewal; a dead worker's keys are taken over
    /// (or recorded `unknown` if mid-send) after this. Renewed every quarter of it while the
    /// run lives, so short is safe: a dead worker's work moves on within seconds.
    pub lease: Duration,
    /// First retry back-off; doubles per attempt with full jitter.
    pub retry_base: Duration,
    /// Longest single back-off.
    pub retry_cap: Duration,
    /// Waits up to this long (131056 pair limit) are done in-process; longer ones hand the
    /// key back for a later run so no delivery or process sits idle for minutes.
    pub inline_delay_limit: Duration,
    /// Outcomes written per ledger statement.
    pub record_batch: usize,
    /// Longest an outcome waits in memory before being written.
    pub record_interval: Duration,
    /// How often the campaign's state is re-read: pause/cancel take effect within this.
    pub control_poll: Duration,
    /// The tier's rolling window (Meta: 24 h).
    pub tier_window: Duration,
    /// When budget-deferred keys should be retried (the rolling window frees budget slowly).
    pub tier_retry_after: Duration,
    /// How long a key stays `unknown` before the webhooks may show it was never accepted
    /// (statuses of its sender's later messages came, none for it) and it is sent once more.
    /// `None`: unknown keys stay unknown. Longer than Meta's webhook delays in practice.
    pub resend_unknown_after: Option<Duration>,
    /// After this long an unknown key is left unknown for good (no webhook feed).
    pub unknown_give_up: Duration,
    /// Most SMS parts one recipient's text may take (`HERALD_SMS_MAX_PARTS`): each is billed,
    /// and a text that long is more likely a template mistake than a message.
    pub sms_max_parts: u32,
    /// "Now" for timers: when a follow-up is due and whether it is. The system clock, moved
    /// forward by tests and the demo; leases, timeouts and pacing stay on real time.
    pub clock: Clock,
    /// Per-recipient events for CRMs (`HERALD_RECIPIENT_EVENTS`): `None` (the default)
    /// writes nothing extra; `Some` adds the outbox rows of each outcome flush to the same
    /// transaction.
    pub recipient_events: Option<EventOptions>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            claim_batch: 500,
            max_inflight_per_sender: 256,
            mark_ahead: Duration::from_millis(10),
            lease: Duration::from_secs(10),
            retry_base: Duration::from_millis(250),
            retry_cap: Duration::from_secs(30),
            inline_delay_limit: Duration::from_secs(20),
            record_batch: 500,
            record_interval: Duration::from_millis(20),
            control_poll: Duration::from_secs(1),
            tier_window: Duration::from_secs(24 * 3600),
            tier_retry_after: Duration::from_secs(600),
            resend_unknown_after: Some(Duration::from_secs(600)),
            unknown_give_up: Duration::from_secs(3600),
            sms_max_parts: 3,
            clock: Clock::system(),
            recipient_events: None,
        }
    }
}

/// Why a run failed as a whole (the job is handed back untouched by the caller).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Live progress of a run, for progress bars.
#[derive(Debug, Default)]
pub struct Progress {
    /// Keys with a final outcome (or found done) so far.
    pub done: AtomicU64,
    /// Keys in the job.
    pub total: AtomicU64,
    pub sent: AtomicU64,
}

/// How a caller steers a run.
#[derive(Clone, Default)]
pub struct RunControl {
    /// Cancelled on SIGTERM: stop starting requests, finish those in flight, hand back the
    /// rest.
    pub shutdown: CancellationToken,
    pub progress: Option<Arc<Progress>>,
}

impl EngineConfig {
    /// The back-off settings the next-step decision uses.
    pub fn retry_timing(&self) -> RetryTiming {
        RetryTiming {
            base: self.retry_base,
            cap: self.retry_cap,
            inline_limit: self.inline_delay_limit,
        }
    }
}
