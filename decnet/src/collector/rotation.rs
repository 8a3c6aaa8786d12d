//! Which rotated journal files may be deleted: never one the ingester has not committed,
//! up to a hard limit.
//!
//! Rotation shifts `events.jsonl.N` to `.N+1`. A file beyond `keep` goes once the ingester
//! has committed all of it (its published [`ReadPosition`] is in a newer file, or at this
//! file's end). An unread one is held, counted and warned about, up to `keep` files more;
//! past that the oldest held file is deleted and its unread lines are counted as
//! `journal_rotated_unread`, a drop like any other, so kernel emitted == written + counted
//! drops still holds. The file the ingester is reading is never deleted.

use std::{
    io::{BufRead as _, Seek as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
};

use crate::stats::PipelineStats;

/// The ingester's committed position in the journal, published after each commit.
#[derive(Debug, Default)]
pub struct ReadPosition {
    dev: AtomicU64,
    ino: AtomicU64,
    offset: AtomicU64,
    known: AtomicBool,
}

impl ReadPosition {
    pub fn publish(&self, dev: u64, ino: u64, offset: u64) {
        self.dev.store(dev, Relaxed);
        self.ino.store(ino, Relaxed);
        self.offset.store(offset, Relaxed);
        self.known.store(true, Relaxed);
    }

    fn get(&self) -> Option<(u64, u64, u64)> {
        self.known.load(Relaxed).then(|| {
            (
                self.dev.load(Relaxed),
                self.ino.load(Relaxed),
                self.offset.load(Relaxed),
            )
        })
    }
}

/// `path.N`.
pub(crate) fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut p = path.to_owned().into_os_string();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// The highest rotated index present (at least `keep`, the names rotation always shifts).
/// [`trim`] leaves no gap above `keep`, so the files beyond it are `keep + 1 ..= top`.
pub(crate) fn top(path: &Path, keep: usize) -> usize {
    let mut top = keep;
    while rotated(path, top + 1).exists() {
        top += 1;
    }
    top
}

/// What the ingester has left of `path.n`.
enum Left {
    Nothing,
    /// Unread from this offset.
    From(u64),
    /// The file the ingester is reading now.
    Reading,
}

fn left(path: &Path, n: usize, reader: Option<&ReadPosition>) -> Left {
    let Ok(m) = std::fs::metadata(rotated(path, n)) else {
        return Left::Nothing;
    };
    let Some((dev, ino, offset)) = reader.and_then(ReadPosition::get) else {
        // No ingester has said where it is: all of it may be unread.
        return Left::From(0);
    };
    if (m.dev(), m.ino()) == (dev, ino) {
        return if offset >= m.len() {
            Left::Nothing
        } else {
            Left::Reading
        };
    }
    // The ingester is in a newer file (the live journal or a lower index): this one is done.
    let newer = std::iter::once(path.to_owned()).chain((1..n).map(|i| rotated(path, i)));
    for p in newer {
        if let Ok(m) = std::fs::metadata(&p)
            && (m.dev(), m.ino()) == (dev, ino)
        {
            return Left::Nothing;
        }
    }
    Left::From(0)
}

/// Lines (newline-terminated, and a torn last one) of `p` from `offset`.
fn lines_from(p: &Path, offset: u64) -> u64 {
    let Ok(mut f) = std::fs::File::open(p) else {
        return 0;
    };
    if f.seek(std::io::SeekFrom::Start(offset)).is_err() {
        return 0;
    }
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let (mut lines, mut torn) = (0u64, false);
    loop {
        let buf = match r.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(b) => b,
        };
        lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        torn = buf.last() != Some(&b'\n');
        let n = buf.len();
        r.consume(n);
    }
    lines + torn as u64
}

/// After a rotation: deletes the files beyond `keep` (`keep + 1 ..= top`) the ingester is
/// done with, holds up to `keep` unread ones, and deletes (counting their unread lines) the
/// oldest unread ones past that. Returns how many files are held.
pub(crate) fn trim(
    path: &Path,
    keep: usize,
    top: usize,
    reader: Option<&ReadPosition>,
    stats: &PipelineStats,
) -> usize {
    let mut held = 0;
    for n in keep + 1..=top {
        let p = rotated(path, n);
        match left(path, n, reader) {
            Left::Nothing => {
                let _ = std::fs::remove_file(&p);
            }
            Left::Reading => held += 1,
            Left::From(_) if held < keep => {
                held += 1;
                tracing::warn!(
                    file = %p.display(),
                    held,
                    limit = keep,
                    "journal rotation: keeping a file the ingester has not finished"
                );
            }
            Left::From(offset) => {
                let lost = lines_from(&p, offset);
                let _ = std::fs::remove_file(&p);
                PipelineStats::add(&stats.journal_rotated_unread, lost);
                tracing::error!(
                    file = %p.display(),
                    lines = lost,
                    limit = keep,
                    "journal rotation: past the limit of held files; deleted a file the \
                     ingester had not finished (counted in journal_rotated_unread)"
                );
            }
        }
    }
    // Close the gaps deletions left, oldest last, so the held files stay `keep + 1 ..=
    // keep + held` (where the ingester looks; renaming keeps the inode it follows).
    let mut next = keep + 1;
    for n in keep + 1..=top {
        let p = rotated(path, n);
        if p.exists() {
            if n != next {
                let _ = std::fs::rename(&p, rotated(path, next));
            }
            next += 1;
        }
    }
    held
}
