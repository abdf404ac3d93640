//! The embedded store: one SQLite file in WAL mode, for `herald send`, `demo` and small teams.
//!
//! SQLite has one writer at a time, so writes go through a one-connection pool and every batch
//! is one statement or one `BEGIN IMMEDIATE` transaction (taking the write lock up front, so a
//! second process on the same file — `herald serve` next to `herald send` — waits on the busy
//! timeout instead of failing a lock upgrade). Reads use a small pool of their own, which WAL lets run beside the
//! writer. Batches travel as one JSON array parameter expanded by `json_each`: one prepared
//! statement per batch whatever its size, and no bind-variable limit to chunk around.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::shared;
use super::{StoreError, StoreResult};

mod consent;
mod conversions;
mod deliveries;
mod ledger;
mod spend;
mod timers;

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections: WAL readers never block the writer; a few cover the admin API and the
/// gate's lookups beside a running send.
const READ_CONNECTIONS: u32 = 4;

/// The SQLite store. Cheap to clone (pools are handles).
/// The writer's page cache: `PRAGMA cache_size` in KiB when negative.
const WRITER_CACHE_KIB: &str = "-65536";

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
    /// Copies the write-ahead log into the database and truncates it, so pages an erasure
    /// overwrote leave no older copy behind.
    pub(in crate::store) async fn checkpoint(&self) -> StoreResult<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await?;
        Ok(())
    }

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
            .foreign_keys(true)
            // Deleted rows are overwritten with zeros, not left in free pages: an erased
            // number must not stay readable in the file (GDPR Art. 17).
            .pragma("secure_delete", "ON");
        let in_memory = is_in_memory(url);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // An in-memory database dies with its last connection: never recycle it.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                options
                    .clone()
                    // 64 MiB of page cache (SQLite's default is 2 MiB) for the one connection
                    // that writes: a campaign's keys are random in the key and campaign
                    // indexes, and with a million of them the default cache read a page from
                    // the file for most new keys. Taken as pages are used, not up front.
                    .pragma("cache_size", WRITER_CACHE_KIB),
            )
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
    pub(in crate::store) async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }
}
