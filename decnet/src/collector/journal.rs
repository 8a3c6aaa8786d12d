//! The journal writer: a dedicated thread that owns `events.jsonl`.
//!
//! The ring reader must never wait on disk, so the collector hands chunks of formatted lines
//! over a bounded channel with `try_send`; when the channel is full the chunk's lines are
//! counted as dropped, never queued without bound. The writer coalesces chunks and appends
//! with one write(2) per flush; chunks hold whole lines only, so every write does too (other
//! processes may append to the same file with O_APPEND). It flushes as soon as the channel
//! runs empty (group commit: a lone probe is on disk at once, a burst is still one write per
//! megabyte) and at least every `flush_interval`; fsyncs run on their own thread (see
//! [`Syncer`]), except the final one at shutdown.

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

use crate::stats::PipelineStats;

/// Whole journal lines, ready to append.
#[derive(Debug, Default)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub lines: u64,
}

impl Chunk {
    pub fn with_capacity(n: usize) -> Self {
        Chunk {
            bytes: Vec::with_capacity(n),
            lines: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub path: PathBuf,
    /// Longest time a written record may sit in the userspace buffer.
    pub flush_interval: Duration,
    /// Chunks (up to ~1 MiB each) the channel holds before the reader starts counting drops.
    pub channel_chunks: usize,
    /// Poked after every successful write, so the ingester follows without polling.
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// Rotate when a write would take the file past this size (0: never rotate).
    pub max_bytes: u64,
    /// Rotated files kept: `events.jsonl.1` (newest) ..= `events.jsonl.<keep>`, and up to
    /// `keep` more while the ingester has not finished them (see `rotation`).
    pub keep: usize,
    /// Where the ingester has committed to (None: no ingester in this process; a rotated
    /// file beyond `keep` is then held as unread, up to the limit).
    pub reader: Option<Arc<super::rotation::ReadPosition>>,
    pub fsync: FsyncPolicy,
}

/// When the journal is fsynced (flushing to the page cache happens every flush_interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every flush: at most flush_interval of records can be lost to a power cut.
    Always,
    /// At most once a second (default).
    #[default]
    Interval,
    /// Only at rotation and shutdown; the kernel writes back on its own schedule.
    Never,
}

impl JournalConfig {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            flush_interval: Duration::from_millis(100),
            channel_chunks: 256,
            wake: None,
            max_bytes: 256 << 20,
            keep: 8,
            reader: None,
            fsync: FsyncPolicy::Interval,
        }
    }
}

/// The reader's side: non-blocking hand-off with drop accounting.
#[derive(Clone)]
pub struct JournalHandle {
    tx: SyncSender<Chunk>,
    stats: Arc<PipelineStats>,
}

impl JournalHandle {
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// Hands a chunk to the writer without blocking. A full or closed channel counts the
    /// chunk's lines in `channel_full_dropped` and returns false.
    pub fn send(&self, chunk: Chunk) -> bool {
        match self.tx.try_send(chunk) {
            Ok(()) => true,
            Err(TrySendError::Full(c)) | Err(TrySendError::Disconnected(c)) => {
                PipelineStats::add(&self.stats.channel_full_dropped, c.lines);
                false
            }
        }
    }

    /// Hands a chunk to the writer, waiting while the channel is full (a replay, which can
    /// wait for the disk, where a live capture cannot). False: the writer is gone, and the
    /// chunk's lines are counted as dropped.
    pub fn send_wait(&self, chunk: Chunk) -> bool {
        match self.tx.send(chunk) {
            Ok(()) => true,
            Err(mpsc::SendError(c)) => {
                PipelineStats::add(&self.stats.channel_full_dropped, c.lines);
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
    /// Opens (creating) the journal and starts the writer thread.
    pub fn spawn(
        cfg: JournalConfig,
        stats: Arc<PipelineStats>,
    ) -> io::Result<(JournalHandle, JournalWriter)> {
        let file = open_journal(&cfg.path)?;
        let (tx, rx) = mpsc::sync_channel::<Chunk>(cfg.channel_chunks.max(1));
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || Writer::new(file, cfg, st).run(rx))?;
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
    stats: Arc<PipelineStats>,
    buf: Vec<u8>,
    lines: u64,
    last_error_log: Option<Instant>,
    /// Bytes in the current file (its size at open plus what we appended).
    size: u64,
    /// Written since the last fsync.
    dirty: bool,
    syncer: Syncer,
    /// The rest of a line a full disk cut in the middle: written first by the next flush,
    /// so the file never keeps half a line (the ingester holds the first half and waits).
    carry: Vec<u8>,
    /// The file ends in the middle of a line (a cut one, whose rest is in `carry`).
    mid_line: bool,
}

/// A thread that fsyncs journal files so the writer never blocks on the disk. At most one
/// periodic fsync is in flight; a request while one runs is skipped and retried at the next
/// interval. Rotated files are handed over whole and fsynced before they are closed.
struct Syncer {
    tx: mpsc::SyncSender<(File, bool)>,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

impl Syncer {
    fn spawn() -> Syncer {
        let (tx, rx) = mpsc::sync_channel::<(File, bool)>(8);
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let b = busy.clone();
        let spawned = std::thread::Builder::new()
            .name("journal-fsync".into())
            .spawn(move || {
                for (file, periodic) in rx {
                    let r = if periodic {
                        file.sync_data()
                    } else {
                        file.sync_all()
                    };
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "journal fsync failed");
                    }
                    if periodic {
                        b.store(false, std::sync::atomic::Ordering::Release);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "no journal fsync thread; the kernel's writeback is all there is");
        }
        Syncer { tx, busy }
    }

    /// Asks for an fsync of `file`; false when one is still running (try again later).
    fn request(&self, file: &File) -> bool {
        use std::sync::atomic::Ordering;
        if self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        let sent = match file.try_clone() {
            Ok(f) => self.tx.try_send((f, true)).is_ok(),
            Err(_) => false,
        };
        if !sent {
            self.busy.store(false, Ordering::Release);
        }
        sent
    }

    /// Takes a rotated file: fsync, then close.
    fn finish(&self, file: File) {
        if self.tx.try_send((file, false)).is_err() {
            tracing::warn!(
                "journal fsync thread is behind; a rotated file is left to kernel writeback"
            );
        }
    }
}

impl Writer {
    fn new(file: File, cfg: JournalConfig, stats: Arc<PipelineStats>) -> Self {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Self {
            file,
            cfg,
            stats,
            buf: Vec::with_capacity(FLUSH_BYTES + 64 * 1024),
            lines: 0,
            carry: Vec::new(),
            mid_line: false,
            last_error_log: None,
            size,
            dirty: false,
            syncer: Syncer::spawn(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Chunk>) {
        let mut last_flush = Instant::now();
        let mut last_sync = Instant::now();
        loop {
            let wait = self.cfg.flush_interval.saturating_sub(last_flush.elapsed());
            let mut drained = false;
            match rx.recv_timeout(wait) {
                Ok(chunk) => {
                    self.append(chunk);
                    // Take what else is queued, then write: nobody waits for a timer.
                    while self.buf.len() < FLUSH_BYTES {
                        match rx.try_recv() {
                            Ok(chunk) => self.append(chunk),
                            Err(_) => {
                                drained = true;
                                break;
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if (drained && !self.buf.is_empty())
                || self.buf.len() >= FLUSH_BYTES
                || last_flush.elapsed() >= self.cfg.flush_interval
            {
                self.flush();
                last_flush = Instant::now();
                let sync_due = match self.cfg.fsync {
                    FsyncPolicy::Always => true,
                    FsyncPolicy::Interval => last_sync.elapsed() >= Duration::from_secs(1),
                    FsyncPolicy::Never => false,
                };
                if sync_due && self.dirty {
                    // Off the write path: an fsync of a busy journal can take longer than the
                    // channel can buffer, and writing must never wait on it.
                    if self.syncer.request(&self.file) {
                        self.dirty = false;
                        last_sync = Instant::now();
                    }
                }
            }
        }
        self.flush();
        if !self.carry.is_empty() {
            // Still no room for the end of a cut line: its record is lost (the half line
            // left in the file is dead-lettered, and counted, by the ingester).
            PipelineStats::add(&self.stats.journal_write_failed, 1);
        }
        if let Err(e) = self.file.sync_all() {
            tracing::warn!(error = %e, path = %self.cfg.path.display(), "journal fsync failed");
        }
    }

    fn append(&mut self, chunk: Chunk) {
        if self.buf.is_empty() && chunk.bytes.len() >= FLUSH_BYTES {
            // Big chunk, nothing pending: write it as is, no copy.
            let Chunk { bytes, lines } = chunk;
            let old = std::mem::replace(&mut self.buf, bytes);
            self.lines = lines;
            self.flush();
            self.buf = old;
            return;
        }
        self.buf.extend_from_slice(&chunk.bytes);
        self.lines += chunk.lines;
    }

    /// Someone deleted or replaced `events.jsonl` while we had it open: lines appended to
    /// the old inode would reach no reader, so the path is opened (created) anew first. One
    /// stat per flush; the ingester notices the new inode and follows it.
    fn reopen_if_gone(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        let ours = self.file.metadata().ok().map(|m| (m.dev(), m.ino()));
        let at_path = std::fs::metadata(&self.cfg.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && at_path == ours {
            return;
        }
        match open_journal(&self.cfg.path) {
            Ok(f) => {
                let old = std::mem::replace(&mut self.file, f);
                self.syncer.finish(old);
                self.size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
                self.dirty = false;
                tracing::warn!(path = %self.cfg.path.display(),
                    "the journal was deleted or replaced while open; writing to a new one");
            }
            Err(e) => {
                tracing::error!(error = %e, path = %self.cfg.path.display(),
                    "the journal was deleted and cannot be recreated; writing to the old file")
            }
        }
    }

    /// Size-based rotation: `events.jsonl` -> `.1` -> `.2` ...; what lands beyond `keep` is
    /// deleted once the ingester is done with it (`rotation::trim`). The ingester follows
    /// rotated files by inode, so it finishes `.1` first.
    fn rotate_if_full(&mut self) {
        if self.cfg.max_bytes == 0
            || self.size == 0
            || self.size + self.buf.len() as u64 <= self.cfg.max_bytes
        {
            return;
        }
        let path = &self.cfg.path;
        let keep = self.cfg.keep.max(1);
        let top = super::rotation::top(path, keep);
        for i in (1..=top).rev() {
            let _ = std::fs::rename(
                super::rotation::rotated(path, i),
                super::rotation::rotated(path, i + 1),
            );
        }
        let held =
            super::rotation::trim(path, keep, top + 1, self.cfg.reader.as_deref(), &self.stats);
        self.stats
            .journal_held_files
            .store(held as u64, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = std::fs::rename(&self.cfg.path, super::rotation::rotated(path, 1)) {
            tracing::error!(error = %e, path = %self.cfg.path.display(), "journal rotation failed; appending to the current file");
            return;
        }
        match open_journal(&self.cfg.path) {
            Ok(f) => {
                // The finished file is fsynced in the background; this thread moves on.
                let old = std::mem::replace(&mut self.file, f);
                self.syncer.finish(old);
                self.size = 0;
                self.dirty = false;
                tracing::info!(path = %self.cfg.path.display(), keep = self.cfg.keep, "journal rotated");
            }
            Err(e) => {
                tracing::error!(error = %e, path = %self.cfg.path.display(), "reopening the journal after rotation failed")
            }
        }
    }

    /// Appends the whole buffer; on failure, returns how many bytes went in with the error.
    fn write_buf(&mut self) -> Result<(), (usize, std::io::Error)> {
        let mut done = 0;
        while done < self.buf.len() {
            match self.file.write(&self.buf[done..]) {
                Ok(0) => return Err((done, std::io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err((done, e)),
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        if self.buf.is_empty() && self.carry.is_empty() {
            return;
        }
        if !self.carry.is_empty() {
            // The cut line's record is counted (written or lost) with this chunk.
            let mut b = std::mem::take(&mut self.carry);
            b.extend_from_slice(&self.buf);
            self.buf = b;
            self.lines += 1;
        }
        let _span = crate::dev_span!(
            parent: None,
            "collector.flush",
            lines = self.lines,
            bytes = self.buf.len()
        )
        .entered();
        self.reopen_if_gone();
        self.rotate_if_full();
        match self.write_buf() {
            Ok(()) => {
                self.mid_line = false;
                self.size += self.buf.len() as u64;
                self.dirty = true;
                PipelineStats::add(&self.stats.journal_written, self.lines);
                PipelineStats::add(&self.stats.journal_bytes, self.buf.len() as u64);
                if let Some(w) = &self.cfg.wake {
                    w.notify_one();
                }
            }
            Err((kept, e)) => {
                // A full disk can take part of the chunk: its whole lines are written, a
                // line it cut is finished by the next flush (carried), the rest are lost,
                // and counted.
                let ok = self.buf[..kept].iter().filter(|&&b| b == b'\n').count() as u64;
                // Where the file now ends: after a newline, or inside a line (cut now, or
                // still cut from before when nothing went in).
                let mid_line = if kept > 0 {
                    self.buf[kept - 1] != b'\n'
                } else {
                    self.mid_line
                };
                let mut cut = 0;
                if mid_line && let Some(end) = self.buf[kept..].iter().position(|&b| b == b'\n') {
                    self.carry = self.buf[kept..kept + end + 1].to_vec();
                    cut = 1;
                }
                self.mid_line = mid_line;
                self.size += kept as u64;
                if ok > 0 {
                    self.dirty = true;
                    PipelineStats::add(&self.stats.journal_written, ok);
                    PipelineStats::add(&self.stats.journal_bytes, kept as u64);
                    if let Some(w) = &self.cfg.wake {
                        w.notify_one();
                    }
                }
                PipelineStats::add(&self.stats.journal_write_failed, self.lines - ok - cut);
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
