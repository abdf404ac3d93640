//! SMPP delivery receipts (reference `sms.md` §4): a `deliver_sm` with the receipt bit carries
//! the SMSC's message id and the message's state, in the TLVs `receipted_message_id` (0x001E)
//! and `message_state` (0x0427) when the SMSC sends them, and otherwise only in the de-facto
//! text `id:… sub:… dlvrd:… submit date:… done date:… stat:DELIVRD err:000 text:…`. Prefer the
//! TLVs, fall back to the text. Providers give the same id in hex in `submit_sm_resp` and in
//! decimal in the receipt (or the reverse), so ids are matched by every form they may have.

use chrono::NaiveDateTime;

/// SMPP `message_state` (SMPP 3.4 §5.2.28).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    Scheduled,
    Enroute,
    Delivered,
    Expired,
    Deleted,
    Undeliverable,
    Accepted,
    Unknown,
    Rejected,
}

impl MessageState {
    /// From the `message_state` TLV's value.
    pub fn from_tlv(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Scheduled,
            1 => Self::Enroute,
            2 => Self::Delivered,
            3 => Self::Expired,
            4 => Self::Deleted,
            5 => Self::Undeliverable,
            6 => Self::Accepted,
            7 => Self::Unknown,
            8 => Self::Rejected,
            _ => return None,
        })
    }

    /// From the text form's `stat:` word (case-insensitive; some SMSCs spell it out).
    pub fn from_stat(stat: &str) -> Option<Self> {
        Some(match stat.to_ascii_uppercase().as_str() {
            "SCHEDLD" | "SCHEDULED" => Self::Scheduled,
            "ENROUTE" => Self::Enroute,
            "DELIVRD" | "DELIVERED" => Self::Delivered,
            "EXPIRED" => Self::Expired,
            "DELETED" => Self::Deleted,
            "UNDELIV" | "UNDELIVERABLE" => Self::Undeliverable,
            "ACCEPTD" | "ACCEPTED" => Self::Accepted,
            "UNKNOWN" => Self::Unknown,
            "REJECTD" | "REJECTED" => Self::Rejected,
            _ => return None,
        })
    }

    /// Whether the SMSC will say no more about the message.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Scheduled | Self::Enroute)
    }

    /// What the ledger learns: `Some(true)` delivered, `Some(false)` it never will be (expired,
    /// deleted, undeliverable, rejected), `None` nothing yet or nothing certain (an operator's
    /// `ACCEPTD`, `UNKNOWN`).
    pub fn delivered(self) -> Option<bool> {
        match self {
            Self::Delivered => Some(true),
            Self::Expired | Self::Deleted | Self::Undeliverable | Self::Rejected => Some(false),
            Self::Scheduled | Self::Enroute | Self::Accepted | Self::Unknown => None,
        }
    }
}

/// A parsed receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The SMSC's message id as the receipt gives it (see [`id_forms`] to match it).
    pub message_id: String,
    pub state: MessageState,
    /// The `err:` field (network-specific), when the text form has one other than `000`.
    pub error: Option<String>,
    /// `done date:`, when present and readable.
    pub done_at: Option<NaiveDateTime>,
}

/// Why a receipt cannot be read. Messages name fields, never values (a receipt's text may
/// carry the phone number or the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt has no message id")]
    NoId,
    #[error("receipt has no state (neither message_state nor stat:)")]
    NoState,
    #[error("receipt state is not one SMPP defines")]
    UnknownState,
    #[error("receipt text is not text")]
    NotText,
}

/// Reads a receipt from its TLVs when present, else from its text.
pub fn parse(
    receipted_message_id: Option<&str>,
    message_state: Option<u8>,
    short_message: &[u8],
) -> Result<Receipt, ReceiptError> {
    let text = std::str::from_utf8(short_message).ok();
    let fields = text.map(Fields::of).unwrap_or_default();
    let message_id = receipted_message_id
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .or(fields.id)
        .ok_or(if text.is_none() {
            ReceiptError::NotText
        } else {
            ReceiptError::NoId
        })?
        .to_owned();
    let state = match message_state {
        Some(v) => MessageState::from_tlv(v).ok_or(ReceiptError::UnknownState)?,
        None => MessageState::from_stat(fields.stat.ok_or(ReceiptError::NoState)?)
            .ok_or(ReceiptError::UnknownState)?,
    };
    Ok(Receipt {
        message_id,
        state,
        error: fields
            .err
            .filter(|e| e.bytes().any(|b| b != b'0'))
            .map(str::to_owned),
        done_at: fields.done.and_then(parse_date),
    })
}

/// The fields of the de-facto text form.
#[derive(Debug, Default)]
struct Fields<'a> {
    id: Option<&'a str>,
    stat: Option<&'a str>,
    err: Option<&'a str>,
    done: Option<&'a str>,
}

impl<'a> Fields<'a> {
    fn of(text: &'a str) -> Self {
        // Everything after `text:` is the message itself: never parse into it.
        let head = match find_ci(text, "text:") {
            Some(at) => &text[..at],
            None => text,
        };
        Self {
            id: value(head, "id:"),
            stat: value(head, "stat:"),
            err: value(head, "err:"),
            done: value(head, "done date:"),
        }
    }
}

/// The word after `label` (case-insensitive), up to the next space.
fn value<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(at) = find_ci(&text[from..], label) {
        let start = from + at;
        // A label starts the text or follows a space (so `id:` is not found in `sub:…id:`).
        if start == 0 || text.as_bytes()[start - 1] == b' ' {
            let rest = &text[start + label.len()..];
            let word = rest.split(' ').next().unwrap_or_default();
            return (!word.is_empty()).then_some(word);
        }
        from = start + label.len();
    }
    None
}

fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// `YYMMDDhhmm` or `YYMMDDhhmmss`.
fn parse_date(raw: &str) -> Option<NaiveDateTime> {
    match raw.len() {
        10 => NaiveDateTime::parse_from_str(&format!("{raw}00"), "%y%m%d%H%M%S").ok(),
        12 => NaiveDateTime::parse_from_str(raw, "%y%m%d%H%M%S").ok(),
        _ => None,
    }
}

/// Every form an SMSC message id may take elsewhere: as given (lower case, without leading
/// zeros), and — when it reads as a number — the same number in the other base (hex ↔
/// decimal). A receipt matches a submitted message when one of its forms equals the stored
/// id's canonical form ([`canonical_id`]).
pub fn id_forms(id: &str) -> Vec<String> {
    let canonical = canonical_id(id);
    let mut forms = vec![canonical.clone()];
    let digits = canonical.as_str();
    if !digits.is_empty() && digits.len() <= 32 {
        if digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = digits.parse::<u128>()
        {
            forms.push(format!("{n:x}"));
        }
        if digits.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(n) = u128::from_str_radix(digits, 16)
        {
            forms.push(n.to_string());
        }
    }
    forms.dedup();
    forms
}

/// The form an id is stored in: trimmed, lower case, leading zeros dropped ("0" stays).
pub fn canonical_id(id: &str) -> String {
    let lower = id.trim().to_ascii_lowercase();
    let stripped = lower.trim_start_matches('0');
    if stripped.is_empty() && !lower.is_empty() {
        "0".to_owned()
    } else {
        stripped.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] = b"id:0A1B2C3D sub:001 dlvrd:001 submit date:2611261530 done date:261126153112 stat:DELIVRD err:000 text:ACME: Sneaker -30 % id:fake stat:UNDELIV";

    #[test]
    fn the_text_form_is_read_up_to_the_message_text() {
        let r = parse(None, None, TEXT).unwrap();
        assert_eq!(r.message_id, "0A1B2C3D");
        assert_eq!(r.state, MessageState::Delivered);
        assert_eq!(r.error, None);
        assert_eq!(
            r.done_at.unwrap().format("%Y-%m-%d %H:%M:%S").to_string(),
            "2026-11-26 15:31:12"
        );
        let r = parse(
            None,
            None,
            b"id:77 sub:001 dlvrd:000 submit date:2611261530 done date:2611261545 stat:UNDELIV err:034",
        )
        .unwrap();
        assert_eq!(r.state, MessageState::Undeliverable);
        assert_eq!(r.error.as_deref(), Some("034"));
        assert_eq!(
            r.done_at.unwrap().format("%H:%M:%S").to_string(),
            "15:45:00"
        );
    }

    #[test]
    fn tlvs_win_over_the_text() {
        let r = parse(Some("4711"), Some(3), TEXT).unwrap();
        assert_eq!(r.message_id, "4711");
        assert_eq!(r.state, MessageState::Expired);
        // An empty TLV id falls back to the text's.
        assert_eq!(
            parse(Some(" "), Some(2), TEXT).unwrap().message_id,
            "0A1B2C3D"
        );
    }

    #[test]
    fn unreadable_receipts_say_which_field_without_quoting_it() {
        assert_eq!(parse(None, None, b"stat:DELIVRD"), Err(ReceiptError::NoId));
        assert_eq!(
            parse(None, None, b"id:1 err:000"),
            Err(ReceiptError::NoState)
        );
        assert_eq!(
            parse(None, None, b"id:1 stat:+4915112345678"),
            Err(ReceiptError::UnknownState)
        );
        assert_eq!(
            parse(Some("1"), Some(42), b""),
            Err(ReceiptError::UnknownState)
        );
        assert_eq!(parse(None, None, &[0xff, 0xfe]), Err(ReceiptError::NotText));
        for e in [ReceiptError::NoId, ReceiptError::UnknownState] {
            assert!(!e.to_string().contains("+49"));
        }
    }

    #[test]
    fn labels_are_matched_whole_and_in_any_case() {
        let r = parse(None, None, b"ID:abc SUB:001 Stat:delivrd").unwrap();
        assert_eq!(
            (r.message_id.as_str(), r.state),
            ("abc", MessageState::Delivered)
        );
        // `sid:` is not `id:`.
        assert_eq!(
            parse(None, None, b"sid:9 stat:DELIVRD"),
            Err(ReceiptError::NoId)
        );
    }

    #[test]
    fn states_are_final_or_not_and_say_whether_it_arrived() {
        for v in 0..=8 {
            let s = MessageState::from_tlv(v).unwrap();
            assert_eq!(s.is_final(), v >= 2, "{s:?}");
        }
        assert_eq!(MessageState::from_tlv(9), None);
        assert_eq!(MessageState::Delivered.delivered(), Some(true));
        for s in [
            MessageState::Expired,
            MessageState::Deleted,
            MessageState::Undeliverable,
            MessageState::Rejected,
        ] {
            assert_eq!(s.delivered(), Some(false), "{s:?}");
        }
        assert_eq!(MessageState::Accepted.delivered(), None);
        assert_eq!(MessageState::Enroute.delivered(), None);
    }

    #[test]
    fn hex_and_decimal_ids_of_one_message_match() {
        // submit_sm_resp said hex 0A1B2C3D, the receipt says decimal 169552957.
        let stored = canonical_id("0A1B2C3D");
        assert_eq!(stored, "a1b2c3d");
        assert!(id_forms("169552957").contains(&stored));
        // ...and the reverse.
        assert!(id_forms("0A1B2C3D").contains(&canonical_id("169552957")));
        // A non-numeric id has only itself.
        assert_eq!(id_forms("msg-77"), vec!["msg-77".to_owned()]);
        assert_eq!(canonical_id("000"), "0");
    }
}
