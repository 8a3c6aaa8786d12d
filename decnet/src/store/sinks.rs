//! The alert sinks' cursors, re-arm windows and open digests: loaded when a sink starts,
//! committed together after each delivery.

use sqlx::{AssertSqlSafe, Row as _};

use super::{
    engine::{MultiRow, Pool, ROWS_PER_STMT, Store, on_pool, repository, set_cursor},
    error::StoreError,
    rows::{SinkCommit, SinkSaved, SinkWindow},
};

/// The `state` key of a sink's cursor.
pub fn sink_cursor_key(sink: &str) -> String {
    format!("sink:{sink}:cursor")
}

/// The `state` key of a sink's open digest for `rule`.
pub fn sink_digest_key(sink: &str, rule: &str) -> String {
    format!("sink:{sink}:digest:{rule}")
}

static UPSERT_WINDOWS: MultiRow = MultiRow::new(
    "INSERT INTO sink_windows (sink, rule, ip, last_alert_ns, folded, folded_changes)",
    6,
    "ON CONFLICT (sink, rule, ip) DO UPDATE SET last_alert_ns = excluded.last_alert_ns, \
     folded = excluded.folded, folded_changes = excluded.folded_changes",
);

// Every call runs inside a `db.<method>` span when developer tracing is on (see
// `telemetry::db_call`); the queries themselves know nothing about tracing.
repository! {
impl Store {
    /// What `sink` saved: its cursor, re-arm windows and open digests.
    pub async fn load_sink(&self, sink: &str) -> Result<SinkSaved, StoreError> {
        let cursor = self.get_state_json::<i64>(&sink_cursor_key(sink)).await?;
        on_pool!(self, |pool| {
            let windows = sqlx::query(
                "SELECT rule, ip, last_alert_ns, folded, folded_changes FROM sink_windows WHERE sink = $1",
            )
            .bind(sink)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| SinkWindow {
                rule: r.get(0),
                ip: r.get(1),
                last_alert_ns: r.get(2),
                folded: r.get(3),
                folded_changes: r.get(4),
            })
            .collect();
            let prefix = sink_digest_key(sink, "");
            // substr, not LIKE: a sink's name may hold `_`, LIKE's wildcard.
            let digests = sqlx::query(
                "SELECT key, value FROM state WHERE substr(key, 1, $2) = $1 ORDER BY key",
            )
            .bind(&prefix)
            .bind(prefix.len() as i32)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                let key: String = r.get(0);
                (key[prefix.len()..].to_owned(), r.get(1))
            })
            .collect();
            Ok(SinkSaved {
                cursor,
                windows,
                digests,
            })
        })
    }

    /// Commits a sink's progress in one transaction; the cursor is a compare-and-set, so
    /// of two processes delivering for one sink only one moves it
    /// ([`StoreError::CursorMoved`] for the other).
    pub async fn commit_sink(&self, sink: &str, c: &SinkCommit) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        on_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            let r: Result<(), StoreError> = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                // One statement per 64 windows: a busy sink changes one window per alert,
                // and one statement each held the write lock the ingester waits for.
                for chunk in c.windows.chunks(ROWS_PER_STMT) {
                    let mut q = sqlx::query(AssertSqlSafe(
                        UPSERT_WINDOWS.sql(self.backend(), chunk.len()),
                    ));
                    for w in chunk {
                        q = q
                            .bind(sink)
                            .bind(&w.rule)
                            .bind(&w.ip)
                            .bind(w.last_alert_ns)
                            .bind(w.folded)
                            .bind(&w.folded_changes);
                    }
                    q.execute(&mut *tx).await?;
                }
                for (rule, digest) in &c.digests {
                    let key = sink_digest_key(sink, rule);
                    match digest {
                        Some(v) => sqlx::query(
                            "INSERT INTO state (key, value) VALUES ($1, $2) \
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        )
                        .bind(&key)
                        .bind(v)
                        .execute(&mut *tx)
                        .await?,
                        None => sqlx::query("DELETE FROM state WHERE key = $1")
                            .bind(&key)
                            .execute(&mut *tx)
                            .await?,
                    };
                }
                if let Some(cursor) = &c.cursor {
                    set_cursor!(tx, cursor);
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
}
}
