//! Scoped API tokens and the audit log, the same statements on both dialects. A token is
//! found by the hash of its secret (a unique index), never by the secret. The audit log is
//! append-only: inserted and read here, deleted only by the retention purge (class `audit`);
//! the migration's trigger refuses any UPDATE.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::db::{Arg, Row};
use super::sql::SqlStore;
use super::{StoreError, StoreResult};
use crate::domain::{ApiToken, AuditEntry, AuditRecord, Role, TokenName};

/// `last_used_at` is written at most this often per token: a request does not become a write.
pub const LAST_USED_GRANULARITY: Duration = Duration::from_secs(60);

/// Longest page of the audit log one read returns.
pub const MAX_AUDIT_PAGE: u32 = 10_000;

macro_rules! token_columns {
    () => {
        "name, role, secret_hash, created_at, expires_at, revoked_at, last_used_at"
    };
}

fn token_row(r: &Row) -> StoreResult<ApiToken> {
    let role = r.text("role")?;
    Ok(ApiToken {
        name: TokenName::from_trusted(r.text("name")?),
        role: Role::parse(&role).map_err(StoreError::Corrupt)?,
        secret_hash: r.text("secret_hash")?,
        created_at: r.time("created_at")?,
        expires_at: r.opt_time("expires_at")?,
        revoked_at: r.opt_time("revoked_at")?,
        last_used_at: r.opt_time("last_used_at")?,
    })
}

pub(super) async fn create_token(db: &SqlStore, token: &ApiToken) -> StoreResult<bool> {
    // A name or (astronomically unlikely) hash already taken inserts nothing.
    let n = db
        .execute(
            "INSERT INTO api_tokens (name, role, secret_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                Arg::Text(token.name.as_str()),
                Arg::Text(token.role.as_str()),
                Arg::Text(&token.secret_hash),
                Arg::Time(token.created_at),
                Arg::OptTime(token.expires_at),
            ],
        )
        .await?;
    Ok(n == 1)
}

pub(super) async fn api_tokens(db: &SqlStore) -> StoreResult<Vec<ApiToken>> {
    db.read_all(
        concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens ORDER BY created_at, id"
        ),
        &[],
    )
    .await?
    .iter()
    .map(token_row)
    .collect()
}

pub(super) async fn token_by_hash(
    db: &SqlStore,
    secret_hash: &str,
) -> StoreResult<Option<ApiToken>> {
    db.read_optional(
        concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE secret_hash = $1"
        ),
        &[Arg::Text(secret_hash)],
    )
    .await?
    .as_ref()
    .map(token_row)
    .transpose()
}

pub(super) async fn any_tokens(db: &SqlStore) -> StoreResult<bool> {
    Ok(db
        .read_optional("SELECT 1 AS one FROM api_tokens LIMIT 1", &[])
        .await?
        .is_some())
}

pub(super) async fn revoke_token(
    db: &SqlStore,
    name: &str,
    at: DateTime<Utc>,
) -> StoreResult<Option<ApiToken>> {
    db.execute(
        "UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
        &[Arg::Text(name), Arg::Time(at)],
    )
    .await?;
    // On the writer: SQLite's readers must not race the update just made.
    db.write_optional(
        concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE name = $1"
        ),
        &[Arg::Text(name)],
    )
    .await?
    .as_ref()
    .map(token_row)
    .transpose()
}

pub(super) async fn touch_token(db: &SqlStore, name: &str, at: DateTime<Utc>) -> StoreResult<()> {
    let stale = at - chrono::Duration::from_std(LAST_USED_GRANULARITY).unwrap_or_default();
    db.execute(
        "UPDATE api_tokens SET last_used_at = $2
         WHERE name = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
        &[Arg::Text(name), Arg::Time(at), Arg::Time(stale)],
    )
    .await?;
    Ok(())
}

pub(super) async fn record_audit(db: &SqlStore, entry: &AuditEntry) -> StoreResult<()> {
    db.execute(
        "INSERT INTO audit_log (at, actor, action, target, result, route)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            Arg::Time(entry.at),
            Arg::Text(&entry.actor),
            Arg::Text(&entry.action),
            Arg::OptText(entry.target.as_deref()),
            Arg::Text(&entry.result),
            Arg::OptText(entry.route.as_deref()),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn audit_entries(
    db: &SqlStore,
    since: Option<DateTime<Utc>>,
    limit: u32,
) -> StoreResult<Vec<AuditRecord>> {
    let limit = i64::from(limit.min(MAX_AUDIT_PAGE));
    // The newest first: who did what lately is the usual question.
    let rows = match since {
        Some(t) => {
            db.read_all(
                "SELECT id, at, actor, action, target, result, route FROM audit_log
                 WHERE at >= $1 ORDER BY id DESC LIMIT $2",
                &[Arg::Time(t), Arg::Int(limit)],
            )
            .await?
        }
        None => {
            db.read_all(
                "SELECT id, at, actor, action, target, result, route FROM audit_log
                 ORDER BY id DESC LIMIT $1",
                &[Arg::Int(limit)],
            )
            .await?
        }
    };
    rows.iter()
        .map(|r| {
            Ok(AuditRecord {
                id: r.int("id")?,
                at: r.time("at")?,
                actor: r.text("actor")?,
                action: r.text("action")?,
                target: r.opt_text("target")?,
                result: r.text("result")?,
                route: r.opt_text("route")?,
            })
        })
        .collect()
}
