//! One job's run. Three cooperating parts, connected by bounded channels so memory stays flat:
//!
//! - the **producer** claims keys in the ledger a batch at a time, gates them (consent, tier)
//!   and feeds the sendable ones on;
//! - the **marker** ([`super::mark`]) marks a few keys at a time as `sending` just before
//!   their turn (so a crash makes only those and the requests in flight `unknown`);
//! - the **dispatcher** waits for the sender's pacer and starts each request under the
//!   per-sender in-flight bound; retries come back to it after their back-off;
//! - the **recorder** writes outcomes to the ledger in batches and keeps the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Mutex as AsyncMutex, Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::report::{JobReport, JobRun, StopCause};
use crate::domain::{Category, IdempotencyKey, Job, Outcome, SkipReason};
use crate::graph::wire::SendTemplate;
use crate::graph::{GraphClient, SendResult};
use crate::pacing::{PacerRegistry, PairLimiter, SenderPacer};
use crate::policy::backoff::{pair_limit_delay, retry_delay};
use crate::policy::classify::{Action, classify_code, classify_transport};
use crate::policy::cost::{CostTally, RateCard};
use crate::policy::gate::{self, JobFacts, JobVerdict, RejectReason};
use crate::store::{CampaignState, Claim, ClaimStatus, OutcomeRecord, Sender, Store, StoreError};
use crate::telemetry::metrics;

/// Bounds and timings of the engine. Every default says why.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Keys claimed (and gated) per ledger round trip: large enough to amortise the
    /// statement, small enough that a pause stops claiming quickly.
    pub claim_batch: usize,
    /// Requests in flight per sender. Hides API latency: 1,000/s at 250 ms needs ~250.
    pub max_inflight_per_sender: usize,
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            claim_batch: 500,
            max_inflight_per_sender: 256,
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

/// The dispatch engine. Cheap to share: one per process, many jobs at once.
pub struct Engine {
    pub(super) store: Arc<dyn Store>,
    graph: GraphClient,
    pacers: Arc<PacerRegistry>,
    pub(super) pairs: Arc<PairLimiter>,
    rate_card: Arc<RateCard>,
    config: EngineConfig,
    /// Identifies this process in ledger owners.
    instance: String,
    /// One in-flight bound per sender, shared by all jobs of the process.
    inflight: std::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>,
}

/// A recipient travelling through the pipeline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    /// Index into `job.recipients`.
    pub(super) idx: usize,
    /// POSTs made so far.
    pub(super) attempts: u32,
    /// 131056 answers so far (drives the 4^n delay).
    pair_hits: u32,
    /// 131000 answers so far: Meta advises at most three tries for that one code.
    generic_failures: u32,
    /// Already marked `sending` in the ledger.
    pub(super) marked: bool,
    /// Generation of the adaptive rate the latest request was paced at (a 130429 for it is
    /// judged against that rate, not a newer one).
    rate_generation: u64,
}

/// What the dispatcher and send tasks tell the recorder.
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

/// State shared by the parts of one run.
pub(super) struct Run {
    pub(super) job: Arc<Job>,
    sender: Sender,
    category: Category,
    pub(super) owner: String,
    url: String,
    pacer: Arc<SenderPacer>,
    inflight: Arc<Semaphore>,
    stop: std::sync::Mutex<Option<StopCause>>,
    cancelled: std::sync::atomic::AtomicBool,
    /// Signalled when `stop` is set so waits can end early.
    stopping: CancellationToken,
    /// Items the producer passed on that have not reached a final event yet.
    outstanding: AtomicUsize,
    /// Set by the marker once the producer has passed on everything it will.
    pub(super) producer_done: AtomicBool,
    pub(super) idle: Notify,
    events: mpsc::UnboundedSender<Event>,
    retries: mpsc::UnboundedSender<Item>,
    /// The latest error answer or transport failure, for the operator.
    last_error: std::sync::Mutex<Option<String>>,
    handles: metrics::SendHandles,
    /// Per recipient, the estimated cost charged to the campaign's budget (0: none); given
    /// back when the send fails or is handed back.
    charges: Arc<[AtomicU64]>,
}

impl Run {
    fn stop_with(&self, cause: StopCause) {
        let mut s = self.stop.lock().expect("stop lock");
        if s.is_none() {
            *s = Some(cause);
        }
        self.stopping.cancel();
    }

    pub(super) fn stopped(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Ends an item's journey through the pipeline.
    pub(super) fn finish(&self, event: Event) {
        let _ = self.events.send(event);
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_one();
        }
    }

    pub(super) fn key(&self, idx: usize) -> &IdempotencyKey {
        &self.job.recipients[idx].key
    }
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        graph: GraphClient,
        pacers: Arc<PacerRegistry>,
        rate_card: Arc<RateCard>,
        config: EngineConfig,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "herald".into());
        Self {
            store,
            graph,
            pacers,
            pairs: Arc::new(PairLimiter::default()),
            rate_card,
            config,
            instance: format!("{host}-{}", std::process::id()),
            inflight: Default::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn semaphore(&self, sender: &str) -> Arc<Semaphore> {
        let mut map = self.inflight.lock().expect("inflight lock");
        Arc::clone(
            map.entry(sender.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_inflight_per_sender))),
        )
    }

    /// Runs one job to the end, or until it must stop. Safe to call again with the same job:
    /// keys that have an outcome are never sent again.
    pub async fn run_job(&self, job: Arc<Job>, ctl: &RunControl) -> Result<JobRun, EngineError> {
        let started = Instant::now();
        let Some(sender) = self.store.sender(&job.sender).await? else {
            return Ok(JobRun::Rejected(RejectReason::UnknownSender(
                job.sender.to_string(),
            )));
        };
        let template = self
            .store
            .template(
                &sender.account_id,
                &job.template.name,
                &job.template.language,
            )
            .await?;
        if let Err(reject) = gate::check_template(
            &sender.account_id,
            &job.template.name,
            &job.template.language,
            template.as_ref(),
        ) {
            return Ok(JobRun::Rejected(reject));
        }
        let template = template.expect("checked above");
        if template.category != job.template.category {
            // Meta may re-categorise a template; consent and price follow Meta's category.
            warn!(
                job = %job.id, declared = %job.template.category, actual = %template.category,
                "job declares a different template category than Meta; using Meta's"
            );
        }
        let campaign = self.store.ensure_campaign(&job.campaign).await?;
        let verdict = gate::job_verdict(&JobFacts {
            now: Utc::now(),
            not_before: job.not_before,
            expires_at: job.expires_at,
            campaign: campaign.state,
            sender: &sender,
            template: &template,
        });

        if let Some(p) = &ctl.progress {
            p.total.store(job.key_count() as u64, Ordering::Relaxed);
        }
        let owner = format!("{}-{}", self.instance, uuid::Uuid::new_v4().simple());
        let mut report = JobReport {
            job_id: job.id.to_string(),
            campaign_id: job.campaign.to_string(),
            sender: job.sender.to_string(),
            category: Some(template.category),
            ..JobReport::default()
        };

        // Recipients skipped while parsing get their outcome whatever the job verdict.
        self.record_parse_skips(&job, &owner, template.category, &mut report, ctl)
            .await?;

        let report = match verdict {
            JobVerdict::Defer(reason) => return Ok(JobRun::Deferred(reason)),
            JobVerdict::SkipAll(reason) => {
                self.skip_all(&job, &owner, template.category, reason, &mut report, ctl)
                    .await?;
                report
            }
            JobVerdict::Proceed => {
                let portfolio = sender.portfolio_id.clone();
                let limit = sender.tier_limit;
                let before = self.review_unknowns(&job, true).await?;
                report.resent_unknown = before.reopened;
                let mut report = self
                    .send_all(
                        Arc::clone(&job),
                        sender,
                        template.category,
                        owner,
                        report,
                        ctl,
                    )
                    .await?;
                if before.waiting > 0 || report.total("unknown") > 0 {
                    let after = self.review_unknowns(&job, false).await?;
                    report.unknown_waiting = after.waiting;
                    report.unknown_recheck_at = after.oldest_due.map(|due| {
                        // Not sooner than one more `after`: the webhooks need time to show it.
                        let wait = self.config.resend_unknown_after.unwrap_or_default();
                        due.max(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default())
                    });
                }
                // One count per job keeps the tier gauges fresh without a query per batch.
                match self
                    .store
                    .tier_usage(&portfolio, self.config.tier_window)
                    .await
                {
                    Ok(used) => metrics::tier(&portfolio, used, limit),
                    Err(e) => warn!(error = %e, "could not read tier usage"),
                }
                report
            }
        };
        let mut report = report;
        report.elapsed = started.elapsed();
        Ok(JobRun::Finished(Box::new(report)))
    }

    /// Reviews the job's `unknown` keys ([`Store::review_unknowns`]); nothing to do when
    /// resending is off.
    async fn review_unknowns(
        &self,
        job: &Job,
        reopen: bool,
    ) -> Result<crate::store::UnknownReview, EngineError> {
        let Some(after) = self.config.resend_unknown_after else {
            return Ok(Default::default());
        };
        let review = self
            .store
            .review_unknowns(
                &job.campaign,
                &job.id,
                after,
                self.config.unknown_give_up,
                reopen,
            )
            .await?;
        if review.reopened > 0 {
            info!(job = %job.id, keys = review.reopened,
                "resending unknown keys the webhooks show Meta never accepted");
            metrics::unknown_resent(job.sender.as_str(), review.reopened);
        }
        Ok(review)
    }

    fn claims<'a>(
        job: &'a Job,
        category: Category,
        keys: impl Iterator<Item = (&'a IdempotencyKey, &'a str)>,
    ) -> Vec<Claim> {
        keys.map(|(key, to)| Claim {
            key: key.clone(),
            campaign: job.campaign.clone(),
            job: job.id.clone(),
            sender: job.sender.clone(),
            recipient: to.to_owned(),
            template: job.template.name.clone(),
            language: job.template.language.clone(),
            category,
        })
        .collect()
    }

    async fn record_parse_skips(
        &self,
        job: &Job,
        owner: &str,
        category: Category,
        report: &mut JobReport,
        ctl: &RunControl,
    ) -> Result<(), EngineError> {
        for chunk in job.skipped.chunks(self.config.claim_batch) {
            let claims = Self::claims(job, category, chunk.iter().map(|s| (&s.key, s.to.as_str())));
            let statuses = self.store.claim(owner, self.config.lease, &claims).await?;
            let mut records = Vec::new();
            for (s, status) in chunk.iter().zip(statuses) {
                match status {
                    ClaimStatus::Mine => records.push(OutcomeRecord {
                        key: s.key.clone(),
                        outcome: Outcome::Skipped { reason: s.reason },
                        attempts: 0,
                    }),
                    other => note_not_mine(report, other),
                }
            }
            self.store.record_outcomes(&records).await?;
            for r in &records {
                report.count(&r.outcome);
                metrics::outcome(job.sender.as_str(), category, &r.outcome);
            }
            if let Some(p) = &ctl.progress {
                p.done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Claims every recipient and records the same skip reason (cancelled campaign, expired
    /// job).
    async fn skip_all(
        &self,
        job: &Job,
        owner: &str,
        category: Category,
        reason: SkipReason,
        report: &mut JobReport,
        ctl: &RunControl,
    ) -> Result<(), EngineError> {
        self.skip_range(job, 0, owner, category, reason, report, ctl)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn skip_range(
        &self,
        job: &Job,
        from: usize,
        owner: &str,
        category: Category,
        reason: SkipReason,
        report: &mut JobReport,
        ctl: &RunControl,
    ) -> Result<(), EngineError> {
        for chunk in job.recipients[from..].chunks(self.config.claim_batch) {
            let claims = Self::claims(job, category, chunk.iter().map(|r| (&r.key, r.to.as_str())));
            let statuses = self.store.claim(owner, self.config.lease, &claims).await?;
            let mut records = Vec::new();
            for (r, status) in chunk.iter().zip(statuses) {
                match status {
                    ClaimStatus::Mine => records.push(OutcomeRecord {
                        key: r.key.clone(),
                        outcome: Outcome::Skipped { reason },
                        attempts: 0,
                    }),
                    other => note_not_mine(report, other),
                }
            }
            self.store.record_outcomes(&records).await?;
            metrics::outcomes(
                job.sender.as_str(),
                category,
                &Outcome::Skipped { reason },
                records.len() as u64,
            );
            for r in &records {
                report.count(&r.outcome);
            }
            if let Some(p) = &ctl.progress {
                p.done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn send_all(
        &self,
        job: Arc<Job>,
        sender: Sender,
        category: Category,
        owner: String,
        report: JobReport,
        ctl: &RunControl,
    ) -> Result<JobReport, EngineError> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        // Two claim batches in the channel keep the dispatcher busy while the producer claims
        // the next one, and bound memory.
        let (work_tx, work_rx) = mpsc::channel::<Item>(self.config.claim_batch * 2);
        let pacer = self.pacers.get(&job.sender, sender.rate_per_sec);
        let (marked_tx, marked_rx) =
            mpsc::channel::<Item>(super::mark::mark_ahead(pacer.effective_rate()));
        let (remark_tx, remark_rx) = mpsc::unbounded_channel();
        let run = Arc::new(Run {
            url: self.graph.messages_url(&job.sender),
            pacer,
            inflight: self.semaphore(job.sender.as_str()),
            job: Arc::clone(&job),
            sender,
            category,
            owner,
            stop: std::sync::Mutex::new(None),
            cancelled: std::sync::atomic::AtomicBool::new(false),
            stopping: CancellationToken::new(),
            outstanding: AtomicUsize::new(0),
            producer_done: AtomicBool::new(false),
            idle: Notify::new(),
            events: events_tx,
            retries: retry_tx,
            last_error: std::sync::Mutex::new(None),
            handles: metrics::SendHandles::new(job.sender.as_str(), category),
            charges: (0..job.recipients.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        });

        let report = Arc::new(AsyncMutex::new(report));
        let recorder = tokio::spawn(record_loop(
            Arc::clone(&self.store),
            Arc::clone(&job),
            run.owner.clone(),
            category,
            Arc::clone(&self.rate_card),
            Arc::clone(&run.charges),
            events_rx,
            Arc::clone(&report),
            ctl.progress.clone(),
            self.config.clone(),
        ));
        let control = tokio::spawn(control_loop(
            Arc::clone(&self.store),
            Arc::clone(&run),
            ctl.shutdown.clone(),
            self.config.clone(),
        ));

        let marker = self.mark_loop(Arc::clone(&run), work_rx, remark_rx, marked_tx);
        let dispatcher = self.dispatch_loop(Arc::clone(&run), marked_rx, retry_rx, remark_tx);
        let producer = self.produce(Arc::clone(&run), work_tx, Arc::clone(&report), ctl);
        let (produced, (), ()) = tokio::join!(producer, marker, dispatcher);
        control.abort();
        let _ = control.await;
        let stop = run.stop.lock().expect("stop lock").clone();
        let last_error = run.last_error.lock().expect("error lock").clone();

        // Every item has reached the recorder; once the last holder of the run lets go, the
        // event channel closes and the recorder flushes and ends.
        drop(run);
        let recorded = recorder.await.expect("recorder task panicked");
        produced?;
        recorded?;
        let mut report = Arc::try_unwrap(report)
            .map(|m| m.into_inner())
            .unwrap_or_else(|arc| arc.try_lock().expect("run finished").clone());
        if let Some(cause) = &stop {
            info!(job = %job.id, %cause, "job stopped early");
        }
        report.stop = stop;
        report.last_error = last_error;
        Ok(report)
    }

    /// Claims and gates recipients a batch at a time, feeding the sendable ones on.
    async fn produce(
        &self,
        run: Arc<Run>,
        work: mpsc::Sender<Item>,
        report: Arc<AsyncMutex<JobReport>>,
        ctl: &RunControl,
    ) -> Result<(), EngineError> {
        let job = Arc::clone(&run.job);
        let batch = self.config.claim_batch;
        let mut next = 0;
        while next < job.recipients.len() {
            if run.stopped() {
                break;
            }
            let chunk = &job.recipients[next..(next + batch).min(job.recipients.len())];
            let base = next;
            next += chunk.len();

            let claims = Self::claims(
                &job,
                run.category,
                chunk.iter().map(|r| (&r.key, r.to.as_str())),
            );
            let statuses = self
                .store
                .claim(&run.owner, self.config.lease, &claims)
                .await?;
            let mut mine = Vec::with_capacity(chunk.len());
            {
                let mut rep = report.lock().await;
                for (i, status) in statuses.into_iter().enumerate() {
                    match status {
                        ClaimStatus::Mine => mine.push(base + i),
                        ClaimStatus::WasInFlight => {
                            rep.count(&Outcome::Unknown);
                            metrics::outcome(job.sender.as_str(), run.category, &Outcome::Unknown);
                        }
                        other => note_not_mine(&mut rep, other),
                    }
                }
            }
            let not_mine = (chunk.len() - mine.len()) as u64;
            if let Some(p) = &ctl.progress {
                p.done.fetch_add(not_mine, Ordering::Relaxed);
            }
            if mine.is_empty() {
                continue;
            }

            // Consent: one query for the batch.
            let phones: Vec<_> = mine.iter().map(|&i| job.recipients[i].to.clone()).collect();
            let consents = self.store.consent_states(run.category, &phones).await?;
            let mut sendable = Vec::with_capacity(mine.len());
            let mut skips = Vec::new();
            for (&idx, consent) in mine.iter().zip(consents) {
                match gate::recipient_verdict(consent) {
                    None => sendable.push(idx),
                    Some(reason) => skips.push((idx, reason)),
                }
            }
            for (idx, reason) in skips {
                run.outstanding.fetch_add(1, Ordering::AcqRel);
                run.finish(Event::Final {
                    idx,
                    outcome: Outcome::Skipped { reason },
                    attempts: 0,
                    held: false,
                });
            }

            // Tier: numbers over the portfolio's budget wait for it to free up.
            let phones: Vec<_> = sendable
                .iter()
                .map(|&i| job.recipients[i].to.clone())
                .collect();
            let allowed = self
                .store
                .reserve_tier(
                    &run.sender.portfolio_id,
                    run.sender.tier_limit,
                    self.config.tier_window,
                    &phones,
                )
                .await?;
            let mut admitted = Vec::with_capacity(sendable.len());
            for (idx, ok) in sendable.into_iter().zip(allowed) {
                if ok {
                    admitted.push(idx);
                } else {
                    run.outstanding.fetch_add(1, Ordering::AcqRel);
                    run.finish(Event::Release {
                        idx,
                        resume_in: self.config.tier_retry_after,
                    });
                }
            }

            // Budget: the estimated cost is committed before the request; what no longer
            // fits is skipped for good.
            let costs: Vec<u64> = admitted
                .iter()
                .map(|&i| self.rate_card.micros(run.category, &job.recipients[i].to))
                .collect();
            let within = if costs.iter().any(|&c| c > 0) {
                let charge = self.store.charge_budget(&job.campaign, &costs).await?;
                if let Some(left) = &charge.left {
                    metrics::budget_remaining(job.campaign.as_str(), &left.currency, left.micros);
                }
                charge.admitted
            } else {
                vec![true; admitted.len()]
            };
            for ((idx, cost), ok) in admitted.into_iter().zip(costs).zip(within) {
                run.outstanding.fetch_add(1, Ordering::AcqRel);
                if !ok {
                    run.finish(Event::Final {
                        idx,
                        outcome: Outcome::Skipped {
                            reason: SkipReason::BudgetExhausted,
                        },
                        attempts: 0,
                        held: false,
                    });
                    continue;
                }
                run.charges[idx].store(cost, Ordering::Release);
                let item = Item {
                    idx,
                    attempts: 0,
                    pair_hits: 0,
                    generic_failures: 0,
                    marked: false,
                    rate_generation: 0,
                };
                if work.send(item).await.is_err() {
                    // The dispatcher ended (stop): hand the key back.
                    run.finish(Event::Release {
                        idx,
                        resume_in: Duration::ZERO,
                    });
                }
            }
        }
        drop(work);

        // Stopped before claiming everything: a cancelled campaign skips the rest for good;
        // otherwise the unclaimed rest simply stays for a later run.
        if run.cancelled.load(Ordering::Acquire) && next < job.recipients.len() {
            let mut rep = report.lock().await;
            self.skip_range(
                &job,
                next,
                &run.owner,
                run.category,
                SkipReason::CampaignCancelled,
                &mut rep,
                ctl,
            )
            .await?;
        } else if next < job.recipients.len() {
            report.lock().await.remaining += (job.recipients.len() - next) as u64;
        }
        Ok(())
    }

    /// Paces and starts requests for marked items; ends when the producer is done and
    /// nothing is outstanding. Items back from a wait (retries, pair-limit delays) go through
    /// the marker again: it checks expiry and the pair limit, and marks those not yet marked.
    async fn dispatch_loop(
        &self,
        run: Arc<Run>,
        mut marked: mpsc::Receiver<Item>,
        mut retries: mpsc::UnboundedReceiver<Item>,
        remarks: mpsc::UnboundedSender<Item>,
    ) {
        loop {
            if run.producer_done.load(Ordering::Acquire)
                && run.outstanding.load(Ordering::Acquire) == 0
            {
                break;
            }
            let item = tokio::select! {
                biased;
                Some(item) = retries.recv() => {
                    if let Err(mpsc::error::SendError(item)) = remarks.send(item) {
                        self.hand_back(&run, item);
                    }
                    continue;
                }
                Some(item) = marked.recv() => item,
                _ = run.idle.notified() => continue,
            };
            self.start(&run, item).await;
        }
        // Dropping `remarks` here lets the marker end.
    }

    /// Waits for the item's send slot and an in-flight permit, then sends it in a task.
    async fn start(&self, run: &Arc<Run>, mut item: Item) {
        if run.stopped() {
            self.hand_back(run, item);
            return;
        }
        tokio::select! {
            generation = run.pacer.acquire() => item.rate_generation = generation,
            _ = run.stopping.cancelled() => { self.hand_back(run, item); return; }
        }
        let permit = tokio::select! {
            p = Arc::clone(&run.inflight).acquire_owned() => p.expect("semaphore never closed"),
            _ = run.stopping.cancelled() => { self.hand_back(run, item); return; }
        };
        let run = Arc::clone(run);
        let graph = self.graph.clone();
        let store = Arc::clone(&self.store);
        let config = self.config.clone();
        let pairs_delay = self.config.inline_delay_limit;
        tokio::spawn(async move {
            let _permit = permit;
            send_one(&run, &graph, &store, &config, item, pairs_delay).await;
        });
    }

    /// A key taken back before its request started: released, or skipped if the campaign was
    /// cancelled.
    pub(super) fn hand_back(&self, run: &Run, item: Item) {
        if run.cancelled.load(Ordering::Acquire) {
            run.finish(Event::Final {
                idx: item.idx,
                outcome: Outcome::Skipped {
                    reason: SkipReason::CampaignCancelled,
                },
                attempts: item.attempts,
                held: false,
            });
        } else {
            run.finish(Event::Release {
                idx: item.idx,
                resume_in: Duration::ZERO,
            });
        }
    }

    pub(super) fn delay(&self, run: &Arc<Run>, item: Item, wait: Duration) {
        schedule_retry(run, item, wait, self.config.inline_delay_limit);
    }
}

fn note_not_mine(report: &mut JobReport, status: ClaimStatus) {
    match status {
        ClaimStatus::Done => report.already_done += 1,
        ClaimStatus::HeldElsewhere => report.held_elsewhere += 1,
        ClaimStatus::WasInFlight => report.count(&Outcome::Unknown),
        ClaimStatus::Mine => {}
    }
}

/// Sends an item back through the dispatcher after `wait`, or hands it back for a later run
/// if the wait is longer than a process should sit on it.
fn schedule_retry(run: &Arc<Run>, item: Item, wait: Duration, inline_limit: Duration) {
    if wait > inline_limit {
        run.finish(Event::Release {
            idx: item.idx,
            resume_in: wait,
        });
        return;
    }
    let run = Arc::clone(run);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                if run.retries.send(item).is_err() {
                    run.finish(Event::Release { idx: item.idx, resume_in: Duration::ZERO });
                }
            }
            _ = run.stopping.cancelled() => {
                run.finish(Event::Release { idx: item.idx, resume_in: Duration::ZERO });
            }
        }
    });
}

/// One request and what its answer means.
async fn send_one(
    run: &Arc<Run>,
    graph: &GraphClient,
    store: &Arc<dyn Store>,
    config: &EngineConfig,
    mut item: Item,
    inline_limit: Duration,
) {
    let r = &run.job.recipients[item.idx];
    let t = &run.job.template;
    let body = SendTemplate::new(
        r.to.as_str(),
        r.key.as_str(),
        &t.name,
        &t.language,
        &r.components,
    );
    let sender = run.job.sender.as_str();
    item.attempts += 1;
    run.handles.inflight.increment(1.0);
    let started = Instant::now();
    let result = graph.send(&run.url, &body).await;
    run.handles.latency.record(started.elapsed().as_secs_f64());
    run.handles.inflight.decrement(1.0);

    let (code, message, action) = match result {
        SendResult::Accepted {
            wamid,
            message_status,
        } => {
            run.finish(Event::Final {
                idx: item.idx,
                outcome: Outcome::Sent { wamid },
                attempts: item.attempts,
                held: message_status == "held_for_quality_assessment",
            });
            return;
        }
        SendResult::Refused { code, message, .. } => {
            let action = classify_code(code);
            (Some(code), message, action)
        }
        SendResult::Transport { kind, detail } => (None, detail, classify_transport(kind)),
    };
    let code_label = code.map_or_else(|| "transport".to_owned(), |c| c.to_string());
    *run.last_error.lock().expect("error lock") = Some(match code {
        Some(c) => format!("error {c}: {message}"),
        None => message.clone(),
    });
    match action {
        Action::Retry {
            max_attempts,
            lower_rate,
            pause_sender,
        } => {
            if lower_rate {
                metrics::throttled(sender, 130429);
                run.pacer.on_throttled(item.rate_generation);
            }
            if let Some(p) = pause_sender {
                run.pacer.pause_for(p);
            }
            let exhausted = if code == Some(131000) {
                item.generic_failures += 1;
                item.generic_failures >= max_attempts
            } else {
                item.attempts >= max_attempts
            };
            if exhausted {
                debug!(key = %r.key, code = %code_label, "giving up after {} attempts", item.attempts);
                match code {
                    Some(code) => run.finish(Event::Final {
                        idx: item.idx,
                        outcome: Outcome::Failed { code },
                        attempts: item.attempts,
                        held: false,
                    }),
                    // Transport failures and bare 5xx never reached Meta's processing: the key
                    // goes back for a later run rather than being failed for good.
                    None => run.finish_release(item.idx),
                }
                return;
            }
            metrics::retry(sender, &code_label);
            let _ = run.events.send(Event::Retry);
            let wait = retry_delay(
                item.attempts,
                config.retry_base,
                config.retry_cap,
                rand::random::<f64>(),
            )
            .max(pause_sender.unwrap_or_default());
            schedule_retry(run, item, wait, inline_limit.max(config.retry_cap));
        }
        Action::DelayRecipient => {
            metrics::throttled(sender, 131056);
            item.pair_hits += 1;
            schedule_retry(run, item, pair_limit_delay(item.pair_hits), inline_limit);
        }
        Action::DropRecipient { revoke_marketing } => {
            let code = code.unwrap_or_default();
            if revoke_marketing && run.category == Category::Marketing {
                // 131050: the user stopped marketing messages on WhatsApp. Honour it at once.
                if let Err(e) = store
                    .revoke_consent(&r.to, Some(Category::Marketing), Utc::now(), "meta:131050")
                    .await
                {
                    warn!(error = %e, "could not record a 131050 marketing opt-out");
                }
            }
            run.finish(Event::Final {
                idx: item.idx,
                outcome: Outcome::Failed { code },
                attempts: item.attempts,
                held: false,
            });
        }
        Action::StopCampaign => {
            let code = code.unwrap_or_default();
            let first = run.stop.lock().expect("stop lock").is_none();
            if first {
                warn!(campaign = %run.job.campaign, code, %message, "pausing campaign after a template/payload error");
                let reason = format!("error {code}: {message}");
                if let Err(e) = store
                    .set_campaign_state(&run.job.campaign, CampaignState::Paused, Some(&reason))
                    .await
                {
                    warn!(error = %e, "could not record the campaign pause");
                }
            }
            run.stop_with(StopCause::CampaignFatal { code, message });
            // The recipient did nothing wrong: it goes back and is sent after the fix.
            run.finish_release(item.idx);
        }
        Action::StopSender { temporary } => {
            let code = code.unwrap_or_default();
            if temporary {
                // App / account call limits: back the whole number off, then retry.
                run.pacer.pause_for(Duration::from_secs(60));
                metrics::retry(sender, &code_label);
                schedule_retry(run, item, Duration::from_secs(60), Duration::from_secs(60));
                return;
            }
            let first = run.stop.lock().expect("stop lock").is_none();
            if first {
                warn!(sender, code, %message, "stopping sender after an account-level error");
                let reason = format!("error {code}: {message}");
                if let Err(e) = store
                    .set_sender_status(&run.job.sender, "STOPPED", Some(&reason))
                    .await
                {
                    warn!(error = %e, "could not record the sender stop");
                }
                metrics::sender_stopped(sender, true);
            }
            run.stop_with(StopCause::SenderStopped { code, message });
            run.finish_release(item.idx);
        }
        Action::Unknown => {
            debug!(key = %r.key, detail = %message, "outcome unknown; will reconcile from webhooks");
            run.finish(Event::Final {
                idx: item.idx,
                outcome: Outcome::Unknown,
                attempts: item.attempts,
                held: false,
            });
        }
    }
}

impl Run {
    fn finish_release(&self, idx: usize) {
        self.finish(Event::Release {
            idx,
            resume_in: Duration::ZERO,
        });
    }
}

/// Re-reads the campaign's state and watches for shutdown, stopping the run when needed.
async fn control_loop(
    store: Arc<dyn Store>,
    run: Arc<Run>,
    shutdown: CancellationToken,
    config: EngineConfig,
) {
    let mut tick = tokio::time::interval(config.control_poll);
    let mut renew = tokio::time::interval(config.lease / 4);
    renew.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                run.stop_with(StopCause::Shutdown);
                return;
            }
            _ = renew.tick() => {
                if let Err(e) = store.renew_lease(&run.owner, config.lease).await {
                    warn!(error = %e, "could not renew the job's lease");
                }
            }
            _ = tick.tick() => {
                match store.campaign(&run.job.campaign).await {
                    Ok(Some(c)) if c.state == CampaignState::Cancelled => {
                        // Final: the rest is skipped, so the run completes without a stop cause.
                        run.cancelled.store(true, Ordering::Release);
                        run.stopping.cancel();
                        return;
                    }
                    Ok(Some(c)) if c.state == CampaignState::Paused => {
                        run.stop_with(StopCause::CampaignPaused);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "could not read the campaign state"),
                }
            }
        }
    }
}

/// Writes outcomes and hand-backs to the ledger in batches and keeps the report. Ends when
/// every holder of the run (and so of the event channel) is gone.
#[allow(clippy::too_many_arguments)]
async fn record_loop(
    store: Arc<dyn Store>,
    job: Arc<Job>,
    owner: String,
    category: Category,
    rate_card: Arc<RateCard>,
    charges: Arc<[AtomicU64]>,
    mut events: mpsc::UnboundedReceiver<Event>,
    report: Arc<AsyncMutex<JobReport>>,
    progress: Option<Arc<Progress>>,
    config: EngineConfig,
) -> Result<(), EngineError> {
    let sender = job.sender.as_str().to_owned();
    let sent_counter = metrics::SendHandles::new(&sender, category).sent;
    let mut cost = CostTally::default();
    let mut outcomes: Vec<OutcomeRecord> = Vec::with_capacity(config.record_batch);
    let mut releases: Vec<IdempotencyKey> = Vec::new();
    let mut tick = tokio::time::interval(config.record_interval);
    let mut last_flush = Instant::now();
    let mut resume_in = Duration::ZERO;
    let mut released_total = 0u64;
    let mut refund = 0u64;
    let mut closed = false;
    while !closed {
        tokio::select! {
            ev = events.recv() => match ev {
                None => closed = true,
                Some(ev) => {
                    let mut rep = report.lock().await;
                    refund += take_charge(&ev, &charges);
                    apply_event(ev, &job, category, &sender, &rate_card, &mut rep, &mut outcomes,
                        &mut releases, &mut resume_in, &progress, &sent_counter, &mut cost);
                    // Take what else is ready under the same lock.
                    while outcomes.len() < config.record_batch {
                        match events.try_recv() {
                            Ok(ev) => {
                                refund += take_charge(&ev, &charges);
                                apply_event(ev, &job, category, &sender, &rate_card,
                                    &mut rep, &mut outcomes, &mut releases, &mut resume_in,
                                    &progress, &sent_counter, &mut cost);
                            }
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => { closed = true; break; }
                        }
                    }
                }
            },
            _ = tick.tick() => {}
        }
        let due = closed || last_flush.elapsed() >= config.record_interval;
        if !outcomes.is_empty() && (due || outcomes.len() >= config.record_batch) {
            write_with_retry(|| store.record_outcomes(&outcomes)).await?;
            outcomes.clear();
            last_flush = Instant::now();
            flush_cost(&rate_card, &mut cost, &report).await;
        }
        if !releases.is_empty() && (due || releases.len() >= config.record_batch) {
            write_with_retry(|| store.release(&owner, &releases)).await?;
            released_total += releases.len() as u64;
            releases.clear();
        }
        if refund > 0 && (due || closed) {
            write_with_retry(|| store.refund_budget(&job.campaign, refund)).await?;
            refund = 0;
        }
    }
    flush_cost(&rate_card, &mut cost, &report).await;
    let mut rep = report.lock().await;
    rep.remaining += released_total;
    if rep.remaining > 0 {
        let at = Utc::now() + chrono::Duration::from_std(resume_in).unwrap_or_default();
        rep.resume_after = Some(rep.resume_after.map_or(at, |cur| cur.max(at)));
    }
    Ok(())
}

/// The budget charge an event gives back: everything but a send that may have been billed
/// (`sent`, or `unknown`, which may have been accepted) returns its estimated cost.
fn take_charge(ev: &Event, charges: &[AtomicU64]) -> u64 {
    let idx = match ev {
        Event::Final {
            outcome: Outcome::Sent { .. } | Outcome::Unknown,
            ..
        }
        | Event::Retry => return 0,
        // Charged by this run, but the key is another run's now, which charges it again.
        Event::Lost { idx } => *idx,
        Event::Final { idx, .. } | Event::Release { idx, .. } => *idx,
    };
    charges[idx].swap(0, Ordering::AcqRel)
}

/// Moves the cost of recently sent messages into the metrics and the report, once per ledger
/// write rather than once per message.
async fn flush_cost(card: &RateCard, cost: &mut CostTally, report: &AsyncMutex<JobReport>) {
    if cost.by_category_market.is_empty() && cost.unpriced == 0 {
        return;
    }
    let mut rep = report.lock().await;
    for ((category, market), (n, micros)) in std::mem::take(&mut cost.by_category_market) {
        metrics::estimated_cost(&card.currency, category, &market, micros);
        let e = rep
            .cost
            .by_category_market
            .entry((category, market))
            .or_default();
        e.0 += n;
        e.1 += micros;
    }
    rep.cost.unpriced += std::mem::take(&mut cost.unpriced);
}

#[allow(clippy::too_many_arguments)]
fn apply_event(
    ev: Event,
    job: &Job,
    category: Category,
    sender: &str,
    rate_card: &RateCard,
    report: &mut JobReport,
    outcomes: &mut Vec<OutcomeRecord>,
    releases: &mut Vec<IdempotencyKey>,
    resume_in: &mut Duration,
    progress: &Option<Arc<Progress>>,
    sent_counter: &::metrics::Counter,
    unflushed_cost: &mut CostTally,
) {
    match ev {
        Event::Final {
            idx,
            outcome,
            attempts,
            held,
        } => {
            let r = &job.recipients[idx];
            if let Outcome::Sent { .. } = outcome {
                unflushed_cost.add(rate_card, category, &r.to);
                sent_counter.increment(1);
                if held {
                    report.held_for_quality += 1;
                }
                if let Some(p) = progress {
                    p.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Outcome::Failed { code } = outcome
                && report.failed.len() < 1000
            {
                report.failed.push((r.key.clone(), code));
            }
            if !matches!(outcome, Outcome::Sent { .. }) {
                metrics::outcome(sender, category, &outcome);
            }
            report.count(&outcome);
            outcomes.push(OutcomeRecord {
                key: r.key.clone(),
                outcome,
                attempts,
            });
            if let Some(p) = progress {
                p.done.fetch_add(1, Ordering::Relaxed);
            }
        }
        Event::Release { idx, resume_in: d } => {
            releases.push(job.recipients[idx].key.clone());
            *resume_in = (*resume_in).max(d);
        }
        Event::Retry => report.retries += 1,
        Event::Lost { .. } => {
            report.held_elsewhere += 1;
            if let Some(p) = progress {
                p.done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Ledger writes of outcomes must not be lost to a short database outage: a sent message
/// whose wamid is dropped would later look `unknown`. Retry for about a minute.
async fn write_with_retry<F, Fut>(mut write: F) -> Result<(), EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut delay = Duration::from_millis(100);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, "ledger write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
