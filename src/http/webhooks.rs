//! `/webhooks`: Meta's subscription handshake (GET) and its notifications (POST). A POST is
//! verified on its raw bytes, read by [`super::notifications`], applied to the store — all
//! status updates of the POST in one `apply_deliveries` batch, the customers' messages in one
//! `record_inbound` batch (windows, opt-in keywords → consent and a confirmation timer) — and
//! answered 200 once durable.
//! Meta delivers at least once and retries anything but a 2xx for days, so every step is
//! idempotent and a store failure answers 5xx to get the POST again later.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tracing::{debug, error, info, warn};

use super::notifications::{self, Inbound, Note, Notification};
use super::signature::{self, SIGNATURE_HEADER};
use crate::domain::{ChannelKind, EventOptions};
use crate::domain::{IdempotencyKey, PhoneNumber};
use crate::engine::{Confirmation, FALLBACK_TIMER, schedule_confirmations, sms_key};
use crate::policy::billing::billed_price;
use crate::policy::cost::RateCard;
use crate::policy::opt_out::OptOutWords;
use crate::policy::optin;
use crate::store::{BilledMessage, DeliveryUpdate};
use crate::store::{Store, StoreResult};
use crate::telemetry::log_limit;
use crate::telemetry::metrics::{self, webhook_kind as kind, webhook_result as result};

/// Largest POST body read. Meta sends up to about 1,000 updates per POST (~600 KB); the
/// margin is for long error texts. Bodies are read before the signature can be checked, so
/// this is also what an anonymous caller can make herald buffer.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Longest a POST may spend in the store. Meta expects an answer within seconds; past this
/// herald answers 503 and the redelivery applies it (every write is idempotent).
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Webhook settings.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `HERALD_APP_SECRET`: the key of `X-Hub-Signature-256`.
    pub app_secret: String,
    /// `HERALD_VERIFY_TOKEN`: what Meta sends in the subscription handshake. Without it every
    /// handshake is refused (notifications still work once subscribed).
    pub verify_token: Option<String>,
    pub opt_out: OptOutWords,
    /// Herald's clock: when an inbound message arrived (its window's latest start) and when
    /// its confirmation is due.
    pub clock: crate::domain::Clock,
    /// Prices what Meta bills (status webhooks' `pricing`).
    pub rate_card: Arc<RateCard>,
    /// Per-recipient events for CRMs (`HERALD_RECIPIENT_EVENTS`): `Some` writes the outbox
    /// rows of what each POST's statuses changed in the same transaction.
    pub recipient_events: Option<EventOptions>,
}

impl fmt::Debug for WebhookConfig {
    /// Secrets never reach a log line, even through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("app_secret", &"<set>")
            .field("verify_token", &self.verify_token.as_ref().map(|_| "<set>"))
            .field("opt_out", &self.opt_out)
            .field("clock", &self.clock)
            .field("rate_card", &self.rate_card.name)
            .field("recipient_events", &self.recipient_events)
            .finish()
    }
}

struct WebhookState {
    store: Arc<dyn Store>,
    config: WebhookConfig,
}

/// `GET /webhooks` and `POST /webhooks`.
pub fn routes(store: Arc<dyn Store>, config: WebhookConfig) -> Router {
    Router::new()
        .route("/webhooks", get(verify).post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(WebhookState { store, config }))
}

#[derive(Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// The subscription handshake: echo the challenge when mode and token match, else 403.
async fn verify(State(s): State<Arc<WebhookState>>, Query(q): Query<Handshake>) -> Response {
    let token_matches = match (&s.config.verify_token, &q.verify_token) {
        (Some(expected), Some(given)) => {
            signature::secrets_match(given.as_bytes(), expected.as_bytes())
        }
        _ => false,
    };
    if q.mode.as_deref() == Some("subscribe") && token_matches {
        metrics::webhook_event(kind::VERIFICATION, result::APPLIED);
        info!("webhook subscription verified");
        let challenge = q.challenge.unwrap_or_default();
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            challenge,
        )
            .into_response();
    }
    metrics::webhook_event(kind::VERIFICATION, result::REJECTED);
    if let Some(suppressed) = log_limit::admit("webhook.verification_rejected") {
        warn!(
            suppressed,
            token_configured = s.config.verify_token.is_some(),
            "webhook verification refused: hub.mode is not subscribe or hub.verify_token does not match HERALD_VERIFY_TOKEN"
        );
    }
    StatusCode::FORBIDDEN.into_response()
}

/// A notification: verify, read, apply, answer.
async fn receive(State(s): State<Arc<WebhookState>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
    if let Err(e) = signature::verify(s.config.app_secret.as_bytes(), &body, header) {
        metrics::webhook_event(kind::BODY, result::BAD_SIGNATURE);
        if let Some(suppressed) = log_limit::admit("webhook.bad_signature") {
            warn!(error = %e, suppressed, bytes = body.len(), "webhook POST refused (401)");
        }
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let received = s.config.clock.now();
    let notification = match notifications::parse_at(&body, &s.config.opt_out, received) {
        Ok(n) => n,
        Err(e) => {
            metrics::webhook_event(kind::BODY, result::INVALID);
            if let Some(suppressed) = log_limit::admit("webhook.invalid_body") {
                warn!(error = %e, suppressed, bytes = body.len(), "signed webhook POST is unreadable (400)");
            }
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    log_notes(&notification.notes);
    let settled = notification.settled.clone();
    match tokio::time::timeout(
        APPLY_TIMEOUT,
        apply(s.store.as_ref(), &s.config, notification, received),
    )
    .await
    {
        Ok(Ok(applied)) => {
            for ((k, r), n) in settled.into_iter().chain(applied) {
                metrics::webhook_events(k, r, n);
            }
            StatusCode::OK.into_response()
        }
        Ok(Err(e)) => {
            metrics::webhook_event(kind::BODY, result::ERROR);
            if let Some(suppressed) = log_limit::admit("webhook.store_error") {
                error!(error = %e, suppressed, "webhook not applied, Meta will redeliver it (500)");
            }
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => {
            metrics::webhook_event(kind::BODY, result::ERROR);
            if let Some(suppressed) = log_limit::admit("webhook.store_timeout") {
                error!(
                    suppressed,
                    timeout = ?APPLY_TIMEOUT,
                    "webhook not applied in time, Meta will redeliver it (503)"
                );
            }
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Applies one POST's decisions; returns the events it counted, by (kind, result).
async fn apply(
    store: &dyn Store,
    config: &WebhookConfig,
    n: Notification,
    received: chrono::DateTime<chrono::Utc>,
) -> StoreResult<BTreeMap<(&'static str, &'static str), u64>> {
    let mut counted = BTreeMap::new();
    if !n.deliveries.is_empty() {
        let statuses = n.deliveries.len() as u64;
        for status in ["sent", "delivered", "read", "failed"] {
            let k = n.deliveries.iter().filter(|d| d.status == status).count();
            metrics::message_statuses(status, k as u64);
        }
        let changed = match config.recipient_events {
            Some(events) => {
                store
                    .apply_deliveries_with_events(&n.deliveries, events, received)
                    .await?
            }
            None => store.apply_deliveries(&n.deliveries).await?,
        }
        .min(statuses);
        // The store reports rows changed, not which update changed one: a status that changed
        // nothing was a redelivery or is outranked by one the ledger already has.
        counted.insert((kind::STATUS, result::APPLIED), changed);
        counted.insert((kind::STATUS, result::DUPLICATE), statuses - changed);
        debug!(statuses, changed, "delivery statuses applied");
        bill(store, &config.rate_card, &n.deliveries, received).await?;
        // A failed WhatsApp message whose job has a fallback: its timer is due now (the
        // firing process reads the failure's code from the ledger). Deliveries need nothing
        // here: a firing timer finds them in the ledger and sends no SMS.
        let now = chrono::Utc::now();
        for d in n.deliveries.iter().filter(|d| d.status == "failed") {
            if let Some(key) = &d.key {
                store
                    .advance_timer(FALLBACK_TIMER, &sms_key(key.as_str()), now)
                    .await?;
            }
        }
    }
    if !n.inbound.is_empty() {
        inbound(store, &n.inbound, received, &mut counted).await?;
    }
    for r in &n.revocations {
        // Meta's webhooks speak for WhatsApp: a STOP there revokes WhatsApp, not SMS.
        let channel = Some(ChannelKind::WhatsApp);
        store
            .revoke_consent(&r.phone, r.category, channel, r.at, &r.source)
            .await?;
        info!(
            phone = %r.phone,
            category = r.category.map_or("all", |c| c.as_str()),
            source = %r.source,
            at = %r.at.to_rfc3339(),
            "consent revoked from a webhook"
        );
        // A 131050 revocation is a side effect of a status event, a STOP one of a message:
        // both already counted.
        if r.kind != kind::STATUS && r.kind != kind::MESSAGE {
            *counted.entry((r.kind, result::APPLIED)).or_default() += 1;
        }
    }
    if let Some(options) = config.recipient_events
        && !n.revocations.is_empty()
    {
        // After the revocations: a crash in between answers no 200, and Meta's redelivery
        // revokes again (idempotent) and writes the events.
        let phones: Vec<PhoneNumber> = n.revocations.iter().map(|r| r.phone.clone()).collect();
        store
            .record_opt_out_events(&phones, ChannelKind::WhatsApp, options, received)
            .await?;
    }
    for t in &n.template_statuses {
        let rows = store
            .set_template_status(&t.name, &t.language, &t.status)
            .await?;
        if rows == 0 {
            info!(template = %t.name, language = %t.language, status = %t.status,
                "template status update for a template not in the store; ignored");
            *counted
                .entry((kind::TEMPLATE, result::IGNORED))
                .or_default() += 1;
        } else {
            info!(template = %t.name, language = %t.language, status = %t.status, accounts = rows,
                "template status updated");
            *counted
                .entry((kind::TEMPLATE, result::APPLIED))
                .or_default() += 1;
        }
    }
    Ok(counted)
}

/// Prices and records what Meta bills: each status carrying billable `pricing`, once per
/// message (Meta prices `sent` and `delivered`, and redelivers), with the rate card for the
/// recipient's market; counts the new ones in `herald_billed_cost_micros_total`.
async fn bill(
    store: &dyn Store,
    card: &RateCard,
    deliveries: &[DeliveryUpdate],
    at: chrono::DateTime<chrono::Utc>,
) -> StoreResult<()> {
    let billed: BTreeMap<&str, &str> = deliveries
        .iter()
        .filter_map(|d| Some((d.key.as_ref()?.as_str(), d.billed_category.as_deref()?)))
        .collect();
    if billed.is_empty() {
        return Ok(());
    }
    let keys: Vec<IdempotencyKey> = billed
        .keys()
        .map(|k| IdempotencyKey::from_trusted(*k))
        .collect();
    let mut messages = Vec::with_capacity(keys.len());
    for row in store.ledger_entries(&keys).await? {
        let Some(category) = billed.get(row.key.as_str()) else {
            continue;
        };
        // An erased number's row no longer says its market: not priced.
        let Ok(to) = PhoneNumber::parse(&row.recipient) else {
            continue;
        };
        let Some((market, micros)) = billed_price(card, category, &to, row.created_at) else {
            continue;
        };
        messages.push(BilledMessage {
            key: row.key.to_string(),
            campaign: row.campaign.to_string(),
            channel: row.channel.as_str().to_owned(),
            category: (*category).to_owned(),
            market,
            micros,
            currency: card.currency.clone(),
            at,
        });
    }
    let new = store.record_billing(&messages).await?;
    for (m, is_new) in messages.iter().zip(new) {
        if is_new {
            metrics::billed_cost(&m.currency, &m.category, &m.market, m.micros);
        }
    }
    Ok(())
}

/// Stores the customers' messages (each once per message id; a new one opens or extends the
/// customer-service window) and turns those that are a registered keyword into consent with
/// its proof and a confirmation due now. Every step is idempotent, so a redelivered webhook —
/// or one whose earlier delivery failed half-way — ends in the same state: the consent grant
/// keeps the latest grant, the confirmation's timer is scheduled once per message.
async fn inbound(
    store: &dyn Store,
    inbound: &[Inbound],
    received: chrono::DateTime<chrono::Utc>,
    counted: &mut BTreeMap<(&'static str, &'static str), u64>,
) -> StoreResult<()> {
    let keywords = store.keywords().await?;
    let mut messages = Vec::with_capacity(inbound.len());
    let mut optins = Vec::new();
    for m in inbound {
        let mut message = m.message.clone();
        if let Some((keyword, text)) = optin::matching(&m.texts, &message.sender, &keywords) {
            // The text is kept only here: it is the proof of the consent.
            message.proof_text = Some(text.to_owned());
            optins.push((messages.len(), keyword, text.to_owned()));
        }
        messages.push(message);
    }
    let new = store.record_inbound(&messages, received).await?;
    for (m, is_new) in messages.iter().zip(&new) {
        let result = if *is_new { "stored" } else { "duplicate" };
        metrics::inbound_messages(m.kind, result, 1);
        *counted
            .entry((
                kind::MESSAGE,
                if *is_new {
                    result::APPLIED
                } else {
                    result::DUPLICATE
                },
            ))
            .or_default() += 1;
    }
    if optins.is_empty() {
        return Ok(());
    }
    let consents: Vec<_> = optins
        .iter()
        .map(|(i, keyword, text)| optin::consent(&messages[*i], keyword, text))
        .collect();
    store.grant_consents(&consents).await?;
    let confirmations: Vec<Confirmation> = optins
        .iter()
        .map(|(i, keyword, _)| Confirmation {
            sender: messages[*i].sender.to_string(),
            to: messages[*i].from.as_str().to_owned(),
            keyword: keyword.keyword.clone(),
            category: keyword.category,
            text: keyword.confirmation.clone(),
            wamid: messages[*i].wamid.clone(),
        })
        .collect();
    schedule_confirmations(store, &confirmations, received).await?;
    for (i, keyword, _) in &optins {
        let m = &messages[*i];
        if new[*i] {
            info!(
                phone = %m.from,
                keyword = %keyword.keyword,
                category = %keyword.category,
                source = %keyword.source,
                "opt-in recorded from a keyword message; confirmation scheduled"
            );
        }
    }
    let recorded = optins.iter().filter(|(i, ..)| new[*i]).count() as u64;
    metrics::optins("recorded", recorded);
    metrics::optins("duplicate", optins.len() as u64 - recorded);
    Ok(())
}

fn log_notes(notes: &[Note]) {
    for note in notes {
        match note {
            Note::Invalid { kind, what } => {
                if let Some(suppressed) = log_limit::admit("webhook.invalid_item") {
                    warn!(kind, problem = %what, suppressed, "webhook item skipped: unreadable");
                }
            }
            Note::MarketingResumed { phone } => info!(
                phone = %phone,
                "user resumed marketing messages; consent is not restored automatically — record a new consent with its proof"
            ),
            Note::UnhandledField { field } => debug!(%field, "webhook field not handled; ignored"),
        }
    }
}
