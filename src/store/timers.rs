//! Durable timers ("do `kind` for `key` at `due`"), the same on both dialects but for
//! claiming (`SKIP LOCKED` on Postgres, the single writer on SQLite). Due times and leases
//! are the caller's `now`, so a test or a replay can move time; the payload is JSON text the
//! store never looks into.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::db::{Arg, KEYS_PER_STATEMENT, Row, key_args, key_placeholders};
use super::sql::SqlStore;
use super::{DueTimer, NewTimer, StoreError, StoreResult, TimerCounts};

/// A claimed timer from its row.
pub(crate) fn due_timer(r: &Row) -> StoreResult<DueTimer> {
    let payload = r.text("payload")?;
    Ok(DueTimer {
        kind: r.text("kind")?,
        key: r.text("key")?,
        due: r.time("due_at")?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("timer payload: {e}")))?,
        claims: u32::try_from(r.int("claims")?).unwrap_or(0),
    })
}

/// Claimed timers in the order they fell due (`RETURNING` keeps no order).
pub(crate) fn in_due_order(rows: &[Row]) -> StoreResult<Vec<DueTimer>> {
    let mut due = rows
        .iter()
        .map(due_timer)
        .collect::<StoreResult<Vec<_>>>()?;
    due.sort_by(|a, b| (a.due, &a.kind, &a.key).cmp(&(b.due, &b.kind, &b.key)));
    Ok(due)
}

/// One timer per (kind, key): a second schedule keeps the first. All of `timers` in one write
/// transaction; returns how many were created.
pub(super) async fn schedule_timers(db: &SqlStore, timers: &[NewTimer<'_>]) -> StoreResult<u64> {
    if timers.is_empty() {
        return Ok(0);
    }
    let mut tx = db.write_tx().await?;
    let mut created = 0;
    for t in timers {
        created += tx
            .execute(
                "INSERT INTO timers (kind, key, due_at, payload, scope, created_at)
                 VALUES ($1, $2, $3, $4, $5, now())
                 ON CONFLICT (kind, key) DO NOTHING",
                &[
                    Arg::Text(t.kind),
                    Arg::Text(t.key),
                    Arg::Time(t.due),
                    Arg::Text(&t.payload.to_string()),
                    Arg::OptText(t.scope),
                ],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(created)
}

/// Fired at most once: only the current holder, only while unfired.
pub(super) async fn complete_timer(
    db: &SqlStore,
    kind: &str,
    key: &str,
    owner: &str,
) -> StoreResult<bool> {
    let done = db
        .execute(
            "UPDATE timers SET fired_at = now(), lease_until = NULL
             WHERE kind = $1 AND key = $2 AND owner = $3 AND fired_at IS NULL",
            &[Arg::Text(kind), Arg::Text(key), Arg::Text(owner)],
        )
        .await?;
    Ok(done == 1)
}

/// `UPDATE … WHERE kind = $1 AND owner = $2 AND key IN ($3, …)`, built once.
static COMPLETE_TIMERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE timers SET fired_at = now(), lease_until = NULL
         WHERE kind = $1 AND owner = $2 AND fired_at IS NULL AND key IN ({})",
        key_placeholders(3)
    )
});

/// [`complete_timer`] for many keys: one statement per [`KEYS_PER_STATEMENT`].
pub(super) async fn complete_timers(
    db: &SqlStore,
    kind: &str,
    keys: &[String],
    owner: &str,
) -> StoreResult<u64> {
    let sql: &'static str = COMPLETE_TIMERS.as_str();
    let mut done = 0;
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let mut args = vec![Arg::Text(kind), Arg::Text(owner)];
        args.extend(key_args(chunk.iter().map(String::as_str)));
        done += db.execute(sql, &args).await?;
    }
    Ok(done)
}

pub(super) async fn release_timer(
    db: &SqlStore,
    kind: &str,
    key: &str,
    owner: &str,
    due: Option<DateTime<Utc>>,
) -> StoreResult<bool> {
    let done = db
        .execute(
            "UPDATE timers SET owner = NULL, lease_until = NULL, due_at = COALESCE($4, due_at)
             WHERE kind = $1 AND key = $2 AND owner = $3 AND fired_at IS NULL",
            &[
                Arg::Text(kind),
                Arg::Text(key),
                Arg::Text(owner),
                Arg::OptTime(due),
            ],
        )
        .await?;
    Ok(done == 1)
}

/// Brings an unfired, unclaimed timer forward to `due` (never later than it was).
pub(super) async fn advance_timer(
    db: &SqlStore,
    kind: &str,
    key: &str,
    due: DateTime<Utc>,
) -> StoreResult<bool> {
    let done = db
        .execute(
            "UPDATE timers SET due_at = $3
             WHERE kind = $1 AND key = $2 AND fired_at IS NULL AND owner IS NULL
               AND due_at > $3",
            &[Arg::Text(kind), Arg::Text(key), Arg::Time(due)],
        )
        .await?;
    Ok(done == 1)
}

pub(super) async fn cancel_timer(db: &SqlStore, kind: &str, key: &str) -> StoreResult<bool> {
    let done = db
        .execute(
            "DELETE FROM timers WHERE kind = $1 AND key = $2 AND fired_at IS NULL",
            &[Arg::Text(kind), Arg::Text(key)],
        )
        .await?;
    Ok(done == 1)
}

pub(super) async fn timer_counts(
    db: &SqlStore,
    kind: &str,
    scope: &str,
    now: DateTime<Utc>,
) -> StoreResult<TimerCounts> {
    let rows = db
        .read_all(
            "SELECT CASE WHEN due_at <= $3 THEN 1 ELSE 0 END AS is_due, count(*) AS n
             FROM timers WHERE kind = $1 AND scope = $2 AND fired_at IS NULL
             GROUP BY CASE WHEN due_at <= $3 THEN 1 ELSE 0 END",
            &[Arg::Text(kind), Arg::Text(scope), Arg::Time(now)],
        )
        .await?;
    let mut counts = TimerCounts::default();
    for r in &rows {
        let n = u64::try_from(r.int("n")?).unwrap_or(0);
        if r.int("is_due")? == 1 {
            counts.due = n;
        } else {
            counts.scheduled = n;
        }
    }
    Ok(counts)
}

pub(super) async fn pending_timers(db: &SqlStore) -> StoreResult<Vec<(String, u64)>> {
    db.read_all(
        "SELECT kind, count(*) AS n FROM timers
         WHERE fired_at IS NULL GROUP BY kind ORDER BY kind",
        &[],
    )
    .await?
    .iter()
    .map(|r| Ok((r.text("kind")?, u64::try_from(r.int("n")?).unwrap_or(0))))
    .collect()
}

/// When a lease taken at `now` for `lease` ends.
pub(crate) fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
