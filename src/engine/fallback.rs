//! WhatsApp → SMS fallback on durable timers (DESIGN §1.5, `sms.md` §7), set by the record
//! stage ([`super::fallback_timer`]). Whoever fires one — the run that set it, any worker —
//! reads the WhatsApp row as it is then ([`policy::fallback::at_timer`]) and sends the SMS
//! version as its own key `key#sms` through the SMS lane: the gate (SMS consent, budget,
//! pacing per route) and the ledger claim, which makes it at most once however often a timer
//! is fired.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::config::{EngineError, RunControl};
use super::fallback_timer::{FallbackTimer, KIND};
use super::job::{Engine, Lane};
use super::report::JobReport;
use crate::domain::CampaignState;
use crate::domain::{
    CampaignId, ChannelKind, DueTimer, FallbackRule, FallbackTrigger, IdempotencyKey, Job, JobId,
    PhoneNumber, Recipient, SenderId, SmsVersion,
};
use crate::policy::fallback::{self as decide, Fallback, Observed};
use crate::telemetry::metrics;

/// Timers claimed per round.
const BATCH: usize = 256;
/// When a fallback that could not go out now (route down, campaign paused) is tried again.
const RETRY_IN: Duration = Duration::from_secs(60);

/// What firing due fallbacks did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FallbackRound {
    /// SMS versions handed to the SMS lane (the ledger has their outcome).
    pub sent: u64,
    /// Timers that ended without an SMS (delivered first, trigger not asked for, cancelled).
    pub dropped: u64,
    /// Timers handed back for later (route down, campaign paused, deadline not reached).
    pub later: u64,
}

/// A claimed timer and what it says.
struct Due {
    timer: DueTimer,
    fallback: FallbackTimer,
    trigger: FallbackTrigger,
}

impl Engine {
    /// Fires the fallback timers that are due: claims them (so no two processes fire the
    /// same one), decides each against the WhatsApp row, and sends the SMS versions through
    /// the SMS lane, grouped per job. Safe to call from any number of processes at once.
    pub async fn fire_fallbacks(&self, ctl: &RunControl) -> Result<FallbackRound, EngineError> {
        self.fire_fallbacks_at(self.config().clock.now(), ctl).await
    }

    /// [`Engine::fire_fallbacks`] as if the time were `now`: tests and replays move the clock
    /// (a deadline 30 minutes ahead) without waiting for it.
    pub async fn fire_fallbacks_at(
        &self,
        now: DateTime<Utc>,
        ctl: &RunControl,
    ) -> Result<FallbackRound, EngineError> {
        let mut round = FallbackRound::default();
        let Some(sms) = self.channel_of(ChannelKind::Sms).cloned() else {
            return Ok(round);
        };
        let owner = format!(
            "{}-fallback-{}",
            self.instance(),
            uuid::Uuid::new_v4().simple()
        );
        loop {
            if ctl.shutdown.is_cancelled() {
                break;
            }
            let claimed = self
                .store()
                // The ledger's lease: a dead process's timers move on as fast as its keys. A
                // timer taken over while its SMS is still going out finds the key held
                // elsewhere and is handed back, never sent twice.
                .claim_due_timers_of(KIND, &owner, self.config().lease, now, BATCH)
                .await?;
            if claimed.is_empty() {
                break;
            }
            let n = claimed.len();
            let mut groups: BTreeMap<(String, String), Vec<Due>> = BTreeMap::new();
            for timer in claimed {
                if let Some(due) = self.sort_out(&owner, timer, now, &mut round).await? {
                    groups
                        .entry((due.fallback.campaign.clone(), due.fallback.job.clone()))
                        .or_default()
                        .push(due);
                }
            }
            for (_, group) in groups {
                self.send_group(&owner, &sms, group, now, ctl, &mut round)
                    .await?;
            }
            if n < BATCH {
                break;
            }
        }
        if round.sent > 0 {
            info!(
                sent = round.sent,
                dropped = round.dropped,
                later = round.later,
                "WhatsApp → SMS fallbacks fired"
            );
        }
        Ok(round)
    }

    /// Decides one claimed timer; returns it when its SMS should go now.
    async fn sort_out(
        &self,
        owner: &str,
        timer: DueTimer,
        now: DateTime<Utc>,
        round: &mut FallbackRound,
    ) -> Result<Option<Due>, EngineError> {
        let store = self.store();
        let fallback: FallbackTimer = match serde_json::from_value(timer.payload.clone()) {
            Ok(f) => f,
            Err(e) => {
                warn!(key = %timer.key, error = %e, "unreadable fallback timer dropped");
                store.complete_timer(KIND, &timer.key, owner).await?;
                round.dropped += 1;
                return Ok(None);
            }
        };
        let row = store
            .ledger_entry(&IdempotencyKey::from_trusted(fallback.key.clone()))
            .await?;
        let observed = Observed {
            delivered: row
                .as_ref()
                .is_some_and(|r| matches!(r.delivery.as_deref(), Some("delivered" | "read"))),
            failed: row.as_ref().and_then(|r| {
                if r.state == "failed" {
                    Some(r.reason.as_deref().and_then(|c| c.parse().ok()))
                } else if r.delivery.as_deref() == Some("failed") {
                    Some(r.delivery_error.as_deref().and_then(|c| c.parse().ok()))
                } else {
                    None
                }
            }),
            deadline_passed: fallback.deadline.is_some_and(|d| d <= now),
        };
        let rule = FallbackRule {
            when: fallback.when.clone(),
            undelivered_after: None,
        };
        match decide::at_timer(&rule, observed) {
            Fallback::SendSms(trigger) => Ok(Some(Due {
                timer,
                fallback,
                trigger,
            })),
            _ => {
                match fallback
                    .deadline
                    .filter(|d| *d > now && !observed.delivered)
                {
                    // Brought forward by a `failed` status the rule does not name: the
                    // deadline still stands.
                    Some(deadline) => {
                        store
                            .release_timer(KIND, &timer.key, owner, Some(deadline))
                            .await?;
                        round.later += 1;
                    }
                    None => {
                        store.complete_timer(KIND, &timer.key, owner).await?;
                        let why = if observed.delivered {
                            "delivered_first"
                        } else {
                            "not_triggered"
                        };
                        metrics::fallback("any", why, 1);
                        round.dropped += 1;
                    }
                }
                Ok(None)
            }
        }
    }

    /// Sends one job's due SMS versions through the SMS lane.
    async fn send_group(
        &self,
        owner: &str,
        sms: &Arc<dyn crate::channel::Channel>,
        group: Vec<Due>,
        now: DateTime<Utc>,
        ctl: &RunControl,
        round: &mut FallbackRound,
    ) -> Result<(), EngineError> {
        let store = self.store();
        let first = &group[0].fallback;
        let later = now + chrono::Duration::from_std(RETRY_IN).unwrap_or_default();
        let campaign = CampaignId::from_trusted(first.campaign.clone());
        let state = store.campaign(&campaign).await?.map(|c| c.state);
        let sender = store
            .sender(&SenderId::from_trusted(first.sender.clone()))
            .await?;
        let (Some(sender), Some(state)) = (sender, state) else {
            for due in &group {
                store.complete_timer(KIND, &due.timer.key, owner).await?;
                round.dropped += 1;
            }
            return Ok(());
        };
        match state {
            CampaignState::Cancelled => {
                for due in &group {
                    store.complete_timer(KIND, &due.timer.key, owner).await?;
                    metrics::fallback(due.trigger.as_str(), "cancelled", 1);
                    round.dropped += 1;
                }
                return Ok(());
            }
            CampaignState::Paused => {
                for due in &group {
                    store
                        .release_timer(KIND, &due.timer.key, owner, Some(later))
                        .await?;
                    round.later += 1;
                }
                return Ok(());
            }
            _ => {}
        }
        let mut recipients = Vec::with_capacity(group.len());
        for due in &group {
            let Ok(to) = PhoneNumber::parse(&due.fallback.to) else {
                continue;
            };
            recipients.push(Recipient {
                key: IdempotencyKey::from_trusted(due.timer.key.clone()),
                to,
                components: Arc::new(Vec::new()),
                channel: ChannelKind::Sms,
                vars: due.fallback.vars.clone().map(Arc::new),
            });
        }
        let job = Arc::new(Job {
            id: JobId::from_trusted(first.job.clone()),
            campaign,
            sender: SenderId::from_trusted(first.sender.clone()),
            template: first.template.clone(),
            session: None,
            category: first.category(),
            recipients,
            skipped: Vec::new(),
            not_before: None,
            expires_at: None,
            sms: Some(SmsVersion {
                from: first.sms_from.clone(),
                text: first.sms_text.clone(),
                placeholders: Vec::new(),
            }),
            fallback: None,
            follow_up: None,
        });
        let run_owner = format!("{owner}-{}", uuid::Uuid::new_v4().simple());
        let category = first.category();
        let report = JobReport {
            job_id: first.job.clone(),
            campaign_id: first.campaign.clone(),
            sender: first.sender.clone(),
            category: Some(category),
            ..JobReport::default()
        };
        let lane = Lane {
            job,
            channel: Arc::clone(sms),
            sender,
            category,
            owner: run_owner,
        };
        self.send_all(lane, report, ctl).await?;
        let keys: Vec<String> = group.iter().map(|d| d.timer.key.clone()).collect();
        let settled = self.settle_timers(KIND, owner, &keys, later).await?;
        for due in &group {
            if settled.contains(&due.timer.key) {
                metrics::fallback(due.trigger.as_str(), "sent", 1);
                round.sent += 1;
            } else {
                round.later += 1;
            }
        }
        Ok(())
    }
}
