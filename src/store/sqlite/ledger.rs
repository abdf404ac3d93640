//! Claiming keys and recording what became of them on SQLite: each batch is one statement
//! (or one `BEGIN IMMEDIATE` transaction) over a JSON array expanded by `json_each`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::Row;

use super::{SqliteStore, json_keys, now_ms, to_json};
use crate::domain::IdempotencyKey;
use crate::domain::NewRecipientEvent;
use crate::store::db::Conn;
use crate::store::outbox;
use crate::store::shared;
use crate::store::{Claim, ClaimStatus, OutcomeRecord, StoreResult};

impl SqliteStore {
    pub(in crate::store) async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        claims: &[Claim],
    ) -> StoreResult<Vec<ClaimStatus>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let lease_until = now.saturating_add(shared::millis(lease));
        let distinct: HashSet<&str> = claims.iter().map(|c| c.key.as_str()).collect();
        let mut tx = self.write_tx().await?;

        // 1. New keys. The common case: every key is new, and this is the only statement.
        let inserted = match shared::shared_claim_columns(claims) {
            // One job's batch (the engine's): its shared columns bound once.
            Some(cols) => {
                let rows: Vec<[&str; 2]> = claims
                    .iter()
                    .map(|c| [c.key.as_str(), c.recipient.as_str()])
                    .collect();
                let q = sqlx::query(
                    "INSERT INTO ledger (key, campaign, job, sender, recipient, template, language,
                                         category, channel, state, owner, lease_until, created_at,
                                         updated_at)
                     SELECT value->>0, ?5, ?6, ?7, value->>1, ?8, ?9, ?10, ?11, 'pending', ?1, ?2,
                            ?3, ?3
                     FROM json_each(?4) WHERE true
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .bind(to_json(&rows)?);
                cols.iter()
                    .fold(q, |q, col| q.bind(*col))
                    .execute(&mut *tx)
                    .await?
            }
            None => {
                let rows: Vec<[&str; 9]> = claims
                    .iter()
                    .map(|c| {
                        [
                            c.key.as_str(),
                            c.campaign.as_str(),
                            c.job.as_str(),
                            c.sender.as_str(),
                            &c.recipient,
                            &c.template,
                            &c.language,
                            c.category.as_str(),
                            c.channel.as_str(),
                        ]
                    })
                    .collect();
                sqlx::query(
                    "INSERT INTO ledger (key, campaign, job, sender, recipient, template, language,
                                         category, channel, state, owner, lease_until, created_at,
                                         updated_at)
                     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5,
                            value->>6, value->>7, value->>8, 'pending', ?1, ?2, ?3, ?3
                     FROM json_each(?4) WHERE true
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .bind(to_json(&rows)?)
                .execute(&mut *tx)
                .await?
            }
        }
        .rows_affected();
        if inserted == distinct.len() as u64 {
            tx.commit().await?;
            return Ok(vec![ClaimStatus::Mine; claims.len()]);
        }

        // 2. Existing open keys we may take: our own (a re-claim extends the lease), unowned
        //    (released) or with an expired lease. An expired `sending` key was possibly sent
        //    by a dead owner: it becomes `unknown`, never sent again. Rows that already carry
        //    exactly this claim (just inserted) are left alone.
        let keys = json_keys(distinct.iter().copied());
        let in_flight: HashSet<String> = sqlx::query_scalar::<_, Option<String>>(
            "UPDATE ledger SET
                state = CASE WHEN state = 'sending' AND owner IS NOT ?1
                             THEN 'unknown' ELSE state END,
                owner = CASE WHEN state = 'sending' AND owner IS NOT ?1 THEN NULL ELSE ?1 END,
                lease_until = CASE WHEN state = 'sending' AND owner IS NOT ?1
                                   THEN NULL ELSE ?2 END,
                updated_at = ?3
             WHERE key IN (SELECT value FROM json_each(?4))
               AND state IN ('pending', 'sending')
               AND (owner IS ?1 OR owner IS NULL OR lease_until IS NULL OR lease_until <= ?3)
               AND NOT (owner IS ?1 AND lease_until IS ?2)
             RETURNING CASE WHEN state = 'unknown' THEN key END",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .flatten()
        .collect();

        // 3. Every key's standing now: ours (new or taken over), final, or held elsewhere.
        let rows = sqlx::query(
            "SELECT key, state, owner FROM ledger WHERE key IN (SELECT value FROM json_each(?1))",
        )
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut status: HashMap<String, ClaimStatus> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let key: String = r.try_get("key")?;
            let s = if in_flight.contains(&key) {
                ClaimStatus::WasInFlight
            } else {
                shared::claim_status(owner, r.try_get("state")?, r.try_get("owner")?)
            };
            status.insert(key, s);
        }
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
        // `+owner`: SQLite must find rows by key, not walk the owner index (every open key of
        // the job) and filter it against the batch.
        let batch = json_keys(keys.iter().map(IdempotencyKey::as_str));
        let done = sqlx::query(
            "UPDATE ledger SET state = 'sending', attempts = attempts + 1, updated_at = ?3
             WHERE key IN (SELECT value FROM json_each(?1))
               AND +owner = ?2 AND state IN ('pending', 'sending')",
        )
        .bind(&batch)
        .bind(owner)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == keys.len() as u64 {
            // The common case: every key is still ours (keys of a group are distinct).
            return Ok(vec![true; keys.len()]);
        }
        let marked: HashSet<String> = sqlx::query_scalar(
            "SELECT key FROM ledger WHERE key IN (SELECT value FROM json_each(?1))
               AND +owner = ?2 AND state = 'sending'",
        )
        .bind(&batch)
        .bind(owner)
        .fetch_all(&self.writer)
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
        let mut conn = self.writer.acquire().await?;
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
        let mut tx = self.write_tx().await?;
        let written = record_outcomes_on(&mut tx, outcomes, true).await?;
        let mut conn = Conn::SqliteWrite(tx);
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
            "UPDATE ledger SET state = 'pending', owner = NULL, lease_until = NULL, updated_at = ?3
             WHERE key IN (SELECT value FROM json_each(?1))
               AND +owner = ?2 AND state IN ('pending', 'sending')",
        )
        .bind(json_keys(keys.iter().map(IdempotencyKey::as_str)))
        .bind(owner)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn renew_lease(
        &self,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<()> {
        let now = now_ms();
        let lease_until = now.saturating_add(shared::millis(lease));
        sqlx::query(
            "UPDATE ledger SET lease_until = ?2
             WHERE owner = ?1 AND state IN ('pending', 'sending') AND lease_until < ?3",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now.saturating_add(shared::millis(shared::renew_within(lease))))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn end_abandoned_leases(&self) -> StoreResult<u64> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE ledger SET lease_until = ?1
             WHERE state IN ('pending', 'sending') AND lease_until > ?1",
        )
        .bind(now)
        .execute(&self.writer)
        .await?;
        // Timers a dead run had claimed (a fallback it was firing) are due to the next one.
        let timers = sqlx::query(
            "UPDATE timers SET owner = NULL, lease_until = NULL
             WHERE fired_at IS NULL AND owner IS NOT NULL",
        )
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() + timers.rows_affected())
    }
}

/// Writes outcomes to the keys still open (the first recorded one wins). With `returning`,
/// the keys it wrote.
async fn record_outcomes_on(
    conn: &mut sqlx::SqliteConnection,
    outcomes: &[OutcomeRecord],
    returning: bool,
) -> StoreResult<HashSet<String>> {
    let batch: Vec<shared::OutcomeRow<u32>> = shared::first_outcome_per_key(outcomes)
        .into_iter()
        .map(|o| {
            let (state, reason, wamid) = shared::outcome_columns(&o.outcome);
            (o.key.as_str(), state, reason, wamid, o.attempts)
        })
        .collect();
    let sql = format!(
        "UPDATE ledger SET
            state = v.state, reason = v.reason, wamid = COALESCE(v.wamid, ledger.wamid),
            attempts = MAX(ledger.attempts, v.attempts),
            owner = NULL, lease_until = NULL, updated_at = ?2
         FROM (SELECT value->>0 AS key, value->>1 AS state, value->>2 AS reason,
                      value->>3 AS wamid, value->>4 AS attempts
               FROM json_each(?1)) AS v
         WHERE ledger.key = v.key AND ledger.state IN ('pending', 'sending'){}",
        if returning { " RETURNING key" } else { "" }
    );
    let q = sqlx::query(&sql).bind(to_json(&batch)?).bind(now_ms());
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
