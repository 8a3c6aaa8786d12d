//! Fleet coordination on a shared PostgreSQL: one analyst at a time, or one per shard
//! (session advisory locks, with standbys waiting on them), and commit notifications
//! (LISTEN/NOTIFY).

use std::time::Duration;

use sqlx::AssertSqlSafe;

use super::{
    engine::{Pool, Store},
    error::StoreError,
    shard::Shard,
};

/// The advisory-lock keys (PostgreSQL): one analyst at a time (with shards: the campaign
/// pass and the alert sinks), ingest commits in id order (see `commit_batch`), detections
/// committed in id order (see `commit_profiles`), and shard K's analyst at
/// `SHARD_LOCKS + K`. Arbitrary constants, the same in every decnet.
const ANALYST_LOCK: i64 = 0x6465_636e_6574_0001;
pub(super) const INGEST_LOCK: i64 = 0x6465_636e_6574_0002;
pub(super) const DETECTION_LOCK: i64 = 0x6465_636e_6574_0003;
const SHARD_LOCKS: i64 = 0x6465_636e_6574_1000;

/// The PostgreSQL channels: a batch of logs was committed; detections were committed;
/// the campaign pass put sources in campaigns (sharded analysts).
pub const LOGS_CHANNEL: &str = "decnet_logs";
pub const DETECTIONS_CHANNEL: &str = "decnet_detections";
pub const CAMPAIGNS_CHANNEL: &str = "decnet_campaigns";

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
    Campaigns,
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
        Ok(match n.channel() {
            DETECTIONS_CHANNEL => Change::Detections,
            CAMPAIGNS_CHANNEL => Change::Campaigns,
            _ => Change::Logs,
        })
    }
}

impl Store {
    /// Tries to become the fleet's analyst, waiting up to `wait` for the lock: on
    /// PostgreSQL, a session advisory lock held on a connection of its own for as long as
    /// the returned lock lives (a process that dies loses its connection, and with it the
    /// lock). A standby waiting here is granted the lock the moment the holder's session
    /// ends. SQLite serves one process: granted at once.
    pub(crate) async fn analyst_lock(
        &self,
        wait: Duration,
    ) -> Result<Option<AnalystLock>, StoreError> {
        self.advisory_lock(ANALYST_LOCK, wait).await
    }

    /// [`analyst_lock`](Self::analyst_lock) for the analyst of one shard: whoever holds it
    /// profiles the shard's sources. PostgreSQL only (SQLite has no shards).
    pub(crate) async fn shard_lock(
        &self,
        shard: Shard,
        wait: Duration,
    ) -> Result<Option<AnalystLock>, StoreError> {
        self.advisory_lock(SHARD_LOCKS + i64::from(shard.index), wait)
            .await
    }

    /// Whether another session is queued for `shard`'s lock (an analyst standing by with no
    /// shard, which the holder of several hands one to).
    pub(crate) async fn shard_wanted(&self, shard: Shard) -> Result<bool, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(false);
        };
        // A bigint advisory key sits in pg_locks as its high half (classid) and low half
        // (objid), with objsubid 1.
        let key = SHARD_LOCKS + i64::from(shard.index);
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid = ($1 >> 32)::oid AND objid = ($1 & 4294967295)::oid AND objsubid = 1)",
        )
        .bind(key)
        .fetch_one(pool)
        .await?)
    }

    async fn advisory_lock(
        &self,
        key: i64,
        wait: Duration,
    ) -> Result<Option<AnalystLock>, StoreError> {
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
            .bind(key)
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
            .listen_all([LOGS_CHANNEL, DETECTIONS_CHANNEL, CAMPAIGNS_CHANNEL])
            .await?;
        Ok(Some(Changes { listener }))
    }
}
