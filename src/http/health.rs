//! Kubernetes probes for every herald process that runs for long: `/healthz` (liveness — the
//! process still makes progress; never a dependency check, or a database outage would restart
//! every pod) and `/readyz` (readiness — dependencies answer and the process is not draining).
//! What "ready" means differs per process, so it sits behind the tiny [`Readiness`] trait:
//! `herald serve` uses [`ServeHealth`], `herald worker` its `WorkerState`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::server::{ServerHandle, bind, serve_until};
use crate::app::probe_store_and_campaigns;
use crate::store::Store;

/// How long the health server waits for probe requests in flight when it stops: probes are
/// instant, so only a stuck client would need longer.
const HEALTH_DRAIN: Duration = Duration::from_secs(5);
/// How often [`ServeHealth`] asks the store whether it answers. Kubernetes probes every 5 s;
/// probing more often than that only loads the database.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Without a probe-loop tick for this long the process is wedged (a blocked runtime, a
/// deadlock): liveness fails and Kubernetes restarts it. Well above the probe interval plus
/// timeout, so one slow database round trip never restarts a pod.
const STALLED_AFTER: Duration = Duration::from_secs(30);
/// Readiness trusts a store answer for this long; older means the probe loop fell behind.
const PROBE_STALE_AFTER: Duration = Duration::from_secs(10);

/// What a process tells its probes. Must be cheap: called on every probe request, so
/// implementations read flags that their own loops keep up to date.
pub trait Readiness: Send + Sync + 'static {
    /// Take traffic / work now: dependencies answer and no drain has started.
    fn ready(&self) -> bool;
    /// The process still makes progress; `false` asks Kubernetes for a restart.
    fn alive(&self) -> bool;
}

/// `/healthz` and `/readyz`, to merge into a process's router.
pub fn routes(readiness: Arc<dyn Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn healthz(State(r): State<Arc<dyn Readiness>>) -> (StatusCode, &'static str) {
    if r.alive() {
        (StatusCode::OK, "alive\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stalled\n")
    }
}

async fn readyz(State(r): State<Arc<dyn Readiness>>) -> (StatusCode, &'static str) {
    if r.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves `/healthz` and `/readyz` on `addr` until `shutdown` is cancelled — for processes
/// whose main work is not HTTP (the worker). Bound before it returns, so a port in use is an
/// error here and `addr` may use port 0 (the bound address is in the handle).
pub async fn spawn_health_server(
    addr: SocketAddr,
    readiness: Arc<dyn Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<ServerHandle> {
    let listener = bind(addr, "health").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve_until(
        listener,
        routes(readiness),
        shutdown,
        HEALTH_DRAIN,
    ));
    info!(%addr, "health endpoints /healthz and /readyz listening");
    Ok(ServerHandle { addr, task })
}

/// `herald serve`'s health: ready while the store answers and no drain started; alive while
/// its probe loop ticks.
#[derive(Debug)]
pub struct ServeHealth {
    /// SIGTERM received: readiness false at once, so load balancers stop routing here
    /// before the listener closes.
    draining: AtomicBool,
    /// The last store probe answered in time.
    store_ok: AtomicBool,
    /// When the last store probe succeeded, in ms since `epoch`.
    store_ok_at_ms: AtomicU64,
    /// When the probe loop last ran, in ms since `epoch` (liveness).
    tick_ms: AtomicU64,
    /// Monotonic base of the two timestamps, so they fit in atomics.
    epoch: Instant,
}

impl ServeHealth {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            draining: AtomicBool::new(false),
            store_ok: AtomicBool::new(false),
            store_ok_at_ms: AtomicU64::new(0),
            tick_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Flips readiness to false for good: the first step of a graceful shutdown.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn age(&self, at_ms: &AtomicU64) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(at_ms.load(Ordering::Acquire)))
    }

    /// Records one probe result; logs only when the answer changes.
    fn record_probe(&self, ok: bool) {
        let now = self.now_ms();
        self.tick_ms.store(now, Ordering::Release);
        if ok {
            self.store_ok_at_ms.store(now, Ordering::Release);
        }
        let was = self.store_ok.swap(ok, Ordering::AcqRel);
        match (was, ok) {
            (false, true) => info!("store answers: ready"),
            (true, false) => warn!("store does not answer: not ready"),
            _ => {}
        }
    }

    /// Probes the store every [`PROBE_INTERVAL`] until `stop`: one primary-key lookup of a
    /// campaign that does not exist, the cheapest question the store trait can answer.
    pub fn spawn_probe(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let health = Arc::clone(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PROBE_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                let ok = probe_store_and_campaigns(store.as_ref()).await;
                health.record_probe(ok);
            }
        })
    }
}

impl Readiness for ServeHealth {
    fn ready(&self) -> bool {
        !self.draining()
            && self.store_ok.load(Ordering::Acquire)
            && self.age(&self.store_ok_at_ms) < PROBE_STALE_AFTER
    }

    fn alive(&self) -> bool {
        // Before the first tick the process is starting, not stalled (`tick_ms` is 0 and the
        // age is the time since start, which is short).
        self.age(&self.tick_ms) < STALLED_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_ready_only_after_the_store_answered_and_until_draining() {
        let h = ServeHealth::new();
        assert!(!h.ready());
        assert!(h.alive());
        h.record_probe(true);
        assert!(h.ready());
        h.record_probe(false);
        assert!(!h.ready());
        h.record_probe(true);
        h.start_draining();
        assert!(!h.ready());
        assert!(h.alive(), "draining is not dying");
    }
}
