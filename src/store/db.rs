//! The query layer for statements both dialects share: written once in Postgres syntax with
//! `$n` placeholders (which SQLite also reads), bound from dialect-neutral [`Arg`]s and read
//! back through [`Row`]'s typed getters. The two dialects store a few things differently —
//! times (timestamptz against milliseconds since the epoch), flags (boolean against 0/1),
//! integer widths — and this is the one place that knows how.
//!
//! `now()` in a shared statement is the database clock on Postgres; on SQLite (one machine)
//! it becomes one more parameter bound to this process's clock, as SQLite's own statements do.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Postgres, Row as _, Sqlite, Transaction};

use super::sql::SqlStore;
use super::{StoreError, StoreResult};

/// A value bound to a shared statement, in the dialect's own representation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    /// A count or rate kept in a 32-bit column on Postgres (clamped there).
    Small(u32),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
}

fn bind_pg<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    args: &[Arg<'q>],
) -> Query<'q, Postgres, PgArguments> {
    for arg in args {
        q = match *arg {
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Small(v) => q.bind(i32::try_from(v).unwrap_or(i32::MAX)),
            Arg::Time(v) => q.bind(v),
            Arg::OptTime(v) => q.bind(v),
        };
    }
    q
}

fn bind_sqlite<'q>(
    mut q: Query<'q, Sqlite, SqliteArguments<'q>>,
    args: &[Arg<'q>],
    now_ms: Option<i64>,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    for arg in args {
        q = match *arg {
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Small(v) => q.bind(i64::from(v)),
            Arg::Time(v) => q.bind(v.timestamp_millis()),
            Arg::OptTime(v) => q.bind(v.map(|t| t.timestamp_millis())),
        };
    }
    match now_ms {
        Some(now) => q.bind(now),
        None => q,
    }
}

/// Keys per statement of the shared batch statements (`… key IN ($n, …)`): one statement text
/// with this many key placeholders; those a short chunk does not fill are bound to NULL,
/// which matches no key. Far below either dialect's limit on parameters.
pub(crate) const KEYS_PER_STATEMENT: usize = 500;

/// `$first, $first+1, …`: [`KEYS_PER_STATEMENT`] placeholders for a shared `key IN (…)`.
pub(crate) fn key_placeholders(first: usize) -> String {
    (first..first + KEYS_PER_STATEMENT)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `chunk` as the [`key_placeholders`] arguments, padded with NULL.
pub(crate) fn key_args<'a>(chunk: impl IntoIterator<Item = &'a str>) -> Vec<Arg<'a>> {
    let mut args: Vec<Arg<'a>> = chunk.into_iter().map(Arg::Text).collect();
    args.resize(KEYS_PER_STATEMENT, Arg::OptText(None));
    args
}

/// Rows per statement of the shared multi-row inserts ([`multi_row_inserts`]).
pub(crate) const ROWS_PER_INSERT: usize = 100;

/// `head VALUES ($1, …, $c), ($c+1, …), … tail`, for 1 to [`ROWS_PER_INSERT`] rows of
/// `columns` values each: element `n - 1` is the statement for `n` rows. Built once per table
/// (kept in a `LazyLock`), so a batch of rows is one statement per hundred, not one per row.
pub(crate) fn multi_row_inserts(head: &str, columns: usize, tail: &str) -> Vec<String> {
    (1..=ROWS_PER_INSERT)
        .map(|rows| {
            let values: Vec<String> = (0..rows)
                .map(|r| {
                    let cells: Vec<String> = (1..=columns)
                        .map(|c| format!("${}", r * columns + c))
                        .collect();
                    format!("({})", cells.join(", "))
                })
                .collect();
            format!("{head} VALUES {} {tail}", values.join(", "))
        })
        .collect()
}

/// A shared statement as SQLite runs it, and whether it needs the clock bound as its last
/// parameter. Rewritten once per statement, then cached (the set of statements is fixed).
fn sqlite_text(sql: &'static str) -> (&'static str, bool) {
    static CACHE: LazyLock<Mutex<HashMap<&'static str, (&'static str, bool)>>> =
        LazyLock::new(Mutex::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    *cache.entry(sql).or_insert_with(|| {
        if !sql.contains("now()") {
            return (sql, false);
        }
        let next = highest_placeholder(sql) + 1;
        let text = sql.replace("now()", &format!("${next}"));
        (Box::leak(text.into_boxed_str()), true)
    })
}

/// The highest `$n` in `sql` (0 without any).
fn highest_placeholder(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

fn sqlite_query<'q>(sql: &'static str, args: &[Arg<'q>]) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    let (text, clock) = sqlite_text(sql);
    bind_sqlite(
        sqlx::query(text),
        args,
        clock.then(|| Utc::now().timestamp_millis()),
    )
}

/// A row of either dialect, read through getters that hide how each stores a value.
pub(crate) enum Row {
    Postgres(PgRow),
    Sqlite(SqliteRow),
}

impl Row {
    pub fn text(&self, column: &str) -> StoreResult<String> {
        Ok(match self {
            Self::Postgres(r) => r.try_get(column)?,
            Self::Sqlite(r) => r.try_get(column)?,
        })
    }

    pub fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        Ok(match self {
            Self::Postgres(r) => r.try_get(column)?,
            Self::Sqlite(r) => r.try_get(column)?,
        })
    }

    /// An integer of any width (Postgres `integer` or `bigint`).
    pub fn int(&self, column: &str) -> StoreResult<i64> {
        self.opt_int(column)?
            .ok_or_else(|| StoreError::Corrupt(format!("{column} is NULL")))
    }

    pub fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        Ok(match self {
            Self::Postgres(r) => match r.try_get::<Option<i64>, _>(column) {
                Ok(v) => v,
                Err(sqlx::Error::ColumnDecode { .. }) => {
                    r.try_get::<Option<i32>, _>(column)?.map(i64::from)
                }
                Err(e) => return Err(e.into()),
            },
            Self::Sqlite(r) => r.try_get(column)?,
        })
    }

    /// A flag: `boolean` on Postgres, 0/1 on SQLite.
    pub fn flag(&self, column: &str) -> StoreResult<bool> {
        Ok(match self {
            Self::Postgres(r) => r.try_get(column)?,
            Self::Sqlite(r) => r.try_get::<i64, _>(column)? != 0,
        })
    }

    pub fn time(&self, column: &str) -> StoreResult<DateTime<Utc>> {
        self.opt_time(column)?
            .ok_or_else(|| StoreError::Corrupt(format!("{column} is NULL")))
    }

    /// A time: `timestamptz` on Postgres, milliseconds since the epoch on SQLite.
    pub fn opt_time(&self, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
        match self {
            Self::Postgres(r) => Ok(r.try_get(column)?),
            Self::Sqlite(r) => r
                .try_get::<Option<i64>, _>(column)?
                .map(|ms| {
                    DateTime::from_timestamp_millis(ms)
                        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
                })
                .transpose(),
        }
    }
}

impl SqlStore {
    /// Runs a writing statement; returns rows affected.
    pub(super) async fn execute(&self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        Ok(match self {
            Self::Postgres(s) => bind_pg(sqlx::query(sql), args)
                .execute(&s.pool)
                .await?
                .rows_affected(),
            Self::Sqlite(s) => sqlite_query(sql, args)
                .execute(&s.writer)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a reading statement (on SQLite's read pool).
    pub(super) async fn read_all(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> StoreResult<Vec<Row>> {
        Ok(match self {
            Self::Postgres(s) => bind_pg(sqlx::query(sql), args)
                .fetch_all(&s.pool)
                .await?
                .into_iter()
                .map(Row::Postgres)
                .collect(),
            Self::Sqlite(s) => sqlite_query(sql, args)
                .fetch_all(&s.reader)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
        })
    }

    pub(super) async fn read_optional(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> StoreResult<Option<Row>> {
        Ok(match self {
            Self::Postgres(s) => bind_pg(sqlx::query(sql), args)
                .fetch_optional(&s.pool)
                .await?
                .map(Row::Postgres),
            Self::Sqlite(s) => sqlite_query(sql, args)
                .fetch_optional(&s.reader)
                .await?
                .map(Row::Sqlite),
        })
    }

    /// Runs a writing statement that returns one row (`RETURNING`).
    pub(super) async fn write_one(&self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<Row> {
        Ok(match self {
            Self::Postgres(s) => {
                Row::Postgres(bind_pg(sqlx::query(sql), args).fetch_one(&s.pool).await?)
            }
            Self::Sqlite(s) => Row::Sqlite(sqlite_query(sql, args).fetch_one(&s.writer).await?),
        })
    }

    /// A reading statement run on the writer (SQLite): it sees the write this process just
    /// made, which a pooled reader may not yet.
    pub(super) async fn write_optional(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> StoreResult<Option<Row>> {
        Ok(match self {
            Self::Postgres(s) => bind_pg(sqlx::query(sql), args)
                .fetch_optional(&s.pool)
                .await?
                .map(Row::Postgres),
            Self::Sqlite(s) => sqlite_query(sql, args)
                .fetch_optional(&s.writer)
                .await?
                .map(Row::Sqlite),
        })
    }

    /// A consistent read of several statements: one snapshot on Postgres, one connection on
    /// SQLite (whose WAL readers see one snapshot per statement; herald's single writer makes
    /// that enough for an export).
    pub(super) async fn snapshot(&self) -> StoreResult<Conn> {
        Ok(match self {
            Self::Postgres(s) => Conn::Postgres(
                s.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
            Self::Sqlite(s) => Conn::SqliteRead(s.reader.acquire().await?),
        })
    }

    /// A write transaction (on SQLite, holding the write lock from its first statement).
    pub(super) async fn write_tx(&self) -> StoreResult<Conn> {
        Ok(match self {
            Self::Postgres(s) => Conn::Postgres(s.pool.begin().await?),
            Self::Sqlite(s) => Conn::SqliteWrite(s.writer.begin_with("BEGIN IMMEDIATE").await?),
        })
    }
}

/// A connection for several shared statements in a row: a transaction, or (SQLite reads) one
/// pooled connection.
pub(crate) enum Conn {
    Postgres(Transaction<'static, Postgres>),
    SqliteWrite(Transaction<'static, Sqlite>),
    SqliteRead(PoolConnection<Sqlite>),
}

impl Conn {
    pub async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        Ok(match self {
            Self::Postgres(tx) => bind_pg(sqlx::query(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Self::SqliteWrite(tx) => sqlite_query(sql, args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Self::SqliteRead(c) => sqlite_query(sql, args)
                .execute(&mut **c)
                .await?
                .rows_affected(),
        })
    }

    pub async fn fetch_all(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> StoreResult<Vec<Row>> {
        Ok(match self {
            Self::Postgres(tx) => bind_pg(sqlx::query(sql), args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(Row::Postgres)
                .collect(),
            Self::SqliteWrite(tx) => sqlite_query(sql, args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
            Self::SqliteRead(c) => sqlite_query(sql, args)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
        })
    }

    /// Ends the transaction (a plain connection goes back to its pool).
    pub async fn commit(self) -> StoreResult<()> {
        match self {
            Self::Postgres(tx) => tx.commit().await?,
            Self::SqliteWrite(tx) => tx.commit().await?,
            Self::SqliteRead(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_inserts_number_every_cell_once() {
        let all = multi_row_inserts("INSERT INTO t (a, b)", 2, "RETURNING a");
        assert_eq!(all.len(), ROWS_PER_INSERT);
        assert_eq!(all[0], "INSERT INTO t (a, b) VALUES ($1, $2) RETURNING a");
        assert_eq!(
            all[2],
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) RETURNING a"
        );
        assert_eq!(
            highest_placeholder(&all[ROWS_PER_INSERT - 1]),
            2 * ROWS_PER_INSERT
        );
    }

    #[test]
    fn sqlite_binds_the_clock_after_the_last_placeholder() {
        let (text, clock) = sqlite_text("UPDATE t SET a = $2, at = now() WHERE id = $1");
        assert_eq!(text, "UPDATE t SET a = $2, at = $3 WHERE id = $1");
        assert!(clock);
        assert_eq!(sqlite_text("SELECT $1"), ("SELECT $1", false));
        assert_eq!(highest_placeholder("VALUES ($1, $12, $3)"), 12);
    }
}
