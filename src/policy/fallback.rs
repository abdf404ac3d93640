//! When the SMS version stands in for a WhatsApp message (DESIGN §1.5, `sms.md` §7): at the
//! three moments something is learnt about the WhatsApp message — its send's outcome, a
//! status webhook, the `undelivered_after` deadline — decide whether the SMS goes now, whether
//! to check again at the deadline (a durable timer), or nothing. At most one SMS per recipient,
//! and never once a `delivered`/`read` is recorded: the store makes that decision atomic; this
//! says what it should be.

use chrono::{DateTime, Utc};

use crate::domain::{FallbackRule, FallbackTrigger, Outcome};

/// Meta's "message undeliverable": the number is not on WhatsApp (or can't receive).
pub const NOT_ON_WHATSAPP: i64 = 131026;

/// What the ledger holds about the recipient when deciding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// A `delivered` or `read` status is recorded for the WhatsApp message.
    pub delivered: bool,
    /// The fallback was already decided (sent or scheduled to be): decided once.
    pub fallback_decided: bool,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Send the SMS version now (key `…#sms`), for this reason.
    SendSms(FallbackTrigger),
    /// Look again at this time (the `undelivered_after` deadline).
    CheckAt(DateTime<Utc>),
    /// Nothing to do.
    No,
}

/// Which trigger a final WhatsApp failure with `code` is.
fn failure_trigger(code: Option<i64>) -> FallbackTrigger {
    if code == Some(NOT_ON_WHATSAPP) {
        FallbackTrigger::NotOnWhatsapp
    } else {
        FallbackTrigger::Failed
    }
}

fn send_if(rule: &FallbackRule, seen: Seen, trigger: FallbackTrigger) -> Fallback {
    if seen.fallback_decided || seen.delivered || !rule.on(trigger) {
        Fallback::No
    } else {
        Fallback::SendSms(trigger)
    }
}

/// After the send stage recorded the WhatsApp `outcome` at `at`.
pub fn after_send(
    rule: &FallbackRule,
    outcome: &Outcome,
    at: DateTime<Utc>,
    seen: Seen,
) -> Fallback {
    match outcome {
        Outcome::Failed { code } => send_if(rule, seen, failure_trigger(Some(*code))),
        // Sent, or maybe sent: if nothing says it arrived by the deadline, the SMS goes.
        Outcome::Sent { .. } | Outcome::Unknown => match rule.undelivered_after {
            Some(after) if rule.on(FallbackTrigger::Undelivered) && !seen.fallback_decided => {
                Fallback::CheckAt(at + chrono::Duration::from_std(after).unwrap_or_default())
            }
            _ => Fallback::No,
        },
        // Not sent for a reason of herald's (consent, budget, cancel): no stand-in either.
        Outcome::Skipped { .. } => Fallback::No,
    }
}

/// After a status webhook for the WhatsApp message (`sent`, `delivered`, `read`, `failed`).
pub fn after_status(
    rule: &FallbackRule,
    status: &str,
    error_code: Option<i64>,
    seen: Seen,
) -> Fallback {
    match status {
        "failed" => send_if(rule, seen, failure_trigger(error_code)),
        _ => Fallback::No,
    }
}

/// What the ledger shows about the WhatsApp message when its fallback timer fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// A `delivered` or `read` status is recorded.
    pub delivered: bool,
    /// It failed for good — at send or by a `failed` status — with this code (if any).
    pub failed: Option<Option<i64>>,
    /// The `undelivered_after` deadline has passed.
    pub deadline_passed: bool,
}

/// When a fallback timer fires (at the deadline, or early because a `failed` status came):
/// a delivery wins; a failure sends the SMS if its trigger is asked for; otherwise the
/// deadline decides.
pub fn at_timer(rule: &FallbackRule, seen: Observed) -> Fallback {
    let s = Seen {
        delivered: seen.delivered,
        fallback_decided: false,
    };
    if seen.delivered {
        return Fallback::No;
    }
    if let Some(code) = seen.failed {
        return send_if(rule, s, failure_trigger(code));
    }
    if seen.deadline_passed {
        return at_deadline(rule, s);
    }
    Fallback::No
}

/// At the `undelivered_after` deadline.
pub fn at_deadline(rule: &FallbackRule, seen: Seen) -> Fallback {
    send_if(rule, seen, FallbackTrigger::Undelivered)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::SkipReason;

    fn rule(when: &[FallbackTrigger]) -> FallbackRule {
        FallbackRule {
            when: when.to_vec(),
            undelivered_after: Some(Duration::from_secs(30 * 60)),
        }
    }

    fn all() -> FallbackRule {
        rule(&[
            FallbackTrigger::NotOnWhatsapp,
            FallbackTrigger::Failed,
            FallbackTrigger::Undelivered,
        ])
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .into()
    }

    const FRESH: Seen = Seen {
        delivered: false,
        fallback_decided: false,
    };

    #[test]
    fn a_firing_timer_weighs_delivery_then_failure_then_the_deadline() {
        let seen = |delivered, failed, deadline_passed| Observed {
            delivered,
            failed,
            deadline_passed,
        };
        // Delivered (even late, even after a failure report): never an SMS.
        assert_eq!(at_timer(&all(), seen(true, Some(None), true)), Fallback::No);
        assert_eq!(
            at_timer(&all(), seen(false, Some(Some(NOT_ON_WHATSAPP)), false)),
            Fallback::SendSms(FallbackTrigger::NotOnWhatsapp)
        );
        assert_eq!(
            at_timer(&all(), seen(false, Some(Some(131049)), false)),
            Fallback::SendSms(FallbackTrigger::Failed)
        );
        // A failure the rule does not name waits for the deadline, if it has one.
        let undelivered_only = rule(&[FallbackTrigger::Undelivered]);
        assert_eq!(
            at_timer(&undelivered_only, seen(false, Some(Some(131049)), false)),
            Fallback::No
        );
        assert_eq!(
            at_timer(&all(), seen(false, None, true)),
            Fallback::SendSms(FallbackTrigger::Undelivered)
        );
        assert_eq!(at_timer(&all(), seen(false, None, false)), Fallback::No);
        let no_deadline = rule(&[FallbackTrigger::Failed]);
        assert_eq!(
            at_timer(&no_deadline, seen(false, None, true)),
            Fallback::No
        );
    }

    #[test]
    fn not_on_whatsapp_sends_the_sms_at_once_only_when_asked_for() {
        let failed = Outcome::Failed {
            code: NOT_ON_WHATSAPP,
        };
        assert_eq!(
            after_send(&all(), &failed, now(), FRESH),
            Fallback::SendSms(FallbackTrigger::NotOnWhatsapp)
        );
        // `failed` means the *other* final failures.
        let only_failed = rule(&[FallbackTrigger::Failed]);
        assert_eq!(
            after_send(&only_failed, &failed, now(), FRESH),
            Fallback::No
        );
        assert_eq!(
            after_send(
                &only_failed,
                &Outcome::Failed { code: 131049 },
                now(),
                FRESH
            ),
            Fallback::SendSms(FallbackTrigger::Failed)
        );
    }

    #[test]
    fn a_sent_or_unknown_message_is_checked_at_the_deadline() {
        let deadline = now() + chrono::Duration::minutes(30);
        for outcome in [Outcome::Sent { wamid: "w".into() }, Outcome::Unknown] {
            assert_eq!(
                after_send(&all(), &outcome, now(), FRESH),
                Fallback::CheckAt(deadline)
            );
            let no_deadline = rule(&[FallbackTrigger::Failed]);
            assert_eq!(
                after_send(&no_deadline, &outcome, now(), FRESH),
                Fallback::No
            );
        }
        assert_eq!(
            at_deadline(&all(), FRESH),
            Fallback::SendSms(FallbackTrigger::Undelivered)
        );
    }

    #[test]
    fn a_delivered_message_never_gets_the_sms() {
        let delivered = Seen {
            delivered: true,
            ..FRESH
        };
        assert_eq!(at_deadline(&all(), delivered), Fallback::No);
        assert_eq!(
            after_status(&all(), "failed", Some(NOT_ON_WHATSAPP), delivered),
            Fallback::No
        );
    }

    #[test]
    fn the_fallback_is_decided_once() {
        let decided = Seen {
            fallback_decided: true,
            ..FRESH
        };
        let failed = Outcome::Failed { code: 131049 };
        assert_eq!(after_send(&all(), &failed, now(), decided), Fallback::No);
        assert_eq!(
            after_send(&all(), &Outcome::Unknown, now(), decided),
            Fallback::No
        );
        assert_eq!(after_status(&all(), "failed", None, decided), Fallback::No);
        assert_eq!(at_deadline(&all(), decided), Fallback::No);
    }

    #[test]
    fn a_failed_status_falls_back_like_a_failed_send() {
        assert_eq!(
            after_status(&all(), "failed", Some(NOT_ON_WHATSAPP), FRESH),
            Fallback::SendSms(FallbackTrigger::NotOnWhatsapp)
        );
        assert_eq!(
            after_status(&all(), "failed", Some(131047), FRESH),
            Fallback::SendSms(FallbackTrigger::Failed)
        );
        for status in ["sent", "delivered", "read"] {
            assert_eq!(after_status(&all(), status, None, FRESH), Fallback::No);
        }
    }

    #[test]
    fn herald_s_own_skips_have_no_stand_in() {
        let skipped = Outcome::Skipped {
            reason: SkipReason::NoConsent,
        };
        assert_eq!(after_send(&all(), &skipped, now(), FRESH), Fallback::No);
        assert_eq!(at_deadline(&FallbackRule::default(), FRESH), Fallback::No);
    }
}
