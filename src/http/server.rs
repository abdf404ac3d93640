//! `herald serve`'s lifecycle: one router (webhooks, admin API, probes) on one listener, and the
//! shutdown order Kubernetes needs — readiness false first, keep answering for the configured
//! delay while load balancers drop this pod, then stop accepting and let requests in flight
//! finish within the drain deadline. Also the small helpers every herald listener shares.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::admin;
use super::health::{self, Readiness, ServeHealth};
use super::webhooks::{self, WebhookConfig};
use crate::store::Store;

/// Everything `herald serve` needs besides the store and the listener.
#[derive(Clone)]
pub struct ServeConfig {
    pub webhooks: WebhookConfig,
    /// `HERALD_ADMIN_TOKEN`, the admin API's bootstrap `operator` token; scoped tokens live in
    /// the store. With neither, every admin route answers 403.
    pub admin_token: Option<String>,
    /// After SIGTERM, how long to keep answering with `/readyz` at 503 before the listener
    /// closes. Zero behind Kubernetes with a preStop sleep, which already gives the endpoint
    /// controllers that time.
    pub shutdown_delay: Duration,
    /// How long requests in flight may take to finish once the listener closed.
    pub drain: Duration,
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("webhooks", &self.webhooks)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("shutdown_delay", &self.shutdown_delay)
            .field("drain", &self.drain)
            .finish()
    }
}

/// A listener running in its own task.
#[derive(Debug)]
pub struct ServerHandle {
    /// The bound address (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// Ends after the shutdown token was cancelled and requests in flight finished.
    pub task: JoinHandle<io::Result<()>>,
}

/// The whole `herald serve` router: `/webhooks`, `/api/campaigns/…`, `/healthz`, `/readyz`.
pub fn router(
    store: Arc<dyn Store>,
    config: &ServeConfig,
    readiness: Arc<dyn Readiness>,
) -> Router {
    webhooks::routes(Arc::clone(&store), config.webhooks.clone())
        .merge(admin::routes(
            store,
            config.admin_token.clone(),
            config.webhooks.clock.clone(),
            Arc::clone(&config.webhooks.rate_card),
            config.webhooks.recipient_events,
        ))
        .merge(health::routes(readiness))
}

/// Runs `herald serve` on `listener` until `shutdown` is cancelled, then drains: readiness
/// turns false at once, the listener stays open for `shutdown_delay`, then closes, and requests
/// in flight get `drain` to finish. `/healthz` answers 200 throughout.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: ServeConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let health = ServeHealth::new();
    let stop_probe = CancellationToken::new();
    let probe = health.spawn_probe(Arc::clone(&store), stop_probe.clone());
    let app = router(store, &config, Arc::clone(&health) as Arc<dyn Readiness>);
    let stop_listening = CancellationToken::new();
    let mut server = tokio::spawn(serve_until(
        listener,
        app,
        stop_listening.clone(),
        config.drain,
    ));
    let early = tokio::select! {
        () = shutdown.cancelled() => None,
        ended = &mut server => Some(ended),
    };
    let result = match early {
        // The server stopped on its own: nothing left to drain.
        Some(ended) => ended.unwrap_or_else(|e| Err(io::Error::other(e))),
        None => {
            health.start_draining();
            info!(
                delay = ?config.shutdown_delay,
                drain = ?config.drain,
                "shutting down: /readyz reports 503, then the listener closes and requests in flight finish"
            );
            tokio::time::sleep(config.shutdown_delay).await;
            stop_listening.cancel();
            server.await.unwrap_or_else(|e| Err(io::Error::other(e)))
        }
    };
    stop_probe.cancel();
    let _ = probe.await;
    info!("webhook server stopped");
    result
}

/// Binds `addr`, naming the listener in the error (three listeners can fail to bind).
pub(crate) async fn bind(addr: SocketAddr, what: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen for {what} on {addr}: {e}")))
}

/// Serves `app` until `stop` is cancelled, then lets requests in flight finish for at most
/// `deadline`. Past it the remaining connections are left to the process exit: a client that
/// never finishes must not hold a shutdown hostage.
pub(crate) async fn serve_until(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    deadline: Duration,
) -> io::Result<()> {
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        ended = &mut server => return ended,
        () = stop.cancelled() => {}
    }
    match tokio::time::timeout(deadline, server).await {
        Ok(ended) => ended,
        Err(_) => {
            warn!(
                ?deadline,
                "requests still in flight after the drain deadline; closing anyway"
            );
            Ok(())
        }
    }
}
