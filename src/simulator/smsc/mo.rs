//! Inbound SMS on request (reference `sms.md` §5): a customer's reply ("STOP") becomes a
//! `deliver_sm` without the receipt bit to a bound session, in the encoding the text needs.

use serde::{Deserialize, Serialize};
use smpp34::{SmppError, TlvTag};

use super::state::SmscState;
use super::submit::{NPI_E164, TON_ALPHANUMERIC, TON_INTERNATIONAL};
use crate::channel::sms::wire;
use crate::simulator::state::digits;

/// The most `short_message` holds; a longer text goes in the `message_payload` TLV.
const MAX_SHORT_MESSAGE: usize = 254;
/// The longest alphanumeric address.
const MAX_ALPHANUMERIC: usize = 11;

/// A customer's message to the business (`POST /__sim/sms/mo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoRequest {
    /// The customer's number, E.164 (`+4917…`; spacing ignored).
    pub from: String,
    /// What the customer replied to: the business's number or alphanumeric ID.
    pub to: String,
    pub text: String,
}

/// What went out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoSent {
    pub data_coding: u8,
    /// Whether the text went in `message_payload` (longer than a `short_message` holds).
    pub payload: bool,
}

/// Why an MO message did not reach a session.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MoError {
    #[error("the SMSC is not enabled (start the simulator with --smpp-port)")]
    NotEnabled,
    #[error("'from' must be a phone number in E.164 (+ and 7 to 15 digits)")]
    BadFrom,
    #[error("'to' must be a phone number or an alphanumeric sender ID of at most 11 characters")]
    BadTo,
    #[error("no SMPP session that can receive is bound; bind a transceiver or receiver first")]
    NoSession,
    #[error("the bound session did not acknowledge the deliver_sm: {0}")]
    NotAcknowledged(String),
}

/// An address as `deliver_sm` carries it: TON, NPI and the characters.
fn address(raw: &str) -> Option<(u8, u8, String)> {
    let trimmed = raw.trim();
    let numeric = trimmed
        .strip_prefix('+')
        .unwrap_or(trimmed)
        .chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-');
    if numeric {
        let d = digits(trimmed);
        return (!d.is_empty() && d.len() <= 15).then_some((TON_INTERNATIONAL, NPI_E164, d));
    }
    let alnum = trimmed.chars().count() <= MAX_ALPHANUMERIC
        && trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " .-_&".contains(c));
    alnum.then(|| (TON_ALPHANUMERIC, 0, trimmed.to_owned()))
}

/// Delivers `mo` to a bound session of the account and waits for its acknowledgement.
pub async fn send(state: &SmscState, mo: &MoRequest) -> Result<MoSent, MoError> {
    let from = digits(&mo.from);
    let plausible = mo.from.trim().starts_with('+') && (7..=15).contains(&from.len());
    if !plausible {
        return Err(MoError::BadFrom);
    }
    let (to_ton, to_npi, to) = address(&mo.to).ok_or(MoError::BadTo)?;
    let esme = state
        .sessions
        .receiver(&state.config.system_id, None)
        .ok_or(MoError::NoSession)?;
    let (data_coding, bytes) = wire::encode(&mo.text);
    let payload = bytes.len() > MAX_SHORT_MESSAGE;
    let mut pdu = esme
        .deliver_sm()
        .source_addr_ton(TON_INTERNATIONAL)
        .source_addr_npi(NPI_E164)
        .source_addr(from)
        .dest_addr_ton(to_ton)
        .dest_addr_npi(to_npi)
        .destination_addr(to)
        .esm_class(0)
        .data_coding(data_coding);
    pdu = if payload {
        pdu.tlv(TlvTag::MessagePayload, bytes)
    } else {
        pdu.short_message(bytes)
    };
    let status = match pdu.send().await {
        Ok(resp) if resp.is_success() => {
            state
                .counters()
                .mo_sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(MoSent {
                data_coding,
                payload,
            });
        }
        Ok(resp) => resp.get_error(),
        Err(status) => status,
    };
    Err(MoError::NotAcknowledged(describe(status)))
}

/// A status as `ESME_RSYSERR (0x08)`.
pub fn describe(status: SmppError) -> String {
    format!("{status:?} ({:#04X})", status as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::smsc::SmscConfig;

    #[test]
    fn numbers_and_sender_ids_become_addresses() {
        assert_eq!(
            address("+49 30 901820"),
            Some((TON_INTERNATIONAL, NPI_E164, "4930901820".into()))
        );
        assert_eq!(address("ACME"), Some((TON_ALPHANUMERIC, 0, "ACME".into())));
        assert_eq!(address("ACME Sneakers Berlin"), None);
        assert_eq!(address(""), None);
        assert_eq!(address("+"), None);
    }

    #[tokio::test]
    async fn without_a_bound_session_an_mo_is_refused_plainly() {
        let (state, _queue) = SmscState::new(SmscConfig::default());
        let mo = MoRequest {
            from: "+4917612345678".into(),
            to: "ACME".into(),
            text: "STOP".into(),
        };
        assert_eq!(send(&state, &mo).await, Err(MoError::NoSession));
        let bad = MoRequest {
            from: "4917612345678".into(),
            ..mo.clone()
        };
        assert_eq!(send(&state, &bad).await, Err(MoError::BadFrom));
        assert!(!MoError::BadFrom.to_string().contains("4917"));
    }
}
