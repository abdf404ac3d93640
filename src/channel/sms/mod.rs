//! The SMS channel: an SMPP 3.4 session to the provider's SMSC, and its pure parts — what a
//! delivery receipt says ([`receipt`]) and how a text becomes SMPP bytes ([`wire`]). Segment
//! counting is a pricing decision and lives in [`crate::policy::segments`].

pub mod receipt;
pub mod wire;
