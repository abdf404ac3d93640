//! What herald puts on the SMPP wire beyond SMPP itself, shared by the client and the
//! simulator's SMSC so the two agree.

/// Optional parameter carrying herald's idempotency key (UTF-8) on each `submit_sm`: from the
/// vendor-specific range (SMPP 3.4 §5.3.2: 0x1400–0x3FFF, ignored by SMSCs that don't know
/// it). The simulator's SMSC counts duplicates by it; receipts are matched by message id.
pub const KEY_TLV: u16 = 0x1400;

/// `esm_class` bit of a `deliver_sm` that is a delivery receipt (SMPP 3.4 §5.2.12).
pub const ESM_RECEIPT: u8 = 0x04;
/// `esm_class` bit: the short message starts with a user data header (concatenation).
pub const ESM_UDHI: u8 = 0x40;
/// `data_coding` of the GSM 7-bit default alphabet (one septet per octet, unpacked).
pub const DC_GSM7: u8 = 0x00;
/// `data_coding` of UCS-2 (UTF-16BE).
pub const DC_UCS2: u8 = 0x08;
/// `message_payload` TLV: the whole text of a long message in one `submit_sm`.
pub const TLV_MESSAGE_PAYLOAD: u16 = 0x0424;

use crate::policy::segments::{self, Encoding, GSM_BASIC, GSM_EXTENSION};

/// The escape septet before a character of the extension table.
const GSM_ESCAPE: u8 = 0x1B;
/// Septet values of the extension table's characters, in `GSM_EXTENSION`'s order.
const GSM_EXTENSION_CODES: [u8; 10] = [0x0A, 0x14, 0x28, 0x29, 0x2F, 0x3C, 0x3D, 0x3E, 0x40, 0x65];

/// The septet of a basic-alphabet character: its index in `GSM_BASIC`, skipping 0x1B (the
/// escape, which the table leaves out).
fn gsm_basic_code(c: char) -> Option<u8> {
    let idx = GSM_BASIC.chars().position(|b| b == c)?;
    let code = if idx >= GSM_ESCAPE as usize {
        idx + 1
    } else {
        idx
    };
    Some(code as u8)
}

/// `text` as SMPP bytes: GSM-7 (one septet per octet, unpacked, as SMPP carries it with
/// `data_coding` 0) when every character has a GSM-7 form, otherwise UCS-2 (UTF-16BE).
pub fn encode(text: &str) -> (u8, Vec<u8>) {
    match segments::encoding(text) {
        Encoding::Gsm7 => {
            let mut out = Vec::with_capacity(text.len());
            for c in text.chars() {
                if let Some(code) = gsm_basic_code(c) {
                    out.push(code);
                } else if let Some(i) = GSM_EXTENSION.chars().position(|e| e == c) {
                    out.push(GSM_ESCAPE);
                    out.push(GSM_EXTENSION_CODES[i]);
                }
            }
            (DC_GSM7, out)
        }
        Encoding::Ucs2 => (
            DC_UCS2,
            text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        ),
    }
}

/// The text of SMPP bytes in `data_coding` (0 GSM-7 unpacked, 8 UCS-2; anything else read as
/// Latin-1, which is what 3 and most SMSC defaults mean). Unknown septets become `?`.
pub fn decode(data_coding: u8, bytes: &[u8]) -> String {
    match data_coding {
        DC_GSM7 => {
            let basic: Vec<char> = GSM_BASIC.chars().collect();
            let mut out = String::with_capacity(bytes.len());
            let mut it = bytes.iter().copied();
            while let Some(b) = it.next() {
                if b == GSM_ESCAPE {
                    let next = it.next().unwrap_or(0);
                    let c = GSM_EXTENSION_CODES
                        .iter()
                        .position(|&e| e == next)
                        .and_then(|i| GSM_EXTENSION.chars().nth(i))
                        .unwrap_or('?');
                    out.push(c);
                    continue;
                }
                let idx = if b > GSM_ESCAPE { b - 1 } else { b } as usize;
                out.push(basic.get(idx).copied().unwrap_or('?'));
            }
            out
        }
        DC_UCS2 => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => bytes.iter().map(|&b| b as char).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_round_trips_with_extension_characters() {
        let text = "ACME: Sneaker -30 % nur heute, Jörg! {Preis} 99€ [x] ~|^\\ @£$¥";
        let (dc, bytes) = encode(text);
        assert_eq!(dc, DC_GSM7);
        assert_eq!(bytes[0], b'A');
        // '@' is septet 0, '€' is the escape plus 0x65.
        assert!(bytes.windows(2).any(|w| w == [GSM_ESCAPE, 0x65]));
        assert_eq!(bytes.len(), segments::count(text).units);
        assert_eq!(decode(dc, &bytes), text);
        assert_eq!(encode("@").1, [0x00]);
        assert_eq!(encode("Æ").1, [0x1C]);
        assert_eq!(encode("à").1, [0x7F]);
    }

    #[test]
    fn other_texts_go_as_ucs2() {
        let text = "Привет 👟";
        let (dc, bytes) = encode(text);
        assert_eq!(dc, DC_UCS2);
        assert_eq!(bytes.len(), 2 * text.encode_utf16().count());
        assert_eq!(decode(dc, &bytes), text);
    }
}
