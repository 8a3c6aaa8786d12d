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
use crate::collector::Collector;

pub struct Sources {
    map: HashMap<MapData, [u8; 16], SourceState>,
}

/// Source key (IPv4-mapped for IPv4) to address.
fn addr(key: &[u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
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
        for item in self.map.iter() {
            let Ok((key, st)) = item else { continue };
            let src = addr(&key);
            live.push(src);
            if st.suppressed == 0
                || (!force && now_mono.saturating_sub(st.last_ns) < SUMMARY_EVERY_NS)
                || !collector.unreported(src, st.suppressed)
            {
                continue;
            }
            collector.push_swept(&summary_probe(src, &st, now_mono));
            written += 1;
        }
        // Sources the kernel evicted start again from zero if they come back.
        collector.forget_except(&live);
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
    Probe {
        kind: EventKind::SourceSuppressed,
        mono_ns: now_mono,
        src,
        dst: match src {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        },
        decky_id,
        ifindex: 0,
        proto: 0,
        src_port: 0,
        dst_port: 0,
        ttl: 0,
        tos: 0,
        df: false,
        ip_id: 0,
        ip_len: 0,
        vlan_id: None,
        tcp: None,
        icmp: None,
        payload_len: 0,
        payload: Default::default(),
        suppressed: Some(Box::new(s)),
        outcome: None,
        flow: None,
    }
}

/// CLOCK_MONOTONIC now, the kernel's `bpf_ktime_get_ns` clock.
pub fn mono_now_ns() -> u64 {
    crate::timefmt::clock_ns(libc::CLOCK_MONOTONIC) as u64
}
