//! The flow table: a flow's first packet of a kind, its live state, and its end as a
//! `tcp_flow` summary.

use decnet_common::{
    EventKind, FLOW_ENDED, FLOW_FIN_FWD, FLOW_FIN_REV, FLOW_REPORTED, FLOW_STATE_SIZE, FlowKey,
    FlowState, Stat, flow_end, tcp_flags,
};

use crate::{
    emit::{Emitted, emit},
    frame::{Frame, now_ns},
    maps::{FLOW_SCRATCH, FLOWS, bump, zero_words},
    parse::Parsed,
};

#[inline(always)]
pub(crate) fn flow_key(p: &Parsed, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        src: p.src,
        dst: p.dst,
        src_port: sport,
        dst_port: dport,
        proto: p.proto,
        _pad: [0; 3],
    }
}

/// Inserts a fresh flow opened by a probe seen at `now` (`reported`: its event went out).
#[inline(always)]
pub(crate) fn new_flow(
    key: &FlowKey,
    now: u64,
    seen: u32,
    probe_flags: u16,
    ip_len: u32,
    reported: bool,
) {
    let Some(st) = FLOW_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, ours for this run.
    unsafe {
        zero_words(st);
        (*st).first_ns = now;
        (*st).last_ns = now;
        (*st).probe_ns = now;
        (*st).pkts_fwd = 1;
        (*st).bytes_fwd = ip_len as u64;
        (*st).flags_fwd = probe_flags;
        (*st).probe_flags = probe_flags;
        (*st).seen = seen | if reported { FLOW_REPORTED } else { 0 };
        let _ = FLOWS.insert(key, &*st, 0);
    }
}

/// Records `bit` for the flow; true when it was not set before (so the caller emits).
#[inline(always)]
pub(crate) fn first_of_flow(p: &Parsed, sport: u16, dport: u16, bit: u32) -> bool {
    let key = flow_key(p, sport, dport);
    if let Some(st) = FLOWS.get_ptr_mut(&key) {
        // SAFETY: LRU value pointer valid for this program run; racing updates on two CPUs
        // at worst emit one extra event, never lose one.
        unsafe {
            if (*st).seen & bit != 0 {
                return false;
            }
            (*st).seen |= bit;
        }
        return true;
    }
    new_flow(&key, now_ns(), bit, 0, p.ip_len, true);
    true
}

/// The live (not ended) state of a flow, and the `seen` bits of whatever the map holds
/// (0 when nothing).
#[inline(always)]
pub(crate) fn live_flow(key: &FlowKey) -> (Option<*mut FlowState>, u32) {
    match FLOWS.get_ptr_mut(key) {
        Some(st) => {
            // SAFETY: an LRU value pointer, valid for this run.
            let seen = unsafe { (*st).seen };
            let live = if seen & FLOW_ENDED == 0 {
                Some(st)
            } else {
                None
            };
            (live, seen)
        }
        None => (None, 0),
    }
}

/// How a segment with `flags` ends its flow (given the flow's `seen` bits after it): a RST
/// ends it as `rst` says (who sent it), the second FIN as a FIN exchange.
#[inline(always)]
pub(crate) fn flow_end_of(flags: u16, seen: u32, rst: u8) -> u8 {
    if flags & tcp_flags::RST != 0 {
        rst
    } else if seen & (FLOW_FIN_FWD | FLOW_FIN_REV) == FLOW_FIN_FWD | FLOW_FIN_REV {
        flow_end::FIN
    } else {
        flow_end::OPEN
    }
}

/// Marks a flow ended and, when it carried more than a scan probe, emits its `tcp_flow`
/// summary. `p` is oriented attacker -> decoy.
#[inline(always)]
pub(crate) fn end_flow<F: Frame>(
    ctx: &F,
    p: &Parsed,
    decky_id: u32,
    key: &FlowKey,
    st: *mut FlowState,
    end: u8,
    now: u64,
) {
    // SAFETY: st is the flow's live LRU value.
    let summarised = unsafe {
        (*st).seen |= FLOW_ENDED;
        (*st).end = end;
        (*st).summarised()
    };
    if !summarised {
        return;
    }
    let dport = key.dst_port;
    let sent = emit(
        ctx,
        p,
        decky_id,
        EventKind::TcpFlow,
        0,
        Some(u16::from_be(dport)),
        now,
        |ev| {
            ev.src_port = key.src_port;
            ev.dst_port = dport;
            ev.proto = key.proto;
            // Word by word: the payload array is 8-aligned in the ring entry (offset 136).
            let src = st as *const u64;
            let dst = ev.payload.as_mut_ptr() as *mut u64;
            for i in 0..FLOW_STATE_SIZE / 8 {
                // SAFETY: both ranges are FLOW_STATE_SIZE bytes long and 8-aligned.
                unsafe { *dst.add(i) = *src.add(i) };
            }
            ev.payload_cap = FLOW_STATE_SIZE as u8;
        },
    );
    if sent == Emitted::Sent {
        bump(Stat::FlowSummaries);
    }
}
