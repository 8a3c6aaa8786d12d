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

use std::{collections::HashMap, net::IpAddr, sync::Arc};

pub use journal::{Chunk, FsyncPolicy, JournalConfig, JournalHandle, JournalWriter};
pub use record::{
    FlowTimes, JournalRecord, SummaryTimes, write_flow_record, write_outcome_record,
    write_probe_record, write_suppressed_record,
};

use crate::{
    sensor::{FloodBudget, Probe, Suppressed},
    stats::PipelineStats,
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
    /// Flood guard: what was written of each source's kernel entry (kernel summaries are
    /// cumulative; records carry the difference).
    reported: HashMap<IpAddr, Reported>,
    /// The budget the counts were made under, for the summary records.
    flood: FloodBudget,
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
            reported: HashMap::new(),
            flood: FloodBudget::default(),
        }
    }

    /// The flood budget loaded into the kernel (written into summary records).
    pub fn with_flood(mut self, flood: FloodBudget) -> Self {
        self.flood = flood;
        self
    }

    /// The withheld totals already written per source (handed over across a pinned restart,
    /// where the kernel's per-source counts carry on).
    pub fn reported(&self) -> Vec<(IpAddr, Reported)> {
        self.reported.iter().map(|(ip, r)| (*ip, *r)).collect()
    }

    pub fn with_reported(mut self, reported: &[(IpAddr, Reported)]) -> Self {
        self.reported.extend(reported.iter().copied());
        self
    }

    /// True when the kernel entry `now` of `src` holds withheld events not written yet.
    pub fn unreported(&self, src: IpAddr, now: Reported) -> bool {
        unreported_delta(self.reported.get(&src).copied(), now) > 0
    }

    /// Forgets the reported counts of sources not in `live` (evicted from the kernel map:
    /// if they come back, their counters start from zero).
    pub fn forget_except(&mut self, live: &[IpAddr]) {
        if self.reported.len() > live.len() {
            let live: std::collections::HashSet<&IpAddr> = live.iter().collect();
            self.reported.retain(|ip, _| live.contains(ip));
        }
    }

    /// Re-samples the monotonic -> wall clock offset (once per batch follows NTP steps
    /// without a syscall per event).
    pub fn tick(&mut self) {
        self.clock = WallClock::now();
    }

    pub fn push(&mut self, p: &Probe) {
        if let Some(s) = &p.suppressed {
            if !self.push_summary(p, s) {
                PipelineStats::add(&self.journal.stats().summaries_merged, 1);
            }
            return;
        }
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

    /// Writes a summary the flood-guard sweep built from the kernel map.
    pub fn push_swept(&mut self, p: &Probe) {
        if let Some(s) = &p.suppressed
            && self.push_summary(p, s)
        {
            PipelineStats::add(&self.journal.stats().summaries_swept, 1);
        }
    }

    /// Writes a flow summary the flow sweep built from the kernel map.
    pub fn push_swept_flow(&mut self, p: &Probe) {
        if p.flow.is_some() {
            self.push(p);
            PipelineStats::add(&self.journal.stats().flows_swept, 1);
        }
    }

    /// A `source_suppressed` record for what the source had withheld since the last one;
    /// false (nothing written) when that is zero: a summary of an already reported total.
    fn push_summary(&mut self, p: &Probe, s: &Suppressed) -> bool {
        let now = Reported {
            first_ns: s.summary.first_ns,
            total: s.summary.suppressed,
        };
        let delta = unreported_delta(self.reported.get(&p.src).copied(), now);
        if delta == 0 {
            return false;
        }
        self.reported.insert(p.src, now);
        PipelineStats::add(&self.journal.stats().suppressed_reported, delta);
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
        true
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

/// How much of one source's flood-guard entry has been written: the entry's first withheld
/// event (kernel monotonic ns, set once per entry: it tells a re-created entry from the
/// same one) and its cumulative withheld count at the last summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reported {
    pub first_ns: u64,
    pub total: u64,
}

/// The withheld events in `now` not yet written, given what was written (`prev`).
///
/// A source's summaries come by two paths that can overtake each other: the kernel's, once
/// a second through the ring, and the map sweep's for sources gone quiet. When the ring
/// reader lags, a kernel summary can arrive after the sweep wrote a later total of the same
/// entry; it then adds nothing. Only a later entry (evicted and re-created: a later
/// `first_ns`) starts again from zero. An older entry's summary, late behind its
/// replacement's, is dropped: what it had not reported is no longer known exactly.
/// `first_ns` 0 (an older handover's total) stands for whichever entry comes.
pub fn unreported_delta(prev: Option<Reported>, now: Reported) -> u64 {
    match prev {
        None => now.total,
        Some(p) if p.first_ns == now.first_ns || p.first_ns == 0 => {
            now.total.saturating_sub(p.total)
        }
        Some(p) if now.first_ns > p.first_ns => now.total,
        Some(_) => 0,
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

#[cfg(test)]
mod tests {
    use super::{Reported, unreported_delta};

    #[test]
    fn a_late_summary_of_the_same_entry_adds_nothing() {
        let r = |first_ns, total| Reported { first_ns, total };
        assert_eq!(unreported_delta(None, r(5, 40)), 40);
        assert_eq!(unreported_delta(Some(r(5, 40)), r(5, 100)), 60);
        // The ring's summary of 13,140 after the sweep wrote 16,044 (seen in the soak).
        assert_eq!(unreported_delta(Some(r(5, 16_044)), r(5, 13_140)), 0);
        assert_eq!(unreported_delta(Some(r(5, 40)), r(5, 40)), 0);
        // Evicted and re-created: counts start again.
        assert_eq!(unreported_delta(Some(r(5, 40)), r(9, 3)), 3);
        // The old entry's summary behind its replacement's.
        assert_eq!(unreported_delta(Some(r(9, 3)), r(5, 41)), 0);
        // Taken over from an older handover, which did not name the entry.
        assert_eq!(unreported_delta(Some(r(0, 40)), r(5, 45)), 5);
    }
}
