//! The embedded store: one SQLite file in WAL mode, for `herald send`, `demo` and small teams.
//!
//! SQLite has one writer at a time, so writes go through a one-connection pool and every batch
//! is one statement or one `BEGIN IMMEDIATE` transaction (taking the write lock up front, so a
//! second process on the same file — `herald serve` next to `herald send` — waits on the busy
//! timeout instead of failing a lock upgrade). Reads use a small pool of their own, which WAL lets run beside the
//! writer. Batches travel as one JSON array parameter expanded by `json_each`: one prepared
//! statement per batch whatever its size, and no bind-variable limit to chunk around.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::db;
use super::shared::{self, DELIVERY_RANK_SQL};
use super::timers;
use super::{
    BudgetCharge, Claim, ClaimStatus, Consent, ConsentState, DeliveryUpdate, DueTimer,
    OutcomeRecord, StoreError, StoreResult, UnknownReview,
};
use crate::domain::{CampaignId, Category, IdempotencyKey, JobId, PhoneNumber};

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections: WAL readers never block the writer; a few cover the admin API and the
/// gate's lookups beside a running send.
const READ_CONNECTIONS: u32 = 4;

/// The SQLite store. Cheap to clone (pools are handles).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: SQLite serialises writers anyway, and one connection never
    /// contends for the lock with itself.
    pub(super) writer: SqlitePool,
    /// Read-only work (lookups, reports). The writer pool itself for an in-memory database,
    /// whose data lives only as long as its connection.
    pub(super) reader: SqlitePool,
}

impl SqliteStore {
    /// Opens the database at `url` (`sqlite://herald.db?mode=rwc` or `sqlite::memory:`),
    /// creating the file if missing unless the URL sets another `mode=`. Does not migrate; call
    /// [`Store::migrate`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let connect_err = |source| StoreError::Connect {
            url: shared::redact_url(url),
            source,
        };
        let mut options = SqliteConnectOptions::from_str(url).map_err(connect_err)?;
        if !url.contains("mode=") {
            // `sqlite://herald.db` should just work; an explicit `mode=` (ro, rw) is honoured.
            options = options.create_if_missing(true);
        }
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: commits skip their fsync, yet survive a crash of the process
            // (kill -9) — only an OS crash or power cut may lose the last ones (never corrupting
            // the file). Should a lost commit be a `mark_sending`, that key could be sent again;
            // hosts that must rule that out too can set `synchronous=FULL` on the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = is_in_memory(url);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // An in-memory database dies with its last connection: never recycle it.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(connect_err)?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(READ_CONNECTIONS)
                .connect_with(options)
                .await
                .map_err(connect_err)?
        };
        Ok(Self { writer, reader })
    }

    /// A write transaction holding the database write lock from its first statement.
    async fn write_tx(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms_to_time(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

/// A batch as the JSON text `json_each` expands.
fn to_json<T: serde::Serialize + ?Sized>(batch: &T) -> StoreResult<String> {
    serde_json::to_string(batch).map_err(|e| StoreError::Corrupt(format!("encoding a batch: {e}")))
}

/// A JSON array of strings, the batch parameter of `json_each`.
fn json_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    Value::Array(keys.into_iter().map(Value::from).collect()).to_string()
}

impl SqliteStore {
    pub(super) async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
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
        let batch: Vec<(&str, &str, i64, &str, &str)> = consents
            .iter()
            .map(|c| {
                (
                    c.phone.as_str(),
                    c.category.as_str(),
                    c.granted_at.timestamp_millis(),
                    c.source.as_str(),
                    c.proof.as_str(),
                )
            })
            .collect();
        // The latest grant is the one that counts; an older one arriving late (re-import of
        // an old file) must not replace it.
        let done = sqlx::query(
            "INSERT INTO consents (phone, category, granted_at, source, proof)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4
             FROM json_each(?1) WHERE true
             ON CONFLICT (phone, category) DO UPDATE SET
                granted_at = excluded.granted_at, source = excluded.source, proof = excluded.proof
             WHERE excluded.granted_at >= consents.granted_at",
        )
        .bind(to_json(&batch)?)
        .execute(&self.writer)
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
        let batch: Vec<(&str, String)> = phones
            .iter()
            .map(|p| (p.as_str(), shared::phone_hash(p)))
            .collect();
        let rows = sqlx::query(
            "SELECT
                EXISTS (SELECT 1 FROM suppressions s WHERE s.phone_hash = p.value->>1)
                    AS suppressed,
                (SELECT c.granted_at FROM consents c
                  WHERE c.phone = p.value->>0 AND c.category = ?1) AS granted_at,
                (SELECT MAX(r.revoked_at) FROM revocations r
                  WHERE r.phone = p.value->>0 AND (r.category = ?1 OR r.category IS NULL))
                    AS revoked_at
             FROM json_each(?2) p
             ORDER BY p.key",
        )
        .bind(category.as_str())
        .bind(to_json(&batch)?)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(shared::consent_state(
                    r.try_get::<bool, _>("suppressed")?,
                    r.try_get::<Option<i64>, _>("granted_at")?,
                    r.try_get::<Option<i64>, _>("revoked_at")?,
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
        let mut tx = self.write_tx().await?;
        let row: Option<(Option<i64>, Option<String>, i64)> = sqlx::query_as(
            "SELECT budget_micros, budget_currency, committed_micros FROM campaigns WHERE id = ?1",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let (charge, added) = shared::decide_budget(row, costs);
        if added > 0 {
            sqlx::query(
                "UPDATE campaigns SET committed_micros = committed_micros + ?2 WHERE id = ?1",
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
        let now = now_ms();
        let lease_until = now.saturating_add(shared::millis(lease));
        let distinct: HashSet<&str> = claims.iter().map(|c| c.key.as_str()).collect();
        let rows: Vec<[&str; 8]> = claims
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
                ]
            })
            .collect();
        let mut tx = self.write_tx().await?;

        // 1. New keys. The common case: every key is new, and this is the only statement.
        let inserted = sqlx::query(
            "INSERT INTO ledger (key, campaign, job, sender, recipient, template, language,
                                 category, state, owner, lease_until, created_at, updated_at)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6,
                    value->>7, 'pending', ?1, ?2, ?3, ?3
             FROM json_each(?4) WHERE true
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(to_json(&rows)?)
        .execute(&mut *tx)
        .await?
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

    pub(super) async fn record_outcomes(&self, outcomes: &[OutcomeRecord]) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let batch: Vec<shared::OutcomeRow<u32>> = shared::first_outcome_per_key(outcomes)
            .into_iter()
            .map(|o| {
                let (state, reason, wamid) = shared::outcome_columns(&o.outcome);
                (o.key.as_str(), state, reason, wamid, o.attempts)
            })
            .collect();
        // Only open keys take an outcome: the first recorded one wins.
        sqlx::query(
            "UPDATE ledger SET
                state = v.state, reason = v.reason, wamid = COALESCE(v.wamid, ledger.wamid),
                attempts = MAX(ledger.attempts, v.attempts),
                owner = NULL, lease_until = NULL, updated_at = ?2
             FROM (SELECT value->>0 AS key, value->>1 AS state, value->>2 AS reason,
                          value->>3 AS wamid, value->>4 AS attempts
                   FROM json_each(?1)) AS v
             WHERE ledger.key = v.key AND ledger.state IN ('pending', 'sending')",
        )
        .bind(to_json(&batch)?)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn release(&self, owner: &str, keys: &[IdempotencyKey]) -> StoreResult<()> {
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

    pub(super) async fn renew_lease(&self, owner: &str, lease: Duration) -> StoreResult<()> {
        let lease_until = now_ms().saturating_add(shared::millis(lease));
        sqlx::query(
            "UPDATE ledger SET lease_until = ?2
             WHERE owner = ?1 AND state IN ('pending', 'sending')",
        )
        .bind(owner)
        .bind(lease_until)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn end_abandoned_leases(&self) -> StoreResult<u64> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE ledger SET lease_until = ?1
             WHERE state IN ('pending', 'sending') AND lease_until > ?1",
        )
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn apply_deliveries(&self, updates: &[DeliveryUpdate]) -> StoreResult<u64> {
        let merged = shared::merge_deliveries(updates);
        if merged.is_empty() {
            return Ok(0);
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
             RETURNING sender"
        ))
        .bind(to_json(&batch)?)
        .bind(now_ms())
        .fetch_all(&self.writer)
        .await?;
        let changed = done.len() as u64;
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
            .execute(&self.writer)
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

    pub(super) async fn tier_usage(&self, portfolio: &str, window: Duration) -> StoreResult<u64> {
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

    // --- personal data (GDPR) ------------------------------------------------------------

    // --- timers ------------------------------------------------------------------------

    pub(super) async fn claim_due_timers(
        &self,
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
                             ORDER BY due_at, kind, key
                             LIMIT $4)
             RETURNING kind, key, due_at, payload, claims",
        )
        .bind(owner)
        .bind(now.timestamp_millis())
        .bind(timers::lease_end(now, lease).timestamp_millis())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.writer)
        .await?;
        let rows: Vec<db::Row> = rows.into_iter().map(db::Row::Sqlite).collect();
        timers::in_due_order(&rows)
    }
}
