//! The reads behind the API, the stream's replay and the fleet relay: pages of logs,
//! attackers, campaigns and detections, and the counts tests and stats use.

use sqlx::{AssertSqlSafe, Row as _};

use super::{
    engine::{Pool, Store, on_reader, repository},
    error::StoreError,
    rows::{AttackerRow, DeadLetter, DetectionRow},
};
use crate::row::NewLog;

/// `SELECT id, ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id, sensor`.
pub(super) fn log_row<R: sqlx::Row>(r: R) -> (i64, NewLog)
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
pub(super) const LOG_COLUMNS: &str =
    "id, ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id, sensor";

// Every call runs inside a `db.<method>` span when developer tracing is on (see
// `telemetry::db_call`); the queries themselves know nothing about tracing.
repository! {
impl Store {
    /// Every campaign: (id, summary JSON), by id.
    pub async fn campaigns(&self) -> Result<Vec<(i64, String)>, StoreError> {
        on_reader!(self, |pool| {
            let rows = sqlx::query("SELECT id, summary FROM campaigns ORDER BY id")
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// One campaign's summary JSON.
    pub async fn campaign(&self, id: i64) -> Result<Option<String>, StoreError> {
        on_reader!(self, |pool| {
            let row = sqlx::query("SELECT summary FROM campaigns WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    /// The highest detection id stored (0 when none).
    pub async fn last_detection_id(&self) -> Result<i64, StoreError> {
        on_reader!(self, |pool| {
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
    pub(crate) async fn detections_page(
        &self,
        after_id: i64,
        limit: i64,
        ip: Option<&str>,
    ) -> Result<Vec<DetectionRow>, StoreError> {
        self.detections_from(after_id, false, limit, ip).await
    }

    /// Detections before `before_id`, newest first, at most `limit`, optionally of one
    /// source (a list read from the present backwards).
    pub(crate) async fn detections_before(
        &self,
        before_id: i64,
        limit: i64,
        ip: Option<&str>,
    ) -> Result<Vec<DetectionRow>, StoreError> {
        self.detections_from(before_id, true, limit, ip).await
    }

    /// Detections on one side of `id`: after it oldest first, or (`backwards`) before it
    /// newest first.
    async fn detections_from(
        &self,
        id: i64,
        backwards: bool,
        limit: i64,
        ip: Option<&str>,
    ) -> Result<Vec<DetectionRow>, StoreError> {
        on_reader!(self, |pool| {
            let sql = match (ip.is_some(), backwards) {
                (true, false) => "SELECT id, ts, ip, body FROM detections WHERE ip = $3 AND id > $1 ORDER BY id LIMIT $2",
                (false, false) => "SELECT id, ts, ip, body FROM detections WHERE id > $1 ORDER BY id LIMIT $2",
                (true, true) => "SELECT id, ts, ip, body FROM detections WHERE ip = $3 AND id < $1 ORDER BY id DESC LIMIT $2",
                (false, true) => "SELECT id, ts, ip, body FROM detections WHERE id < $1 ORDER BY id DESC LIMIT $2",
            };
            let mut q = sqlx::query(sql).bind(id).bind(limit);
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

    /// The services probed most since `since` (RFC 3339): (service, probes, distinct
    /// sources), most probed first. Only the sources' own probes count, not the decoys'
    /// answers or flow summaries. Reads the `logs_ts` index's range, so keep `since` recent.
    pub(crate) async fn top_services(
        &self,
        since: &str,
        limit: i64,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        on_reader!(self, |pool| {
            let rows = sqlx::query(
                "SELECT service, COUNT(*) AS n, COUNT(DISTINCT attacker_ip) FROM logs \
                 WHERE ts >= $1 AND event_type IN \
                 ('tcp_syn','tcp_probe','tcp_payload','tcp_segment','udp_probe','icmp_probe','ip_probe') \
                 GROUP BY service ORDER BY n DESC, service LIMIT $2",
            )
            .bind(since)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    /// The stored streaming state of one attacker (its profile is rendered from it).
    pub(crate) async fn attacker_state(&self, ip: &str) -> Result<Option<String>, StoreError> {
        on_reader!(self, |pool| {
            let row = sqlx::query("SELECT state FROM attacker_behavior WHERE ip = $1")
                .bind(ip)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    pub async fn count_attackers(&self) -> Result<i64, StoreError> {
        on_reader!(self, |pool| {
            Ok(sqlx::query("SELECT COUNT(*) FROM attackers")
                .fetch_one(pool)
                .await?
                .get(0))
        })
    }

    pub async fn count_logs(&self) -> Result<i64, StoreError> {
        on_reader!(self, |pool| {
            Ok(sqlx::query("SELECT COUNT(*) FROM logs")
                .fetch_one(pool)
                .await?
                .get(0))
        })
    }

    pub async fn count_dead_letters(&self) -> Result<i64, StoreError> {
        on_reader!(self, |pool| {
            Ok(sqlx::query("SELECT COUNT(*) FROM dead_letters")
                .fetch_one(pool)
                .await?
                .get(0))
        })
    }

    /// All dead letters, oldest first (tests, and the API later).
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        on_reader!(self, |pool| {
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
    pub(crate) async fn logs_page(
        &self,
        after_id: i64,
        limit: i64,
        attacker_ip: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<Vec<(i64, NewLog)>, StoreError> {
        on_reader!(self, |pool| {
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
    pub(crate) async fn last_log_id(&self) -> Result<i64, StoreError> {
        on_reader!(self, |pool| {
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
    pub(crate) async fn attackers_page(
        &self,
        sort: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AttackerRow>, i64), StoreError> {
        on_reader!(self, |pool| {
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

    /// Up to `limit` attackers riskiest first (risk, then address), after `after` (the
    /// previous page's last risk and address), each with its risk: a whole table read page
    /// by page without re-reading the pages before. With `states`, every row carries its
    /// behavior state (else only a row with no stored summary does).
    pub(crate) async fn attackers_by_risk(
        &self,
        after: Option<(i64, &str)>,
        limit: i64,
        states: bool,
    ) -> Result<Vec<(i64, AttackerRow)>, StoreError> {
        let (risk, ip) = after.unwrap_or((i64::MAX, ""));
        on_reader!(self, |pool| {
            let rows = sqlx::query(
                "SELECT a.ip, a.summary, CASE WHEN $1 OR a.summary IS NULL THEN b.state END, \
                 a.risk_score \
                 FROM attackers a JOIN attacker_behavior b ON b.ip = a.ip \
                 WHERE a.risk_score < $2 OR (a.risk_score = $2 AND a.ip > $3) \
                 ORDER BY a.risk_score DESC, a.ip LIMIT $4",
            )
            .bind(states)
            .bind(risk)
            .bind(ip)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    (
                        r.get(3),
                        AttackerRow {
                            ip: r.get(0),
                            summary: r.get(1),
                            state: r.get(2),
                        },
                    )
                })
                .collect())
        })
    }

    /// Sources with a stored risk of at least `min_risk` seen at or after `since` (RFC 3339),
    /// riskiest first, at most `limit`: (ip, state) for the feeds to render.
    pub(crate) async fn feed_candidates(
        &self,
        min_risk: i64,
        since: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        on_reader!(self, |pool| {
            let rows = sqlx::query(
                "SELECT a.ip, b.state FROM attackers a JOIN attacker_behavior b ON b.ip = a.ip \
                 WHERE a.risk_score >= $1 AND a.last_seen >= $2 \
                 ORDER BY a.risk_score DESC, a.ip LIMIT $3",
            )
            .bind(min_risk)
            .bind(since)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Logs after `after_id`, oldest first, at most `limit`.
    pub async fn logs_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, NewLog)>, StoreError> {
        on_reader!(self, |pool| {
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

    /// Logs of `sensor` after `after_id`, oldest first, at most `limit`.
    pub async fn sensor_logs_after(
        &self,
        sensor: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, NewLog)>, StoreError> {
        on_reader!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, ts, decky, service, event_type, attacker_ip, fields, trace_id, span_id, sensor \
                 FROM logs WHERE id > $1 AND sensor = $2 ORDER BY id LIMIT $3",
            )
            .bind(after_id)
            .bind(sensor)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(log_row).collect())
        })
    }

    /// Each attacker's bounty count, summed over its artifacts.
    #[cfg(feature = "testing")]
    pub async fn bounty_totals(&self) -> Result<Vec<(String, i64)>, StoreError> {
        on_reader!(self, |pool| {
            let rows = sqlx::query(
                "SELECT attacker_ip, CAST(SUM(count) AS BIGINT) FROM bounties GROUP BY attacker_ip",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    pub async fn bounties_for(&self, ip: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
        on_reader!(self, |pool| {
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
