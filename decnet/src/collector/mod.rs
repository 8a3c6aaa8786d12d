//! The collector stage: decoded probes -> journal records -> `events.jsonl`.
//!
//! - `record`: the journal record format (one JSON object per line, docs/journal.md).
//! - `journal`: the writer thread that owns the file and does nothing but I/O.
//! - `rotation`: which rotated files may go (never one the ingester has not committed).
//!
//! [`Collector`] runs in the ring-reader task: it formats each probe's line into a chunk and
//! hands whole chunks to the writer without blocking. Formatting here rather than in the
//! writer splits the per-event CPU between the two cores: on this class of machine a
//! buffered ext4 append alone costs about as much as decoding and formatting together.
//!
//! Stage 3 (collector) of the pipeline: docs/architecture.md.

pub mod journal;
pub mod record;
pub mod rotation;

use std::sync::Arc;

pub use journal::{Chunk, FsyncPolicy, JournalConfig, JournalHandle, JournalWriter};
pub use record::{
    FlowTimes, JournalRecord, SummaryTimes, write_flow_record, write_outcome_record,
    write_probe_record, write_suppressed_record,
};

use crate::{
    sensor::{FloodBudget, Probe, ProbeSink, Suppressed},
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
    /// The budget the counts were made under, for the summary records.
    flood: FloodBudget,
    /// A replay: the kernel's clock is the capture's Unix time, and chunks wait for the
    /// writer rather than being dropped.
    replay: bool,
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
            flood: FloodBudget::default(),
            replay: false,
        }
    }

    /// For `decnet replay`: the probes' times are already Unix time (the programs ran on
    /// the capture's clock), and nothing is dropped when the disk is slower than the replay.
    pub fn for_replay(mut self) -> Self {
        self.replay = true;
        self.clock = WallClock::unix();
        self
    }

    /// The flood budget loaded into the kernel (written into summary records).
    pub fn with_flood(mut self, flood: FloodBudget) -> Self {
        self.flood = flood;
        self
    }
}

impl ProbeSink for Collector {
    /// Re-samples the monotonic -> wall clock offset (once per batch follows NTP steps
    /// without a syscall per event).
    fn tick(&mut self) {
        if !self.replay {
            self.clock = WallClock::now();
        }
    }

    fn probe(&mut self, p: &Probe) {
        let decky = decky_name(&self.deckies, p.decky_id);
        // Developer tracing: each probe starts its own trace, which the ingester continues
        // through the record's traceparent. Off, this is one branch and a null span.
        let mut span = LiteSpan::root("collector.event", SpanKind::Producer);
        span.attr("event_type", || p.event_type());
        span.attr("decky", || decky.to_owned());
        span.attr("attacker_ip", || p.src.to_string());
        span.attr("dst_port", || p.dst_port as i64);
        let traceparent = span.traceparent();
        let at = self.clock.to_unix_ns(p.mono_ns);
        let tp = traceparent.as_deref();
        if let Some(o) = &p.outcome {
            let probe_at = self.clock.to_unix_ns(o.info.probe_ns);
            write_outcome_record(&mut self.chunk.bytes, p, o, decky, at, probe_at, tp);
        } else if let Some(f) = &p.flow {
            let times = FlowTimes {
                at,
                first: self.clock.to_unix_ns(f.first_ns),
                last: self.clock.to_unix_ns(f.last_ns),
            };
            write_flow_record(&mut self.chunk.bytes, p, f, decky, times, tp);
        } else {
            write_probe_record(&mut self.chunk.bytes, p, decky, at, tp);
        }
        self.chunk.lines += 1;
        if self.chunk.bytes.len() >= CHUNK_BYTES {
            self.ship();
        }
    }

    /// A `source_suppressed` record for the `delta` events the source withheld since the
    /// last one.
    fn summary(&mut self, p: &Probe, s: &Suppressed, delta: u64) {
        let deckies = self.deckies.clone();
        let decky = decky_name(&deckies, p.decky_id);
        let mut span = LiteSpan::root("collector.event", SpanKind::Producer);
        span.attr("event_type", || p.event_type());
        span.attr("attacker_ip", || p.src.to_string());
        span.attr("suppressed", || delta as i64);
        let traceparent = span.traceparent();
        let times = SummaryTimes {
            at: self.clock.to_unix_ns(p.mono_ns),
            first: self.clock.to_unix_ns(s.summary.first_ns),
            last: self.clock.to_unix_ns(s.summary.last_ns),
        };
        write_suppressed_record(
            &mut self.chunk.bytes,
            p,
            s,
            delta,
            decky,
            times,
            self.flood,
            traceparent.as_deref(),
        );
        self.chunk.lines += 1;
        if self.chunk.bytes.len() >= CHUNK_BYTES {
            self.ship();
        }
    }

    /// Hands the current chunk to the writer (a full channel counts its lines as dropped).
    fn ship(&mut self) {
        if self.chunk.lines == 0 {
            return;
        }
        let chunk = std::mem::replace(&mut self.chunk, Chunk::with_capacity(CHUNK_BYTES + 4096));
        if self.replay {
            self.journal.send_wait(chunk);
        } else {
            self.journal.send(chunk);
        }
    }
}

/// The name of decky id `id` (1-based), `unknown` when out of range.
fn decky_name(deckies: &[String], id: u32) -> &str {
    id.checked_sub(1)
        .and_then(|i| deckies.get(i as usize))
        .map(String::as_str)
        .unwrap_or("unknown")
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.ship();
    }
}
