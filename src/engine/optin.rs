//! Opt-in confirmations: a customer who wrote a registered keyword (click-to-chat) gets one
//! session message that names the business and says how to opt out. The webhook schedules a
//! durable timer per inbound message (`optin:<wamid>`, so Meta's redeliveries schedule nothing
//! more) and answers Meta at once; every worker and `herald serve` fires due confirmations as
//! a job of their own through [`Engine::run_job`] — the whole gate (consent just recorded, an
//! opt-out since wins; the window the message opened) and the ledger claim, so a confirmation
//! goes at most once, ever.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::config::{EngineError, RunControl};
use super::job::Engine;
use super::report::JobRun;
use crate::domain::SkipReason;
use crate::domain::job::{SessionMessage, SkippedRecipient};
use crate::domain::{
    CampaignId, Category, ChannelKind, IdempotencyKey, Job, JobId, PhoneNumber, Recipient, SenderId,
};
use crate::store::{NewTimer, Store, StoreResult};

/// The timers' kind.
pub const KIND: &str = "optin_confirmation";
/// The campaign confirmations are recorded under (report, funnel, metrics).
pub const CAMPAIGN: &str = "optin-confirmations";
/// Timers claimed per round.
const BATCH: usize = 500;
/// When a confirmation that cannot go out now is tried again.
const RETRY_IN: Duration = Duration::from_secs(60);

/// The ledger key of the confirmation answering inbound message `wamid`.
pub fn confirmation_key(wamid: &str) -> String {
    format!("optin:{wamid}")
}

/// What a confirmation timer carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The business number the customer wrote to, which answers.
    pub sender: String,
    /// The customer, E.164.
    pub to: String,
    pub keyword: String,
    pub category: Category,
    /// The session message's text.
    pub text: String,
    /// The inbound message it answers.
    pub wamid: String,
}

/// Schedules a confirmation for each opt-in, due now; idempotent per inbound message.
pub async fn schedule_confirmations(
    store: &dyn Store,
    confirmations: &[Confirmation],
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let timers: Vec<(String, serde_json::Value)> = confirmations
        .iter()
        .map(|c| {
            (
                confirmation_key(&c.wamid),
                serde_json::to_value(c).expect("a confirmation serialises"),
            )
        })
        .collect();
    let batch: Vec<NewTimer<'_>> = timers
        .iter()
        .map(|(key, payload)| NewTimer {
            kind: KIND,
            key,
            due: now,
            payload,
            scope: Some(CAMPAIGN),
        })
        .collect();
    store.schedule_timers(&batch).await
}

/// What firing due confirmations did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfirmationRound {
    /// Keys that reached an outcome (sent, skipped, failed, unknown).
    pub settled: u64,
    /// Handed back for later.
    pub later: u64,
}

impl Engine {
    /// Sends the opt-in confirmations due on the engine's clock. Safe from any number of
    /// processes at once: each timer is claimed by one, each key sent at most once.
    pub async fn fire_confirmations(
        &self,
        ctl: &RunControl,
    ) -> Result<ConfirmationRound, EngineError> {
        let now = self.config().clock.now();
        let owner = format!(
            "{}-optin-{}",
            self.instance(),
            uuid::Uuid::new_v4().simple()
        );
        let later = now + chrono::Duration::from_std(RETRY_IN).unwrap_or_default();
        let mut round = ConfirmationRound::default();
        loop {
            if ctl.shutdown.is_cancelled() {
                break;
            }
            let claimed = self
                .store()
                .claim_due_timers_of(KIND, &owner, self.config().lease, now, BATCH)
                .await?;
            if claimed.is_empty() {
                break;
            }
            let n = claimed.len();
            // One job per (business number, category, text): a job has one sender, one
            // category and one session message.
            type Group = (String, Category, String);
            let mut groups: BTreeMap<Group, Vec<(String, Confirmation)>> = BTreeMap::new();
            for timer in claimed {
                match serde_json::from_value::<Confirmation>(timer.payload.clone()) {
                    Ok(c) => groups
                        .entry((c.sender.clone(), c.category, c.text.clone()))
                        .or_default()
                        .push((timer.key, c)),
                    Err(e) => {
                        warn!(key = %timer.key, error = %e, "unreadable opt-in confirmation timer dropped");
                        self.store()
                            .complete_timer(KIND, &timer.key, &owner)
                            .await?;
                    }
                }
            }
            for ((sender, category, text), group) in groups {
                let keys: Vec<String> = group.iter().map(|(k, _)| k.clone()).collect();
                let job = confirmation_job(&sender, category, &text, &group);
                match self.run_job(Arc::new(job), ctl).await? {
                    JobRun::Finished(_) => {}
                    other => {
                        let reason = match &other {
                            JobRun::Deferred(r) => r.to_string(),
                            JobRun::Rejected(r) => r.to_string(),
                            JobRun::Finished(_) => String::new(),
                        };
                        warn!(%reason, "opt-in confirmations cannot go out now; trying again later");
                    }
                }
                let settled = self.settle_timers(KIND, &owner, &keys, later).await?;
                round.settled += settled.len() as u64;
                round.later += (keys.len() - settled.len()) as u64;
            }
            if n < BATCH {
                break;
            }
        }
        if round.settled > 0 {
            info!(
                settled = round.settled,
                later = round.later,
                "opt-in confirmations fired"
            );
        }
        Ok(round)
    }
}

/// The job that sends one group's confirmations: a session message each (the customer just
/// wrote, so the window is open), keyed by the inbound message it answers.
fn confirmation_job(
    sender: &str,
    category: Category,
    text: &str,
    group: &[(String, Confirmation)],
) -> Job {
    let mut recipients = Vec::with_capacity(group.len());
    let mut skipped = Vec::new();
    for (key, c) in group {
        let Ok(to) = PhoneNumber::parse(&c.to) else {
            // Recorded, so its timer settles instead of coming back every minute.
            skipped.push(SkippedRecipient {
                key: IdempotencyKey::from_trusted(key.clone()),
                to: c.to.clone(),
                reason: SkipReason::InvalidNumber,
            });
            continue;
        };
        recipients.push(Recipient {
            key: IdempotencyKey::from_trusted(key.clone()),
            to,
            components: Arc::new(Vec::new()),
            channel: ChannelKind::WhatsApp,
            vars: None,
        });
    }
    Job {
        id: JobId::from_trusted(format!("optin-{}", uuid::Uuid::new_v4().simple())),
        campaign: CampaignId::from_trusted(CAMPAIGN),
        sender: SenderId::from_trusted(sender),
        template: None,
        session: Some(SessionMessage::text(text)),
        category,
        recipients,
        skipped,
        not_before: None,
        expires_at: None,
        sms: None,
        fallback: None,
        follow_up: None,
    }
}
