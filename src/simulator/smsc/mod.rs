//! The simulator's SMSC (DESIGN §3, reference `sms.md`): an SMPP 3.4 server on smpp34 that
//! plays an SMS provider for herald's SMS channel — one account with a bind limit, a TPS limit
//! answering `ESME_RTHROTTLED`, delivery receipts after a delay with configurable outcomes
//! (hex or decimal ids, optionally twice), MO messages on request, and duplicate detection by
//! herald's key TLV.
//!
//! Layout: `config` what it pretends to be · `submit` reading a `submit_sm` and joining long
//! messages (pure) · `receipt` what a receipt says (pure) · `state` counters and the message
//! list · `sessions` who is bound · `listener` smpp34's callbacks · `dispatch` receipts on
//! their way · `mo` inbound messages · `http` the `/__sim/sms/…` endpoints.

mod config;
mod dispatch;
pub(crate) mod http;
mod listener;
mod mo;
mod receipt;
mod sessions;
mod state;
mod submit;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use smpp34::SmppServer;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use config::SmscConfig;
pub use mo::{MoError, MoRequest, MoSent, send as send_mo};
pub use receipt::Outcome;
pub(crate) use state::SmscState;
pub use state::{ReceiptCounts, SmsMessage, SmsStats};

use listener::Listener;

/// smpp34's session timers, in milliseconds. A connection must bind within this.
const SESSION_INIT_MS: u64 = 5_000;
/// The SMSC asks every bound session to prove it is alive this often (providers: 30–60 s).
const ENQUIRE_LINK_MS: u64 = 30_000;
/// A session silent this long is closed.
const INACTIVITY_MS: u64 = 300_000;
/// How long a `deliver_sm` (receipt or MO) waits for its response before it counts as failed.
const RESPONSE_MS: u64 = 10_000;
/// Bytes read from a session at once: room for a window of submits.
const READ_BUFFER: usize = 16 * 1024;
/// Free ports tried when port 0 is asked for: smpp34 binds its own socket, so a port found
/// free may be taken by someone else before it binds.
const PORT_ATTEMPTS: usize = 5;
/// How long shutdown waits for each session to answer its `unbind`.
const UNBIND_GRACE: Duration = Duration::from_secs(1);

/// A running SMSC: the server, its state and the receipt dispatcher.
pub struct Smsc {
    addr: SocketAddr,
    state: Arc<SmscState>,
    server: SmppServer,
    stop_dispatch: Arc<Notify>,
    dispatch: Option<JoinHandle<()>>,
}

impl Smsc {
    /// Starts listening on `config.addr` and returns once connections are accepted.
    pub async fn start(config: SmscConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let requested = config.addr;
        let (state, queue) = SmscState::new(config);
        let state = Arc::new(state);
        let listener = Arc::new(Listener {
            state: state.clone(),
            listen_failed: Mutex::new(None),
        });
        let (server, addr) = listen(requested, &listener).await?;
        let stop_dispatch = Arc::new(Notify::new());
        let dispatch = tokio::spawn(dispatch::run(state.clone(), queue, stop_dispatch.clone()));
        tracing::info!(%addr, "simulated SMSC listening");
        Ok(Self {
            addr,
            state,
            server,
            stop_dispatch,
            dispatch: Some(dispatch),
        })
    }

    /// The address it listens on, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn state(&self) -> &Arc<SmscState> {
        &self.state
    }

    /// Stops accepting binds and sending receipts, then unbinds every session.
    pub async fn shutdown(mut self) {
        self.stop_dispatch.notify_one();
        if let Some(dispatch) = self.dispatch.take() {
            let abort = dispatch.abort_handle();
            if tokio::time::timeout(UNBIND_GRACE, dispatch).await.is_err() {
                abort.abort();
            }
        }
        self.server.stop().await;
        for esme in self.state.sessions.take_all() {
            let _ = tokio::time::timeout(UNBIND_GRACE, esme.send_unbind()).await;
        }
    }
}

impl Drop for Smsc {
    fn drop(&mut self) {
        self.stop_dispatch.notify_one();
        if let Some(dispatch) = self.dispatch.take() {
            dispatch.abort();
        }
    }
}

async fn listen(
    requested: SocketAddr,
    listener: &Arc<Listener>,
) -> anyhow::Result<(SmppServer, SocketAddr)> {
    let attempts = if requested.port() == 0 {
        PORT_ATTEMPTS
    } else {
        1
    };
    for _ in 0..attempts {
        let addr = if requested.port() == 0 {
            free_port(requested.ip())?
        } else {
            requested
        };
        let mut server = SmppServer::new_with_default_timers(
            addr.ip(),
            addr.port(),
            listener.clone(),
            SESSION_INIT_MS,
            ENQUIRE_LINK_MS,
            INACTIVITY_MS,
            RESPONSE_MS,
            READ_BUFFER,
        );
        server.start().await;
        if server.is_alive() {
            return Ok((server, addr));
        }
    }
    let why = listener
        .listen_failed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_else(|| "unknown error".into());
    bail!("the simulated SMSC cannot listen on {requested}: {why}")
}

/// A port free on `ip` right now.
fn free_port(ip: IpAddr) -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind((ip, 0))?;
    Ok(probe.local_addr()?)
}
