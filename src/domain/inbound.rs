//! What customers write: inbound WhatsApp messages as herald keeps them (who, to which business
//! number, when, what type, Meta's message id — the text only where it is proof of consent), the
//! customer-service window they open, and the opt-in keywords of click-to-chat links.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::channel::ChannelKind;
use super::ids::SenderId;
use super::outcome::Category;
use super::phone::PhoneNumber;

/// The message types Meta documents for `value.messages[].type`; any other is stored as
/// [`UNSUPPORTED`] (Meta adds types; herald must not refuse a webhook for one).
pub const MESSAGE_TYPES: [&str; 16] = [
    "text",
    "button",
    "interactive",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "reaction",
    "order",
    "system",
    "request_welcome",
    "referral",
    UNSUPPORTED,
];

/// The type an unknown or unreadable message is stored as.
pub const UNSUPPORTED: &str = "unsupported";

/// The type to store for Meta's `type` field: its own name when documented, else
/// [`UNSUPPORTED`].
pub fn message_type(raw: Option<&str>) -> &'static str {
    raw.and_then(|t| MESSAGE_TYPES.iter().find(|known| **known == t).copied())
        .unwrap_or(UNSUPPORTED)
}

/// One inbound message, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Meta's message id (`wamid.…`): what makes redelivered webhooks idempotent.
    pub wamid: String,
    /// The customer.
    pub from: PhoneNumber,
    /// The business number written to (`metadata.phone_number_id`).
    pub sender: SenderId,
    /// When the customer wrote, as Meta reports it — never later than herald received it, so
    /// a clock ahead of herald's cannot stretch a window.
    pub at: DateTime<Utc>,
    /// One of [`MESSAGE_TYPES`].
    pub kind: &'static str,
    /// The message came from a click-to-WhatsApp ad (`referral`): a 72 h free entry point.
    pub referral: bool,
    /// The text, kept only when it is the proof of an opt-in (data minimisation): `None` for
    /// everything else.
    pub proof_text: Option<String>,
}

/// The customer-service window of one (business number, customer), as a fact for the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceWindow {
    /// Free-form messages may be sent until this instant (exclusive): 24 h after the
    /// customer's last message.
    pub open_until: DateTime<Utc>,
    /// Every message is free until this instant: 72 h after a click-to-WhatsApp ad's
    /// message (a free entry point), if any.
    pub free_until: Option<DateTime<Utc>>,
}

/// A click-to-chat opt-in keyword: a customer who writes it to `sender` consents to
/// `category` messages on WhatsApp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptInKeyword {
    /// Normalised ([`normalise_keyword`]).
    pub keyword: String,
    pub sender: SenderId,
    pub category: Category,
    /// Where the link or QR code was published (`poster-store-berlin`, `instagram-bio`): kept
    /// with every consent it records.
    pub source: String,
    /// The business's name, as the confirmation names it.
    pub business: String,
    /// The confirmation session message sent to whoever opts in.
    pub confirmation: String,
    pub created_at: DateTime<Utc>,
}

impl OptInKeyword {
    /// The consent channel a keyword records: the customer wrote on WhatsApp.
    pub const CHANNEL: ChannelKind = ChannelKind::WhatsApp;
}

/// Why a keyword can't be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeywordError {
    #[error("the keyword is empty")]
    Empty,
    #[error("the keyword is {0} characters long; at most {MAX_KEYWORD_CHARS} are allowed")]
    TooLong(usize),
    #[error("the keyword may hold letters, digits, spaces, - and _ only")]
    Characters,
    #[error(
        "the keyword `{0}` is an opt-out word: customers who write it are unsubscribed, so it can't also subscribe them"
    )]
    OptOutWord(String),
    #[error("the confirmation must name the business (`{0}`)")]
    ConfirmationWithoutBusiness(String),
    #[error(
        "the confirmation must say how to opt out (mention one of the opt-out words, e.g. STOP)"
    )]
    ConfirmationWithoutOptOut,
    #[error("the confirmation is {0} characters long; a text message holds at most 4096")]
    ConfirmationTooLong(usize),
}

/// Longest keyword accepted.
pub const MAX_KEYWORD_CHARS: usize = 40;

/// A keyword as matched: without leading or trailing spaces, punctuation or emoji, inner
/// whitespace collapsed to one space, upper case. What a customer sends is normalised the same
/// way, so ` sneakers! ` matches `SNEAKERS`.
pub fn normalise_keyword(text: &str) -> String {
    text.trim_matches(|c: char| !c.is_alphanumeric())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

/// Checks a keyword as given; returns it normalised.
pub fn check_keyword(raw: &str) -> Result<String, KeywordError> {
    let keyword = normalise_keyword(raw);
    if keyword.is_empty() {
        return Err(KeywordError::Empty);
    }
    let chars = keyword.chars().count();
    if chars > MAX_KEYWORD_CHARS {
        return Err(KeywordError::TooLong(chars));
    }
    if !keyword
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
    {
        return Err(KeywordError::Characters);
    }
    Ok(keyword)
}

impl fmt::Display for ServiceWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "open until {}", self.open_until.to_rfc3339())?;
        if let Some(free) = self.free_until {
            write!(f, ", free until {}", free.to_rfc3339())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_matched_without_case_or_extra_whitespace() {
        assert_eq!(normalise_keyword("  sneakers \t drop "), "SNEAKERS DROP");
        assert_eq!(normalise_keyword("Grüße"), "GRÜSSE");
        assert_eq!(check_keyword(" Sneakers! ").unwrap(), "SNEAKERS");
        assert_eq!(normalise_keyword("👟 sneakers 👟"), "SNEAKERS");
    }

    #[test]
    fn bad_keywords_say_why() {
        assert_eq!(check_keyword("  "), Err(KeywordError::Empty));
        assert_eq!(
            check_keyword(&"A".repeat(41)),
            Err(KeywordError::TooLong(41))
        );
        assert_eq!(check_keyword("SALE?NOW"), Err(KeywordError::Characters));
    }

    #[test]
    fn unknown_types_are_unsupported() {
        assert_eq!(message_type(Some("text")), "text");
        assert_eq!(message_type(Some("hologram")), UNSUPPORTED);
        assert_eq!(message_type(None), UNSUPPORTED);
    }
}
