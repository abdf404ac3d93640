//! The engine and one job's run: the job-level checks (sender known, template approved,
//! campaign state, time window), then the stages wired together by bounded channels so memory
//! stays flat:
//!
//! ```text
//! claim ─▶ gate ─▶ mark ─▶ pace ─▶ send ─▶ record
//!                   ▲                │
//!                   └──── retries ───┘        control (shutdown, lease, campaign state)
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::{Mutex as AsyncMutex, Semaphore, mpsc};
use tracing::{info, warn};

use super::claim::{Claimer, Skip};
use super::config::{EngineConfig, EngineError, RunControl};
use super::control::control;
use super::gate::Gate;
use super::mark::{MAX_DEPTH, Marker, mark_ahead};
use super::pace::pace;
use super::record::Recorder;
use super::report::{JobReport, JobRun};
use super::run::{Item, Outlets, Run, RunParts};
use super::send::SendStage;
use crate::channel::{Channel, WhatsAppChannel};
use crate::domain::{Category, ChannelKind, Job, SkipReason};
use crate::graph::GraphClient;
use crate::pacing::{PacerRegistry, PairLimiter};
use crate::policy::cost::RateCard;
use crate::policy::gate::{self, JobFacts, JobVerdict, RejectReason};
use crate::store::{Sender, Store, UnknownReview};
use crate::telemetry::metrics;

/// One lane of a job: its recipients on one channel, sent as one run of the stages.
pub(super) struct Lane {
    pub(super) job: Arc<Job>,
    pub(super) channel: Arc<dyn Channel>,
    pub(super) sender: Sender,
    pub(super) category: Category,
    /// The run's name in the ledger's `owner` column.
    pub(super) owner: String,
}

/// The dispatch engine. Cheap to share: one per process, many jobs at once.
pub struct Engine {
    store: Arc<dyn Store>,
    /// The main channel (WhatsApp, or any channel a test gives).
    channel: Arc<dyn Channel>,
    /// The SMS route, when one is configured: recipients who prefer SMS and fallbacks.
    sms: Option<Arc<dyn Channel>>,
    pacers: Arc<PacerRegistry>,
    pairs: Arc<PairLimiter>,
    rate_card: Arc<RateCard>,
    config: EngineConfig,
    /// Identifies this process in ledger owners.
    instance: String,
    /// One in-flight bound per sender, shared by all jobs of the process.
    inflight: std::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>,
}

impl Engine {
    /// An engine sending WhatsApp templates through `graph`.
    pub fn new(
        store: Arc<dyn Store>,
        graph: GraphClient,
        pacers: Arc<PacerRegistry>,
        rate_card: Arc<RateCard>,
        config: EngineConfig,
    ) -> Self {
        Self::with_channel(
            store,
            Arc::new(WhatsAppChannel::new(graph)),
            pacers,
            rate_card,
            config,
        )
    }

    /// An engine sending on `channel`.
    pub fn with_channel(
        store: Arc<dyn Store>,
        channel: Arc<dyn Channel>,
        pacers: Arc<PacerRegistry>,
        rate_card: Arc<RateCard>,
        config: EngineConfig,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "herald".into());
        Self {
            store,
            channel,
            sms: None,
            pacers,
            pairs: Arc::new(PairLimiter::default()),
            rate_card,
            config,
            instance: format!("{host}-{}", std::process::id()),
            inflight: Default::default(),
        }
    }

    /// The same engine with an SMS route for recipients who prefer SMS and for fallbacks.
    pub fn with_sms(mut self, sms: Arc<dyn Channel>) -> Self {
        self.sms = Some(sms);
        self
    }

    /// Waits up to `wait` for the SMS route to be able to send; false without a route.
    pub async fn wait_for_sms(&self, wait: std::time::Duration) -> bool {
        match self.channel_of(ChannelKind::Sms) {
            Some(sms) => sms.ready(wait).await,
            None => false,
        }
    }

    /// The channel of `kind`, when this engine has one.
    pub(super) fn channel_of(&self, kind: ChannelKind) -> Option<&Arc<dyn Channel>> {
        if self.channel.kind() == kind {
            Some(&self.channel)
        } else {
            self.sms.as_ref().filter(|c| c.kind() == kind)
        }
    }

    /// This process in ledger and timer owners.
    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn semaphore(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self.inflight.lock().expect("inflight lock");
        Arc::clone(
            map.entry(key.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_inflight_per_sender))),
        )
    }

    fn claimer(&self, channel: ChannelKind) -> Claimer {
        Claimer {
            store: Arc::clone(&self.store),
            batch: self.config.claim_batch,
            lease: self.config.lease,
            channel,
        }
    }

    /// Runs one job to the end, or until it must stop. Safe to call again with the same job:
    /// keys that have an outcome are never sent again.
    pub async fn run_job(&self, job: Arc<Job>, ctl: &RunControl) -> Result<JobRun, EngineError> {
        let started = Instant::now();
        if let Err(too_long) = gate::check_sms_length(&job, self.config.sms_max_parts) {
            return Ok(JobRun::Rejected(too_long));
        }
        if job.needs_sms() && self.channel_of(ChannelKind::Sms).is_none() {
            // No SMS route (HERALD_SMS_URL): a job that may need SMS would reach some
            // customers on the wrong channel or not at all. Refused before any claim.
            return Ok(JobRun::Rejected(RejectReason::SmsUnavailable));
        }
        let Some(sender) = self.store.sender(&job.sender).await? else {
            return Ok(JobRun::Rejected(RejectReason::UnknownSender(
                job.sender.to_string(),
            )));
        };
        let template = match &job.template {
            Some(t) => {
                let found = self
                    .store
                    .template(&sender.account_id, &t.name, &t.language)
                    .await?;
                if let Err(reject) =
                    gate::check_template(&sender.account_id, &t.name, &t.language, found.as_ref())
                {
                    return Ok(JobRun::Rejected(reject));
                }
                found
            }
            // A session message alone: no template to approve.
            None => None,
        };
        if let Some(rule) = &job.follow_up {
            // Checked now, not 24 h later: a follow-up that could never go out is a mistake
            // in the job, told to its publisher while it can still be fixed.
            let follow_up = self
                .store
                .template(
                    &sender.account_id,
                    &rule.template.name,
                    &rule.template.language,
                )
                .await?;
            if let Err(reject) = gate::check_template(
                &sender.account_id,
                &rule.template.name,
                &rule.template.language,
                follow_up.as_ref(),
            ) {
                return Ok(JobRun::Rejected(reject.for_follow_up()));
            }
        }
        let category = match &template {
            Some(t) if t.category != job.category => {
                // Meta may re-categorise a template; consent and price follow Meta's category.
                warn!(
                    job = %job.id, declared = %job.category, actual = %t.category,
                    "job declares a different template category than Meta; using Meta's"
                );
                t.category
            }
            _ => job.category,
        };
        let campaign = self.store.ensure_campaign(&job.campaign).await?;
        let verdict = gate::job_verdict(&JobFacts {
            now: Utc::now(),
            not_before: job.not_before,
            expires_at: job.expires_at,
            campaign: campaign.state,
            sender: &sender,
            template: template.as_ref(),
        });

        if let Some(p) = &ctl.progress {
            p.total.store(job.key_count() as u64, Ordering::Relaxed);
        }
        let owner = format!("{}-{}", self.instance, uuid::Uuid::new_v4().simple());
        let mut report = JobReport {
            job_id: job.id.to_string(),
            campaign_id: job.campaign.to_string(),
            sender: job.sender.to_string(),
            category: Some(category),
            ..JobReport::default()
        };

        // Recipients skipped while parsing get their outcome whatever the job verdict.
        let parse_skips: Vec<_> = job
            .skipped
            .iter()
            .map(|s| Skip {
                key: &s.key,
                to: s.to.as_str(),
                reason: s.reason,
            })
            .collect();
        let progress = ctl.progress.as_deref();
        self.claimer(self.channel.kind())
            .skip(&job, &owner, category, &parse_skips, &mut report, progress)
            .await?;

        let mut report = match verdict {
            JobVerdict::Defer(reason) => return Ok(JobRun::Deferred(reason)),
            JobVerdict::SkipAll(reason) => {
                for (kind, lane) in lanes(&job, self.channel.kind()) {
                    let all = skip_all(&lane, reason);
                    self.claimer(kind)
                        .skip(&lane, &owner, category, &all, &mut report, progress)
                        .await?;
                }
                report
            }
            JobVerdict::Proceed => {
                self.proceed(Arc::clone(&job), sender, category, owner, report, ctl)
                    .await?
            }
        };
        report.elapsed = started.elapsed();
        Ok(JobRun::Finished(Box::new(report)))
    }

    /// Sends the job's recipients (after giving unknown keys the webhooks cleared another
    /// chance) and sums up what is left to watch.
    async fn proceed(
        &self,
        job: Arc<Job>,
        sender: Sender,
        category: Category,
        owner: String,
        mut report: JobReport,
        ctl: &RunControl,
    ) -> Result<JobReport, EngineError> {
        let portfolio = sender.portfolio_id.clone();
        let limit = sender.tier_limit;
        let before = self.review_unknowns(&job, true).await?;
        report.resent_unknown = before.reopened;
        let mut report = report;
        for (kind, lane) in lanes(&job, self.channel.kind()) {
            let channel = Arc::clone(self.channel_of(kind).expect("checked in run_job"));
            report = self
                .send_all(
                    Lane {
                        job: lane,
                        channel,
                        sender: sender.clone(),
                        category,
                        owner: owner.clone(),
                    },
                    report,
                    ctl,
                )
                .await?;
            if report.stop.is_some() {
                break;
            }
        }
        if job.fallback.is_some() && report.stop.is_none() {
            // Fallbacks the WhatsApp answers made due now (not on WhatsApp, failed) go out
            // before the job ends; deadlines wait for their timer.
            self.fire_fallbacks(ctl).await?;
        }
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
        Ok(report)
    }

    /// Reviews the job's `unknown` keys ([`Store::review_unknowns`]); nothing to do when
    /// resending is off.
    async fn review_unknowns(&self, job: &Job, reopen: bool) -> Result<UnknownReview, EngineError> {
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

    /// Runs the stages over the job's recipients until all are decided or the run stops.
    pub(super) async fn send_all(
        &self,
        lane: Lane,
        report: JobReport,
        ctl: &RunControl,
    ) -> Result<JobReport, EngineError> {
        let Lane {
            job,
            channel,
            sender,
            category,
            owner,
        } = lane;
        let config = &self.config;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        // Two claim batches in the channel keep the marker busy while the next batch is
        // claimed, and bound memory.
        let (work_tx, work_rx) = mpsc::channel::<Item>(config.claim_batch * 2);
        let pacing_key = channel.pacing_key(&job.sender);
        let pacer = self
            .pacers
            .get(&pacing_key, channel.rate_per_sec(sender.rate_per_sec));
        // The marker keeps the queue as deep as it should be (`mark::depth`); the channel only
        // bounds it.
        let base_depth = mark_ahead(pacer.effective_rate(), config.mark_ahead);
        let (marked_tx, marked_rx) = mpsc::channel::<Item>(MAX_DEPTH);
        let (remark_tx, remark_rx) = mpsc::unbounded_channel();
        let run = Arc::new(Run::new(
            RunParts {
                endpoint: channel.endpoint(&job.sender),
                pacer,
                inflight: self.semaphore(pacing_key.as_str()),
                job: Arc::clone(&job),
                sender,
                category,
                channel: channel.kind(),
                owner,
            },
            Outlets {
                events: events_tx,
                retries: retry_tx,
            },
        ));

        let report = Arc::new(AsyncMutex::new(report));
        let recorder = tokio::spawn(
            Recorder {
                store: Arc::clone(&self.store),
                job: Arc::clone(&job),
                owner: run.owner.clone(),
                category,
                rate_card: Arc::clone(&self.rate_card),
                charges: Arc::clone(&run.charges),
                report: Arc::clone(&report),
                progress: ctl.progress.clone(),
                channel: Arc::clone(&channel),
                batch: config.record_batch,
                interval: config.record_interval,
                clock: config.clock.clone(),
                recipient_events: config.recipient_events,
            }
            .run(events_rx),
        );
        let control = tokio::spawn(control(
            Arc::clone(&self.store),
            Arc::clone(&run),
            ctl.shutdown.clone(),
            config.control_poll,
            config.lease,
        ));

        let gate = Gate {
            store: Arc::clone(&self.store),
            channel: Arc::clone(&channel),
            rate_card: Arc::clone(&self.rate_card),
            tier_window: config.tier_window,
            tier_retry_after: config.tier_retry_after,
            clock: config.clock.clone(),
        };
        let marker = Marker {
            store: Arc::clone(&self.store),
            pairs: Arc::clone(&self.pairs),
            inline_limit: config.inline_delay_limit,
            base_depth,
            inflight_limit: config.max_inflight_per_sender,
        };
        let send = Arc::new(SendStage {
            channel: Arc::clone(&channel),
            store: Arc::clone(&self.store),
            timing: config.retry_timing(),
        });
        let claimer = self.claimer(channel.kind());
        let (produced, (), ()) = tokio::join!(
            claimer.produce(
                &gate,
                Arc::clone(&run),
                work_tx,
                Arc::clone(&report),
                ctl.progress.as_deref()
            ),
            marker.run(Arc::clone(&run), work_rx, remark_rx, marked_tx),
            pace(Arc::clone(&run), send, marked_rx, retry_rx, remark_tx),
        );
        control.abort();
        let _ = control.await;
        let stop = run.stop_cause();
        let last_error = run.last_error();

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
}

/// The job split by the channel its recipients go out on first: `main` (WhatsApp) for those
/// who take the default, SMS for those who prefer it. A job all on one channel is not copied.
fn lanes(job: &Arc<Job>, main: ChannelKind) -> Vec<(ChannelKind, Arc<Job>)> {
    let on = |kind: ChannelKind| {
        job.recipients.iter().filter(move |r| {
            let preferred = if r.channel == ChannelKind::Sms {
                ChannelKind::Sms
            } else {
                main
            };
            preferred == kind
        })
    };
    let mut out = Vec::with_capacity(2);
    for kind in [main, ChannelKind::Sms] {
        let n = on(kind).count();
        if n == job.recipients.len() {
            return vec![(kind, Arc::clone(job))];
        }
        if n > 0 && !out.iter().any(|(k, _)| *k == kind) {
            out.push((
                kind,
                Arc::new(Job {
                    recipients: on(kind).cloned().collect(),
                    skipped: Vec::new(),
                    ..(**job).clone()
                }),
            ));
        }
    }
    out
}

/// Every recipient, skipped for the same reason (cancelled campaign, expired job).
fn skip_all(job: &Job, reason: SkipReason) -> Vec<Skip<'_>> {
    job.recipients
        .iter()
        .map(|r| Skip {
            key: &r.key,
            to: r.to.as_str(),
            reason,
        })
        .collect()
}
