//! The gate: may this job, and each of its recipients, be sent now? Plain functions over what
//! the store said, so every rule is tested without a database. Skips are final outcomes with
//! a reason; deferrals hand the work back for later (nothing is lost, nothing is sent early).

use chrono::{DateTime, Utc};

use crate::domain::{CampaignState, ChannelKind, ConsentState, Job, Sender, SkipReason, Template};
use crate::policy::segments;

/// Why a whole job is held back for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeferReason {
    /// `not_before` is in the future.
    NotBefore(DateTime<Utc>),
    CampaignPaused,
    /// The template is paused by Meta for low quality (3 h, then 6 h).
    TemplatePaused,
    /// The number cannot send now (stopped by herald, or not CONNECTED at Meta).
    SenderUnavailable(String),
}

impl DeferReason {
    /// Short fixed label for metrics and headers.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotBefore(_) => "not_before",
            Self::CampaignPaused => "campaign_paused",
            Self::TemplatePaused => "template_paused",
            Self::SenderUnavailable(_) => "sender_unavailable",
        }
    }
}

impl std::fmt::Display for DeferReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotBefore(t) => write!(f, "not before {}", t.to_rfc3339()),
            Self::CampaignPaused => f.write_str("campaign is paused"),
            Self::TemplatePaused => f.write_str("template is paused by Meta"),
            Self::SenderUnavailable(why) => write!(f, "sender cannot send: {why}"),
        }
    }
}

/// Why a job is refused outright (dead-lettered / CLI error): it can never be sent as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("unknown sender {0}: add it with `herald senders add` or `senders sync`")]
    UnknownSender(String),
    #[error(
        "template {name}/{language} is not known for account {account}: run `herald templates sync`"
    )]
    UnknownTemplate {
        account: String,
        name: String,
        language: String,
    },
    #[error("template {name}/{language} is {status}, not APPROVED: nothing was sent")]
    TemplateNotApproved {
        name: String,
        language: String,
        status: String,
    },
    /// A recipient prefers SMS or the job falls back to SMS, and this herald has no SMS
    /// channel: rejected whole, so no one is reached on the wrong channel or not at all.
    #[error(
        "the job needs the SMS channel (a recipient's channel is sms, or `fallback` is set), which this herald cannot send yet: nothing was sent"
    )]
    SmsUnavailable,
    /// The SMS text of one recipient (after its `{{name}}` values) takes more parts than allowed.
    #[error(
        "the SMS text for key {key} takes {parts} parts, more than the {limit} allowed (--sms-max-parts): nothing was sent"
    )]
    SmsTooLong { key: String, parts: u32, limit: u32 },
    /// The follow-up's template is unknown or not approved: the follow-ups could never go
    /// out, so the job is refused before anything is sent.
    #[error("follow_up.template: {0}")]
    FollowUpTemplate(Box<RejectReason>),
}

impl RejectReason {
    /// Short fixed label for metrics and the dead-letter header.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnknownSender(_) => "unknown_sender",
            Self::UnknownTemplate { .. } => "unknown_template",
            Self::TemplateNotApproved { .. } => "template_not_approved",
            Self::SmsUnavailable => "sms_unavailable",
            Self::SmsTooLong { .. } => "sms_too_long",
            Self::FollowUpTemplate(inner) => match **inner {
                Self::UnknownTemplate { .. } => "follow_up_unknown_template",
                _ => "follow_up_template_not_approved",
            },
        }
    }

    /// The same refusal, about the follow-up's template.
    pub fn for_follow_up(self) -> Self {
        Self::FollowUpTemplate(Box::new(self))
    }
}

/// The first recipient who may get the job's SMS version and whose text takes more than
/// `limit` parts.
pub fn check_sms_length(job: &Job, limit: u32) -> Result<(), RejectReason> {
    let Some(sms) = &job.sms else {
        return Ok(());
    };
    for r in &job.recipients {
        if job.fallback.is_none() && r.channel != ChannelKind::Sms {
            continue;
        }
        let parts = segments::count(&sms.render(r.vars.as_deref())).parts;
        if parts > limit {
            return Err(RejectReason::SmsTooLong {
                key: r.key.to_string(),
                parts,
                limit,
            });
        }
    }
    Ok(())
}

/// What to do with a job as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobVerdict {
    /// Go on to the recipients.
    Proceed,
    /// Record every remaining recipient as skipped with this reason.
    SkipAll(SkipReason),
    /// Hold the job back; nothing is recorded.
    Defer(DeferReason),
}

/// Everything the job-level decision needs.
#[derive(Debug, Clone)]
pub struct JobFacts<'a> {
    pub now: DateTime<Utc>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub campaign: CampaignState,
    pub sender: &'a Sender,
    /// `None` for a job with a session message alone.
    pub template: Option<&'a Template>,
}

/// Checks a template before anything is claimed: missing or refused templates reject the job.
pub fn check_template(
    account: &str,
    name: &str,
    language: &str,
    template: Option<&Template>,
) -> Result<(), RejectReason> {
    match template {
        None => Err(RejectReason::UnknownTemplate {
            account: account.to_owned(),
            name: name.to_owned(),
            language: language.to_owned(),
        }),
        Some(t) if t.is_sendable() || t.status == "PAUSED" => Ok(()),
        Some(t) => Err(RejectReason::TemplateNotApproved {
            name: t.name.clone(),
            language: t.language.clone(),
            status: t.status.clone(),
        }),
    }
}

/// Decides for the whole job. Order matters: a cancelled campaign or an expired job is final
/// whatever else holds; holds (pause, schedule) come after.
pub fn job_verdict(f: &JobFacts<'_>) -> JobVerdict {
    if f.campaign == CampaignState::Cancelled {
        return JobVerdict::SkipAll(SkipReason::CampaignCancelled);
    }
    if f.expires_at.is_some_and(|exp| exp <= f.now) {
        return JobVerdict::SkipAll(SkipReason::Expired);
    }
    if f.campaign == CampaignState::Paused {
        return JobVerdict::Defer(DeferReason::CampaignPaused);
    }
    if f.template.is_some_and(|t| t.status == "PAUSED") {
        return JobVerdict::Defer(DeferReason::TemplatePaused);
    }
    if !f.sender.can_send() {
        let why = match &f.sender.status_reason {
            Some(r) => format!("{} ({r})", f.sender.status),
            None => f.sender.status.clone(),
        };
        return JobVerdict::Defer(DeferReason::SenderUnavailable(why));
    }
    if let Some(nb) = f.not_before
        && nb > f.now
    {
        return JobVerdict::Defer(DeferReason::NotBefore(nb));
    }
    JobVerdict::Proceed
}

/// Decides for one recipient from its consent: `None` means send.
pub fn recipient_verdict(consent: ConsentState) -> Option<SkipReason> {
    match consent {
        ConsentState::Granted => None,
        ConsentState::Missing => Some(SkipReason::NoConsent),
        ConsentState::OptedOut => Some(SkipReason::OptedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Category, SenderId};
    use chrono::Duration;

    fn sender(status: &str) -> Sender {
        Sender {
            id: SenderId::parse("1").unwrap(),
            account_id: "waba".into(),
            portfolio_id: "p".into(),
            display_number: "+49 30 1".into(),
            rate_per_sec: 80,
            tier_limit: Some(10_000),
            status: status.into(),
            status_reason: None,
        }
    }

    fn template(status: &str) -> Template {
        Template {
            account_id: "waba".into(),
            name: "flash_sale".into(),
            language: "de".into(),
            category: Category::Marketing,
            status: status.into(),
        }
    }

    fn facts<'a>(s: &'a Sender, t: &'a Template) -> JobFacts<'a> {
        JobFacts {
            now: Utc::now(),
            not_before: None,
            expires_at: None,
            campaign: CampaignState::Active,
            sender: s,
            template: Some(t),
        }
    }

    #[test]
    fn an_approved_template_on_a_connected_number_proceeds() {
        let (s, t) = (sender("CONNECTED"), template("APPROVED"));
        assert_eq!(job_verdict(&facts(&s, &t)), JobVerdict::Proceed);
    }

    #[test]
    fn unapproved_or_unknown_templates_reject_the_job() {
        assert!(check_template("w", "x", "de", None).is_err());
        for status in ["PENDING", "REJECTED", "DISABLED", "DELETED"] {
            let err = check_template("w", "x", "de", Some(&template(status))).unwrap_err();
            assert_eq!(err.label(), "template_not_approved");
        }
        assert!(check_template("w", "x", "de", Some(&template("REINSTATED"))).is_ok());
        // Paused is a hold, not a rejection.
        assert!(check_template("w", "x", "de", Some(&template("PAUSED"))).is_ok());
    }

    #[test]
    fn cancelled_campaigns_skip_and_paused_ones_hold() {
        let (s, t) = (sender("CONNECTED"), template("APPROVED"));
        let mut f = facts(&s, &t);
        f.campaign = CampaignState::Cancelled;
        assert_eq!(
            job_verdict(&f),
            JobVerdict::SkipAll(SkipReason::CampaignCancelled)
        );
        f.campaign = CampaignState::Paused;
        assert_eq!(
            job_verdict(&f),
            JobVerdict::Defer(DeferReason::CampaignPaused)
        );
    }

    #[test]
    fn expired_jobs_skip_everyone_and_early_jobs_wait() {
        let (s, t) = (sender("CONNECTED"), template("APPROVED"));
        let mut f = facts(&s, &t);
        f.expires_at = Some(f.now - Duration::seconds(1));
        assert_eq!(job_verdict(&f), JobVerdict::SkipAll(SkipReason::Expired));
        f.expires_at = None;
        let later = f.now + Duration::hours(1);
        f.not_before = Some(later);
        assert_eq!(
            job_verdict(&f),
            JobVerdict::Defer(DeferReason::NotBefore(later))
        );
    }

    #[test]
    fn stopped_senders_and_paused_templates_hold_the_job() {
        let (s, t) = (sender("STOPPED"), template("APPROVED"));
        assert!(matches!(
            job_verdict(&facts(&s, &t)),
            JobVerdict::Defer(DeferReason::SenderUnavailable(_))
        ));
        let (s, t) = (sender("CONNECTED"), template("PAUSED"));
        assert_eq!(
            job_verdict(&facts(&s, &t)),
            JobVerdict::Defer(DeferReason::TemplatePaused)
        );
    }

    #[test]
    fn consent_decides_each_recipient() {
        assert_eq!(recipient_verdict(ConsentState::Granted), None);
        assert_eq!(
            recipient_verdict(ConsentState::Missing),
            Some(SkipReason::NoConsent)
        );
        assert_eq!(
            recipient_verdict(ConsentState::OptedOut),
            Some(SkipReason::OptedOut)
        );
    }

    fn sms_job(text: &str, fallback: bool) -> Job {
        let mut v = serde_json::json!({
            "version": 1, "job_id": "j", "campaign_id": "c", "sender": "1",
            "template": { "name": "t", "language": "de", "category": "marketing" },
            "recipients": [
                { "to": "+4915112345678", "key": "short", "vars": { "name": "Anna" } },
                { "to": "+4917698765432", "key": "long", "channel": "sms",
                  "vars": { "name": "x".repeat(400) } }
            ],
            "sms": { "from": "ACME", "text": text },
        });
        if fallback {
            v["fallback"] = serde_json::json!({ "when": ["failed"] });
        }
        Job::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn an_sms_text_over_the_part_limit_refuses_the_job_naming_the_key() {
        let job = sms_job("Hi {{name}}", false);
        // 403 GSM-7 septets: 3 parts.
        assert_eq!(check_sms_length(&job, 3), Ok(()));
        let err = check_sms_length(&job, 2).unwrap_err();
        assert_eq!(
            err,
            RejectReason::SmsTooLong {
                key: "long".into(),
                parts: 3,
                limit: 2
            }
        );
        assert_eq!(err.label(), "sms_too_long");
        assert!(!err.to_string().contains("+49"));
    }

    #[test]
    fn only_recipients_who_may_get_the_sms_count() {
        // Anna's text is short; without fallback she never gets the SMS anyway.
        let job = sms_job("{{name}} {{name}}", false);
        assert!(
            check_sms_length(&job, 5)
                .unwrap_err()
                .to_string()
                .contains("key long")
        );
        let job = sms_job("Hi", true);
        assert_eq!(check_sms_length(&job, 1), Ok(()));
    }
}
