//! The ingester's write path: a batch of rows, bounties, dead letters and the cursor in one
//! transaction, with the fastest insert each engine has.

use sqlx::{AssertSqlSafe, Row as _};

use super::{
    engine::{Backend, MultiRow, Pool, ROWS_PER_STMT, Store, on_pool, repository, set_cursor},
    error::StoreError,
    fleet::{INGEST_LOCK, LOGS_CHANNEL},
    rows::Batch,
};
use crate::row::NewLog;

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
}
}
