//! The recipient-events outbox (`HERALD_RECIPIENT_EVENTS`): rows written beside the facts they
//! report, in the same transaction (`record_outcomes_with_events`,
//! `apply_deliveries_with_events`), then claimed in id order by the relay (`recipient_events`)
//! with a lease, published, and marked. The same statements on both dialects; Postgres also
//! serialises claims with an advisory lock so two relays never split one key's events.
//!
//! Order per key: a row is claimable only when no earlier unpublished row of the same message
//! key is waiting (backing off, or leased to another relay), so a key's events go out in id
//! order even across failures and processes.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::db::{
    Arg, Conn, KEYS_PER_STATEMENT, ROWS_PER_INSERT, key_placeholders, multi_row_inserts,
};
use super::sql::SqlStore;
use super::{OutboxCounts, OutboxEvent, StoreError, StoreResult};
use crate::domain::{
    ChannelKind, EventFacts, EventOptions, NewRecipientEvent, PhoneNumber, RecipientState,
};

/// Outbox rows, each once per (message key, state): a redelivered webhook or a re-run job
/// inserts nothing.
static INSERTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    multi_row_inserts(
        "INSERT INTO recipient_events
            (message_key, state, recipient, payload, created_at, next_attempt_at)",
        6,
        "ON CONFLICT (message_key, state) DO NOTHING",
    )
});

/// Writes `events` on `conn` (inside the caller's transaction), a hundred rows a statement.
/// Returns how many were new.
pub(crate) async fn insert<'a>(
    conn: &mut Conn,
    events: impl IntoIterator<Item = &'a NewRecipientEvent>,
) -> StoreResult<u64> {
    let events: Vec<&NewRecipientEvent> = events.into_iter().collect();
    let mut new = 0;
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut args = Vec::with_capacity(chunk.len() * 6);
        for e in chunk {
            args.extend([
                Arg::Text(&e.message_key),
                Arg::Text(e.state.as_str()),
                Arg::OptText(e.recipient.as_deref()),
                Arg::Text(&e.payload),
                Arg::Time(e.at),
                Arg::Time(e.at),
            ]);
        }
        new += conn
            .execute(INSERTS[chunk.len() - 1].as_str(), &args)
            .await?;
    }
    Ok(new)
}

/// Events alone (conversions, opt-outs, tests), in one transaction.
pub(super) async fn record(db: &SqlStore, events: &[NewRecipientEvent]) -> StoreResult<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut tx = db.write_tx().await?;
    let n = insert(&mut tx, events).await?;
    tx.commit().await?;
    Ok(n)
}

/// The newest main ledger row of a number: the campaign message an opt-out answers.
const LATEST_MAIN_ROW: &str = "SELECT key, campaign FROM ledger
     WHERE recipient = $1 AND key NOT LIKE '%#sms' AND key NOT LIKE '%#follow-up'
     ORDER BY created_at DESC, key DESC LIMIT 1";

/// `opted_out` events for numbers that revoked consent, one per number's latest campaign
/// message, in one transaction.
pub(super) async fn opt_outs(
    db: &SqlStore,
    phones: &[PhoneNumber],
    channel: ChannelKind,
    options: EventOptions,
    at: DateTime<Utc>,
) -> StoreResult<u64> {
    if phones.is_empty() {
        return Ok(0);
    }
    let mut tx = db.write_tx().await?;
    let mut events = Vec::new();
    for phone in phones {
        let rows = tx
            .fetch_all(LATEST_MAIN_ROW, &[Arg::Text(phone.as_str())])
            .await?;
        if let Some(row) = rows.first() {
            let (key, campaign) = (row.text("key")?, row.text("campaign")?);
            events.push(NewRecipientEvent::build(
                EventFacts {
                    message_key: &key,
                    state: RecipientState::OptedOut,
                    campaign: &campaign,
                    channel,
                    recipient: phone.as_str(),
                    code: None,
                    at,
                },
                options.numbers,
            ));
        }
    }
    let n = insert(&mut tx, &events).await?;
    tx.commit().await?;
    Ok(n)
}

/// Claims up to `$4` rows due at `$2` for `$1` until `$3`, in id order (see the module doc).
const CLAIM: &str = "UPDATE recipient_events SET owner = $1, lease_until = $3
     WHERE id IN (
        SELECT e.id FROM recipient_events e
        WHERE e.published_at IS NULL AND e.next_attempt_at <= $2
          AND (e.lease_until IS NULL OR e.lease_until <= $2)
          AND NOT EXISTS (
             SELECT 1 FROM recipient_events p
             WHERE p.message_key = e.message_key AND p.published_at IS NULL AND p.id < e.id
               AND (p.next_attempt_at > $2 OR (p.lease_until IS NOT NULL AND p.lease_until > $2)))
        ORDER BY e.id LIMIT $4)
     RETURNING id, message_key, state, payload, attempts, created_at";

/// The advisory lock that serialises claims across Postgres processes (any fixed number).
const CLAIM_LOCK: &str = "SELECT pg_advisory_xact_lock(7311486301)";

pub(super) async fn claim(
    db: &SqlStore,
    owner: &str,
    lease: Duration,
    now: DateTime<Utc>,
    limit: usize,
) -> StoreResult<Vec<OutboxEvent>> {
    let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
    let mut tx = db.write_tx().await?;
    if let Conn::Postgres(_) = tx {
        tx.execute(CLAIM_LOCK, &[]).await?;
    }
    let rows = tx
        .fetch_all(
            CLAIM,
            &[
                Arg::Text(owner),
                Arg::Time(now),
                Arg::Time(until),
                Arg::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
        .await?;
    tx.commit().await?;
    let mut claimed = rows
        .iter()
        .map(|r| {
            let state = r.text("state")?;
            Ok(OutboxEvent {
                id: r.int("id")?,
                message_key: r.text("message_key")?,
                state: RecipientState::ALL
                    .into_iter()
                    .find(|s| s.as_str() == state)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown event state {state}")))?,
                payload: r.text("payload")?,
                attempts: u32::try_from(r.int("attempts")?).unwrap_or(0),
                created_at: r.time("created_at")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    claimed.sort_unstable_by_key(|e| e.id);
    Ok(claimed)
}

/// `… AND id IN ($first, …)` over [`KEYS_PER_STATEMENT`] ids.
fn ids_clause(first: usize) -> String {
    format!("id IN ({})", key_placeholders(first))
}

static COMPLETE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE recipient_events SET published_at = $2, owner = NULL, lease_until = NULL
         WHERE owner = $1 AND published_at IS NULL AND {}",
        ids_clause(3)
    )
});

fn id_args<'a>(chunk: &[i64]) -> Vec<Arg<'a>> {
    let mut args: Vec<Arg<'a>> = chunk.iter().map(|&id| Arg::OptInt(Some(id))).collect();
    args.resize(KEYS_PER_STATEMENT, Arg::OptInt(None));
    args
}

/// Marks rows `owner` still holds as published. Returns how many.
pub(super) async fn complete(
    db: &SqlStore,
    owner: &str,
    ids: &[i64],
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut n = 0;
    for chunk in ids.chunks(KEYS_PER_STATEMENT) {
        let mut args = vec![Arg::Text(owner), Arg::Time(now)];
        args.extend(id_args(chunk));
        n += db.execute(COMPLETE.as_str(), &args).await?;
    }
    Ok(n)
}

/// Copies rows that have waited since before `$3` into the dead table (`$2` the error, `$4`
/// the time). The row stays in the outbox, marked published, so a late duplicate of the fact
/// inserts nothing.
static BURY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO recipient_events_dead
            (id, message_key, state, recipient, payload, created_at, attempts, last_error, dead_at)
         SELECT id, message_key, state, recipient, payload, created_at, attempts + 1, $2, $4
         FROM recipient_events
         WHERE owner = $1 AND published_at IS NULL AND created_at < $3 AND {}
         ON CONFLICT (id) DO NOTHING",
        ids_clause(5)
    )
});

static MARK_DEAD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE recipient_events SET published_at = $4, owner = NULL, lease_until = NULL,
            attempts = attempts + 1, last_error = $2
         WHERE owner = $1 AND published_at IS NULL AND created_at < $3 AND {}",
        ids_clause(5)
    )
});

static RETRY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE recipient_events SET next_attempt_at = $3, owner = NULL, lease_until = NULL,
            attempts = attempts + 1, last_error = $2
         WHERE owner = $1 AND published_at IS NULL AND {}",
        ids_clause(4)
    )
});

/// Hands back rows no sink took: those older than `dead_before` go to the dead table, the
/// others are due again at `retry_at`. Returns how many went dead.
pub(super) async fn fail(
    db: &SqlStore,
    owner: &str,
    ids: &[i64],
    error: &str,
    retry_at: DateTime<Utc>,
    dead_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut dead = 0;
    let mut tx = db.write_tx().await?;
    for chunk in ids.chunks(KEYS_PER_STATEMENT) {
        let mut args = vec![
            Arg::Text(owner),
            Arg::Text(error),
            Arg::Time(dead_before),
            Arg::Time(now),
        ];
        args.extend(id_args(chunk));
        tx.execute(BURY.as_str(), &args).await?;
        dead += tx.execute(MARK_DEAD.as_str(), &args).await?;
        let mut args = vec![Arg::Text(owner), Arg::Text(error), Arg::Time(retry_at)];
        args.extend(id_args(chunk));
        tx.execute(RETRY.as_str(), &args).await?;
    }
    tx.commit().await?;
    Ok(dead)
}

/// The unpublished rows: how many and the oldest's time.
const BACKLOG: &str = "SELECT count(*) AS n, min(created_at) AS oldest FROM recipient_events
     WHERE published_at IS NULL";

pub(super) async fn backlog(db: &SqlStore) -> StoreResult<(u64, Option<DateTime<Utc>>)> {
    let open = db.read_all(BACKLOG, &[]).await?;
    let Some(row) = open.first() else {
        return Ok((0, None));
    };
    Ok((
        u64::try_from(row.int("n")?).unwrap_or(0),
        row.opt_time("oldest")?,
    ))
}

/// What the outbox holds (tools, tests).
pub(super) async fn counts(db: &SqlStore) -> StoreResult<OutboxCounts> {
    let open = db.read_all(BACKLOG, &[]).await?;
    let published = db
        .read_all(
            "SELECT count(*) AS n FROM recipient_events WHERE published_at IS NOT NULL",
            &[],
        )
        .await?;
    let dead = db
        .read_all("SELECT count(*) AS n FROM recipient_events_dead", &[])
        .await?;
    let n = |rows: &[super::db::Row]| -> StoreResult<u64> {
        Ok(rows
            .first()
            .map(|r| r.int("n"))
            .transpose()?
            .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    };
    Ok(OutboxCounts {
        pending: n(&open)?,
        oldest_pending: open
            .first()
            .map(|r| r.opt_time("oldest"))
            .transpose()?
            .flatten(),
        published: n(&published)?,
        dead: n(&dead)?,
    })
}

/// The (message key, state) pairs the outbox holds for `keys`, published or not (tools and
/// tests).
pub(super) async fn states_of(
    db: &SqlStore,
    keys: &[String],
) -> StoreResult<HashSet<(String, String)>> {
    let sql: &'static str = STATES_OF.as_str();
    let mut found = HashSet::new();
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let args = super::db::key_args(chunk.iter().map(String::as_str));
        for r in db.read_all(sql, &args).await? {
            found.insert((r.text("message_key")?, r.text("state")?));
        }
    }
    Ok(found)
}

static STATES_OF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT message_key, state FROM recipient_events WHERE message_key IN ({})",
        key_placeholders(1)
    )
});
