//! The flow table's userspace half.
//!
//! The kernel keeps per-flow state in the `FLOWS` table (an array of [`FlowSlot`]s in
//! two-way sets, found by [`FlowKey::set`]) and submits a `tcp_flow` summary when a flow
//! ends with FIN both ways or a RST. Two endings it cannot see without timers: a flow that
//! simply goes quiet, and one whose slot a new flow takes. So userspace watches every flow
//! that may need a summary (from the first non-SYN segment or payload the kernel reported)
//! and once a second looks each one up:
//! - ended in the kernel: forgotten (the kernel summarised it, or it was a scan probe);
//! - quiet for the idle timeout: summarised here as `idle` and marked ended in the table;
//! - gone from its set: evicted; summarised from the last state read;
//! - at shutdown, still open: summarised as `shutdown`, so nothing is left unsaid.
//!
//! One set read per watched flow per second (or, for many, one copy of the table); the
//! watch list is capped and what does not fit is counted. Scan probes (SYN / RST) never
//! enter it.

use std::collections::HashMap as StdMap;

use aya::maps::{Array, MapData, MapError};
use decnet_common::{EventKind, FLOW_ENDED, FLOW_WAYS, FlowKey, FlowSlot, FlowState, flow_end};

use super::{
    decode::Probe,
    decoy::{decoy_key, key_addr},
    sink::{Output, ProbeSink},
};
use crate::stats::PipelineStats;

/// Flows watched at most (the kernel map's own size).
pub(crate) const MAX_WATCHED: usize = decnet_common::MAX_FLOWS as usize;

/// Watched flows from which a sweep copies the whole table instead of looking each one up.
pub const COPY_FROM: usize = 1024;

/// What userspace remembers of a watched flow.
struct Watched {
    /// The state at the last sweep (the summary if the flow is evicted before the next).
    last: FlowState,
    decky_id: u32,
    ifindex: u32,
}

/// The table's slots, as the kernel's programs see them.
type Table = Array<MapData, FlowSlot>;

/// Where the table holds `key`'s flow: its slot and state (none when a new flow took it).
fn find(map: &Table, key: &FlowKey) -> Result<Option<(u32, FlowState)>, MapError> {
    let set = key.set();
    for way in 0..FLOW_WAYS {
        let slot = map.get(&(set | way), 0)?;
        if slot.key == *key {
            return Ok(Some((set | way, slot.state)));
        }
    }
    Ok(None)
}

/// Every flow in the table, by key: its slot and state. One copy in a few syscalls
/// (`BPF_MAP_LOOKUP_BATCH`), else (before Linux 5.6) one lookup per slot.
fn occupied(map: &Table) -> Result<StdMap<FlowKey, (u32, FlowState)>, MapError> {
    let slots: Vec<(u32, FlowSlot)> = match super::batch::entries(map) {
        Ok(all) => all,
        Err(_) => (0..)
            .zip(map.iter())
            .map(|(i, s)| s.map(|s| (i, s)))
            .collect::<Result<_, _>>()?,
    };
    Ok(slots
        .into_iter()
        .filter(|(_, s)| s.state.first_ns != 0)
        .map(|(i, s)| (s.key, (i, s.state)))
        .collect())
}

pub struct Flows {
    map: Table,
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
    pub fn new(map: Table) -> Self {
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
        let open: Vec<(FlowKey, FlowState)> = occupied(&self.map)
            .unwrap_or_default()
            .into_iter()
            .map(|(key, (_, st))| (key, st))
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
        // Many watched flows: the whole table in a few syscalls beats one set read each (a
        // copy of 65,536 slots against two syscalls per flow).
        let copy = (self.watched.len() >= COPY_FROM)
            .then(|| occupied(&self.map).ok())
            .flatten();
        let map = &mut self.map;
        self.watched.retain(|key, w| {
            let now = match &copy {
                Some(c) => Ok(c.get(key).copied()),
                None => find(map, key),
            };
            let (end, slot) = match now {
                Ok(Some((_, st))) if st.seen & FLOW_ENDED != 0 => return false,
                Ok(Some((slot, st))) => {
                    w.last = st;
                    if force {
                        (flow_end::SHUTDOWN, slot)
                    } else if now_mono.saturating_sub(st.last_ns) >= idle_ns {
                        (flow_end::IDLE, slot)
                    } else {
                        return true;
                    }
                }
                Ok(None) => (flow_end::EVICTED, 0),
                // A transient error: try again next sweep.
                Err(_) => return true,
            };
            let mut st = w.last;
            st.end = end;
            st.seen |= FLOW_ENDED;
            if end == flow_end::IDLE {
                // Ended in the table too, so a late packet does not restart what was
                // summarised; unless a new flow took the slot since it was read.
                if map.get(&slot, 0).is_ok_and(|s| s.key == *key) {
                    let _ = map.set(
                        slot,
                        FlowSlot {
                            key: *key,
                            state: st,
                        },
                        0,
                    );
                }
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

/// A `tcp_flow` probe built from the table (the kernel builds the same when a flow ends).
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
