//! What becomes of a delivery once its job ran: a pure function from the engine's answer to
//! one of five broker actions, tested without a broker. The worker only carries it out.
//!
//! The rule behind every branch: a delivery is acked only when every recipient has a durable
//! state, or when the job's future is durably somewhere else (a confirmed copy in a delay
//! queue or in `{prefix}.dead`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::JobError;
use crate::engine::{JobReport, JobRun, StopCause};
use crate::policy::gate::DeferReason;

/// How long a paused campaign or template holds a job before the engine looks again:
/// operators resume campaigns by hand, so half a minute is prompt enough.
pub const PAUSED_RECHECK: Duration = Duration::from_secs(30);
/// How long an unavailable or stopped sender holds a job: it takes an operator or Meta to
/// fix (token, payment, number status), so checking every few minutes is plenty.
pub const SENDER_RECHECK: Duration = Duration::from_secs(300);

/// The broker action for one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Copy to `{prefix}.dead` with the reason in headers, then ack. Never retried.
    DeadLetter { code: &'static str, reason: String },
    /// Republish the same body to a delay queue (≈ `delay`), then ack.
    Delay {
        delay: Duration,
        /// Metric label: why the job (or its rest) waits.
        label: &'static str,
        reason: String,
    },
    /// Every recipient is final: publish `job.completed`, then ack.
    Complete,
    /// Shutting down mid-job: nack with requeue so another worker takes it over at once.
    Requeue,
}

/// Decides for a job the engine ran (or refused, or held back).
///
/// `held_recheck` is when keys held by another run should be looked at again: that run may
/// finish them, or may have died — then its lease expires and a later run takes them over.
pub fn decide(run: &JobRun, now: DateTime<Utc>, held_recheck: Duration) -> Disposition {
    match run {
        JobRun::Rejected(reason) => Disposition::DeadLetter {
            code: reason.label(),
            reason: reason.to_string(),
        },
        JobRun::Deferred(reason) => Disposition::Delay {
            delay: defer_delay(reason, now),
            label: reason.label(),
            reason: reason.to_string(),
        },
        JobRun::Finished(report) => finished(report, now, held_recheck),
    }
}

fn finished(report: &JobReport, now: DateTime<Utc>, held_recheck: Duration) -> Disposition {
    if report.remaining > 0 {
        if report.stop == Some(StopCause::Shutdown) {
            return Disposition::Requeue;
        }
        let until_resume = report
            .resume_after
            .and_then(|at| (at - now).to_std().ok())
            .unwrap_or_default();
        let (floor, label) = match &report.stop {
            Some(StopCause::CampaignPaused) => (PAUSED_RECHECK, "campaign_paused"),
            Some(StopCause::CampaignFatal { .. }) => (PAUSED_RECHECK, "campaign_fatal"),
            Some(StopCause::SenderStopped { .. }) => (SENDER_RECHECK, "sender_stopped"),
            // Shutdown handled above; without a stop cause the engine handed keys back for a
            // later run (pair-rate waits, tier budget, retries past the inline limit).
            Some(StopCause::Shutdown) | None => (Duration::ZERO, "resume_later"),
        };
        let reason = match &report.stop {
            Some(cause) => format!("{} recipient(s) left: {cause}", report.remaining),
            None => format!("{} recipient(s) left for a later run", report.remaining),
        };
        return Disposition::Delay {
            delay: until_resume.max(floor),
            label,
            reason,
        };
    }
    if report.held_elsewhere > 0 {
        // Acking now would drop the only message that leads back to those keys if their
        // holder dies: look again once its lease could have expired.
        return Disposition::Delay {
            delay: held_recheck,
            label: "held_elsewhere",
            reason: format!(
                "{} recipient(s) are held by another run",
                report.held_elsewhere
            ),
        };
    }
    if let Some(at) = report
        .unknown_recheck_at
        .filter(|_| report.unknown_waiting > 0)
    {
        // The job is the only copy of what those keys should say: keep it until the webhooks
        // have shown whether Meta accepted them (then they are resent once, or stay unknown).
        return Disposition::Delay {
            delay: (at - now).to_std().unwrap_or_default(),
            label: "unknown_review",
            reason: format!(
                "{} recipient(s) are unknown; resent once if the status webhooks show Meta never accepted them",
                report.unknown_waiting
            ),
        };
    }
    Disposition::Complete
}

/// How long a whole-job hold lasts.
pub fn defer_delay(reason: &DeferReason, now: DateTime<Utc>) -> Duration {
    match reason {
        DeferReason::NotBefore(at) => (*at - now).to_std().unwrap_or_default(),
        DeferReason::CampaignPaused | DeferReason::TemplatePaused => PAUSED_RECHECK,
        DeferReason::SenderUnavailable(_) => SENDER_RECHECK,
    }
}

/// Short fixed label of a job that does not parse, for the `x-herald-reason-code` header and
/// the dead-letter metric.
pub fn job_error_label(e: &JobError) -> &'static str {
    match e {
        JobError::TooLarge(_) => "too_large",
        JobError::Json(_) | JobError::NotAnObject => "invalid_json",
        JobError::MissingVersion | JobError::UnsupportedVersion(_) => "unsupported_version",
        JobError::Field { .. } | JobError::TooManyRecipients(_) | JobError::NoRecipients => {
            "invalid_job"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::gate::RejectReason;

    const HELD: Duration = Duration::from_secs(60);

    fn finished_run(r: JobReport) -> JobRun {
        JobRun::Finished(Box::new(r))
    }

    fn report() -> JobReport {
        JobReport {
            job_id: "j".into(),
            campaign_id: "c".into(),
            sender: "1".into(),
            ..JobReport::default()
        }
    }

    #[test]
    fn a_job_with_unknown_keys_waits_for_their_review_before_it_is_acked() {
        let now = Utc::now();
        let mut r = report();
        r.outcomes.insert("sent".into(), 9);
        r.outcomes.insert("unknown".into(), 1);
        r.unknown_waiting = 1;
        r.unknown_recheck_at = Some(now + chrono::Duration::seconds(600));
        match decide(&finished_run(r.clone()), now, HELD) {
            Disposition::Delay { delay, label, .. } => {
                assert_eq!(label, "unknown_review");
                assert_eq!(delay, Duration::from_secs(600));
            }
            other => panic!("{other:?}"),
        }
        // Given up (or resending off): the job is complete with its unknowns listed.
        r.unknown_waiting = 0;
        assert_eq!(decide(&finished_run(r), now, HELD), Disposition::Complete);
    }

    #[test]
    fn rejected_jobs_are_dead_lettered_with_the_reason() {
        let run = JobRun::Rejected(RejectReason::UnknownSender("42".into()));
        match decide(&run, Utc::now(), HELD) {
            Disposition::DeadLetter { code, reason } => {
                assert_eq!(code, "unknown_sender");
                assert!(reason.contains("42"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn held_jobs_wait_as_long_as_their_reason_says() {
        let now = Utc::now();
        let at = now + chrono::Duration::minutes(10);
        let delay_of = |r: DeferReason| match decide(&JobRun::Deferred(r), now, HELD) {
            Disposition::Delay { delay, .. } => delay,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            delay_of(DeferReason::NotBefore(at)),
            Duration::from_secs(600)
        );
        assert_eq!(delay_of(DeferReason::CampaignPaused), PAUSED_RECHECK);
        assert_eq!(delay_of(DeferReason::TemplatePaused), PAUSED_RECHECK);
        assert_eq!(
            delay_of(DeferReason::SenderUnavailable("FLAGGED".into())),
            SENDER_RECHECK
        );
        // A not_before that passed while the job travelled: no wait at all (shortest tier).
        assert_eq!(
            delay_of(DeferReason::NotBefore(now - chrono::Duration::seconds(5))),
            Duration::ZERO
        );
    }

    #[test]
    fn a_finished_job_with_every_key_final_is_complete() {
        let mut r = report();
        r.outcomes.insert("sent".into(), 3);
        assert_eq!(
            decide(&finished_run(r.clone()), Utc::now(), HELD),
            Disposition::Complete
        );
        // Stopped, but nothing was left: still complete (the stop cause goes in the event).
        r.stop = Some(StopCause::CampaignPaused);
        assert_eq!(
            decide(&finished_run(r), Utc::now(), HELD),
            Disposition::Complete
        );
    }

    #[test]
    fn a_shutdown_mid_job_requeues_it() {
        let mut r = report();
        r.remaining = 10;
        r.stop = Some(StopCause::Shutdown);
        assert_eq!(
            decide(&finished_run(r), Utc::now(), HELD),
            Disposition::Requeue
        );
    }

    #[test]
    fn leftovers_wait_for_resume_after_and_at_least_their_stop_cause() {
        let now = Utc::now();
        let mut r = report();
        r.remaining = 4;
        r.resume_after = Some(now + chrono::Duration::seconds(90));
        match decide(&finished_run(r.clone()), now, HELD) {
            Disposition::Delay { delay, label, .. } => {
                assert_eq!(delay, Duration::from_secs(90));
                assert_eq!(label, "resume_later");
            }
            other => panic!("{other:?}"),
        }
        r.resume_after = Some(now);
        r.stop = Some(StopCause::SenderStopped {
            code: 131031,
            message: "locked".into(),
        });
        match decide(&finished_run(r), now, HELD) {
            Disposition::Delay { delay, label, .. } => {
                assert_eq!(delay, SENDER_RECHECK);
                assert_eq!(label, "sender_stopped");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_held_by_another_run_are_looked_at_again_not_acked_away() {
        let mut r = report();
        r.held_elsewhere = 5;
        match decide(&finished_run(r), Utc::now(), HELD) {
            Disposition::Delay { delay, label, .. } => {
                assert_eq!(delay, HELD);
                assert_eq!(label, "held_elsewhere");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_errors_have_fixed_labels() {
        assert_eq!(
            job_error_label(&JobError::Json("eof".into())),
            "invalid_json"
        );
        assert_eq!(
            job_error_label(&JobError::UnsupportedVersion("2".into())),
            "unsupported_version"
        );
        assert_eq!(job_error_label(&JobError::NoRecipients), "invalid_job");
        assert_eq!(job_error_label(&JobError::TooLarge(1)), "too_large");
    }
}
