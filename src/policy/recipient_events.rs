//! Which per-recipient events (`domain::RecipientState`) a recorded fact produces. Pure: the
//! store asks.
//!
//! Order per key: `sent` < `delivered` < `read`. The ledger keeps the highest delivery status
//! (Meta may post `read` before `delivered`), so a row that moves straight to `read` produces
//! `delivered` and then `read`, and a later `delivered` changes nothing: a CRM always sees
//! sent → delivered → read, each once.

use crate::domain::{MessageRole, Outcome, RecipientState};

/// How a ledger key's accepted message is reported: the campaign's message is `sent`, its SMS
/// version `fallback`, its follow-up `follow_up_sent`.
pub fn accepted(message_key: &str) -> RecipientState {
    match MessageRole::of_key(message_key).0 {
        MessageRole::First => RecipientState::Sent,
        MessageRole::Fallback => RecipientState::Fallback,
        MessageRole::FollowUp => RecipientState::FollowUpSent,
    }
}

/// The event of an outcome the record stage wrote, with its error code: accepted messages
/// and failures; skipped and `unknown` keys produce none (`unknown` ones report `sent` when a
/// status webhook resolves them).
pub fn on_outcome(
    message_key: &str,
    outcome: &Outcome,
) -> Option<(RecipientState, Option<String>)> {
    match outcome {
        Outcome::Sent { .. } => Some((accepted(message_key), None)),
        Outcome::Failed { code } => Some((RecipientState::Failed, Some(code.to_string()))),
        Outcome::Skipped { .. } | Outcome::Unknown => None,
    }
}

fn rank(delivery: Option<&str>) -> u8 {
    match delivery {
        Some("delivered") => 1,
        Some("read") => 2,
        Some("failed" | "expired") => 3,
        _ => 0,
    }
}

/// The events of a status webhook that changed a ledger row: the row's state and delivery
/// before and after. A `sending` or `unknown` key the webhook showed accepted reports its
/// acceptance first.
pub fn on_delivery(
    message_key: &str,
    state_before: &str,
    delivery_before: Option<&str>,
    delivery_after: Option<&str>,
) -> Vec<RecipientState> {
    let mut events = Vec::new();
    if matches!(state_before, "sending" | "unknown") {
        events.push(accepted(message_key));
    }
    let (before, after) = (rank(delivery_before), rank(delivery_after));
    if after > before {
        match after {
            1 => events.push(RecipientState::Delivered),
            2 => {
                if before < 1 {
                    events.push(RecipientState::Delivered);
                }
                events.push(RecipientState::Read);
            }
            3 => events.push(RecipientState::Failed),
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SkipReason;

    #[test]
    fn outcomes_report_acceptance_by_role_and_failures_with_their_code() {
        let sent = Outcome::Sent { wamid: "w".into() };
        assert_eq!(on_outcome("k", &sent), Some((RecipientState::Sent, None)));
        assert_eq!(
            on_outcome("k#sms", &sent),
            Some((RecipientState::Fallback, None))
        );
        assert_eq!(
            on_outcome("k#follow-up", &sent),
            Some((RecipientState::FollowUpSent, None))
        );
        assert_eq!(
            on_outcome("k", &Outcome::Failed { code: 131026 }),
            Some((RecipientState::Failed, Some("131026".into())))
        );
        assert_eq!(on_outcome("k", &Outcome::Unknown), None);
        let skipped = Outcome::Skipped {
            reason: SkipReason::NoConsent,
        };
        assert_eq!(on_outcome("k", &skipped), None);
    }

    #[test]
    fn a_read_before_delivered_reports_delivered_then_read_once() {
        use RecipientState::*;
        assert_eq!(
            on_delivery("k", "sent", None, Some("read")),
            [Delivered, Read]
        );
        assert_eq!(
            on_delivery("k", "sent", Some("delivered"), Some("read")),
            [Read]
        );
        assert!(on_delivery("k", "sent", Some("read"), Some("read")).is_empty());
        assert_eq!(
            on_delivery("k", "sent", None, Some("delivered")),
            [Delivered]
        );
        assert_eq!(
            on_delivery("k", "sent", Some("read"), Some("failed")),
            [Failed]
        );
    }

    #[test]
    fn a_sending_key_resolved_by_a_webhook_reports_its_acceptance_first() {
        use RecipientState::*;
        assert_eq!(
            on_delivery("k", "sending", None, Some("delivered")),
            [Sent, Delivered]
        );
        assert_eq!(on_delivery("k#sms", "unknown", None, None), [Fallback]);
    }
}
