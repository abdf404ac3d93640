//! One SMPP session to a route's SMSC, kept up: connect (TCP or TLS), `bind_transceiver`,
//! `enquire_link` every `route.enquire_link` (the crate's timer), and when the session drops
//! or the bind is refused, connect again after a back-off that doubles up to a minute. The
//! current session is published on a watch channel: the channel sends on whatever session is
//! bound and says "not sent" while none is. Whatever the SMSC delivers (`deliver_sm`: receipts
//! and MO messages) is read here, acknowledged at once — an unacknowledged `deliver_sm` makes
//! the SMSC resend it and throttle the bind — and handed on as [`Inbound`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use smpp34::client::{BIND_TYPE, SMSC, SmppClient, SmppClientListener};
use smpp34::{SmppConnectionInformation, TlvList, deliver_sm, deliver_sm_resp};
use tokio::sync::{Mutex, Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::receipt::{self, Receipt, ReceiptError};
use super::route::SmsRoute;
use super::wire::{ESM_RECEIPT, decode};
use crate::telemetry::metrics;

/// What the SMSC told us on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A delivery receipt for a message we submitted.
    Receipt(Receipt),
    /// A receipt that could not be read (acked anyway; counted, logged without its text).
    Unreadable(ReceiptError),
    /// A message from a customer (MO): `from` is the customer's number as the SMSC gives it
    /// (international, usually without `+`), `to` our sender address.
    Mo {
        from: String,
        to: String,
        text: String,
    },
}

/// Longest wait between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// A route's session, kept bound in the background until dropped or [`Session::stop`]ped.
pub struct Session {
    current: watch::Receiver<Option<Arc<SMSC>>>,
    stop: CancellationToken,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Session {
    /// Starts keeping a session to `route` bound; receipts and MO messages go to `inbound`.
    pub fn start(route: Arc<SmsRoute>, inbound: mpsc::Sender<Inbound>) -> Self {
        let (tx, current) = watch::channel(None);
        let stop = CancellationToken::new();
        tokio::spawn(keep_bound(route, tx, inbound, stop.clone()));
        Self { current, stop }
    }

    /// The bound session, waiting up to `wait` for one.
    pub async fn bound(&self, wait: Duration) -> Option<Arc<SMSC>> {
        let mut rx = self.current.clone();
        let found = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        match found {
            Ok(Ok(s)) => s.clone(),
            _ => None,
        }
    }

    /// Whether a session is bound now.
    pub fn is_bound(&self) -> bool {
        self.current.borrow().is_some()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// The connect–bind–wait–reconnect loop.
async fn keep_bound(
    route: Arc<SmsRoute>,
    current: watch::Sender<Option<Arc<SMSC>>>,
    inbound: mpsc::Sender<Inbound>,
    stop: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    let response_ms = route.response_timeout.as_millis() as u64;
    loop {
        let (bound_tx, bound_rx) = oneshot::channel();
        let down = Arc::new(Notify::new());
        let listener = Arc::new(Listener {
            bound: Mutex::new(Some(bound_tx)),
            down: Arc::clone(&down),
            inbound: inbound.clone(),
            route: route.name.clone(),
        });
        let mut client = SmppClient::new_with_default_timers(
            route.host.clone(),
            route.port,
            route.tls,
            BIND_TYPE::TRX,
            route.system_id.clone(),
            route.password.clone(),
            route.system_type.clone(),
            0,
            0,
            String::new(),
            listener,
            // session init (bind answer), enquire_link, inactivity, response timers (ms).
            10_000,
            route.enquire_link.as_millis() as u64,
            (route.enquire_link.as_millis() as u64).saturating_mul(3),
            // The crate's own response timer only backs ours up (see `SmsChannel::send`): ours
            // decides, so a late answer is `unknown`, never a crate-level error.
            response_ms.saturating_mul(2).saturating_add(5_000),
            64 * 1024,
            route.window,
        );
        tokio::select! {
            _ = client.start() => {}
            _ = stop.cancelled() => return,
        }
        let bound = tokio::select! {
            b = tokio::time::timeout(Duration::from_secs(12), bound_rx) => b.ok().and_then(Result::ok),
            _ = down.notified() => None,
            _ = stop.cancelled() => { client.stop().await; return; }
        };
        match bound {
            Some(smsc) => {
                info!(route = %route.name, "SMPP session bound");
                metrics::sms_bind(&route.name, true);
                current.send_replace(Some(Arc::new(smsc)));
                backoff = FIRST_BACKOFF;
                tokio::select! {
                    _ = down.notified() => {
                        warn!(route = %route.name, "SMPP session lost; reconnecting");
                    }
                    _ = stop.cancelled() => {
                        if let Some(s) = current.send_replace(None) {
                            let _ = tokio::time::timeout(Duration::from_secs(2), s.send_unbind()).await;
                        }
                        client.stop().await;
                        metrics::sms_bind(&route.name, false);
                        return;
                    }
                }
                current.send_replace(None);
                metrics::sms_bind(&route.name, false);
            }
            None => {
                // Connect failed, or connected but no bind: refused credentials, a bind limit,
                // or no answer. The crate logs the bind status; the route stays down and the
                // alert on herald_sms_bind_up says so.
                error!(route = %route.name, retry_in = ?backoff,
                    "SMPP bind failed (connection refused, credentials refused or no answer)");
                metrics::sms_bind_failure(&route.name);
                metrics::sms_bind(&route.name, false);
            }
        }
        client.stop().await;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct Listener {
    bound: Mutex<Option<oneshot::Sender<SMSC>>>,
    down: Arc<Notify>,
    inbound: mpsc::Sender<Inbound>,
    route: String,
}

#[async_trait]
impl SmppClientListener for Listener {
    async fn on_smsc_bound(&self, smsc: SMSC, _session: &String) {
        if let Some(tx) = self.bound.lock().await.take() {
            let _ = tx.send(smsc);
        }
    }

    async fn on_smsc_unbound(&self, _session: &String) {
        // When the SMSC unbinds, smpp34 queues our `unbind_resp` for its writer task and
        // aborts that task as soon as this returns: give it a moment to write the answer
        // SMPP 3.4 §4.2 requires (the session is over either way).
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.down.notify_one();
    }

    async fn on_connection_failed(&self, error: &str) {
        warn!(route = %self.route, %error, "SMPP connection failed");
        self.down.notify_one();
    }

    async fn on_deliver_sm(
        &self,
        req: deliver_sm,
        _c: &SmppConnectionInformation,
        _s: &String,
    ) -> deliver_sm_resp {
        let inbound = read_deliver_sm(&req);
        // Waiting here (a full queue) holds the SMSC back; it never loses a receipt.
        if self.inbound.send(inbound).await.is_err() {
            warn!(route = %self.route, "SMS inbound queue closed; deliver_sm acknowledged unread");
        }
        req.accept()
    }
}

/// What a `deliver_sm` says.
pub fn read_deliver_sm(req: &deliver_sm) -> Inbound {
    let payload = req
        .tlvs
        .message_payload()
        .filter(|_| req.short_message.is_empty());
    let body = payload.unwrap_or(&req.short_message);
    if req.esm_class & ESM_RECEIPT != 0 {
        let id = req.tlvs.receipted_message_id();
        match receipt::parse(id.as_deref(), req.tlvs.message_state(), body) {
            Ok(r) => Inbound::Receipt(r),
            Err(e) => Inbound::Unreadable(e),
        }
    } else {
        Inbound::Mo {
            from: req.source_addr.clone(),
            to: req.destination_addr.clone(),
            text: decode(req.data_coding, body),
        }
    }
}
