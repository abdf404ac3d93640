//! What a simulated delivery receipt says (reference `sms.md` §4): the outcome a destination
//! gets, the message id in the form the receipt gives it, and the de-facto text
//! `id:… sub:001 dlvrd:001 submit date:… done date:… stat:DELIVRD err:000 text:…`. Pure.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::config::SmscConfig;
use crate::simulator::hashing::stable_hash;

/// `message_state` TLV (0x0427) values, SMPP 3.4 §5.2.28.
const STATE_DELIVERED: u8 = 2;
const STATE_EXPIRED: u8 = 3;
const STATE_UNDELIVERABLE: u8 = 5;
/// How much of the message the receipt's `text:` field repeats.
const TEXT_CHARS: usize = 20;

/// The final state a simulated message reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    #[serde(rename = "DELIVRD")]
    Delivered,
    #[serde(rename = "UNDELIV")]
    Undeliverable,
    #[serde(rename = "EXPIRED")]
    Expired,
}

impl Outcome {
    /// The text form's `stat:` word.
    pub fn stat(self) -> &'static str {
        match self {
            Self::Delivered => "DELIVRD",
            Self::Undeliverable => "UNDELIV",
            Self::Expired => "EXPIRED",
        }
    }

    /// The `message_state` TLV's value.
    pub fn message_state(self) -> u8 {
        match self {
            Self::Delivered => STATE_DELIVERED,
            Self::Undeliverable => STATE_UNDELIVERABLE,
            Self::Expired => STATE_EXPIRED,
        }
    }

    /// The network error code: `001` (unknown subscriber) for undeliverable numbers.
    fn err(self) -> &'static str {
        match self {
            Self::Undeliverable => "001",
            Self::Delivered | Self::Expired => "000",
        }
    }

    pub fn delivered(self) -> bool {
        self == Self::Delivered
    }
}

/// The outcome for a destination (international digits): listed numbers are undeliverable,
/// then a stable hash picks the undeliverable and expired shares. The hash is salted so the
/// numbers the SMSC fails are not the ones the Cloud API's `undeliverable_ratio` picks.
pub fn outcome_for(config: &SmscConfig, undeliverable: &HashSet<String>, digits: &str) -> Outcome {
    if undeliverable.contains(digits) {
        return Outcome::Undeliverable;
    }
    let salted = format!("sms:{digits}");
    // Top 53 bits as a fraction in [0, 1).
    let at = (stable_hash(salted.as_bytes()) >> 11) as f64 / (1u64 << 53) as f64;
    if at < config.undeliverable_share {
        Outcome::Undeliverable
    } else if at < config.undeliverable_share + config.expired_share {
        Outcome::Expired
    } else {
        Outcome::Delivered
    }
}

/// A message id: a number, given in hex in `submit_sm_resp` and — with
/// [`SmscConfig::decimal_receipt_ids`] — in decimal in receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId(pub u64);

impl MessageId {
    /// The form `submit_sm_resp` gives: upper-case hex.
    pub fn hex(self) -> String {
        format!("{:X}", self.0)
    }

    /// The form receipts give.
    pub fn in_receipt(self, decimal: bool) -> String {
        if decimal {
            self.0.to_string()
        } else {
            self.hex()
        }
    }
}

/// The receipt's `short_message`: the de-facto text form, ASCII only (characters beyond it in
/// the repeated text become `?`), so a client that reads receipts as text can always read it.
pub fn text(
    id: &str,
    outcome: Outcome,
    submitted: DateTime<Utc>,
    done: DateTime<Utc>,
    message: &str,
) -> String {
    let excerpt: String = message
        .chars()
        .take(TEXT_CHARS)
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect();
    format!(
        "id:{id} sub:001 dlvrd:{dlvrd} submit date:{submit} done date:{done} stat:{stat} err:{err} text:{excerpt}",
        dlvrd = if outcome.delivered() { "001" } else { "000" },
        submit = submitted.format("%y%m%d%H%M"),
        done = done.format("%y%m%d%H%M"),
        stat = outcome.stat(),
        err = outcome.err(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::sms::receipt::{MessageState, canonical_id, id_forms, parse};
    use chrono::TimeZone;

    #[test]
    fn the_text_reads_back_with_herald_s_receipt_parser() {
        let submitted = Utc.with_ymd_and_hms(2026, 11, 26, 15, 30, 5).unwrap();
        let done = Utc.with_ymd_and_hms(2026, 11, 26, 15, 31, 0).unwrap();
        let text = text(
            "1A2B",
            Outcome::Delivered,
            submitted,
            done,
            "ACME: Sneaker -30 % nur heute",
        );
        assert_eq!(
            text,
            "id:1A2B sub:001 dlvrd:001 submit date:2611261530 done date:2611261531 stat:DELIVRD err:000 text:ACME: Sneaker -30 % "
        );
        let receipt = parse(None, None, text.as_bytes()).unwrap();
        assert_eq!(receipt.message_id, "1A2B");
        assert_eq!(receipt.state, MessageState::Delivered);
        assert_eq!(receipt.error, None);
    }

    #[test]
    fn undeliverable_receipts_carry_err_001_and_nothing_delivered() {
        let now = Utc::now();
        let text = text("7", Outcome::Undeliverable, now, now, "Привет");
        assert!(text.contains("dlvrd:000") && text.contains("stat:UNDELIV err:001"));
        assert!(text.ends_with("text:??????"), "{text}");
        let receipt = parse(None, None, text.as_bytes()).unwrap();
        assert_eq!(receipt.state, MessageState::Undeliverable);
        assert_eq!(receipt.error.as_deref(), Some("001"));
        for outcome in [Outcome::Delivered, Outcome::Undeliverable, Outcome::Expired] {
            assert_eq!(
                MessageState::from_tlv(outcome.message_state()),
                MessageState::from_stat(outcome.stat())
            );
        }
    }

    #[test]
    fn decimal_receipt_ids_name_the_same_message_as_the_hex_answer() {
        let id = MessageId(0x5EED_0000_002A);
        assert_eq!(id.hex(), "5EED0000002A");
        assert_eq!(id.in_receipt(false), "5EED0000002A");
        let decimal = id.in_receipt(true);
        assert!(decimal.bytes().all(|b| b.is_ascii_digit()));
        assert!(id_forms(&decimal).contains(&canonical_id(&id.hex())));
    }

    #[test]
    fn listed_numbers_fail_and_shares_split_the_rest_stably() {
        let config = SmscConfig {
            undeliverable_share: 0.1,
            expired_share: 0.2,
            ..Default::default()
        };
        let listed = HashSet::from(["4915100000000".to_owned()]);
        assert_eq!(
            outcome_for(&config, &listed, "4915100000000"),
            Outcome::Undeliverable
        );
        let numbers: Vec<String> = (1..=20_000).map(|i| format!("4915{i:09}")).collect();
        let count = |o: Outcome| {
            numbers
                .iter()
                .filter(|n| outcome_for(&config, &listed, n) == o)
                .count()
        };
        let (undeliv, expired) = (count(Outcome::Undeliverable), count(Outcome::Expired));
        assert!((1_700..2_300).contains(&undeliv), "{undeliv}");
        assert!((3_600..4_400).contains(&expired), "{expired}");
        assert_eq!(
            count(Outcome::Undeliverable),
            undeliv,
            "stable across calls"
        );
        let healthy = SmscConfig::default();
        assert!(
            numbers
                .iter()
                .all(|n| outcome_for(&healthy, &HashSet::new(), n).delivered())
        );
    }
}
