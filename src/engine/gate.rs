//! The gate stage: of a batch of claimed recipients, which may be sent now. In order: consent
//! for the message's category (one query per batch; no consent or an opt-out is a final
//! skip), the customer-service window (WhatsApp: open → the session message, closed → the
//! template, or `window_closed` for a session message alone — decided now, at send time, since
//! a window closes while a job waits), the market (a template of a category the rate card says
//! Meta refuses there is skipped `unsupported_market`), the portfolio's 24-hour tier for
//! templates (over it: handed back to wait for the tier window to free up), and the campaign's
//! budget (the estimated price from the rate card version in force now, window-aware, is
//! committed before the request; what no longer fits is skipped for good, and so is what the
//! card does not price, `unpriced_market`, when the campaign has a budget). What passes goes
//! on to the marker.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::config::EngineError;
use super::run::{Event, Item, Run};
use crate::channel::Channel;
use crate::domain::{ChannelKind, Outcome, SkipReason};
use crate::policy::cost::{RateCard, WhatsAppMessage};
use crate::policy::gate;
use crate::policy::window::{self, Choice, WindowState};
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
    /// Herald's clock, for the customer-service window.
    pub(super) clock: crate::domain::Clock,
}

/// A recipient past consent, with the message chosen for it.
#[derive(Debug, Clone, Copy)]
struct Pick {
    idx: usize,
    session: bool,
    window: WindowState,
}

impl Gate {
    /// Decides the fate of the claimed recipients `mine` (indexes into the job); returns the
    /// ones that may be sent, already entered into the run ([`Run::begin`]). The others have
    /// their event with the recorder.
    pub(super) async fn pass(&self, run: &Run, mine: Vec<usize>) -> Result<Vec<Item>, EngineError> {
        let sendable = self.consented(run, mine).await?;
        if self.channel.kind() != ChannelKind::WhatsApp {
            let picks = sendable
                .into_iter()
                .map(|idx| Pick {
                    idx,
                    session: false,
                    window: WindowState::CLOSED,
                })
                .collect();
            return self.within_budget(run, picks).await;
        }
        let picks = self.windowed(run, sendable).await?;
        let picks = self.supported(run, picks);
        // The messaging tier counts business-initiated (template) conversations only.
        let admitted = self.within_tier(run, picks).await?;
        self.within_budget(run, admitted).await
    }

    /// Chooses each recipient's message from its customer-service window with the sender.
    async fn windowed(&self, run: &Run, sendable: Vec<usize>) -> Result<Vec<Pick>, EngineError> {
        let job = &run.job;
        let phones: Vec<_> = sendable
            .iter()
            .map(|&i| job.recipients[i].to.clone())
            .collect();
        let windows = self.store.service_windows(&job.sender, &phones).await?;
        let now = self.clock.now();
        let mut picks = Vec::with_capacity(sendable.len());
        for (idx, w) in sendable.into_iter().zip(windows) {
            let state = window::state(w.as_ref(), now);
            let session = match window::choose(job.session.is_some(), job.template.is_some(), state)
            {
                Choice::Session => true,
                Choice::Template => false,
                Choice::WindowClosed => {
                    run.decide(Event::Final {
                        idx,
                        outcome: Outcome::Skipped {
                            reason: SkipReason::WindowClosed,
                        },
                        attempts: 0,
                        held: false,
                    });
                    continue;
                }
            };
            picks.push(Pick {
                idx,
                session,
                window: state,
            });
        }
        Ok(picks)
    }

    /// Skips templates to markets where Meta refuses their category (131049 for marketing to
    /// US numbers), before they take tier room or budget. Session messages go anywhere.
    fn supported(&self, run: &Run, picks: Vec<Pick>) -> Vec<Pick> {
        let card = self.rate_card.at(self.clock.now());
        picks
            .into_iter()
            .filter(|p| {
                let refused =
                    !p.session && card.refuses(run.category, &run.job.recipients[p.idx].to);
                if refused {
                    run.decide(Event::Final {
                        idx: p.idx,
                        outcome: Outcome::Skipped {
                            reason: SkipReason::UnsupportedMarket,
                        },
                        attempts: 0,
                        held: false,
                    });
                }
                !refused
            })
            .collect()
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

    async fn within_tier(&self, run: &Run, picks: Vec<Pick>) -> Result<Vec<Pick>, EngineError> {
        // Answers inside the window are not business-initiated: they take no tier room.
        let (sessions, templates): (Vec<Pick>, Vec<Pick>) =
            picks.into_iter().partition(|p| p.session);
        if templates.is_empty() {
            return Ok(sessions);
        }
        let phones: Vec<_> = templates
            .iter()
            .map(|p| run.job.recipients[p.idx].to.clone())
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
        let mut admitted = sessions;
        for (pick, ok) in templates.into_iter().zip(allowed) {
            if ok {
                admitted.push(pick);
            } else {
                run.decide(Event::Release {
                    idx: pick.idx,
                    resume_in: self.tier_retry_after,
                });
            }
        }
        Ok(admitted)
    }

    async fn within_budget(
        &self,
        run: &Run,
        admitted: Vec<Pick>,
    ) -> Result<Vec<Item>, EngineError> {
        let job = &run.job;
        // The card version in force now: a send keeps the price of its time.
        let card = self.rate_card.at(self.clock.now());
        // `None`: the card has no price for the recipient's market and this message.
        let prices: Vec<Option<u64>> = admitted
            .iter()
            .map(|p| {
                let to = &job.recipients[p.idx].to;
                match self.channel.kind() {
                    // WhatsApp: by message kind, category, market and window.
                    ChannelKind::WhatsApp => {
                        let message = if p.session {
                            WhatsAppMessage::Session
                        } else {
                            WhatsAppMessage::Template
                        };
                        card.whatsapp_price(message, run.category, to, p.window)
                    }
                    // SMS: by its text (its parts), where the card prices SMS.
                    ChannelKind::Sms => card.sms_part_micros(to).map(|_| {
                        let text = job.sms_text(p.idx).unwrap_or_default();
                        self.channel.price_micros(card, run.category, to, &text)
                    }),
                }
            })
            .collect();
        let unpriced = prices.iter().any(Option::is_none);
        let costs: Vec<u64> = prices.iter().map(|p| p.unwrap_or(0)).collect();
        // Whether the campaign has a budget comes with the charge: an unpriced send is
        // charged 0 and then skipped if there is one, so it is never sent as free by accident.
        // (Volume tiers: the list price is committed; a per-portfolio monthly count in the
        // store would go here, priced with `RateCard::tier_micros`.)
        let (within, budgeted) = if unpriced || costs.iter().any(|&c| c > 0) {
            let charge = self.store.charge_budget(&job.campaign, &costs).await?;
            if let Some(left) = &charge.left {
                metrics::budget_remaining(job.campaign.as_str(), &left.currency, left.micros);
            }
            (charge.admitted, charge.left.is_some())
        } else {
            (vec![true; admitted.len()], false)
        };
        let mut items = Vec::with_capacity(admitted.len());
        for (((pick, cost), price), ok) in admitted.into_iter().zip(costs).zip(prices).zip(within) {
            let idx = pick.idx;
            if price.is_none() && budgeted {
                run.decide(Event::Final {
                    idx,
                    outcome: Outcome::Skipped {
                        reason: SkipReason::UnpricedMarket,
                    },
                    attempts: 0,
                    held: false,
                });
                continue;
            }
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
            let mut item = Item::new(idx);
            item.session = pick.session;
            items.push(item);
        }
        Ok(items)
    }
}
