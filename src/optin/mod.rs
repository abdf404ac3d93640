//! Opt-in by the customer's own first message: [`link`] makes the click-to-chat link
//! (`wa.me`) that opens WhatsApp with the keyword already typed, and its QR codes for print
//! and screens.

pub mod link;
