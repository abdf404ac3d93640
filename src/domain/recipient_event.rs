//! Per-recipient events for CRMs (`HERALD_RECIPIENT_EVENTS`): what became of one message of a
//! campaign, as published to `{prefix}.events` with routing key `recipient.<state>` or POSTed
//! to the events webhook. The JSON shape is a contract (schema/recipient-event-v1.schema.json):
//! fields may be added, never renamed.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::ChannelKind;

/// A state a recipient's message reached. Its name is the routing key's second part and the
/// outbox's `state` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    /// The channel accepted the message (Meta's wamid, the SMSC's message id).
    Sent,
    Delivered,
    Read,
    /// The send or its delivery failed, with the error code.
    Failed,
    /// The SMS version of a WhatsApp message went out (`key#sms` accepted).
    Fallback,
    /// The follow-up went out (`key#follow-up` accepted).
    FollowUpSent,
    /// A conversion (order) was attributed to the recipient.
    Converted,
    /// The recipient revoked consent (STOP, 131050).
    OptedOut,
}

impl RecipientState {
    pub const ALL: [RecipientState; 8] = [
        Self::Sent,
        Self::Delivered,
        Self::Read,
        Self::Failed,
        Self::Fallback,
        Self::FollowUpSent,
        Self::Converted,
        Self::OptedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Fallback => "fallback",
            Self::FollowUpSent => "follow_up_sent",
            Self::Converted => "converted",
            Self::OptedOut => "opted_out",
        }
    }

    /// `recipient.<state>`: the AMQP routing key, and the event's `event` field.
    pub fn routing_key(self) -> &'static str {
        match self {
            Self::Sent => "recipient.sent",
            Self::Delivered => "recipient.delivered",
            Self::Read => "recipient.read",
            Self::Failed => "recipient.failed",
            Self::Fallback => "recipient.fallback",
            Self::FollowUpSent => "recipient.follow_up_sent",
            Self::Converted => "recipient.converted",
            Self::OptedOut => "recipient.opted_out",
        }
    }
}

/// Which of a recipient's messages an event is about, read from its ledger key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    /// The campaign's message (`key`).
    First,
    /// Its SMS version (`key#sms`).
    Fallback,
    /// The follow-up (`key#follow-up`).
    FollowUp,
}

/// The ledger key suffixes of the SMS version and the follow-up (as `engine` writes them).
const SMS_SUFFIX: &str = "#sms";
const FOLLOW_UP_SUFFIX: &str = "#follow-up";

impl MessageRole {
    /// The role and the recipient's own key (the one the campaign system gave or herald derived).
    pub fn of_key(message_key: &str) -> (Self, &str) {
        if let Some(k) = message_key.strip_suffix(SMS_SUFFIX) {
            (Self::Fallback, k)
        } else if let Some(k) = message_key.strip_suffix(FOLLOW_UP_SUFFIX) {
            (Self::FollowUp, k)
        } else {
            (Self::First, message_key)
        }
    }
}

/// One event as published: `schema/recipient-event-v1.schema.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientEvent {
    pub version: u32,
    /// `<message key>/<state>`: unique, the same on every redelivery — a consumer's dedup key.
    pub event_id: String,
    /// `recipient.<state>`, the routing key.
    pub event: String,
    pub state: RecipientState,
    pub campaign: String,
    /// The recipient's key (without `#sms` / `#follow-up`).
    pub key: String,
    pub message: MessageRole,
    pub channel: ChannelKind,
    /// When herald recorded the fact (RFC 3339, UTC).
    pub at: String,
    /// The error code of a `failed` event (Graph, SMPP), as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The E.164 number, only with `HERALD_RECIPIENT_EVENTS_NUMBERS=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// What the store writes to the outbox for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecipientEvent {
    /// The ledger key the fact is about; with `state`, unique in the outbox.
    pub message_key: String,
    pub state: RecipientState,
    /// The number, kept beside the row so erasure finds it (published only when configured).
    pub recipient: Option<String>,
    /// The JSON body.
    pub payload: String,
    pub at: DateTime<Utc>,
}

/// The facts one event is built from.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    pub message_key: &'a str,
    pub state: RecipientState,
    pub campaign: &'a str,
    pub channel: ChannelKind,
    /// The number (E.164), or empty when the fact does not name one.
    pub recipient: &'a str,
    pub code: Option<&'a str>,
    pub at: DateTime<Utc>,
}

impl NewRecipientEvent {
    /// Builds the row and its body; the number goes into the body only with `numbers`.
    pub fn build(f: EventFacts<'_>, numbers: bool) -> Self {
        let (message, key) = MessageRole::of_key(f.message_key);
        let event = RecipientEvent {
            version: 1,
            event_id: format!("{}/{}", f.message_key, f.state.as_str()),
            event: f.state.routing_key().to_owned(),
            state: f.state,
            campaign: f.campaign.to_owned(),
            key: key.to_owned(),
            message,
            channel: f.channel,
            at: f.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            code: (f.state == RecipientState::Failed)
                .then(|| f.code.map(str::to_owned))
                .flatten(),
            to: (numbers && f.recipient.starts_with('+')).then(|| f.recipient.to_owned()),
        };
        Self {
            message_key: f.message_key.to_owned(),
            state: f.state,
            recipient: (!f.recipient.is_empty()).then(|| f.recipient.to_owned()),
            payload: serde_json::to_string(&event).expect("events serialise"),
            at: f.at,
        }
    }
}

/// How events are produced, for the places that record facts: `None` in their settings
/// means events are off and nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventOptions {
    /// Put the E.164 number into each event (`HERALD_RECIPIENT_EVENTS_NUMBERS`).
    pub numbers: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-11-27T09:00:00Z".parse().unwrap()
    }

    fn facts(key: &'static str, state: RecipientState) -> EventFacts<'static> {
        EventFacts {
            message_key: key,
            state,
            campaign: "bf26",
            channel: ChannelKind::WhatsApp,
            recipient: "+4915112345678",
            code: Some("131026"),
            at: at(),
        }
    }

    #[test]
    fn an_event_carries_no_number_unless_asked() {
        let e = NewRecipientEvent::build(facts("k1", RecipientState::Sent), false);
        let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
        assert!(v.get("to").is_none());
        assert!(v.get("code").is_none(), "only failed events carry a code");
        assert_eq!(v["event"], "recipient.sent");
        assert_eq!(v["event_id"], "k1/sent");
        assert_eq!(v["at"], "2026-11-27T09:00:00.000Z");
        assert_eq!(e.recipient.as_deref(), Some("+4915112345678"));
        let with = NewRecipientEvent::build(facts("k1", RecipientState::Failed), true);
        let v: serde_json::Value = serde_json::from_str(&with.payload).unwrap();
        assert_eq!(v["to"], "+4915112345678");
        assert_eq!(v["code"], "131026");
    }

    #[test]
    fn the_role_comes_from_the_key_suffix() {
        assert_eq!(MessageRole::of_key("k#sms"), (MessageRole::Fallback, "k"));
        assert_eq!(
            MessageRole::of_key("k#follow-up"),
            (MessageRole::FollowUp, "k")
        );
        assert_eq!(MessageRole::of_key("k"), (MessageRole::First, "k"));
        let e = NewRecipientEvent::build(facts("k#sms", RecipientState::Fallback), false);
        let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(v["key"], "k");
        assert_eq!(v["message"], "fallback");
        assert_eq!(v["event"], "recipient.fallback");
    }

    #[test]
    fn routing_keys_name_the_state() {
        for s in RecipientState::ALL {
            assert_eq!(s.routing_key(), format!("recipient.{}", s.as_str()));
        }
    }
}
