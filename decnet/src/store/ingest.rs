//! The ingester's write path: a batch of rows, bounties, dead letters and the cursor in one
//! transaction, with the fastest insert each engine has: on SQLite its own writer
//! (`ingest_sqlite`), on PostgreSQL COPY through sqlx.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, Row as _};

use super::{
    engine::{MultiRow, Pool, ROWS_PER_STMT, Store, repository, set_cursor},
    error::StoreError,
    fleet::{INGEST_LOCK, LOGS_CHANNEL},
    rows::{Batch, aggregate_bounties},
};
use crate::row::NewLog;

/// A batch's log rows by COPY (text format): one stream for the whole batch instead of a
/// statement per 64 rows; the ids are drawn in row order under the ingest lock, so the
/// sequence's `currval` is the last id given out.
async fn copy_logs(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    logs: &[NewLog],
) -> Result<i64, StoreError> {
    let mut copy = tx
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
            .fetch_one(&mut **tx)
            .await?
            .get(0),
    )
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

static INSERT_NEW_BOUNTIES: MultiRow = MultiRow::new(
    "INSERT INTO bounties (attacker_ip, kind, value, first_seen, last_seen, count, first_log_id)",
    7,
    "ON CONFLICT (attacker_ip, kind, value) DO NOTHING",
);

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
        || b.new_bounties
            .iter()
            .any(|(_, x)| nul(&x.attacker_ip) || nul(&x.value) || nul(&x.ts))
        || b.tally.as_ref().is_some_and(|t| {
            t.counts
                .iter()
                .any(|((ip, _, v), c)| nul(ip) || nul(v) || nul(&c.first_seen) || nul(&c.last_seen))
        })
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
    for (_, x) in b.bounties.iter_mut().chain(b.new_bounties.iter_mut()) {
        fix(&mut x.attacker_ip);
        fix(&mut x.value);
        fix(&mut x.ts);
    }
    if let Some(t) = &mut b.tally {
        for ((ip, _, v), c) in &mut t.counts {
            fix(ip);
            fix(v);
            fix(&mut c.first_seen);
            fix(&mut c.last_seen);
        }
    }
    for d in &mut b.dead {
        fix(&mut d.file);
        fix(&mut d.reason);
        fix(&mut d.raw);
    }
    b
}

// Every call runs inside a `db.<method>` span when developer tracing is on (see
// `telemetry::db_call`); the queries themselves know nothing about tracing.
repository! {
impl Store {
    /// Writes a batch: logs, bounties (upserted), dead letters and the cursor, all in one
    /// transaction. Either all of it is visible afterwards or none of it. Returns the id of
    /// the first log row (the others follow consecutively), None when it had no logs.
    ///
    /// A connection whose transaction failed is closed, not returned to the pool: after
    /// SQLITE_FULL (or busy) in the middle of a transaction SQLite may leave it open on that
    /// connection, write lock included, and every writer and checkpoint then waits on a
    /// connection sitting idle in the pool (seen in the disk-full test: "database table is
    /// locked" for as long as the test ran).
    ///
    /// The batch is shared with the SQLite writer's thread rather than copied; callers
    /// holding only a reference use [`Store::commit_batch_copy`].
    pub async fn commit_batch(&self, batch: Arc<Batch>) -> Result<Option<i64>, StoreError> {
        match &self.ingest {
            Some(w) => w.commit(batch, self.write_turn().await).await,
            None => self.commit_postgres(&batch).await,
        }
    }

    /// [`Store::commit_batch`] of a borrowed batch, copied for the writer's thread.
    pub async fn commit_batch_copy(&self, batch: &Batch) -> Result<Option<i64>, StoreError> {
        match &self.ingest {
            Some(w) => {
                w.commit(Arc::new(batch.clone()), self.write_turn().await)
                    .await
            }
            None => self.commit_postgres(batch).await,
        }
    }
}
}

impl Store {
    async fn commit_postgres(&self, batch: &Batch) -> Result<Option<i64>, StoreError> {
        let fixed;
        let batch = if has_nul(batch) {
            fixed = without_nul(batch);
            &fixed
        } else {
            batch
        };
        let Pool::Postgres(pool) = &self.pool else {
            unreachable!("a SQLite store commits through its ingest writer");
        };
        {
            let mut conn = pool.acquire().await?;
            let r: Result<Option<i64>, StoreError> = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                {
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
                    Some(copy_logs(&mut tx, &batch.logs).await?)
                };
                // Ids in one transaction are consecutive (the ingest lock, drawn in row
                // order), so the first follows from the last.
                let first_id = last_id.map(|l| l - batch.logs.len() as i64 + 1);
                // One statement row per distinct artifact per batch: a scan repeats the same
                // fingerprint thousands of times, and the count is what matters. Counted
                // bounties add theirs; the others only make sure the row exists (count 0),
                // and their counts come with a tally.
                for (bounties, stmt, counted) in [
                    (&batch.bounties, &UPSERT_BOUNTIES, true),
                    (&batch.new_bounties, &INSERT_NEW_BOUNTIES, false),
                ] {
                    for chunk in aggregate_bounties(bounties).chunks(ROWS_PER_STMT) {
                        let mut q = sqlx::query(AssertSqlSafe(stmt.sql(self.backend(), chunk.len())));
                        for ((ip, kind, value), (_, idx, first, last, n)) in chunk {
                            q = q
                                .bind(*ip)
                                .bind(*kind)
                                .bind(*value)
                                .bind(*first)
                                .bind(*last)
                                .bind(if counted { *n } else { 0 })
                                .bind(first_id.map(|f| f + *idx as i64));
                        }
                        q.execute(&mut *tx).await?;
                    }
                }
                if let Some(t) = &batch.tally {
                    for chunk in t.counts.chunks(ROWS_PER_STMT) {
                        let mut q = sqlx::query(AssertSqlSafe(UPSERT_BOUNTIES.sql(self.backend(), chunk.len())));
                        for ((ip, kind, value), c) in chunk {
                            q = q
                                .bind(ip.as_str())
                                .bind(*kind)
                                .bind(value.as_str())
                                .bind(c.first_seen.as_str())
                                .bind(c.last_seen.as_str())
                                .bind(c.count)
                                .bind(None::<i64>);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    let through = t.through.or(last_id).unwrap_or(0);
                    sqlx::query(
                        "INSERT INTO state (key, value) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(&t.key)
                    .bind(through.to_string())
                    .execute(&mut *tx)
                    .await?;
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
                if !batch.logs.is_empty() {
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
        }
    }
}
