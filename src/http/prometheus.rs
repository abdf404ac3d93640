//! `/metrics` on its own listener (`HERALD_METRICS_ADDR`), rendered from the recorder that
//! `telemetry::metrics::install` set up. A listener of its own so scraping never competes with
//! webhooks, and so the port can stay cluster-internal while `/webhooks` faces Meta.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::server::{ServerHandle, bind, serve_until};

/// Prometheus' text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How often histogram samples are folded into their buckets. Without it they pile up in
/// memory between scrapes (or for ever, if nothing scrapes).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// A scrape is one render of a few kilobytes; nothing legitimate needs longer.
const METRICS_DRAIN: Duration = Duration::from_secs(5);

/// The `/metrics` route alone (for tests, or to merge into another router).
pub fn routes(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(handle)
}

async fn render(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render())
}

/// Serves `/metrics` on `addr` and runs the recorder's upkeep until `shutdown` is cancelled.
pub async fn spawn_metrics_server(
    addr: SocketAddr,
    handle: PrometheusHandle,
    shutdown: CancellationToken,
) -> std::io::Result<ServerHandle> {
    let listener = bind(addr, "metrics").await?;
    let addr = listener.local_addr()?;
    let upkeep = handle.clone();
    let stop_upkeep = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                () = stop_upkeep.cancelled() => return,
                _ = every.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let task = tokio::spawn(serve_until(
        listener,
        routes(handle),
        shutdown,
        METRICS_DRAIN,
    ));
    info!(%addr, "Prometheus metrics on /metrics");
    Ok(ServerHandle { addr, task })
}
