//! `POST /api/conversions` (DESIGN §1.6): a shop reports orders, one event or a list of up to
//! 10,000, for tokens of the `operator` or `ingest` role. Received and authorised here, parsed by
//! `domain::conversion` (all or nothing: one bad event refuses the body, naming its index and
//! field, and nothing is stored), then recorded with one store call. Answers the tally.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

use super::admin::{AdminState, ApiError};
use crate::domain::conversion::MAX_BODY_BYTES;
use crate::domain::{Conversion, ConversionError, ConversionTally, strict_json};
use crate::policy::access::Action;
use crate::telemetry::metrics;

/// The `path` label of this way in.
const PATH: &str = "http";

/// The route, with a body limit of its own: a list of 10,000 events is larger than axum's
/// default 2 MB.
pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new().route(
        "/api/conversions",
        post(receive).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
    )
}

/// The answer: what became of the events.
#[derive(Debug, Serialize)]
struct TallyView {
    /// New events stored (attributed or not).
    stored: u64,
    /// Events whose `event_id` was already recorded: ignored.
    duplicates: u64,
    /// Of the stored ones, those no recipient of the campaign matched.
    unattributed: u64,
}

impl From<ConversionTally> for TallyView {
    fn from(t: ConversionTally) -> Self {
        Self {
            stored: t.stored,
            duplicates: t.duplicates,
            unattributed: t.unattributed,
        }
    }
}

async fn receive(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TallyView>, ApiError> {
    let call = s
        .begin(
            &headers,
            Action::ConversionsIngest,
            "POST /api/conversions",
            None,
        )
        .await?;
    let outcome = record(&s, &body).await;
    call.finish(outcome).await
}

async fn record(s: &AdminState, body: &[u8]) -> Result<Json<TallyView>, ApiError> {
    let events = parse(body).map_err(|(n, e)| {
        metrics::conversions_rejected(PATH, n);
        warn!(events = n, reason = %e, "conversion events refused");
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    })?;
    let recorded = match s.recipient_events {
        Some(options) => {
            s.store
                .record_conversions_with_events(&events, options, chrono::Utc::now())
                .await
        }
        None => s.store.record_conversions(&events).await,
    };
    let tally = match recorded {
        Ok(tally) => tally,
        Err(e) if e.refused_data().is_some() => {
            metrics::conversions_rejected(PATH, events.len() as u64);
            warn!(error = %e, "the database refused conversion events");
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "the database refused the events' data; nothing was stored".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    metrics::conversions(PATH, &tally);
    info!(
        events = events.len(),
        stored = tally.stored,
        duplicates = tally.duplicates,
        unattributed = tally.unattributed,
        "conversion events recorded"
    );
    Ok(Json(tally.into()))
}

/// The body's events, or how many were refused (every event of a list: all or nothing) and why.
fn parse(body: &[u8]) -> Result<Vec<Conversion>, (u64, ConversionError)> {
    if body.len() > MAX_BODY_BYTES {
        return Err((1, ConversionError::TooLarge(body.len())));
    }
    let value = strict_json::parse(body).map_err(|e| (1, ConversionError::Json(e)))?;
    let n = match &value {
        Value::Array(items) => items.len().max(1) as u64,
        _ => 1,
    };
    Conversion::from_value(value, Utc::now()).map_err(|e| (n, e))
}
