//! Which message gets the credit for a conversion: the channel that reached the customer, and
//! whether the order came after their follow-up went out. Read from the ledger rows of the
//! customer's main key (`key`, `key#sms`, `key#follow-up`) at the moment the event arrives.

use crate::domain::ChannelKind;

/// The ledger as it stands for one customer's main key when a conversion arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRows<'a> {
    /// The main row's channel (the customer's preferred one).
    pub channel: ChannelKind,
    /// The main row's state: pending, sending, sent, failed, skipped or unknown.
    pub state: &'a str,
    /// Its latest delivery status: delivered, read, failed, expired (or none yet).
    pub delivery: Option<&'a str>,
    /// The state of `key#sms`, the SMS fallback, if it exists.
    pub sms_state: Option<&'a str>,
    /// The state of `key#follow-up`, if it exists.
    pub follow_up_state: Option<&'a str>,
}

/// The credit for one conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribution {
    pub channel: ChannelKind,
    /// The follow-up had gone out when the conversion arrived: it is credited to the follow-up.
    pub after_follow_up: bool,
}

/// The channel is the main row's, unless its WhatsApp message never reached the customer and
/// the SMS fallback went out: then SMS did. A WhatsApp message that was delivered (or read)
/// keeps the credit even if a fallback SMS raced it.
pub fn attribute(rows: &KeyRows<'_>) -> Attribution {
    let reached = rows.state == "sent" && matches!(rows.delivery, Some("delivered" | "read"));
    let channel =
        if rows.channel == ChannelKind::WhatsApp && !reached && rows.sms_state == Some("sent") {
            ChannelKind::Sms
        } else {
            rows.channel
        };
    Attribution {
        channel,
        after_follow_up: rows.follow_up_state == Some("sent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whatsapp(state: &'static str, delivery: Option<&'static str>) -> KeyRows<'static> {
        KeyRows {
            channel: ChannelKind::WhatsApp,
            state,
            delivery,
            sms_state: None,
            follow_up_state: None,
        }
    }

    #[test]
    fn the_main_rows_channel_gets_the_credit() {
        let a = attribute(&whatsapp("sent", Some("read")));
        assert_eq!(a.channel, ChannelKind::WhatsApp);
        assert!(!a.after_follow_up);
        let sms = KeyRows {
            channel: ChannelKind::Sms,
            ..whatsapp("sent", None)
        };
        assert_eq!(attribute(&sms).channel, ChannelKind::Sms);
    }

    #[test]
    fn a_failed_whatsapp_message_with_a_sent_fallback_credits_sms() {
        for (state, delivery) in [
            ("failed", None),
            ("sent", Some("failed")),
            ("sent", None),
            ("skipped", None),
        ] {
            let rows = KeyRows {
                sms_state: Some("sent"),
                ..whatsapp(state, delivery)
            };
            assert_eq!(
                attribute(&rows).channel,
                ChannelKind::Sms,
                "{state} {delivery:?}"
            );
            // A fallback that did not go out credits nothing to SMS.
            let rows = KeyRows {
                sms_state: Some("failed"),
                ..whatsapp(state, delivery)
            };
            assert_eq!(attribute(&rows).channel, ChannelKind::WhatsApp);
        }
        let raced = KeyRows {
            sms_state: Some("sent"),
            ..whatsapp("sent", Some("delivered"))
        };
        assert_eq!(attribute(&raced).channel, ChannelKind::WhatsApp);
    }

    #[test]
    fn a_conversion_after_the_follow_up_went_out_is_credited_to_it() {
        for (state, after) in [("sent", true), ("pending", false), ("skipped", false)] {
            let rows = KeyRows {
                follow_up_state: Some(state),
                ..whatsapp("sent", Some("read"))
            };
            assert_eq!(attribute(&rows).after_follow_up, after, "{state}");
        }
    }
}
