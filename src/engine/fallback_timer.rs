//! The fallback's durable timer: what it keeps (the job may be long gone when it fires) and
//! when the record stage sets it. When a WhatsApp outcome of a job with `fallback` is
//! recorded, a timer `sms_fallback` for `key#sms` is set first: due now when the send itself
//! failed with a trigger the job names, at the `undelivered_after` deadline after a send, or
//! far ahead when only a later `failed` status could trigger it (the webhook then brings it
//! forward). Firing it is [`super::fallback`]'s.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{Category, FallbackTrigger, Job, Outcome, TemplateRef};
use crate::policy::fallback::{self as decide, Fallback};
use crate::store::{NewTimer, Store, StoreResult};
use crate::telemetry::metrics;

/// The timers' kind.
pub const KIND: &str = "sms_fallback";
/// The SMS version's key suffix: the recipient's key + `#sms`.
pub const SMS_KEY_SUFFIX: &str = "#sms";
/// How long a fallback waits for a `failed` status when the job has no deadline of its own:
/// Meta keeps trying to deliver for up to 30 days, but a failure is reported within days.
const FAILED_STATUS_WATCH: Duration = Duration::from_secs(7 * 86_400);

/// Everything the fallback needs, kept with its timer: the job may be long gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FallbackTimer {
    pub campaign: String,
    pub job: String,
    pub sender: String,
    /// The WhatsApp message's key.
    pub key: String,
    pub to: String,
    /// The first job's template (`None`: it had a session message alone).
    #[serde(default)]
    pub template: Option<TemplateRef>,
    /// The first job's consent category (absent in timers written before session messages:
    /// then the template's).
    #[serde(default)]
    pub category: Option<Category>,
    pub sms_from: String,
    pub sms_text: String,
    #[serde(default)]
    pub vars: Option<Map<String, Value>>,
    pub when: Vec<FallbackTrigger>,
    /// The `undelivered_after` deadline, when the job has one.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
}

impl FallbackTimer {
    /// The first job's consent category.
    pub fn category(&self) -> Category {
        self.category
            .or(self.template.as_ref().map(|t| t.category))
            .unwrap_or(Category::Marketing)
    }
}

/// The SMS version's key for the WhatsApp key `key`.
pub fn sms_key(key: &str) -> String {
    format!("{key}{SMS_KEY_SUFFIX}")
}

/// Sets the fallback timers of recorded WhatsApp outcomes (`idx` into the job's recipients).
pub(super) async fn schedule(
    store: &dyn Store,
    job: &Job,
    outcomes: &[(usize, Outcome)],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let (Some(rule), Some(sms)) = (&job.fallback, &job.sms) else {
        return Ok(());
    };
    // (key, due, payload) of every timer, then one write for the batch.
    let mut timers: Vec<(String, DateTime<Utc>, Value)> = Vec::with_capacity(outcomes.len());
    for (idx, outcome) in outcomes {
        let r = &job.recipients[*idx];
        let deadline = rule
            .undelivered_after
            .filter(|_| rule.on(FallbackTrigger::Undelivered))
            .map(|d| now + chrono::Duration::from_std(d).unwrap_or_default());
        let (due, trigger) = match decide::after_send(rule, outcome, now, Default::default()) {
            Fallback::SendSms(trigger) => (now, Some(trigger)),
            Fallback::CheckAt(at) => (at, None),
            Fallback::No => match outcome {
                // Sent (or maybe): only a later `failed` status can trigger it.
                Outcome::Sent { .. } | Outcome::Unknown
                    if rule.on(FallbackTrigger::Failed)
                        || rule.on(FallbackTrigger::NotOnWhatsapp) =>
                {
                    let watch = chrono::Duration::from_std(FAILED_STATUS_WATCH).unwrap_or_default();
                    (now + watch, None)
                }
                _ => continue,
            },
        };
        let payload = FallbackTimer {
            campaign: job.campaign.to_string(),
            job: job.id.to_string(),
            sender: job.sender.to_string(),
            key: r.key.to_string(),
            to: r.to.as_str().to_owned(),
            template: job.template.clone(),
            category: Some(job.category),
            sms_from: sms.from.clone(),
            sms_text: sms.text.clone(),
            vars: r.vars.as_deref().cloned(),
            when: rule.when.clone(),
            deadline,
        };
        let payload = serde_json::to_value(&payload).expect("a fallback timer serialises");
        timers.push((sms_key(r.key.as_str()), due, payload));
        if let Some(t) = trigger {
            metrics::fallback(t.as_str(), "due", 1);
        }
    }
    let batch: Vec<NewTimer<'_>> = timers
        .iter()
        .map(|(key, due, payload)| NewTimer {
            kind: KIND,
            key,
            due: *due,
            payload,
            scope: Some(job.campaign.as_str()),
        })
        .collect();
    store.schedule_timers(&batch).await?;
    Ok(())
}
