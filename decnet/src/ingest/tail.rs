//! Following the journal across appends, rotation and truncation.
//!
//! The position is a [`Cursor`]: file identity (device, inode) plus the byte offset just
//! after the last complete line consumed. The identity is what lets a restart find its file
//! again after rotation renamed it to `events.jsonl.1` (or further): the tail finishes that
//! file to its end, then moves to the next newer one, until it is on the live file.
//! Only complete lines are returned; a partial last line waits for its newline.

use std::{
    fs::File,
    io,
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Where ingestion stands; persisted with each batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
}

/// Things the tail noticed, for counters and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TailEvents {
    pub rotations: u64,
    pub truncations: u64,
    /// The saved file could not be found again (rotated out of the kept set, or deleted).
    pub cursor_lost: u64,
    /// Bytes of a partial line left at the end of a rotated file (dead-lettered).
    pub torn_tails: u64,
}

/// One complete line (without the newline) and the offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// What the tail did after reaching the end of its file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EndOfFile {
    /// Still the live file; wait for more.
    Wait,
    /// Moved to another file (rotation); any torn partial line of the old file is returned.
    Switched { torn: Option<Line> },
    /// The file shrank below the cursor: restarted at 0.
    Truncated,
}

pub struct Tail {
    dir: PathBuf,
    base: String,
    /// How many rotated files (`base.1` ..= `base.keep`) to search.
    keep: usize,
    file: Option<File>,
    name: String,
    cursor: Cursor,
    /// Bytes read past `cursor.offset` that do not yet end in a newline.
    pending: Vec<u8>,
    /// Where reads land: allocated and zeroed once. Zeroing a fresh megabyte for every read
    /// (most of which, while following, return a few lines or nothing) was the ingester's
    /// biggest cost under a steady trickle of probes.
    scratch: Vec<u8>,
    pub events: TailEvents,
}

const READ_CHUNK: usize = 1 << 20;

fn ident(f: &File) -> io::Result<(u64, u64, u64)> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino(), m.len()))
}

impl Tail {
    /// Opens at `saved` when its file can be found among `base`, `base.1` ..= `base.keep`;
    /// without a saved cursor, at the start of the oldest file present.
    pub fn open(dir: &Path, base: &str, keep: usize, saved: Option<Cursor>) -> io::Result<Tail> {
        let mut t = Tail {
            dir: dir.to_owned(),
            base: base.to_owned(),
            keep,
            file: None,
            name: base.to_owned(),
            cursor: Cursor::default(),
            pending: Vec::new(),
            scratch: Vec::new(),
            events: TailEvents::default(),
        };
        let files = t.candidates();
        match saved {
            Some(c) => match files
                .iter()
                .find(|(_, f, d, i)| (*d, *i) == (c.dev, c.ino) && f.is_some())
            {
                Some((name, _, _, _)) => {
                    t.switch_to(name)?;
                    t.cursor.offset = c.offset;
                }
                None => {
                    // Its file is gone. Starting at the live file's beginning may repeat or
                    // skip lines of the lost file; it is counted and logged, never silent.
                    t.events.cursor_lost += 1;
                    tracing::warn!(
                        dev = c.dev,
                        ino = c.ino,
                        offset = c.offset,
                        "journal file of the saved cursor is gone; resuming at the start of the live journal"
                    );
                    t.switch_to(&t.base.clone())?;
                }
            },
            None => {
                let oldest = files
                    .iter()
                    .rev()
                    .find(|(_, f, _, _)| f.is_some())
                    .map(|(n, ..)| n.clone());
                t.switch_to(&oldest.unwrap_or_else(|| t.base.clone()))?;
            }
        }
        Ok(t)
    }

    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Bytes in the current file past the cursor: written, not yet ingested.
    pub(crate) fn unread_bytes(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len().saturating_sub(self.cursor.offset))
    }

    /// Name of the file being read (for dead letters).
    pub fn file_name(&self) -> &str {
        &self.name
    }

    /// `[(name, open file?, dev, ino)]` for base, base.1 .. base.keep, newest first.
    fn candidates(&self) -> Vec<(String, Option<()>, u64, u64)> {
        let mut out = Vec::with_capacity(self.keep + 1);
        for i in 0..=self.keep {
            let name = if i == 0 {
                self.base.clone()
            } else {
                format!("{}.{i}", self.base)
            };
            match std::fs::metadata(self.dir.join(&name)) {
                Ok(m) => out.push((name, Some(()), m.dev(), m.ino())),
                Err(_) => out.push((name, None, 0, 0)),
            }
        }
        out
    }

    fn switch_to(&mut self, name: &str) -> io::Result<()> {
        match File::open(self.dir.join(name)) {
            Ok(f) => {
                let (dev, ino, _) = ident(&f)?;
                self.file = Some(f);
                self.cursor = Cursor {
                    dev,
                    ino,
                    offset: 0,
                };
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The live journal does not exist yet; the writer creates it.
                self.file = None;
                self.cursor = Cursor::default();
            }
            Err(e) => return Err(e),
        }
        self.name = name.to_owned();
        self.pending.clear();
        Ok(())
    }

    /// Appends up to `max` complete lines to `out`. Returns how many; 0 means end of file
    /// for now (call [`Tail::at_end`]). The cursor moves past every line returned.
    pub(crate) fn read_lines(&mut self, max: usize, out: &mut Vec<Line>) -> io::Result<usize> {
        let mut n = 0;
        // Lines are cut out of `pending` by index; the consumed prefix is dropped once per
        // read, not once per line (that would copy the buffer for every line).
        let mut start = 0;
        while n < max {
            if let Some(pos) = memchr::memchr(b'\n', &self.pending[start..]) {
                let bytes = self.pending[start..start + pos].to_vec();
                let offset = self.cursor.offset;
                self.cursor.offset += pos as u64 + 1;
                start += pos + 1;
                out.push(Line { offset, bytes });
                n += 1;
                continue;
            }
            let Some(file) = &self.file else { break };
            self.pending.drain(..start);
            start = 0;
            let at = self.cursor.offset + self.pending.len() as u64;
            if self.scratch.len() != READ_CHUNK {
                self.scratch = vec![0; READ_CHUNK];
            }
            let got = file.read_at(&mut self.scratch, at)?;
            if got == 0 {
                break;
            }
            self.pending.extend_from_slice(&self.scratch[..got]);
        }
        self.pending.drain(..start);
        Ok(n)
    }

    /// Called when [`Tail::read_lines`] returned 0: detects truncation and rotation.
    /// Rotation is followed only once the current file has been read to its end.
    pub(crate) fn at_end(&mut self) -> io::Result<EndOfFile> {
        let Some(file) = &self.file else {
            // No live journal yet: open it if it appeared.
            self.switch_to(&self.base.clone())?;
            return Ok(if self.file.is_some() {
                EndOfFile::Switched { torn: None }
            } else {
                EndOfFile::Wait
            });
        };
        let (_, _, len) = ident(file)?;
        if len < self.cursor.offset {
            self.events.truncations += 1;
            tracing::warn!(file = %self.name, len, offset = self.cursor.offset, "journal truncated; restarting at 0");
            self.cursor.offset = 0;
            self.pending.clear();
            return Ok(EndOfFile::Truncated);
        }
        // Fast path, taken at nearly every end of file: the live name is still our file.
        // (Listing the rotated names costs keep + 1 stats, every few milliseconds while
        // following a trickle.)
        if let Ok(m) = std::fs::metadata(self.dir.join(&self.base))
            && (m.dev(), m.ino()) == (self.cursor.dev, self.cursor.ino)
        {
            return Ok(EndOfFile::Wait);
        }
        let files = self.candidates();
        let me = files
            .iter()
            .position(|(_, f, d, i)| f.is_some() && (*d, *i) == (self.cursor.dev, self.cursor.ino));
        let (next, want) = match me {
            Some(0) => return Ok(EndOfFile::Wait),
            // Rotated: the next newer file is one index down.
            Some(i) => (files[i - 1].0.clone(), (files[i - 1].2, files[i - 1].3)),
            // Ours was deleted or rotated out: continue with the oldest file still there.
            None => match files.iter().rev().find(|(_, f, ..)| f.is_some()) {
                Some((n, _, d, i)) => (n.clone(), (*d, *i)),
                None => return Ok(EndOfFile::Wait),
            },
        };
        // Bytes appended between the last read and the rename are read before switching.
        if let Some(file) = &self.file {
            let (_, _, len) = ident(file)?;
            if len > self.cursor.offset + self.pending.len() as u64 {
                return Ok(EndOfFile::Wait);
            }
        }
        // Open the successor and make sure it is the file just listed: the writer may have
        // rotated again in between, and the name would then lead one file too far (a whole
        // file's lines skipped). If so, look again on the next call.
        let f = match File::open(self.dir.join(&next)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(EndOfFile::Wait),
            Err(e) => return Err(e),
        };
        let (dev, ino, _) = ident(&f)?;
        if (dev, ino) != want {
            return Ok(EndOfFile::Wait);
        }
        let torn = (!self.pending.is_empty()).then(|| {
            self.events.torn_tails += 1;
            Line {
                offset: self.cursor.offset,
                bytes: std::mem::take(&mut self.pending),
            }
        });
        self.events.rotations += 1;
        tracing::info!(from = %self.name, to = %next, "journal rotated; following");
        self.file = Some(f);
        self.cursor = Cursor {
            dev,
            ino,
            offset: 0,
        };
        self.name = next;
        self.pending.clear();
        Ok(EndOfFile::Switched { torn })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn append(dir: &Path, name: &str, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8(l.bytes.clone()).unwrap())
            .collect()
    }

    fn drain(t: &mut Tail) -> Vec<String> {
        let mut out = vec![];
        t.read_lines(usize::MAX, &mut out).unwrap();
        texts(&out)
    }

    #[test]
    fn empty_and_missing_files_wait() {
        let d = tempfile::tempdir().unwrap();
        let mut t = Tail::open(d.path(), "events.jsonl", 3, None).unwrap();
        assert!(drain(&mut t).is_empty());
        assert_eq!(t.at_end().unwrap(), EndOfFile::Wait);
        append(d.path(), "events.jsonl", "");
        assert_eq!(t.at_end().unwrap(), EndOfFile::Switched { torn: None });
        assert!(drain(&mut t).is_empty());
        append(d.path(), "events.jsonl", "a\n");
        assert_eq!(drain(&mut t), ["a"]);
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), "events.jsonl", "one\ntw");
        let mut t = Tail::open(d.path(), "events.jsonl", 3, None).unwrap();
        assert_eq!(drain(&mut t), ["one"]);
        assert_eq!(t.cursor().offset, 4);
        append(d.path(), "events.jsonl", "o\nthree\n");
        let mut out = vec![];
        t.read_lines(usize::MAX, &mut out).unwrap();
        assert_eq!(texts(&out), ["two", "three"]);
        assert_eq!(out[0].offset, 4);
        assert_eq!(t.cursor().offset, 14);
    }

    #[test]
    fn max_lines_is_respected_and_cursor_restores() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), "events.jsonl", "1\n2\n3\n4\n");
        let mut t = Tail::open(d.path(), "events.jsonl", 3, None).unwrap();
        let mut out = vec![];
        assert_eq!(t.read_lines(2, &mut out).unwrap(), 2);
        let c = t.cursor();
        assert_eq!(c.offset, 4);
        // "Restart" from the saved cursor.
        let mut t = Tail::open(d.path(), "events.jsonl", 3, Some(c)).unwrap();
        assert_eq!(drain(&mut t), ["3", "4"]);
    }

    #[test]
    fn rotation_mid_file_finishes_the_old_file_first() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), "events.jsonl", "a\nb\n");
        let mut t = Tail::open(d.path(), "events.jsonl", 3, None).unwrap();
        let mut out = vec![];
        t.read_lines(1, &mut out).unwrap();
        let saved = t.cursor();
        // The writer appends, rotates, and writes to a new file.
        append(d.path(), "events.jsonl", "c\n");
        std::fs::rename(
            d.path().join("events.jsonl"),
            d.path().join("events.jsonl.1"),
        )
        .unwrap();
        append(d.path(), "events.jsonl", "d\n");
        assert_eq!(drain(&mut t), ["b", "c"]);
        assert!(matches!(
            t.at_end().unwrap(),
            EndOfFile::Switched { torn: None }
        ));
        assert_eq!(drain(&mut t), ["d"]);
        assert_eq!(t.at_end().unwrap(), EndOfFile::Wait);
        assert_eq!(t.events.rotations, 1);

        // A restart from the cursor saved before the rotation finds events.jsonl.1.
        let mut t = Tail::open(d.path(), "events.jsonl", 3, Some(saved)).unwrap();
        assert_eq!(drain(&mut t), ["b", "c"]);
        assert!(matches!(t.at_end().unwrap(), EndOfFile::Switched { .. }));
        assert_eq!(drain(&mut t), ["d"]);
    }

    #[test]
    fn two_rotations_while_down_are_walked_in_order() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), "events.jsonl", "a\n");
        let t = Tail::open(d.path(), "events.jsonl", 3, None).unwrap();
        let saved = t.cursor();
        std::fs::rename(
            d.path().join("events.jsonl"),
            d.path().join("events.jsonl.1"),
        )
        .unwrap();
        append(d.path(), "events.jsonl", "b\n");
        std::fs::rename(
            d.path().join("events.jsonl.1"),
            d.path().join("events.jsonl.2"),
        )
        .unwrap();
        std::fs::rename(
            d.path().join("events.jsonl"),
            d.path().join("events.jsonl.1"),
        )
        .unwrap();
        append(d.path(), "events.jsonl", "c\n");
        let mut t = Tail::open(d.path(), "events.jsonl", 3, Some(saved)).unwrap();
        let mut all = vec![];
        for _ in 0..5 {
            all.extend(drain(&mut t));
            if t.at_end().unwrap() == EndOfFile::Wait {
                break;
            }
        }
        assert_eq!(all, ["a", "b", "c"]);
    }

    #[test]
    fn truncation_restarts_at_zero_and_is_counted() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), "events.jsonl", "aaaa\nbbbb\n");
        let mut t = Tail::open(d.path(), "events.jsonl", 3, None).unwrap();
        assert_eq!(drain(&mut t).len(), 2);
        std::fs::OpenOptions::new()
            .write(true)
            .open(d.path().join("events.jsonl"))
            .unwrap()
            .set_len(0)
            .unwrap();
        append(d.path(), "events.jsonl", "x\n");
        assert_eq!(t.at_end().unwrap(), EndOfFile::Truncated);
        assert_eq!(drain(&mut t), ["x"]);
        assert_eq!(t.events.truncations, 1);
    }

    #[test]
    fn a_file_replaced_by_another_inode_is_followed() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), "events.jsonl", "old\n");
        let mut t = Tail::open(d.path(), "events.jsonl", 3, None).unwrap();
        assert_eq!(drain(&mut t), ["old"]);
        // Deleted and recreated (journal deleted while running): a different inode.
        std::fs::remove_file(d.path().join("events.jsonl")).unwrap();
        append(d.path(), "events.jsonl", "new\n");
        assert!(matches!(t.at_end().unwrap(), EndOfFile::Switched { .. }));
        assert_eq!(drain(&mut t), ["new"]);
    }

    #[test]
    fn torn_tail_of_a_rotated_file_is_returned() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), "events.jsonl", "a\npart");
        let mut t = Tail::open(d.path(), "events.jsonl", 3, None).unwrap();
        assert_eq!(drain(&mut t), ["a"]);
        std::fs::rename(
            d.path().join("events.jsonl"),
            d.path().join("events.jsonl.1"),
        )
        .unwrap();
        append(d.path(), "events.jsonl", "b\n");
        match t.at_end().unwrap() {
            EndOfFile::Switched { torn: Some(l) } => {
                assert_eq!(l.bytes, b"part");
                assert_eq!(l.offset, 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(drain(&mut t), ["b"]);
    }

    #[test]
    fn lost_cursor_is_counted() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), "events.jsonl", "a\n");
        let t = Tail::open(
            d.path(),
            "events.jsonl",
            3,
            Some(Cursor {
                dev: 1,
                ino: 999_999_999,
                offset: 5,
            }),
        )
        .unwrap();
        assert_eq!(t.events.cursor_lost, 1);
        assert_eq!(t.cursor().offset, 0);
    }
}
