//! The store: SQLite (WAL) or PostgreSQL through sqlx, migrations embedded per engine.
//! [`Store`] owns every query;
//! no SQL lives outside this module.

use std::{collections::HashMap, path::Path, str::FromStr as _, sync::OnceLock, time::Duration};

use crate::{row::NewLog, telemetry::lite::LiteSpan};
use sqlx::{
    AssertSqlSafe, PgPool, Row as _, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "state `{0}` was changed by another writer (is a second ingester running on this database?)"
    )]
    CursorMoved(String),
    #[error("state {key}: {source}")]
    State {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// Worth retrying with the batch kept in memory: the database is busy, locked or full
    /// (SQLite), or unreachable, restarting, out of room or in a lock conflict
    /// (PostgreSQL). Anything else is a bug or a broken schema and ends the run.
    pub fn is_transient(&self) -> bool {
        let StoreError::Db(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Database(d) => {
                let code = d.code();
                let code = code.as_deref().unwrap_or("");
                if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    // 08: connection exception; 53: insufficient resources (disk full, out
                    // of memory, too many connections); 57P01-03: shutting down, cannot
                    // connect now; 40001/40P01: serialization failure, deadlock; 55P03:
                    // lock not available.
                    code.starts_with("08")
                        || code.starts_with("53")
                        || matches!(
                            code,
                            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03"
                        )
                } else {
                    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with or without extended codes,
                    // and SQLITE_FULL (13): the disk fills up and frees again.
                    matches!(code.parse::<i32>().ok().map(|c| c & 0xff), Some(5 | 6 | 13))
                }
            }
            // The server went away (restart, network): the pool reconnects.
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
            _ => false,
        }
    }
}

/// A journal line that could not be ingested.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub file: String,
    pub byte_offset: u64,
    pub reason: String,
    pub raw: String,
}

/// An artifact extracted from a record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NewBounty {
    pub attacker_ip: String,
    pub kind: &'static str,
    pub value: String,
    pub ts: String,
}

/// Everything one ingest batch writes, committed in one transaction with the cursor.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub logs: Vec<NewLog>,
    /// Bounties as (index into `logs` that produced it, bounty).
    pub bounties: Vec<(usize, NewBounty)>,
    pub dead: Vec<DeadLetter>,
    /// The cursor written in the same transaction.
    pub cursor: Option<CursorUpdate>,
}

impl Batch {
    /// Stages a journal record for the batch's transaction; returns its index in `logs`.
    /// `span`: the record's developer-tracing span (`db.add_log` goes below it).
    pub fn add_log(&mut self, log: NewLog, span: &LiteSpan) -> usize {
        crate::telemetry::db_step(span, "db.add_log", || {
            self.logs.push(log);
            self.logs.len() - 1
        })
    }

    /// Stages a bounty found in `logs[log_idx]` (`db.add_bounty` below `span`).
    pub fn add_bounty(&mut self, log_idx: usize, bounty: NewBounty, span: &LiteSpan) {
        crate::telemetry::db_step(span, "db.add_bounty", || {
            self.bounties.push((log_idx, bounty))
        })
    }
}

/// A state cursor moving from `prev` (None: not stored yet) to `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorUpdate {
    pub key: String,
    pub prev: Option<String>,
    pub value: String,
}

/// One attacker's profile and streaming state, as the profiler writes them.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    pub ip: String,
    pub first_seen: String,
    pub last_seen: String,
    pub event_count: i64,
    pub class: String,
    pub risk_score: i64,
    pub campaign_id: Option<i64>,
    pub campaign_key: Option<String>,
    /// The attackers-list row (JSON).
    pub summary: String,
    /// The serialized streaming state (the public profile is rendered from it on read).
    pub state: String,
}

/// A row of the attackers list: its stored summary, or (rows from before the summary
/// column) the state to render it from.
#[derive(Clone, Debug, PartialEq)]
pub struct AttackerRow {
    pub ip: String,
    pub summary: Option<String>,
    pub state: Option<String>,
}

/// A detection row (id allocated by the profiler, so it can publish it after the commit).
#[derive(Clone, Debug, PartialEq)]
pub struct DetectionRow {
    pub id: i64,
    pub ts: String,
    pub ip: String,
    pub body: String,
}

/// Everything one profiler batch writes, in one transaction.
#[derive(Debug, Default)]
pub struct ProfileCommit {
    pub rows: Vec<ProfileRow>,
    /// Campaigns created or changed: (id, summary JSON).
    pub campaigns: Vec<(i64, String)>,
    /// Campaigns merged into others.
    pub dropped_campaigns: Vec<i64>,
    pub detections: Vec<DetectionRow>,
    /// Extra `state` entries (the next campaign id), written as they are.
    pub state: Vec<(String, String)>,
    pub cursor: Option<CursorUpdate>,
}

/// The engine behind a [`Store`]: the embedded SQLite file (one host) or a shared
/// PostgreSQL (a fleet of sensors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
enum Pool {
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

/// The advisory-lock keys (PostgreSQL): one analyst at a time, and ingest commits in id
/// order (see `commit_batch`). Arbitrary constants, the same in every decnet.
const ANALYST_LOCK: i64 = 0x6465_636e_6574_0001;
const INGEST_LOCK: i64 = 0x6465_636e_6574_0002;

/// The PostgreSQL channels: a batch of logs was committed; detections were committed.
pub const LOGS_CHANNEL: &str = "decnet_logs";
pub const DETECTIONS_CHANNEL: &str = "decnet_detections";

/// This process is the fleet's analyst while this lives (see [`Store::analyst_lock`]).
pub struct AnalystLock {
    /// The PostgreSQL session holding the advisory lock (None: SQLite).
    conn: Option<sqlx::PgConnection>,
}

impl AnalystLock {
    /// Whether the lock is still held: its session still answers. A session that fails to
    /// answer within 3 s is given up (closed), and the lock with it, so that the standby that
    /// takes over is the only analyst.
    pub async fn held(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return true;
        };
        let ping = sqlx::query("SELECT 1").execute(&mut *conn);
        match tokio::time::timeout(Duration::from_secs(3), ping).await {
            Ok(Ok(_)) => true,
            _ => {
                self.conn = None;
                false
            }
        }
    }
}

/// What was committed, as told by [`Changes::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Logs,
    Detections,
}

/// Commit notifications from other processes (PostgreSQL LISTEN).
pub struct Changes {
    listener: sqlx::postgres::PgListener,
}

impl Changes {
    /// The next notification (waits). Err: the connection failed and could not be made
    /// again yet.
    pub async fn next(&mut self) -> Result<Change, StoreError> {
        let n = self.listener.recv().await?;
        Ok(if n.channel() == DETECTIONS_CHANNEL {
            Change::Detections
        } else {
            Change::Logs
        })
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// Unit tests slow the queries the stream starts with, to prove it answers first.
    #[cfg(test)]
    pub(crate) delay: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Rows per multi-row statement: fewer statements per batch is most of SQLite's speed here.
const ROWS_PER_STMT: usize = 64;

/// One multi-row statement shape: `head VALUES (..),(..) tail`.
struct MultiRow {
    head: &'static str,
    cols: usize,
    tail: &'static str,
    /// Built once per engine: [SQLite, PostgreSQL].
    built: [OnceLock<Vec<String>>; 2],
}

impl MultiRow {
    const fn new(head: &'static str, cols: usize, tail: &'static str) -> Self {
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
    fn sql(&self, backend: Backend, n: usize) -> &str {
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

static INSERT_LOGS: MultiRow = MultiRow::new(
    "INSERT INTO logs (ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id, sensor)",
    9,
    "",
);

/// Inserting a batch's log rows, the fastest way each engine has; returns the last id
/// given out (the batch's ids are consecutive, see `commit_batch`).
trait InsertLogs {
    async fn insert_logs(&mut self, logs: &[NewLog]) -> Result<i64, StoreError>;
}

impl InsertLogs for sqlx::Transaction<'_, sqlx::Sqlite> {
    /// Multi-row INSERTs of 64 rows; the last id comes with the result (asking with
    /// `RETURNING id` instead halved the ingest rate).
    async fn insert_logs(&mut self, logs: &[NewLog]) -> Result<i64, StoreError> {
        let mut last = 0;
        for chunk in logs.chunks(ROWS_PER_STMT) {
            let mut q = sqlx::query(AssertSqlSafe(INSERT_LOGS.sql(Backend::Sqlite, chunk.len())));
            for l in chunk {
                q = q
                    .bind(&l.ts)
                    .bind(&l.decky)
                    .bind(&l.service)
                    .bind(&l.event_type)
                    .bind(&l.attacker_ip)
                    .bind(&l.fields)
                    .bind(&l.trace_id)
                    .bind(&l.span_id)
                    .bind(&*l.sensor);
            }
            last = q.execute(&mut **self).await?.last_insert_rowid();
        }
        Ok(last)
    }
}

impl InsertLogs for sqlx::Transaction<'_, sqlx::Postgres> {
    /// COPY (text format): one stream for the whole batch instead of a statement per 64
    /// rows; the ids are drawn in row order under the ingest lock, so the sequence's
    /// `currval` is the last.
    async fn insert_logs(&mut self, logs: &[NewLog]) -> Result<i64, StoreError> {
        let mut copy = self
            .copy_in_raw(
                "COPY logs (ts, decky, service, event_type, attacker_ip, fields, trace_id, \
                 span_id, sensor) FROM STDIN",
            )
            .await?;
        let mut buf = Vec::with_capacity(1 << 20);
        for l in logs {
            copy_row(
                &mut buf,
                &[
                    Some(&l.ts),
                    Some(&l.decky),
                    Some(&l.service),
                    Some(&l.event_type),
                    Some(&l.attacker_ip),
                    Some(&l.fields),
                    l.trace_id.as_deref(),
                    l.span_id.as_deref(),
                    Some(&l.sensor),
                ],
            );
            if buf.len() >= 1 << 20 {
                copy.send(std::mem::take(&mut buf)).await?;
            }
        }
        if !buf.is_empty() {
            copy.send(buf).await?;
        }
        copy.finish().await?;
        Ok(
            sqlx::query("SELECT currval(pg_get_serial_sequence('logs', 'id'))")
                .fetch_one(&mut **self)
                .await?
                .get(0),
        )
    }
}

/// One row of COPY's text format: tab-separated, `\N` for NULL, and backslash, tab,
/// newline and carriage return escaped with a backslash.
fn copy_row(out: &mut Vec<u8>, cols: &[Option<&str>]) {
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match c {
            None => out.extend_from_slice(b"\\N"),
            Some(s) => {
                for &b in s.as_bytes() {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        _ => out.push(b),
                    }
                }
            }
        }
    }
    out.push(b'\n');
}

static UPSERT_BOUNTIES: MultiRow = MultiRow::new(
    "INSERT INTO bounties (attacker_ip, kind, value, first_seen, last_seen, count, first_log_id)",
    7,
    "ON CONFLICT (attacker_ip, kind, value) DO UPDATE SET \
     last_seen = excluded.last_seen, count = bounties.count + excluded.count",
);

static INSERT_DETECTIONS: MultiRow =
    MultiRow::new("INSERT INTO detections (id, ts, ip, body)", 4, "");

static UPSERT_ATTACKERS: MultiRow = MultiRow::new(
    "INSERT INTO attackers (ip, first_seen, last_seen, event_count, class, risk_score, campaign_id, summary, updated_at)",
    9,
    "ON CONFLICT (ip) DO UPDATE SET first_seen = excluded.first_seen, last_seen = excluded.last_seen, \
     event_count = excluded.event_count, class = excluded.class, risk_score = excluded.risk_score, \
     campaign_id = excluded.campaign_id, summary = excluded.summary, updated_at = excluded.updated_at",
);

static UPSERT_BEHAVIOR: MultiRow = MultiRow::new(
    "INSERT INTO attacker_behavior (ip, state, campaign_key, updated_at)",
    4,
    "ON CONFLICT (ip) DO UPDATE SET state = excluded.state, campaign_key = excluded.campaign_key, \
     updated_at = excluded.updated_at",
);

/// Compare-and-set of a state cursor inside a transaction (`$tx`): it must still hold
/// `prev` (or be absent when `prev` is None), else the transaction is abandoned with
/// `CursorMoved`, so two workers on one database can never both advance it. A macro so
/// that it expands for either engine's transaction.
macro_rules! set_cursor {
    ($tx:expr, $c:expr) => {{
        let c: &CursorUpdate = $c;
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
            return Err(StoreError::CursorMoved(c.key.clone()));
        }
    }};
}

/// Whether any text of the batch holds U+0000, which PostgreSQL text cannot store (a
/// hostile journal line can carry one as `\u0000` in a decoded string, a payload artifact
/// as a raw byte).
fn has_nul(b: &Batch) -> bool {
    let nul = |s: &str| s.contains('\0');
    b.logs.iter().any(|l| {
        [
            &l.ts,
            &l.decky,
            &l.service,
            &l.event_type,
            &l.attacker_ip,
            &l.fields,
        ]
        .iter()
        .any(|s| nul(s))
            || l.trace_id.as_deref().is_some_and(nul)
            || l.span_id.as_deref().is_some_and(nul)
            || nul(&l.sensor)
    }) || b
        .bounties
        .iter()
        .any(|(_, x)| nul(&x.attacker_ip) || nul(&x.value) || nul(&x.ts))
        || b.dead
            .iter()
            .any(|d| nul(&d.file) || nul(&d.reason) || nul(&d.raw))
}

/// The batch with every U+0000 written as U+FFFD (the replacement character), for
/// PostgreSQL; the row is kept rather than the whole batch refused.
fn without_nul(b: &Batch) -> Batch {
    let fix = |s: &mut String| {
        if s.contains('\0') {
            *s = s.replace('\0', "\u{FFFD}");
        }
    };
    let mut b = b.clone();
    for l in &mut b.logs {
        for s in [
            &mut l.ts,
            &mut l.decky,
            &mut l.service,
            &mut l.event_type,
            &mut l.attacker_ip,
            &mut l.fields,
        ] {
            fix(s);
        }
        for s in [l.trace_id.as_mut(), l.span_id.as_mut()]
            .into_iter()
            .flatten()
        {
            fix(s);
        }
    }
    for (_, x) in &mut b.bounties {
        fix(&mut x.attacker_ip);
        fix(&mut x.value);
        fix(&mut x.ts);
    }
    for d in &mut b.dead {
        fix(&mut d.file);
        fix(&mut d.reason);
        fix(&mut d.raw);
    }
    b
}

/// `SELECT id, ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id, sensor`.
fn log_row<R: sqlx::Row>(r: R) -> (i64, NewLog)
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (
        r.get(0),
        NewLog {
            ts: r.get(1),
            decky: r.get(2),
            service: r.get(3),
            event_type: r.get(4),
            attacker_ip: r.get(5),
            fields: r.get(6),
            trace_id: r.get(7),
            span_id: r.get(8),
            sensor: r.get::<String, _>(9).into(),
        },
    )
}

/// The columns [`log_row`] reads.
const LOG_COLUMNS: &str =
    "id, ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id, sensor";

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
            // The profiler rewrites the states of the sources a batch touches, spread over
            // the whole table; with SQLite's default 2 MiB cache every batch re-reads its
            // pages through syscalls. 16 MiB per connection (an upper bound, filled only as
            // used) holds the states of 10,000 sources.
            .pragma("cache_size", "-16384")
            // Checkpoints (WAL -> database, with fsyncs) belong in the background
            // (`checkpoint_loop`), not in whichever commit crosses the default 1,000 pages:
            // on a real disk that commit took 30-50 ms instead of 5. The bound stays as a
            // safety net if the background task is not running.
            .pragma("wal_autocheckpoint", "20000")
            // After a checkpoint, give back WAL space beyond 64 MiB.
            .pragma("journal_size_limit", "67108864");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self::with_pool(Pool::Sqlite(pool)))
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
            #[cfg(test)]
            delay: Default::default(),
        }
    }

    pub fn backend(&self) -> Backend {
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
    async fn test_delay(&self) {
        let ms = self.delay.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Closes every connection (waits for those in use).
    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await)
    }

    /// An in-memory database (tests).
    pub async fn open_memory() -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self::with_pool(Pool::Sqlite(pool)))
    }

    /// Tries to become the fleet's analyst, waiting up to `wait` for the lock: on
    /// PostgreSQL, a session advisory lock held on a connection of its own for as long as
    /// the returned lock lives (a process that dies loses its connection, and with it the
    /// lock). A standby waiting here is granted the lock the moment the holder's session
    /// ends. SQLite serves one process: granted at once.
    pub async fn analyst_lock(&self, wait: Duration) -> Result<Option<AnalystLock>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Some(AnalystLock { conn: None }));
        };
        let mut conn = pool.acquire().await?;
        // The wait bound is set for this transaction only (the connection goes back to the
        // pool when the lock is not granted); a session lock taken inside a transaction
        // outlives it.
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '{}ms'",
            wait.as_millis().max(1)
        )))
        .execute(&mut *tx)
        .await?;
        let got = sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(ANALYST_LOCK)
            .execute(&mut *tx)
            .await;
        match got {
            Ok(_) => {
                tx.commit().await?;
                // Held: the connection leaves the pool so that nothing else runs on it and
                // the lock ends exactly when it closes.
                Ok(Some(AnalystLock {
                    conn: Some(conn.detach()),
                }))
            }
            // 55P03 lock_not_available: the wait ran out, another instance holds it.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Wake-ups for what other processes commit (PostgreSQL LISTEN on the logs and
    /// detections channels); None on SQLite, where one process does everything. A lost
    /// connection is re-established by the listener, but what was notified meanwhile is
    /// not repeated: callers also look on a timer.
    pub async fn changes(&self) -> Result<Option<Changes>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener
            .listen_all([LOGS_CHANNEL, DETECTIONS_CHANNEL])
            .await?;
        Ok(Some(Changes { listener }))
    }

    pub async fn get_state_json<T: serde::de::DeserializeOwned>(
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

// Every repository call below runs inside a `db.<method>` span when developer tracing is
// on (see `telemetry::db_call`); the queries themselves know nothing about tracing.
repository! {
impl Store {
    pub async fn get_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT value FROM state WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.get::<String, _>(0)))
        })
    }

    /// Renames state `from` to `to` unless `to` exists already; true when it did.
    pub async fn rename_state(&self, from: &str, to: &str) -> Result<bool, StoreError> {
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

    /// Writes a batch: logs, bounties (upserted), dead letters and the cursor, all in one
    /// transaction. Either all of it is visible afterwards or none of it. Returns the id of
    /// the first log row (the others follow consecutively), None when it had no logs.
    ///
    /// A connection whose transaction failed is closed, not returned to the pool: after
    /// SQLITE_FULL (or busy) in the middle of a transaction SQLite may leave it open on that
    /// connection, write lock included, and every writer and checkpoint then waits on a
    /// connection sitting idle in the pool (seen in the disk-full test: "database table is
    /// locked" for as long as the test ran).
    pub async fn commit_batch(&self, batch: &Batch) -> Result<Option<i64>, StoreError> {
        let fixed;
        let batch = match self.backend() {
            Backend::Postgres if has_nul(batch) => {
                fixed = without_nul(batch);
                &fixed
            }
            _ => batch,
        };
        on_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            let r: Result<Option<i64>, StoreError> = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                if self.backend() == Backend::Postgres {
                    // Many sensors ingest at once; log ids must still become visible in id
                    // order, or the analyst's cursor and a resuming stream (both "after id
                    // N") would step over a row committed late with a smaller id. Holding
                    // this lock from the first id drawn to the commit makes commit order id
                    // order, and each batch's ids consecutive. Parsing stays concurrent.
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(INGEST_LOCK)
                        .execute(&mut *tx)
                        .await?;
                }
                let last_id = if batch.logs.is_empty() {
                    None
                } else {
                    Some(InsertLogs::insert_logs(&mut tx, &batch.logs).await?)
                };
                // Ids in one transaction are consecutive (AUTOINCREMENT with one writer; the
                // ingest lock on PostgreSQL, drawn in row order), so the first follows from
                // the last.
                let first_id = last_id.map(|l| l - batch.logs.len() as i64 + 1);
                // One upsert per distinct artifact per batch: a scan repeats the same fingerprint
                // thousands of times, and the count is what matters.
                // Value: (first position in the batch, index of its log, first ts, last ts, count).
                type Agg<'a> = (usize, usize, &'a str, &'a str, i64);
                let mut agg: std::collections::HashMap<(&str, &str, &str), Agg<'_>> =
                    std::collections::HashMap::new();
                for (seq, (idx, b)) in batch.bounties.iter().enumerate() {
                    agg.entry((b.attacker_ip.as_str(), b.kind, b.value.as_str()))
                        .and_modify(|e| {
                            e.3 = b.ts.as_str();
                            e.4 += 1;
                        })
                        .or_insert((seq, *idx, b.ts.as_str(), b.ts.as_str(), 1));
                }
                let mut agg: Vec<_> = agg.into_iter().collect();
                // Deterministic order (first occurrence) so ids follow the journal.
                agg.sort_by_key(|(_, v)| v.0);
                for chunk in agg.chunks(ROWS_PER_STMT) {
                    let mut q = sqlx::query(AssertSqlSafe(UPSERT_BOUNTIES.sql(self.backend(), chunk.len())));
                    for ((ip, kind, value), (_, idx, first, last, n)) in chunk {
                        q = q
                            .bind(*ip)
                            .bind(*kind)
                            .bind(*value)
                            .bind(*first)
                            .bind(*last)
                            .bind(*n)
                            .bind(first_id.map(|f| f + *idx as i64));
                    }
                    q.execute(&mut *tx).await?;
                }
                let now = crate::timefmt::rfc3339_ns(crate::timefmt::unix_now_ns());
                for d in &batch.dead {
                    sqlx::query(
                        "INSERT INTO dead_letters (received_at, file, byte_offset, reason, raw) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&now)
                    .bind(&d.file)
                    .bind(d.byte_offset as i64)
                    .bind(&d.reason)
                    .bind(&d.raw)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(c) = &batch.cursor {
                    // A second ingester on the same database fails here instead of duplicating rows.
                    set_cursor!(tx, c);
                }
                if self.backend() == Backend::Postgres && !batch.logs.is_empty() {
                    // Delivered at commit, to every API instance listening (their streams).
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind(LOGS_CHANNEL)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(first_id)
            }
            .await;
            if r.is_err() {
                conn.close_on_drop();
            }
            r
        })
    }

    /// Streaming states of these IPs (those that have one).
    pub async fn load_behaviors(
        &self,
        ips: &[&str],
    ) -> Result<HashMap<String, String>, StoreError> {
        on_pool!(self, |pool| {
            let list = serde_json::to_string(ips).unwrap_or_else(|_| "[]".into());
            let rows = sqlx::query(
                match self.backend() {
                    Backend::Sqlite => "SELECT ip, state FROM attacker_behavior WHERE ip IN (SELECT value FROM json_each($1))",
                    Backend::Postgres => "SELECT ip, state FROM attacker_behavior WHERE ip IN (SELECT json_array_elements_text($1::json))",
                },
            )
            .bind(list)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Writes one profiler batch: profiles and states of the IPs it changed, campaigns,
    /// detections and the profiler cursor (compare-and-set), in one transaction.
    pub async fn commit_profiles(&self, c: &ProfileCommit) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            let r: Result<(), StoreError> = async {
                let now = crate::timefmt::rfc3339_ns(crate::timefmt::unix_now_ns());
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for chunk in c.rows.chunks(ROWS_PER_STMT) {
                    let mut q = sqlx::query(AssertSqlSafe(UPSERT_ATTACKERS.sql(self.backend(), chunk.len())));
                    for r in chunk {
                        q = q
                            .bind(&r.ip)
                            .bind(&r.first_seen)
                            .bind(&r.last_seen)
                            .bind(r.event_count)
                            .bind(&r.class)
                            .bind(r.risk_score)
                            .bind(r.campaign_id)
                            .bind(&r.summary)
                            .bind(&now);
                    }
                    q.execute(&mut *tx).await?;
                    let mut q = sqlx::query(AssertSqlSafe(UPSERT_BEHAVIOR.sql(self.backend(), chunk.len())));
                    for r in chunk {
                        q = q
                            .bind(&r.ip)
                            .bind(&r.state)
                            .bind(&r.campaign_key)
                            .bind(&now);
                    }
                    q.execute(&mut *tx).await?;
                }
                for (id, summary) in &c.campaigns {
                    sqlx::query(
                        "INSERT INTO campaigns (id, created_at, updated_at, summary) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at, summary = excluded.summary",
                    )
                    .bind(id)
                    .bind(&now)
                    .bind(&now)
                    .bind(summary)
                    .execute(&mut *tx)
                    .await?;
                }
                for id in &c.dropped_campaigns {
                    sqlx::query("DELETE FROM campaigns WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                for chunk in c.detections.chunks(ROWS_PER_STMT) {
                    let mut q = sqlx::query(AssertSqlSafe(INSERT_DETECTIONS.sql(self.backend(), chunk.len())));
                    for d in chunk {
                        q = q.bind(d.id).bind(&d.ts).bind(&d.ip).bind(&d.body);
                    }
                    q.execute(&mut *tx).await?;
                }
                for (k, v) in &c.state {
                    sqlx::query(
                        "INSERT INTO state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(k)
                    .bind(v)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(cursor) = &c.cursor {
                    set_cursor!(tx, cursor);
                }
                if self.backend() == Backend::Postgres && !c.detections.is_empty() {
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind(DETECTIONS_CHANNEL)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }
            .await;
            if r.is_err() {
                conn.close_on_drop();
            }
            r
        })
    }

    /// States of every source with a campaign key (the campaign index is rebuilt from them).
    pub async fn keyed_behaviors(&self) -> Result<Vec<(String, String)>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT ip, state FROM attacker_behavior WHERE campaign_key IS NOT NULL ORDER BY ip",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Every campaign: (id, summary JSON), by id.
    pub async fn campaigns(&self) -> Result<Vec<(i64, String)>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query("SELECT id, summary FROM campaigns ORDER BY id")
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// One campaign's summary JSON.
    pub async fn campaign(&self, id: i64) -> Result<Option<String>, StoreError> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT summary FROM campaigns WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    /// The highest detection id stored (0 when none).
    pub async fn last_detection_id(&self) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            #[cfg(test)]
            self.test_delay().await;
            Ok(sqlx::query("SELECT COALESCE(MAX(id), 0) FROM detections")
                .fetch_one(pool)
                .await?
                .get(0))
        })
    }

    /// Detections after `after_id`, oldest first, at most `limit`.
    pub async fn detections_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<DetectionRow>, StoreError> {
        self.detections_page(after_id, limit, None).await
    }

    /// Detections after `after_id`, oldest first, at most `limit`, optionally of one source.
    pub async fn detections_page(
        &self,
        after_id: i64,
        limit: i64,
        ip: Option<&str>,
    ) -> Result<Vec<DetectionRow>, StoreError> {
        on_pool!(self, |pool| {
            let sql = if ip.is_some() {
                "SELECT id, ts, ip, body FROM detections WHERE ip = $3 AND id > $1 ORDER BY id LIMIT $2"
            } else {
                "SELECT id, ts, ip, body FROM detections WHERE id > $1 ORDER BY id LIMIT $2"
            };
            let mut q = sqlx::query(sql).bind(after_id).bind(limit);
            if let Some(ip) = ip {
                q = q.bind(ip);
            }
            let rows = q.fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|r| DetectionRow {
                    id: r.get(0),
                    ts: r.get(1),
                    ip: r.get(2),
                    body: r.get(3),
                })
                .collect())
        })
    }

    /// The stored streaming state of one attacker (its profile is rendered from it).
    pub async fn attacker_state(&self, ip: &str) -> Result<Option<String>, StoreError> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT state FROM attacker_behavior WHERE ip = $1")
                .bind(ip)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    /// Every stored streaming state, by IP (tests: restart equivalence).
    pub async fn all_behaviors(&self) -> Result<HashMap<String, String>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query("SELECT ip, state FROM attacker_behavior")
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    pub async fn count_attackers(&self) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            Ok(sqlx::query("SELECT COUNT(*) FROM attackers")
                .fetch_one(pool)
                .await?
                .get(0))
        })
    }

    pub async fn count_logs(&self) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            Ok(sqlx::query("SELECT COUNT(*) FROM logs")
                .fetch_one(pool)
                .await?
                .get(0))
        })
    }

    pub async fn count_dead_letters(&self) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            Ok(sqlx::query("SELECT COUNT(*) FROM dead_letters")
                .fetch_one(pool)
                .await?
                .get(0))
        })
    }

    /// All dead letters, oldest first (tests, and the API later).
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        on_pool!(self, |pool| {
            let rows =
                sqlx::query("SELECT file, byte_offset, reason, raw FROM dead_letters ORDER BY id")
                    .fetch_all(pool)
                    .await?;
            Ok(rows
                .into_iter()
                .map(|r| DeadLetter {
                    file: r.get(0),
                    byte_offset: r.get::<i64, _>(1) as u64,
                    reason: r.get(2),
                    raw: r.get(3),
                })
                .collect())
        })
    }

    /// Logs after `after_id`, oldest first, at most `limit`, optionally of one attacker
    /// and/or one event type.
    pub async fn logs_page(
        &self,
        after_id: i64,
        limit: i64,
        attacker_ip: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<Vec<(i64, NewLog)>, StoreError> {
        on_pool!(self, |pool| {
            #[cfg(test)]
            self.test_delay().await;
            // Four fixed statements: `(? IS NULL OR ...)` would keep SQLite off the
            // (attacker_ip, id) index.
            let sql = match (attacker_ip.is_some(), event_type.is_some()) {
                (false, false) => "WHERE id > $1 ORDER BY id LIMIT $2",
                (true, false) => "WHERE attacker_ip = $3 AND id > $1 ORDER BY id LIMIT $2",
                (false, true) => "WHERE event_type = $3 AND id > $1 ORDER BY id LIMIT $2",
                (true, true) => {
                    "WHERE attacker_ip = $3 AND event_type = $4 AND id > $1 ORDER BY id LIMIT $2"
                }
            };
            // Only the parameters the statement names are bound, in number order.
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "SELECT {LOG_COLUMNS} FROM logs {sql}"
            )))
            .bind(after_id)
            .bind(limit);
            if let Some(ip) = attacker_ip {
                q = q.bind(ip);
            }
            if let Some(et) = event_type {
                q = q.bind(et);
            }
            let rows = q.fetch_all(pool).await?;
            Ok(rows.into_iter().map(log_row).collect())
        })
    }

    /// The highest log id (0 when empty).
    pub async fn last_log_id(&self) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            #[cfg(test)]
            self.test_delay().await;
            Ok(sqlx::query("SELECT COALESCE(MAX(id), 0) FROM logs")
                .fetch_one(pool)
                .await?
                .get(0))
        })
    }

    /// A page of attackers, in `sort` order (`risk`, `last_seen`, `first_seen` or
    /// `events`), and how many there are in all.
    pub async fn attackers_page(
        &self,
        sort: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AttackerRow>, i64), StoreError> {
        on_pool!(self, |pool| {
            let order = match sort {
                "last_seen" => "a.last_seen DESC, a.ip",
                "first_seen" => "a.first_seen DESC, a.ip",
                "events" => "a.event_count DESC, a.ip",
                _ => "a.risk_score DESC, a.ip",
            };
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT a.ip, a.summary, CASE WHEN a.summary IS NULL THEN b.state END \
                 FROM attackers a JOIN attacker_behavior b ON b.ip = a.ip \
                 ORDER BY {order} LIMIT $1 OFFSET $2"
            )))
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let total = self.count_attackers().await?;
            Ok((
                rows.into_iter()
                    .map(|r| AttackerRow {
                        ip: r.get(0),
                        summary: r.get(1),
                        state: r.get(2),
                    })
                    .collect(),
                total,
            ))
        })
    }

    /// Logs after `after_id`, oldest first, at most `limit`.
    pub async fn logs_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, NewLog)>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id, sensor \
                 FROM logs WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(log_row).collect())
        })
    }

    pub async fn bounties_for(&self, ip: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT kind, value, count FROM bounties WHERE attacker_ip = $1 ORDER BY id",
            )
            .bind(ip)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }
}
}
