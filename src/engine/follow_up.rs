//! Follow-ups on durable timers (DESIGN §1.5 `follow_up`). When the record stage records a
//! first message as sent (or maybe sent), it sets a timer `follow_up` for `key#follow-up`
//! ([`super::follow_up_timer`]),
//! due `after` later on the engine's clock, keeping what the follow-up needs (the job may be
//! long gone). Whoever fires it — any worker, `herald serve`, `herald follow-ups run` —
//! decides against the ledger and the reported conversions as they are then
//! ([`policy::follow_up::decide`]) and runs the follow-ups of one job as a job of their own
//! through [`Engine::run_job`]: the whole gate again (consent per channel and category,
//! opt-outs since, campaign state, tier, budget, pacing) and the ledger claim, which makes
//! `key#follow-up` at most once, ever. Those that should not go out get their outcome too:
//! `skipped` with the reason (`converted`, `not_read`, …).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::config::{EngineError, RunControl};
use super::follow_up_timer::{FollowUpTimer, KEY_SUFFIX, KIND};
use super::job::Engine;
use super::report::JobRun;
use crate::domain::job::{SessionMessage, SkippedRecipient};
use crate::domain::{
    CampaignId, CampaignState, DueTimer, IdempotencyKey, Job, JobId, PhoneNumber, Recipient,
    SenderId, SkipReason, SmsVersion,
};
use crate::policy::follow_up::{self as decide, AtDue, FirstMessage};
use crate::telemetry::metrics;

/// Timers claimed per round.
const BATCH: usize = 1000;
/// When a follow-up that cannot go out now (campaign paused, template not approved, no
/// SMS route) is tried again.
const RETRY_IN: Duration = Duration::from_secs(60);

/// What firing due follow-ups did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowUpRound {
    /// Follow-ups sent (accepted by the API; `unknown` ones are counted in `outcomes`).
    pub sent: u64,
    /// Follow-ups that ended without a message: the reason they were recorded under.
    pub skipped: u64,
    /// Handed back for later (campaign paused, template not approved, route down).
    pub later: u64,
    /// Every final outcome written, as the report labels them (`sent`,
    /// `skipped:converted`, `failed:131026`, …).
    pub outcomes: BTreeMap<String, u64>,
}

/// A claimed timer and what it says.
struct Due {
    timer: DueTimer,
    follow_up: FollowUpTimer,
}

impl Engine {
    /// Fires the follow-ups due on the engine's clock. Safe to call from any number of
    /// processes at once: each timer is claimed by one.
    pub async fn fire_follow_ups(&self, ctl: &RunControl) -> Result<FollowUpRound, EngineError> {
        self.fire_follow_ups_at(self.config().clock.now(), ctl)
            .await
    }

    /// [`Engine::fire_follow_ups`] as if the time were `now`.
    pub async fn fire_follow_ups_at(
        &self,
        now: DateTime<Utc>,
        ctl: &RunControl,
    ) -> Result<FollowUpRound, EngineError> {
        let mut round = FollowUpRound::default();
        let owner = format!(
            "{}-follow-up-{}",
            self.instance(),
            uuid::Uuid::new_v4().simple()
        );
        loop {
            if ctl.shutdown.is_cancelled() {
                break;
            }
            let claimed = self
                .store()
                // The ledger's lease: a dead process's timers move on as fast as its keys.
                .claim_due_timers_of(KIND, &owner, self.config().lease, now, BATCH)
                .await?;
            if claimed.is_empty() {
                break;
            }
            let n = claimed.len();
            let mut groups: BTreeMap<(String, String), Vec<Due>> = BTreeMap::new();
            for timer in claimed {
                match serde_json::from_value::<FollowUpTimer>(timer.payload.clone()) {
                    Ok(follow_up) => groups
                        .entry((follow_up.campaign.clone(), follow_up.job.clone()))
                        .or_default()
                        .push(Due { timer, follow_up }),
                    Err(e) => {
                        warn!(key = %timer.key, error = %e, "unreadable follow-up timer dropped");
                        self.store()
                            .complete_timer(KIND, &timer.key, &owner)
                            .await?;
                    }
                }
            }
            for (_, group) in groups {
                self.fire_group(&owner, group, now, ctl, &mut round).await?;
            }
            if n < BATCH {
                break;
            }
        }
        if round.sent + round.skipped > 0 {
            info!(
                sent = round.sent,
                skipped = round.skipped,
                later = round.later,
                "follow-ups fired"
            );
        }
        Ok(round)
    }

    /// Decides and sends the due follow-ups of one first job.
    async fn fire_group(
        &self,
        owner: &str,
        group: Vec<Due>,
        now: DateTime<Utc>,
        ctl: &RunControl,
        round: &mut FollowUpRound,
    ) -> Result<(), EngineError> {
        let store = self.store();
        let first = &group[0].follow_up;
        let campaign = CampaignId::from_trusted(first.campaign.clone());
        let later = now + chrono::Duration::from_std(RETRY_IN).unwrap_or_default();
        if let Some(c) = store.campaign(&campaign).await?
            && c.state == CampaignState::Paused
        {
            // Decided on resume, with what is known then.
            self.hand_back(owner, &group, later, round).await?;
            return Ok(());
        }
        let keys: Vec<String> = group.iter().map(|d| d.follow_up.key.clone()).collect();
        let converted = store.converted_keys(&campaign, &keys).await?;
        // The first messages' rows in a few statements, not one read per key.
        let first_keys: Vec<IdempotencyKey> = keys
            .iter()
            .map(|k| IdempotencyKey::from_trusted(k.clone()))
            .collect();
        let firsts: HashMap<String, FirstMessage> = store
            .ledger_entries(&first_keys)
            .await?
            .into_iter()
            .map(|row| {
                let first = FirstMessage::from_ledger(&row.state, row.delivery.as_deref());
                (row.key.as_str().to_owned(), first)
            })
            .collect();
        let mut recipients = Vec::with_capacity(group.len());
        let mut skipped = Vec::new();
        for due in &group {
            let f = &due.follow_up;
            let key = IdempotencyKey::from_trusted(due.timer.key.clone());
            let first_message = firsts.get(&f.key).copied().unwrap_or(FirstMessage::NotSent);
            let verdict = decide::decide(AtDue {
                needs: f.reached,
                unless_converted: f.unless_converted,
                first: first_message,
                channel: f.channel,
                converted: converted.contains(&f.key),
                has_sms_version: f.sms_text.is_some(),
            });
            let to = PhoneNumber::parse(&f.to);
            match (verdict, to) {
                (Ok(()), Ok(to)) => recipients.push(Recipient {
                    key,
                    to,
                    components: Arc::new(f.components.clone()),
                    channel: f.channel,
                    vars: f.vars.clone().map(Arc::new),
                }),
                (Err(reason), _) => skipped.push(SkippedRecipient {
                    key,
                    to: f.to.clone(),
                    reason,
                }),
                (Ok(()), Err(_)) => skipped.push(SkippedRecipient {
                    key,
                    to: f.to.clone(),
                    reason: SkipReason::InvalidNumber,
                }),
            }
        }
        let sms = match (&first.sms_from, &first.sms_text) {
            (Some(from), Some(text)) => Some(SmsVersion {
                from: from.clone(),
                text: text.clone(),
                placeholders: Vec::new(),
            }),
            _ => None,
        };
        let job = Arc::new(Job {
            // A job of its own: reviewing the first job's unknown keys is that job's work.
            id: JobId::from_trusted(format!("{}{KEY_SUFFIX}", first.job)),
            campaign,
            sender: SenderId::from_trusted(first.sender.clone()),
            template: Some(first.template.clone()),
            // Inside an open window the follow-up's text goes instead: it costs less.
            session: first.text.as_deref().map(SessionMessage::text),
            category: first.template.category,
            recipients,
            skipped,
            not_before: None,
            expires_at: None,
            sms,
            fallback: None,
            follow_up: None,
        });
        let run = self.run_job(Arc::clone(&job), ctl).await?;
        let report = match run {
            JobRun::Finished(report) => report,
            other => {
                // Paused since, template no longer approved, no SMS route: not now. The
                // skips it already recorded are final; the rest wait.
                let reason = match &other {
                    JobRun::Deferred(r) => r.to_string(),
                    JobRun::Rejected(r) => r.to_string(),
                    JobRun::Finished(_) => String::new(),
                };
                warn!(job = %job.id, %reason, "follow-ups cannot go out now; trying again later");
                self.settle(owner, &group, later, round).await?;
                return Ok(());
            }
        };
        for (label, n) in &report.outcomes {
            *round.outcomes.entry(label.clone()).or_default() += n;
            let (outcome, reason) = label.split_once(':').unwrap_or((label, "none"));
            let reason = match outcome {
                "skipped" => reason
                    .parse::<SkipReason>()
                    .map_or("other", SkipReason::as_str),
                _ => "none",
            };
            let outcome = match outcome {
                "sent" => "sent",
                "failed" => "failed",
                "skipped" => "skipped",
                _ => "unknown",
            };
            metrics::follow_ups(outcome, reason, *n);
        }
        round.sent += report.total("sent");
        round.skipped += report.total("skipped");
        self.settle(owner, &group, later, round).await
    }

    /// Completes the timers whose follow-up has its outcome; hands the others back.
    async fn settle(
        &self,
        owner: &str,
        group: &[Due],
        later: DateTime<Utc>,
        round: &mut FollowUpRound,
    ) -> Result<(), EngineError> {
        let keys: Vec<String> = group.iter().map(|d| d.timer.key.clone()).collect();
        let settled = self.settle_timers(KIND, owner, &keys, later).await?;
        round.later += (keys.len() - settled.len()) as u64;
        Ok(())
    }

    async fn hand_back(
        &self,
        owner: &str,
        group: &[Due],
        later: DateTime<Utc>,
        round: &mut FollowUpRound,
    ) -> Result<(), EngineError> {
        for due in group {
            self.store()
                .release_timer(KIND, &due.timer.key, owner, Some(later))
                .await?;
            round.later += 1;
        }
        Ok(())
    }
}
