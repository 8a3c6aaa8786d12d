//! The ingester's SQLite writer: one connection of its own, driven on a blocking thread.
//!
//! Through sqlx each of a batch's ~160 statements was a round trip between a runtime
//! thread, which copied the statement's bound strings, and sqlx's connection thread, which
//! ran it: the two took turns, so a batch cost their sum (`bench ingest`: SQLite's thread
//! busy two thirds of the run). Here the whole transaction runs on one thread with
//! prepared, cached statements and values bound by reference, as the bare baseline does,
//! while the ingester parses the next batch.
//!
//! A connection's page cache survives only while no other connection writes, so the
//! ingester keeps this one rather than taking turns over a pool.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, params};

use super::{
    error::StoreError,
    rows::{Batch, Tally, aggregate_bounties},
};

/// The connection, opened on first use and again after a failed transaction (which SQLite
/// may leave open, write lock included, after a full disk).
#[derive(Debug)]
pub(super) struct IngestWriter {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl IngestWriter {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            conn: Mutex::new(None),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let c = Connection::open(&self.path)?;
        c.busy_timeout(Duration::from_secs(10))?;
        // As the sqlx pool's connections (`Store::open`): WAL with NORMAL sync, foreign
        // keys, an 8 MiB cache, statement journals in memory, checkpoints left to the
        // background task.
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -8192; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 20000; PRAGMA journal_size_limit = 67108864;",
        )?;
        Ok(c)
    }

    /// Drops the connection (`Store::close`).
    pub(super) fn close(&self) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Writes `batch` in one transaction on a blocking thread; the id of its first log.
    /// `turn`: the process's turn at the write lock ([`super::Store::write_turn`]), held
    /// until the transaction has ended.
    pub(super) async fn commit(
        self: &Arc<Self>,
        batch: Arc<Batch>,
        turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Result<Option<i64>, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let mut guard = me.conn.lock().unwrap_or_else(|e| e.into_inner());
            if guard.is_none() {
                *guard = Some(me.open()?);
            }
            let conn = guard.as_mut().expect("opened above");
            let r = write(conn, &batch);
            if r.is_err() {
                *guard = None;
            }
            r
        })
        .await
        .map_err(|e| StoreError::Task(format!("ingest commit: {e}")))?
    }
}

/// Bounty rows: counted (added to a stored count), or only made sure to exist.
const UPSERT_BOUNTY: &str = "INSERT INTO bounties (attacker_ip, kind, value, first_seen, \
     last_seen, count, first_log_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (attacker_ip, kind, value) DO UPDATE SET \
     last_seen = excluded.last_seen, count = bounties.count + excluded.count";
const INSERT_NEW_BOUNTY: &str = "INSERT INTO bounties (attacker_ip, kind, value, \
     first_seen, last_seen, count, first_log_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (attacker_ip, kind, value) DO NOTHING";

fn write(conn: &mut Connection, batch: &Batch) -> Result<Option<i64>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut last_id = None;
    if !batch.logs.is_empty() {
        let mut st = tx.prepare_cached(
            "INSERT INTO logs (ts, decky, service, event_type, attacker_ip, fields, trace_id, \
             span_id, sensor) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for l in &batch.logs {
            st.execute(params![
                l.ts,
                l.decky,
                l.service,
                l.event_type,
                l.attacker_ip,
                l.fields,
                l.trace_id,
                l.span_id,
                &*l.sensor
            ])?;
        }
        last_id = Some(tx.last_insert_rowid());
    }
    // Ids in one transaction are consecutive (AUTOINCREMENT, one writer).
    let first_id = last_id.map(|l| l - batch.logs.len() as i64 + 1);
    for (bounties, counted) in [(&batch.bounties, true), (&batch.new_bounties, false)] {
        let mut st = tx.prepare_cached(if counted {
            UPSERT_BOUNTY
        } else {
            INSERT_NEW_BOUNTY
        })?;
        for ((ip, kind, value), (_, idx, first, last, n)) in aggregate_bounties(bounties) {
            st.execute(params![
                ip,
                kind,
                value,
                first,
                last,
                if counted { n } else { 0 },
                first_id.map(|f| f + idx as i64)
            ])?;
        }
    }
    if let Some(t) = &batch.tally {
        tally(&tx, t, last_id)?;
    }
    if !batch.dead.is_empty() {
        let now = crate::timefmt::rfc3339_ns(crate::timefmt::unix_now_ns());
        let mut st = tx.prepare_cached(
            "INSERT INTO dead_letters (received_at, file, byte_offset, reason, raw) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for d in &batch.dead {
            st.execute(params![now, d.file, d.byte_offset as i64, d.reason, d.raw])?;
        }
    }
    if let Some(c) = &batch.cursor {
        // A second ingester on the same database fails here instead of duplicating rows
        // (as `set_cursor!` does for the sqlx engines).
        let changed = match &c.prev {
            Some(prev) => tx.execute(
                "UPDATE state SET value = ?1 WHERE key = ?2 AND value = ?3",
                params![c.value, c.key, prev],
            )?,
            None => tx.execute(
                "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![c.key, c.value],
            )?,
        };
        if changed == 0 {
            return Err(StoreError::CursorMoved(c.key.clone()));
        }
    }
    tx.commit()?;
    Ok(first_id)
}

fn tally(
    tx: &rusqlite::Transaction<'_>,
    t: &Tally,
    last_id: Option<i64>,
) -> Result<(), StoreError> {
    let mut st = tx.prepare_cached(UPSERT_BOUNTY)?;
    for ((ip, kind, value), c) in &t.counts {
        st.execute(params![
            ip,
            kind,
            value,
            c.first_seen,
            c.last_seen,
            c.count,
            None::<i64>
        ])?;
    }
    let through = t.through.or(last_id).unwrap_or(0);
    tx.execute(
        "INSERT INTO state (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![t.key, through.to_string()],
    )?;
    Ok(())
}
