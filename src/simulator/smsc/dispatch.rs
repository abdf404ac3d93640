//! Sends delivery receipts when they fall due, as `deliver_sm` with the receipt bit, the
//! `receipted_message_id` and `message_state` TLVs and the text form (reference `sms.md` §4).
//! A receipt goes to the session that submitted while it is bound, else to any session of the
//! account; with none bound it waits for the next bind, as real SMSCs keep retrying. One task
//! takes receipts in order (the delay is the same for all, so the queue is in due order) and
//! hands each to a short-lived task that waits for the `deliver_sm_resp`.

use std::sync::Arc;
use std::time::Duration;

use smpp34::TlvTag;
use smpp34::server::ESME;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use super::state::{ReceiptJob, SmscState};
use super::submit::{NPI_E164, TON_INTERNATIONAL};
use crate::channel::sms::wire::{DC_GSM7, ESM_RECEIPT};

/// Receipts awaiting their `deliver_sm_resp` at once: a typical SMPP window.
const WINDOW: usize = 64;
/// How often receipts that failed are tried again (binds retry at once).
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Deliveries of one receipt refused or unanswered before it is dropped. A session that is
/// not bound is no attempt: such receipts wait for a bind however long it takes.
const MAX_ATTEMPTS: u32 = 5;

/// Runs until `stop` is notified or the state (and its queue's sender) is gone.
pub async fn run(
    state: Arc<SmscState>,
    mut queue: mpsc::UnboundedReceiver<ReceiptJob>,
    stop: Arc<Notify>,
) {
    let window = Arc::new(Semaphore::new(WINDOW));
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next: Option<ReceiptJob> = None;
    loop {
        let due = next.as_ref().map(|job| job.due);
        tokio::select! {
            () = stop.notified() => break,
            job = queue.recv(), if next.is_none() => match job {
                Some(job) => next = Some(job),
                None => break,
            },
            () = sleep_until(due), if due.is_some() => {
                if let Some(job) = next.take() {
                    deliver(&state, &window, job).await;
                }
            }
            () = state.bound.notified() => flush(&state, &window).await,
            _ = retry.tick() => flush(&state, &window).await,
        }
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// Tries every parked receipt again.
async fn flush(state: &Arc<SmscState>, window: &Arc<Semaphore>) {
    for job in state.take_parked() {
        deliver(state, window, job).await;
    }
}

/// Hands a due receipt to a session, or parks it until one binds.
async fn deliver(state: &Arc<SmscState>, window: &Arc<Semaphore>, job: ReceiptJob) {
    let Some(esme) = state
        .sessions
        .receiver(&state.config.system_id, Some(&job.session_id))
    else {
        state.park(job);
        return;
    };
    let permit = window
        .clone()
        .acquire_owned()
        .await
        .expect("the window is never closed");
    tokio::spawn(send(state.clone(), esme, job, permit));
}

async fn send(
    state: Arc<SmscState>,
    esme: Arc<ESME>,
    mut job: ReceiptJob,
    _permit: OwnedSemaphorePermit,
) {
    let mut receipted_id = job.message_id.clone().into_bytes();
    receipted_id.push(0);
    let answer = esme
        .deliver_sm()
        .source_addr_ton(TON_INTERNATIONAL)
        .source_addr_npi(NPI_E164)
        .source_addr(job.from.clone())
        .dest_addr_ton(job.to.ton)
        .dest_addr_npi(job.to.npi)
        .destination_addr(job.to.addr.clone())
        .esm_class(ESM_RECEIPT)
        .data_coding(DC_GSM7)
        .short_message(job.text.clone().into_bytes())
        .tlv(TlvTag::ReceiptedMessageId, receipted_id)
        .tlv(TlvTag::MessageStateTlv, [job.outcome.message_state()])
        .send()
        .await;
    let status = match answer {
        Ok(resp) if resp.is_success() => {
            state.receipt_sent(job.outcome);
            return;
        }
        Ok(resp) => resp.get_error(),
        Err(e) => e,
    };
    job.attempts += 1;
    if job.attempts >= MAX_ATTEMPTS {
        tracing::warn!(
            message_id = %job.message_id,
            status = ?status,
            "simulated SMSC gives up a delivery receipt"
        );
        state.receipt_given_up();
    } else {
        tracing::debug!(message_id = %job.message_id, status = ?status, attempt = job.attempts, "delivery receipt not acknowledged; retrying");
        state.park(job);
    }
}
