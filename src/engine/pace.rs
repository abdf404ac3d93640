//! The pace stage: takes marked items in order, waits for the sender's pacer (the number's
//! rate, shared by every run in the process and, with many workers, leased from the store)
//! and for a permit of the sender's in-flight bound, then starts the request in its own task.
//! Items back from a wait go to the marker again first. Ends when the claim stage is done and
//! nothing is outstanding.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::run::{Item, Run};
use super::send::SendStage;

/// Paces and starts requests for marked items until the run has nothing outstanding.
pub(super) async fn pace(
    run: Arc<Run>,
    send: Arc<SendStage>,
    mut marked: mpsc::Receiver<Item>,
    mut retries: mpsc::UnboundedReceiver<Item>,
    remarks: mpsc::UnboundedSender<Item>,
) {
    loop {
        if run.producer_done.load(Ordering::Acquire) && run.outstanding() == 0 {
            break;
        }
        let item = tokio::select! {
            biased;
            Some(item) = retries.recv() => {
                if let Err(mpsc::error::SendError(item)) = remarks.send(item) {
                    run.hand_back(item);
                }
                continue;
            }
            Some(item) = marked.recv() => item,
            _ = run.idle.notified() => continue,
        };
        start(&run, &send, item).await;
    }
    // Dropping `remarks` here lets the marker end.
}

/// Waits for the item's send slot and an in-flight permit, then sends it in a task.
async fn start(run: &Arc<Run>, send: &Arc<SendStage>, mut item: Item) {
    if run.stopped() {
        run.hand_back(item);
        return;
    }
    tokio::select! {
        generation = run.pacer.acquire() => item.rate_generation = generation,
        _ = run.stopping.cancelled() => { run.hand_back(item); return; }
    }
    let permit = tokio::select! {
        p = Arc::clone(&run.inflight).acquire_owned() => p.expect("semaphore never closed"),
        _ = run.stopping.cancelled() => { run.hand_back(item); return; }
    };
    let run = Arc::clone(run);
    let send = Arc::clone(send);
    tokio::spawn(async move {
        let _permit = permit;
        send.send(&run, item).await;
    });
}
