//! `herald worker`: reads its settings once, opens the store (waiting for it if it is not up
//! yet), builds the engine, and runs the RabbitMQ worker ([`run_worker`]) until SIGTERM or
//! Ctrl-C and the drain end. Beside it `/healthz` + `/readyz` on `HERALD_HTTP_ADDR` (read from
//! its [`WorkerState`]) and `/metrics` on `HERALD_METRICS_ADDR`, which the worker Deployment
//! probes and scrapes. Both listeners outlive the drain, so `/readyz` reports 503 while it
//! drains and `/healthz` stays 200 until it exits.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::amqp::{AmqpOpts, TICK, Topology, WorkerConfig, WorkerState, run_worker};
use crate::app::{CliError, DrainOpts, EngineOpts, GlobalOpts, PurgeOpts, spawn_purges};
use crate::crm::{RelayConfig, spawn_relay};
use crate::http::{EndpointOpts, Readiness, install_metrics, serve_metrics, spawn_health_server};
use crate::policy::backoff::retry_delay;
use crate::store::Store;

/// A consume loop that has not ticked for this many ticks is stuck: it ticks every
/// [`TICK`] even when idle, so six missed ticks (30 s) are no slow job, and with the probe's
/// three failures Kubernetes restarts a worker stuck for well over a minute.
const STALLED_TICKS: u32 = 6;

/// How long the recipient-events relay may take to finish its round after SIGTERM.
const RELAY_STOP: Duration = Duration::from_secs(5);

impl Readiness for WorkerState {
    fn ready(&self) -> bool {
        self.is_ready()
    }

    fn alive(&self) -> bool {
        // `None`: the loop has not started yet (still waiting for the database), which is
        // starting, not stalled.
        self.since_progress()
            .is_none_or(|quiet| quiet < TICK * STALLED_TICKS)
    }
}

/// `herald worker`'s command line: the worker's own settings plus where it listens.
#[derive(Args, Debug)]
pub struct WorkerCommand {
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub endpoints: EndpointOpts,
}

/// Runs `herald worker` with its health and metrics listeners.
pub async fn worker_command(g: &GlobalOpts, cmd: WorkerCommand) -> Result<(), CliError> {
    let handle = install_metrics()?;
    let stop = CancellationToken::new();
    let metrics = serve_metrics(cmd.endpoints.metrics_addr, handle, stop.clone()).await?;
    let state = Arc::new(WorkerState::new());
    let health = spawn_health_server(
        cmd.endpoints.http_addr,
        Arc::clone(&state) as Arc<dyn Readiness>,
        stop.clone(),
    )
    .await
    .map_err(CliError::runtime)?;
    let result = worker(g, cmd.worker, state).await;
    stop.cancel();
    let _ = health.task.await;
    let _ = metrics.task.await;
    result
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub amqp: AmqpOpts,
    /// Jobs processed at once (the consumer prefetch). Recipients of one job already go out in
    /// parallel; a few jobs at once keep several senders busy.
    #[arg(long, env = "HERALD_PREFETCH", default_value_t = 4)]
    pub prefetch: u16,
    #[command(flatten)]
    pub drain: DrainOpts,
    #[command(flatten)]
    pub engine: EngineOpts,
    /// How long a worker's claim on a recipient lasts without renewal. After a worker dies,
    /// its recipients are taken over (or recorded `unknown` if mid-request) this much later.
    /// A live worker renews its claims every quarter of this (a heartbeat), so it only lapses
    /// when the worker is gone or cannot reach the database for most of it.
    #[arg(long, env = "HERALD_LEASE_SECONDS", default_value_t = 10)]
    pub lease_seconds: u64,
    /// How long a recipient stays `unknown` (a crash or timeout mid-request) before it is sent
    /// once more, if the status webhooks by then show Meta never accepted it (statuses of the
    /// sender's later messages arrived, none for it). Needs `herald serve` receiving webhooks
    /// on the same database; `off` keeps unknowns unknown. A job with such recipients is kept
    /// (deferred) until they are resolved, at most an hour.
    #[arg(long, env = "HERALD_RESEND_UNKNOWN_AFTER", default_value = "10m")]
    pub resend_unknown_after: String,
    /// The retention purge every worker runs (safe in several at once).
    #[command(flatten)]
    pub purge: PurgeOpts,
}

/// A duration like `10m` or `90s`, or `off`.
fn parse_optional_duration(s: &str) -> Result<Option<Duration>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 10m, 90s, or off)"))?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s (or off)".into());
    }
    Ok(Some(d))
}

impl WorkerArgs {
    fn check(&self) -> Result<(), CliError> {
        self.amqp.check()?;
        if !(3..=3600).contains(&self.lease_seconds) {
            return Err(CliError::Usage(format!(
                "--lease-seconds must be between 3 and 3600, got {}",
                self.lease_seconds
            )));
        }
        parse_optional_duration(&self.resend_unknown_after).map_err(|e| {
            CliError::Usage(format!(
                "--resend-unknown-after '{}': {e}",
                self.resend_unknown_after
            ))
        })?;
        if self.prefetch == 0 {
            return Err(CliError::Usage("--prefetch must be at least 1".into()));
        }
        self.drain.check()?;
        self.purge.schedule()?;
        self.engine.check()
    }

    /// The worker's RabbitMQ settings.
    fn config(&self) -> WorkerConfig {
        WorkerConfig {
            amqp_url: self.amqp.amqp_url.clone(),
            topology: Topology::new(self.amqp.amqp_prefix.clone()),
            prefetch: self.prefetch,
            drain: self.drain.drain(),
        }
    }
}

/// Runs the worker itself. `state` is shared with the worker's health endpoints.
async fn worker(g: &GlobalOpts, args: WorkerArgs, state: Arc<WorkerState>) -> Result<(), CliError> {
    args.check()?;
    let mut setup = args.engine.setup()?;
    // Numbers' rates hold across workers: slots are leased from the store (Postgres); with
    // SQLite (one process) the store declines and the local bucket paces.
    setup.shared_rates = true;
    let resend_unknown_after =
        parse_optional_duration(&args.resend_unknown_after).map_err(CliError::Usage)?;
    setup.config.lease = Duration::from_secs(args.lease_seconds);
    setup.config.resend_unknown_after = resend_unknown_after;
    setup.config.unknown_give_up = resend_unknown_after.map_or(Duration::from_secs(3600), |d| {
        (d * 6).max(Duration::from_secs(3600))
    });
    let graph = g.graph_client()?;
    let shutdown = crate::signal::cancel_on_shutdown_signal(Some(crate::signal::HANDING_BACK));
    let Some(store) = open_store_patiently(g, &shutdown).await? else {
        return Ok(());
    };
    state.set_database(true);
    let engine = Arc::new(setup.build(store, graph));
    let purges = args.purge.schedule()?.map(|(policy, every)| {
        let clock = engine.config().clock.clone();
        spawn_purges(
            Arc::clone(engine.store()),
            policy,
            clock,
            every,
            shutdown.clone(),
        )
    });
    let relay = crate::crm::sink(&args.engine.recipient_events, &args.amqp)?.map(|sink| {
        let config = RelayConfig {
            clock: engine.config().clock.clone(),
            ..RelayConfig::default()
        };
        spawn_relay(Arc::clone(engine.store()), sink, config, shutdown.clone())
    });
    let result = run_worker(args.config(), engine, shutdown, Some(state)).await;
    if let Some(relay) = relay {
        // Stopped by the same signal; a round cut short leaves its claims to lapse.
        let _ = tokio::time::timeout(RELAY_STOP, relay).await;
    }
    if let Some(purges) = purges {
        // A batch cut short rolls back; the finished ones are kept.
        purges.abort();
    }
    result.map_err(|e| CliError::Runtime(anyhow::Error::new(e)))
}

/// Opens the store, retrying while the database is unreachable (a worker started with or
/// before its database must wait, not crash-loop). Configuration errors end it at once.
/// `None` when shutdown came first.
async fn open_store_patiently(
    g: &GlobalOpts,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<dyn Store>>, CliError> {
    let mut attempt = 0u32;
    loop {
        match g.open_store().await {
            Ok(store) => return Ok(Some(store)),
            Err(e @ CliError::Usage(_)) => return Err(e),
            Err(e) => {
                attempt += 1;
                let wait = retry_delay(
                    attempt,
                    Duration::from_secs(1),
                    Duration::from_secs(30),
                    0.5 + rand::random::<f64>() / 2.0,
                );
                warn!(error = %e, attempt, retry_in = ?wait, "database not reachable yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Ok(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_ready_when_connected_and_alive_while_draining() {
        let s = WorkerState::new();
        let r: &dyn Readiness = &s;
        assert!(!r.ready());
        assert!(r.alive(), "starting is not stalled");
        s.set_broker(true);
        s.set_database(true);
        s.tick();
        assert!(r.ready());
        s.set_draining();
        assert!(!r.ready());
        assert!(r.alive());
    }
}
