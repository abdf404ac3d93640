//! Who is calling the admin API and whether their role allows the route, and the audit row
//! every call by a known caller leaves. A bearer token is either `HERALD_ADMIN_TOKEN` (the
//! bootstrap operator, compared in constant time) or a scoped `hrld_…` token, found by the
//! SHA-256 of the secret on every request — no cache, so a revocation or an expiry holds at
//! once in every process — then compared in constant time again.
//!
//! Answers: 401 for a missing, unknown, revoked or expired token (counted in
//! `herald_admin_requests_total`, no audit row: an unauthenticated caller must not make herald
//! write); 403 for a known token without the role (an audit row `denied`); 403 naming how to
//! enable the API when neither `HERALD_ADMIN_TOKEN` nor any token exists (default deny).
//! After the call the row records how it ended; a call whose row cannot be written answers
//! 503 instead of its result, so nothing leaves (an export) unrecorded.

use axum::http::{HeaderMap, StatusCode, header};
use tracing::{error, warn};

use super::admin::{AdminState, ApiError};
use super::signature::secrets_match;
use crate::domain::access::{TOKEN_PREFIX, TokenStatus, secret_hash};
use crate::domain::{Actor, AuditEntry, Role};
use crate::policy::access::Action;
use crate::store::access::LAST_USED_GRANULARITY;
use crate::telemetry::metrics;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub actor: Actor,
    pub role: Role,
}

/// One authorised call in progress: finished with its outcome, which writes its audit row.
pub(super) struct Call<'a> {
    state: &'a AdminState,
    caller: Caller,
    action: Action,
    route: &'static str,
    target: Option<String>,
}

/// The `result` label of a status.
fn label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        400 => "bad_request",
        401 => "unauthorized",
        403 => "denied",
        404 => "not_found",
        409 => "conflict",
        _ => "error",
    }
}

/// The audit log's `result` for an answer other than success.
fn audit_result(e: &ApiError) -> String {
    match e.0.as_u16() {
        404 => "not_found".into(),
        403 => "denied".into(),
        _ => format!("error: {}", e.1),
    }
}

fn disabled() -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        "the admin API is disabled: set HERALD_ADMIN_TOKEN (a long random secret) or create a token with `herald tokens create --role … --name …`, and send it as a bearer token".into(),
    )
}

fn unauthorized() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "missing, unknown, revoked or expired bearer token".into(),
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

impl AdminState {
    /// The caller behind the request's bearer token.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let given = bearer(headers);
        if let (Some(expected), Some(given)) = (&self.token, given)
            && secrets_match(given.as_bytes(), expected.as_bytes())
        {
            return Ok(Caller {
                actor: Actor::Bootstrap,
                role: Role::Operator,
            });
        }
        if let Some(given) = given.filter(|g| g.starts_with(TOKEN_PREFIX)) {
            let hash = secret_hash(given);
            if let Some(token) = self.store.token_by_hash(&hash).await?
                && secrets_match(hash.as_bytes(), token.secret_hash.as_bytes())
            {
                let now = self.clock.now();
                if token.status(now) != TokenStatus::Active {
                    return Err(unauthorized());
                }
                let stale = token.last_used_at.is_none_or(|t| {
                    (now - t).to_std().unwrap_or_default() >= LAST_USED_GRANULARITY
                });
                if stale && let Err(e) = self.store.touch_token(token.name.as_str(), now).await {
                    warn!(error = %e, token = %token.name, "cannot note the token's last use");
                }
                return Ok(Caller {
                    actor: Actor::Token(token.name),
                    role: token.role,
                });
            }
        }
        // Default deny: with nothing configured nobody can get in, and the answer says how
        // to change that. Asked only on the way to a refusal.
        if self.token.is_none() && !self.store.any_tokens().await? {
            return Err(disabled());
        }
        Err(unauthorized())
    }

    /// Authenticates the request and checks that its role may perform `action` on `route`
    /// (its template, `METHOD /api/…`); `target` is what the audit row names.
    pub(super) async fn begin(
        &self,
        headers: &HeaderMap,
        action: Action,
        route: &'static str,
        target: Option<String>,
    ) -> Result<Call<'_>, ApiError> {
        let caller = match self.authenticate(headers).await {
            Ok(c) => c,
            Err(e) => {
                let result = if e.0 == StatusCode::FORBIDDEN {
                    "disabled"
                } else {
                    label(e.0)
                };
                metrics::admin_request(action.as_str(), result);
                return Err(e);
            }
        };
        if !action.allows(caller.role) {
            metrics::admin_request(action.as_str(), "denied");
            let entry = AuditEntry::new(
                self.clock.now(),
                &caller.actor,
                action.as_str(),
                target,
                "denied",
            )
            .with_route(route);
            if let Err(e) = self.store.record_audit(&entry).await {
                error!(error = %e, action = action.as_str(), "cannot write the audit row of a denied call");
            }
            let needs: Vec<&str> = action.roles().iter().map(|r| r.as_str()).collect();
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "the token's role '{}' may not {} (needs {})",
                    caller.role,
                    action.as_str(),
                    needs.join(" or ")
                ),
            ));
        }
        Ok(Call {
            state: self,
            caller,
            action,
            route,
            target,
        })
    }
}

impl Call<'_> {
    /// Writes the call's audit row and returns its answer — or 503 when the row cannot be
    /// written: every admin action is safe to repeat, and an answer without its row would be
    /// an unrecorded action (an export leaving unaudited).
    pub(super) async fn finish<T>(self, outcome: Result<T, ApiError>) -> Result<T, ApiError> {
        let result = match &outcome {
            Ok(_) => "ok".to_owned(),
            Err(e) => audit_result(e),
        };
        let entry = AuditEntry::new(
            self.state.clock.now(),
            &self.caller.actor,
            self.action.as_str(),
            self.target,
            result,
        )
        .with_route(self.route);
        if let Err(e) = self.state.store.record_audit(&entry).await {
            error!(error = %e, action = self.action.as_str(), actor = %self.caller.actor,
                "cannot write the audit row; the answer is withheld");
            metrics::admin_request(self.action.as_str(), "error");
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit log could not be written, so the answer is withheld; repeat the request (admin actions are safe to repeat)".into(),
            ));
        }
        let status = match &outcome {
            Ok(_) => StatusCode::OK,
            Err(e) => e.0,
        };
        metrics::admin_request(self.action.as_str(), label(status));
        outcome
    }
}
