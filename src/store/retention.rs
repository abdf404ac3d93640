//! The retention purge (`policy::retention`): personal rows older than their class's period
//! are deleted, the same statements on both dialects. Deletes go in batches of
//! [`PURGE_BATCH`] rows, each its own short transaction, so a purge of millions of rows never
//! holds a long lock; every delete names rows by their age again, so purges racing in several
//! workers delete each row once and never fail. Rows still in use are never purged: ledger
//! keys `pending` or `sending`, unfired timers, windows still open, consents not revoked.
//!
//! Ledger rows leave their counts behind in `campaign_totals`, in the transaction that deletes
//! them: only the rows a delete really returned are counted, so a race adds nothing twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::db::Arg;
use super::sql::SqlStore;
use super::{PurgeCounts, StoreResult};
use crate::policy::retention::{DataClass, RetentionPolicy};

/// Rows deleted per statement: big enough that a purge of a year's ledger takes minutes, small
/// enough that each statement holds its locks (SQLite's one writer) for milliseconds.
pub(crate) const PURGE_BATCH: i64 = 5_000;

/// One table's part of a class: how its purgeable rows are counted (dry run) and deleted (a
/// batch of at most `$2` rows older than `$1`).
struct Step {
    class: DataClass,
    count: &'static str,
    delete: &'static str,
}

/// `SELECT count(*)` and the batched `DELETE` over the same condition, written once.
macro_rules! step {
    ($class:expr, $table:literal, ($key:literal $(, $more:literal)*), $cond:literal) => {
        Step {
            class: $class,
            count: concat!("SELECT count(*) AS n FROM ", $table, " WHERE ", $cond),
            delete: concat!(
                "DELETE FROM ", $table, " WHERE (", $key, $(", ", $more,)* ") IN (SELECT ",
                $key, $(", ", $more,)* " FROM ", $table, " WHERE ", $cond, " LIMIT $2)"
            ),
        }
    };
}

/// Ledger rows past `$1` with their final outcome: keys still claimed or being sent stay.
macro_rules! final_ledger_rows {
    () => {
        "updated_at < $1 AND state NOT IN ('pending', 'sending')"
    };
}

/// The steps in the order they run.
///
/// Consents: a consent goes once a revocation of it (its category or all, its channel or all)
/// at or after the grant — so the consent no longer counts (`shared::consent_state`) — is
/// older than the cutoff; an active consent never. A revocation goes only when no consent it
/// revokes is left, whatever happened before (a purge cut short between the two steps):
/// deleting it first would bring that consent back to life. After the consents' step that
/// holds for every revocation past the cutoff, which is what the dry run counts.
fn steps() -> [Step; 12] {
    [
        step!(
            DataClass::Inbound,
            "inbound_messages",
            ("wamid"),
            "received_at < $1"
        ),
        step!(
            DataClass::Inbound,
            "service_windows",
            ("sender", "phone"),
            "open_until < $1 AND (free_until IS NULL OR free_until < $1)"
        ),
        step!(
            DataClass::Conversions,
            "conversions",
            ("event_id"),
            "received_at < $1"
        ),
        step!(
            DataClass::Consents,
            "consents",
            ("phone", "category", "channel"),
            "EXISTS (SELECT 1 FROM revocations r
                WHERE r.phone = consents.phone
                  AND (r.category IS NULL OR r.category = consents.category)
                  AND (r.channel IS NULL OR r.channel = consents.channel)
                  AND r.revoked_at >= consents.granted_at AND r.revoked_at < $1)"
        ),
        Step {
            class: DataClass::Consents,
            count: "SELECT count(*) AS n FROM revocations WHERE revoked_at < $1",
            delete: "DELETE FROM revocations WHERE id IN (
                 SELECT id FROM revocations WHERE revoked_at < $1
                    AND NOT EXISTS (SELECT 1 FROM consents c
                        WHERE c.phone = revocations.phone
                          AND (revocations.category IS NULL OR c.category = revocations.category)
                          AND (revocations.channel IS NULL OR c.channel = revocations.channel)
                          AND c.granted_at <= revocations.revoked_at)
                 LIMIT $2)",
        },
        step!(
            DataClass::Tier,
            "tier_reach",
            ("portfolio", "phone"),
            "last_reached_at < $1"
        ),
        step!(
            DataClass::Timers,
            "timers",
            ("kind", "key"),
            "fired_at IS NOT NULL AND fired_at < $1"
        ),
        step!(
            DataClass::Events,
            "recipient_events",
            ("id"),
            "published_at IS NOT NULL AND published_at < $1"
        ),
        step!(
            DataClass::Events,
            "recipient_events_dead",
            ("id"),
            "dead_at < $1"
        ),
        step!(
            DataClass::Suppressions,
            "suppressions",
            ("id"),
            "created_at < $1"
        ),
        step!(DataClass::Audit, "audit_log", ("id"), "at < $1"),
        // The delete also keeps the counts: `LEDGER_DELETE`.
        Step {
            class: DataClass::Ledger,
            count: concat!(
                "SELECT count(*) AS n FROM ledger WHERE ",
                final_ledger_rows!()
            ),
            delete: LEDGER_DELETE,
        },
    ]
}

/// Deletes a batch of final ledger rows and returns what `campaign_totals` keeps of each: the
/// role as `campaign_funnel` reads it from the key, and the number's first digits (a hashed,
/// erased number keeps none).
const LEDGER_DELETE: &str = concat!(
    "DELETE FROM ledger WHERE key IN (SELECT key FROM ledger WHERE ",
    final_ledger_rows!(),
    " LIMIT $2)
     RETURNING campaign,
        CASE WHEN key LIKE '%#follow-up' THEN 'follow_up'
             WHEN key LIKE '%#sms' THEN 'fallback' ELSE 'first' END AS role,
        channel, category, state, COALESCE(reason, '') AS reason,
        COALESCE(delivery, '') AS delivery,
        CASE WHEN recipient LIKE '+%' THEN substr(recipient, 2, 4) ELSE '' END AS prefix"
);

const TOTALS_ADD: &str = "INSERT INTO campaign_totals
        (campaign, role, channel, category, state, reason, delivery, prefix, n)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (campaign, role, channel, category, state, reason, delivery, prefix)
     DO UPDATE SET n = campaign_totals.n + excluded.n";

/// The columns of a `campaign_totals` row but `n`, in `TOTALS_ADD`'s order.
const TOTAL_COLUMNS: [&str; 8] = [
    "campaign", "role", "channel", "category", "state", "reason", "delivery", "prefix",
];
type TotalKey = [String; 8];

pub(super) async fn purge(
    db: &SqlStore,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> StoreResult<PurgeCounts> {
    let mut counts = PurgeCounts::default();
    for step in steps() {
        let Some(cutoff) = policy.cutoff(step.class, now) else {
            counts.add(step.class, 0);
            continue;
        };
        let n = if dry_run {
            let row = db.read_all(step.count, &[Arg::Time(cutoff)]).await?;
            row.first()
                .map(|r| r.int("n"))
                .transpose()?
                .map_or(0, |n| u64::try_from(n).unwrap_or(0))
        } else if step.class == DataClass::Ledger {
            purge_ledger(db, step.delete, cutoff).await?
        } else {
            let mut deleted = 0;
            loop {
                let n = db
                    .execute(step.delete, &[Arg::Time(cutoff), Arg::Int(PURGE_BATCH)])
                    .await?;
                deleted += n;
                if n < PURGE_BATCH as u64 {
                    break deleted;
                }
            }
        };
        counts.add(step.class, n);
    }
    Ok(counts)
}

/// Deletes final ledger rows older than `cutoff`, a batch per transaction, adding each
/// batch's counts to `campaign_totals` before it commits.
async fn purge_ledger(
    db: &SqlStore,
    delete: &'static str,
    cutoff: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut deleted = 0;
    loop {
        let mut tx = db.write_tx().await?;
        let rows = tx
            .fetch_all(delete, &[Arg::Time(cutoff), Arg::Int(PURGE_BATCH)])
            .await?;
        let mut totals: BTreeMap<TotalKey, i64> = BTreeMap::new();
        for r in &rows {
            let mut key = TotalKey::default();
            for (slot, column) in key.iter_mut().zip(TOTAL_COLUMNS) {
                *slot = r.text(column)?;
            }
            *totals.entry(key).or_default() += 1;
        }
        for (k, n) in &totals {
            let mut args: Vec<Arg<'_>> = k.iter().map(|v| Arg::Text(v)).collect();
            args.push(Arg::Int(*n));
            tx.execute(TOTALS_ADD, &args).await?;
        }
        tx.commit().await?;
        let n = rows.len() as u64;
        deleted += n;
        if n < PURGE_BATCH as u64 {
            return Ok(deleted);
        }
    }
}
