//! Conversion events from RabbitMQ (DESIGN §1.6): beside the jobs, every worker consumes
//! `{prefix}.conversions` on a channel of its own with a small prefetch, gathers what has
//! arrived into a batch and records it with one store call.
//!
//! A delivery is acked only once its event is durably recorded (or found a duplicate). An
//! invalid event is copied to `{prefix}.dead` with the reason in headers, then acked: never
//! requeued. While the database is down the batch is held and retried here rather than
//! requeued (each requeue counts against the queue's delivery limit); it goes back to the
//! queue only when the worker stops, or by itself when the connection is lost.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Consumer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::copies::{copy_properties, transit_free_headers, truncate};
use super::delivery::{ack, requeue};
use super::topology::{long, short};
use super::worker::{BROKER_CALL_TIMEOUT, Ctx, Session};
use crate::domain::{Conversion, ConversionError};
use crate::policy::backoff::retry_delay;
use crate::store::StoreResult;
use crate::telemetry::metrics;

/// Unacked conversion events per worker, and so the largest batch: one store transaction of a
/// hundred small rows is cheap, and a worker stopping hands back at most this many.
pub const PREFETCH: u16 = 100;
/// How long a batch waits for more events after its first: short enough not to delay an
/// event noticeably, long enough that a burst becomes one transaction.
const LINGER: Duration = Duration::from_millis(20);
/// First and longest wait before retrying a batch while the database is down.
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// The `path` label of this way in.
const PATH: &str = "amqp";

/// A channel consuming `{prefix}.conversions`, opened with the session.
pub(super) struct Opened {
    channel: Channel,
    consumer: Consumer,
}

/// Opens the conversions channel on the session's connection and starts consuming.
pub(super) async fn open(
    conn: &lapin::Connection,
    queue: &str,
    tag: &str,
) -> Result<Opened, lapin::Error> {
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            short(tag).unwrap_or_else(|| ShortString::from("")),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(Opened { channel, consumer })
}

/// The running consumer of one session.
pub(super) struct Conversions {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Conversions {
    /// Starts consuming; stops when `shutdown` is cancelled or the session is abandoned.
    pub(super) fn spawn(
        ctx: &Arc<Ctx>,
        session: &Arc<Session>,
        opened: Opened,
        shutdown: &CancellationToken,
    ) -> Self {
        let stop = shutdown.child_token();
        let task = tokio::spawn(consume(
            Arc::clone(ctx),
            Arc::clone(session),
            opened,
            stop.clone(),
        ));
        Self { stop, task }
    }

    /// The session is gone: stop. Events not acked go back to the queue with the connection.
    pub(super) fn abandon(self) {
        self.stop.cancel();
    }

    /// Shutdown: lets the batch in hand finish (recorded and acked, or handed back) within
    /// `grace`; past it the task is stopped and its events go back with the connection.
    pub(super) async fn finish(self, grace: Duration) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            warn!("conversion events still in hand at the drain deadline; handing them back");
            task.abort();
        }
    }
}

async fn consume(ctx: Arc<Ctx>, session: Arc<Session>, opened: Opened, stop: CancellationToken) {
    let Opened {
        channel,
        mut consumer,
    } = opened;
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            next = consumer.next() => next,
        };
        let mut batch = match first {
            Some(Ok(d)) => vec![d],
            Some(Err(e)) => {
                debug!(error = %e, "the conversions consumer ended with its connection");
                break;
            }
            None => {
                // Someone deleted the queue: reconnecting declares it again.
                warn!("the broker cancelled the conversions consumer; reconnecting");
                session.broken.cancel();
                break;
            }
        };
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < usize::from(PREFETCH) {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(d)) => batch.push(d),
                    _ => break,
                },
                _ = &mut linger => break,
            }
        }
        handle_batch(&ctx, &session, batch, &stop).await;
    }
    // Take no more; prefetched events not handled go back to the queue as the channel closes.
    let tag = consumer.tag();
    let _ = tokio::time::timeout(
        BROKER_CALL_TIMEOUT,
        channel.basic_cancel(tag, BasicCancelOptions::default()),
    )
    .await;
    let _ = tokio::time::timeout(
        BROKER_CALL_TIMEOUT,
        channel.close(200, ShortString::from("herald worker stopping")),
    )
    .await;
}

/// Rejects the invalid events of a batch and records the others.
async fn handle_batch(
    ctx: &Ctx,
    session: &Session,
    batch: Vec<Delivery>,
    stop: &CancellationToken,
) {
    let now = Utc::now();
    let mut valid = Vec::with_capacity(batch.len());
    for d in batch {
        match parse(&d, now) {
            Ok(event) => valid.push((d, event)),
            Err(e) => dead_letter(ctx, session, &d, e.label(), e.to_string()).await,
        }
    }
    if valid.is_empty() {
        return;
    }
    let events: Vec<Conversion> = valid.iter().map(|(_, e)| e.clone()).collect();
    match store(ctx, &events, stop).await {
        Stored::Done => {
            for (d, _) in &valid {
                ack(&d.acker).await;
            }
        }
        Stored::Stopped => {
            for (d, _) in &valid {
                requeue(&d.acker).await;
            }
        }
        // One event of the batch carries data the database cannot take: find it, keep the rest.
        Stored::Refused(_) => {
            for (i, (d, event)) in valid.iter().enumerate() {
                match store(ctx, std::slice::from_ref(event), stop).await {
                    Stored::Done => {
                        ack(&d.acker).await;
                    }
                    Stored::Refused(code) => {
                        let reason =
                            format!("the database refused this event's data (error code {code})");
                        dead_letter(ctx, session, d, "invalid_data", reason).await;
                    }
                    Stored::Stopped => {
                        for (d, _) in &valid[i..] {
                            requeue(&d.acker).await;
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// The event of a delivery, or why it is refused.
fn parse(d: &Delivery, now: chrono::DateTime<Utc>) -> Result<Conversion, ConversionError> {
    let encoding = d
        .properties
        .content_encoding()
        .as_ref()
        .map(|e| e.as_str().trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(encoding.as_str(), "" | "identity") {
        return Err(ConversionError::Json(format!(
            "content encoding '{}' is not supported (send plain JSON)",
            truncate(&encoding, 32)
        )));
    }
    Conversion::parse(&d.data, now)
}

/// What became of a batch.
enum Stored {
    Done,
    /// The database refused the data (its error code): retrying cannot help.
    Refused(String),
    /// The worker is stopping while the database is down: hand the events back.
    Stopped,
}

/// Records `events`, retrying while the database is unreachable until it works or `stop`.
async fn store(ctx: &Ctx, events: &[Conversion], stop: &CancellationToken) -> Stored {
    let mut attempt = 0u32;
    loop {
        let store = ctx.engine.store();
        let result: StoreResult<_> = match ctx.engine.config().recipient_events {
            Some(options) => {
                let now = ctx.engine.config().clock.now();
                store
                    .record_conversions_with_events(events, options, now)
                    .await
            }
            None => store.record_conversions(events).await,
        };
        match result {
            Ok(tally) => {
                ctx.state.set_database(true);
                metrics::conversions(PATH, &tally);
                debug!(
                    events = events.len(),
                    stored = tally.stored,
                    duplicates = tally.duplicates,
                    unattributed = tally.unattributed,
                    "conversion events recorded"
                );
                return Stored::Done;
            }
            Err(e) => {
                if let Some(code) = e.refused_data() {
                    return Stored::Refused(code);
                }
                ctx.state.set_database(false);
                attempt += 1;
                let wait = retry_delay(
                    attempt,
                    RETRY_BASE,
                    RETRY_CAP,
                    0.5 + rand::random::<f64>() / 2.0,
                );
                warn!(error = %e, events = events.len(), attempt, retry_in = ?wait,
                    "cannot record conversion events; holding them and retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {
                        info!(events = events.len(), "stopping: conversion events handed back to the queue");
                        return Stored::Stopped;
                    }
                }
            }
        }
    }
}

/// Copies the event to `{prefix}.dead` with the reason in headers (publisher-confirmed), then
/// acks it. If the copy cannot be made, the event goes back to the queue instead.
async fn dead_letter(
    ctx: &Ctx,
    session: &Session,
    d: &Delivery,
    code: &'static str,
    reason: String,
) {
    let reason = truncate(&reason, 4096);
    let mut headers = transit_free_headers(&d.properties);
    headers.insert("x-herald-reason".into(), long(&reason));
    headers.insert("x-herald-reason-code".into(), long(code));
    headers.insert(
        "x-herald-dead-lettered-at".into(),
        AMQPValue::Timestamp(Utc::now().timestamp().max(0) as u64),
    );
    let published = session
        .publisher
        .publish(
            &ctx.topology.dead_exchange(),
            d.routing_key.as_str(),
            true,
            &d.data,
            copy_properties(&d.properties, headers),
        )
        .await;
    if let Err(e) = published {
        warn!(error = %e, "could not dead-letter a conversion event; handing it back");
        session.note_publish_failure();
        tokio::time::sleep(Duration::from_secs(1)).await;
        requeue(&d.acker).await;
        return;
    }
    metrics::conversions_rejected(PATH, 1);
    warn!(reason_code = code, reason = %reason, "conversion event rejected to {}",
        ctx.topology.dead_queue());
    ack(&d.acker).await;
}
