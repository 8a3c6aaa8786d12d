//! Retention: keeps the database bounded while a decoy takes millions of probes a month.
//!
//! Rows of `logs`, `detections`, `bounties` and `dead_letters` older than `--retain-days`
//! are deleted, and under `--max-db-mb` the oldest go first until the file fits. Profiles,
//! campaigns and cursors stay: they are bounded by the number of sources, not of events.
//!
//! - **Never ahead of a reader.** A log row is deleted only once the profiler has read it,
//!   a detection only once every alert sink has passed it (and never the newest: the
//!   profiler numbers its next detection after it).
//! - **Small batches that yield.** One transaction deletes at most [`BATCH`] rows per
//!   table, then retention pauses, so ingest, the profiler, the API and the stream keep
//!   their turn at the database.
//! - **Space comes back.** On SQLite each batch's freed pages go back to the file system
//!   (incremental auto-vacuum, in files made since it was added; older files reuse them).
//! - **Seen.** Pruned rows per table, the oldest row kept and the file's size are in the
//!   stats and `/metrics`; the stream tells a client that resumes from a pruned id
//!   (`store::PRUNED_LOGS_KEY`).
//!
//! Stage 10 (retain) of the pipeline: docs/architecture.md.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::sync::watch;

use crate::{
    counters::{Kind, write_metric},
    store::{Pruned, Reach, Store, StoreError, sink_cursor_key},
    timefmt,
};

/// Rows one transaction deletes per table.
pub const BATCH: i64 = 2000;
/// The smallest `--max-db-mb`: below it one ingest batch and the profiles of a busy decoy
/// would not fit, and retention would delete every row it may.
pub const MIN_DB_MB: u64 = 16;
/// How often retention looks for something to prune.
const EVERY: Duration = Duration::from_secs(5);
/// The pause between two batches: the other writers' turn.
const PAUSE: Duration = Duration::from_millis(20);

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Days of rows to keep (0: no age limit).
    pub retain_days: u32,
    /// The database file's cap in bytes (0: none; SQLite only).
    pub max_db_bytes: u64,
}

impl Policy {
    pub fn is_off(&self) -> bool {
        self.retain_days == 0 && self.max_db_bytes == 0
    }
}

/// What retention did, for the stats and `/metrics`.
#[derive(Debug, Default)]
pub struct RetainStats {
    pub policy: Mutex<Option<Policy>>,
    pub pruned_logs: AtomicU64,
    pub pruned_bounties: AtomicU64,
    pub pruned_detections: AtomicU64,
    pub pruned_dead_letters: AtomicU64,
    /// The SQLite file: bytes in use and on disk.
    pub db_used_bytes: AtomicU64,
    pub db_file_bytes: AtomicU64,
    /// `ts` of the oldest log row kept.
    pub oldest_log_ts: Mutex<Option<String>>,
    /// The last finished round's cutoff: every row older than it that its readers had
    /// passed is gone.
    pub pruned_before: Mutex<Option<String>>,
    /// Unix ns of the last finished round.
    pub last_round_ns: AtomicI64,
    /// The cap cannot be met: everything left is unread by the profiler or a sink.
    pub over_cap: AtomicBool,
}

impl RetainStats {
    fn add(&self, p: Pruned) {
        self.pruned_logs.fetch_add(p.logs, Relaxed);
        self.pruned_bounties.fetch_add(p.bounties, Relaxed);
        self.pruned_detections.fetch_add(p.detections, Relaxed);
        self.pruned_dead_letters.fetch_add(p.dead_letters, Relaxed);
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let policy = *self.policy.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "retain_days": policy.map(|p| p.retain_days),
            "max_db_mb": policy.map(|p| p.max_db_bytes >> 20),
            "pruned": {
                "logs": self.pruned_logs.load(Relaxed),
                "bounties": self.pruned_bounties.load(Relaxed),
                "detections": self.pruned_detections.load(Relaxed),
                "dead_letters": self.pruned_dead_letters.load(Relaxed),
            },
            "oldest_log_ts": *self.oldest_log_ts.lock().unwrap_or_else(|p| p.into_inner()),
            "pruned_before": *self.pruned_before.lock().unwrap_or_else(|p| p.into_inner()),
            "db_used_bytes": self.db_used_bytes.load(Relaxed),
            "db_file_bytes": self.db_file_bytes.load(Relaxed),
            "over_cap": self.over_cap.load(Relaxed),
            "last_round": match self.last_round_ns.load(Relaxed) {
                0 => None,
                ns => Some(timefmt::rfc3339_ns(ns)),
            },
        })
    }

    pub fn write_prometheus(&self, out: &mut String) {
        for (table, v) in [
            ("logs", &self.pruned_logs),
            ("bounties", &self.pruned_bounties),
            ("detections", &self.pruned_detections),
            ("dead_letters", &self.pruned_dead_letters),
        ] {
            write_metric(
                out,
                &format!("retain_pruned_{table}_total"),
                &format!("Rows of {table} deleted by retention."),
                Kind::Counter,
                v.load(Relaxed),
            );
        }
        let oldest = self
            .oldest_log_ts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .and_then(timefmt::parse_rfc3339_ns)
            .map_or(0.0, |ns| ns as f64 / 1e9);
        write_metric(
            out,
            "retain_oldest_log_seconds",
            "Unix time of the oldest log row kept (0: none).",
            Kind::Gauge,
            oldest,
        );
        write_metric(
            out,
            "db_file_bytes",
            "Size of the SQLite database file.",
            Kind::Gauge,
            self.db_file_bytes.load(Relaxed),
        );
        write_metric(
            out,
            "db_used_bytes",
            "Bytes of the SQLite database file in use (the rest is free pages).",
            Kind::Gauge,
            self.db_used_bytes.load(Relaxed),
        );
        write_metric(
            out,
            "retain_over_cap",
            "1 while the size cap cannot be met (the rest is unread by the profiler or a sink).",
            Kind::Gauge,
            self.over_cap.load(Relaxed) as u8,
        );
    }
}

/// The retention task of the process that runs the profiler.
pub struct Retention {
    pub store: Store,
    pub policy: Policy,
    /// The alert sinks whose cursors bound which detections may go.
    pub sinks: Vec<String>,
    pub stats: Arc<RetainStats>,
}

impl Retention {
    /// Prunes every [`EVERY`] until `stop`. A failed round (the database busy or away) is
    /// logged and tried again at the next.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        *self.stats.policy.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.policy);
        if self.policy.max_db_bytes > 0 && matches!(self.store.can_shrink().await, Ok(false)) {
            tracing::info!(
                "database file predates incremental auto-vacuum: pruned pages are reused, \
                 but the file does not shrink below its largest size so far"
            );
        }
        loop {
            match self.round(&mut stop).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "retention round failed; trying again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.wait_for(|v| *v) => return,
            }
        }
    }

    /// Deletes what the policy no longer keeps, a batch at a time; returns early on `stop`.
    pub async fn round(&self, stop: &mut watch::Receiver<bool>) -> Result<(), StoreError> {
        let days = self.policy.retain_days;
        if days > 0 {
            let cutoff = timefmt::rfc3339_ns(
                timefmt::unix_now_ns() - i64::from(days) * 86_400 * 1_000_000_000,
            );
            loop {
                let p = self
                    .store
                    .prune_older(&cutoff, self.reach().await?, BATCH)
                    .await?;
                self.stats.add(p);
                if p.total() == 0 {
                    *self
                        .stats
                        .pruned_before
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(cutoff);
                    break;
                }
                if self.pause(stop).await {
                    break;
                }
            }
        }
        let cap = self.policy.max_db_bytes;
        if cap > 0 {
            let mut over = false;
            while let Some(size) = self.store.db_size().await? {
                if size.used <= cap {
                    break;
                }
                let p = self.store.prune_oldest(self.reach().await?, BATCH).await?;
                self.stats.add(p);
                if p.total() == 0 {
                    over = true;
                    break;
                }
                if self.pause(stop).await {
                    break;
                }
            }
            if over && !self.stats.over_cap.swap(true, Relaxed) {
                tracing::warn!(
                    max_db_mb = cap >> 20,
                    "database over its size cap: every row left is still unread by the \
                     profiler or an alert sink"
                );
            } else if !over {
                self.stats.over_cap.store(false, Relaxed);
            }
        }
        // Give back what the batches freed (a bounded amount per call).
        for _ in 0..64 {
            let before = self.store.db_size().await?;
            self.store.reclaim().await?;
            if before.is_none() || self.store.db_size().await? == before {
                break;
            }
        }
        if let Some(size) = self.store.db_size().await? {
            self.stats.db_used_bytes.store(size.used, Relaxed);
            self.stats.db_file_bytes.store(size.file, Relaxed);
        }
        *self
            .stats
            .oldest_log_ts
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = self.store.oldest_log_ts().await?;
        self.stats
            .last_round_ns
            .store(timefmt::unix_now_ns(), Relaxed);
        Ok(())
    }

    /// How far pruning may reach now (see [`Reach`]).
    async fn reach(&self) -> Result<Reach, StoreError> {
        let profiled = crate::profile::coordinator::profiled_through(&self.store).await?;
        let mut detections = self.store.last_detection_id().await? - 1;
        for sink in &self.sinks {
            // A sink without a cursor starts after the newest detection: it needs none.
            if let Some(c) = self
                .store
                .get_state_json::<i64>(&sink_cursor_key(sink))
                .await?
            {
                detections = detections.min(c);
            }
        }
        Ok(Reach {
            max_log_id: profiled,
            max_detection_id: detections,
        })
    }

    /// The pause between batches; true when `stop` came.
    async fn pause(&self, stop: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(PAUSE) => false,
            _ = stop.wait_for(|v| *v) => true,
        }
    }
}
