//! The shared store for many workers: Postgres, with a bounded pool and a batched hot path.
//!
//! Every recipient batch is one statement over `UNNEST`ed arrays. Safety across processes comes
//! from the database, not from the callers: claims insert with `ON CONFLICT DO NOTHING` and take
//! over expired leases only on rows they could lock (`FOR UPDATE SKIP LOCKED`); batch updates
//! lock their rows in key order so two workers (or a worker and the webhook server) never
//! deadlock; tier reservations serialise per portfolio on a transaction advisory lock. Leases
//! and the tier window use the database clock, so workers with skewed clocks agree.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};

use super::shared;
use super::{StoreError, StoreResult};
use crate::domain::SenderId;

mod consent;
mod conversions;
mod deliveries;
mod ledger;
mod slots;
mod spend;
mod timers;

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

impl PostgresStore {
    pub(in crate::store) async fn lease_slots(
        &self,
        sender: &SenderId,
        interval: Duration,
        n: u32,
    ) -> StoreResult<Option<super::SlotLease>> {
        slots::lease(&self.pool, sender, interval, n)
            .await
            .map(Some)
    }

    pub(in crate::store) async fn migrate(&self) -> StoreResult<()> {
        // sqlx serialises concurrent migrators (several workers starting at once) on its own
        // advisory lock.
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }
}
