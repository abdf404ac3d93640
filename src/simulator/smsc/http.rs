//! The SMSC's admin endpoints on the simulator's HTTP server: `POST /__sim/sms/mo` sends a
//! customer's message to a bound session, `GET /__sim/sms/messages` lists what was accepted.
//! Errors are `{"error": "…"}` with a status saying what to do: 404 the SMSC is off, 400 a bad
//! request, 409 no session to deliver to, 502 the session did not acknowledge.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::mo::{self, MoError, MoRequest};
use crate::simulator::state::Shared;

pub async fn mo(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some(smsc) = &sim.smsc else {
        return error(&MoError::NotEnabled);
    };
    let request: MoRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!(
                    "the body must be JSON {{\"from\": \"+49…\", \"to\": \"ACME\", \"text\": \"STOP\"}}: {e}"
                ) })),
            )
                .into_response();
        }
    };
    match mo::send(smsc, &request).await {
        Ok(sent) => (StatusCode::OK, Json(sent)).into_response(),
        Err(e) => error(&e),
    }
}

pub async fn messages(State(sim): State<Arc<Shared>>) -> Response {
    match &sim.smsc {
        Some(smsc) => Json(smsc.messages()).into_response(),
        None => error(&MoError::NotEnabled),
    }
}

fn error(e: &MoError) -> Response {
    let status = match e {
        MoError::NotEnabled => StatusCode::NOT_FOUND,
        MoError::BadFrom | MoError::BadTo => StatusCode::BAD_REQUEST,
        MoError::NoSession => StatusCode::CONFLICT,
        MoError::NotAcknowledged(_) => StatusCode::BAD_GATEWAY,
    };
    (status, Json(json!({ "error": e.to_string() }))).into_response()
}
