//! Claiming due timers on SQLite: one `UPDATE … RETURNING` on the single writer connection.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::SqliteStore;
use crate::store::db;
use crate::store::timers;
use crate::store::{DueTimer, StoreResult};

impl SqliteStore {
    pub(in crate::store) async fn claim_due_timers(
        &self,
        kind: Option<&str>,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<DueTimer>> {
        // One statement on the one writer connection: claims cannot interleave.
        let rows = sqlx::query(
            "UPDATE timers SET owner = $1, lease_until = $3, claims = claims + 1
             WHERE rowid IN (SELECT rowid FROM timers
                             WHERE fired_at IS NULL AND due_at <= $2
                               AND (lease_until IS NULL OR lease_until <= $2)
                               AND ($5 IS NULL OR kind = $5)
                             ORDER BY due_at, kind, key
                             LIMIT $4)
             RETURNING kind, key, due_at, payload, claims",
        )
        .bind(owner)
        .bind(now.timestamp_millis())
        .bind(timers::lease_end(now, lease).timestamp_millis())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(kind)
        .fetch_all(&self.writer)
        .await?;
        let rows: Vec<db::Row> = rows.into_iter().map(db::Row::Sqlite).collect();
        timers::in_due_order(&rows)
    }
}
