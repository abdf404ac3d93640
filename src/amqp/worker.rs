//! The RabbitMQ worker: consumes `{prefix}.jobs`, runs each job through the engine, and acks a
//! delivery only once every recipient has a durable state or the job's future is durably
//! elsewhere (a confirmed copy in a delay queue or in `{prefix}.dead`).
//!
//! Lifecycle (mini-redis style): [`run_worker`] connects with back-off, declares the topology,
//! consumes with a bounded prefetch (= jobs at once), and spawns one task per delivery. A lost
//! connection is re-established and consuming resumes; runs still going on the old connection
//! finish (their acks fail, the broker redelivers, the ledger makes that harmless). On
//! shutdown it cancels the consumer at once, tells the runs to hand back what they have not
//! sent, waits for them up to the drain deadline, nack-requeues whatever is left, and closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Acker, BasicProperties, Channel, Connection, Consumer};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::connection::{AmqpError, Publisher, connect_with_backoff};
use super::disposition::{Disposition, decide, job_error_label};
use super::events::{self, JobCompleted, JobDeadLettered};
use super::state::WorkerState;
use super::topology::{
    DEFERRAL_HEADER, DELAY_HEADER, DelayTier, LEGACY_DELAY_HEADER, Topology, long, short,
};
use crate::domain::Job;
use crate::engine::{Engine, JobRun, RunControl};
use crate::policy::backoff::retry_delay;
use crate::telemetry::metrics;

/// How often the consume loop shows it is alive ([`WorkerState::since_progress`]) even when
/// no job arrives.
pub const TICK: Duration = Duration::from_secs(5);
/// First wait before handing a job back after a database failure; doubles per consecutive
/// failure (shared by all jobs of the worker, so they back off together) up to the cap.
const DB_RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait before handing a job back while the database is down: long enough not to spin
/// jobs through the queue, short enough to resume within a minute of the database's return.
const DB_RETRY_CAP: Duration = Duration::from_secs(60);
/// Wait before retrying on a connection that came up but could not start consuming.
const SETUP_RETRY: Duration = Duration::from_secs(1);
/// How often readiness re-checks the database on its own (not only when a job runs).
const DB_PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// Pause before handing a job back when a republish was refused, so a broker that refuses
/// everything (full disk alarm) does not see the same job bounce back at once.
const PUBLISH_FAILURE_PAUSE: Duration = Duration::from_secs(1);
/// Longest wait for one broker round trip during shutdown (cancel, nack, close): a broker that
/// is gone must not eat the drain deadline.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The dead-letter reason header is cut here: headers travel with every copy of the message.
const MAX_REASON_BYTES: usize = 4096;

/// Headers of a delivery that describe its path through queues, not the job: dropped from the
/// copies herald republishes so each copy starts clean.
const TRANSIT_HEADERS: &[&str] = &[
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
    DELAY_HEADER,
    LEGACY_DELAY_HEADER,
    DEFERRAL_HEADER,
];

/// Everything the worker needs to know about RabbitMQ.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub amqp_url: String,
    pub topology: Topology,
    /// Jobs processed at once (the consumer prefetch). Each job runs its recipients in
    /// parallel already; more jobs at once mostly help when jobs of different senders wait.
    pub prefetch: u16,
    /// How long shutdown waits for runs to hand back their work before nack-requeueing them.
    pub drain: Duration,
}

/// A worker failure that reconnecting cannot fix.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The broker refused the declarations (a queue exists with other arguments, or the user
    /// may not configure these names).
    #[error(
        "RabbitMQ refused herald's topology for prefix '{prefix}': {source}. If the queues were \
declared by something else or an older herald with other arguments, delete them or use \
another HERALD_AMQP_PREFIX"
    )]
    Topology {
        prefix: String,
        #[source]
        source: lapin::Error,
    },
}

/// State every delivery task shares.
struct Ctx {
    engine: Arc<Engine>,
    topology: Topology,
    state: Arc<WorkerState>,
    /// Cancelled when draining starts: runs stop starting sends and hand back the rest.
    runs: CancellationToken,
    /// Consecutive runs that failed on the database; drives the shared back-off.
    db_failures: AtomicU32,
    /// When keys held by another run are looked at again: after that run's lease could have
    /// expired, had it died.
    held_recheck: Duration,
}

/// One connection with its consume channel and its confirm-mode publish channel.
struct Session {
    connection: Connection,
    consume: Channel,
    publisher: Publisher,
    consumer_tag: ShortString,
    /// Cancelled by a task that found the publish channel closed, so the loop reconnects
    /// instead of failing every later job on a dead channel.
    broken: CancellationToken,
}

/// Why consuming stopped.
enum End {
    Shutdown,
    Lost(String),
}

/// Runs a worker until `shutdown` is cancelled and the drain is over. `state`, when given, is
/// kept up to date for health endpoints.
pub async fn run_worker(
    config: WorkerConfig,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    state: Option<Arc<WorkerState>>,
) -> Result<(), WorkerError> {
    let state = state.unwrap_or_default();
    state.tick();
    let held_recheck = engine.config().lease;
    let ctx = Arc::new(Ctx {
        engine,
        topology: config.topology.clone(),
        state: Arc::clone(&state),
        runs: CancellationToken::new(),
        db_failures: AtomicU32::new(0),
        held_recheck,
    });
    let probe = tokio::spawn(probe_database(Arc::clone(&ctx), shutdown.clone()));

    let mut tasks = Tasks::default();
    let mut sessions = 0u64;
    let mut current: Option<Arc<Session>> = None;
    let result = loop {
        let role = format!("worker {}", config.topology.prefix());
        let connecting = connect_with_backoff(&config.amqp_url, &role, &shutdown);
        tokio::pin!(connecting);
        let mut tick = tokio::time::interval(TICK);
        // Waiting for the broker is progress too: liveness must not restart a worker for an
        // outage a restart cannot fix (readiness says it is not connected).
        let connected = loop {
            tokio::select! {
                c = &mut connecting => break c,
                _ = tick.tick() => state.tick(),
            }
        };
        let Some(conn) = connected else {
            break Ok(());
        };
        sessions += 1;
        let (session, consumer) = match open_session(conn, &config, sessions).await {
            Ok(s) => s,
            Err(SetupError::Declare(e)) if refused_for_good(&e) => {
                break Err(WorkerError::Topology {
                    prefix: config.topology.prefix().to_owned(),
                    source: e,
                });
            }
            Err(e) => {
                warn!(error = %e, "cannot set up consuming; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(SETUP_RETRY) => continue,
                    _ = shutdown.cancelled() => break Ok(()),
                }
            }
        };
        let session = Arc::new(session);
        info!(
            queue = %config.topology.jobs_queue(),
            prefetch = config.prefetch,
            "consuming jobs"
        );
        state.set_broker(true);
        let end = consume(&ctx, &session, consumer, &mut tasks, &shutdown).await;
        state.set_broker(false);
        match end {
            End::Shutdown => {
                current = Some(session);
                break Ok(());
            }
            End::Lost(why) => {
                warn!(
                    reason = %why,
                    jobs_in_flight = tasks.len(),
                    "lost the RabbitMQ connection; reconnecting (jobs in flight finish; the broker redelivers them)"
                );
                // Closing a half-broken connection hands its unacked jobs back now rather than
                // at the next heartbeat timeout.
                close(&session.connection).await;
            }
        }
    };

    state.set_draining();
    ctx.runs.cancel();
    drain(&mut tasks, config.drain).await;
    if let Some(session) = current {
        close(&session.connection).await;
    }
    probe.abort();
    info!("worker stopped");
    result
}

/// Why a fresh connection could not start consuming.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("declaring the topology: {0}")]
    Declare(lapin::Error),
    #[error(transparent)]
    Broker(#[from] AmqpError),
}

impl From<lapin::Error> for SetupError {
    fn from(e: lapin::Error) -> Self {
        Self::Broker(AmqpError::Broker(e))
    }
}

/// A declaration error that retrying cannot fix: a queue exists with other arguments
/// (PRECONDITION_FAILED) or the user may not configure these names (ACCESS_REFUSED).
fn refused_for_good(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(p) if matches!(
            p.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::ACCESSREFUSED)
        )
    )
}

async fn open_session(
    conn: Connection,
    config: &WorkerConfig,
    n: u64,
) -> Result<(Session, Consumer), SetupError> {
    let publisher = Publisher::open(&conn).await?;
    config
        .topology
        .declare(publisher.channel())
        .await
        .map_err(SetupError::Declare)?;
    let consume = conn.create_channel().await?;
    // Per-consumer prefetch: at most this many unacked jobs reach this worker.
    consume
        .basic_qos(config.prefetch.max(1), BasicQosOptions::default())
        .await?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "herald".into());
    let tag = format!("herald-worker-{host}-{}-{n}", std::process::id());
    let consumer = consume
        .basic_consume(
            config.topology.jobs_queue().into(),
            short(&tag).unwrap_or_else(|| ShortString::from("")),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((
        Session {
            connection: conn,
            consume,
            publisher,
            consumer_tag: consumer.tag(),
            broken: CancellationToken::new(),
        },
        consumer,
    ))
}

async fn consume(
    ctx: &Arc<Ctx>,
    session: &Arc<Session>,
    mut consumer: Consumer,
    tasks: &mut Tasks,
    shutdown: &CancellationToken,
) -> End {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // Stop taking work at once. Deliveries prefetched but not started go back to
                // the queue when the channel closes after the drain.
                let cancel = session
                    .consume
                    .basic_cancel(session.consumer_tag.clone(), BasicCancelOptions::default());
                match tokio::time::timeout(BROKER_CALL_TIMEOUT, cancel).await {
                    Ok(Ok(())) => info!("stopped consuming; draining"),
                    Ok(Err(e)) => warn!(error = %e, "could not cancel the consumer; draining anyway"),
                    Err(_) => warn!("cancelling the consumer timed out; draining anyway"),
                }
                return End::Shutdown;
            }
            _ = session.broken.cancelled() => {
                return End::Lost("the publish channel was closed".into());
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    ctx.state.tick();
                    tasks.spawn(ctx, session, delivery);
                }
                Some(Err(e)) => return End::Lost(e.to_string()),
                None => return End::Lost("the broker cancelled the consumer (was the queue deleted?)".into()),
            },
            Some(done) = tasks.set.join_next_with_id(), if !tasks.set.is_empty() => {
                tasks.reap(done).await;
                ctx.state.tick();
            }
            _ = tick.tick() => ctx.state.tick(),
        }
    }
}

/// Waits for the runs to hand back their work, up to `grace`; then nack-requeues the rest.
async fn drain(tasks: &mut Tasks, grace: Duration) {
    if tasks.set.is_empty() {
        return;
    }
    info!(jobs = tasks.len(), grace = ?grace, "draining jobs in progress");
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        tokio::select! {
            next = tasks.set.join_next_with_id() => match next {
                Some(done) => tasks.reap(done).await,
                None => return,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    warn!(
        jobs = tasks.len(),
        "drain deadline reached; handing unfinished jobs back to the queue"
    );
    // Stop the tasks first so none acks after its job was handed back (an acker is single-use
    // anyway; this keeps the log honest).
    tasks.set.abort_all();
    for (_, acker) in tasks.ackers.drain() {
        requeue(&acker).await;
    }
    while tasks.set.join_next().await.is_some() {}
}

/// The delivery tasks and the ackers needed to hand their jobs back if a task dies or the
/// drain deadline passes.
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    ackers: HashMap<tokio::task::Id, Acker>,
}

impl Tasks {
    fn len(&self) -> usize {
        self.set.len()
    }

    fn spawn(&mut self, ctx: &Arc<Ctx>, session: &Arc<Session>, delivery: Delivery) {
        let acker = delivery.acker.clone();
        let handle = self.set.spawn(handle_delivery(
            Arc::clone(ctx),
            Arc::clone(session),
            delivery,
        ));
        self.ackers.insert(handle.id(), acker);
    }

    async fn reap(&mut self, done: Result<(tokio::task::Id, ()), JoinError>) {
        match done {
            Ok((id, ())) => {
                self.ackers.remove(&id);
            }
            Err(e) => {
                let acker = self.ackers.remove(&e.id());
                if e.is_panic() {
                    // A bug, not the job's fault as far as we know: hand it back. If it panics
                    // every worker, the queue's delivery limit moves it to `{prefix}.dead`.
                    error!(error = %e, "a job task panicked; handing the job back");
                    if let Some(acker) = acker {
                        requeue(&acker).await;
                    }
                }
            }
        }
    }
}

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
async fn handle_delivery(ctx: Arc<Ctx>, session: Arc<Session>, delivery: Delivery) {
    let _in_flight = InFlightGuard::new(&ctx.state);
    metrics::job_consumed(job_age(&delivery.properties));

    let body = match decoded_body(&delivery) {
        Ok(body) => body,
        Err((code, reason)) => {
            dead_letter(&ctx, &session, &delivery, None, code, reason).await;
            return;
        }
    };
    let job = match Job::parse(&body) {
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
    fn note_publish_failure(&self) {
        if !self.publisher.is_open() {
            self.broken.cancel();
        }
    }
}

/// The delivery's headers without the ones describing its trip through queues.
fn transit_free_headers(props: &BasicProperties) -> FieldTable {
    let mut out = FieldTable::default();
    if let Some(h) = props.headers() {
        for (k, v) in h {
            if !TRANSIT_HEADERS.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Properties for a copy herald republishes: what identifies the job (message id, timestamp,
/// content type, correlation id, app id, type, priority) with new headers, persistent. Left
/// out: `expiration` (a copy parked in a delay or dead queue must not expire on the original's
/// clock) and `user_id` (RabbitMQ rejects a user id that is not the publishing connection's).
fn copy_properties(orig: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut p = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
        .with_content_type(
            orig.content_type()
                .clone()
                .unwrap_or_else(|| ShortString::from("application/json")),
        );
    if let Some(v) = orig.content_encoding() {
        p = p.with_content_encoding(v.clone());
    }
    if let Some(v) = orig.message_id() {
        p = p.with_message_id(v.clone());
    }
    if let Some(v) = orig.timestamp() {
        p = p.with_timestamp(*v);
    }
    if let Some(v) = orig.correlation_id() {
        p = p.with_correlation_id(v.clone());
    }
    if let Some(v) = orig.app_id() {
        p = p.with_app_id(v.clone());
    }
    if let Some(v) = orig.kind() {
        p = p.with_type(v.clone());
    }
    if let Some(v) = orig.priority() {
        p = p.with_priority(*v);
    }
    p
}

/// How long ago the job was published, from the AMQP `timestamp` (seconds since the epoch)
/// when the publisher set it.
fn job_age(props: &BasicProperties) -> Option<Duration> {
    let ts = (*props.timestamp())?;
    let now = Utc::now().timestamp();
    u64::try_from(now)
        .ok()
        .and_then(|now| now.checked_sub(ts))
        .map(Duration::from_secs)
}

/// Job and campaign ids of a job that did not parse, for the log and the event: from the body
/// if it is JSON far enough, else the AMQP `message_id`.
fn ids_from_body(body: &[u8], props: &BasicProperties) -> (Option<String>, Option<String>) {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(|s| truncate(s, 256))
    };
    let job = field("job_id").or_else(|| props.message_id().as_ref().map(|m| m.to_string()));
    (job, field("campaign_id"))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Acks; a failure means the channel is gone and the broker will redeliver (harmless: the
/// ledger knows what was sent). Returns whether the ack went out.
async fn ack(acker: &Acker) -> bool {
    match acker.ack(BasicAckOptions::default()).await {
        Ok(done) => done,
        Err(e) => {
            debug!(error = %e, "ack failed; the broker will redeliver the job");
            false
        }
    }
}

/// Hands a job back to its queue.
async fn requeue(acker: &Acker) {
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

async fn close(conn: &Connection) {
    if !conn.status().connected() {
        return;
    }
    let closing = conn.close(200, ShortString::from("herald worker stopping"));
    if let Ok(Err(e)) = tokio::time::timeout(BROKER_CALL_TIMEOUT, closing).await {
        debug!(error = %e, "closing the RabbitMQ connection");
    }
}

/// Keeps readiness honest while no job runs, and the campaign gauges fresh: one cheap query
/// every few seconds.
async fn probe_database(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(DB_PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let ok = crate::http::health::probe_store_and_campaigns(ctx.engine.store().as_ref()).await;
        if ok != ctx.state.database_ok() {
            if ok {
                info!("database reachable");
            } else {
                warn!("database unreachable; the worker is not ready");
            }
        }
        ctx.state.set_database(ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(table: &FieldTable, name: &str) -> Option<String> {
        match table.inner().get(name) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        }
    }

    #[test]
    fn copies_drop_transit_headers_expiration_and_user_id() {
        let mut h = FieldTable::default();
        h.insert("x-death".into(), AMQPValue::Void);
        h.insert(DELAY_HEADER.into(), long("5s"));
        h.insert("tenant".into(), long("acme"));
        let orig = BasicProperties::default()
            .with_headers(h)
            .with_message_id("j1".into())
            .with_timestamp(1_700_000_000)
            .with_expiration("60000".into())
            .with_user_id("someone".into());
        let copy = copy_properties(&orig, transit_free_headers(&orig));
        let headers = copy.headers().clone().unwrap();
        assert_eq!(header(&headers, "tenant").as_deref(), Some("acme"));
        assert!(!headers.inner().contains_key("x-death"));
        assert!(!headers.inner().contains_key(DELAY_HEADER));
        assert_eq!(copy.message_id().as_ref().map(|m| m.as_str()), Some("j1"));
        assert_eq!(*copy.timestamp(), Some(1_700_000_000));
        assert_eq!(*copy.delivery_mode(), Some(2));
        assert!(copy.expiration().is_none());
        assert!(copy.user_id().is_none());
    }

    #[test]
    fn ids_of_an_invalid_job_come_from_what_parses() {
        let props = BasicProperties::default().with_message_id("from-props".into());
        let (job, campaign) = ids_from_body(
            br#"{"version": 9, "job_id": "j9", "campaign_id": "c9"}"#,
            &props,
        );
        assert_eq!(job.as_deref(), Some("j9"));
        assert_eq!(campaign.as_deref(), Some("c9"));
        let (job, campaign) = ids_from_body(b"not json", &props);
        assert_eq!(job.as_deref(), Some("from-props"));
        assert_eq!(campaign, None);
    }

    #[test]
    fn only_refusals_that_retrying_cannot_fix_stop_the_worker() {
        use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};
        let soft = |e: AMQPSoftError| {
            lapin::Error::from(lapin::ErrorKind::ProtocolError(AMQPError::new(
                AMQPErrorKind::Soft(e),
                "test".into(),
            )))
        };
        assert!(refused_for_good(&soft(AMQPSoftError::PRECONDITIONFAILED)));
        assert!(refused_for_good(&soft(AMQPSoftError::ACCESSREFUSED)));
        assert!(!refused_for_good(&soft(AMQPSoftError::NOTFOUND)));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!refused_for_good(&lapin::Error::from(io)));
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let s = "ä".repeat(10);
        let t = truncate(&s, 5);
        assert!(t.starts_with("ää") && t.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn job_age_comes_from_the_timestamp() {
        let now = Utc::now().timestamp() as u64;
        let props = BasicProperties::default().with_timestamp(now - 30);
        let age = job_age(&props).unwrap();
        assert!(age >= Duration::from_secs(29) && age <= Duration::from_secs(32));
        assert_eq!(job_age(&BasicProperties::default()), None);
    }
}
