//! The RabbitMQ worker: consumes `{prefix}.jobs`, runs each job through the engine, and acks a
//! delivery only once every recipient has a durable state or the job's future is durably
//! elsewhere (a confirmed copy in a delay queue or in `{prefix}.dead`). Beside the jobs it
//! consumes `{prefix}.conversions` (`conversions`), drained with them.
//!
//! Lifecycle (mini-redis style): [`run_worker`] connects with back-off, declares the topology,
//! consumes with a bounded prefetch (= jobs at once), and spawns one task per delivery. A lost
//! connection is re-established and consuming resumes; runs still going on the old connection
//! finish (their acks fail, the broker redelivers, the ledger makes that harmless). On
//! shutdown it cancels the consumer at once, tells the runs to hand back what they have not
//! sent, waits for them up to the drain deadline, nack-requeues whatever is left, and closes.
//! What becomes of one delivery is `delivery`; the copies it republishes are `copies`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, Channel, Connection, Consumer};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::connection::{AmqpError, Publisher, connect_with_backoff};
use super::conversions::{self, Conversions};
use super::delivery::{handle_delivery, requeue};
use super::state::WorkerState;
use super::topology::{Topology, short};
use crate::engine::Engine;

/// How often the consume loop shows it is alive ([`WorkerState::since_progress`]) even when
/// no job arrives.
pub const TICK: Duration = Duration::from_secs(5);
/// Wait before retrying on a connection that came up but could not start consuming.
const SETUP_RETRY: Duration = Duration::from_secs(1);
/// How often readiness re-checks the database on its own (not only when a job runs).
const DB_PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for one broker round trip during shutdown (cancel, nack, close): a broker that
/// is gone must not eat the drain deadline.
pub(super) const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(3);

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
pub(super) struct Ctx {
    pub(super) engine: Arc<Engine>,
    pub(super) topology: Topology,
    pub(super) state: Arc<WorkerState>,
    /// Cancelled when draining starts: runs stop starting sends and hand back the rest.
    pub(super) runs: CancellationToken,
    /// Consecutive runs that failed on the database; drives the shared back-off.
    pub(super) db_failures: AtomicU32,
    /// When keys held by another run are looked at again: after that run's lease could have
    /// expired, had it died.
    pub(super) held_recheck: Duration,
}

/// One connection with its consume channel and its confirm-mode publish channel.
pub(super) struct Session {
    pub(super) connection: Connection,
    consume: Channel,
    pub(super) publisher: Publisher,
    consumer_tag: ShortString,
    /// Cancelled by a task that found the publish channel closed, so the loop reconnects
    /// instead of failing every later job on a dead channel.
    pub(super) broken: CancellationToken,
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
    // Fallback deadlines (and any fallback a crashed run left due) fire here too.
    let timers = tokio::spawn(Arc::clone(&ctx.engine).run_timers(ctx.runs.clone()));

    let mut tasks = Tasks::default();
    let mut sessions = 0u64;
    let mut current: Option<(Arc<Session>, Conversions)> = None;
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
        let (session, consumer, opened) = match open_session(conn, &config, sessions).await {
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
        let conversions = Conversions::spawn(&ctx, &session, opened, &shutdown);
        info!(
            queue = %config.topology.jobs_queue(),
            prefetch = config.prefetch,
            conversions = %config.topology.conversions_queue(),
            "consuming jobs"
        );
        state.set_broker(true);
        let end = consume(&ctx, &session, consumer, &mut tasks, &shutdown).await;
        state.set_broker(false);
        match end {
            End::Shutdown => {
                current = Some((session, conversions));
                break Ok(());
            }
            End::Lost(why) => {
                conversions.abandon();
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
    let (session, conversions) = current.unzip();
    let finish_conversions = async {
        if let Some(c) = conversions {
            c.finish(config.drain).await;
        }
    };
    tokio::join!(drain(&mut tasks, config.drain), finish_conversions);
    if let Some(session) = session {
        close(&session.connection).await;
    }
    probe.abort();
    timers.abort();
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
) -> Result<(Session, Consumer, conversions::Opened), SetupError> {
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
    let opened = conversions::open(
        &conn,
        &config.topology.conversions_queue(),
        &format!("{tag}-conversions"),
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
        opened,
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
        let ok = crate::app::probe_store_and_campaigns(ctx.engine.store().as_ref()).await;
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
}
