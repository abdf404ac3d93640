//! The SMS channel: `submit_sm` on an SMPP 3.4 session to the route's SMSC ([`session`]), and
//! its pure parts — the route from `HERALD_SMS_URL` ([`route`]), what a delivery receipt says
//! ([`receipt`]) and how a text becomes SMPP bytes ([`wire`]). Segment counting is a pricing
//! decision and lives in [`crate::policy::segments`].
//!
//! One `submit_sm` per message: a text longer than one SMS goes whole in the `message_payload`
//! TLV (the SMSC splits and bills the parts), so each message has one message id and one
//! receipt. herald's key rides along in [`wire::KEY_TLV`]; receipts are matched by the SMSC's
//! message id, which the ledger keeps in its canonical form.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use smpp34::SmppError;
use tokio::sync::{Semaphore, mpsc};

use super::{Answer, Channel, Endpoint, Prepared};
use crate::domain::{Category, ChannelKind, PhoneNumber, SenderId};
use crate::policy::classify::{Transport, classify_smpp};
use crate::policy::cost::RateCard;

pub mod receipt;
pub mod route;
pub mod session;
pub mod wire;

pub use route::SmsRoute;
pub use session::{Inbound, Session};

/// How long a send waits for the route's session to be bound before it says "not sent" (the
/// engine then retries with back-off, and hands the key back when the route stays down).
const BIND_WAIT: Duration = Duration::from_secs(5);
/// Bytes of one unconcatenated SMS as SMPP carries it: 160 unpacked GSM-7 septets, or 140
/// bytes of UCS-2. Longer texts go in `message_payload`.
const SINGLE_GSM7: usize = 160;
const SINGLE_UCS2: usize = 140;

/// Receipts and MO messages waiting to be applied; a full queue holds the SMSC back.
const INBOUND_QUEUE: usize = 4096;

pub struct SmsChannel {
    route: Arc<SmsRoute>,
    session: Session,
    window: Arc<Semaphore>,
}

impl SmsChannel {
    /// Starts keeping a session to `route` bound. What the SMSC sends on its own (receipts,
    /// MO messages) comes out of the returned receiver: hand it to [`crate::app::sms`]'s inbox.
    pub fn start(route: SmsRoute) -> (Self, mpsc::Receiver<Inbound>) {
        let route = Arc::new(route);
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let session = Session::start(Arc::clone(&route), tx);
        let window = Arc::new(Semaphore::new(route.window));
        (
            Self {
                route,
                session,
                window,
            },
            rx,
        )
    }

    pub fn route(&self) -> &SmsRoute {
        &self.route
    }

    /// Whether the route's session is bound now.
    pub fn is_bound(&self) -> bool {
        self.session.is_bound()
    }

    /// Waits up to `wait` for the session to be bound.
    pub async fn wait_bound(&self, wait: Duration) -> bool {
        self.session.bound(wait).await.is_some()
    }

    /// Unbinds and stops reconnecting.
    pub fn stop(&self) {
        self.session.stop();
    }
}

#[async_trait]
impl Channel for SmsChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    fn endpoint(&self, _sender: &SenderId) -> Endpoint {
        Endpoint(self.route.name.clone())
    }

    fn pacing_key(&self, _sender: &SenderId) -> SenderId {
        SenderId::from_trusted(self.route.pacing_key())
    }

    fn rate_per_sec(&self, _sender_rate: u32) -> u32 {
        self.route.tps
    }

    async fn ready(&self, wait: Duration) -> bool {
        self.wait_bound(wait).await
    }

    async fn send(&self, _endpoint: &Endpoint, m: &Prepared<'_>) -> Answer {
        let Some(smsc) = self.session.bound(BIND_WAIT).await else {
            return Answer::Transport {
                kind: Transport::NotSent,
                detail: format!("SMS route {} is not bound", self.route.name),
            };
        };
        let Ok(_slot) = self.window.acquire().await else {
            return Answer::Transport {
                kind: Transport::NotSent,
                detail: "SMS channel stopped".into(),
            };
        };
        let (data_coding, bytes) = wire::encode(m.text);
        let (ton, npi) = self.route.source_ton_npi(m.from);
        let single = if data_coding == wire::DC_GSM7 {
            SINGLE_GSM7
        } else {
            SINGLE_UCS2
        };
        let mut submit = smsc
            .submit_sm()
            .source_addr_ton(ton)
            .source_addr_npi(npi)
            .source_addr(m.from.strip_prefix('+').unwrap_or(m.from))
            .dest_addr_ton(1)
            .dest_addr_npi(1)
            .destination_addr(m.to.digits())
            .registered_delivery(1)
            .data_coding(data_coding)
            .tlv_raw(wire::KEY_TLV, m.key.as_str().as_bytes().to_vec());
        submit = if bytes.len() <= single {
            submit.short_message(bytes)
        } else {
            submit.tlv_raw(wire::TLV_MESSAGE_PAYLOAD, bytes)
        };
        match tokio::time::timeout(self.route.response_timeout, submit.send()).await {
            // Written, never answered: the SMSC may have it. Never resent.
            Err(_) => Answer::Transport {
                kind: Transport::MaybeSent,
                detail: format!(
                    "no submit_sm_resp within {:?} on SMS route {}",
                    self.route.response_timeout, self.route.name
                ),
            },
            Ok(Ok(resp)) if resp.is_success() => Answer::Accepted {
                provider_id: receipt::canonical_id(resp.message_id.as_deref().unwrap_or("")),
                held: false,
            },
            Ok(Ok(resp)) => refused(resp.command_status()),
            // The crate folds "the session closed before the answer" and "no answer in its
            // own timer" into ESME_RSYSERR: the PDU may have been written, so it is unknown.
            Ok(Err(SmppError::ESME_RSYSERR)) => Answer::Transport {
                kind: Transport::MaybeSent,
                detail: format!(
                    "SMS route {} closed or failed before answering a submit_sm",
                    self.route.name
                ),
            },
            Ok(Err(e)) => refused(e as u32),
        }
    }

    fn price_micros(
        &self,
        card: &RateCard,
        _category: Category,
        to: &PhoneNumber,
        text: &str,
    ) -> u64 {
        card.sms_micros(to, text)
    }
}

/// A `submit_sm` refused with `status`.
fn refused(status: u32) -> Answer {
    Answer::Refused {
        code: i64::from(status),
        message: format!("SMPP command_status 0x{status:08X}"),
        action: classify_smpp(status),
    }
}
