//! The gate stage: of a batch of claimed recipients, which may be sent now. In order: consent
//! for the message's category (one query per batch; no consent or an opt-out is a final
//! skip), the portfolio's 24-hour tier (over it: handed back to wait for the window to free
//! up), and the campaign's budget (the estimated price is committed before the request; what
//! no longer fits is skipped for good). What passes goes on to the marker.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::config::EngineError;
use super::run::{Event, Item, Run};
use crate::channel::Channel;
use crate::domain::{ChannelKind, Outcome, SkipReason};
use crate::policy::cost::RateCard;
use crate::policy::gate;
use crate::store::Store;
use crate::telemetry::metrics;

/// The gate's dependencies.
pub(super) struct Gate {
    pub(super) store: Arc<dyn Store>,
    pub(super) channel: Arc<dyn Channel>,
    pub(super) rate_card: Arc<RateCard>,
    /// The tier's rolling window (Meta: 24 h).
    pub(super) tier_window: Duration,
    /// When tier-deferred keys should be tried again.
    pub(super) tier_retry_after: Duration,
}

impl Gate {
    /// Decides the fate of the claimed recipients `mine` (indexes into the job); returns the
    /// ones that may be sent, already entered into the run ([`Run::begin`]). The others have
    /// their event with the recorder.
    pub(super) async fn pass(&self, run: &Run, mine: Vec<usize>) -> Result<Vec<Item>, EngineError> {
        let sendable = self.consented(run, mine).await?;
        // The messaging tier counts WhatsApp conversations only.
        let admitted = if self.channel.kind() == ChannelKind::WhatsApp {
            self.within_tier(run, sendable).await?
        } else {
            sendable
        };
        self.within_budget(run, admitted).await
    }

    async fn consented(&self, run: &Run, mine: Vec<usize>) -> Result<Vec<usize>, EngineError> {
        let job = &run.job;
        let phones: Vec<_> = mine.iter().map(|&i| job.recipients[i].to.clone()).collect();
        let consents = self
            .store
            .consent_states(run.category, self.channel.kind(), &phones)
            .await?;
        let mut sendable = Vec::with_capacity(mine.len());
        for (idx, consent) in mine.into_iter().zip(consents) {
            match gate::recipient_verdict(consent) {
                None => sendable.push(idx),
                Some(reason) => run.decide(Event::Final {
                    idx,
                    outcome: Outcome::Skipped { reason },
                    attempts: 0,
                    held: false,
                }),
            }
        }
        Ok(sendable)
    }

    async fn within_tier(
        &self,
        run: &Run,
        sendable: Vec<usize>,
    ) -> Result<Vec<usize>, EngineError> {
        let phones: Vec<_> = sendable
            .iter()
            .map(|&i| run.job.recipients[i].to.clone())
            .collect();
        let allowed = self
            .store
            .reserve_tier(
                &run.sender.portfolio_id,
                run.sender.tier_limit,
                self.tier_window,
                &phones,
            )
            .await?;
        let mut admitted = Vec::with_capacity(sendable.len());
        for (idx, ok) in sendable.into_iter().zip(allowed) {
            if ok {
                admitted.push(idx);
            } else {
                run.decide(Event::Release {
                    idx,
                    resume_in: self.tier_retry_after,
                });
            }
        }
        Ok(admitted)
    }

    async fn within_budget(
        &self,
        run: &Run,
        admitted: Vec<usize>,
    ) -> Result<Vec<Item>, EngineError> {
        let job = &run.job;
        let costs: Vec<u64> = admitted
            .iter()
            .map(|&i| {
                // Only an SMS is priced by its text (its parts); WhatsApp renders nothing.
                let text = match self.channel.kind() {
                    ChannelKind::Sms => job.sms_text(i).unwrap_or_default(),
                    ChannelKind::WhatsApp => String::new(),
                };
                self.channel.price_micros(
                    &self.rate_card,
                    run.category,
                    &job.recipients[i].to,
                    &text,
                )
            })
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
        let mut items = Vec::with_capacity(admitted.len());
        for ((idx, cost), ok) in admitted.into_iter().zip(costs).zip(within) {
            if !ok {
                run.decide(Event::Final {
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
            run.begin();
            items.push(Item::new(idx));
        }
        Ok(items)
    }
}
