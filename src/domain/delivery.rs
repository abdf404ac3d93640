//! A delivery status as a status webhook reports it: the plain fact `http::notifications`
//! parses and the store merges into the ledger.

use chrono::{DateTime, Utc};

use super::IdempotencyKey;

/// A status webhook applied to the ledger.
#[derive(Debug, Clone)]
pub struct DeliveryUpdate {
    pub wamid: String,
    /// Our key from `biz_opaque_callback_data`, when Meta echoed it.
    pub key: Option<IdempotencyKey>,
    /// sent, delivered, read or failed.
    pub status: String,
    pub at: DateTime<Utc>,
    pub error_code: Option<i64>,
    /// Billing category from `pricing.category` when billable.
    pub billed_category: Option<String>,
}

/// An SMS delivery receipt applied to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsReceiptUpdate {
    /// The forms the SMSC's message id may be stored in, most likely first: the first form
    /// that names a row decides which message it is.
    pub message_ids: Vec<String>,
    /// delivered, failed or expired.
    pub status: &'static str,
    /// The receipt's `err:` code, when it gave one.
    pub error: Option<String>,
}
