//! `herald worker` with its probes and metrics: the RabbitMQ worker itself lives in
//! `crate::amqp`; this adds `/healthz` + `/readyz` on `HERALD_HTTP_ADDR` (read from its
//! `WorkerState`) and `/metrics` on `HERALD_METRICS_ADDR`, which the worker Deployment probes
//! and scrapes. Both listeners outlive the worker's drain, so `/readyz` reports 503 while it
//! drains and `/healthz` stays 200 until it exits.

use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::EndpointOpts;
use super::health::{Readiness, spawn_health_server};
use super::prometheus::spawn_metrics_server;
use crate::amqp::{TICK, WorkerArgs, WorkerState};
use crate::cli::{CliError, GlobalOpts};

/// A consume loop that has not ticked for this many ticks is stuck: it ticks every
/// [`TICK`] even when idle, so six missed ticks (30 s) are no slow job, and with the probe's
/// three failures Kubernetes restarts a worker stuck for well over a minute.
const STALLED_TICKS: u32 = 6;

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
    let handle = crate::telemetry::metrics::install(None)
        .map_err(|e| CliError::runtime(format!("cannot install the metrics recorder: {e}")))?;
    let stop = CancellationToken::new();
    let metrics = spawn_metrics_server(cmd.endpoints.metrics_addr, handle, stop.clone())
        .await
        .map_err(CliError::runtime)?;
    let state = Arc::new(WorkerState::new());
    let health = spawn_health_server(
        cmd.endpoints.http_addr,
        Arc::clone(&state) as Arc<dyn Readiness>,
        stop.clone(),
    )
    .await
    .map_err(CliError::runtime)?;
    let result = crate::amqp::worker_with_state(g, cmd.worker, state).await;
    stop.cancel();
    let _ = health.task.await;
    let _ = metrics.task.await;
    result
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
