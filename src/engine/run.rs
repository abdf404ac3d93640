//! What the stages of one run share: the job, its sender and channel endpoint, the pacer and
//! in-flight bound, the stop signal, and the two ways an item leaves a stage — on to the
//! recorder as an [`Event`], or back to the marker after a wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::report::StopCause;
use crate::channel::Endpoint;
use crate::domain::{Category, ChannelKind, IdempotencyKey, Job, Outcome, SkipReason};
use crate::pacing::SenderPacer;
use crate::policy::next_step::Tries;
use crate::store::Sender;
use crate::telemetry::metrics;

/// A recipient travelling through the stages.
#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    /// Index into `job.recipients`.
    pub(super) idx: usize,
    /// Requests made so far and the answers that count on their own.
    pub(super) tries: Tries,
    /// Already marked `sending` in the ledger.
    pub(super) marked: bool,
    /// Generation of the adaptive rate the latest request was paced at (a 130429 for it is
    /// judged against that rate, not a newer one).
    pub(super) rate_generation: u64,
    /// The job's free-form session message goes, not its template: the gate found the
    /// customer-service window open.
    pub(super) session: bool,
}

impl Item {
    pub(super) fn new(idx: usize) -> Self {
        Self {
            idx,
            tries: Tries::default(),
            marked: false,
            rate_generation: 0,
            session: false,
        }
    }
}

/// What the stages tell the recorder.
pub(super) enum Event {
    Final {
        idx: usize,
        outcome: Outcome,
        attempts: u32,
        held: bool,
    },
    /// Handed back as pending for a later run.
    Release {
        idx: usize,
        resume_in: Duration,
    },
    Retry,
    /// The ledger no longer lets this run send the key: its lease lapsed and another run took
    /// it over. That run records its outcome; this one leaves the key alone.
    Lost {
        idx: usize,
    },
}

/// Where the run's items go when they leave a stage.
pub(super) struct Outlets {
    pub(super) events: mpsc::UnboundedSender<Event>,
    /// Items back from a wait, to be marked and paced again.
    pub(super) retries: mpsc::UnboundedSender<Item>,
}

/// State shared by the stages of one run.
pub(super) struct Run {
    /// What the run was started with; reachable as the run's own fields (`run.job`).
    parts: RunParts,
    stop: std::sync::Mutex<Option<StopCause>>,
    cancelled: AtomicBool,
    /// Cancelled when the run stops so waits can end early.
    pub(super) stopping: CancellationToken,
    /// Items passed on by the claim stage that have not reached the recorder yet.
    outstanding: AtomicUsize,
    /// Set by the marker once the claim stage has passed on everything it will.
    pub(super) producer_done: AtomicBool,
    pub(super) idle: Notify,
    outlets: Outlets,
    /// The latest error answer or transport failure, for the operator.
    last_error: std::sync::Mutex<Option<String>>,
    pub(super) handles: metrics::SendHandles,
    /// Per recipient, the estimated cost charged to the campaign's budget (0: none); given
    /// back when the send fails or is handed back.
    pub(super) charges: Arc<[AtomicU64]>,
}

/// What a run needs to start; the rest is its own state.
pub(super) struct RunParts {
    pub(super) job: Arc<Job>,
    pub(super) sender: Sender,
    pub(super) category: Category,
    /// The channel the run sends on.
    pub(super) channel: ChannelKind,
    /// This run's name in the ledger's `owner` column.
    pub(super) owner: String,
    pub(super) endpoint: Endpoint,
    pub(super) pacer: Arc<SenderPacer>,
    /// The sender's in-flight bound, shared by every run of the process.
    pub(super) inflight: Arc<Semaphore>,
}

impl std::ops::Deref for Run {
    type Target = RunParts;

    fn deref(&self) -> &RunParts {
        &self.parts
    }
}

impl Run {
    pub(super) fn new(parts: RunParts, outlets: Outlets) -> Self {
        Self {
            handles: metrics::SendHandles::new(
                parts.job.sender.as_str(),
                parts.channel,
                parts.category,
            ),
            charges: (0..parts.job.recipients.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            parts,
            stop: std::sync::Mutex::new(None),
            cancelled: AtomicBool::new(false),
            stopping: CancellationToken::new(),
            outstanding: AtomicUsize::new(0),
            producer_done: AtomicBool::new(false),
            idle: Notify::new(),
            outlets,
            last_error: std::sync::Mutex::new(None),
        }
    }

    /// Stops the run for `cause` (the first cause wins). Returns whether it was the first.
    pub(super) fn stop_with(&self, cause: StopCause) -> bool {
        let mut s = self.stop.lock().expect("stop lock");
        let first = s.is_none();
        if first {
            *s = Some(cause);
        }
        self.stopping.cancel();
        first
    }

    /// The campaign was cancelled: final, so the rest is skipped and the run completes
    /// without a stop cause.
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.stopping.cancel();
    }

    pub(super) fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(super) fn stopped(&self) -> bool {
        self.stopping.is_cancelled()
    }

    pub(super) fn stop_cause(&self) -> Option<StopCause> {
        self.stop.lock().expect("stop lock").clone()
    }

    pub(super) fn note_error(&self, line: String) {
        *self.last_error.lock().expect("error lock") = Some(line);
    }

    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("error lock").clone()
    }

    /// An item enters the stages; it leaves them with [`Run::finish`].
    pub(super) fn begin(&self) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    /// Items inside the stages.
    pub(super) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Ends an item's journey through the stages.
    pub(super) fn finish(&self, event: Event) {
        let _ = self.outlets.events.send(event);
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_one();
        }
    }

    /// Enters and ends at once: a recipient decided before it reached the marker.
    pub(super) fn decide(&self, event: Event) {
        self.begin();
        self.finish(event);
    }

    /// Tells the recorder without ending anything (a retry happened).
    pub(super) fn note(&self, event: Event) {
        let _ = self.outlets.events.send(event);
    }

    pub(super) fn key(&self, idx: usize) -> &IdempotencyKey {
        &self.job.recipients[idx].key
    }

    /// The key goes back pending, to be resumed now (or after `resume_in`) by a later run.
    pub(super) fn release(&self, idx: usize, resume_in: Duration) {
        self.finish(Event::Release { idx, resume_in });
    }

    /// A key taken back before its request started: released, or skipped if the campaign was
    /// cancelled.
    pub(super) fn hand_back(&self, item: Item) {
        if self.cancelled() {
            self.finish(Event::Final {
                idx: item.idx,
                outcome: Outcome::Skipped {
                    reason: SkipReason::CampaignCancelled,
                },
                attempts: item.tries.attempts,
                held: false,
            });
        } else {
            self.release(item.idx, Duration::ZERO);
        }
    }

    /// Sends an item back to the marker after `wait`, or hands it back for a later run if the
    /// wait is longer than `inline_limit` (no process should sit on a key for minutes).
    pub(super) fn retry_after(
        self: &Arc<Self>,
        item: Item,
        wait: Duration,
        inline_limit: Duration,
    ) {
        if wait > inline_limit {
            self.release(item.idx, wait);
            return;
        }
        let run = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    if run.outlets.retries.send(item).is_err() {
                        run.release(item.idx, Duration::ZERO);
                    }
                }
                _ = run.stopping.cancelled() => run.release(item.idx, Duration::ZERO),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::{PacerConfig, PacerRegistry};

    fn job(recipients: usize) -> Arc<Job> {
        let recipients: Vec<_> = (0..recipients)
            .map(|i| serde_json::json!({ "to": format!("+4915112345{i:03}") }))
            .collect();
        let body = serde_json::json!({
            "version": 1, "job_id": "j-1", "campaign_id": "c-1", "sender": "106540352242922",
            "template": { "name": "flash_sale", "language": "de", "category": "marketing" },
            "recipients": recipients,
        });
        Arc::new(Job::parse(body.to_string().as_bytes()).expect("valid job"))
    }

    fn run(
        recipients: usize,
    ) -> (
        Arc<Run>,
        mpsc::UnboundedReceiver<Event>,
        mpsc::UnboundedReceiver<Item>,
    ) {
        let job = job(recipients);
        let (events, events_rx) = mpsc::unbounded_channel();
        let (retries, retries_rx) = mpsc::unbounded_channel();
        let sender = Sender {
            id: job.sender.clone(),
            account_id: "waba".into(),
            portfolio_id: "bp".into(),
            display_number: "+49 30 1234".into(),
            rate_per_sec: 80,
            tier_limit: None,
            status: "CONNECTED".into(),
            status_reason: None,
        };
        let parts = RunParts {
            pacer: PacerRegistry::new(PacerConfig::default(), None).get(&job.sender, 80),
            endpoint: Endpoint("http://127.0.0.1:9/messages".into()),
            inflight: Arc::new(Semaphore::new(4)),
            job,
            sender,
            category: Category::Marketing,
            channel: ChannelKind::WhatsApp,
            owner: "test-owner".into(),
        };
        let run = Arc::new(Run::new(parts, Outlets { events, retries }));
        (run, events_rx, retries_rx)
    }

    fn released(ev: Event) -> (usize, Duration) {
        match ev {
            Event::Release { idx, resume_in } => (idx, resume_in),
            _ => panic!("expected a release"),
        }
    }

    #[tokio::test]
    async fn a_short_wait_comes_back_to_the_marker_and_a_long_one_is_handed_back() {
        let (run, mut events, mut retries) = run(2);
        run.begin();
        run.begin();
        let limit = Duration::from_secs(20);
        run.retry_after(Item::new(0), Duration::from_millis(1), limit);
        let back = retries.recv().await.expect("retried");
        assert_eq!(back.idx, 0);
        assert_eq!(run.outstanding(), 2, "a retry is still outstanding");

        run.retry_after(Item::new(1), Duration::from_secs(64), limit);
        assert_eq!(
            released(events.recv().await.unwrap()),
            (1, Duration::from_secs(64))
        );
        assert_eq!(run.outstanding(), 1);
    }

    #[tokio::test]
    async fn a_stop_ends_waits_early_and_gives_the_key_back_at_once() {
        let (run, mut events, mut retries) = run(1);
        run.begin();
        run.retry_after(
            Item::new(0),
            Duration::from_secs(10),
            Duration::from_secs(20),
        );
        assert!(run.stop_with(StopCause::Shutdown));
        assert!(
            !run.stop_with(StopCause::CampaignPaused),
            "the first cause wins"
        );
        assert_eq!(released(events.recv().await.unwrap()), (0, Duration::ZERO));
        assert!(retries.try_recv().is_err());
        assert_eq!(run.stop_cause(), Some(StopCause::Shutdown));
        assert_eq!(run.outstanding(), 0);
    }

    #[tokio::test]
    async fn handed_back_keys_are_released_or_skipped_once_the_campaign_is_cancelled() {
        let (run, mut events, _retries) = run(2);
        run.begin();
        run.hand_back(Item::new(0));
        assert_eq!(released(events.recv().await.unwrap()), (0, Duration::ZERO));

        run.cancel();
        assert!(run.stopped() && run.cancelled());
        assert_eq!(run.stop_cause(), None, "a cancelled run completes");
        run.begin();
        let mut item = Item::new(1);
        item.tries.attempts = 2;
        run.hand_back(item);
        match events.recv().await.unwrap() {
            Event::Final {
                idx: 1,
                outcome: Outcome::Skipped { reason },
                attempts: 2,
                held: false,
            } => assert_eq!(reason, SkipReason::CampaignCancelled),
            _ => panic!("expected a cancelled skip"),
        }
    }

    #[tokio::test]
    async fn the_last_item_out_wakes_the_pacer() {
        let (run, _events, _retries) = run(1);
        run.decide(Event::Lost { idx: 0 });
        assert_eq!(run.outstanding(), 0);
        // `decide` ended the only item: the stored wake-up is there for the pace stage.
        tokio::time::timeout(Duration::from_secs(1), run.idle.notified())
            .await
            .expect("notified");
    }
}
