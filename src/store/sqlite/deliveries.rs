//! Status webhooks and `unknown` keys on SQLite: merged deliveries applied in one write
//! transaction, and the review that reopens keys Meta never accepted.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, Row};

use super::{SqliteStore, json_keys, ms_to_time, now_ms, to_json};
use crate::domain::EventOptions;
use crate::domain::{CampaignId, JobId};
use crate::store::db::Conn;
use crate::store::outbox;
use crate::store::shared::{self, DELIVERY_RANK_SQL};
use crate::store::{DeliveryUpdate, StoreResult, UnknownReview};

impl SqliteStore {
    pub(in crate::store) async fn apply_deliveries(
        &self,
        updates: &[DeliveryUpdate],
    ) -> StoreResult<u64> {
        let mut conn = self.writer.acquire().await?;
        Ok(apply_deliveries_on(&mut conn, updates, false).await?.0)
    }

    /// [`Self::apply_deliveries`] and, in the same transaction, the outbox rows of what it
    /// changed (`policy::recipient_events::on_delivery`), dated `at`.
    pub(in crate::store) async fn apply_deliveries_with_events(
        &self,
        updates: &[DeliveryUpdate],
        options: EventOptions,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        if updates.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        let keys = json_keys(
            updates
                .iter()
                .filter_map(|u| u.key.as_ref())
                .map(|k| k.as_str()),
        );
        let wamids = json_keys(updates.iter().map(|u| u.wamid.as_str()));
        let before = sqlx::query(
            "SELECT key, state, delivery FROM ledger
             WHERE key IN (SELECT value FROM json_each(?1))
                OR wamid IN (SELECT value FROM json_each(?2))",
        )
        .bind(keys)
        .bind(wamids)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("key")?,
                (r.try_get("state")?, r.try_get("delivery")?),
            ))
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let (n, changed) = apply_deliveries_on(&mut tx, updates, true).await?;
        let events = shared::delivery_events(&before, &changed, options, at);
        let mut conn = Conn::SqliteWrite(tx);
        outbox::insert(&mut conn, &events).await?;
        conn.commit().await?;
        Ok(n)
    }

    pub(in crate::store) async fn review_unknowns(
        &self,
        campaign: &CampaignId,
        job: &JobId,
        after: Duration,
        give_up: Duration,
        reopen: bool,
    ) -> StoreResult<UnknownReview> {
        let now = now_ms();
        let after_ms = shared::millis(after);
        let since = now.saturating_sub(shared::millis(give_up));
        let mut review = UnknownReview::default();
        if reopen {
            review.reopened = sqlx::query(
                "UPDATE ledger SET state = 'pending', owner = NULL, lease_until = NULL,
                    reason = NULL, resent_unknown = 1, updated_at = ?5
                 WHERE campaign = ?1 AND job = ?2 AND state = 'unknown' AND resent_unknown = 0
                   AND updated_at <= ?5 - ?3 AND updated_at > ?4
                   AND (SELECT s.last_status_at FROM senders s WHERE s.id = ledger.sender)
                       > updated_at + ?3",
            )
            .bind(campaign.as_str())
            .bind(job.as_str())
            .bind(after_ms)
            .bind(since)
            .bind(now)
            .execute(&self.writer)
            .await?
            .rows_affected();
        }
        let row = sqlx::query(
            "SELECT count(*) AS n, min(updated_at) AS oldest FROM ledger
             WHERE campaign = ?1 AND job = ?2 AND state = 'unknown' AND resent_unknown = 0
               AND updated_at > ?3",
        )
        .bind(campaign.as_str())
        .bind(job.as_str())
        .bind(since)
        .fetch_one(&self.reader)
        .await?;
        review.waiting = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
        review.oldest_due = row
            .try_get::<Option<i64>, _>("oldest")?
            .map(|ms| ms_to_time(ms.saturating_add(after_ms)))
            .transpose()?;
        Ok(review)
    }
}

/// Applies status webhooks on `conn`; returns how many rows changed and, when `full`, each
/// with its campaign, channel, number and new delivery.
async fn apply_deliveries_on(
    conn: &mut sqlx::SqliteConnection,
    updates: &[DeliveryUpdate],
    full: bool,
) -> StoreResult<(u64, Vec<shared::ChangedRow>)> {
    let merged = shared::merge_deliveries(updates);
    if merged.is_empty() {
        return Ok((0, Vec::new()));
    }
    let batch: Vec<_> = merged
        .iter()
        .map(|m| {
            (
                &m.wamid,
                &m.key,
                &m.status,
                m.rank,
                &m.billed_category,
                &m.error,
            )
        })
        .collect();
    // The target row: by our key when Meta echoed it and we know it, else by wamid. A key
    // still `sending` (webhook faster than our own bookkeeping) or `unknown` (timed out)
    // was accepted after all: it becomes `sent` with this wamid. A status only applies if
    // it ranks above the stored one, so replays and reordering change nothing.
    let done = sqlx::query(&format!(
        "WITH v AS (
            SELECT value->>0 AS wamid, value->>2 AS status, value->>3 AS rank,
                   value->>4 AS billed, value->>5 AS error,
                   COALESCE((SELECT l.key FROM ledger l WHERE l.key = value->>1),
                            (SELECT l.key FROM ledger l WHERE l.wamid = value->>0 LIMIT 1))
                       AS target
            FROM json_each(?1)
         )
         UPDATE ledger SET
            state = CASE WHEN state IN ('sending', 'unknown') THEN 'sent' ELSE state END,
            wamid = COALESCE(ledger.wamid, v.wamid),
            owner = CASE WHEN state IN ('sending', 'unknown') THEN NULL ELSE owner END,
            lease_until = CASE WHEN state IN ('sending', 'unknown')
                               THEN NULL ELSE lease_until END,
            delivery = CASE WHEN v.rank > {DELIVERY_RANK_SQL} THEN v.status ELSE delivery END,
            delivery_error = CASE WHEN v.rank > {DELIVERY_RANK_SQL} THEN v.error
                                  ELSE delivery_error END,
            billed_category = COALESCE(billed_category, v.billed),
            updated_at = ?2
         FROM v
         WHERE ledger.key = v.target
           AND ledger.state IN ('sending', 'unknown', 'sent')
           AND (ledger.state IN ('sending', 'unknown')
                OR v.rank > {DELIVERY_RANK_SQL}
                OR (ledger.billed_category IS NULL AND v.billed IS NOT NULL))
         RETURNING sender{}",
        if full {
            ", key, delivery, delivery_error, campaign, channel, recipient"
        } else {
            ""
        }
    ))
    .bind(to_json(&batch)?)
    .bind(now_ms())
    .fetch_all(&mut *conn)
    .await?;
    let senders: HashSet<String> = done
        .iter()
        .map(|r| r.try_get::<String, _>("sender"))
        .collect::<Result<_, _>>()?;
    if let Some(newest) = updates.iter().map(|u| u.at.timestamp_millis()).max()
        && !senders.is_empty()
    {
        sqlx::query(
            "UPDATE senders SET last_status_at = MAX(COALESCE(last_status_at, ?2), ?2)
             WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_keys(senders.iter().map(String::as_str)))
        .bind(newest)
        .execute(&mut *conn)
        .await?;
    }
    if !full {
        return Ok((done.len() as u64, Vec::new()));
    }
    let rows = done
        .iter()
        .map(shared::ChangedRow::from_row)
        .collect::<Result<_, _>>()?;
    Ok((done.len() as u64, rows))
}
