//! Postgres side of global pacing: leasing send slots from a number's GCRA row
//! (`send_slots`). One statement per lease; the database clock is the only clock, so workers
//! on machines with skewed clocks still interleave correctly.

use std::time::Duration;

use sqlx::PgPool;

use crate::domain::SenderId;
use crate::store::{SlotLease, StoreResult};

/// Leases `n` consecutive slots spaced `interval` apart for `sender`. The first slot is at
/// the later of now and the row's theoretical arrival time; the row moves past the last one.
pub async fn lease(
    pool: &PgPool,
    sender: &SenderId,
    interval: Duration,
    n: u32,
) -> StoreResult<SlotLease> {
    let step = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
    let span = step.saturating_mul(i64::from(n));
    let (first_us, now_us): (i64, i64) = sqlx::query_as(
        "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us)
         INSERT INTO send_slots (sender, tat_us)
         SELECT $1, now.us + $2 FROM now
         ON CONFLICT (sender) DO UPDATE
            SET tat_us = GREATEST(send_slots.tat_us, (SELECT us FROM now)) + $2
         RETURNING tat_us - $2, (SELECT us FROM now)",
    )
    .bind(sender.as_str())
    .bind(span)
    .fetch_one(pool)
    .await?;
    Ok(SlotLease {
        first_us,
        store_now_us: now_us,
    })
}
