//! smpp34's callbacks: binds checked against the one configured account and its bind limit,
//! `submit_sm` decided by [`SmscState::submit`], sessions noted as they come and go. Logs name
//! accounts, sessions and counts, never a phone number.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use smpp34::server::ESME;
use smpp34::{
    SmppConnectionInformation, SmppError, SmppServerListener, bind_receiver, bind_receiver_resp,
    bind_transceiver, bind_transceiver_resp, bind_transmitter, bind_transmitter_resp, submit_sm,
    submit_sm_resp,
};

use super::state::SmscState;

/// The SMSC's own `system_id` in bind responses.
const SMSC_SYSTEM_ID: &str = "herald-sim";
/// `sc_interface_version`: SMPP 3.4.
const INTERFACE_VERSION: u8 = 0x34;

pub struct Listener {
    pub state: Arc<SmscState>,
    /// Why the server could not listen, when it could not.
    pub listen_failed: std::sync::Mutex<Option<String>>,
}

impl Listener {
    /// Decides a bind of any kind: `Ok` holds the session's place against the bind limit.
    fn admit(&self, system_id: &str, password: &str, session_id: &str) -> Result<(), SmppError> {
        let config = &self.state.config;
        let refused = if system_id != config.system_id {
            Some(SmppError::ESME_RINVSYSID)
        } else if password != config.password {
            Some(SmppError::ESME_RINVPASWD)
        } else if !self.state.sessions.reserve(
            session_id,
            system_id,
            config.max_binds,
            Instant::now(),
        ) {
            Some(SmppError::ESME_RBINDFAIL)
        } else {
            None
        };
        match refused {
            None => Ok(()),
            Some(status) => {
                self.state
                    .counters()
                    .binds_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(system_id, status = ?status, "simulated SMSC refused a bind");
                Err(status)
            }
        }
    }
}

#[async_trait]
impl SmppServerListener for Listener {
    async fn on_bind_transceiver(
        &self,
        req: bind_transceiver,
        _connection: &SmppConnectionInformation,
        session_id: &String,
    ) -> bind_transceiver_resp {
        match self.admit(&req.system_id, &req.password, session_id) {
            Ok(()) => req.accept(SMSC_SYSTEM_ID.into(), Some(INTERFACE_VERSION)),
            Err(status) => req.reject(status),
        }
    }

    async fn on_bind_transmitter(
        &self,
        req: bind_transmitter,
        _connection: &SmppConnectionInformation,
        session_id: &String,
    ) -> bind_transmitter_resp {
        match self.admit(&req.system_id, &req.password, session_id) {
            Ok(()) => req.accept(SMSC_SYSTEM_ID.into(), Some(INTERFACE_VERSION)),
            Err(status) => req.reject(status),
        }
    }

    async fn on_bind_receiver(
        &self,
        req: bind_receiver,
        _connection: &SmppConnectionInformation,
        session_id: &String,
    ) -> bind_receiver_resp {
        match self.admit(&req.system_id, &req.password, session_id) {
            Ok(()) => req.accept(SMSC_SYSTEM_ID.into(), Some(INTERFACE_VERSION)),
            Err(status) => req.reject(status),
        }
    }

    async fn on_submit_sm(
        &self,
        req: submit_sm,
        _connection: &SmppConnectionInformation,
        session_id: &String,
    ) -> submit_sm_resp {
        match self.state.submit(&req, session_id) {
            Ok(message_id) => req.accept(message_id),
            Err(status) => req.reject(status),
        }
    }

    async fn on_esme_bound(&self, esme: ESME, session_id: &String) {
        tracing::info!(
            system_id = %esme.system_id,
            session = %session_id,
            receives = esme.can_receive,
            "simulated SMSC bound a session"
        );
        self.state.sessions.bound(esme);
        self.state
            .counters()
            .binds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.state.bound.notify_one();
    }

    async fn on_esme_unbound(&self, session_id: &String) {
        tracing::info!(session = %session_id, "simulated SMSC session ended");
        self.state.sessions.unbound(session_id);
    }

    async fn on_listen_failed(&self, error: &str) {
        *self.listen_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
    }
}
