//! Packets a decoy sends (TC egress): its answers become probe outcomes, and count into
//! their flows.

use aya_ebpf::programs::TcContext;
use decnet_common::{
    EventKind, FAMILY_V4, FAMILY_V6, FLOW_DECOY_OPENED, FLOW_FIN_REV, FLOW_OUTCOME, FLOW_REPORTED,
    FLOW_REV_PAYLOAD, FLOW_SYNACK, FlowKey, FlowState, OUTCOME_OPT_LEN, OutcomeInfo,
    SUMMARY_EVERY_NS, Stat, flow_end, tcp_flags,
};

use crate::{
    emit::submit,
    flows::{end_flow, flow_end_of, flow_key, flow_state, live_flow, new_flow},
    frame::{Frame, Stop, bytes_at, coarse_ns, now_ns},
    maps::{
        EGRESS, FORWARD, HOT_ANSWER_NS, PARSED, SOURCES, WITHHELD_HOT, addr_words, bump, decoy_id,
        may_be_decoy,
    },
    parse::{
        End, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L4_OFF_MAX, Parsed, addr_tail,
        parse_ip,
    },
};

#[inline(always)]
pub(crate) fn try_egress(ctx: &TcContext) -> Result<(), Stop> {
    // The other hosts' packets leave without the parse and the hash lookup (see ingress).
    if addr_tail(ctx, End::Src).is_some_and(|t| !may_be_decoy(t)) {
        return Err(Stop::Pass);
    }
    let Some(p) = PARSED.get_ptr_mut(EGRESS) else {
        return Err(Stop::Pass);
    };
    // SAFETY: this program's per-CPU slot, ours for this run (see PARSED).
    let p = unsafe { &mut *p };
    parse_ip(ctx, p)?;
    let p = &*p;
    if p.vlan_depth != 0 && !may_be_decoy(u16::from_be_bytes([p.src[14], p.src[15]])) {
        return Err(Stop::Pass);
    }
    let Some(decky_id) = decoy_id(&p.src, EGRESS) else {
        return Err(Stop::Pass);
    };
    bump(Stat::EgressFromDecoy);
    match p.proto {
        IPPROTO_TCP if p.l4_off != 0 => egress_tcp(ctx, p, decky_id),
        IPPROTO_UDP if p.l4_off != 0 => egress_udp(ctx, p),
        IPPROTO_ICMP if p.l4_off != 0 && p.family == FAMILY_V4 => egress_icmp(ctx, p, decky_id),
        IPPROTO_ICMPV6 if p.l4_off != 0 && p.family == FAMILY_V6 => egress_icmp(ctx, p, decky_id),
        _ => Ok(()),
    }
}

/// The attacker -> decoy view of a decoy packet's flow, for the events it causes: in
/// `PARSED`'s slot [`FORWARD`], off the stack as the packet's own headers are.
#[inline(always)]
pub(crate) fn forward(p: &Parsed, proto: u8) -> Result<&'static Parsed, Stop> {
    let Some(f) = PARSED.get_ptr_mut(FORWARD) else {
        return Err(Stop::Pass);
    };
    // SAFETY: the egress program's per-CPU slot, ours for this run (see PARSED).
    let f = unsafe { &mut *f };
    f.src = p.dst;
    f.dst = p.src;
    f.family = p.family;
    f.ttl = p.ttl;
    f.tos = p.tos;
    f.df = p.df;
    f.ip_id = p.ip_id;
    f.ip_len = p.ip_len;
    f.proto = proto;
    f.l4_off = 0;
    f.l4_len = 0;
    f.vlan_depth = p.vlan_depth;
    f.vlan_id = p.vlan_id;
    Ok(f)
}

#[inline(always)]
pub(crate) fn egress_tcp(ctx: &TcContext, p: &Parsed, decky_id: u32) -> Result<(), Stop> {
    let off = p.l4_off & L4_OFF_MAX;
    let th = bytes_at(ctx, off, 20)?;
    let doff = ((th.u8(12) >> 4) as usize) * 4;
    if doff < 20 || doff as u32 > p.l4_len {
        return Err(Stop::Malformed);
    }
    let flags = th.be16(12) & 0x01ff;
    let window = th.raw16(14);
    let payload_len = p.l4_len - doff as u32;
    // The probe's ports, as its flow key has them (the attacker's first).
    let ports = [th.raw16(2), th.raw16(0)];
    use tcp_flags::*;
    let answer = flags & (SYN | ACK) == SYN | ACK || flags & RST != 0;
    // The guard's clock first: under a flood nearly every answer stops here, before the
    // forward view and the flow key are built.
    let coarse = coarse_ns();
    if answer && answers_withheld_syn(&p.dst, ports, coarse) {
        bump(Stat::OutcomesWithheld);
        return Ok(());
    }
    let fwd = forward(p, IPPROTO_TCP)?;
    let key = flow_key(fwd, ports[0], ports[1]);
    let (live, seen) = live_flow(&key);
    let Some(st) = live else {
        if answer {
            no_flow_answer(&key.src, coarse);
        } else if flags & (SYN | ACK | FIN | RST) == SYN {
            // The decoy connects out (a lookup, an update): nothing that comes back on this
            // four-tuple is a probe.
            new_flow(&key, coarse, FLOW_DECOY_OPENED, 0, 0, false);
        }
        return Ok(());
    };
    if seen & FLOW_DECOY_OPENED != 0 {
        // The decoy's own connection: no outcome, no summary.
        return Ok(());
    }
    let now = now_ns();
    // SAFETY: st is the flow's live state in its table slot.
    let end = unsafe {
        // A GSO skb from the decoy's stack is several wire packets.
        (*st).pkts_rev += ctx.segs();
        (*st).bytes_rev += p.ip_len as u64;
        (*st).payload_rev += payload_len;
        (*st).flags_rev |= flags;
        (*st).last_ns = now;
        if (*st).reply_ns == 0 {
            (*st).reply_ns = now;
        }
        let mut seen = (*st).seen;
        if payload_len > 0 {
            seen |= FLOW_REV_PAYLOAD;
        }
        if flags & (SYN | ACK) == SYN | ACK {
            seen |= FLOW_SYNACK;
        }
        if flags & FIN != 0 {
            seen |= FLOW_FIN_REV;
        }
        (*st).seen = seen;
        flow_end_of(flags, seen, flow_end::DECOY_RST)
    };
    if answer {
        outcome(ctx, fwd, decky_id, &key, st, flags, 0, 0, window, now);
    }
    if end != flow_end::OPEN {
        end_flow(ctx, fwd, decky_id, &key, st, end, now);
    }
    Ok(())
}

/// A datagram the decoy sends: when it answers nothing (no flow on its four-tuple, and the
/// other end has not been probing: the flood guard keeps no state for it), the decoy is the
/// one asking (a DNS lookup, NTP), and what comes back is no probe. The guard check keeps
/// an answer to a withheld probe from hiding that source's next datagrams; with the guard
/// off, an answer to a probe whose flow was already evicted can still do so.
#[inline(always)]
pub(crate) fn egress_udp(ctx: &TcContext, p: &Parsed) -> Result<(), Stop> {
    let uh = bytes_at(ctx, p.l4_off & L4_OFF_MAX, 8)?;
    let key = flow_key(forward(p, IPPROTO_UDP)?, uh.raw16(2), uh.raw16(0));
    if flow_state(&key).is_none() && SOURCES.get_ptr_mut(&key.src).is_none() {
        new_flow(&key, coarse_ns(), FLOW_DECOY_OPENED, 0, 0, false);
    }
    Ok(())
}

pub(crate) const ICMP_DEST_UNREACH: u8 = 3;
pub(crate) const ICMPV6_DEST_UNREACH: u8 = 1;

/// An ICMP destination-unreachable from the decoy: the quoted header names the probe.
#[inline(always)]
pub(crate) fn egress_icmp(ctx: &TcContext, p: &Parsed, decky_id: u32) -> Result<(), Stop> {
    let off = p.l4_off & L4_OFF_MAX;
    let ih = bytes_at(ctx, off, 8)?;
    let (ty, code) = (ih.u8(0), ih.u8(1));
    let v4 = p.family == FAMILY_V4;
    if (v4 && ty != ICMP_DEST_UNREACH) || (!v4 && ty != ICMPV6_DEST_UNREACH) {
        return Ok(());
    }
    let inner = off + 8;
    let mut key = FlowKey {
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        proto: 0,
        _pad: [0; 3],
    };
    let l4 = if v4 {
        let ip = bytes_at(ctx, inner, 20)?;
        let ihl = ((ip.u8(0) & 0x0f) as usize) * 4;
        key.proto = ip.u8(9);
        key.src[10] = 0xff;
        key.src[11] = 0xff;
        key.dst[10] = 0xff;
        key.dst[11] = 0xff;
        ip.copy_to(12, &mut key.src[12..]);
        ip.copy_to(16, &mut key.dst[12..]);
        inner + (ihl & 0x3c)
    } else {
        let ip = bytes_at(ctx, inner, 40)?;
        key.proto = ip.u8(6);
        ip.copy_to(8, &mut key.src);
        ip.copy_to(24, &mut key.dst);
        inner + 40
    };
    let ports = bytes_at(ctx, l4, 4)?;
    key.src_port = ports.raw16(0);
    key.dst_port = ports.raw16(2);
    if key.proto != IPPROTO_TCP && key.proto != IPPROTO_UDP {
        return Ok(());
    }
    let Some(st) = live_flow(&key).0 else {
        no_flow_answer(&key.src, coarse_ns());
        return Ok(());
    };
    let now = now_ns();
    // SAFETY: st is the flow's live state in its table slot.
    unsafe {
        (*st).last_ns = now;
        if (*st).reply_ns == 0 {
            (*st).reply_ns = now;
        }
    }
    let fwd = forward(p, key.proto)?;
    outcome(ctx, fwd, decky_id, &key, st, 0, ty, code, 0, now);
    Ok(())
}

/// True when the probe from `attacker` on `ports` (its flow key's order) is the SYN this
/// CPU's flood guard withheld just now: a SYN-ACK or RST on it answers that SYN (which was reported nowhere and opened no flow). `now`:
/// [`coarse_ns`], the clock the note was taken on.
#[inline(always)]
pub(crate) fn answers_withheld_syn(attacker: &[u8; 16], ports: [u16; 2], now: u64) -> bool {
    let Some(hot) = WITHHELD_HOT.get_ptr(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, plain loads.
    unsafe {
        (*hot).syn_ports == ports
            && (*hot).syn_addr == addr_words(attacker)
            && now.saturating_sub((*hot).syn_ns) < HOT_ANSWER_NS
    }
}

/// Counts an answer whose probe has no flow: withheld when the flood guard is withholding
/// that source's probes (they open no flow), else unmatched (evicted, or older than us).
/// `now`: [`coarse_ns`], the guard's clock.
#[inline(always)]
pub(crate) fn no_flow_answer(attacker: &[u8; 16], now: u64) {
    // Same verdict as the SOURCES test below (a source withheld within the last second),
    // from this CPU's last withholding when it was this source.
    if let Some(hot) = WITHHELD_HOT.get_ptr(0) {
        // SAFETY: per-CPU slot, plain loads.
        let hit = unsafe {
            (*hot).addr == addr_words(attacker)
                && now.saturating_sub((*hot).last_ns) < SUMMARY_EVERY_NS
        };
        if hit {
            bump(Stat::OutcomesWithheld);
            return;
        }
    }
    let flooding = match SOURCES.get_ptr(attacker) {
        // SAFETY: an LRU value pointer, valid for this run; plain loads.
        Some(st) => unsafe {
            (*st).suppressed != 0 && now.saturating_sub((*st).last_ns) < SUMMARY_EVERY_NS
        },
        None => false,
    };
    bump(if flooding {
        Stat::OutcomesWithheld
    } else {
        Stat::OutcomesUnmatched
    });
}

/// Emits the `probe_outcome` for a flow's current probe, once. An answer to a probe the
/// flood guard withheld is counted instead: there is no record to link it to.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn outcome(
    ctx: &TcContext,
    fwd: &Parsed,
    decky_id: u32,
    key: &FlowKey,
    st: *mut FlowState,
    flags: u16,
    icmp_type: u8,
    icmp_code: u8,
    window: u16,
    now: u64,
) {
    // SAFETY: st is the flow's live state in its table slot.
    let (seen, info) = unsafe {
        (
            (*st).seen,
            OutcomeInfo {
                probe_ns: (*st).probe_ns,
                probe_flags: (*st).probe_flags,
            },
        )
    };
    if seen & FLOW_OUTCOME != 0 {
        return;
    }
    // SAFETY: st is this flow's live state (read above); one store.
    unsafe { (*st).seen = seen | FLOW_OUTCOME };
    if seen & FLOW_REPORTED == 0 {
        bump(Stat::OutcomesWithheld);
        return;
    }
    let sent = submit(ctx, fwd, decky_id, EventKind::ProbeOutcome, 0, now, |ev| {
        ev.src_port = key.src_port;
        ev.dst_port = key.dst_port;
        ev.tcp_flags = flags;
        ev.window = window;
        ev.icmp_type = icmp_type;
        ev.icmp_code = icmp_code;
        let o = info.to_options();
        for i in 0..OUTCOME_OPT_LEN {
            ev.options[i] = o[i];
        }
        ev.opt_len = OUTCOME_OPT_LEN as u8;
    });
    if sent {
        bump(Stat::ProbeOutcomes);
    }
}
