//! Retention's queries: deleting old rows in small batches, never past what the profiler
//! and the alert sinks have read, and measuring (and on SQLite shrinking) the database.

use sqlx::Row as _;

use super::{
    engine::{Backend, Pool, Store, on_pool, repository},
    error::StoreError,
};

/// The `state` keys of the highest log and detection id retention deleted: a stream client
/// resuming at or below one may have missed rows, and is told so.
pub const PRUNED_LOGS_KEY: &str = "prune:logs_through";
pub const PRUNED_DETECTIONS_KEY: &str = "prune:detections_through";

/// Rows one batch deleted, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub logs: u64,
    pub bounties: u64,
    pub detections: u64,
    pub dead_letters: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.logs + self.bounties + self.detections + self.dead_letters
    }
}

/// How far pruning may reach: log rows up to the profiler's cursor, detections up to the
/// lowest sink cursor and below the newest detection (the profiler numbers its next
/// detection after the newest stored one; deleting that one would reuse ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub max_log_id: i64,
    pub max_detection_id: i64,
}

/// The SQLite file: bytes its rows take (pages in use), and its size on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbSize {
    pub used: u64,
    pub file: u64,
}

/// Deletes the rows `select_ids` picks from `table` inside `$tx`, returning their ids.
macro_rules! delete_ids {
    ($tx:expr, $table:literal, $where_order:literal, $($bind:expr),*) => {{
        let ids: Vec<i64> = sqlx::query(concat!(
            "DELETE FROM ", $table, " WHERE id IN (SELECT id FROM ", $table, " WHERE ",
            $where_order, ") RETURNING id"
        ))
        $(.bind($bind))*
        .fetch_all(&mut *$tx)
        .await?
        .into_iter()
        .map(|r| r.get::<i64, _>(0))
        .collect();
        ids
    }};
}

/// Raises the `state` value `key` to `id` inside `$tx` (values are decimal ids).
macro_rules! raise_state {
    ($tx:expr, $key:expr, $id:expr) => {{
        let old: Option<String> = sqlx::query("SELECT value FROM state WHERE key = $1")
            .bind($key)
            .fetch_optional(&mut *$tx)
            .await?
            .map(|r| r.get(0));
        let old = old.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        if $id > old {
            sqlx::query(
                "INSERT INTO state (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind($key)
            .bind($id.to_string())
            .execute(&mut *$tx)
            .await?;
        }
    }};
}

repository! {
impl Store {
    /// One batch by age: up to `limit` rows of each table older than `cutoff` (RFC 3339,
    /// compared with the rows' own times as written), within `reach`, in one transaction.
    pub async fn prune_older(&self, cutoff: &str, reach: Reach, limit: i64) -> Result<Pruned, StoreError> {
        let _turn = self.write_turn().await;
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let logs = delete_ids!(tx, "logs", "ts < $1 AND id <= $2 ORDER BY ts LIMIT $3",
                cutoff, reach.max_log_id, limit);
            let detections = delete_ids!(tx, "detections", "ts < $1 AND id <= $2 ORDER BY ts LIMIT $3",
                cutoff, reach.max_detection_id, limit);
            let bounties = delete_ids!(tx, "bounties", "last_seen < $1 ORDER BY last_seen LIMIT $2",
                cutoff, limit);
            let dead = delete_ids!(tx, "dead_letters", "received_at < $1 ORDER BY received_at LIMIT $2",
                cutoff, limit);
            if let Some(id) = logs.iter().max() {
                raise_state!(tx, PRUNED_LOGS_KEY, *id);
            }
            if let Some(id) = detections.iter().max() {
                raise_state!(tx, PRUNED_DETECTIONS_KEY, *id);
            }
            tx.commit().await?;
            Ok(Pruned {
                logs: logs.len() as u64,
                bounties: bounties.len() as u64,
                detections: detections.len() as u64,
                dead_letters: dead.len() as u64,
            })
        })
    }

    /// One batch for the size cap: up to `limit` of the oldest rows of the first table
    /// that has any within `reach`: logs (by far the most), then detections, dead letters
    /// and bounties.
    pub async fn prune_oldest(&self, reach: Reach, limit: i64) -> Result<Pruned, StoreError> {
        let _turn = self.write_turn().await;
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut out = Pruned::default();
            let logs = delete_ids!(tx, "logs", "id <= $1 ORDER BY id LIMIT $2", reach.max_log_id, limit);
            if let Some(id) = logs.iter().max() {
                raise_state!(tx, PRUNED_LOGS_KEY, *id);
                out.logs = logs.len() as u64;
            } else {
                let dets = delete_ids!(tx, "detections", "id <= $1 ORDER BY id LIMIT $2",
                    reach.max_detection_id, limit);
                if let Some(id) = dets.iter().max() {
                    raise_state!(tx, PRUNED_DETECTIONS_KEY, *id);
                    out.detections = dets.len() as u64;
                } else {
                    out.dead_letters = delete_ids!(tx, "dead_letters", "true ORDER BY id LIMIT $1", limit).len() as u64;
                    if out.dead_letters == 0 {
                        out.bounties = delete_ids!(tx, "bounties", "true ORDER BY last_seen LIMIT $1", limit).len() as u64;
                    }
                }
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    /// The SQLite file's pages in use and its size (None on PostgreSQL, whose server
    /// bounds its own storage).
    pub async fn db_size(&self) -> Result<Option<DbSize>, StoreError> {
        match &self.pool {
            Pool::Postgres(_) => Ok(None),
            Pool::Sqlite(pool) => {
                let r = sqlx::query(
                    "SELECT page_count, freelist_count, page_size \
                     FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
                )
                .fetch_one(pool)
                .await?;
                let (pages, free, size): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
                Ok(Some(DbSize {
                    used: ((pages - free).max(0) * size) as u64,
                    file: (pages.max(0) * size) as u64,
                }))
            }
        }
    }

    /// Whether freed pages can go back to the file system (SQLite's incremental
    /// auto-vacuum, set when the file was created; an older file reuses them instead).
    pub async fn can_shrink(&self) -> Result<bool, StoreError> {
        match &self.pool {
            Pool::Postgres(_) => Ok(false),
            Pool::Sqlite(pool) => {
                let mode: i64 = sqlx::query("PRAGMA auto_vacuum").fetch_one(pool).await?.get(0);
                Ok(mode == 2)
            }
        }
    }

    /// Gives up to 2,048 free pages (8 MiB of 4 KiB pages: one call holds the write lock
    /// for milliseconds) back to the file system (SQLite with incremental auto-vacuum;
    /// otherwise nothing).
    pub async fn reclaim(&self) -> Result<(), StoreError> {
        if let Pool::Sqlite(pool) = &self.pool {
            let _turn = self.write_turn().await;
            sqlx::query("PRAGMA incremental_vacuum(2048)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// The time of the oldest log row kept (by its `ts`), if any.
    pub async fn oldest_log_ts(&self) -> Result<Option<String>, StoreError> {
        on_pool!(self, |pool| {
            Ok(sqlx::query("SELECT MIN(ts) FROM logs")
                .fetch_one(pool)
                .await?
                .get::<Option<String>, _>(0))
        })
    }

    /// The highest log and detection id retention has deleted (0: none).
    pub async fn pruned_through(&self) -> Result<(i64, i64), StoreError> {
        let logs = self.get_state_json::<i64>(PRUNED_LOGS_KEY).await?.unwrap_or(0);
        let dets = self.get_state_json::<i64>(PRUNED_DETECTIONS_KEY).await?.unwrap_or(0);
        Ok((logs, dets))
    }
}
}

impl Store {
    /// Whether this store's size can be capped (SQLite).
    pub fn has_size(&self) -> bool {
        self.backend() == Backend::Sqlite
    }
}
