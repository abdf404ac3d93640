//! Claiming keys and recording what became of them on Postgres: every batch is one
//! statement over `UNNEST`ed arrays, locking ledger rows in key order so concurrent batches
//! never deadlock; expired leases are taken over only on rows a claimer could lock.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::Row;

use super::{PostgresStore, sorted_keys};
use crate::domain::IdempotencyKey;
use crate::domain::NewRecipientEvent;
use crate::store::db::Conn;
use crate::store::outbox;
use crate::store::shared;
use crate::store::{Claim, ClaimStatus, OutcomeRecord, StoreResult};

/// Distinct keys of `claims` that have no status yet, sorted.
fn unresolved<'a>(claims: &'a [Claim], status: &HashMap<String, ClaimStatus>) -> Vec<&'a str> {
    sorted_keys(
        claims
            .iter()
            .map(|c| c.key.as_str())
            .filter(|k| !status.contains_key(*k)),
    )
}

impl PostgresStore {
    pub(in crate::store) async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        claims: &[Claim],
    ) -> StoreResult<Vec<ClaimStatus>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let lease_secs = lease.as_secs_f64();
        let mut status: HashMap<String, ClaimStatus> = HashMap::with_capacity(claims.len());
        let mut tx = self.tx().await?;

        // 1. New keys, inserted in key order. Insert comes first: a concurrent claimer of the
        //    same keys waits here for our commit and then finds them held; since this is the
        //    only statement of a claim that can wait, and all claimers wait in key order, no
        //    two claims deadlock.
        let mut order: Vec<&Claim> = claims.iter().collect();
        order.sort_unstable_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        order.dedup_by(|a, b| a.key == b.key);
        let keys: Vec<&str> = order.iter().map(|c| c.key.as_str()).collect();
        let recipients: Vec<&str> = order.iter().map(|c| c.recipient.as_str()).collect();
        let inserted: Vec<String> = match shared::shared_claim_columns(claims) {
            // One job's batch (the engine's): its shared columns bound once.
            Some(cols) => {
                let q = sqlx::query_scalar(
                    "INSERT INTO ledger (key, campaign, job, sender, recipient, template, language,
                                         category, channel, state, owner, lease_until)
                     SELECT u.key, $5, $6, $7, u.recipient, $8, $9, $10, $11, 'pending', $1,
                            now() + $2 * interval '1 second'
                     FROM UNNEST($3::text[], $4::text[]) AS u(key, recipient)
                     ON CONFLICT (key) DO NOTHING
                     RETURNING key",
                )
                .bind(owner)
                .bind(lease_secs)
                .bind(&keys)
                .bind(&recipients);
                cols.iter()
                    .fold(q, |q, col| q.bind(*col))
                    .fetch_all(&mut *tx)
                    .await?
            }
            // Claims of several jobs at once (only tests make them): one statement still, since
            // split by job the transaction would no longer insert in key order.
            None => {
                let column = |f: fn(&Claim) -> &str| order.iter().map(|c| f(c)).collect::<Vec<_>>();
                sqlx::query_scalar(
                    "INSERT INTO ledger (key, campaign, job, sender, recipient, template, language,
                                         category, channel, state, owner, lease_until)
                     SELECT u.*, 'pending', $1, now() + $2 * interval '1 second'
                     FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                 $8::text[], $9::text[], $10::text[], $11::text[]) AS u
                     ON CONFLICT (key) DO NOTHING
                     RETURNING key",
                )
                .bind(owner)
                .bind(lease_secs)
                .bind(&keys)
                .bind(column(|c| c.campaign.as_str()))
                .bind(column(|c| c.job.as_str()))
                .bind(column(|c| c.sender.as_str()))
                .bind(&recipients)
                .bind(column(|c| c.template.as_str()))
                .bind(column(|c| c.language.as_str()))
                .bind(column(|c| c.category.as_str()))
                .bind(column(|c| c.channel.as_str()))
                .fetch_all(&mut *tx)
                .await?
            }
        };
        for k in inserted {
            status.insert(k, ClaimStatus::Mine);
        }

        // 2. Existing open keys we may take: our own (a re-claim extends the lease), unowned
        //    (released) or with an expired lease. An expired `sending` key was possibly sent by
        //    a dead owner: it becomes `unknown`, never sent again. Rows another transaction is
        //    working on are skipped, not waited for: they are held elsewhere right now.
        let rest = unresolved(claims, &status);
        if !rest.is_empty() {
            let taken = sqlx::query(
                "WITH cand AS (
                    SELECT key FROM ledger
                    WHERE key = ANY($3) AND state IN ('pending', 'sending')
                      AND (owner = $1 OR owner IS NULL OR lease_until IS NULL
                           OR lease_until <= now())
                    ORDER BY key
                    FOR UPDATE SKIP LOCKED
                 )
                 UPDATE ledger l SET
                    state = CASE WHEN l.state = 'sending' AND l.owner IS DISTINCT FROM $1
                                 THEN 'unknown' ELSE l.state END,
                    owner = CASE WHEN l.state = 'sending' AND l.owner IS DISTINCT FROM $1
                                 THEN NULL ELSE $1 END,
                    lease_until = CASE WHEN l.state = 'sending' AND l.owner IS DISTINCT FROM $1
                                       THEN NULL ELSE now() + $2 * interval '1 second' END,
                    updated_at = now()
                 FROM cand WHERE l.key = cand.key
                 RETURNING l.key, l.state",
            )
            .bind(owner)
            .bind(lease_secs)
            .bind(&rest)
            .fetch_all(&mut *tx)
            .await?;
            for r in &taken {
                let s = if r.try_get::<&str, _>("state")? == "unknown" {
                    ClaimStatus::WasInFlight
                } else {
                    ClaimStatus::Mine
                };
                status.insert(r.try_get("key")?, s);
            }
        }

        // 3. The rest stay as they are: final (done) or held by another owner.
        let rest = unresolved(claims, &status);
        if !rest.is_empty() {
            let rows = sqlx::query("SELECT key, state, owner FROM ledger WHERE key = ANY($1)")
                .bind(&rest)
                .fetch_all(&mut *tx)
                .await?;
            for r in &rows {
                let s = shared::claim_status(owner, r.try_get("state")?, r.try_get("owner")?);
                status.insert(r.try_get("key")?, s);
            }
        }
        tx.commit().await?;

        shared::claim_statuses_in_order(claims, &status)
    }

    pub(in crate::store) async fn mark_sending(
        &self,
        owner: &str,
        keys: &[IdempotencyKey],
    ) -> StoreResult<Vec<bool>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // Rows are found by key and locked in key order; owner and state are checked on the
        // locked rows, not in the scan, because the planner would otherwise happily walk the
        // owner index (up to a whole job's keys) and filter it against the batch.
        let sorted = sorted_keys(keys.iter().map(IdempotencyKey::as_str));
        let done = sqlx::query(
            "WITH locked AS MATERIALIZED (
                SELECT key, owner, state FROM ledger WHERE key = ANY($1)
                ORDER BY key FOR UPDATE
             )
             UPDATE ledger l SET state = 'sending', attempts = l.attempts + 1, updated_at = now()
             FROM locked
             WHERE l.key = locked.key AND locked.owner = $2
               AND locked.state IN ('pending', 'sending')",
        )
        .bind(&sorted)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == keys.len() as u64 {
            // The common case: every key is still ours (keys of a group are distinct).
            return Ok(vec![true; keys.len()]);
        }
        let marked: HashSet<String> = sqlx::query_scalar(
            "SELECT key FROM ledger WHERE key = ANY($1) AND owner = $2 AND state = 'sending'",
        )
        .bind(&sorted)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        Ok(shared::in_order(keys, &marked))
    }

    pub(in crate::store) async fn record_outcomes(
        &self,
        outcomes: &[OutcomeRecord],
    ) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        record_outcomes_on(&mut conn, outcomes, false).await?;
        Ok(())
    }

    /// [`Self::record_outcomes`] and, in the same transaction, the outbox rows of the keys
    /// whose outcome this call wrote (a key already final writes none).
    pub(in crate::store) async fn record_outcomes_with_events(
        &self,
        outcomes: &[OutcomeRecord],
        events: &[NewRecipientEvent],
    ) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut tx = self.tx().await?;
        let written = record_outcomes_on(&mut tx, outcomes, true).await?;
        let mut conn = Conn::Postgres(tx);
        outbox::insert(
            &mut conn,
            events.iter().filter(|e| written.contains(&e.message_key)),
        )
        .await?;
        conn.commit().await
    }

    pub(in crate::store) async fn release(
        &self,
        owner: &str,
        keys: &[IdempotencyKey],
    ) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "WITH locked AS MATERIALIZED (
                SELECT key, owner, state FROM ledger WHERE key = ANY($1)
                ORDER BY key FOR UPDATE
             )
             UPDATE ledger l SET
                state = 'pending', owner = NULL, lease_until = NULL, updated_at = now()
             FROM locked
             WHERE l.key = locked.key AND locked.owner = $2
               AND locked.state IN ('pending', 'sending')",
        )
        .bind(sorted_keys(keys.iter().map(IdempotencyKey::as_str)))
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn renew_lease(
        &self,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<()> {
        sqlx::query(
            // Rows locked in key order, like every other write of a run's keys (see the module
            // doc): locked in scan order, a renewal deadlocked with the run's own record or
            // mark statements (found by the latency bench: one second lost per deadlock).
            "WITH locked AS MATERIALIZED (
                SELECT key FROM ledger
                WHERE owner = $1 AND state IN ('pending', 'sending')
                  AND lease_until < now() + $3 * interval '1 second'
                ORDER BY key FOR UPDATE
             )
             UPDATE ledger l SET lease_until = now() + $2 * interval '1 second'
             FROM locked WHERE l.key = locked.key",
        )
        .bind(owner)
        .bind(lease.as_secs_f64())
        .bind(shared::renew_within(lease).as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Writes outcomes to the keys still open (the first recorded one wins), rows locked in key
/// order first (see the module doc). With `returning`, the keys it wrote.
async fn record_outcomes_on(
    conn: &mut sqlx::PgConnection,
    outcomes: &[OutcomeRecord],
    returning: bool,
) -> StoreResult<HashSet<String>> {
    let mut rows: Vec<shared::OutcomeRow<i32>> = shared::first_outcome_per_key(outcomes)
        .into_iter()
        .map(|o| {
            let (state, reason, wamid) = shared::outcome_columns(&o.outcome);
            let attempts = i32::try_from(o.attempts).unwrap_or(i32::MAX);
            (o.key.as_str(), state, reason, wamid, attempts)
        })
        .collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let sql = format!(
        "WITH v AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[])
                AS v(key, state, reason, wamid, attempts)
         ),
         locked AS (
            SELECT l.key FROM ledger l
            WHERE l.key = ANY($1) AND l.state IN ('pending', 'sending')
            ORDER BY l.key FOR UPDATE
         )
         UPDATE ledger l SET
            state = v.state, reason = v.reason, wamid = COALESCE(v.wamid, l.wamid),
            attempts = GREATEST(l.attempts, v.attempts),
            owner = NULL, lease_until = NULL, updated_at = now()
         FROM v JOIN locked ON locked.key = v.key
         WHERE l.key = v.key AND l.state IN ('pending', 'sending'){}",
        if returning { " RETURNING l.key" } else { "" }
    );
    let q = sqlx::query(&sql)
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.3.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>());
    if !returning {
        q.execute(&mut *conn).await?;
        return Ok(HashSet::new());
    }
    let written = q.fetch_all(&mut *conn).await?;
    Ok(written
        .iter()
        .map(|r| r.try_get::<String, _>("key"))
        .collect::<Result<_, _>>()?)
}
