//! The record stage: writes outcomes and hand-backs to the ledger in batches (one statement
//! per few hundred keys or per `record_interval`), gives back the budget charge of what was
//! not sent, and keeps the report, progress and cost metrics. Ends when every holder of the
//! run (and so of the event channel) is gone, after a last flush.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Mutex as AsyncMutex, mpsc};

use super::config::{EngineError, Progress};
use super::fallback_timer as fallback;
use super::follow_up_timer as follow_up;
use super::report::JobReport;
use super::run::Event;
use crate::channel::Channel;
use crate::domain::{
    Category, ChannelKind, Clock, EventFacts, EventOptions, IdempotencyKey, Job, NewRecipientEvent,
    Outcome,
};
use crate::policy::cost::{CostTally, RateCard};
use crate::policy::recipient_events;
use crate::store::{OutcomeRecord, Store, StoreError};
use crate::telemetry::metrics;

/// The record stage's dependencies.
pub(super) struct Recorder {
    pub(super) store: Arc<dyn Store>,
    pub(super) job: Arc<Job>,
    pub(super) owner: String,
    pub(super) category: Category,
    pub(super) rate_card: Arc<RateCard>,
    pub(super) charges: Arc<[AtomicU64]>,
    pub(super) report: Arc<AsyncMutex<JobReport>>,
    pub(super) progress: Option<Arc<Progress>>,
    /// The channel the run sends on: its price, and whether outcomes may need a fallback.
    pub(super) channel: Arc<dyn Channel>,
    /// Outcomes written per statement.
    pub(super) batch: usize,
    /// Longest an outcome waits in memory.
    pub(super) interval: Duration,
    /// When follow-ups fall due.
    pub(super) clock: Clock,
    /// Per-recipient events: `Some` writes the outbox rows of each flush with its outcomes.
    pub(super) recipient_events: Option<EventOptions>,
}

/// What has been received and not yet written.
#[derive(Default)]
struct Pending {
    outcomes: Vec<OutcomeRecord>,
    releases: Vec<IdempotencyKey>,
    /// The longest wait a hand-back asked for.
    resume_in: Duration,
    /// Budget to give back.
    refund: u64,
    /// WhatsApp outcomes of a job with a fallback rule, for their timers.
    fallbacks: Vec<(usize, Outcome)>,
    /// First messages of a job with a follow-up rule that went out, for their timers.
    follow_ups: Vec<usize>,
    /// Outbox rows of the outcomes (only with recipient events on).
    events: Vec<NewRecipientEvent>,
    cost: CostTally,
}

impl Recorder {
    pub(super) async fn run(
        self,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) -> Result<(), EngineError> {
        let sent_counter =
            metrics::SendHandles::new(self.job.sender.as_str(), self.channel.kind(), self.category)
                .sent;
        let mut pending = Pending {
            outcomes: Vec::with_capacity(self.batch),
            ..Pending::default()
        };
        let mut tick = tokio::time::interval(self.interval);
        let mut last_flush = Instant::now();
        let mut released_total = 0u64;
        let mut closed = false;
        while !closed {
            tokio::select! {
                ev = events.recv() => match ev {
                    None => closed = true,
                    Some(ev) => {
                        let mut rep = self.report.lock().await;
                        self.apply(ev, &mut rep, &mut pending, &sent_counter);
                        // Take what else is ready under the same lock.
                        while pending.outcomes.len() < self.batch {
                            match events.try_recv() {
                                Ok(ev) => self.apply(ev, &mut rep, &mut pending, &sent_counter),
                                Err(mpsc::error::TryRecvError::Empty) => break,
                                Err(mpsc::error::TryRecvError::Disconnected) => { closed = true; break; }
                            }
                        }
                    }
                },
                _ = tick.tick() => {}
            }
            let due = closed || last_flush.elapsed() >= self.interval;
            if !pending.outcomes.is_empty() && (due || pending.outcomes.len() >= self.batch) {
                if self.job.fallback.is_some() && self.channel.kind() == ChannelKind::WhatsApp {
                    // The fallback's timer before the outcome: a crash in between leaves a
                    // timer that finds the key unknown, never an outcome with no fallback.
                    let now = self.clock.now();
                    write_with_retry(|| {
                        fallback::schedule(&*self.store, &self.job, &pending.fallbacks, now)
                    })
                    .await?;
                    pending.fallbacks.clear();
                }
                if !pending.follow_ups.is_empty() {
                    // Like the fallback's: the timer first, so a crash between the two
                    // leaves a timer that finds its first message unknown, never a sent
                    // message whose follow-up was forgotten.
                    let now = self.clock.now();
                    write_with_retry(|| {
                        follow_up::schedule(
                            &*self.store,
                            &self.job,
                            self.channel.kind(),
                            &pending.follow_ups,
                            now,
                        )
                    })
                    .await?;
                    pending.follow_ups.clear();
                }
                if self.recipient_events.is_some() {
                    write_with_retry(|| {
                        self.store
                            .record_outcomes_with_events(&pending.outcomes, &pending.events)
                    })
                    .await?;
                    pending.events.clear();
                } else {
                    write_with_retry(|| self.store.record_outcomes(&pending.outcomes)).await?;
                }
                pending.outcomes.clear();
                last_flush = Instant::now();
                self.flush_cost(&mut pending.cost).await;
            }
            if !pending.releases.is_empty() && (due || pending.releases.len() >= self.batch) {
                write_with_retry(|| self.store.release(&self.owner, &pending.releases)).await?;
                released_total += pending.releases.len() as u64;
                pending.releases.clear();
            }
            if pending.refund > 0 && due {
                let refund = pending.refund;
                write_with_retry(|| self.store.refund_budget(&self.job.campaign, refund)).await?;
                pending.refund = 0;
            }
        }
        self.flush_cost(&mut pending.cost).await;
        let mut rep = self.report.lock().await;
        rep.remaining += released_total;
        if rep.remaining > 0 {
            let at = Utc::now() + chrono::Duration::from_std(pending.resume_in).unwrap_or_default();
            rep.resume_after = Some(rep.resume_after.map_or(at, |cur| cur.max(at)));
        }
        Ok(())
    }

    fn apply(
        &self,
        ev: Event,
        report: &mut JobReport,
        pending: &mut Pending,
        sent: &::metrics::Counter,
    ) {
        pending.refund += self.take_charge(&ev);
        let progress = self.progress.as_deref();
        match ev {
            Event::Final {
                idx,
                outcome,
                attempts,
                held,
            } => {
                let r = &self.job.recipients[idx];
                if let Outcome::Sent { .. } = outcome {
                    if self.channel.kind() == ChannelKind::Sms {
                        // What the gate priced it at (parts × part price), not rendered again.
                        let micros = self.charges[idx].load(Ordering::Acquire);
                        let market = self.rate_card.market(&r.to);
                        pending
                            .cost
                            .add_priced(self.category, &format!("{market}-sms"), micros);
                    } else {
                        // What the gate priced it at: the window may have made it free or
                        // a session message.
                        let micros = self.charges[idx].load(Ordering::Acquire);
                        if micros > 0 {
                            let market = self.rate_card.market(&r.to);
                            pending.cost.add_priced(self.category, market, micros);
                        } else if self.rate_card.micros(self.category, &r.to) > 0 {
                            pending.cost.free += 1;
                        } else {
                            pending.cost.add(&self.rate_card, self.category, &r.to);
                        }
                    }
                    sent.increment(1);
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
                    metrics::outcome(
                        self.job.sender.as_str(),
                        self.channel.kind(),
                        self.category,
                        &outcome,
                    );
                }
                report.count(&outcome);
                if self.job.fallback.is_some() && self.channel.kind() == ChannelKind::WhatsApp {
                    pending.fallbacks.push((idx, outcome.clone()));
                }
                if self.job.follow_up.is_some() && follow_up::may_follow(&outcome) {
                    pending.follow_ups.push(idx);
                }
                if let Some(options) = self.recipient_events
                    && let Some((state, code)) =
                        recipient_events::on_outcome(r.key.as_str(), &outcome)
                {
                    pending.events.push(NewRecipientEvent::build(
                        EventFacts {
                            message_key: r.key.as_str(),
                            state,
                            campaign: self.job.campaign.as_str(),
                            channel: self.channel.kind(),
                            recipient: r.to.as_str(),
                            code: code.as_deref(),
                            at: self.clock.now(),
                        },
                        options.numbers,
                    ));
                }
                pending.outcomes.push(OutcomeRecord {
                    key: r.key.clone(),
                    outcome,
                    attempts,
                });
                if let Some(p) = progress {
                    p.done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Release { idx, resume_in } => {
                pending.releases.push(self.job.recipients[idx].key.clone());
                pending.resume_in = pending.resume_in.max(resume_in);
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

    /// The budget charge an event gives back: everything but a send that may have been billed
    /// (`sent`, or `unknown`, which may have been accepted) returns its estimated cost.
    fn take_charge(&self, ev: &Event) -> u64 {
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
        self.charges[idx].swap(0, Ordering::AcqRel)
    }

    /// Moves the cost of recently sent messages into the metrics and the report, once per
    /// ledger write rather than once per message.
    async fn flush_cost(&self, cost: &mut CostTally) {
        if cost.by_category_market.is_empty() && cost.unpriced == 0 && cost.free == 0 {
            return;
        }
        let mut rep = self.report.lock().await;
        for ((category, market), (n, micros)) in std::mem::take(&mut cost.by_category_market) {
            metrics::estimated_cost(&self.rate_card.currency, category, &market, micros);
            let e = rep
                .cost
                .by_category_market
                .entry((category, market))
                .or_default();
            e.0 += n;
            e.1 += micros;
        }
        rep.cost.unpriced += std::mem::take(&mut cost.unpriced);
        rep.cost.free += std::mem::take(&mut cost.free);
    }
}

/// Ledger writes of outcomes must not be lost to a short database outage: a sent message
/// whose wamid is dropped would later look `unknown`.
async fn write_with_retry<F, Fut>(write: F) -> Result<(), EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    Ok(crate::store::retrying("ledger write", write).await?)
}
