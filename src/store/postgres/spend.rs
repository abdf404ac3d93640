//! What a portfolio may still reach, on Postgres: tier reservations serialised per portfolio
//! on an advisory lock, the tier window on the database clock. (Budgets are charged in the
//! shared `store::campaigns`.)

use std::collections::HashSet;
use std::time::Duration;

use super::{PostgresStore, TIER_LOCK_CLASS, sorted_keys};
use crate::domain::PhoneNumber;
use crate::store::StoreResult;
use crate::store::shared;

impl PostgresStore {
    pub(in crate::store) async fn reserve_tier(
        &self,
        portfolio: &str,
        limit: Option<u32>,
        window: Duration,
        phones: &[PhoneNumber],
    ) -> StoreResult<Vec<bool>> {
        if phones.is_empty() {
            return Ok(Vec::new());
        }
        let window_secs = window.as_secs_f64();
        let mut tx = self.tx().await?;
        let (answers, touch) = if limit.is_none() {
            // Unlimited: nothing is counted, so the kept count no longer knows who was reached
            // (a portfolio whose senders mix limits): the next limited reservation recounts.
            sqlx::query("DELETE FROM tier_count WHERE portfolio = $1")
                .bind(portfolio)
                .execute(&mut *tx)
                .await?;
            shared::decide_tier(phones, &HashSet::new(), 0, None)
        } else {
            // One reservation per portfolio at a time, across every worker: the count and
            // the stamps below must not interleave with another's or the tier overspends.
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(TIER_LOCK_CLASS)
                .bind(portfolio)
                .execute(&mut *tx)
                .await?;
            let in_window: HashSet<String> = sqlx::query_scalar(
                // The batch is looked up by primary key first; left to itself the planner
                // may prefer scanning the whole window through the time index.
                "WITH batch AS MATERIALIZED (
                    SELECT phone, last_reached_at FROM tier_reach
                    WHERE portfolio = $1 AND phone = ANY($3)
                 )
                 SELECT phone FROM batch
                 WHERE last_reached_at > now() - $2 * interval '1 second'",
            )
            .bind(portfolio)
            .bind(window_secs)
            .bind(phones.iter().map(PhoneNumber::as_str).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            if phones.iter().all(|p| in_window.contains(p.as_str())) {
                // Every number is in the window already: the count does not change.
                shared::decide_tier(phones, &in_window, 0, limit)
            } else {
                // The kept count, less the numbers that left the window since it was kept (an
                // index range of `tier_reach_window`); a full count when there is none.
                let kept: Option<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                    "SELECT c.reached - (SELECT count(*) FROM tier_reach r
                         WHERE r.portfolio = c.portfolio
                           AND r.last_reached_at > c.counted_at - c.window_secs * interval '1 second'
                           AND r.last_reached_at <= now() - c.window_secs * interval '1 second'),
                            c.anchored_at
                     FROM tier_count c
                     WHERE c.portfolio = $1 AND c.window_secs = $2 AND c.counted_at <= now()
                       AND c.anchored_at > now() - $3 * interval '1 second'",
                )
                .bind(portfolio)
                .bind(window_secs)
                .bind(shared::TIER_RECOUNT_AFTER.as_secs_f64())
                .fetch_optional(&mut *tx)
                .await?;
                let (used, anchored_at) = match kept {
                    Some((reached, anchored_at)) => (reached.max(0), Some(anchored_at)),
                    None => {
                        let n: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM tier_reach
                             WHERE portfolio = $1
                               AND last_reached_at > now() - $2 * interval '1 second'",
                        )
                        .bind(portfolio)
                        .bind(window_secs)
                        .fetch_one(&mut *tx)
                        .await?;
                        (n, None)
                    }
                };
                let used = u64::try_from(used).unwrap_or(0);
                let (answers, touch) = shared::decide_tier(phones, &in_window, used, limit);
                let reached = used + shared::newly_reached(&touch, &in_window);
                sqlx::query(
                    "INSERT INTO tier_count (portfolio, window_secs, counted_at, anchored_at, reached)
                     VALUES ($1, $2, now(), coalesce($3, now()), $4)
                     ON CONFLICT (portfolio) DO UPDATE SET
                        window_secs = excluded.window_secs, counted_at = excluded.counted_at,
                        anchored_at = excluded.anchored_at, reached = excluded.reached",
                )
                .bind(portfolio)
                .bind(window_secs)
                .bind(anchored_at)
                .bind(i64::try_from(reached).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
                (answers, touch)
            }
        };
        if !touch.is_empty() {
            // Sorted, so concurrent unlimited reservations (which take no advisory lock) stamp
            // rows in the same order and cannot deadlock.
            sqlx::query(
                "INSERT INTO tier_reach (portfolio, phone, last_reached_at)
                 SELECT $1, p, now() FROM UNNEST($2::text[]) AS p
                 ON CONFLICT (portfolio, phone) DO UPDATE SET last_reached_at = excluded.last_reached_at",
            )
            .bind(portfolio)
            .bind(sorted_keys(touch))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(answers)
    }

    pub(in crate::store) async fn tier_usage(
        &self,
        portfolio: &str,
        window: Duration,
    ) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tier_reach
             WHERE portfolio = $1 AND last_reached_at > now() - $2 * interval '1 second'",
        )
        .bind(portfolio)
        .bind(window.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
