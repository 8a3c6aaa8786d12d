//! The profiler's write path: per-source states and list rows, detections and the cursor in
//! one transaction, and the states it loads back.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row as _};

use super::{
    engine::{Backend, MultiRow, Pool, ROWS_PER_STMT, Store, on_pool, repository, set_cursor},
    error::StoreError,
    fleet::{CAMPAIGNS_CHANNEL, DETECTION_LOCK, DETECTIONS_CHANNEL},
    rows::{DetectionRow, ProfileCommit, ProfileRow},
};

/// Gives `detections` the ids from `first` on, in order, in their rows and bodies (the
/// body's `id`). A single analyst numbered them so already: then nothing changes.
fn renumber(detections: &mut [DetectionRow], first: i64) {
    if detections.first().is_some_and(|d| d.id == first) {
        return;
    }
    for (d, id) in detections.iter_mut().zip(first..) {
        d.id = id;
        if let Ok(mut body) = serde_json::from_str::<serde_json::Value>(&d.body) {
            body["id"] = id.into();
            d.body = body.to_string();
        }
    }
}

static INSERT_DETECTIONS: MultiRow =
    MultiRow::new("INSERT INTO detections (id, ts, ip, body)", 4, "");

static INSERT_MOVES: MultiRow =
    MultiRow::new("INSERT INTO campaign_moves (ip, campaign_id)", 2, "");

static UPSERT_ATTACKERS: MultiRow = MultiRow::new(
    "INSERT INTO attackers (ip, first_seen, last_seen, event_count, class, risk_score, campaign_id, summary, updated_at)",
    9,
    "ON CONFLICT (ip) DO UPDATE SET first_seen = excluded.first_seen, last_seen = excluded.last_seen, \
     event_count = excluded.event_count, class = excluded.class, risk_score = excluded.risk_score, \
     campaign_id = excluded.campaign_id, summary = excluded.summary, updated_at = excluded.updated_at",
);

static UPSERT_BEHAVIOR: MultiRow = MultiRow::new(
    "INSERT INTO attacker_behavior (ip, state, campaign_key, updated_at, match_facts)",
    5,
    "ON CONFLICT (ip) DO UPDATE SET state = excluded.state, campaign_key = excluded.campaign_key, \
     updated_at = excluded.updated_at, match_facts = excluded.match_facts",
);

// Every call runs inside a `db.<method>` span when developer tracing is on (see
// `telemetry::db_call`); the queries themselves know nothing about tracing.
repository! {
impl Store {
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

    /// Writes one profiler commit: the profiles and states of the IPs it changed (`rows`),
    /// campaigns, detections and the profiler cursor (compare-and-set), in one transaction.
    /// Rows are drawn from `rows` one statement's worth at a time: rendered all at once, a
    /// commit of 10,000 sources held about 25 MiB of JSON at its peak.
    ///
    /// On PostgreSQL the detections are committed in id order, as logs are: several shard
    /// analysts commit at once, and a reader that has seen id N must never see a lower one
    /// appear later. So they take their ids here, after the newest committed, under a lock
    /// held to the commit; `c.detections` says which they got.
    pub async fn commit_profiles(
        &self,
        c: &mut ProfileCommit,
        rows: &mut (dyn Iterator<Item = ProfileRow> + Send),
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        on_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            let r: Result<(), StoreError> = async {
                let now = crate::timefmt::rfc3339_ns(crate::timefmt::unix_now_ns());
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let mut chunk: Vec<ProfileRow> = Vec::with_capacity(ROWS_PER_STMT);
                loop {
                    chunk.clear();
                    chunk.extend((&mut *rows).take(ROWS_PER_STMT));
                    if chunk.is_empty() {
                        break;
                    }
                    // The rows are moved into the statements: a bound String is taken as
                    // it is, a borrowed one copied (a rendered state is kilobytes).
                    let n = chunk.len();
                    let mut attackers = sqlx::query(AssertSqlSafe(UPSERT_ATTACKERS.sql(self.backend(), n)));
                    let mut behavior = sqlx::query(AssertSqlSafe(UPSERT_BEHAVIOR.sql(self.backend(), n)));
                    for r in chunk.drain(..) {
                        attackers = attackers
                            .bind(r.ip.clone())
                            .bind(r.first_seen)
                            .bind(r.last_seen)
                            .bind(r.event_count)
                            .bind(r.class)
                            .bind(r.risk_score)
                            .bind(r.campaign_id)
                            .bind(r.summary)
                            .bind(&now);
                        behavior = behavior
                            .bind(r.ip)
                            .bind(r.state)
                            .bind(r.campaign_key)
                            .bind(&now)
                            .bind(r.match_facts);
                    }
                    attackers.execute(&mut *tx).await?;
                    behavior.execute(&mut *tx).await?;
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
                if self.backend() == Backend::Postgres && !c.detections.is_empty() {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(DETECTION_LOCK)
                        .execute(&mut *tx)
                        .await?;
                    let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0)::BIGINT FROM detections")
                        .fetch_one(&mut *tx)
                        .await?;
                    renumber(&mut c.detections, newest + 1);
                }
                for chunk in c.detections.chunks(ROWS_PER_STMT) {
                    let mut q = sqlx::query(AssertSqlSafe(INSERT_DETECTIONS.sql(self.backend(), chunk.len())));
                    for d in chunk {
                        q = q.bind(d.id).bind(&d.ts).bind(&d.ip).bind(&d.body);
                    }
                    q.execute(&mut *tx).await?;
                }
                for chunk in c.moves.chunks(ROWS_PER_STMT) {
                    let mut q = sqlx::query(AssertSqlSafe(INSERT_MOVES.sql(self.backend(), chunk.len())));
                    for (ip, id) in chunk {
                        q = q.bind(ip).bind(id);
                    }
                    q.execute(&mut *tx).await?;
                }
                if let Some(seq) = c.moves_applied {
                    sqlx::query("DELETE FROM campaign_moves WHERE seq <= $1")
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
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
                if !c.moves.is_empty() {
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind(CAMPAIGNS_CHANNEL)
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
    pub(crate) async fn keyed_behaviors(&self) -> Result<Vec<(String, String)>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT ip, state FROM attacker_behavior WHERE campaign_key IS NOT NULL ORDER BY ip",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Every stored streaming state, by IP (tests: restart equivalence).
    #[cfg(feature = "testing")]
    pub async fn all_behaviors(&self) -> Result<HashMap<String, String>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query("SELECT ip, state FROM attacker_behavior")
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}
}
