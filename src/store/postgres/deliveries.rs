//! Status webhooks and `unknown` keys on Postgres: merged deliveries applied in one
//! statement with rows locked in key order, and the review that reopens keys Meta never accepted.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, Row};

use super::PostgresStore;
use crate::domain::EventOptions;
use crate::domain::{CampaignId, JobId};
use crate::store::db::Conn;
use crate::store::outbox;
use crate::store::shared::{self, DELIVERY_RANK_SQL};
use crate::store::{DeliveryUpdate, StoreResult, UnknownReview};

impl PostgresStore {
    pub(in crate::store) async fn apply_deliveries(
        &self,
        updates: &[DeliveryUpdate],
    ) -> StoreResult<u64> {
        let mut conn = self.pool.acquire().await?;
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
        let mut tx = self.tx().await?;
        // The rows as they were, locked in key order like the update locks them.
        let keys: Vec<&str> = updates
            .iter()
            .filter_map(|u| u.key.as_ref())
            .map(|k| k.as_str())
            .collect();
        let wamids: Vec<&str> = updates.iter().map(|u| u.wamid.as_str()).collect();
        let before = sqlx::query(
            "SELECT key, state, delivery FROM ledger WHERE key = ANY($1) OR wamid = ANY($2)
             ORDER BY key FOR UPDATE",
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
        let mut conn = Conn::Postgres(tx);
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
        let mut review = UnknownReview::default();
        if reopen {
            review.reopened = sqlx::query(
                "UPDATE ledger l SET state = 'pending', owner = NULL, lease_until = NULL,
                    reason = NULL, resent_unknown = true, updated_at = now()
                 FROM senders s
                 WHERE l.campaign = $1 AND l.job = $2 AND l.state = 'unknown'
                   AND NOT l.resent_unknown
                   AND l.updated_at <= now() - $3 * interval '1 second'
                   AND l.updated_at > now() - $4 * interval '1 second'
                   AND s.id = l.sender
                   AND s.last_status_at > l.updated_at + $3 * interval '1 second'",
            )
            .bind(campaign.as_str())
            .bind(job.as_str())
            .bind(after.as_secs_f64())
            .bind(give_up.as_secs_f64())
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        let row = sqlx::query(
            "SELECT count(*) AS n, min(updated_at) AS oldest FROM ledger
             WHERE campaign = $1 AND job = $2 AND state = 'unknown' AND NOT resent_unknown
               AND updated_at > now() - $3 * interval '1 second'",
        )
        .bind(campaign.as_str())
        .bind(job.as_str())
        .bind(give_up.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        review.waiting = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
        review.oldest_due = row
            .try_get::<Option<DateTime<Utc>>, _>("oldest")?
            .map(|t| t + chrono::Duration::from_std(after).unwrap_or_default());
        Ok(review)
    }
}

/// Applies status webhooks on `conn`; returns how many rows changed and, when `full`, each
/// with its campaign, channel, number and new delivery.
async fn apply_deliveries_on(
    conn: &mut sqlx::PgConnection,
    updates: &[DeliveryUpdate],
    full: bool,
) -> StoreResult<(u64, Vec<shared::ChangedRow>)> {
    let merged = shared::merge_deliveries(updates);
    if merged.is_empty() {
        return Ok((0, Vec::new()));
    }
    // The target row: by our key when Meta echoed it and we know it, else by wamid. A key
    // still `sending` (webhook faster than our own bookkeeping) or `unknown` (timed out)
    // was accepted after all: it becomes `sent` with this wamid. A status only applies if
    // it ranks above the stored one, so replays and reordering change nothing.
    let done = sqlx::query(&format!(
        "WITH v AS (
            SELECT u.*,
                   COALESCE((SELECT l.key FROM ledger l WHERE l.key = u.key),
                            (SELECT l.key FROM ledger l WHERE l.wamid = u.wamid LIMIT 1))
                       AS target
            FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[],
                        $6::text[]) AS u(wamid, key, status, rank, billed, error)
         ),
         locked AS (
            SELECT l.key FROM ledger l JOIN v ON l.key = v.target
            ORDER BY l.key FOR UPDATE OF l
         )
         UPDATE ledger l SET
            state = CASE WHEN l.state IN ('sending', 'unknown') THEN 'sent' ELSE l.state END,
            wamid = COALESCE(l.wamid, v.wamid),
            owner = CASE WHEN l.state IN ('sending', 'unknown') THEN NULL ELSE l.owner END,
            lease_until = CASE WHEN l.state IN ('sending', 'unknown')
                               THEN NULL ELSE l.lease_until END,
            delivery = CASE WHEN v.rank > {DELIVERY_RANK_SQL} THEN v.status
                            ELSE l.delivery END,
            delivery_error = CASE WHEN v.rank > {DELIVERY_RANK_SQL} THEN v.error
                                  ELSE l.delivery_error END,
            billed_category = COALESCE(l.billed_category, v.billed),
            updated_at = now()
         FROM v JOIN locked ON locked.key = v.target
         WHERE l.key = v.target
           AND l.state IN ('sending', 'unknown', 'sent')
           AND (l.state IN ('sending', 'unknown')
                OR v.rank > {DELIVERY_RANK_SQL}
                OR (l.billed_category IS NULL AND v.billed IS NOT NULL))
         RETURNING l.sender{}",
        if full {
            ", l.key, l.delivery, l.delivery_error, l.campaign, l.channel, l.recipient"
        } else {
            ""
        }
    ))
    .bind(merged.iter().map(|m| m.wamid.as_str()).collect::<Vec<_>>())
    .bind(merged.iter().map(|m| m.key.as_deref()).collect::<Vec<_>>())
    .bind(merged.iter().map(|m| m.status.as_str()).collect::<Vec<_>>())
    .bind(merged.iter().map(|m| m.rank).collect::<Vec<_>>())
    .bind(
        merged
            .iter()
            .map(|m| m.billed_category.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        merged
            .iter()
            .map(|m| m.error.as_deref())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let senders: HashSet<String> = done
        .iter()
        .map(|r| r.try_get::<String, _>("sender"))
        .collect::<Result<_, _>>()?;
    if let Some(newest) = updates.iter().map(|u| u.at).max()
        && !senders.is_empty()
    {
        sqlx::query(
            "UPDATE senders SET last_status_at = GREATEST(last_status_at, $2)
             WHERE id = ANY($1)",
        )
        .bind(senders.into_iter().collect::<Vec<_>>())
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
