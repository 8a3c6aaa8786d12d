//! Userspace pipeline counters. Every place an event can be lost has one, so that
//! kernel emitted + swept summaries (flood guard and flows) == ring read + swept summaries
//! == journal written + counted drops + merged summaries can be checked at any time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Entries taken off the ring.
    pub ring_read: AtomicU64,
    /// Ring entries that did not decode (short or unknown kind).
    pub decode_errors: AtomicU64,
    /// Probes dropped because the reader -> writer channel was full.
    pub channel_full_dropped: AtomicU64,
    /// Journal lines written (handed to write(2) successfully).
    pub journal_written: AtomicU64,
    /// Journal lines lost to write errors (disk full, I/O error).
    pub journal_write_failed: AtomicU64,
    pub journal_bytes: AtomicU64,
    /// Flood-guard summaries written by the userspace sweep (not from the ring).
    pub summaries_swept: AtomicU64,
    /// Kernel flood-guard summaries with nothing new (a sweep had reported their counts,
    /// or a later total of the same entry, when the ring reader lagged): read from the
    /// ring, deliberately not written.
    pub summaries_merged: AtomicU64,
    /// Withheld events the written `source_suppressed` records account for (the sum of their
    /// `suppressed`): once a flood has been quiet for a second this equals the kernel's
    /// `suppressed` counter.
    pub suppressed_reported: AtomicU64,
    /// `tcp_flow` summaries written by the userspace flow sweep (idle, evicted, shutdown).
    pub flows_swept: AtomicU64,
    /// Flows not watched for idle/eviction because the watch list was full (their kernel
    /// summary on FIN/RST still comes).
    pub flows_unwatched: AtomicU64,
}

/// A point-in-time copy for the API and logs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PipelineSnapshot {
    pub ring_read: u64,
    pub decode_errors: u64,
    pub channel_full_dropped: u64,
    pub journal_written: u64,
    pub journal_write_failed: u64,
    pub journal_bytes: u64,
    pub summaries_swept: u64,
    pub summaries_merged: u64,
    pub suppressed_reported: u64,
    pub flows_swept: u64,
    pub flows_unwatched: u64,
}

impl PipelineStats {
    pub fn snapshot(&self) -> PipelineSnapshot {
        PipelineSnapshot {
            ring_read: self.ring_read.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            channel_full_dropped: self.channel_full_dropped.load(Relaxed),
            journal_written: self.journal_written.load(Relaxed),
            journal_write_failed: self.journal_write_failed.load(Relaxed),
            journal_bytes: self.journal_bytes.load(Relaxed),
            summaries_swept: self.summaries_swept.load(Relaxed),
            summaries_merged: self.summaries_merged.load(Relaxed),
            suppressed_reported: self.suppressed_reported.load(Relaxed),
            flows_swept: self.flows_swept.load(Relaxed),
            flows_unwatched: self.flows_unwatched.load(Relaxed),
        }
    }

    /// Counters that continue a pinned sensor's totals after a clean restart (`handover`).
    pub fn restore(s: &PipelineSnapshot) -> Self {
        Self {
            ring_read: s.ring_read.into(),
            decode_errors: s.decode_errors.into(),
            channel_full_dropped: s.channel_full_dropped.into(),
            journal_written: s.journal_written.into(),
            journal_write_failed: s.journal_write_failed.into(),
            journal_bytes: s.journal_bytes.into(),
            summaries_swept: s.summaries_swept.into(),
            summaries_merged: s.summaries_merged.into(),
            suppressed_reported: s.suppressed_reported.into(),
            flows_swept: s.flows_swept.into(),
            flows_unwatched: s.flows_unwatched.into(),
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
