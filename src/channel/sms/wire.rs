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
