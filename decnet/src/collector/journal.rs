//! The journal writer: a dedicated thread that owns `events.jsonl`.
//!
//! The ring reader must never wait on disk, so it hands batches of probes over a bounded
//! channel with `try_send`; when the channel is full the batch is counted as dropped, never
//! queued without bound. The writer serializes into one buffer and appends it with a single
//! write(2) per flush, so every write carries whole lines only (other processes may append
//! to the same file with O_APPEND). It flushes at least every `flush_interval` and fsyncs on
//! shutdown.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::PathBuf,
    sync::{
        Arc,
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::record::write_probe_record;
use crate::{sensor::Probe, stats::PipelineStats, timefmt::WallClock};

/// A batch of probes handed from the ring reader to the writer.
pub type Batch = Vec<Probe>;

#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub path: PathBuf,
    /// Longest time a written record may sit in the userspace buffer.
    pub flush_interval: Duration,
    /// Batches the channel holds before the reader starts counting drops.
    pub channel_batches: usize,
}

impl JournalConfig {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            flush_interval: Duration::from_millis(100),
            channel_batches: 256,
        }
    }
}

/// The reader's side: non-blocking hand-off with drop accounting.
#[derive(Clone)]
pub struct JournalHandle {
    tx: SyncSender<Batch>,
    stats: Arc<PipelineStats>,
}

impl JournalHandle {
    /// Hands a batch to the writer without blocking. A full or closed channel counts the
    /// batch's probes in `channel_full_dropped` and returns false.
    pub fn send(&self, batch: Batch) -> bool {
        match self.tx.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                PipelineStats::add(&self.stats.channel_full_dropped, b.len() as u64);
                false
            }
        }
    }
}

/// The writer thread; dropping every [`JournalHandle`] makes it flush, fsync and exit.
pub struct JournalWriter {
    thread: JoinHandle<()>,
}

/// Flush early when the buffer grows past this, to bound memory during floods.
const FLUSH_BYTES: usize = 1 << 20;
/// Log write errors at most this often (the count is always exact).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

impl JournalWriter {
    /// Opens (creating) the journal and starts the writer thread. `deckies[i]` names decky
    /// id `i + 1`.
    pub fn spawn(
        cfg: JournalConfig,
        deckies: Arc<[String]>,
        stats: Arc<PipelineStats>,
    ) -> io::Result<(JournalHandle, JournalWriter)> {
        let file = open_journal(&cfg.path)?;
        let (tx, rx) = mpsc::sync_channel::<Batch>(cfg.channel_batches.max(1));
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || Writer::new(file, cfg, deckies, st).run(rx))?;
        Ok((JournalHandle { tx, stats }, JournalWriter { thread }))
    }

    /// Waits for the writer to drain, flush and fsync.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("journal writer thread panicked");
        }
    }
}

pub(crate) fn open_journal(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

struct Writer {
    file: File,
    cfg: JournalConfig,
    deckies: Arc<[String]>,
    stats: Arc<PipelineStats>,
    buf: Vec<u8>,
    lines: u64,
    last_error_log: Option<Instant>,
}

impl Writer {
    fn new(
        file: File,
        cfg: JournalConfig,
        deckies: Arc<[String]>,
        stats: Arc<PipelineStats>,
    ) -> Self {
        Self {
            file,
            cfg,
            deckies,
            stats,
            buf: Vec::with_capacity(FLUSH_BYTES + 64 * 1024),
            lines: 0,
            last_error_log: None,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Batch>) {
        let mut last_flush = Instant::now();
        loop {
            let wait = self.cfg.flush_interval.saturating_sub(last_flush.elapsed());
            match rx.recv_timeout(wait) {
                Ok(batch) => self.append(&batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.buf.len() >= FLUSH_BYTES || last_flush.elapsed() >= self.cfg.flush_interval {
                self.flush();
                last_flush = Instant::now();
            }
        }
        self.flush();
        if let Err(e) = self.file.sync_all() {
            tracing::warn!(error = %e, path = %self.cfg.path.display(), "journal fsync failed");
        }
    }

    fn append(&mut self, batch: &[Probe]) {
        // One clock sample per batch follows NTP steps without a syscall per event.
        let clock = WallClock::now();
        for p in batch {
            let decky = p
                .decky_id
                .checked_sub(1)
                .and_then(|i| self.deckies.get(i as usize))
                .map(String::as_str)
                .unwrap_or("unknown");
            write_probe_record(&mut self.buf, p, decky, clock.to_unix_ns(p.mono_ns), None);
        }
        self.lines += batch.len() as u64;
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.file.write_all(&self.buf) {
            Ok(()) => {
                PipelineStats::add(&self.stats.journal_written, self.lines);
                PipelineStats::add(&self.stats.journal_bytes, self.buf.len() as u64);
            }
            Err(e) => {
                PipelineStats::add(&self.stats.journal_write_failed, self.lines);
                let now = Instant::now();
                if self
                    .last_error_log
                    .is_none_or(|t| now - t >= ERROR_LOG_EVERY)
                {
                    self.last_error_log = Some(now);
                    tracing::error!(error = %e, path = %self.cfg.path.display(),
                        lost = self.stats.journal_write_failed.load(std::sync::atomic::Ordering::Relaxed),
                        "journal write failed; records are counted as lost");
                }
            }
        }
        self.buf.clear();
        self.lines = 0;
    }
}
