//! The flow table: a flow's first packet of a kind, its live state, and its end as a
//! `tcp_flow` summary.

use decnet_common::{
    EventKind, FLOW_ENDED, FLOW_FIN_FWD, FLOW_FIN_REV, FLOW_REPORTED, FLOW_STATE_SIZE, FLOW_WAYS,
    FlowKey, FlowSlot, FlowState, Stat, flow_end, tcp_flags,
};

use crate::{
    emit::{Emitted, emit},
    frame::{Frame, now_ns},
    maps::{FLOWS, bump, zero_words},
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

/// The state of `key`'s flow, if the table holds it (ended or not).
#[inline(always)]
pub(crate) fn flow_state(key: &FlowKey) -> Option<*mut FlowState> {
    let set = key.set();
    for way in 0..FLOW_WAYS {
        if let Some(s) = FLOWS.get_ptr_mut(set | way) {
            // SAFETY: an array slot, valid for this run: its key read, its state's address.
            unsafe {
                if (*s).key.same(key) {
                    return Some(&raw mut (*s).state);
                }
            }
        }
    }
    None
}

/// How willing a slot is to give way to a new flow: lowest first. Free and ended slots
/// (0) before live ones, and of live ones the one quiet longest.
///
/// # Safety
/// `s` is a flow table slot, valid for this run.
#[inline(always)]
unsafe fn keep_rank(s: *const FlowSlot) -> u64 {
    // SAFETY: as the caller promises.
    unsafe {
        if (*s).state.seen & FLOW_ENDED != 0 {
            0
        } else {
            (*s).state.last_ns
        }
    }
}

/// Puts a fresh flow opened by a probe seen at `now` (`reported`: its event went out) in
/// its set: in the slot that holds its key already (an ended flow of the same four-tuple),
/// else the free, ended or quietest one. A live flow that gives way is summarised by
/// userspace as evicted (sensor::flows), as when an LRU map evicted it.
#[inline(always)]
pub(crate) fn new_flow(
    key: &FlowKey,
    now: u64,
    seen: u32,
    probe_flags: u16,
    ip_len: u32,
    reported: bool,
) {
    const { assert!(FLOW_WAYS == 2) };
    let set = key.set();
    let (Some(a), Some(b)) = (FLOWS.get_ptr_mut(set), FLOWS.get_ptr_mut(set | 1)) else {
        return;
    };
    // SAFETY: array slots, valid for this run. Two CPUs opening flows in one set at once
    // may pick one slot and interleave their stores: at worst one of the two flows is
    // lost or starts with the other's first packet, as racing LRU value updates could.
    unsafe {
        let s = if (*b).key.same(key) || (!(*a).key.same(key) && keep_rank(b) < keep_rank(a)) {
            b
        } else {
            a
        };
        (*s).key = *key;
        let st = &raw mut (*s).state;
        zero_words(st);
        (*st).first_ns = now;
        (*st).last_ns = now;
        (*st).probe_ns = now;
        (*st).pkts_fwd = 1;
        (*st).bytes_fwd = ip_len as u64;
        (*st).flags_fwd = probe_flags;
        (*st).probe_flags = probe_flags;
        (*st).seen = seen | if reported { FLOW_REPORTED } else { 0 };
    }
}

/// Records `bit` for the flow; true when it was not set before (so the caller emits).
#[inline(always)]
pub(crate) fn first_of_flow(p: &Parsed, sport: u16, dport: u16, bit: u32) -> bool {
    let key = flow_key(p, sport, dport);
    if let Some(st) = flow_state(&key) {
        // SAFETY: a flow table slot, valid for this program run; racing updates on two CPUs
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

/// The live (not ended) state of a flow, and the `seen` bits of whatever the table holds
/// (0 when nothing).
#[inline(always)]
pub(crate) fn live_flow(key: &FlowKey) -> (Option<*mut FlowState>, u32) {
    match flow_state(key) {
        Some(st) => {
            // SAFETY: a flow table slot, valid for this run.
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
    // SAFETY: st is the flow's live state in its table slot.
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
