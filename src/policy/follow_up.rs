//! Whether a due follow-up goes out (DESIGN §1.5): the first message must have reached the
//! rule's `if` and the customer must not have converted. Decided at firing time, from the
//! ledger as it is then; consent, opt-outs, campaign state, tier, budget and pacing are the
//! gate's, as for any message.

use crate::domain::{ChannelKind, Reached, SkipReason};

/// How far the first message came, as the ledger shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstMessage {
    /// Not known to have been accepted (`unknown`, or no row).
    NotSent,
    /// Accepted; no status since.
    Sent,
    Delivered,
    Read,
    /// Accepted, then a `failed` status (or a failed receipt).
    Failed,
}

impl FirstMessage {
    /// From a ledger row's `state` and `delivery`.
    pub fn from_ledger(state: &str, delivery: Option<&str>) -> Self {
        match delivery {
            Some("read") => Self::Read,
            Some("delivered") => Self::Delivered,
            Some("failed" | "expired") => Self::Failed,
            _ if state == "sent" => Self::Sent,
            _ => Self::NotSent,
        }
    }

    fn reached(self) -> Option<Reached> {
        match self {
            Self::Sent => Some(Reached::Sent),
            Self::Delivered => Some(Reached::Delivered),
            Self::Read => Some(Reached::Read),
            Self::NotSent | Self::Failed => None,
        }
    }
}

/// What is known when a follow-up falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtDue {
    /// The rule's `if`.
    pub needs: Reached,
    /// The rule's `unless: converted`.
    pub unless_converted: bool,
    pub first: FirstMessage,
    /// The channel that carried the first message.
    pub channel: ChannelKind,
    /// A conversion was reported for (campaign, recipient).
    pub converted: bool,
    /// The rule has an SMS version (`sms_text`).
    pub has_sms_version: bool,
}

/// Sends the follow-up, or ends it with the reason it is recorded under.
pub fn decide(at: AtDue) -> Result<(), SkipReason> {
    if at.unless_converted && at.converted {
        return Err(SkipReason::Converted);
    }
    let not_reached = if at.needs == Reached::Read {
        SkipReason::NotRead
    } else {
        SkipReason::NotDelivered
    };
    // SMS has no read receipts: `read` never matches.
    if at.channel == ChannelKind::Sms && at.needs == Reached::Read {
        return Err(SkipReason::NotRead);
    }
    match at.first.reached() {
        Some(level) if level >= at.needs => {}
        _ => return Err(not_reached),
    }
    if at.channel == ChannelKind::Sms && !at.has_sms_version {
        return Err(SkipReason::NoSmsVersion);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(needs: Reached, first: FirstMessage) -> AtDue {
        AtDue {
            needs,
            unless_converted: true,
            first,
            channel: ChannelKind::WhatsApp,
            converted: false,
            has_sms_version: false,
        }
    }

    #[test]
    fn the_first_message_must_have_come_as_far_as_the_rule_asks() {
        use FirstMessage::*;
        let table = [
            (Reached::Read, Read, Ok(())),
            (Reached::Read, Delivered, Err(SkipReason::NotRead)),
            (Reached::Read, Sent, Err(SkipReason::NotRead)),
            (Reached::Read, Failed, Err(SkipReason::NotRead)),
            (Reached::Delivered, Read, Ok(())),
            (Reached::Delivered, Delivered, Ok(())),
            (Reached::Delivered, Sent, Err(SkipReason::NotDelivered)),
            (Reached::Delivered, Failed, Err(SkipReason::NotDelivered)),
            (Reached::Sent, Sent, Ok(())),
            (Reached::Sent, Read, Ok(())),
            (Reached::Sent, NotSent, Err(SkipReason::NotDelivered)),
            (Reached::Sent, Failed, Err(SkipReason::NotDelivered)),
        ];
        for (needs, first, want) in table {
            assert_eq!(decide(at(needs, first)), want, "{needs:?} {first:?}");
        }
    }

    #[test]
    fn a_conversion_stops_it_unless_the_rule_says_none() {
        let mut a = at(Reached::Read, FirstMessage::Read);
        a.converted = true;
        assert_eq!(decide(a), Err(SkipReason::Converted));
        a.unless_converted = false;
        assert_eq!(decide(a), Ok(()));
    }

    #[test]
    fn sms_never_counts_as_read_and_needs_its_own_text() {
        let mut a = at(Reached::Read, FirstMessage::Delivered);
        a.channel = ChannelKind::Sms;
        a.has_sms_version = true;
        assert_eq!(decide(a), Err(SkipReason::NotRead));
        a.needs = Reached::Delivered;
        assert_eq!(decide(a), Ok(()));
        a.has_sms_version = false;
        assert_eq!(decide(a), Err(SkipReason::NoSmsVersion));
    }

    #[test]
    fn ledger_rows_map_to_how_far_the_message_came() {
        assert_eq!(FirstMessage::from_ledger("sent", None), FirstMessage::Sent);
        assert_eq!(
            FirstMessage::from_ledger("sent", Some("read")),
            FirstMessage::Read
        );
        assert_eq!(
            FirstMessage::from_ledger("unknown", Some("delivered")),
            FirstMessage::Delivered
        );
        assert_eq!(
            FirstMessage::from_ledger("unknown", None),
            FirstMessage::NotSent
        );
        assert_eq!(
            FirstMessage::from_ledger("sent", Some("failed")),
            FirstMessage::Failed
        );
    }
}
