//! The flood guard's userspace half.
//!
//! The kernel keeps a token bucket per source address (`SOURCES` map); an over-budget source
//! has its events counted there instead of sent, and the kernel submits a
//! `source_suppressed` summary at most once a second while the flood lasts. Counters are
//! cumulative, so the collector reports the difference since the last summary it wrote.
//! What the kernel cannot do is speak after the flood stops: the last second's counts would
//! wait for a packet that never comes. [`Sources::sweep`] reads the map every second and
//! writes a summary for every source that has gone quiet with unreported counts.

use std::net::IpAddr;

use aya::maps::{HashMap, MapData};
use decnet_common::{EventKind, SUMMARY_EVERY_NS, SourceState, SuppressedSummary};

use super::{Probe, Suppressed};
use crate::collector::{Collector, Reported};

pub struct Sources {
    map: HashMap<MapData, [u8; 16], SourceState>,
}

impl Sources {
    pub fn new(map: HashMap<MapData, [u8; 16], SourceState>) -> Self {
        Self { map }
    }

    /// Writes a summary for each source whose withheld events are not all reported and which
    /// has been quiet for a second (every such source when `force`, at shutdown). Returns the
    /// summaries written.
    pub fn sweep(&self, now_mono: u64, force: bool, collector: &mut Collector) -> usize {
        let _span = crate::dev_span!(parent: None, "flood_guard.sweep", force).entered();
        let mut written = 0;
        let mut live = Vec::new();
        let mut complete = true;
        for item in self.map.iter() {
            let Ok((key, st)) = item else {
                complete = false;
                continue;
            };
            let src = super::key_addr(&key);
            live.push(src);
            if st.suppressed == 0
                || (!force && now_mono.saturating_sub(st.last_ns) < SUMMARY_EVERY_NS)
                || !collector.unreported(
                    src,
                    Reported {
                        first_ns: st.first_ns,
                        total: st.suppressed,
                    },
                )
            {
                continue;
            }
            collector.push_swept(&summary_probe(src, &st, now_mono));
            written += 1;
        }
        // Sources the kernel evicted start again from zero if they come back. Only after a
        // walk that saw every entry: forgetting a live source because its entry could not be
        // read (the map changes under the walk during a flood) would report its whole total
        // a second time at the next sweep.
        if complete {
            collector.forget_except(&live);
        }
        written
    }
}

/// A `source_suppressed` probe built from the map (the kernel builds the same from a packet).
fn summary_probe(src: IpAddr, st: &SourceState, now_mono: u64) -> Probe {
    let summary = SuppressedSummary {
        suppressed: st.suppressed,
        first_ns: st.first_ns,
        last_ns: st.last_ns,
        decoys: st.decoys,
        at_ns: now_mono,
    };
    let s = Suppressed {
        summary,
        ports: st.ports,
    };
    // The lowest decky id among the decoys it hit names the record's decky.
    let decky_id = s
        .decoy_ids()
        .next()
        .map(|b| if b == 0 { 64 } else { b })
        .unwrap_or(0);
    let dst = match src {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let mut p = Probe::summary(EventKind::SourceSuppressed, now_mono, src, dst, decky_id);
    p.suppressed = Some(Box::new(s));
    p
}

/// CLOCK_MONOTONIC now, the kernel's `bpf_ktime_get_ns` clock.
pub fn mono_now_ns() -> u64 {
    crate::timefmt::clock_ns(libc::CLOCK_MONOTONIC) as u64
}
