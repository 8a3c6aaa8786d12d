//! The store: SQLite through sqlx (WAL, migrations embedded). [`Store`] owns every query;
//! no SQL lives outside this module.

use std::{collections::HashMap, path::Path, str::FromStr as _, sync::OnceLock, time::Duration};

use crate::telemetry::lite::LiteSpan;
use sqlx::{
    AssertSqlSafe, Row as _, SqlitePool,
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

/// A journal record ready to insert.
#[derive(Clone, Debug, PartialEq)]
pub struct NewLog {
    pub ts: String,
    pub decky: String,
    pub service: String,
    pub event_type: String,
    pub attacker_ip: String,
    /// The `fields` object as JSON text.
    pub fields: String,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
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
#[derive(Debug, Default)]
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

#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// Unit tests slow the queries the stream starts with, to prove it answers first.
    #[cfg(test)]
    pub(crate) delay: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Rows per multi-row statement: fewer statements per batch is most of SQLite's speed here.
const ROWS_PER_STMT: usize = 64;

/// One multi-row statement shape: `head VALUES (?,..),(?,..) tail`.
struct MultiRow {
    head: &'static str,
    cols: usize,
    tail: &'static str,
    built: OnceLock<Vec<String>>,
}

impl MultiRow {
    const fn new(head: &'static str, cols: usize, tail: &'static str) -> Self {
        Self {
            head,
            cols,
            tail,
            built: OnceLock::new(),
        }
    }

    /// The statement for `n` rows (1..=ROWS_PER_STMT), built once per size.
    fn sql(&self, n: usize) -> &str {
        let all = self.built.get_or_init(|| {
            let row = format!("({})", vec!["?"; self.cols].join(","));
            (0..=ROWS_PER_STMT)
                .map(|k| {
                    format!(
                        "{} VALUES {} {}",
                        self.head,
                        vec![row.as_str(); k.max(1)].join(","),
                        self.tail
                    )
                })
                .collect()
        });
        &all[n.clamp(1, ROWS_PER_STMT)]
    }
}

static INSERT_LOGS: MultiRow = MultiRow::new(
    "INSERT INTO logs (ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id)",
    8,
    "",
);

static UPSERT_BOUNTIES: MultiRow = MultiRow::new(
    "INSERT INTO bounties (attacker_ip, kind, value, first_seen, last_seen, count, first_log_id)",
    7,
    "ON CONFLICT (attacker_ip, kind, value) DO UPDATE SET \
     last_seen = excluded.last_seen, count = count + excluded.count",
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

/// Compare-and-set of a state cursor inside a transaction: it must still hold `prev` (or be
/// absent when `prev` is None), else the transaction is abandoned with `CursorMoved`, so two
/// workers on one database can never both advance it.
async fn set_cursor(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    c: &CursorUpdate,
) -> Result<(), StoreError> {
    let changed = match &c.prev {
        Some(prev) => sqlx::query("UPDATE state SET value = ? WHERE key = ? AND value = ?")
            .bind(&c.value)
            .bind(&c.key)
            .bind(prev)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        None => {
            sqlx::query("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
                .bind(&c.key)
                .bind(&c.value)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        }
    };
    if changed == 0 {
        // Dropping the transaction rolls it back.
        return Err(StoreError::CursorMoved(c.key.clone()));
    }
    Ok(())
}

/// `SELECT id, ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id`.
fn log_row(r: sqlx::sqlite::SqliteRow) -> (i64, NewLog) {
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
        },
    )
}

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
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store {
            pool,
            #[cfg(test)]
            delay: Default::default(),
        })
    }

    /// Checkpoints the WAL every `every` (PASSIVE: never waits for readers or writers),
    /// so commits do not pay for it. Runs until the task is dropped or the store closed.
    pub async fn checkpoint_loop(self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if self.pool.is_closed() {
                return;
            }
            if let Err(e) = self.checkpoint().await {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    }

    /// One passive WAL checkpoint (copies what no reader needs back into the database).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_all(&self.pool)
            .await?;
        Ok(())
    }

    #[cfg(test)]
    async fn test_delay(&self) {
        let ms = self.delay.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Closes every connection (waits for those in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// An in-memory database (tests).
    pub async fn open_memory() -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store {
            pool,
            #[cfg(test)]
            delay: Default::default(),
        })
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
        let row = sqlx::query("SELECT value FROM state WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
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
        let mut conn = self.pool.acquire().await?;
        let r: Result<Option<i64>, StoreError> = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let mut first_id: Option<i64> = None;
            for chunk in batch.logs.chunks(ROWS_PER_STMT) {
                let mut q = sqlx::query(AssertSqlSafe(INSERT_LOGS.sql(chunk.len())));
                for l in chunk {
                    q = q
                        .bind(&l.ts)
                        .bind(&l.decky)
                        .bind(&l.service)
                        .bind(&l.event_type)
                        .bind(&l.attacker_ip)
                        .bind(&l.fields)
                        .bind(&l.trace_id)
                        .bind(&l.span_id);
                }
                let res = q.execute(&mut *tx).await?;
                // Ids in one transaction are consecutive (AUTOINCREMENT, single writer).
                let last_id = res.last_insert_rowid();
                if first_id.is_none() {
                    first_id = Some(last_id - chunk.len() as i64 + 1);
                }
            }
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
                let mut q = sqlx::query(AssertSqlSafe(UPSERT_BOUNTIES.sql(chunk.len())));
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
                    "INSERT INTO dead_letters (received_at, file, byte_offset, reason, raw) VALUES (?, ?, ?, ?, ?)",
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
                set_cursor(&mut tx, c).await?;
            }
            tx.commit().await?;
            Ok(first_id)
        }
        .await;
        if r.is_err() {
            conn.close_on_drop();
        }
        r
    }

    /// Streaming states of these IPs (those that have one).
    pub async fn load_behaviors(
        &self,
        ips: &[&str],
    ) -> Result<HashMap<String, String>, StoreError> {
        let list = serde_json::to_string(ips).unwrap_or_else(|_| "[]".into());
        let rows = sqlx::query(
            "SELECT ip, state FROM attacker_behavior WHERE ip IN (SELECT value FROM json_each(?))",
        )
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Writes one profiler batch: profiles and states of the IPs it changed, campaigns,
    /// detections and the profiler cursor (compare-and-set), in one transaction.
    pub async fn commit_profiles(&self, c: &ProfileCommit) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let r: Result<(), StoreError> = async {
            let now = crate::timefmt::rfc3339_ns(crate::timefmt::unix_now_ns());
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            for chunk in c.rows.chunks(ROWS_PER_STMT) {
                let mut q = sqlx::query(AssertSqlSafe(UPSERT_ATTACKERS.sql(chunk.len())));
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
                let mut q = sqlx::query(AssertSqlSafe(UPSERT_BEHAVIOR.sql(chunk.len())));
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
                    "INSERT INTO campaigns (id, created_at, updated_at, summary) VALUES (?, ?, ?, ?) \
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
                sqlx::query("DELETE FROM campaigns WHERE id = ?")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            for chunk in c.detections.chunks(ROWS_PER_STMT) {
                let mut q = sqlx::query(AssertSqlSafe(INSERT_DETECTIONS.sql(chunk.len())));
                for d in chunk {
                    q = q.bind(d.id).bind(&d.ts).bind(&d.ip).bind(&d.body);
                }
                q.execute(&mut *tx).await?;
            }
            for (k, v) in &c.state {
                sqlx::query(
                    "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(cursor) = &c.cursor {
                set_cursor(&mut tx, cursor).await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        if r.is_err() {
            conn.close_on_drop();
        }
        r
    }

    /// States of every source with a campaign key (the campaign index is rebuilt from them).
    pub async fn keyed_behaviors(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT ip, state FROM attacker_behavior WHERE campaign_key IS NOT NULL ORDER BY ip",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Every campaign: (id, summary JSON), by id.
    pub async fn campaigns(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, summary FROM campaigns ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// One campaign's summary JSON.
    pub async fn campaign(&self, id: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT summary FROM campaigns WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The highest detection id stored (0 when none).
    pub async fn last_detection_id(&self) -> Result<i64, StoreError> {
        #[cfg(test)]
        self.test_delay().await;
        Ok(sqlx::query("SELECT COALESCE(MAX(id), 0) FROM detections")
            .fetch_one(&self.pool)
            .await?
            .get(0))
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
        let sql = if ip.is_some() {
            "SELECT id, ts, ip, body FROM detections WHERE ip = ?3 AND id > ?1 ORDER BY id LIMIT ?2"
        } else {
            "SELECT id, ts, ip, body FROM detections WHERE id > ?1 ORDER BY id LIMIT ?2"
        };
        let mut q = sqlx::query(sql).bind(after_id).bind(limit);
        if let Some(ip) = ip {
            q = q.bind(ip);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| DetectionRow {
                id: r.get(0),
                ts: r.get(1),
                ip: r.get(2),
                body: r.get(3),
            })
            .collect())
    }

    /// The stored streaming state of one attacker (its profile is rendered from it).
    pub async fn attacker_state(&self, ip: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state FROM attacker_behavior WHERE ip = ?")
            .bind(ip)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every stored streaming state, by IP (tests: restart equivalence).
    pub async fn all_behaviors(&self) -> Result<HashMap<String, String>, StoreError> {
        let rows = sqlx::query("SELECT ip, state FROM attacker_behavior")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn count_attackers(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM attackers")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    pub async fn count_logs(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM logs")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    pub async fn count_dead_letters(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    /// All dead letters, oldest first (tests, and the API later).
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows =
            sqlx::query("SELECT file, byte_offset, reason, raw FROM dead_letters ORDER BY id")
                .fetch_all(&self.pool)
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
        #[cfg(test)]
        self.test_delay().await;
        // Four fixed statements: `(? IS NULL OR ...)` would keep SQLite off the
        // (attacker_ip, id) index.
        let sql = match (attacker_ip.is_some(), event_type.is_some()) {
            (false, false) => "WHERE id > ?1 ORDER BY id LIMIT ?2",
            (true, false) => "WHERE attacker_ip = ?3 AND id > ?1 ORDER BY id LIMIT ?2",
            (false, true) => "WHERE event_type = ?3 AND id > ?1 ORDER BY id LIMIT ?2",
            (true, true) => {
                "WHERE attacker_ip = ?3 AND event_type = ?4 AND id > ?1 ORDER BY id LIMIT ?2"
            }
        };
        // Only the parameters the statement names are bound, in number order.
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id FROM logs {sql}"
        )))
        .bind(after_id)
        .bind(limit);
        if let Some(ip) = attacker_ip {
            q = q.bind(ip);
        }
        if let Some(et) = event_type {
            q = q.bind(et);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(log_row).collect())
    }

    /// The highest log id (0 when empty).
    pub async fn last_log_id(&self) -> Result<i64, StoreError> {
        #[cfg(test)]
        self.test_delay().await;
        Ok(sqlx::query("SELECT COALESCE(MAX(id), 0) FROM logs")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    /// A page of attackers, in `sort` order (`risk`, `last_seen`, `first_seen` or
    /// `events`), and how many there are in all.
    pub async fn attackers_page(
        &self,
        sort: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AttackerRow>, i64), StoreError> {
        let order = match sort {
            "last_seen" => "a.last_seen DESC, a.ip",
            "first_seen" => "a.first_seen DESC, a.ip",
            "events" => "a.event_count DESC, a.ip",
            _ => "a.risk_score DESC, a.ip",
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT a.ip, a.summary, CASE WHEN a.summary IS NULL THEN b.state END \
             FROM attackers a JOIN attacker_behavior b ON b.ip = a.ip \
             ORDER BY {order} LIMIT ? OFFSET ?"
        )))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
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
    }

    /// Logs after `after_id`, oldest first, at most `limit`.
    pub async fn logs_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, NewLog)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id \
             FROM logs WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(log_row).collect())
    }

    pub async fn bounties_for(&self, ip: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, value, count FROM bounties WHERE attacker_ip = ? ORDER BY id",
        )
        .bind(ip)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}
}
