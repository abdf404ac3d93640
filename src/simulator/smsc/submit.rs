//! What one `submit_sm` says, checked the way a provider checks it (reference `sms.md` §2):
//! the destination in international form without `+` (TON 1, NPI 1), a sender that is a number
//! or an alphanumeric ID of at most 11 characters (TON 5), the text in `short_message` or in
//! the `message_payload` TLV, possibly one part of a UDH- or SAR-concatenated message, and
//! herald's idempotency key in [`KEY_TLV`]. Then [`Reassembly`] joins the parts of a long
//! message into the one text the recipient reads. Pure: no I/O, no clock but the one passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use smpp34::{SmppError, Tlv, TlvTag, submit_sm};

use crate::channel::sms::wire::{DC_UCS2, ESM_UDHI, KEY_TLV, TLV_MESSAGE_PAYLOAD};

/// SMPP 3.4 §5.2.23: the `registered_delivery` bits asking for an SMSC receipt.
const RECEIPT_BITS: u8 = 0x03;
/// The longest alphanumeric sender ID handsets show (reference `sms.md` §2).
const MAX_ALPHANUMERIC_SENDER: usize = 11;
/// E.164 allows at most 15 digits; the shortest international numbers have 7.
const E164_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;
/// UDH information elements: concatenation with an 8-bit and with a 16-bit reference.
const IEI_CONCAT_8: u8 = 0x00;
const IEI_CONCAT_16: u8 = 0x08;
/// How long the first parts of a long message wait for the rest before they are forgotten.
const REASSEMBLY_TTL: Duration = Duration::from_secs(600);

/// Type of number: international, and alphanumeric (SMPP 3.4 §5.2.5).
pub const TON_INTERNATIONAL: u8 = 1;
pub const TON_ALPHANUMERIC: u8 = 5;
/// Numbering plan: E.164 (SMPP 3.4 §5.2.6).
pub const NPI_E164: u8 = 1;

/// Whether and when the submitter wants a delivery receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptRequest {
    None,
    /// On final delivery success or failure (`registered_delivery` 1).
    Always,
    /// Only when delivery failed (`registered_delivery` 2).
    OnFailure,
}

/// Where a part sits in its long message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concat {
    pub reference: u16,
    pub total: u8,
    /// 1-based.
    pub seq: u8,
}

/// The sender as given, with its type of number (echoed as the receipt's destination).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub addr: String,
    pub ton: u8,
    pub npi: u8,
}

/// One accepted `submit_sm`, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub source: Source,
    /// International digits, no `+`.
    pub destination: String,
    pub data_coding: u8,
    /// The text's bytes in `data_coding`, without the UDH.
    pub body: Vec<u8>,
    pub concat: Option<Concat>,
    /// herald's idempotency key, from [`KEY_TLV`].
    pub key: Option<String>,
    pub receipt: ReceiptRequest,
}

/// Reads a `submit_sm`, or the `command_status` a provider would refuse it with.
pub fn read(req: &submit_sm) -> Result<Part, SmppError> {
    let destination = destination(req)?;
    let source = source(req)?;
    let receipt = match req.registered_delivery & RECEIPT_BITS {
        0 => ReceiptRequest::None,
        1 => ReceiptRequest::Always,
        2 => ReceiptRequest::OnFailure,
        _ => return Err(SmppError::ESME_RINVREGDLVFLG),
    };
    let payload = tlv(&req.tlvs, TLV_MESSAGE_PAYLOAD);
    let message: &[u8] = match payload {
        // SMPP 3.4 §5.3.2.32: the payload TLV and a short_message exclude each other.
        Some(_) if !req.short_message.is_empty() => return Err(SmppError::ESME_RINVMSGLEN),
        Some(payload) => payload,
        None => &req.short_message,
    };
    let (mut concat, body) = if req.esm_class & ESM_UDHI != 0 {
        split_udh(message)?
    } else {
        (None, message)
    };
    if concat.is_none() {
        concat = sar(&req.tlvs)?;
    }
    if req.data_coding == DC_UCS2 && body.len() % 2 != 0 {
        return Err(SmppError::ESME_RINVMSGLEN);
    }
    let key = match tlv(&req.tlvs, KEY_TLV) {
        Some(raw) => {
            let key = std::str::from_utf8(raw.strip_suffix(&[0]).unwrap_or(raw))
                .map_err(|_| SmppError::ESME_RINVOPTPARAMVAL)?;
            (!key.is_empty()).then(|| key.to_owned())
        }
        None => None,
    };
    Ok(Part {
        source,
        destination,
        data_coding: req.data_coding,
        body: body.to_vec(),
        concat,
        key,
        receipt,
    })
}

fn destination(req: &submit_sm) -> Result<String, SmppError> {
    if req.dest_addr_ton != TON_INTERNATIONAL {
        return Err(SmppError::ESME_RINVDSTTON);
    }
    if req.dest_addr_npi != NPI_E164 {
        return Err(SmppError::ESME_RINVDSTNPI);
    }
    let addr = req.destination_addr.as_str();
    let international = E164_DIGITS.contains(&addr.len())
        && addr.bytes().all(|b| b.is_ascii_digit())
        && !addr.starts_with('0');
    if !international {
        return Err(SmppError::ESME_RINVDSTADR);
    }
    Ok(addr.to_owned())
}

fn source(req: &submit_sm) -> Result<Source, SmppError> {
    let addr = req.source_addr.as_str();
    if addr.is_empty() {
        return Err(SmppError::ESME_RINVSRCADR);
    }
    if !addr.bytes().all(|b| b.is_ascii_digit()) {
        if req.source_addr_ton != TON_ALPHANUMERIC {
            return Err(SmppError::ESME_RINVSRCTON);
        }
        if addr.chars().count() > MAX_ALPHANUMERIC_SENDER {
            return Err(SmppError::ESME_RINVSRCADR);
        }
    }
    Ok(Source {
        addr: addr.to_owned(),
        ton: req.source_addr_ton,
        npi: req.source_addr_npi,
    })
}

fn tlv(tlvs: &[Tlv], tag: u16) -> Option<&[u8]> {
    tlvs.iter()
        .find(|t| t.tag == tag)
        .map(|t| t.value.as_slice())
}

/// Splits the user data header off the message and reads its concatenation element.
fn split_udh(message: &[u8]) -> Result<(Option<Concat>, &[u8]), SmppError> {
    let invalid = SmppError::ESME_RINVESMCLASS;
    let (&udhl, rest) = message.split_first().ok_or(invalid)?;
    let udhl = udhl as usize;
    if rest.len() < udhl {
        return Err(invalid);
    }
    let (mut udh, body) = rest.split_at(udhl);
    let mut concat = None;
    while let [iei, len, tail @ ..] = udh {
        let len = *len as usize;
        if tail.len() < len {
            return Err(invalid);
        }
        let (data, next) = tail.split_at(len);
        concat = match (*iei, data) {
            (IEI_CONCAT_8, &[reference, total, seq]) => Some((u16::from(reference), total, seq)),
            (IEI_CONCAT_16, &[hi, lo, total, seq]) => {
                Some((u16::from_be_bytes([hi, lo]), total, seq))
            }
            (IEI_CONCAT_8 | IEI_CONCAT_16, _) => return Err(invalid),
            _ => concat,
        };
        udh = next;
    }
    if !udh.is_empty() {
        return Err(invalid);
    }
    let concat = concat
        .map(|(reference, total, seq)| checked(reference, total, seq).ok_or(invalid))
        .transpose()?;
    Ok((concat, body))
}

/// The SAR TLVs (`sar_msg_ref_num`, `sar_total_segments`, `sar_segment_seqnum`): the other way
/// SMPP 3.4 concatenates, without a UDH in the text.
fn sar(tlvs: &[Tlv]) -> Result<Option<Concat>, SmppError> {
    let reference = tlv(tlvs, TlvTag::SarMsgRefNum as u16);
    let total = tlv(tlvs, TlvTag::SarTotalSegments as u16);
    let seq = tlv(tlvs, TlvTag::SarSegmentSeqnum as u16);
    match (reference, total, seq) {
        (None, None, None) => Ok(None),
        (Some(&[hi, lo]), Some(&[total]), Some(&[seq])) => {
            checked(u16::from_be_bytes([hi, lo]), total, seq)
                .map(Some)
                .ok_or(SmppError::ESME_RINVOPTPARAMVAL)
        }
        _ => Err(SmppError::ESME_RMISSINGOPTPARAM),
    }
}

fn checked(reference: u16, total: u8, seq: u8) -> Option<Concat> {
    (total >= 1 && (1..=total).contains(&seq)).then_some(Concat {
        reference,
        total,
        seq,
    })
}

/// A whole message: one part, or every part of a long one, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Whole {
    pub source: Source,
    pub destination: String,
    pub data_coding: u8,
    /// The parts' bodies joined: decode once, so a character split across parts survives.
    pub body: Vec<u8>,
    pub key: Option<String>,
    /// The id each `submit_sm` was answered with, in part order.
    pub message_ids: Vec<String>,
}

/// The parts of long messages received so far.
#[derive(Debug, Default)]
pub struct Reassembly {
    pending: HashMap<PartsOf, Pending>,
}

/// What ties the parts of one long message together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PartsOf {
    source: Source,
    destination: String,
    reference: u16,
    total: u8,
}

#[derive(Debug)]
struct Pending {
    /// By `seq - 1`: the body and message id of each part received.
    parts: Vec<Option<(Vec<u8>, String)>>,
    key: Option<String>,
    data_coding: u8,
    started: Instant,
}

impl Reassembly {
    /// Adds an accepted part; returns the whole message once its last part is in (at once for
    /// a message of one part). A part sent again replaces the earlier copy.
    pub fn add(&mut self, part: Part, message_id: String, now: Instant) -> Option<Whole> {
        let Some(concat) = part.concat.filter(|c| c.total > 1) else {
            return Some(Whole {
                source: part.source,
                destination: part.destination,
                data_coding: part.data_coding,
                body: part.body,
                key: part.key,
                message_ids: vec![message_id],
            });
        };
        let of = PartsOf {
            source: part.source,
            destination: part.destination,
            reference: concat.reference,
            total: concat.total,
        };
        if !self.pending.contains_key(&of) {
            self.pending
                .retain(|_, p| now.duration_since(p.started) < REASSEMBLY_TTL);
        }
        let pending = self.pending.entry(of.clone()).or_insert_with(|| Pending {
            parts: vec![None; concat.total as usize],
            key: None,
            data_coding: part.data_coding,
            started: now,
        });
        pending.key = pending.key.take().or(part.key);
        pending.parts[concat.seq as usize - 1] = Some((part.body, message_id));
        if pending.parts.iter().any(Option::is_none) {
            return None;
        }
        let pending = self.pending.remove(&of)?;
        let (bodies, message_ids): (Vec<_>, Vec<_>) = pending.parts.into_iter().flatten().unzip();
        Some(Whole {
            source: of.source,
            destination: of.destination,
            data_coding: pending.data_coding,
            body: bodies.concat(),
            key: pending.key,
            message_ids,
        })
    }

    /// Long messages still missing parts.
    pub fn incomplete(&self) -> usize {
        self.pending.len()
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::sms::wire::{self, DC_GSM7};

    /// A `submit_sm` as herald sends one: alphanumeric sender, international destination.
    fn submit(short_message: &[u8], esm_class: u8, data_coding: u8, tlvs: Vec<Tlv>) -> submit_sm {
        submit_sm::new(
            1,
            String::new(),
            TON_ALPHANUMERIC,
            0,
            "ACME".into(),
            TON_INTERNATIONAL,
            NPI_E164,
            "4915112345678".into(),
            esm_class,
            0,
            0,
            String::new(),
            String::new(),
            1,
            0,
            data_coding,
            0,
            short_message.to_vec(),
        )
        .with_tlvs(tlvs)
    }

    #[test]
    fn a_plain_submit_is_read_with_its_key_and_receipt_request() {
        let (dc, bytes) = wire::encode("Hallo {Anna}");
        let key = Tlv::new(KEY_TLV, b"job-1:+4915112345678".to_vec());
        let part = read(&submit(&bytes, 0, dc, vec![key])).unwrap();
        assert_eq!(part.destination, "4915112345678");
        assert_eq!(part.source.addr, "ACME");
        assert_eq!(wire::decode(part.data_coding, &part.body), "Hallo {Anna}");
        assert_eq!(part.key.as_deref(), Some("job-1:+4915112345678"));
        assert_eq!(part.receipt, ReceiptRequest::Always);
        assert_eq!(part.concat, None);
    }

    #[test]
    fn a_nul_terminated_key_reads_the_same() {
        let key = Tlv::new(KEY_TLV, b"k-1\0".to_vec());
        let part = read(&submit(b"x", 0, DC_GSM7, vec![key])).unwrap();
        assert_eq!(part.key.as_deref(), Some("k-1"));
    }

    #[test]
    fn the_payload_tlv_carries_a_long_text() {
        let text = "a".repeat(400);
        let (dc, bytes) = wire::encode(&text);
        let payload = Tlv::new(TLV_MESSAGE_PAYLOAD, bytes);
        let part = read(&submit(b"", 0, dc, vec![payload.clone()])).unwrap();
        assert_eq!(wire::decode(part.data_coding, &part.body), text);
        // Both a short_message and a payload: refused.
        assert_eq!(
            read(&submit(b"x", 0, dc, vec![payload])).unwrap_err(),
            SmppError::ESME_RINVMSGLEN
        );
    }

    #[test]
    fn destinations_must_be_international_digits_without_plus() {
        let mut req = submit(b"x", 0, DC_GSM7, vec![]);
        req.destination_addr = "+4915112345678".into();
        assert_eq!(read(&req).unwrap_err(), SmppError::ESME_RINVDSTADR);
        req.destination_addr = "015112345678".into();
        assert_eq!(read(&req).unwrap_err(), SmppError::ESME_RINVDSTADR);
        req.destination_addr = "4915112345678".into();
        req.dest_addr_ton = 0;
        assert_eq!(read(&req).unwrap_err(), SmppError::ESME_RINVDSTTON);
        req.dest_addr_ton = TON_INTERNATIONAL;
        req.dest_addr_npi = 0;
        assert_eq!(read(&req).unwrap_err(), SmppError::ESME_RINVDSTNPI);
    }

    #[test]
    fn alphanumeric_senders_need_ton_5_and_at_most_11_characters() {
        let mut req = submit(b"x", 0, DC_GSM7, vec![]);
        req.source_addr_ton = TON_INTERNATIONAL;
        assert_eq!(read(&req).unwrap_err(), SmppError::ESME_RINVSRCTON);
        req.source_addr_ton = TON_ALPHANUMERIC;
        req.source_addr = "ACME-Sneakers".into();
        assert_eq!(read(&req).unwrap_err(), SmppError::ESME_RINVSRCADR);
        // A number may be the sender under any TON.
        req.source_addr = "4930901820".into();
        req.source_addr_ton = TON_INTERNATIONAL;
        assert!(read(&req).is_ok());
    }

    #[test]
    fn udh_parts_are_read_and_joined_in_order_whatever_order_they_come_in() {
        let text = "Ж".repeat(100);
        let (dc, bytes) = wire::encode(&text);
        let (first, second) = bytes.split_at(134);
        let with_udh = |seq: u8, body: &[u8]| {
            let mut sm = vec![0x05, 0x00, 0x03, 0x2A, 0x02, seq];
            sm.extend_from_slice(body);
            submit(&sm, ESM_UDHI, dc, vec![Tlv::new(KEY_TLV, b"k-9".to_vec())])
        };
        let p2 = read(&with_udh(2, second)).unwrap();
        assert_eq!(
            p2.concat,
            Some(Concat {
                reference: 0x2A,
                total: 2,
                seq: 2
            })
        );
        let p1 = read(&with_udh(1, first)).unwrap();
        let mut parts = Reassembly::default();
        let now = Instant::now();
        assert_eq!(parts.add(p2, "B".into(), now), None);
        assert_eq!(parts.incomplete(), 1);
        let whole = parts.add(p1, "A".into(), now).unwrap();
        assert_eq!(wire::decode(whole.data_coding, &whole.body), text);
        assert_eq!(whole.message_ids, ["A", "B"]);
        assert_eq!(whole.key.as_deref(), Some("k-9"));
        assert_eq!(parts.incomplete(), 0);
    }

    #[test]
    fn a_16_bit_reference_and_sar_tlvs_concatenate_too() {
        let sm = [0x06, 0x08, 0x04, 0x01, 0x02, 0x03, 0x01, b'h'];
        let part = read(&submit(&sm, ESM_UDHI, DC_GSM7, vec![])).unwrap();
        assert_eq!(
            part.concat,
            Some(Concat {
                reference: 0x0102,
                total: 3,
                seq: 1
            })
        );
        let sar = vec![
            Tlv::from_u16(TlvTag::SarMsgRefNum, 7),
            Tlv::from_u8(TlvTag::SarTotalSegments, 2),
            Tlv::from_u8(TlvTag::SarSegmentSeqnum, 2),
        ];
        let part = read(&submit(b"lo", 0, DC_GSM7, sar)).unwrap();
        assert_eq!(
            part.concat,
            Some(Concat {
                reference: 7,
                total: 2,
                seq: 2
            })
        );
    }

    #[test]
    fn broken_udhs_are_refused() {
        for sm in [
            &[0x05, 0x00, 0x03][..],               // shorter than its length
            &[0x05, 0x00, 0x03, 0x01, 0x02, 0x03], // seq beyond total
            &[0x04, 0x00, 0x02, 0x01, 0x02],       // concat element of the wrong size
            &[],
        ] {
            assert_eq!(
                read(&submit(sm, ESM_UDHI, DC_GSM7, vec![])).unwrap_err(),
                SmppError::ESME_RINVESMCLASS,
                "{sm:02X?}"
            );
        }
    }

    #[test]
    fn ucs2_of_odd_length_is_refused() {
        assert_eq!(
            read(&submit(&[0x00, 0x41, 0x00], 0, DC_UCS2, vec![])).unwrap_err(),
            SmppError::ESME_RINVMSGLEN
        );
    }

    #[test]
    fn parts_waiting_too_long_are_forgotten_when_a_new_message_starts() {
        let part = |reference: u8| {
            read(&submit(
                &[0x05, 0x00, 0x03, reference, 0x02, 0x01, b'a'],
                ESM_UDHI,
                DC_GSM7,
                vec![],
            ))
            .unwrap()
        };
        let mut parts = Reassembly::default();
        let start = Instant::now();
        parts.add(part(1), "1".into(), start);
        parts.add(part(2), "2".into(), start + REASSEMBLY_TTL);
        assert_eq!(parts.incomplete(), 1);
    }
}
