//! The Cloud API client: one pooled `reqwest::Client` (rustls, keep-alive, timeouts) that
//! sends templates and reads template lists and phone-number fields. It parses Meta's answers
//! and says what happened; [`crate::policy::classify`] decides what to do about it.

pub mod client;
pub mod wire;

pub use client::{GraphClient, GraphConfig, GraphError, SendResult};
