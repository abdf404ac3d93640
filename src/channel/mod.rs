//! The seam between the engine and a way of reaching people. A [`Channel`] knows how to send
//! one prepared message and what its answer means (a classified [`Answer`]); which rate limit a
//! send counts against (its pacing key) and what it costs (its price on the rate card). The
//! engine's stages (claim → gate → mark → pace → send → record) and the ledger are shared by
//! every channel. [`whatsapp`] is the Cloud API, [`sms`] an SMPP route.

use async_trait::async_trait;
use serde_json::Value;

use crate::domain::{Category, ChannelKind, IdempotencyKey, PhoneNumber, SenderId};
use crate::policy::cost::RateCard;
pub use crate::policy::next_step::Answer;

pub mod sms;
pub mod whatsapp;

pub use sms::SmsChannel;
pub use whatsapp::WhatsAppChannel;

/// Where a sender's messages go on a channel (a URL, a bind), worked out once per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(pub String);

/// One message, ready to go: everything a channel needs and nothing it must look up.
#[derive(Debug, Clone, Copy)]
pub struct Prepared<'a> {
    pub to: &'a PhoneNumber,
    /// herald's idempotency key; channels echo it back where they can (WhatsApp:
    /// `biz_opaque_callback_data`) so status reports find their ledger row.
    pub key: &'a IdempotencyKey,
    pub template: &'a str,
    pub language: &'a str,
    pub components: &'a [Value],
    /// WhatsApp: the free-form session message to send instead of the template (the gate found
    /// the customer-service window open).
    pub session: Option<&'a serde_json::Map<String, Value>>,
    /// SMS: the text for this recipient (placeholders filled) and the sender ID or number it
    /// comes from. Empty on WhatsApp.
    pub text: &'a str,
    pub from: &'a str,
}

/// A way of reaching people.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    fn kind(&self) -> ChannelKind;

    /// Where `sender`'s messages go; the engine asks once per run.
    fn endpoint(&self, sender: &SenderId) -> Endpoint;

    /// Sends one message and says what the answer means. Never panics and never retries on
    /// its own: retrying is the engine's decision.
    async fn send(&self, endpoint: &Endpoint, message: &Prepared<'_>) -> Answer;

    /// The rate limit a send from `sender` counts against (WhatsApp: the business number;
    /// SMS: the route).
    fn pacing_key(&self, sender: &SenderId) -> SenderId {
        sender.clone()
    }

    /// The rate that key allows, given the sender's own (WhatsApp: the number's; SMS: the
    /// route's TPS).
    fn rate_per_sec(&self, sender_rate: u32) -> u32 {
        sender_rate
    }

    /// Waits up to `wait` until the channel can send (SMS: its session is bound).
    async fn ready(&self, _wait: std::time::Duration) -> bool {
        true
    }

    /// The estimated price of one message of `category` to `to` with `text` (SMS: its parts
    /// count), in millionths of the rate card's currency (0: unpriced).
    fn price_micros(
        &self,
        card: &RateCard,
        category: Category,
        to: &PhoneNumber,
        text: &str,
    ) -> u64;
}
