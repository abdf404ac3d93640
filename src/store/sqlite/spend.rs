//! What a portfolio may still reach, on SQLite: tier reservations decided inside one write
//! transaction (SQLite's write lock serialises them). (Budgets are charged in the shared
//! `store::campaigns`.)

use std::collections::HashSet;
use std::time::Duration;

use super::{SqliteStore, json_keys, now_ms};
use crate::domain::PhoneNumber;
use crate::store::StoreResult;
use crate::store::shared;

impl SqliteStore {
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
        let now = now_ms();
        let since = now.saturating_sub(shared::millis(window));
        let mut tx = self.write_tx().await?;
        let (answers, touch) = if limit.is_none() {
            // Unlimited: nothing is counted, so the kept count no longer knows who was reached
            // (a portfolio whose senders mix limits): the next limited reservation recounts.
            sqlx::query("DELETE FROM tier_count WHERE portfolio = ?1")
                .bind(portfolio)
                .execute(&mut *tx)
                .await?;
            shared::decide_tier(phones, &HashSet::new(), 0, None)
        } else {
            let in_window: HashSet<String> = sqlx::query_scalar(
                // `+last_reached_at`: look the batch up by primary key, not by scanning the
                // whole window.
                "SELECT phone FROM tier_reach
                 WHERE portfolio = ?1 AND +last_reached_at > ?2
                   AND phone IN (SELECT value FROM json_each(?3))",
            )
            .bind(portfolio)
            .bind(since)
            .bind(json_keys(phones.iter().map(PhoneNumber::as_str)))
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            if phones.iter().all(|p| in_window.contains(p.as_str())) {
                // Every number is in the window already: the count does not change.
                shared::decide_tier(phones, &in_window, 0, limit)
            } else {
                let window_ms = shared::millis(window);
                let kept: Option<(i64, i64)> = sqlx::query_as(
                    // The kept count, less the numbers that left the window since it was
                    // kept (an index range of `tier_reach_window`).
                    "SELECT c.reached - (SELECT COUNT(*) FROM tier_reach r
                                         WHERE r.portfolio = c.portfolio
                                           AND r.last_reached_at > c.counted_at - c.window_ms
                                           AND r.last_reached_at <= ?2 - c.window_ms),
                            c.anchored_at
                     FROM tier_count c
                     WHERE c.portfolio = ?1 AND c.window_ms = ?3 AND c.counted_at <= ?2
                       AND c.anchored_at > ?4",
                )
                .bind(portfolio)
                .bind(now)
                .bind(window_ms)
                .bind(now.saturating_sub(shared::millis(shared::TIER_RECOUNT_AFTER)))
                .fetch_optional(&mut *tx)
                .await?;
                let (used, anchored_at) = match kept {
                    Some((reached, anchored_at)) => (reached.max(0), anchored_at),
                    None => {
                        let n: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM tier_reach
                             WHERE portfolio = ?1 AND last_reached_at > ?2",
                        )
                        .bind(portfolio)
                        .bind(since)
                        .fetch_one(&mut *tx)
                        .await?;
                        (n, now)
                    }
                };
                let used = u64::try_from(used).unwrap_or(0);
                let (answers, touch) = shared::decide_tier(phones, &in_window, used, limit);
                let reached = used + shared::newly_reached(&touch, &in_window);
                sqlx::query(
                    "INSERT INTO tier_count (portfolio, window_ms, counted_at, anchored_at, reached)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (portfolio) DO UPDATE SET
                        window_ms = excluded.window_ms, counted_at = excluded.counted_at,
                        anchored_at = excluded.anchored_at, reached = excluded.reached",
                )
                .bind(portfolio)
                .bind(window_ms)
                .bind(now)
                .bind(anchored_at)
                .bind(i64::try_from(reached).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
                (answers, touch)
            }
        };
        if !touch.is_empty() {
            sqlx::query(
                "INSERT INTO tier_reach (portfolio, phone, last_reached_at)
                 SELECT ?1, value, ?2 FROM json_each(?3) WHERE true
                 ON CONFLICT (portfolio, phone) DO UPDATE SET last_reached_at = excluded.last_reached_at",
            )
            .bind(portfolio)
            .bind(now)
            .bind(json_keys(touch))
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
        let since = now_ms().saturating_sub(shared::millis(window));
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tier_reach WHERE portfolio = ?1 AND last_reached_at > ?2",
        )
        .bind(portfolio)
        .bind(since)
        .fetch_one(&self.reader)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
