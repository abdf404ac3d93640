//! The SMS channel's pure parts, ahead of its SMPP session: what a delivery receipt says
//! ([`receipt`]). Segment counting is a pricing decision and lives in
//! [`crate::policy::segments`].

pub mod receipt;
