//! The claim stage: takes a job's keys in the ledger a batch at a time (`INSERT … ON CONFLICT
//! DO NOTHING`, before any request), sorts out what is not this run's (done, held by another
//! run, found mid-send after a crash), lets the [gate](super::gate) decide the rest, and feeds
//! the sendable recipients to the marker through a bounded channel. Keys a job skips as a whole
//! (parse skips, a cancelled campaign, an expired job) are claimed and recorded here too.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, mpsc};

use super::config::{EngineError, Progress};
use super::gate::Gate;
use super::report::JobReport;
use super::run::{Item, Run};
use crate::domain::{Category, ChannelKind, IdempotencyKey, Job, Outcome, SkipReason};
use crate::store::{Claim, ClaimStatus, OutcomeRecord, Store};
use crate::telemetry::metrics;

/// The claim stage's dependencies.
pub(super) struct Claimer {
    pub(super) store: Arc<dyn Store>,
    /// Keys claimed per ledger round trip.
    pub(super) batch: usize,
    /// How long a claim stays ours without renewal.
    pub(super) lease: Duration,
    /// The channel the claimed keys go out on (the ledger row says which).
    pub(super) channel: ChannelKind,
}

/// A key recorded as skipped without being sent.
pub(super) struct Skip<'a> {
    pub(super) key: &'a IdempotencyKey,
    pub(super) to: &'a str,
    pub(super) reason: SkipReason,
}

impl Claimer {
    fn claims(
        &self,
        job: &Job,
        category: Category,
        keys: &[(&IdempotencyKey, &str)],
    ) -> Vec<Claim> {
        keys.iter()
            .map(|(key, to)| Claim {
                key: (*key).clone(),
                campaign: job.campaign.clone(),
                job: job.id.clone(),
                sender: job.sender.clone(),
                recipient: (*to).to_owned(),
                template: job.message_name().0.to_owned(),
                language: job.message_name().1.to_owned(),
                category,
                channel: self.channel,
            })
            .collect()
    }

    /// Claims `skips` and records each as skipped with its reason; keys another run has (or
    /// had) are only counted.
    pub(super) async fn skip(
        &self,
        job: &Job,
        owner: &str,
        category: Category,
        skips: &[Skip<'_>],
        report: &mut JobReport,
        progress: Option<&Progress>,
    ) -> Result<(), EngineError> {
        for chunk in skips.chunks(self.batch) {
            let keys: Vec<_> = chunk.iter().map(|s| (s.key, s.to)).collect();
            let claims = self.claims(job, category, &keys);
            let statuses = self.store.claim(owner, self.lease, &claims).await?;
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
            // One counter update per reason and batch, not per key (a cancelled campaign
            // skips thousands at once).
            let mut by_reason: Vec<(SkipReason, u64)> = Vec::new();
            for r in &records {
                report.count(&r.outcome);
                if let Outcome::Skipped { reason } = r.outcome {
                    match by_reason.iter_mut().find(|(known, _)| *known == reason) {
                        Some((_, n)) => *n += 1,
                        None => by_reason.push((reason, 1)),
                    }
                }
            }
            for (reason, n) in by_reason {
                metrics::outcomes(
                    job.sender.as_str(),
                    self.channel,
                    category,
                    &Outcome::Skipped { reason },
                    n,
                );
            }
            if let Some(p) = progress {
                p.done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Claims and gates recipients a batch at a time, feeding the sendable ones to `work`.
    /// Stopped before the end, a cancelled campaign skips the unclaimed rest for good;
    /// otherwise it stays for a later run.
    pub(super) async fn produce(
        &self,
        gate: &Gate,
        run: Arc<Run>,
        work: mpsc::Sender<Item>,
        report: Arc<AsyncMutex<JobReport>>,
        progress: Option<&Progress>,
    ) -> Result<(), EngineError> {
        let job = Arc::clone(&run.job);
        let mut next = 0;
        while next < job.recipients.len() && !run.stopped() {
            let chunk = &job.recipients[next..(next + self.batch).min(job.recipients.len())];
            let base = next;
            next += chunk.len();

            let keys: Vec<_> = chunk.iter().map(|r| (&r.key, r.to.as_str())).collect();
            let claims = self.claims(&job, run.category, &keys);
            let statuses = self.store.claim(&run.owner, self.lease, &claims).await?;
            let mut mine = Vec::with_capacity(chunk.len());
            {
                let mut rep = report.lock().await;
                for (i, status) in statuses.into_iter().enumerate() {
                    match status {
                        ClaimStatus::Mine => mine.push(base + i),
                        ClaimStatus::WasInFlight => {
                            rep.count(&Outcome::Unknown);
                            metrics::outcome(
                                job.sender.as_str(),
                                self.channel,
                                run.category,
                                &Outcome::Unknown,
                            );
                        }
                        other => note_not_mine(&mut rep, other),
                    }
                }
            }
            if let Some(p) = progress {
                p.done
                    .fetch_add((chunk.len() - mine.len()) as u64, Ordering::Relaxed);
            }
            if mine.is_empty() {
                continue;
            }
            for item in gate.pass(&run, mine).await? {
                if let Err(mpsc::error::SendError(item)) = work.send(item).await {
                    // The marker ended (stop): the key goes back unsent.
                    run.release(item.idx, Duration::ZERO);
                }
            }
        }
        drop(work);

        if next >= job.recipients.len() {
            return Ok(());
        }
        if run.cancelled() {
            let rest: Vec<_> = job.recipients[next..]
                .iter()
                .map(|r| Skip {
                    key: &r.key,
                    to: r.to.as_str(),
                    reason: SkipReason::CampaignCancelled,
                })
                .collect();
            let mut rep = report.lock().await;
            self.skip(&job, &run.owner, run.category, &rest, &mut rep, progress)
                .await?;
        } else {
            report.lock().await.remaining += (job.recipients.len() - next) as u64;
        }
        Ok(())
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
