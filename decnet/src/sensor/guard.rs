//! The flood guard's userspace half.
//!
//! The kernel keeps a token bucket per source address (`SOURCES` map); an over-budget source
//! has its events counted there instead of sent, and the kernel submits a
//! `source_suppressed` summary at most once a second while the flood lasts. Counters are
//! cumulative, so a ledger ([`super::ledger`]) keeps what was written of each source and only
//! the difference since the last summary goes on ([`super::sink::Output`]).
//! What the kernel cannot do is speak after the flood stops: the last second's counts would
//! wait for a packet that never comes. [`Sources::sweep`] reads the map every second and
//! writes a summary for every source that has gone quiet with unreported counts.

use std::net::IpAddr;

use aya::maps::{HashMap, MapData, MapError};
use decnet_common::{EventKind, SUMMARY_EVERY_NS, SourceState, SuppressedSummary};

use super::{
    decode::{Probe, Suppressed},
    decoy::key_addr,
    ledger::Reported,
    sink::{Output, ProbeSink},
};

/// The flood guard's per-source budget: `rate` events per second with bursts of `burst`.
/// A source over it has its events counted into `source_suppressed` summaries instead of
/// sent one by one. `rate` 0 turns the guard off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FloodBudget {
    pub rate: u32,
    pub burst: u32,
}

impl Default for FloodBudget {
    /// A default nmap scan (1,000 ports) and anything slower pass event by event; floods
    /// (masscan, hping3 --flood, 10^5 packets/s and more) are summarised. Every stored event
    /// costs the daemon about 80 µs of CPU across journal, SQLite and profiler on the
    /// reference 2-core machine (`cargo xtask bench capture`), so 1,000 events/s bounds
    /// what one flooding source can take at about 8% of a core, plus its answers.
    fn default() -> Self {
        Self {
            rate: 1000,
            burst: 2000,
        }
    }
}

impl FloodBudget {
    /// The kernel's form (GCRA interval and burst allowance).
    pub fn kernel(&self) -> decnet_common::GuardConfig {
        if self.rate == 0 {
            return decnet_common::GuardConfig::default();
        }
        let interval_ns = (1_000_000_000 / self.rate as u64).max(1);
        decnet_common::GuardConfig {
            interval_ns,
            burst_ns: interval_ns * self.burst.max(1) as u64,
        }
    }
}

pub struct Sources {
    map: HashMap<MapData, [u8; 16], SourceState>,
}

impl Sources {
    pub fn new(map: HashMap<MapData, [u8; 16], SourceState>) -> Self {
        Self { map }
    }

    /// How many sources the kernel holds guard state for (sources seen once hold none).
    pub fn held(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }

    /// Writes a summary for each source whose withheld events are not all reported and which
    /// has been quiet for a second (every such source when `force`, at shutdown). Returns the
    /// summaries written.
    pub fn sweep<S: ProbeSink>(&self, now_mono: u64, force: bool, out: &mut Output<S>) -> usize {
        let _span = crate::dev_span!(parent: None, "flood_guard.sweep", force).entered();
        let mut written = 0;
        let mut live = Vec::new();
        let mut complete = true;
        // In a few syscalls; entry by entry (two each) where the kernel cannot batch.
        let all: Vec<Result<([u8; 16], SourceState), MapError>> =
            match super::batch::entries(&self.map) {
                Ok(all) => all.into_iter().map(Ok).collect(),
                Err(_) => self.map.iter().collect(),
            };
        for item in all {
            let Ok((key, st)) = item else {
                complete = false;
                continue;
            };
            let src = key_addr(&key);
            live.push(src);
            if st.suppressed == 0
                || (!force && now_mono.saturating_sub(st.last_ns) < SUMMARY_EVERY_NS)
                || !out.ledger().unreported(
                    src,
                    Reported {
                        first_ns: st.first_ns,
                        total: st.suppressed,
                    },
                )
            {
                continue;
            }
            out.push_swept(&summary_probe(src, &st, now_mono));
            written += 1;
        }
        // Sources the kernel evicted start again from zero if they come back. Only after a
        // walk that saw every entry: forgetting a live source because its entry could not be
        // read (the map changes under the walk during a flood) would report its whole total
        // a second time at the next sweep.
        if complete {
            out.forget_except(&live);
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
