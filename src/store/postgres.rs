//! The shared store for many workers: Postgres, with a bounded pool and a batched hot path.
//!
//! Every recipient batch is one statement over `UNNEST`ed arrays. Safety across processes comes
//! from the database, not from the callers: claims insert with `ON CONFLICT DO NOTHING` and take
//! over expired leases only on rows they could lock (`FOR UPDATE SKIP LOCKED`); batch updates
//! lock their rows in key order so two workers (or a worker and the webhook server) never
//! deadlock; tier reservations serialise per portfolio on a transaction advisory lock. Leases
//! and the tier window use the database clock, so workers with skewed clocks agree.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row, Transaction};

use super::db;
use super::shared::{self, DELIVERY_RANK_SQL};
use super::timers;
use super::{
    BudgetCharge, Claim, ClaimStatus, Consent, ConsentState, DeliveryUpdate, DueTimer,
    OutcomeRecord, StoreError, StoreResult, UnknownReview,
};
use crate::domain::{CampaignId, Category, IdempotencyKey, JobId, PhoneNumber, SenderId};

/// Connections per process. Bounded so that many workers stay under the server's
/// `max_connections` (100 by default): the hot path needs one or two at a time per job.
const POOL_SIZE: u32 = 8;
/// How long a caller waits for a free connection before the batch fails (and is retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// First half of the two-part advisory lock key of tier reservations: keeps herald's locks
/// apart from anyone else's on the same database ("hera" in ASCII).
const TIER_LOCK_CLASS: i32 = 0x6865_7261;

/// The Postgres store. Cheap to clone (the pool is a handle).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:pass@host/db`). Does not migrate; call
    /// [`Store::migrate`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let connect_err = |source| StoreError::Connect {
            url: shared::redact_url(url),
            source,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(connect_err)?
            .application_name("herald");
        // One direct connection first: it fails fast with the real cause (refused, unknown
        // host, bad password), where a pool would only report its acquire timeout.
        PgConnection::connect_with(&options)
            .await
            .map_err(connect_err)?
            .close()
            .await
            .map_err(connect_err)?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The underlying pool, for the tests' own bookkeeping and for other Postgres-backed
    /// adapters that want to share connections.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn tx(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

/// Keys as a sorted, distinct array: every statement that locks ledger rows takes them in
/// this order, which is what rules out deadlocks between concurrent batches.
fn sorted_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = keys.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v
}

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
    pub(super) async fn lease_slots(
        &self,
        sender: &SenderId,
        interval: Duration,
        n: u32,
    ) -> StoreResult<Option<super::SlotLease>> {
        super::pg_slots::lease(&self.pool, sender, interval, n)
            .await
            .map(Some)
    }

    pub(super) async fn migrate(&self) -> StoreResult<()> {
        // sqlx serialises concurrent migrators (several workers starting at once) on its own
        // advisory lock.
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    // --- senders -------------------------------------------------------------------------

    // --- templates -----------------------------------------------------------------------

    // --- consent -------------------------------------------------------------------------

    pub(super) async fn grant_consents(&self, consents: &[Consent]) -> StoreResult<u64> {
        if consents.is_empty() {
            return Ok(0);
        }
        // One row per (phone, category) in the statement: ON CONFLICT may not touch a row
        // twice. The latest grant of the batch is the one that counts.
        let mut latest: HashMap<(&str, Category), &Consent> = HashMap::new();
        for c in consents {
            latest
                .entry((c.phone.as_str(), c.category))
                .and_modify(|e| {
                    if c.granted_at >= e.granted_at {
                        *e = c;
                    }
                })
                .or_insert(c);
        }
        let rows: Vec<&Consent> = latest.into_values().collect();
        let done = sqlx::query(
            "INSERT INTO consents (phone, category, granted_at, source, proof)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])
             ON CONFLICT (phone, category) DO UPDATE SET
                granted_at = excluded.granted_at, source = excluded.source, proof = excluded.proof
             WHERE excluded.granted_at >= consents.granted_at",
        )
        .bind(rows.iter().map(|c| c.phone.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.category.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.granted_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.source.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.proof.as_str()).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn consent_states(
        &self,
        category: Category,
        phones: &[PhoneNumber],
    ) -> StoreResult<Vec<ConsentState>> {
        if phones.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT
                EXISTS (SELECT 1 FROM suppressions s WHERE s.phone_hash = u.hash) AS suppressed,
                (SELECT c.granted_at FROM consents c
                  WHERE c.phone = u.phone AND c.category = $1) AS granted_at,
                (SELECT max(r.revoked_at) FROM revocations r
                  WHERE r.phone = u.phone AND (r.category = $1 OR r.category IS NULL))
                    AS revoked_at
             FROM UNNEST($2::text[], $3::text[]) WITH ORDINALITY AS u(phone, hash, i)
             ORDER BY u.i",
        )
        .bind(category.as_str())
        .bind(phones.iter().map(PhoneNumber::as_str).collect::<Vec<_>>())
        .bind(phones.iter().map(shared::phone_hash).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(shared::consent_state(
                    r.try_get::<bool, _>("suppressed")?,
                    r.try_get::<Option<DateTime<Utc>>, _>("granted_at")?,
                    r.try_get::<Option<DateTime<Utc>>, _>("revoked_at")?,
                ))
            })
            .collect()
    }

    // --- campaigns -----------------------------------------------------------------------

    pub(super) async fn charge_budget(
        &self,
        id: &CampaignId,
        costs: &[u64],
    ) -> StoreResult<BudgetCharge> {
        let total: u64 = costs.iter().sum();
        let total_i = i64::try_from(total).unwrap_or(i64::MAX);
        // The common case, no budget: one statement.
        let unlimited = sqlx::query(
            "UPDATE campaigns SET committed_micros = committed_micros + $2
             WHERE id = $1 AND budget_micros IS NULL",
        )
        .bind(id.as_str())
        .bind(total_i)
        .execute(&self.pool)
        .await?;
        if unlimited.rows_affected() == 1 {
            return Ok(BudgetCharge {
                admitted: vec![true; costs.len()],
                left: None,
            });
        }
        // A budget: decide under the row lock, so workers charging at once never overspend.
        let mut tx = self.tx().await?;
        let row: Option<(Option<i64>, Option<String>, i64)> = sqlx::query_as(
            "SELECT budget_micros, budget_currency, committed_micros FROM campaigns
             WHERE id = $1 FOR UPDATE",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let (charge, added) = shared::decide_budget(row, costs);
        if added > 0 {
            sqlx::query(
                "UPDATE campaigns SET committed_micros = committed_micros + $2 WHERE id = $1",
            )
            .bind(id.as_str())
            .bind(i64::try_from(added).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(charge)
    }

    // --- ledger --------------------------------------------------------------------------

    pub(super) async fn claim(
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
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO ledger (key, campaign, job, sender, recipient, template, language,
                                 category, state, owner, lease_until)
             SELECT u.*, 'pending', $1, now() + $2 * interval '1 second'
             FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::text[]) AS u
             ON CONFLICT (key) DO NOTHING
             RETURNING key",
        )
        .bind(owner)
        .bind(lease_secs)
        .bind(order.iter().map(|c| c.key.as_str()).collect::<Vec<_>>())
        .bind(
            order
                .iter()
                .map(|c| c.campaign.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(order.iter().map(|c| c.job.as_str()).collect::<Vec<_>>())
        .bind(order.iter().map(|c| c.sender.as_str()).collect::<Vec<_>>())
        .bind(
            order
                .iter()
                .map(|c| c.recipient.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            order
                .iter()
                .map(|c| c.template.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            order
                .iter()
                .map(|c| c.language.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            order
                .iter()
                .map(|c| c.category.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *tx)
        .await?;
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

        claims
            .iter()
            .map(|c| {
                status.get(c.key.as_str()).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!("claimed key '{}' is not in the ledger", c.key))
                })
            })
            .collect()
    }

    pub(super) async fn mark_sending(
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

    pub(super) async fn record_outcomes(&self, outcomes: &[OutcomeRecord]) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<shared::OutcomeRow<i32>> = shared::first_outcome_per_key(outcomes)
            .into_iter()
            .map(|o| {
                let (state, reason, wamid) = shared::outcome_columns(&o.outcome);
                let attempts = i32::try_from(o.attempts).unwrap_or(i32::MAX);
                (o.key.as_str(), state, reason, wamid, attempts)
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        // Only open keys take an outcome: the first recorded one wins. Rows are locked in key
        // order first (see the module doc).
        sqlx::query(
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
             WHERE l.key = v.key AND l.state IN ('pending', 'sending')",
        )
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.3.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn release(&self, owner: &str, keys: &[IdempotencyKey]) -> StoreResult<()> {
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

    pub(super) async fn renew_lease(&self, owner: &str, lease: Duration) -> StoreResult<()> {
        sqlx::query(
            "UPDATE ledger SET lease_until = now() + $2 * interval '1 second'
             WHERE owner = $1 AND state IN ('pending', 'sending')",
        )
        .bind(owner)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn apply_deliveries(&self, updates: &[DeliveryUpdate]) -> StoreResult<u64> {
        let merged = shared::merge_deliveries(updates);
        if merged.is_empty() {
            return Ok(0);
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
             RETURNING l.sender"
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
        .fetch_all(&self.pool)
        .await?;
        let changed = done.len() as u64;
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
            .execute(&self.pool)
            .await?;
        }
        Ok(changed)
    }

    pub(super) async fn review_unknowns(
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

    // --- messaging tier ------------------------------------------------------------------

    pub(super) async fn reserve_tier(
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
            // Counting the window is the costly part: skip it when every number is free.
            let used = if phones.iter().all(|p| in_window.contains(p.as_str())) {
                0
            } else {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM tier_reach
                     WHERE portfolio = $1 AND last_reached_at > now() - $2 * interval '1 second'",
                )
                .bind(portfolio)
                .bind(window_secs)
                .fetch_one(&mut *tx)
                .await?;
                u64::try_from(n).unwrap_or(0)
            };
            shared::decide_tier(phones, &in_window, used, limit)
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

    pub(super) async fn tier_usage(&self, portfolio: &str, window: Duration) -> StoreResult<u64> {
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

    // --- personal data (GDPR) ------------------------------------------------------------

    // --- timers ------------------------------------------------------------------------

    pub(super) async fn claim_due_timers(
        &self,
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
        .fetch_all(&self.pool)
        .await?;
        let rows: Vec<db::Row> = rows.into_iter().map(db::Row::Postgres).collect();
        timers::in_due_order(&rows)
    }
}
