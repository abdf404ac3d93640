//! The SMS route's inbox: what the SMSC delivers on its own — delivery receipts and messages
//! from customers — applied to the store. Receipts are batched (one write transaction per
//! batch) and land monotonically (`delivered` < `failed` = `expired`); a receipt that is late
//! or a duplicate changes nothing and is counted; one whose message has no ledger row yet
//! (a fast SMSC beat the send's record) is tried again for two minutes, then counted
//! `unmatched`; an unreadable one is counted and logged without its text. An opt-out word by SMS ("STOP",
//! "STOPP", "ABMELDEN", …) revokes SMS consent for every category at once — WhatsApp consent
//! stays as it is. Everything was acknowledged to the SMSC before it got here.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::channel::sms::receipt::{MessageState, canonical_id, id_forms};
use crate::channel::sms::route::ReceiptIds;
use crate::channel::sms::{Inbound, SmsRoute};
use crate::domain::{ChannelKind, EventOptions, PhoneNumber, SmsReceiptUpdate};
use crate::policy::opt_out::OptOutWords;
use crate::store::{Store, retrying};
use crate::telemetry::metrics;

/// Receipts applied per write transaction.
const BATCH: usize = 256;
/// How long a receipt whose message has no ledger row yet is tried again: the send's record
/// (its message id) lands up to a record interval plus the writer's queue after the answer,
/// and a fast SMSC's receipt can come first.
const UNMATCHED_FOR: Duration = Duration::from_secs(120);
/// How often those receipts are tried again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// A receipt whose message the ledger did not know yet.
struct Waiting {
    update: SmsReceiptUpdate,
    since: tokio::time::Instant,
}

/// Applies what the route's SMSC sends until its session is gone for good.
pub async fn run_inbox(
    store: Arc<dyn Store>,
    route: SmsRoute,
    opt_out: OptOutWords,
    inbound: mpsc::Receiver<Inbound>,
) {
    run_inbox_with_events(store, route, opt_out, inbound, None).await;
}

/// [`run_inbox`], writing the per-recipient events of the receipts it applies when
/// `recipient_events` is on.
pub async fn run_inbox_with_events(
    store: Arc<dyn Store>,
    route: SmsRoute,
    opt_out: OptOutWords,
    mut inbound: mpsc::Receiver<Inbound>,
    recipient_events: Option<EventOptions>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut receipts = Vec::new();
        let mut since = Vec::new();
        tokio::select! {
            n = inbound.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                let now = tokio::time::Instant::now();
                for item in batch.drain(..) {
                    match item {
                        Inbound::Receipt(r) => {
                            match receipt_update(&r.message_id, r.state, r.error, route.receipt_ids) {
                                Some(update) => {
                                    receipts.push(update);
                                    since.push(now);
                                }
                                None => metrics::sms_receipts(&route.name, "pending", "unchanged", 1),
                            }
                        }
                        Inbound::Unreadable(e) => {
                            warn!(route = %route.name, error = %e, "unreadable SMS receipt acknowledged and dropped");
                            metrics::sms_receipts(&route.name, "unreadable", "unchanged", 1);
                        }
                        Inbound::Mo { from, text, .. } => {
                            mo(&*store, &route, &opt_out, recipient_events, &from, &text).await
                        }
                    }
                }
            }
            _ = retry.tick(), if !waiting.is_empty() => {
                for w in waiting.drain(..) {
                    receipts.push(w.update);
                    since.push(w.since);
                }
            }
        }
        if receipts.is_empty() {
            continue;
        }
        let Some(results) = apply_with_retry(&*store, &receipts, recipient_events).await else {
            error!(route = %route.name, receipts = receipts.len(),
                "SMS receipts could not be written for a minute; dropped (the messages keep their send state)");
            metrics::sms_receipts(&route.name, "lost", "unchanged", receipts.len() as u64);
            continue;
        };
        let now = tokio::time::Instant::now();
        for ((update, since), result) in receipts.into_iter().zip(since).zip(results) {
            let state = update.status;
            match result {
                Some(true) => metrics::sms_receipts(&route.name, state, "applied", 1),
                Some(false) => metrics::sms_receipts(&route.name, state, "unchanged", 1),
                // No row has this message id yet: its send may not be recorded yet.
                None if now.duration_since(since) < UNMATCHED_FOR => {
                    waiting.push(Waiting { update, since })
                }
                None => {
                    debug!(route = %route.name, "SMS receipt for a message id herald does not know; dropped");
                    metrics::sms_receipts(&route.name, state, "unmatched", 1);
                }
            }
        }
    }
    info!(route = %route.name, "SMS inbox closed");
}

/// The ledger change a receipt asks for (`None`: an intermediate or uncertain state).
pub fn receipt_update(
    message_id: &str,
    state: MessageState,
    error: Option<String>,
    ids: ReceiptIds,
) -> Option<SmsReceiptUpdate> {
    let status = match state.delivered()? {
        true => "delivered",
        false if state == MessageState::Expired => "expired",
        false => "failed",
    };
    let canonical = canonical_id(message_id);
    let forms = match ids {
        // As given first; then the same number in the other base.
        ReceiptIds::Auto => id_forms(message_id),
        ReceiptIds::Same => vec![canonical],
        // The receipt says in decimal what the answer said in hex: store's form is the hex.
        ReceiptIds::Decimal => canonical
            .parse::<u128>()
            .map(|n| vec![format!("{n:x}")])
            .unwrap_or_else(|_| vec![canonical]),
        // The receipt says in hex what the answer said in decimal.
        ReceiptIds::Hex => u128::from_str_radix(&canonical, 16)
            .map(|n| vec![n.to_string()])
            .unwrap_or_else(|_| vec![canonical]),
    };
    Some(SmsReceiptUpdate {
        message_ids: forms,
        status,
        error,
    })
}

/// A message from a customer: an opt-out word revokes SMS consent (and, with recipient events
/// on, tells the CRM: an `opted_out` event on SMS about the number's latest campaign message).
async fn mo(
    store: &dyn Store,
    route: &SmsRoute,
    opt_out: &OptOutWords,
    recipient_events: Option<EventOptions>,
    from: &str,
    text: &str,
) {
    let Some(word) = opt_out.matches(text) else {
        metrics::sms_inbound(&route.name, "other");
        return;
    };
    metrics::sms_inbound(&route.name, "opt_out");
    let digits = from.trim_start_matches('+');
    let Ok(phone) = PhoneNumber::parse(&format!("+{digits}")) else {
        warn!(route = %route.name, "SMS opt-out from a number that is not E.164; ignored");
        return;
    };
    let source = format!("sms:{word}");
    let revoke = || store.revoke_consent(&phone, None, Some(ChannelKind::Sms), Utc::now(), &source);
    match retrying("recording an SMS opt-out", revoke).await {
        Ok(()) => info!(route = %route.name, phone = %phone.masked(), "SMS opt-out recorded"),
        Err(e) => {
            error!(route = %route.name, error = %e,
                "an SMS opt-out could not be recorded: the store is down");
            return;
        }
    }
    if let Some(options) = recipient_events {
        let phones = std::slice::from_ref(&phone);
        let event = || store.record_opt_out_events(phones, ChannelKind::Sms, options, Utc::now());
        if let Err(e) = retrying("recording an SMS opt-out event", event).await {
            error!(route = %route.name, error = %e,
                "the opt-out event of an SMS opt-out could not be recorded: the store is down");
        }
    }
}

async fn apply_with_retry(
    store: &dyn Store,
    receipts: &[SmsReceiptUpdate],
    recipient_events: Option<EventOptions>,
) -> Option<Vec<Option<bool>>> {
    retrying("writing SMS receipts", || async {
        match recipient_events {
            Some(options) => {
                store
                    .apply_sms_receipts_with_events(receipts, options, chrono::Utc::now())
                    .await
            }
            None => store.apply_sms_receipts(receipts).await,
        }
    })
    .await
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_map_to_ledger_states_and_id_forms() {
        let u = receipt_update("0A1B", MessageState::Delivered, None, ReceiptIds::Auto).unwrap();
        assert_eq!(u.status, "delivered");
        assert_eq!(u.message_ids, ["a1b", "2587"]);
        let u = receipt_update("2587", MessageState::Expired, None, ReceiptIds::Decimal).unwrap();
        assert_eq!(
            (u.status, u.message_ids.as_slice()),
            ("expired", ["a1b".to_owned()].as_slice())
        );
        let u = receipt_update(
            "2587",
            MessageState::Undeliverable,
            Some("001".into()),
            ReceiptIds::Same,
        )
        .unwrap();
        assert_eq!((u.status, u.message_ids.len()), ("failed", 1));
        assert_eq!(u.error.as_deref(), Some("001"));
        assert!(receipt_update("1", MessageState::Enroute, None, ReceiptIds::Auto).is_none());
        assert!(receipt_update("1", MessageState::Accepted, None, ReceiptIds::Auto).is_none());
    }
}
