//! One delivery, from its bytes to its ack, nack or republish: decode and parse the job, drop
//! a stale deferred copy, run it through the engine, then do what [`decide`] says — ack it,
//! park it in a delay queue, dead-letter it, or hand it back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;
use lapin::{Acker, BasicProperties};
use tracing::{debug, info, warn};

use super::connection::AmqpError;
use super::copies::{copy_properties, ids_from_body, job_age, transit_free_headers, truncate};
use super::disposition::{Disposition, decide, job_error_label};
use super::events::{self, JobCompleted, JobDeadLettered};
use super::state::WorkerState;
use super::topology::{DEFERRAL_HEADER, DELAY_HEADER, DelayTier, long};
use super::worker::{BROKER_CALL_TIMEOUT, Ctx, Session};
use crate::domain::Job;
use crate::engine::{JobRun, RunControl};
use crate::policy::backoff::retry_delay;
use crate::telemetry::metrics;

/// First wait before handing a job back after a database failure; doubles per consecutive
/// failure (shared by all jobs of the worker, so they back off together) up to the cap.
const DB_RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait before handing a job back while the database is down: long enough not to spin
/// jobs through the queue, short enough to resume within a minute of the database's return.
const DB_RETRY_CAP: Duration = Duration::from_secs(60);
/// Pause before handing a job back when a republish was refused, so a broker that refuses
/// everything (full disk alarm) does not see the same job bounce back at once.
const PUBLISH_FAILURE_PAUSE: Duration = Duration::from_secs(1);
/// The dead-letter reason header is cut here: headers travel with every copy of the message.
const MAX_REASON_BYTES: usize = 4096;

/// Counts a job in flight for the worker state while its task lives.
struct InFlightGuard(Arc<WorkerState>);

impl InFlightGuard {
    fn new(state: &Arc<WorkerState>) -> Self {
        state.job_started();
        Self(Arc::clone(state))
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.job_ended();
    }
}

/// Processes one delivery to its ack, nack or republish.
pub(super) async fn handle_delivery(ctx: Arc<Ctx>, session: Arc<Session>, delivery: Delivery) {
    let _in_flight = InFlightGuard::new(&ctx.state);
    metrics::job_consumed(job_age(&delivery.properties));

    let body = match decoded_body(&delivery) {
        Ok(body) => body,
        Err((code, reason)) => {
            dead_letter(&ctx, &session, &delivery, None, code, reason).await;
            return;
        }
    };
    // Parsing checks every number with libphonenumber's patterns: up to ~100 ms of CPU for a
    // job of 10,000, which must not hold a runtime thread that paces other jobs' sends.
    let parsed = {
        let body = body.into_owned();
        tokio::task::spawn_blocking(move || Job::parse(&body)).await
    };
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down: the delivery goes back with the channel, unacked.
        Err(_) => return,
    };
    let job = match parsed {
        Ok(job) => Arc::new(job),
        Err(e) => {
            let code = job_error_label(&e);
            dead_letter(&ctx, &session, &delivery, None, code, e.to_string()).await;
            return;
        }
    };
    if delivery.routing_key.as_str() != job.sender.as_str() {
        // The contract routes a job by its sender; a mismatch is a publisher bug that would
        // otherwise send from a number the publisher did not route to.
        let reason = format!(
            "routing key '{}' is not the job's sender '{}' (publish with routing key = sender)",
            truncate(delivery.routing_key.as_str(), 64),
            job.sender
        );
        dead_letter(
            &ctx,
            &session,
            &delivery,
            Some(&job),
            "routing_key_mismatch",
            reason,
        )
        .await;
        return;
    }
    // A deferred copy is run only if it is the job's live one (see `DEFERRAL_HEADER`).
    let deferral = deferral_ref(&job);
    let token = header_str(&delivery.properties, DEFERRAL_HEADER);
    if let Some(token) = &token {
        match ctx.engine.store().job_deferral(&deferral).await {
            Ok(Some(live)) if &live != token => {
                metrics::job_stale_copy_dropped();
                info!(job = %job.id, "dropped a stale copy of a deferred job (another copy is the live one)");
                ack(&delivery.acker).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                database_failed(&ctx, &delivery, &job, &e.to_string()).await;
                return;
            }
        }
    }
    let ctl = RunControl {
        shutdown: ctx.runs.clone(),
        progress: None,
    };
    let run = match ctx.engine.run_job(Arc::clone(&job), &ctl).await {
        Ok(run) => {
            ctx.db_failures.store(0, Ordering::Release);
            ctx.state.set_database(true);
            run
        }
        Err(crate::engine::EngineError::Store(e)) => {
            if let Some(code) = e.refused_data() {
                // A property of the job, not an outage: reject it (what its other recipients
                // already recorded stays recorded) and stay ready for the next job.
                ctx.db_failures.store(0, Ordering::Release);
                ctx.state.set_database(true);
                let reason = format!(
                    "the database refused data of this job (error code {code}); recipients already recorded keep their outcome"
                );
                dead_letter(
                    &ctx,
                    &session,
                    &delivery,
                    Some(&job),
                    "invalid_data",
                    reason,
                )
                .await;
                return;
            }
            database_failed(&ctx, &delivery, &job, &e.to_string()).await;
            return;
        }
    };

    match decide(&run, Utc::now(), ctx.held_recheck) {
        Disposition::DeadLetter { code, reason } => {
            dead_letter(&ctx, &session, &delivery, Some(&job), code, reason).await;
            if token.is_some() {
                forget_deferral(&ctx, &deferral).await;
            }
        }
        Disposition::Delay {
            delay,
            label,
            reason,
        } => {
            let tier = DelayTier::for_delay(delay);
            let next = uuid::Uuid::new_v4().simple().to_string();
            match republish_delayed(&ctx, &session, &delivery, &tier, &next).await {
                Ok(()) => {
                    // Published first, recorded second: a crash in between leaves this
                    // delivery unacked and its token still live, so it comes back and the new
                    // copy is dropped as stale — never the other way round, which would lose
                    // the job.
                    if let Err(e) = ctx.engine.store().set_job_deferral(&deferral, &next).await {
                        warn!(job = %job.id, error = %e, "could not record the deferred copy; handing the job back");
                        ctx.state.set_database(false);
                        pause_then_requeue(&ctx, &delivery.acker).await;
                        return;
                    }
                    metrics::job_deferred(label);
                    info!(job = %job.id, campaign = %job.campaign, reason = %reason,
                        wanted = ?delay, queue = %ctx.topology.delay_queue(&tier), "job deferred");
                    ack(&delivery.acker).await;
                }
                Err(e) => {
                    warn!(job = %job.id, error = %e, "could not move the job to a delay queue; handing it back");
                    session.note_publish_failure();
                    pause_then_requeue(&ctx, &delivery.acker).await;
                }
            }
        }
        Disposition::Complete => {
            let JobRun::Finished(report) = &run else {
                unreachable!("only a finished run is complete")
            };
            // The event is information; the ledger is the record. A lost event must not make
            // the job run again, so a failed publish is logged and the job still acked.
            let event = JobCompleted::from_report(report);
            if let Err(e) = events::publish(
                &session.publisher,
                &ctx.topology,
                events::JOB_COMPLETED,
                Some(job.id.as_str()),
                &event,
            )
            .await
            {
                warn!(job = %job.id, error = %e, "could not publish job.completed");
                session.note_publish_failure();
            }
            if ack(&delivery.acker).await {
                metrics::job_acked();
            }
            if token.is_some() {
                forget_deferral(&ctx, &deferral).await;
            }
            info!(job = %job.id, campaign = %job.campaign, sent = report.total("sent"),
                failed = report.total("failed"), skipped = report.total("skipped"),
                unknown = report.total("unknown"), already_done = report.already_done,
                elapsed = ?report.elapsed, "job completed");
        }
        Disposition::Requeue => {
            info!(job = %job.id, "shutting down: job handed back to the queue");
            requeue(&delivery.acker).await;
        }
    }
}

/// The job's bytes, decoded by the message's `content_encoding`: none or `identity` as they
/// are, `gzip` inflated (bounded by the job size limit, so a small bomb can't take the
/// worker's memory). Anything else is refused with a dead-letter code and reason.
fn decoded_body(delivery: &Delivery) -> Result<std::borrow::Cow<'_, [u8]>, (&'static str, String)> {
    use std::io::Read;
    let encoding = delivery
        .properties
        .content_encoding()
        .as_ref()
        .map(|e| e.as_str().trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(std::borrow::Cow::Borrowed(&delivery.data)),
        "gzip" | "x-gzip" => {
            let limit = crate::domain::job::MAX_JOB_BYTES;
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&delivery.data[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    (
                        "invalid_encoding",
                        format!("gzip body does not inflate: {e}"),
                    )
                })?;
            if out.len() > limit {
                return Err((
                    "too_large",
                    format!("job inflates to more than the {limit} bytes allowed"),
                ));
            }
            Ok(std::borrow::Cow::Owned(out))
        }
        other => Err((
            "invalid_encoding",
            format!(
                "content encoding '{}' is not supported (send plain JSON or gzip)",
                truncate(other, 32)
            ),
        )),
    }
}

/// The store can't be reached: nothing can be sent or recorded safely. Hands the job back
/// after a back-off shared by every job of this worker.
async fn database_failed(ctx: &Ctx, delivery: &Delivery, job: &Job, error: &str) {
    ctx.state.set_database(false);
    let n = ctx.db_failures.fetch_add(1, Ordering::AcqRel) + 1;
    let wait = retry_delay(
        n,
        DB_RETRY_BASE,
        DB_RETRY_CAP,
        0.5 + rand::random::<f64>() / 2.0,
    );
    warn!(job = %job.id, error = %error, failures = n, retry_in = ?wait,
        "job failed on the database; handing it back after a back-off");
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = ctx.runs.cancelled() => {}
    }
    requeue(&delivery.acker).await;
}

/// The name a job's deferrals are recorded under: job ids are the campaign system's, unique
/// within a campaign.
fn deferral_ref(job: &Job) -> String {
    format!("{}/{}", job.campaign, job.id)
}

/// The job is done with (acked or rejected): its deferral record goes. Best effort: a record
/// left behind only makes a later stale copy of a finished job run once more, harmlessly.
async fn forget_deferral(ctx: &Ctx, deferral: &str) {
    if let Err(e) = ctx.engine.store().clear_job_deferral(deferral).await {
        debug!(error = %e, "could not clear a job's deferral record");
    }
}

/// A string header of the delivery.
fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Copies the job to `{prefix}.dead` with the reason in headers (publisher-confirmed), acks
/// the original, and announces it. The job is never retried: only fixing the cause and moving
/// it back (shovel) sends it.
async fn dead_letter(
    ctx: &Ctx,
    session: &Session,
    delivery: &Delivery,
    job: Option<&Job>,
    code: &'static str,
    reason: String,
) {
    let reason = truncate(&reason, MAX_REASON_BYTES);
    let mut headers = transit_free_headers(&delivery.properties);
    headers.insert("x-herald-reason".into(), long(&reason));
    headers.insert("x-herald-reason-code".into(), long(code));
    headers.insert(
        "x-herald-dead-lettered-at".into(),
        AMQPValue::Timestamp(Utc::now().timestamp().max(0) as u64),
    );
    let props = copy_properties(&delivery.properties, headers);
    let routing_key = delivery.routing_key.as_str();
    let published = session
        .publisher
        .publish(
            &ctx.topology.dead_exchange(),
            routing_key,
            true,
            &delivery.data,
            props,
        )
        .await;
    let (job_id, campaign) = match job {
        Some(j) => (Some(j.id.to_string()), Some(j.campaign.to_string())),
        None => ids_from_body(&delivery.data, &delivery.properties),
    };
    if let Err(e) = published {
        warn!(job = job_id.as_deref().unwrap_or("-"), error = %e, "could not dead-letter the job; handing it back");
        session.note_publish_failure();
        pause_then_requeue(ctx, &delivery.acker).await;
        return;
    }
    metrics::job_dead_lettered(code);
    warn!(job = job_id.as_deref().unwrap_or("-"), campaign = campaign.as_deref().unwrap_or("-"), reason_code = code, reason = %reason,
        "job rejected to {}", ctx.topology.dead_queue());
    ack(&delivery.acker).await;
    let event = JobDeadLettered {
        event: events::JOB_DEAD_LETTERED,
        job: job_id.clone(),
        campaign,
        routing_key: routing_key.to_owned(),
        reason_code: code,
        reason,
        at: Utc::now(),
    };
    if let Err(e) = events::publish(
        &session.publisher,
        &ctx.topology,
        events::JOB_DEAD_LETTERED,
        job_id.as_deref(),
        &event,
    )
    .await
    {
        warn!(error = %e, "could not publish job.dead_lettered");
    }
}

/// Publishes the same body to the delay queue of `tier` through the delay exchange, keeping
/// the routing key (the sender id) for its return to `{prefix}.jobs`.
async fn republish_delayed(
    ctx: &Ctx,
    session: &Session,
    delivery: &Delivery,
    tier: &DelayTier,
    token: &str,
) -> Result<(), AmqpError> {
    let mut headers = transit_free_headers(&delivery.properties);
    headers.insert(DELAY_HEADER.into(), long(tier.name));
    headers.insert(DEFERRAL_HEADER.into(), long(token));
    let deferrals = match headers.inner().get("x-herald-deferrals") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        _ => 0,
    };
    headers.insert(
        "x-herald-deferrals".into(),
        AMQPValue::LongLongInt(deferrals.saturating_add(1)),
    );
    session
        .publisher
        .publish(
            &ctx.topology.delay_exchange(),
            delivery.routing_key.as_str(),
            true,
            &delivery.data,
            copy_properties(&delivery.properties, headers),
        )
        .await
}

impl Session {
    /// A publish failed: if the channel is gone, have the loop reconnect.
    pub(super) fn note_publish_failure(&self) {
        if !self.publisher.is_open() {
            self.broken.cancel();
        }
    }
}

/// Acks; a failure means the channel is gone and the broker will redeliver (harmless: the
/// ledger knows what was sent). Returns whether the ack went out.
pub(super) async fn ack(acker: &Acker) -> bool {
    match acker.ack(BasicAckOptions::default()).await {
        Ok(done) => done,
        Err(e) => {
            debug!(error = %e, "ack failed; the broker will redeliver the job");
            false
        }
    }
}

/// Hands a job back to its queue.
pub(super) async fn requeue(acker: &Acker) {
    let nack = acker.nack(BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    });
    match tokio::time::timeout(BROKER_CALL_TIMEOUT, nack).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => debug!(error = %e, "nack failed; the broker will redeliver the job"),
        Err(_) => debug!("nack timed out; the broker will redeliver the job"),
    }
}

async fn pause_then_requeue(ctx: &Ctx, acker: &Acker) {
    tokio::select! {
        _ = tokio::time::sleep(PUBLISH_FAILURE_PAUSE) => {}
        _ = ctx.runs.cancelled() => {}
    }
    requeue(acker).await;
}
