//! The engine plumbing every query shares: the pool of either engine, opening and
//! migrating, multi-row statements, the cursor compare-and-set, the `state` table, and the
//! tracing wrapper around each repository call.

use std::{path::Path, str::FromStr as _, sync::OnceLock, time::Duration};

use sqlx::{
    PgPool, Row as _, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{
        SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
        SqliteSynchronous,
    },
};

use super::error::StoreError;

/// The engine behind a [`Store`]: the embedded SQLite file (one host) or a shared
/// PostgreSQL (a fleet of sensors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub(super) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has. The body is the same
/// text for both engines (portable SQL, numbered placeholders) and is compiled once per
/// engine; where the SQL differs the body picks it by [`Store::backend`].
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}
pub(super) use on_pool;

/// [`on_pool`] for a query that only reads: on SQLite it runs on the reader pool, so it
/// never waits for a connection behind writers queued on the database's one write lock.
macro_rules! on_reader {
    ($store:expr, |$pool:ident| $body:expr) => {
        match (&$store.pool, &$store.readers) {
            (_, Some($pool)) => $body,
            (Pool::Sqlite($pool), None) => $body,
            (Pool::Postgres($pool), None) => $body,
        }
    };
}
pub(super) use on_reader;

#[derive(Clone, Debug)]
pub struct Store {
    pub(super) pool: Pool,
    /// SQLite's read-only connections (WAL lets them read beside a writer). Without them a
    /// read waited for a pool connection while the writers' connections waited for the
    /// write lock: under a full-speed ingest, alert sinks' page reads lagged by seconds.
    pub(super) readers: Option<SqlitePool>,
    /// SQLite's writer for the ingester's commits, with a connection of its own. A
    /// connection's page cache is dropped whenever another connection has written since its
    /// last transaction; taking turns over the pool's four, each batch re-read the logs'
    /// index pages through syscalls (`bench ingest`: peak RSS 99 MiB against 56 on one).
    pub(super) ingest: Option<std::sync::Arc<super::ingest_sqlite::IngestWriter>>,
    /// SQLite's one write lock, taken in turn by this process's writers (see
    /// [`Store::write_turn`]); None on PostgreSQL, whose writers do not exclude each other.
    pub(super) write_turn: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// Unit tests slow the queries the stream starts with, to prove it answers first.
    #[cfg(test)]
    pub(crate) delay: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Rows per multi-row statement: fewer statements per batch is most of SQLite's speed here.
pub(super) const ROWS_PER_STMT: usize = 64;

/// One multi-row statement shape: `head VALUES (..),(..) tail`.
pub(super) struct MultiRow {
    head: &'static str,
    cols: usize,
    tail: &'static str,
    /// Built once per engine: [SQLite, PostgreSQL].
    built: [OnceLock<Vec<String>>; 2],
}

impl MultiRow {
    pub(super) const fn new(head: &'static str, cols: usize, tail: &'static str) -> Self {
        Self {
            head,
            cols,
            tail,
            built: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The statement for `n` rows (1..=ROWS_PER_STMT), built once per size and engine.
    /// PostgreSQL needs numbered placeholders (`$1, $2, ...`). SQLite gets anonymous ones
    /// (`?`, bound in order): it looks a numbered placeholder's name up in a list per
    /// parameter, which for 576 of them took 39% of the ingester's CPU (ingest at 28k
    /// rows/s instead of 52k).
    pub(super) fn sql(&self, backend: Backend, n: usize) -> &str {
        let numbered = backend == Backend::Postgres;
        let all = self.built[numbered as usize].get_or_init(|| {
            (0..=ROWS_PER_STMT)
                .map(|k| {
                    let rows: Vec<String> = (0..k.max(1))
                        .map(|r| {
                            let cols: Vec<String> = (1..=self.cols)
                                .map(|c| {
                                    if numbered {
                                        format!("${}", r * self.cols + c)
                                    } else {
                                        "?".to_owned()
                                    }
                                })
                                .collect();
                            format!("({})", cols.join(","))
                        })
                        .collect();
                    format!("{} VALUES {} {}", self.head, rows.join(","), self.tail)
                })
                .collect()
        });
        &all[n.clamp(1, ROWS_PER_STMT)]
    }
}

/// Compare-and-set of a state cursor inside a transaction (`$tx`): it must still hold
/// `prev` (or be absent when `prev` is None), else the transaction is abandoned with
/// `CursorMoved`, so two workers on one database can never both advance it. A macro so
/// that it expands for either engine's transaction.
macro_rules! set_cursor {
    ($tx:expr, $c:expr) => {{
        let c: &$crate::store::CursorUpdate = $c;
        let changed = match &c.prev {
            Some(prev) => sqlx::query("UPDATE state SET value = $1 WHERE key = $2 AND value = $3")
                .bind(&c.value)
                .bind(&c.key)
                .bind(prev)
                .execute(&mut *$tx)
                .await?
                .rows_affected(),
            None => sqlx::query(
                "INSERT INTO state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(&c.key)
            .bind(&c.value)
            .execute(&mut *$tx)
            .await?
            .rows_affected(),
        };
        if changed == 0 {
            // Dropping the transaction rolls it back.
            return Err($crate::store::StoreError::CursorMoved(c.key.clone()));
        }
    }};
}
pub(super) use set_cursor;

/// Wraps each `async fn` of an `impl` block in [`crate::telemetry::db_call`], which names
/// its span `db.<method>`: one tracing wrapper around the whole repository instead of a
/// span written into each query. Off, `db_call` is the bare call.
macro_rules! repository {
    (impl $ty:ident {
        $(
            $(#[$attr:meta])*
            $vis:vis async fn $name:ident(&$slf:ident $(, $arg:ident: $argty:ty)* $(,)?) -> $ret:ty $body:block
        )*
    }) => {
        impl $ty {
            $(
                $(#[$attr])*
                $vis async fn $name(&$slf $(, $arg: $argty)*) -> $ret {
                    crate::telemetry::db_call::<$ret, _>(
                        concat!("db.", stringify!($name)),
                        async move $body,
                    )
                    .await
                }
            )*
        }
    };
}
pub(super) use repository;

impl Store {
    /// Opens a store by URL: `sqlite://PATH` (or a bare path) for the embedded file,
    /// `postgres://...` / `postgresql://...` for a shared database. Applies the engine's
    /// migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Self::open_postgres(url).await;
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Self::open(Path::new(path)).await
    }

    /// Opens (creating) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Retention deletes old rows; incremental auto-vacuum lets it give their pages
            // back (`PRAGMA incremental_vacuum`). It takes effect only in a new file (set
            // before the first table); an older file reuses its free pages instead.
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            // The profiler's commit rewrites the states of up to 10,000 sources spread over
            // the whole table; with SQLite's default 2 MiB cache each commit re-reads its
            // pages through syscalls. 8 MiB per connection (an upper bound, filled only as
            // used): the profiler holds the states themselves in memory, so 16 MiB mostly
            // held them twice (bench profile: peak RSS down by ~25 MiB, speed within noise).
            .pragma("cache_size", "-8192")
            // Checkpoints (WAL -> database, with fsyncs) belong in the background
            // (`checkpoint_loop`), not in whichever commit crosses the default 1,000 pages:
            // on a real disk that commit took 30-50 ms instead of 5. The bound stays as a
            // safety net if the background task is not running.
            .pragma("wal_autocheckpoint", "20000")
            // After a checkpoint, give back WAL space beyond 64 MiB.
            .pragma("journal_size_limit", "67108864")
            // A multi-row upsert keeps a statement journal, to undo its own rows if one
            // fails; in a temporary file that cost a write syscall per page the statement
            // touched (a tenth of a cold profile build's time in perf). In memory it holds
            // one statement's pages, a few hundred KiB at most.
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        // Opened after the migrations, so the WAL and its index exist for them. SQLite's
        // default 2 MiB cache: these read pages of recent rows, not the profiler's states.
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(true)
                    .busy_timeout(Duration::from_secs(10))
                    // What the file already is (a no-op, so allowed read-only). The write
                    // pool's other pragmas (auto-vacuum, checkpoint bounds) are writes a
                    // read-only connection refuses, so these options are built afresh.
                    .pragma("journal_mode", "WAL")
                    .pragma("cache_size", "-2000"),
            )
            .await?;
        let ingest = super::ingest_sqlite::IngestWriter::new(path.to_owned());
        let mut store = Self::with_pool(Pool::Sqlite(pool));
        store.readers = Some(readers);
        store.ingest = Some(std::sync::Arc::new(ingest));
        store.write_turn = Some(Default::default());
        Ok(store)
    }

    /// Connects to PostgreSQL and applies its migrations (once, whichever instance of the
    /// fleet comes first: sqlx takes an advisory lock around them).
    async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url)?.application_name("decnet");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // While the server is away a commit fails after this (and is retried), rather than
            // hanging on the pool.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self::with_pool(Pool::Postgres(pool)))
    }

    fn with_pool(pool: Pool) -> Self {
        Store {
            pool,
            readers: None,
            ingest: None,
            write_turn: None,
            #[cfg(test)]
            delay: Default::default(),
        }
    }

    /// Waits for this process's turn at SQLite's write lock; the turn lasts while the guard
    /// lives (None on PostgreSQL). Writers that met on the lock itself waited in SQLite's
    /// busy handler, which sleeps 1, 2, 5, ... up to 100 ms and retries rather than being
    /// woken: under a full-speed ingest with the profiler and three alert sinks committing,
    /// the writers slept there for seconds per second (strace of `bench alerts`). Queued
    /// here, each starts the moment the previous commits. Taken before a pool connection,
    /// and never while holding one, so a writer waiting here holds nothing another needs.
    /// Another process on the same file still meets this one in the busy handler.
    pub(super) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.write_turn {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Checkpoints the WAL every `every` (PASSIVE: never waits for readers or writers),
    /// so commits do not pay for it. Runs until the task is dropped or the store closed.
    /// PostgreSQL checkpoints itself: returns at once.
    pub async fn checkpoint_loop(self, every: Duration) {
        if self.backend() != Backend::Sqlite {
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            if on_pool!(self, |p| p.is_closed()) {
                return;
            }
            if let Err(e) = self.checkpoint().await {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    }

    /// One passive WAL checkpoint (copies what no reader needs back into the database).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Pool::Sqlite(pool) = &self.pool {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_all(pool)
                .await?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(super) async fn test_delay(&self) {
        let ms = self.delay.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Closes every connection (waits for those in use).
    pub async fn close(&self) {
        if let Some(r) = &self.readers {
            r.close().await;
        }
        if let Some(w) = &self.ingest {
            w.close();
        }
        on_pool!(self, |p| p.close().await)
    }

    pub(crate) async fn get_state_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.get_state(key).await? {
            None => Ok(None),
            Some(v) => serde_json::from_str(&v)
                .map(Some)
                .map_err(|source| StoreError::State {
                    key: key.to_owned(),
                    source,
                }),
        }
    }
}

// Every call runs inside a `db.<method>` span when developer tracing is on (see
// `telemetry::db_call`); the queries themselves know nothing about tracing.
repository! {
impl Store {
    pub(crate) async fn get_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT value FROM state WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.get::<String, _>(0)))
        })
    }

    /// Sets state `key` to `value`, whatever it was.
    pub(crate) async fn set_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO state (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Renames state `from` to `to` unless `to` exists already; true when it did.
    pub(crate) async fn rename_state(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        on_pool!(self, |pool| {
            Ok(sqlx::query(
                "UPDATE state SET key = $2 WHERE key = $1 \
                 AND NOT EXISTS (SELECT 1 FROM state WHERE key = $2)",
            )
            .bind(from)
            .bind(to)
            .execute(pool)
            .await?
            .rows_affected()
                > 0)
        })
    }
}
}
