//! The ingester loop: tail -> parse -> batch -> one transaction (rows + dead letters +
//! cursor) -> wake downstream.
//!
//! Exactly once: the cursor saved with a batch points just past that batch's last line, and
//! both are committed together, so a crash anywhere either keeps the whole batch and its
//! cursor or neither; the restart resumes from the last committed cursor.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use super::{
    bounty::{self, bounty},
    parse::{dead_raw, parse_line},
    tail::{Cursor, EndOfFile, Line, Tail},
    tally::{Noted, Tally},
};
use crate::{
    hub::Hub,
    pace::{BUSY_PER_SECOND, Pace},
    row::Facts,
    store::{Batch, CursorUpdate, DeadLetter, Store, StoreError},
    telemetry::{
        self,
        lite::{LiteSpan, SpanKind},
    },
};

/// `state` key of the journal cursor.
/// The journal position of one sensor's ingester: `ingest_worker_position:<sensor id>`
/// (each sensor of a fleet reads its own journal into the shared database). Before sensor
/// ids it was this prefix alone; such a cursor is renamed on the first start.
pub(crate) const INGEST_CURSOR_KEY: &str = "ingest_worker_position";

/// The cursor key of `sensor` (no sensor id, as in tools and tests: the bare prefix).
pub(crate) fn cursor_key(sensor: &str) -> String {
    if sensor.is_empty() {
        INGEST_CURSOR_KEY.to_owned()
    } else {
        format!("{INGEST_CURSOR_KEY}:{sensor}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("journal {0}: {1}")]
    Journal(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("commit task: {0}")]
    Task(String),
}

#[derive(Clone, Debug)]
pub struct IngestConfig {
    pub data_dir: PathBuf,
    pub base: String,
    /// Rotated files to search (`events.jsonl.1` ..= `.keep`).
    pub keep: usize,
    /// A batch commits at this many lines...
    pub batch_lines: usize,
    /// ...or this long after its first line, whichever comes first.
    pub batch_wait: Duration,
    /// While rows come at [`BUSY_PER_SECOND`] or more, commits start at least this far
    /// apart (unless a batch is full). Every commit costs the same few hundred microseconds
    /// of SQLite and WAL pages whatever its size, so a busy stream committed a few lines at
    /// a time cost more CPU than the capture itself; slower, each line commits at once.
    /// 100 ms: under a 6 s hping3 flood (~16,000 rows) the daemon used 1.29-1.32 CPU-s at
    /// 20 ms, 0.94-0.99 at 50 ms, 0.80-0.84 at 100 ms and 0.85-0.89 at 250 ms.
    pub commit_gap: Duration,
    /// Without a wake-up from the writer (another process appending), look this often.
    pub idle_poll: Duration,
    /// While busy, bounty counts are added to the store at most this often (`ingest::tally`);
    /// otherwise with each commit.
    pub tally_every: Duration,
    /// The sensor whose journal this is: every row carries it, the cursor is named by it.
    pub sensor: Arc<str>,
    /// Where each commit's cursor is published for the journal writer, which deletes a
    /// rotated file only once it is committed (`collector::rotation`).
    pub published: Option<Arc<crate::collector::rotation::ReadPosition>>,
}

impl IngestConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            base: "events.jsonl".into(),
            // `decnet run`'s default --journal-keep 8, and as many held for a stalled
            // ingester, and the one it is reading (`collector::rotation`).
            keep: 17,
            batch_lines: 10_000,
            batch_wait: Duration::from_millis(50),
            commit_gap: Duration::from_millis(100),
            idle_poll: Duration::from_millis(50),
            tally_every: Duration::from_secs(1),
            sensor: Arc::from(""),
            published: None,
        }
    }
}

crate::counters! {
    /// The ingester's counters.
    pub struct IngestStats => IngestSnapshot {
        counters {
            /// Journal lines committed as rows.
            rows("ingest_rows_total", "Journal lines committed as rows."),
            /// Journal lines that could not be ingested.
            dead_letters("ingest_dead_letters_total", "Journal lines that could not be ingested."),
            batches("ingest_batches_total", "Committed ingest batches."),
            commit_retries(
                "ingest_commit_retries_total",
                "Batch commits retried because the database was busy."
            ),
            rotations("ingest_rotations_total", "Journal rotations followed."),
            truncations("ingest_truncations_total", "Journal truncations detected."),
            cursor_lost(
                "ingest_cursor_lost_total",
                "Times the saved journal position could not be found."
            ),
        }
        gauges {
            /// Id of the newest committed row.
            last_id,
            /// Journal bytes written but not yet read, as of the last read.
            lag_bytes(
                "ingest_lag_bytes",
                "Journal bytes written but not yet read by the ingester."
            ),
        }
        state {
            /// Wall-clock time (ns) of the last commit, for the lag in seconds.
            last_commit_ns,
        }
        computed {
            /// Seconds since the last commit while unread journal bytes wait (0 when caught
            /// up).
            lag_seconds: lag_seconds, "ingest_lag_seconds",
                "Seconds since the last commit while journal bytes wait (0 when caught up).",
        }
    }
}

/// Seconds since the last commit while unread journal bytes wait (0 when caught up).
fn lag_seconds(s: &IngestStats) -> f64 {
    if s.lag_bytes.load(Relaxed) == 0 {
        return 0.0;
    }
    let now = crate::timefmt::unix_now_ns() as u64;
    now.saturating_sub(s.last_commit_ns.load(Relaxed)) as f64 / 1e9
}

pub struct Ingester {
    store: Store,
    cfg: IngestConfig,
    stats: Arc<IngestStats>,
    /// Poked by the journal writer after each flush.
    wake: Arc<Notify>,
    /// Bumped after every commit; the profiler waits on it.
    committed: Arc<watch::Sender<u64>>,
    /// Committed rows are announced here for the live stream.
    hub: Option<Hub>,
}

impl Ingester {
    pub fn new(store: Store, cfg: IngestConfig, wake: Arc<Notify>) -> Self {
        Self {
            store,
            cfg,
            stats: Arc::default(),
            wake,
            committed: Arc::new(watch::channel(0).0),
            hub: None,
        }
    }

    /// Counts on from `stats` (a pinned sensor's totals handed over by the last daemon).
    pub(crate) fn with_stats(mut self, stats: Arc<IngestStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Announces every committed batch's rows on `hub`.
    pub fn with_hub(mut self, hub: Hub) -> Self {
        self.hub = Some(hub);
        self
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// A receiver that changes after every committed batch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    fn journal_err(&self, e: std::io::Error) -> IngestError {
        IngestError::Journal(self.cfg.data_dir.join(&self.cfg.base), e)
    }

    /// Runs until `shutdown` is true, then ingests what is already in the journal, commits
    /// and returns. With `until_idle`, returns as soon as the journal has been read to its
    /// end (tools, benchmarks).
    pub async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
        until_idle: bool,
    ) -> Result<(), IngestError> {
        let key = cursor_key(&self.cfg.sensor);
        if key != INGEST_CURSOR_KEY && self.store.rename_state(INGEST_CURSOR_KEY, &key).await? {
            tracing::info!(key, "ingest cursor renamed for this sensor");
        }
        let saved_text = self.store.get_state(&key).await?;
        let saved: Option<Cursor> = self.store.get_state_json(&key).await?;
        let mut last_cursor = saved_text;
        let mut tail = Tail::open(&self.cfg.data_dir, &self.cfg.base, self.cfg.keep, saved)
            .map_err(|e| self.journal_err(e))?;
        // Where reading resumes is committed already: the writer may delete what is older.
        if let Some(p) = &self.cfg.published {
            let c = tail.cursor();
            p.publish(c.dev, c.ino, c.offset);
        }
        let mut tally = Tally::new(&self.cfg.sensor, self.cfg.tally_every);
        tally.recount(&self.store, &self.cfg.sensor).await?;
        let mut batch = Pending::default();
        let mut started: Option<Instant> = None;
        let mut lines: Vec<Line> = Vec::with_capacity(self.cfg.batch_lines);
        let mut stopping = false;
        let mut inflight: Inflight = None;
        let mut last_commit: Option<Instant> = None;
        let mut pace = Pace::new(BUSY_PER_SECOND);
        let mut busy = false;
        loop {
            let room = self.cfg.batch_lines.saturating_sub(batch.len()).max(1);
            lines.clear();
            let n = tail
                .read_lines(room, &mut lines)
                .map_err(|e| self.journal_err(e))?;
            for line in lines.drain(..) {
                self.add_line(&mut batch, &mut tally, tail.file_name(), line);
            }
            self.stats.lag_bytes.store(tail.unread_bytes(), Relaxed);
            if n > 0 && started.is_none() {
                started = Some(Instant::now());
            }
            let size = batch.len();
            let due = started.is_some_and(|t| t.elapsed() >= self.cfg.batch_wait);
            // Group commit: at the end of what was written, commit at once unless a commit
            // is still in flight or, while busy, the last one began less than `commit_gap`
            // ago; then lines gather until that passes (or the batch is due), so a lone
            // probe is not held back and a flood still commits in big batches.
            let gap_passed =
                !busy || last_commit.is_none_or(|t| t.elapsed() >= self.cfg.commit_gap);
            let free = inflight.as_ref().is_none_or(|h| h.is_finished()) && gap_passed;
            if size >= self.cfg.batch_lines
                || (size > 0 && (due || free || stopping || until_idle) && n == 0)
            {
                // Caught up and not busy: the counts go with this batch.
                let counts_now = n == 0 && !busy;
                self.commit(
                    &mut batch,
                    &mut tally,
                    counts_now,
                    &tail,
                    &mut inflight,
                    &mut last_cursor,
                )
                .await?;
                last_commit = Some(Instant::now());
                busy = pace.note(size as u64);
                started = None;
                tokio::task::yield_now().await;
                continue;
            }
            if n > 0 {
                continue;
            }
            // End of the file for now.
            match tail.at_end().map_err(|e| self.journal_err(e))? {
                EndOfFile::Switched { torn } => {
                    if let Some(l) = torn {
                        let reason = "partial line at the end of a rotated journal file".to_owned();
                        self.dead(&mut batch, tail.file_name(), l, reason);
                    }
                    // Commit the new file's cursor even with no rows, so a restart does not
                    // walk the finished file again.
                    self.commit(
                        &mut batch,
                        &mut tally,
                        false,
                        &tail,
                        &mut inflight,
                        &mut last_cursor,
                    )
                    .await?;
                    started = None;
                    continue;
                }
                EndOfFile::Truncated => continue,
                EndOfFile::Wait => {}
            }
            self.sync_tail_events(&tail);
            if stopping || until_idle {
                if size > 0 || !tally.is_empty() {
                    self.commit(
                        &mut batch,
                        &mut tally,
                        true,
                        &tail,
                        &mut inflight,
                        &mut last_cursor,
                    )
                    .await?;
                }
                return finish(&mut inflight).await;
            }
            if started.is_none() && inflight.is_some() {
                // Idle: let the last commit land (and surface its error), then look again
                // before sleeping: lines kept arriving while it was written.
                finish(&mut inflight).await?;
                continue;
            }
            if started.is_none() && tally.due(!busy) {
                // Idle with counts not yet added (the last batches were full, or busy): a
                // batch of no rows takes them.
                self.commit(
                    &mut batch,
                    &mut tally,
                    !busy,
                    &tail,
                    &mut inflight,
                    &mut last_cursor,
                )
                .await?;
                continue;
            }
            let wait = match started {
                // Lines wait for the commit in flight or for the gap: look again soon, or
                // when the gap has passed. While busy the writer's wake-ups are not needed
                // meanwhile: what it writes is read then.
                Some(t) => {
                    let gap = match last_commit {
                        Some(c) if busy => self.cfg.commit_gap.saturating_sub(c.elapsed()),
                        _ => Duration::ZERO,
                    };
                    self.cfg
                        .batch_wait
                        .saturating_sub(t.elapsed())
                        .min(gap.max(Duration::from_millis(5)))
                }
                None => self.cfg.idle_poll,
            };
            tokio::select! {
                _ = self.wake.notified(), if started.is_none() || !busy => {}
                _ = tokio::time::sleep(wait) => {}
                r = shutdown.wait_for(|v| *v), if !stopping => {
                    let _ = r;
                    stopping = true;
                }
            }
        }
    }

    fn add_line(&self, pending: &mut Pending, tally: &mut Tally, file: &str, line: Line) {
        let batch = &mut pending.rows;
        match parse_line(&line.bytes) {
            Ok(mut log) => {
                log.sensor = self.cfg.sensor.clone();
                // Developer tracing: the record's journey continues here, under the
                // collector's span named by its traceparent. Off, these spans are empty.
                let mut record = LiteSpan::continuing(
                    "ingester.process_record",
                    log.trace_id.as_deref(),
                    log.span_id.as_deref(),
                );
                record.attr("event_type", || log.event_type.clone());
                record.attr("service", || log.service.clone());
                record.attr("decky", || log.decky.clone());
                record.attr("attacker_ip", || log.attacker_ip.clone());
                let idx = batch.add_log(log, &record);
                let mut extract = record.child("ingester.extract_bounty", SpanKind::Internal);
                // With a hub the rows go on to this process's profiler: every row's fields
                // are parsed once, here, and handed over (`hub.logs_parsed`). Without one
                // (fleet, `ingest --once`) only rows that can hold artifacts are parsed.
                let facts = self.hub.is_some().then(|| bounty::facts(&batch.logs[idx]));
                let extracted;
                let artifacts = match &facts {
                    Some(f) => &f.artifacts,
                    None => {
                        extracted = bounty::extract(&batch.logs[idx]);
                        &extracted
                    }
                };
                extract.attr("bounties", || artifacts.len() as i64);
                for (kind, value) in artifacts {
                    let log = &batch.logs[idx];
                    let noted = telemetry::db_step(&extract, "db.add_bounty", || {
                        tally.note(&log.attacker_ip, kind, value, &log.ts)
                    });
                    match noted {
                        Noted::Counted => {}
                        Noted::New => batch
                            .new_bounties
                            .push((idx, bounty(log, kind, value.clone()))),
                        Noted::Collided => {
                            batch.bounties.push((idx, bounty(log, kind, value.clone())))
                        }
                    }
                }
                if let Some(f) = facts {
                    pending.facts.push(f);
                }
            }
            Err(reason) => self.dead(pending, file, line, reason),
        }
    }

    fn dead(&self, pending: &mut Pending, file: &str, line: Line, reason: String) {
        pending.rows.dead.push(DeadLetter {
            file: file.to_owned(),
            byte_offset: line.offset,
            reason,
            raw: dead_raw(&line.bytes),
        });
    }

    fn sync_tail_events(&self, tail: &Tail) {
        self.stats.rotations.store(tail.events.rotations, Relaxed);
        self.stats
            .truncations
            .store(tail.events.truncations, Relaxed);
        self.stats
            .cursor_lost
            .store(tail.events.cursor_lost, Relaxed);
    }

    /// Seals the batch with the tail's cursor and starts its commit in the background, after
    /// the previous commit has finished: parsing the next batch (this task) overlaps with
    /// SQLite writing the last one (sqlx's connection thread), using both cores, while commits
    /// stay strictly in journal order.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        batch: &mut Pending,
        tally: &mut Tally,
        counts_now: bool,
        tail: &Tail,
        inflight: &mut Inflight,
        last_cursor: &mut Option<String>,
    ) -> Result<(), IngestError> {
        let cursor = serde_json::to_string(&tail.cursor()).unwrap_or_default();
        batch.rows.cursor = Some(CursorUpdate {
            key: cursor_key(&self.cfg.sensor),
            prev: last_cursor.replace(cursor.clone()),
            value: cursor,
        });
        batch.rows.tally = tally.take(counts_now);
        let mut sealed = std::mem::take(batch);
        finish(inflight).await?;
        if let Some(t) = &mut sealed.rows.tally
            && sealed.rows.logs.is_empty()
        {
            // No log of its own: the tally counts through the last batch, committed now.
            t.through = Some(tally.through(self.stats.last_id.load(Relaxed) as i64));
        }
        let (store, stats, committed, hub, published) = (
            self.store.clone(),
            self.stats.clone(),
            self.committed.clone(),
            self.hub.clone(),
            self.cfg.published.clone(),
        );
        // The batch's own root span, linked to the traces of the records it commits.
        let span = crate::dev_span!(
            parent: None,
            "ingester.commit_batch",
            rows = sealed.rows.logs.len(),
            dead_letters = sealed.rows.dead.len(),
            bounties = sealed.rows.bounties.len(),
        );
        telemetry::link_all(
            &span,
            sealed
                .rows
                .logs
                .iter()
                .filter_map(|l| Some((l.trace_id.as_deref()?, l.span_id.as_deref()?))),
        );
        *inflight = Some(tokio::spawn(
            write_batch(store, stats, committed, hub, sealed, published).instrument(span),
        ));
        Ok(())
    }
}

/// A batch being gathered: what the store commits, and each row's parsed fields for this
/// process's profiler (by index into `rows.logs`; empty without a hub). The store never
/// sees the facts: it writes rows.
#[derive(Default)]
struct Pending {
    rows: Batch,
    facts: Vec<Facts>,
}

impl Pending {
    /// Lines taken so far: rows and dead letters.
    fn len(&self) -> usize {
        self.rows.logs.len() + self.rows.dead.len()
    }
}

type Inflight = Option<tokio::task::JoinHandle<Result<(), IngestError>>>;

/// Waits for the commit in flight, if any, and returns its outcome.
async fn finish(inflight: &mut Inflight) -> Result<(), IngestError> {
    match inflight.take() {
        None => Ok(()),
        Some(h) => h.await.map_err(|e| IngestError::Task(e.to_string()))?,
    }
}

/// Commits one batch. A busy or locked database, or a full disk, is retried with backoff
/// (the batch stays in memory, nothing is lost); other errors end the run.
async fn write_batch(
    store: Store,
    stats: Arc<IngestStats>,
    committed: Arc<watch::Sender<u64>>,
    hub: Option<Hub>,
    pending: Pending,
    published: Option<Arc<crate::collector::rotation::ReadPosition>>,
) -> Result<(), IngestError> {
    let Pending { rows: batch, facts } = pending;
    // Shared with the SQLite writer's thread for the commit, then the rows go on.
    let batch = Arc::new(batch);
    let mut backoff = Duration::from_millis(10);
    let first_id = loop {
        match store.commit_batch(batch.clone()).await {
            Ok(first_id) => break first_id,
            Err(e) if e.is_transient() => {
                stats.commit_retries.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "database unavailable (busy, full or unreachable); retrying batch");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.into()),
        }
    };
    if let Some(p) = &published
        && let Some(c) = batch
            .cursor
            .as_ref()
            .and_then(|c| serde_json::from_str::<super::tail::Cursor>(&c.value).ok())
    {
        p.publish(c.dev, c.ino, c.offset);
    }
    stats.rows.fetch_add(batch.logs.len() as u64, Relaxed);
    if let Some(first) = first_id {
        stats
            .last_id
            .store((first + batch.logs.len() as i64 - 1) as u64, Relaxed);
    }
    stats
        .last_commit_ns
        .store(crate::timefmt::unix_now_ns() as u64, Relaxed);
    stats
        .dead_letters
        .fetch_add(batch.dead.len() as u64, Relaxed);
    stats.batches.fetch_add(1, Relaxed);
    tracing::debug!(
        rows = batch.logs.len(),
        dead_letters = batch.dead.len(),
        first_id,
        "batch committed"
    );
    if !batch.dead.is_empty() {
        tracing::warn!(count = batch.dead.len(), first_reason = %batch.dead[0].reason, "journal lines dead-lettered");
    }
    // Announced before the wake-up: the profiler, woken, finds the rows on the hub.
    if let (Some(hub), Some(first_id)) = (hub, first_id) {
        let logs = Arc::try_unwrap(batch).map_or_else(|b| b.logs.clone(), |b| b.logs);
        hub.logs_parsed(first_id, move || (logs, facts));
    }
    committed.send_modify(|n| *n += 1);
    Ok(())
}
