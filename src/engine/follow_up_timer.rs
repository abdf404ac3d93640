//! The follow-up's durable timer: what it keeps (the job may be long gone when it fires) and
//! when the record stage sets it — one `follow_up` timer for `key#follow-up` per first
//! message recorded as sent (or maybe sent), due `after` later on the engine's clock. Firing
//! it is [`super::follow_up`]'s.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use chrono::{DateTime, Utc};

use crate::domain::{ChannelKind, Job, Outcome, Reached, TemplateRef};
use crate::store::{NewTimer, Store, StoreResult};
use crate::telemetry::metrics;

/// The timers' kind.
pub const KIND: &str = "follow_up";
/// The follow-up's key suffix: the recipient's key + `#follow-up`.
pub const KEY_SUFFIX: &str = "#follow-up";

/// The follow-up's key for the first message's key `key`.
pub fn follow_up_key(key: &str) -> String {
    format!("{key}{KEY_SUFFIX}")
}

/// Everything a follow-up needs, kept with its timer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FollowUpTimer {
    pub campaign: String,
    /// The first message's job.
    pub job: String,
    pub sender: String,
    /// The first message's key.
    pub key: String,
    pub to: String,
    /// The channel that carried the first message.
    pub channel: ChannelKind,
    #[serde(default)]
    pub vars: Option<Map<String, Value>>,
    /// The rule's `if`.
    pub reached: Reached,
    pub unless_converted: bool,
    pub template: TemplateRef,
    #[serde(default)]
    pub components: Vec<Value>,
    /// The follow-up's SMS version (`sms_text` with the job's `sms.from`).
    #[serde(default)]
    pub sms_from: Option<String>,
    #[serde(default)]
    pub sms_text: Option<String>,
    /// The follow-up's free-form text for a customer whose service window is open then.
    #[serde(default)]
    pub text: Option<String>,
}

/// Sets the follow-up timers of first messages recorded as sent or unknown (`idx` into the
/// job's recipients), due `after` from `now`. One write for the batch.
pub(super) async fn schedule(
    store: &dyn Store,
    job: &Job,
    channel: ChannelKind,
    sent: &[usize],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let Some(rule) = &job.follow_up else {
        return Ok(());
    };
    if sent.is_empty() {
        return Ok(());
    }
    let due = now + chrono::Duration::from_std(rule.after).unwrap_or_default();
    let timers: Vec<(String, Value)> = sent
        .iter()
        .map(|&idx| {
            let r = &job.recipients[idx];
            let payload = FollowUpTimer {
                campaign: job.campaign.to_string(),
                job: job.id.to_string(),
                sender: job.sender.to_string(),
                key: r.key.to_string(),
                to: r.to.as_str().to_owned(),
                channel,
                vars: r.vars.as_deref().cloned(),
                reached: rule.reached,
                unless_converted: rule.unless_converted,
                template: rule.template.clone(),
                components: rule.components.as_ref().clone(),
                sms_from: rule.sms.as_ref().map(|s| s.from.clone()),
                sms_text: rule.sms.as_ref().map(|s| s.text.clone()),
                text: rule.text.clone(),
            };
            let payload = serde_json::to_value(&payload).expect("a follow-up timer serialises");
            (follow_up_key(r.key.as_str()), payload)
        })
        .collect();
    let batch: Vec<NewTimer<'_>> = timers
        .iter()
        .map(|(key, payload)| NewTimer {
            kind: KIND,
            key,
            due,
            payload,
            scope: Some(job.campaign.as_str()),
        })
        .collect();
    let created = store.schedule_timers(&batch).await?;
    metrics::follow_ups("scheduled", "none", created);
    Ok(())
}

/// The first messages of `outcomes` that may get a follow-up: sent, or maybe sent.
pub(super) fn may_follow(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Sent { .. } | Outcome::Unknown)
}

/// Keys of `keys` that are follow-ups.
pub fn is_follow_up_key(key: &str) -> bool {
    key.ends_with(KEY_SUFFIX)
}
