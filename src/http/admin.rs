//! A small admin API beside the webhooks, for dashboards and runbooks that cannot run the CLI:
//! `GET /api/campaigns/{id}` (state and keys counted per outcome) and
//! `POST /api/campaigns/{id}/pause|resume|cancel`, with the same rules as
//! `herald campaign …` (cancellation is final); `GET /api/contacts/{phone}` (GDPR access: what
//! `herald contacts export` prints, the number itself masked) and `DELETE
//! /api/contacts/{phone}` (erasure, as `herald contacts erase`). Guarded by `HERALD_ADMIN_TOKEN`
//! as a bearer token, compared in constant time. **Default deny**: without a token configured
//! every route answers 403 naming the variable, so an unconfigured pod exposes nothing and
//! stops nothing. `POST /api/conversions` (`conversions.rs`) is part of it, behind the same
//! token.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{error, info};

use super::signature::secrets_match;
use crate::domain::EventOptions;
use crate::domain::{CampaignId, PhoneNumber};
use crate::store::{Campaign, CampaignCounts, CampaignState, Store, StoreError};

/// Longest reason accepted for a pause or cancel; it is shown in `campaign status`.
const MAX_REASON_CHARS: usize = 500;

pub(super) struct AdminState {
    pub(super) store: Arc<dyn Store>,
    /// `HERALD_ADMIN_TOKEN`: every route needs it when set; without it writes are refused.
    pub(super) token: Option<String>,
    /// Per-recipient events (`HERALD_RECIPIENT_EVENTS`): conversions write `converted`.
    pub(super) recipient_events: Option<EventOptions>,
}

/// `/api/campaigns/{id}` and `/api/campaigns/{id}/{pause|resume|cancel}`.
pub fn routes(
    store: Arc<dyn Store>,
    token: Option<String>,
    recipient_events: Option<EventOptions>,
) -> Router {
    Router::new()
        .route("/api/campaigns/{id}", get(show))
        .route("/api/campaigns/{id}/{action}", post(control))
        .route("/api/contacts/{phone}", get(export).delete(erase))
        .merge(super::conversions::routes())
        .with_state(Arc::new(AdminState {
            store,
            token,
            recipient_events,
        }))
}

/// A campaign as the API shows it.
#[derive(Debug, Serialize)]
struct CampaignView {
    campaign: String,
    /// active, paused or cancelled.
    state: &'static str,
    /// Why it was paused or cancelled.
    reason: Option<String>,
    /// Keys in the ledger.
    total: u64,
    /// Keys not final yet (pending or being sent).
    open: u64,
    /// Keys per ledger state: sent, failed, skipped, unknown, pending, sending.
    outcomes: BTreeMap<String, u64>,
    /// Keys per state and reason (skip reason or Graph error code).
    counts: Vec<CountView>,
}

#[derive(Debug, Serialize)]
struct CountView {
    state: String,
    reason: Option<String>,
    count: u64,
}

impl CampaignView {
    fn new(c: Campaign, counts: CampaignCounts) -> Self {
        let mut outcomes = BTreeMap::new();
        for (state, _, n) in &counts.by_state {
            *outcomes.entry(state.clone()).or_default() += n;
        }
        Self {
            campaign: c.id.to_string(),
            state: c.state.as_str(),
            reason: c.reason,
            total: counts.total(),
            open: counts.state("pending") + counts.state("sending"),
            outcomes,
            counts: counts
                .by_state
                .into_iter()
                .map(|(state, reason, count)| CountView {
                    state,
                    reason: (!reason.is_empty()).then_some(reason),
                    count,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    reason: Option<String>,
}

/// An answer other than the campaign: a status and a message.
pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "admin API: store error");
        Self(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is not available".into(),
        )
    }
}

/// Whether the request may use the admin API: a configured token, presented as
/// `Authorization: Bearer …`. Without a configured token every route is refused (403).
pub(super) fn authorise(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: set HERALD_ADMIN_TOKEN (a long random secret) and send it as a bearer token".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if secrets_match(token.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        )),
    }
}

fn campaign_id(raw: &str) -> Result<CampaignId, ApiError> {
    CampaignId::parse(raw)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("campaign id: {e}")))
}

async fn view(store: &dyn Store, campaign: Campaign) -> Result<Json<CampaignView>, ApiError> {
    let counts = store.campaign_counts(&campaign.id).await?;
    Ok(Json(CampaignView::new(campaign, counts)))
}

async fn show(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    authorise(&s, &headers)?;
    let id = campaign_id(&id)?;
    let Some(campaign) = s.store.campaign(&id).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no campaign '{id}'"),
        ));
    };
    view(s.store.as_ref(), campaign).await
}

async fn control(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<CampaignView>, ApiError> {
    authorise(&s, &headers)?;
    let target = match action.as_str() {
        "pause" => CampaignState::Paused,
        "resume" => CampaignState::Active,
        "cancel" => CampaignState::Cancelled,
        _ => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "unknown action: use pause, resume or cancel".into(),
            ));
        }
    };
    let id = campaign_id(&id)?;
    let body: ControlBody = if body.iter().all(u8::is_ascii_whitespace) {
        ControlBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"reason\": \"…\"}} or empty: {e}"),
            )
        })?
    };
    if let Some(reason) = &body.reason
        && (reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control))
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "reason must be at most {MAX_REASON_CHARS} characters without control characters"
            ),
        ));
    }
    let reason = match target {
        CampaignState::Active => None,
        _ => Some(body.reason.unwrap_or_else(|| "admin-api".into())),
    };
    // Like `herald campaign pause`: a campaign may be paused before its first job arrives
    // (the write creates it). One atomic write: the store never overwrites `cancelled`, so
    // the state read back says whether this change took or met a cancellation.
    s.store
        .set_campaign_state(&id, target, reason.as_deref())
        .await?;
    let Some(updated) = s.store.campaign(&id).await? else {
        return Err(StoreError::Corrupt(format!("campaign {id} vanished after an update")).into());
    };
    if updated.state == CampaignState::Cancelled && target != CampaignState::Cancelled {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("campaign {id} is cancelled; cancellation is final"),
        ));
    }
    info!(campaign = %id, state = target.as_str(), reason = reason.as_deref().unwrap_or(""),
        "campaign state changed through the admin API");
    view(s.store.as_ref(), updated).await
}

fn contact(raw: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(raw).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("'{}': {e}", crate::domain::mask(raw)),
        )
    })
}

/// Every string that is the number, masked: the answer travels through proxies and logs.
fn masked(mut v: serde_json::Value, phone: &PhoneNumber) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value, full: &str, shown: &str) {
        match v {
            serde_json::Value::String(s) if s == full => *s = shown.to_owned(),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, full, shown)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|i| walk(i, full, shown)),
            _ => {}
        }
    }
    walk(&mut v, phone.as_str(), &phone.to_string());
    v
}

/// `GET /api/contacts/{phone}`: everything held on the number (GDPR Art. 15).
async fn export(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorise(&s, &headers)?;
    let phone = contact(&raw)?;
    let data = s.store.export_contact(&phone).await?;
    Ok(Json(masked(data, &phone)))
}

/// `DELETE /api/contacts/{phone}`: erase the number (GDPR Art. 17).
async fn erase(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorise(&s, &headers)?;
    let phone = contact(&raw)?;
    let report = match s.store.erase_contact(&phone).await {
        Ok(r) => r,
        Err(StoreError::NoHashKey) => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                StoreError::NoHashKey.to_string(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    info!(phone = %phone, "contact erased through the admin API");
    let removed: BTreeMap<&str, u64> = report.into_iter().collect();
    Ok(Json(
        json!({ "phone": phone.to_string(), "erased": removed }),
    ))
}
