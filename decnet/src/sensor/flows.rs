//! The flow table's userspace half.
//!
//! The kernel keeps per-flow state in the `FLOWS` LRU map and submits a `tcp_flow` summary
//! when a flow ends with FIN both ways or a RST. Two endings it cannot see without timers: a
//! flow that simply goes quiet, and one the LRU map evicts to make room. So userspace
//! watches every flow that may need a summary (from the first non-SYN segment or payload the
//! kernel reported) and once a second looks each one up:
//! - ended in the kernel: forgotten (the kernel summarised it, or it was a scan probe);
//! - quiet for the idle timeout: summarised here as `idle` and marked ended in the map;
//! - gone from the map: evicted; summarised from the last state read;
//! - at shutdown, still open: summarised as `shutdown`, so nothing is left unsaid.
//!
//! One lookup per watched flow per second (or, for many, one copy of the map); the watch
//! list is capped and what does not fit is counted. Scan probes (SYN / RST) never enter it.

use std::collections::HashMap as StdMap;

use aya::maps::{HashMap, MapData, MapError};
use decnet_common::{EventKind, FLOW_ENDED, FlowKey, FlowState, flow_end};

use super::{
    decode::Probe,
    decoy::{decoy_key, key_addr},
    sink::{Output, ProbeSink},
};
use crate::stats::PipelineStats;

/// Flows watched at most (the kernel map's own size).
pub(crate) const MAX_WATCHED: usize = decnet_common::MAX_FLOWS as usize;

/// Watched flows from which a sweep copies the whole map instead of looking each one up.
pub const COPY_FROM: usize = 1024;

/// What userspace remembers of a watched flow.
struct Watched {
    /// The state at the last sweep (the summary if the flow is evicted before the next).
    last: FlowState,
    decky_id: u32,
    ifindex: u32,
}

pub struct Flows {
    map: HashMap<MapData, FlowKey, FlowState>,
    watched: StdMap<FlowKey, Watched>,
    idle_ns: u64,
}

/// The kernel's key of a probe's flow (addresses IPv4-mapped, ports in wire order).
pub(crate) fn key_of(p: &Probe) -> FlowKey {
    FlowKey {
        src: decoy_key(p.src).addr,
        dst: decoy_key(p.dst).addr,
        src_port: p.src_port.to_be(),
        dst_port: p.dst_port.to_be(),
        proto: p.proto,
        _pad: [0; 3],
    }
}

impl Flows {
    pub fn new(map: HashMap<MapData, FlowKey, FlowState>) -> Self {
        Self {
            map,
            watched: StdMap::new(),
            idle_ns: 60_000_000_000,
        }
    }

    /// Flows quiet this long are summarised as idle.
    pub fn with_idle(mut self, idle: std::time::Duration) -> Self {
        self.idle_ns = idle.as_nanos().min(u64::MAX as u128) as u64;
        self
    }

    /// Follows the kernel's events: a flow's first reported segment starts watching it, its
    /// `tcp_flow` summary ends that.
    pub fn note(&mut self, p: &Probe, stats: &PipelineStats) {
        if p.proto != 6 {
            return;
        }
        match p.kind {
            EventKind::TcpSegment | EventKind::TcpPayload => {
                let key = key_of(p);
                if self.watched.contains_key(&key) {
                    return;
                }
                if self.watched.len() >= MAX_WATCHED {
                    PipelineStats::add(&stats.flows_unwatched, 1);
                    return;
                }
                self.watched.insert(
                    key,
                    Watched {
                        last: FlowState::default(),
                        decky_id: p.decky_id,
                        ifindex: p.ifindex,
                    },
                );
            }
            EventKind::TcpFlow => {
                self.watched.remove(&key_of(p));
            }
            _ => {}
        }
    }

    /// After a pinned restart: watches the open flows the last daemon was watching (every
    /// flow past its SYN that the kernel has not ended), so their idle or eviction summary
    /// still comes. `decky_of` names the decky of a decoy address; `ifindex` is the decoy
    /// interface's.
    pub(crate) fn adopt(
        &mut self,
        decky_of: impl Fn(std::net::IpAddr) -> u32,
        ifindex: u32,
    ) -> usize {
        let open: Vec<(FlowKey, FlowState)> = self
            .map
            .iter()
            .flatten()
            .filter(|(_, st)| st.seen & FLOW_ENDED == 0 && (st.pkts_fwd > 1 || st.payload_fwd > 0))
            .collect();
        for (key, st) in open.into_iter().take(MAX_WATCHED) {
            self.watched.insert(
                key,
                Watched {
                    last: st,
                    decky_id: decky_of(key_addr(&key.dst)),
                    ifindex,
                },
            );
        }
        self.watched.len()
    }

    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Summarises watched flows that went idle, were evicted, or (with `force`, at shutdown)
    /// are still open. Returns the summaries written.
    pub fn sweep<S: ProbeSink>(
        &mut self,
        now_mono: u64,
        force: bool,
        out: &mut Output<S>,
    ) -> usize {
        let _span = crate::dev_span!(parent: None, "flows.sweep", force).entered();
        let mut written = 0;
        let idle_ns = self.idle_ns;
        // Many watched flows: the whole map in a few syscalls beats one lookup each (a
        // copy of up to 65,536 entries against a syscall per flow).
        let copy: Option<StdMap<FlowKey, FlowState>> = (self.watched.len() >= COPY_FROM)
            .then(|| super::batch::entries(&self.map).ok())
            .flatten()
            .map(|all| all.into_iter().collect());
        let map = &mut self.map;
        self.watched.retain(|key, w| {
            let now = match &copy {
                Some(c) => c.get(key).copied().ok_or(MapError::KeyNotFound),
                None => map.get(key, 0),
            };
            let end = match now {
                Ok(st) if st.seen & FLOW_ENDED != 0 => return false,
                Ok(st) => {
                    w.last = st;
                    if force {
                        flow_end::SHUTDOWN
                    } else if now_mono.saturating_sub(st.last_ns) >= idle_ns {
                        flow_end::IDLE
                    } else {
                        return true;
                    }
                }
                Err(MapError::KeyNotFound) => flow_end::EVICTED,
                // A transient error: try again next sweep.
                Err(_) => return true,
            };
            let mut st = w.last;
            st.end = end;
            st.seen |= FLOW_ENDED;
            if end == flow_end::IDLE {
                // Ended in the map too, so a late packet does not restart what was summarised.
                let _ = map.insert(key, st, 0);
            }
            if st.summarised() {
                out.push_swept_flow(&summary_probe(key, w, st, now_mono));
                written += 1;
            }
            false
        });
        written
    }
}

/// A `tcp_flow` probe built from the map (the kernel builds the same when a flow ends).
fn summary_probe(key: &FlowKey, w: &Watched, st: FlowState, now_mono: u64) -> Probe {
    let mut p = Probe::summary(
        EventKind::TcpFlow,
        now_mono,
        key_addr(&key.src),
        key_addr(&key.dst),
        w.decky_id,
    );
    p.ifindex = w.ifindex;
    p.proto = key.proto;
    p.src_port = u16::from_be(key.src_port);
    p.dst_port = u16::from_be(key.dst_port);
    p.flow = Some(Box::new(st));
    p
}
