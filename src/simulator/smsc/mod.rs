//! The simulator's SMSC (DESIGN §3, reference `sms.md`): an SMPP 3.4 server on smpp34 that
//! plays an SMS provider for herald's SMS channel — one account with a bind limit, a TPS limit
//! answering `ESME_RTHROTTLED`, delivery receipts after a delay with configurable outcomes
//! (hex or decimal ids, optionally twice), MO messages on request, and duplicate detection by
//! herald's key TLV.
//!
//! Layout: `config` what it pretends to be · `submit` reading a `submit_sm` and joining long
//! messages (pure) · `receipt` what a receipt says (pure) · `state` counters and the message
//! list · `sessions` who is bound · `listener` smpp34's callbacks · `dispatch` receipts on
//! their way · `mo` inbound messages · `http` the `/__sim/sms/…` endpoints.

mod config;
mod receipt;
mod submit;

pub use config::SmscConfig;
pub use receipt::Outcome;
