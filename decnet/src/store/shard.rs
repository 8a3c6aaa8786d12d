//! Sharded analysts' reads (PostgreSQL, `analyst_shards` above 1): a shard's rows, the
//! sources the campaign pass looks at, and the campaign moves the shards apply. Their
//! writes go through the profiler's commit (`profile`).

use sqlx::{AssertSqlSafe, Row as _};

use super::{
    engine::{Pool, Store, repository},
    error::StoreError,
    read::{LOG_COLUMNS, log_row},
};
use crate::row::NewLog;

/// Shard `index` of `count`: the sources whose address PostgreSQL's `hashtext` puts there,
/// so the database itself picks a shard's rows. Every analyst of a fleet must agree on
/// `count` (the profile layout, kept in `state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A row's shard, `$2` of `$3` counting from 0 (hashtext is an int4; its sign bit cleared).
const IN_SHARD: &str = "(hashtext(attacker_ip) & 2147483647) % $3 = $2";
/// The same for `campaign_moves.ip`.
const MOVE_IN_SHARD: &str = "(hashtext(ip) & 2147483647) % $3 = $2";

impl Shard {
    /// The `state` key of this shard's profiler cursor: the last log id it has folded, of
    /// its own rows, and of the others' it has passed over.
    pub fn cursor_key(self) -> String {
        format!("attacker_worker_cursor.{}of{}", self.index, self.count)
    }

    /// The `state` key of the last campaign move this shard applied.
    pub fn moves_key(self) -> String {
        format!("campaign_moves_cursor.{}of{}", self.index, self.count)
    }

    fn binds(self) -> (i32, i32) {
        (self.index as i32, self.count as i32)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {}", self.index, self.count)
    }
}

fn postgres(store: &Store) -> Result<&sqlx::PgPool, StoreError> {
    match &store.pool {
        Pool::Postgres(p) => Ok(p),
        Pool::Sqlite(_) => Err(StoreError::Task(
            "analyst shards need a PostgreSQL store".into(),
        )),
    }
}

// Every call runs inside a `db.<method>` span when developer tracing is on (see
// `telemetry::db_call`); the queries themselves know nothing about tracing.
repository! {
impl Store {
    /// `shard`'s logs after `after_id`, oldest first, at most `limit`, from a window of
    /// the next `limit x shards` ids; the id through which the shard has nothing more (the
    /// last row's when `limit` were returned, else the window's end or the newest log id
    /// committed, whichever is lower: ingest commits in id order, so none can appear below
    /// it later); and whether more ids follow that one.
    ///
    /// The window is what keeps this a short walk of the id index: PostgreSQL cannot
    /// estimate the shard filter (it assumes 0.5 % of rows match), so with only `id > N`,
    /// or with the whole backlog's range, it planned to read and sort every row after the
    /// cursor on each call (a shard's reads took 7-12x an unsharded analyst's in bench
    /// fleet).
    pub async fn shard_logs_after(
        &self,
        shard: Shard,
        after_id: i64,
        limit: i64,
    ) -> Result<(Vec<(i64, NewLog)>, i64, bool), StoreError> {
        let pool = postgres(self)?;
        let top: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0)::BIGINT FROM logs")
            .fetch_one(pool)
            .await?;
        let (index, count) = shard.binds();
        let end = after_id.saturating_add(limit.saturating_mul(i64::from(count)));
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LOG_COLUMNS} FROM logs WHERE id > $1 AND id <= $4 AND {IN_SHARD} \
             ORDER BY id LIMIT $5"
        )))
        .bind(after_id)
        .bind(index)
        .bind(count)
        .bind(end)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        let rows: Vec<(i64, NewLog)> = rows.into_iter().map(log_row).collect();
        let last = rows.last().map_or(after_id, |(id, _)| *id);
        // A row past `top` (committed since it was read) is committed with all before it.
        let through = if rows.len() as i64 == limit {
            last
        } else {
            end.min(top).max(last)
        };
        Ok((rows, through, through < top))
    }

    /// Campaign moves in (`after_seq`, `through_seq`] of `shard`'s sources (every shard's:
    /// None), in order, at most `limit`: (seq, ip, campaign id).
    pub async fn campaign_moves(
        &self,
        shard: Option<Shard>,
        after_seq: i64,
        through_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        let pool = postgres(self)?;
        let (index, count) = shard.map_or((0, 1), Shard::binds);
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, ip, campaign_id FROM campaign_moves WHERE seq > $1 AND seq <= $5 \
             AND {MOVE_IN_SHARD} ORDER BY seq LIMIT $4"
        )))
        .bind(after_seq)
        .bind(index)
        .bind(count)
        .bind(limit)
        .bind(through_seq)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// The newest campaign move's seq (0: none). Only the campaign pass writes moves, one
    /// transaction at a time, so every move up to it is committed: a shard that has
    /// applied its own up to there has seen all of them.
    pub async fn newest_move(&self) -> Result<i64, StoreError> {
        let pool = postgres(self)?;
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM campaign_moves")
                .fetch_one(pool)
                .await?,
        )
    }

    /// The sources with logs in (`after_id`, `through`], by address, each with its
    /// campaign key and what matching reads of its state (`match_facts`) when it has both
    /// (None: no key or no port yet, or no state).
    pub async fn sources_between(
        &self,
        after_id: i64,
        through: i64,
    ) -> Result<Vec<(String, Option<(String, String)>)>, StoreError> {
        let pool = postgres(self)?;
        let rows = sqlx::query(
            "SELECT l.ip, b.campaign_key, b.match_facts FROM \
             (SELECT DISTINCT attacker_ip AS ip FROM logs WHERE id > $1 AND id <= $2) l \
             LEFT JOIN attacker_behavior b ON b.ip = l.ip AND b.campaign_key IS NOT NULL \
             AND b.match_facts IS NOT NULL ORDER BY l.ip",
        )
        .bind(after_id)
        .bind(through)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let keyed = match (r.get::<Option<String>, _>(1), r.get(2)) {
                    (Some(key), Some(facts)) => Some((key, facts)),
                    _ => None,
                };
                (r.get(0), keyed)
            })
            .collect())
    }
}
}
