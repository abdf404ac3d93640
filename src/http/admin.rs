//! A small admin API beside the webhooks, for dashboards and runbooks that cannot run the CLI:
//! `GET /api/campaigns/{id}` (state and keys counted per outcome), `…/report` (per-recipient
//! outcomes, numbers masked, a page at a time) and `…/costs` (funnel per channel, estimated and
//! billed cost); `POST /api/campaigns/{id}/pause|resume|cancel|budget`, with the same rules as
//! `herald campaign …` (cancellation is final); `GET /api/contacts/{phone}` (GDPR access: what
//! `herald contacts export` prints, the number itself masked) and `DELETE
//! /api/contacts/{phone}` (erasure, as `herald contacts erase`); `GET /api/audit` (the audit
//! log). `POST /api/conversions` (`conversions.rs`) is part of it.
//!
//! Each route is one `policy::access::Action`: the caller's bearer token must carry a role
//! that allows it, and every call by a known caller leaves an audit row (`access.rs`). **Default
//! deny**: with neither `HERALD_ADMIN_TOKEN` nor a token in the store every route answers 403
//! naming how to enable it, so an unconfigured pod exposes nothing and stops nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{error, info};

use crate::app::audit::parse_since;
use crate::app::funnel;
use crate::domain::EventOptions;
use crate::domain::{CampaignId, Clock, PhoneNumber, mask};
use crate::policy::access::Action;
use crate::policy::cost::{RateCard, format_micros, parse_amount};
use crate::store::{
    Budget, Campaign, CampaignCounts, CampaignState, Store, StoreError, contact_ref,
};

/// Longest reason accepted for a pause or cancel; it is shown in `campaign status`.
const MAX_REASON_CHARS: usize = 500;

/// Longest page of `GET /api/campaigns/{id}/report`.
const MAX_REPORT_PAGE: u32 = 5_000;
/// Longest page of `GET /api/audit`.
const MAX_AUDIT_PAGE: u32 = 1_000;

pub(super) struct AdminState {
    pub(super) store: Arc<dyn Store>,
    /// `HERALD_ADMIN_TOKEN`, the bootstrap `operator` token; scoped tokens live in the store.
    pub(super) token: Option<String>,
    /// herald's clock: token expiry and the audit rows' times.
    pub(super) clock: Clock,
    /// What `…/costs` estimates with and `…/budget` checks the currency against: the card
    /// `serve` prices billed messages with.
    pub(super) rate_card: Arc<RateCard>,
    /// Per-recipient events (`HERALD_RECIPIENT_EVENTS`): conversions write `converted`.
    pub(super) recipient_events: Option<EventOptions>,
}

/// Every admin route but `/api/conversions`'s, which `conversions.rs` adds.
pub fn routes(
    store: Arc<dyn Store>,
    token: Option<String>,
    clock: Clock,
    rate_card: Arc<RateCard>,
    recipient_events: Option<EventOptions>,
) -> Router {
    Router::new()
        .route("/api/campaigns/{id}", get(show))
        .route("/api/campaigns/{id}/report", get(report))
        .route("/api/campaigns/{id}/costs", get(costs))
        .route("/api/campaigns/{id}/budget", post(budget))
        .route("/api/campaigns/{id}/{action}", post(control))
        .route("/api/contacts/{phone}", get(export).delete(erase))
        .route("/api/audit", get(audit))
        .merge(super::conversions::routes())
        .with_state(Arc::new(AdminState {
            store,
            token,
            clock,
            rate_card,
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
    /// The spending cap, what is committed against it and what is left; `null` without one.
    budget: Option<BudgetView>,
}

#[derive(Debug, Serialize)]
struct BudgetView {
    limit: String,
    committed: String,
    left: String,
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
        let budget = c.budget.as_ref().map(|b| BudgetView {
            limit: format_micros(b.micros, &b.currency),
            committed: format_micros(c.committed_micros, &b.currency),
            left: format_micros(c.budget_left().unwrap_or(0), &b.currency),
        });
        Self {
            budget,
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

fn campaign_id(raw: &str) -> Result<CampaignId, ApiError> {
    CampaignId::parse(raw)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("campaign id: {e}")))
}

/// The campaign, or 404.
async fn existing(store: &dyn Store, id: &CampaignId) -> Result<Campaign, ApiError> {
    store
        .campaign(id)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no campaign '{id}'")))
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
    let call = s
        .begin(
            &headers,
            Action::CampaignRead,
            "GET /api/campaigns/{id}",
            Some(id.clone()),
        )
        .await?;
    let outcome = async {
        let id = campaign_id(&id)?;
        let campaign = existing(s.store.as_ref(), &id).await?;
        view(s.store.as_ref(), campaign).await
    }
    .await;
    call.finish(outcome).await
}

async fn control(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<CampaignView>, ApiError> {
    let (target, action, route) = match action.as_str() {
        "pause" => (
            CampaignState::Paused,
            Action::CampaignPause,
            "POST /api/campaigns/{id}/pause",
        ),
        "resume" => (
            CampaignState::Active,
            Action::CampaignResume,
            "POST /api/campaigns/{id}/resume",
        ),
        "cancel" => (
            CampaignState::Cancelled,
            Action::CampaignCancel,
            "POST /api/campaigns/{id}/cancel",
        ),
        _ => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "unknown action: use pause, resume, cancel or budget".into(),
            ));
        }
    };
    let call = s.begin(&headers, action, route, Some(id.clone())).await?;
    let outcome = set_state(&s, &id, target, &body).await;
    call.finish(outcome).await
}

async fn set_state(
    s: &AdminState,
    id: &str,
    target: CampaignState,
    body: &[u8],
) -> Result<Json<CampaignView>, ApiError> {
    let id = campaign_id(id)?;
    let body: ControlBody = if body.iter().all(u8::is_ascii_whitespace) {
        ControlBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
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

/// `POST /api/campaigns/{id}/budget`: `{"amount": "250.50"}` (in the rate card's currency;
/// `currency` may say it) or `{"clear": true}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetBody {
    amount: Option<String>,
    currency: Option<String>,
    #[serde(default)]
    clear: bool,
}

async fn budget(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<CampaignView>, ApiError> {
    let call = s
        .begin(
            &headers,
            Action::CampaignBudget,
            "POST /api/campaigns/{id}/budget",
            Some(id.clone()),
        )
        .await?;
    let outcome = set_budget(&s, &id, &body).await;
    call.finish(outcome).await
}

async fn set_budget(s: &AdminState, id: &str, body: &[u8]) -> Result<Json<CampaignView>, ApiError> {
    let id = campaign_id(id)?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let body: BudgetBody = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "body must be {{\"amount\": \"250.50\"}} or {{\"clear\": true}}: {e}"
        ))
    })?;
    let card = &s.rate_card;
    let budget = match (body.clear, body.amount) {
        (true, None) => None,
        (true, Some(_)) => return Err(bad("amount and clear exclude each other".into())),
        (false, None) => return Err(bad("amount is required (or clear: true)".into())),
        (false, Some(raw)) => {
            let currency = body.currency.unwrap_or_else(|| card.currency.clone());
            if !currency.eq_ignore_ascii_case(&card.currency) {
                return Err(bad(format!(
                    "currency: the rate card '{}' prices in {}; a budget in {currency} cannot be compared with it",
                    card.name, card.currency
                )));
            }
            Some(Budget {
                micros: parse_amount(&raw).map_err(|e| bad(format!("amount: {e}")))?,
                currency: card.currency.clone(),
            })
        }
    };
    let c = s.store.set_campaign_budget(&id, budget.as_ref()).await?;
    info!(campaign = %id, budget = ?budget.as_ref().map(|b| b.micros), "campaign budget set through the admin API");
    view(s.store.as_ref(), c).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// Rows to skip: the previous page's `next`. An offset, not the last key: a key may hold
    /// the recipient's number, and the cursor is shown whole.
    offset: Option<u64>,
    limit: Option<u32>,
}

/// One recipient of `…/report`. No message id: Meta's wamid encodes the number.
#[derive(Debug, Serialize)]
struct ReportRow {
    key: String,
    /// Masked (`+49151****678`); an erased number's keyed hash shows as stars too.
    recipient: String,
    outcome: String,
    reason: Option<String>,
    attempts: u32,
    delivery: Option<String>,
    delivery_error: Option<String>,
    channel: &'static str,
    updated_at: String,
}

/// A campaign system may put anything in a key; one that holds the recipient's digits shows
/// them masked, so no full number leaves in a report.
fn shown_key(key: &str, recipient: &str) -> String {
    let digits = recipient.trim_start_matches('+');
    if digits.len() >= 7 && digits.bytes().all(|b| b.is_ascii_digit()) && key.contains(digits) {
        key.replace(digits, &mask(digits))
    } else {
        key.to_owned()
    }
}

/// `GET /api/campaigns/{id}/report?offset=N&limit=M`: per-recipient outcomes by key, a page
/// at a time (`next` is the `offset` of the next page, `null` at the end). For a whole large
/// campaign `herald report` is cheaper: each page here skips `offset` rows.
async fn report(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let call = s
        .begin(
            &headers,
            Action::CampaignReport,
            "GET /api/campaigns/{id}/report",
            Some(id.clone()),
        )
        .await?;
    let outcome = async {
        let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
        let limit = q.limit.unwrap_or(1_000);
        if !(1..=MAX_REPORT_PAGE).contains(&limit) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("limit must be 1 to {MAX_REPORT_PAGE}"),
            ));
        }
        let id = campaign_id(&id)?;
        existing(s.store.as_ref(), &id).await?;
        let offset = q.offset.unwrap_or(0);
        let page = s.store.ledger_slice(&id, offset, limit).await?;
        let next = (page.len() == limit as usize).then(|| offset + u64::from(limit));
        let rows: Vec<ReportRow> = page
            .into_iter()
            .map(|r| ReportRow {
                key: shown_key(r.key.as_str(), &r.recipient),
                recipient: mask(&r.recipient),
                outcome: r.state,
                reason: r.reason,
                attempts: r.attempts,
                delivery: r.delivery,
                delivery_error: r.delivery_error,
                channel: r.channel.as_str(),
                updated_at: r.updated_at.to_rfc3339(),
            })
            .collect();
        Ok(Json(
            json!({ "campaign": id.as_str(), "rows": rows, "next": next }),
        ))
    }
    .await;
    call.finish(outcome).await
}

/// `GET /api/campaigns/{id}/costs`: the funnel per channel with its estimated cost (the rate
/// card's price of what was sent) and what Meta's status webhooks billed. Counts and money
/// only: no number, no key.
async fn costs(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let call = s
        .begin(
            &headers,
            Action::CampaignCosts,
            "GET /api/campaigns/{id}/costs",
            Some(id.clone()),
        )
        .await?;
    let outcome = async {
        let id = campaign_id(&id)?;
        existing(s.store.as_ref(), &id).await?;
        let card = &s.rate_card;
        let cols = funnel::campaign_funnel(s.store.as_ref(), &id, Some((card, ""))).await?;
        let money = |m: u64| format_micros(m, &card.currency);
        let channels: serde_json::Map<String, serde_json::Value> = cols
            .iter()
            .map(|(ch, f)| {
                let revenue: BTreeMap<&str, String> = f
                    .revenue
                    .iter()
                    .map(|(cur, m)| {
                        (
                            cur.as_str(),
                            format_micros(u64::try_from(*m).unwrap_or(0), cur),
                        )
                    })
                    .collect();
                (
                    ch.as_str().to_owned(),
                    json!({
                        "sent": f.sent,
                        "fell_back": f.fell_back,
                        "delivered": f.delivered,
                        "read": f.read,
                        "converted": f.converted,
                        "follow_ups": f.follow_ups,
                        "converted_after_follow_up": f.converted_after_follow_up,
                        "revenue": revenue,
                        "estimated_cost": f.cost_micros.map(money),
                    }),
                )
            })
            .collect();
        let estimated: u64 = cols.values().filter_map(|f| f.cost_micros).sum();
        let billed = s.store.billed_summary(&id).await?;
        let billed_total: u64 = billed.iter().map(|l| l.micros).sum();
        let lines: Vec<serde_json::Value> = billed
            .iter()
            .map(|l| {
                json!({
                    "channel": l.channel, "category": l.category, "market": l.market,
                    "messages": l.messages, "cost": format_micros(l.micros, &l.currency),
                })
            })
            .collect();
        Ok(Json(json!({
            "campaign": id.as_str(),
            "rate_card": card.name,
            "channels": channels,
            "estimated_cost": money(estimated),
            "billed": lines,
            "billed_cost": money(billed_total),
        })))
    }
    .await;
    call.finish(outcome).await
}

fn contact(raw: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(raw).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("'{}': {e}", crate::domain::mask(raw)),
        )
    })
}

/// How the audit row names the contact of a path: its keyed hash (never the number).
fn contact_target(raw: &str) -> Option<String> {
    PhoneNumber::parse(raw).ok().map(|p| contact_ref(&p))
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

/// `GET /api/contacts/{phone}`: everything held on the number (GDPR Art. 15). Audited before
/// the answer leaves: no audit row, no data.
async fn export(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let call = s
        .begin(
            &headers,
            Action::ContactExport,
            "GET /api/contacts/{phone}",
            contact_target(&raw),
        )
        .await?;
    let outcome = async {
        let phone = contact(&raw)?;
        let data = s.store.export_contact(&phone).await?;
        Ok(Json(masked(data, &phone)))
    }
    .await;
    call.finish(outcome).await
}

/// `DELETE /api/contacts/{phone}`: erase the number (GDPR Art. 17).
async fn erase(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let call = s
        .begin(
            &headers,
            Action::ContactErase,
            "DELETE /api/contacts/{phone}",
            contact_target(&raw),
        )
        .await?;
    let outcome = async {
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
    .await;
    call.finish(outcome).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// RFC 3339, or a duration back from now (`7d`).
    since: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/audit?since=7d&limit=100`: the newest rows of the audit log first.
async fn audit(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let call = s
        .begin(&headers, Action::AuditRead, "GET /api/audit", None)
        .await?;
    let outcome = async {
        let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
        let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
        let limit = q.limit.unwrap_or(100);
        if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
            return Err(bad(format!("limit must be 1 to {MAX_AUDIT_PAGE}")));
        }
        let since = q
            .since
            .as_deref()
            .map(|raw| parse_since(raw, s.clock.now()))
            .transpose()
            .map_err(bad)?;
        let entries = s.store.audit_entries(since, limit).await?;
        Ok(Json(json!({ "entries": entries })))
    }
    .await;
    call.finish(outcome).await
}
