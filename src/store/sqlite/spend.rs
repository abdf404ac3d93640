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
            // Counting the window is the costly part: skip it when every number is free.
            let used = if phones.iter().all(|p| in_window.contains(p.as_str())) {
                0
            } else {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM tier_reach WHERE portfolio = ?1 AND last_reached_at > ?2",
                )
                .bind(portfolio)
                .bind(since)
                .fetch_one(&mut *tx)
                .await?;
                u64::try_from(n).unwrap_or(0)
            };
            shared::decide_tier(phones, &in_window, used, limit)
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
