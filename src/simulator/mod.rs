//! A local stand-in for Meta's WhatsApp Cloud API (DESIGN §3), used by herald's tests,
//! benchmarks and demo, and by users to load-test their setup without paying Meta.
//!
//! It sends nothing anywhere: it validates sends like Meta, enforces per-number throughput
//! (130429) and the pair rate (131056), knows templates (132001/132015) and undeliverable
//! recipients (131026), injects faults (5xx, slow answers, dropped connections), serves the
//! template list and phone-number fields, plays the customers (signed `sent`, `delivered` and
//! `read` status webhooks, with shares, delays and a sped-up clock; on request, customers who
//! write first, opening the 24 h window in which free-form messages may be sent), and counts
//! what it accepted — including duplicates — on `GET /__sim/stats`. With `SimConfig::smsc` it
//! is also an SMS provider's SMSC (SMPP 3.4) for the SMS channel.
//!
//! Layout: `config` what an instance pretends to be · `send` the hot path · `lookups` the
//! read endpoints · `limits` the rate arithmetic · `state` counters and per-number locks ·
//! `hashing` compact keys for millions of recipients · `errors` Graph's error envelope ·
//! `customers` who receives and reads, and the sped-up clock · `webhooks` status callbacks,
//! delayed as the customers decide · `inbound` customers' messages on request · `windows`
//! the customer-service windows and what they make free · `listener` connections a handler
//! can cut · `smsc` the SMPP server · `command` the `herald simulate` subcommand.

mod command;
mod config;
mod customers;
mod errors;
mod hashing;
mod inbound;
mod limits;
mod listener;
mod lookups;
mod send;
mod smsc;
mod state;
mod webhooks;
mod windows;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

pub use command::{InboundArgs, SimulateArgs, SimulateCommand, run};
pub use config::{
    DEFAULT_ACCOUNT_ID, DEFAULT_PHONE_NUMBER_ID, SimConfig, SimNumber, SimTemplate, TemplateStatus,
    load_list,
};
pub use customers::Fate;
pub use inbound::{InboundError, InboundPosted, InboundRequest, InboundType, Referral};
pub use smsc::{
    MoError, MoRequest, MoSent, Outcome as SmsOutcome, ReceiptCounts, SmsMessage, SmsStats,
    SmscConfig,
};
pub use state::{NumberStats, SimStats};

use errors::{ApiError, Code};
use listener::{Connection, CuttableListener};
use smsc::Smsc;
use state::Shared;
use webhooks::WebhookQueue;

/// How long shutdown waits for answers in flight and queued webhooks before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running simulator. Dropping it stops the server too, without waiting.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    stop_webhooks: Arc<Notify>,
    webhooks: Option<JoinHandle<()>>,
    smsc: Option<Smsc>,
}

impl SimHandle {
    /// The address the simulator listens on (with the real port when spawned on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to use as herald's Graph URL: `http://127.0.0.1:PORT`. A wildcard bind
    /// address is reported as loopback, which is where local clients reach it.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}")
    }

    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// The address the SMSC listens on (with the real port when configured with port 0), or
    /// `None` when it is off.
    pub fn smpp_addr(&self) -> Option<SocketAddr> {
        self.smsc.as_ref().map(Smsc::addr)
    }

    /// The SMS the SMSC accepted, oldest first, decoded and with the parts of long messages
    /// joined (`GET /__sim/sms/messages`); empty when it is off.
    pub fn sms_messages(&self) -> Vec<SmsMessage> {
        self.shared
            .smsc
            .as_ref()
            .map(|smsc| smsc.messages())
            .unwrap_or_default()
    }

    /// Sends a customer's SMS to a bound session as `deliver_sm` and waits for its
    /// acknowledgement (`POST /__sim/sms/mo`).
    pub async fn send_mo(&self, mo: &MoRequest) -> Result<MoSent, MoError> {
        match &self.shared.smsc {
            Some(smsc) => smsc::send_mo(smsc, mo).await,
            None => Err(MoError::NotEnabled),
        }
    }

    /// A customer writes first: posts the inbound-message webhook (`POST /__sim/inbound`) after
    /// opening their customer-service window, and returns herald's answers.
    pub async fn inbound(&self, request: InboundRequest) -> Result<InboundPosted, InboundError> {
        inbound::post(&self.shared, request).await
    }

    /// Closes the windows of customer `from`, of business number `to`, of both or (with
    /// neither) all (`POST /__sim/windows/close`); returns how many were open.
    pub fn close_windows(
        &self,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<usize, InboundError> {
        inbound::close(&self.shared, from, to)
    }

    /// Forgets all counters, limit state, seen callback data and windows.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting, lets answers in flight finish and queued webhooks go out (each for at
    /// most a few seconds), then returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            finish_or_abort(server).await;
        }
        self.stop_webhooks.notify_one();
        if let Some(webhooks) = self.webhooks.take() {
            finish_or_abort(webhooks).await;
        }
        if let Some(smsc) = self.smsc.take() {
            smsc.shutdown().await;
        }
    }
}

async fn finish_or_abort(task: JoinHandle<()>) {
    let abort = task.abort_handle();
    if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
        abort.abort();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        self.stop_webhooks.notify_one();
    }
}

/// Starts a simulator on `addr` (port 0 picks a free port) and returns once it accepts
/// connections.
pub async fn spawn(config: SimConfig, addr: SocketAddr) -> anyhow::Result<SimHandle> {
    config
        .validate()
        .context("invalid simulator configuration")?;
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("simulator cannot listen on {addr}"))?;
    let addr = tcp.local_addr()?;

    let (queue, poster) = match config.webhook_url.clone() {
        Some(url) => {
            let (queue, rx) = WebhookQueue::new();
            (Some(queue), Some((url, rx)))
        }
        None => (None, None),
    };
    let smsc = match config.smsc.clone() {
        Some(smsc) => Some(Smsc::start(smsc).await?),
        None => None,
    };
    let shared = Arc::new(
        Shared::new(config, addr, queue).with_smsc(smsc.as_ref().map(|s| s.state().clone())),
    );
    let stop_webhooks = Arc::new(Notify::new());
    let webhooks = poster.map(|(url, rx)| {
        tokio::spawn(webhooks::run(
            rx,
            shared.clone(),
            url,
            stop_webhooks.clone(),
        ))
    });

    let (stop_server, stopped) = oneshot::channel::<()>();
    let app = router(shared.clone()).into_make_service_with_connect_info::<Connection>();
    let server = tokio::spawn(async move {
        let serve = axum::serve(CuttableListener::new(tcp), app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "simulator server failed");
        }
    });

    Ok(SimHandle {
        addr,
        shared,
        stop_server: Some(stop_server),
        server: Some(server),
        stop_webhooks,
        webhooks,
        smsc,
    })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/__sim/stats", get(stats))
        .route("/__sim/reset", post(reset))
        .route("/__sim/inbound", post(inbound::inbound))
        .route("/__sim/windows/close", post(inbound::close_windows))
        .route("/__sim/sms/mo", post(smsc::http::mo))
        .route("/__sim/sms/messages", get(smsc::http::messages))
        .route("/{version}/{id}/messages", post(send::messages))
        .route(
            "/{version}/{id}/marketing_messages",
            post(send::marketing_messages),
        )
        .route(
            "/{version}/{id}/message_templates",
            get(lookups::message_templates),
        )
        .route("/{version}/{id}", get(lookups::phone_number))
        .fallback(unknown_path)
        .with_state(shared)
}

async fn stats(State(sim): State<Arc<Shared>>) -> Json<SimStats> {
    Json(sim.stats())
}

async fn reset(State(sim): State<Arc<Shared>>) -> StatusCode {
    sim.reset();
    StatusCode::NO_CONTENT
}

async fn unknown_path(uri: Uri) -> Response {
    ApiError::unknown_path(uri.path()).into_response()
}

/// 190 unless the request carries the configured token as `Authorization: Bearer …`.
fn authorize(sim: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &sim.config.access_token else {
        return Ok(());
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match presented {
        Some(p) if p.trim() == token => Ok(()),
        _ => Err(ApiError::new(Code::InvalidToken)),
    }
}

/// Graph's version segment: `v` then `MAJOR.MINOR` (`v25.0`).
fn check_version(version: &str) -> Result<(), ApiError> {
    let valid = version.strip_prefix('v').is_some_and(|rest| {
        rest.split_once('.').is_some_and(|(major, minor)| {
            [major, minor]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
    });
    if valid {
        Ok(())
    } else {
        Err(ApiError::unknown_path(&format!("/{version}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_graph_style_versions_are_accepted() {
        for ok in ["v25.0", "v1.10", "v123.4"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["25.0", "v25", "v.0", "v25.", "vx.0", "v25.0.1", "__sim"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
