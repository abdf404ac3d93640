//! Claiming due timers on Postgres: `FOR UPDATE SKIP LOCKED`, so concurrent claimers never
//! wait for each other and never both take a timer.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::PostgresStore;
use crate::store::db;
use crate::store::timers;
use crate::store::{DueTimer, StoreResult};

impl PostgresStore {
    pub(in crate::store) async fn claim_due_timers(
        &self,
        kind: Option<&str>,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<DueTimer>> {
        // Rows another claimer has locked are skipped, not waited for; a row it has just
        // leased fails the re-checked `WHERE` once its lock is gone: one owner per claim.
        let rows = sqlx::query(
            "UPDATE timers t SET owner = $1, lease_until = $3, claims = t.claims + 1
             FROM (SELECT kind, key FROM timers
                   WHERE fired_at IS NULL AND due_at <= $2
                     AND (lease_until IS NULL OR lease_until <= $2)
                     AND ($5::text IS NULL OR kind = $5)
                   ORDER BY due_at, kind, key
                   LIMIT $4
                   FOR UPDATE SKIP LOCKED) due
             WHERE t.kind = due.kind AND t.key = due.key
             RETURNING t.kind, t.key, t.due_at, t.payload, t.claims",
        )
        .bind(owner)
        .bind(now)
        .bind(timers::lease_end(now, lease))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        let rows: Vec<db::Row> = rows.into_iter().map(db::Row::Postgres).collect();
        timers::in_due_order(&rows)
    }
}
