//! The collector stage: decoded probes -> journal records -> `events.jsonl`.
//!
//! - `record`: the journal record format (one JSON object per line, see DESIGN.md).
//! - `journal`: the writer thread that owns the file and does nothing but I/O.
//!
//! [`Collector`] runs in the ring-reader task: it formats each probe's line into a chunk and
//! hands whole chunks to the writer without blocking. Formatting here rather than in the
//! writer splits the per-event CPU between the two cores: on this class of machine a
//! buffered ext4 append alone costs about as much as decoding and formatting together.

pub mod journal;
pub mod record;

use std::sync::Arc;

pub use journal::{Chunk, FsyncPolicy, JournalConfig, JournalHandle, JournalWriter};
pub use record::{JournalRecord, write_probe_record};

use crate::{
    sensor::Probe,
    telemetry::lite::{LiteSpan, SpanKind},
    timefmt::WallClock,
};

/// Formats probes into journal lines and ships them in chunks.
pub struct Collector {
    journal: JournalHandle,
    /// `deckies[i]` names decky id `i + 1`.
    deckies: Arc<[String]>,
    chunk: Chunk,
    clock: WallClock,
}

/// Bytes a chunk may grow to before it is shipped regardless of batch boundaries.
const CHUNK_BYTES: usize = 1 << 20;

impl Collector {
    pub fn new(journal: JournalHandle, deckies: Arc<[String]>) -> Self {
        Self {
            journal,
            deckies,
            chunk: Chunk::with_capacity(CHUNK_BYTES + 4096),
            clock: WallClock::now(),
        }
    }

    /// Re-samples the monotonic -> wall clock offset (once per batch follows NTP steps
    /// without a syscall per event).
    pub fn tick(&mut self) {
        self.clock = WallClock::now();
    }

    pub fn push(&mut self, p: &Probe) {
        let decky = p
            .decky_id
            .checked_sub(1)
            .and_then(|i| self.deckies.get(i as usize))
            .map(String::as_str)
            .unwrap_or("unknown");
        // Developer tracing: each probe starts its own trace, which the ingester continues
        // through the record's traceparent. Off, this is one branch and a null span.
        let mut span = LiteSpan::root("collector.event", SpanKind::Producer);
        span.attr("event_type", || p.event_type());
        span.attr("decky", || decky.to_owned());
        span.attr("attacker_ip", || p.src.to_string());
        span.attr("dst_port", || p.dst_port as i64);
        let traceparent = span.traceparent();
        write_probe_record(
            &mut self.chunk.bytes,
            p,
            decky,
            self.clock.to_unix_ns(p.mono_ns),
            traceparent.as_deref(),
        );
        self.chunk.lines += 1;
        if self.chunk.bytes.len() >= CHUNK_BYTES {
            self.ship();
        }
    }

    /// Hands the current chunk to the writer (a full channel counts its lines as dropped).
    pub fn ship(&mut self) {
        if self.chunk.lines == 0 {
            return;
        }
        let chunk = std::mem::replace(&mut self.chunk, Chunk::with_capacity(CHUNK_BYTES + 4096));
        self.journal.send(chunk);
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.ship();
    }
}
