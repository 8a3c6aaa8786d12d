//! Packets arriving at a decoy (XDP or TC ingress): one event per new probe, flow state for
//! TCP and UDP.

use aya_ebpf::programs::TcContext;
use decnet_common::{
    EventKind, FLOW_CLIENT_CLOSED, FLOW_DECOY_OPENED, FLOW_FIN_FWD, FLOW_FIN_REV, FLOW_HANDSHAKE,
    FLOW_OUTCOME, FLOW_REPORTED, FLOW_SEEN_OTHER, FLOW_SEEN_PAYLOAD, FLOW_SEEN_SYN, FLOW_SEQ,
    FLOW_SYNACK, Stat, flow_end, tcp_flags,
};

use crate::{
    emit::{Emitted, copy_payload, emit},
    flows::{end_flow, first_of_flow, flow_end_of, flow_key, flow_state, live_flow, new_flow},
    frame::{Frame, Stop, bytes_at, coarse_ns, now_ns},
    guard::guard,
    maps::{INGRESS, PARSED, WITHHELD_HOT, addr_words, bump, decoy_id, may_be_decoy},
    parse::{
        End, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L4_OFF_MAX, Parsed, addr_tail,
        parse_ip,
    },
};

/// Bytes of an skb the parsers read directly (headers; payload and options go through
/// `Frame::load`, which reads fragments too).
pub(crate) const HEADER_BYTES: u32 = 128;

/// Makes the headers of a non-linear skb directly readable. The stack normally puts them in
/// the linear part already, so this costs a comparison; when it did not, the pull copies them
/// (a failure leaves the packet to be counted malformed).
#[inline(always)]
pub(crate) fn linear_headers(ctx: &TcContext) {
    let want = if ctx.len() < HEADER_BYTES {
        ctx.len()
    } else {
        HEADER_BYTES
    };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
}

/// A packet arriving on the decoy interface (XDP or TC ingress).
#[inline(always)]
pub(crate) fn ingress<F: Frame>(ctx: &F) -> Result<(), Stop> {
    // Most packets here go to other hosts: the prefilter turns them away before the parse
    // and the hash lookup (a tagged frame is checked after the parse instead).
    if addr_tail(ctx, End::Dst).is_some_and(|t| !may_be_decoy(t)) {
        return Err(Stop::Pass);
    }
    let Some(p) = PARSED.get_ptr_mut(INGRESS) else {
        return Err(Stop::Pass);
    };
    // SAFETY: this program's per-CPU slot, ours for this run (see PARSED).
    let p = unsafe { &mut *p };
    parse_ip(ctx, p)?;
    let p = &*p;
    if p.vlan_depth != 0 && !may_be_decoy(u16::from_be_bytes([p.dst[14], p.dst[15]])) {
        return Err(Stop::Pass);
    }
    let Some(decky_id) = decoy_id(&p.dst, INGRESS) else {
        return Err(Stop::Pass);
    };
    bump(Stat::PacketsToDecoy);
    match p.proto {
        IPPROTO_TCP if p.l4_off != 0 => tcp(ctx, p, decky_id),
        IPPROTO_UDP if p.l4_off != 0 => udp(ctx, p, decky_id),
        IPPROTO_ICMP | IPPROTO_ICMPV6 if p.l4_off != 0 => icmp(ctx, p, decky_id),
        _ => {
            if first_of_flow(p, 0, 0, FLOW_SEEN_OTHER) {
                emit(
                    ctx,
                    p,
                    decky_id,
                    EventKind::IpOther,
                    0,
                    Some(0),
                    now_ns(),
                    |_| {},
                );
            } else {
                bump(Stat::DecoyNotEmitted);
            }
            Ok(())
        }
    }
}

#[inline(always)]
pub(crate) fn tcp<F: Frame>(ctx: &F, p: &Parsed, decky_id: u32) -> Result<(), Stop> {
    let off = p.l4_off & L4_OFF_MAX;
    let th = bytes_at(ctx, off, 20)?;
    let doff = ((th.u8(12) >> 4) as usize) * 4;
    if doff < 20 || doff as u32 > p.l4_len {
        return Err(Stop::Malformed);
    }
    bytes_at(ctx, off, doff)?;
    let flags = th.be16(12) & 0x01ff;
    let sport = th.raw16(0);
    let dport = th.raw16(2);
    let payload_len = p.l4_len - doff as u32;
    use tcp_flags::*;
    let syn = flags & SYN != 0 && flags & (ACK | FIN | RST) == 0;
    // A SYN is always an event, so the flood guard can decide first: a flooding source's
    // SYNs then cost no flow lookup. A withheld SYN therefore does not count into a live
    // flow of the same four-tuple (the source's suppressed counters have it).
    if syn {
        let coarse = coarse_ns();
        if !guard(ctx, p, decky_id, u16::from_be(dport), coarse) {
            if let Some(hot) = WITHHELD_HOT.get_ptr_mut(0) {
                // SAFETY: per-CPU slot, no concurrent writer on this CPU.
                unsafe {
                    (*hot).syn_addr = addr_words(&p.src);
                    (*hot).syn_ports = [sport, dport];
                    (*hot).syn_ns = coarse;
                }
            }
            return Ok(());
        }
    }
    let now = now_ns();
    let key = flow_key(p, sport, dport);
    let (live, seen_before) = live_flow(&key);
    if seen_before & FLOW_DECOY_OPENED != 0 {
        // An answer on a connection the decoy opened itself.
        bump(Stat::DecoyOwnTraffic);
        return Ok(());
    }
    // Only a SYN opens a connection that later ACK segments can belong to; a flow a stealth
    // probe opened is just the place its answer is matched.
    let connection = seen_before & FLOW_SEEN_SYN != 0;

    // Without ACK, a real flow only ever sends a SYN or a bare RST: anything else is a
    // stealth probe (null, FIN, Xmas, SYN+FIN, ...).
    let stealth = !syn && flags & ACK == 0 && flags & (SYN | FIN | RST | PSH | URG) != RST;
    // A probe opens (or, on a live flow, re-sends) what the decoy may answer.
    let mut probe = syn || stealth;
    let kind = if syn {
        Some(EventKind::TcpSyn)
    } else if stealth {
        Some(EventKind::TcpProbe)
    } else {
        match live {
            // ACK-carrying (or bare RST) segment with no handshake seen: ACK/window/Maimon.
            _ if !connection => {
                probe = true;
                Some(EventKind::TcpProbe)
            }
            // The tail of a connection that already ended (its last ACK, a late RST).
            None => None,
            Some(st) => {
                // SAFETY: st is this flow's live table state, valid for
                // this run; plain loads and stores.
                let seen = unsafe { (*st).seen };
                if payload_len > 0 && seen & FLOW_SEEN_PAYLOAD == 0 {
                    // SAFETY: as above.
                    unsafe { (*st).seen = seen | FLOW_SEEN_PAYLOAD };
                    Some(EventKind::TcpPayload)
                } else if seen & FLOW_SEEN_OTHER == 0 && payload_len == 0 {
                    // SAFETY: as above.
                    unsafe { (*st).seen = seen | FLOW_SEEN_OTHER };
                    Some(EventKind::TcpSegment)
                } else {
                    None
                }
            }
        }
    };
    let status = match kind {
        Some(kind) => {
            let opt_len = (doff - 20) as u32;
            let payload_off = (off + doff) as u32;
            emit(
                ctx,
                p,
                decky_id,
                kind,
                payload_len,
                // The SYN was already let through above.
                if syn { None } else { Some(u16::from_be(dport)) },
                now,
                |ev| {
                    ev.src_port = sport;
                    ev.dst_port = dport;
                    ev.seq = th.raw32(4);
                    ev.ack = th.raw32(8);
                    ev.tcp_flags = flags;
                    ev.window = th.raw16(14);
                    ev.urg_ptr = th.raw16(18);
                    ev.opt_len = opt_len as u8;
                    if opt_len > 0 {
                        // Written so the verifier can see 1 <= n <= 64 (opt_len is at most 40).
                        let n = ((opt_len - 1) & 0x3f) + 1;
                        ctx.load((off + 20) as u32, ev.options.as_mut_ptr(), n);
                    }
                    copy_payload(ctx, ev, payload_off, payload_len);
                },
            )
        }
        None => {
            bump(Stat::DecoyNotEmitted);
            Emitted::Lost
        }
    };
    let emitted = status == Emitted::Sent;
    let Some(st) = live else {
        // A withheld probe opens no flow: a flooding source must not churn the flow table
        // (its answers are counted as withheld by the source's guard state instead).
        if probe && status != Emitted::Withheld {
            let seen = if syn { FLOW_SEEN_SYN } else { 0 };
            new_flow(&key, now, seen, flags, p.ip_len, emitted);
        }
        return Ok(());
    };
    let segs = ctx.segs();
    // SAFETY: st is the live table state of this flow (see guard() on racing CPUs).
    let end = unsafe {
        (*st).pkts_fwd += segs;
        (*st).bytes_fwd += p.ip_len as u64;
        (*st).last_ns = now;
        (*st).flags_fwd |= flags;
        if probe {
            // A re-sent probe: its answer's round trip starts now.
            (*st).probe_ns = now;
            (*st).probe_flags = flags;
            if emitted {
                (*st).seen |= FLOW_REPORTED;
            }
            if syn {
                (*st).seen |= FLOW_SEEN_SYN;
            }
        }
        let mut seen = (*st).seen;
        if payload_len > 0 {
            (*st).payload_fwd += payload_len;
            let seq_end = u32::from_be(th.raw32(4)).wrapping_add(payload_len);
            if seen & FLOW_SEQ != 0 && (seq_end.wrapping_sub((*st).next_seq_fwd) as i32) <= 0 {
                // Nothing past what was already sent: a retransmission.
                (*st).retransmits += 1;
            } else {
                (*st).next_seq_fwd = seq_end;
                seen |= FLOW_SEQ;
            }
        }
        if flags & ACK != 0 && seen & FLOW_SYNACK != 0 {
            seen |= FLOW_HANDSHAKE;
        }
        if flags & (FIN | RST) != 0 && seen & FLOW_FIN_REV == 0 {
            seen |= FLOW_CLIENT_CLOSED;
        }
        if flags & FIN != 0 {
            seen |= FLOW_FIN_FWD;
        }
        (*st).seen = seen;
        flow_end_of(flags, seen, flow_end::CLIENT_RST)
    };
    if end != flow_end::OPEN {
        end_flow(ctx, p, decky_id, &key, st, end, now);
    }
    Ok(())
}

#[inline(always)]
pub(crate) fn udp<F: Frame>(ctx: &F, p: &Parsed, decky_id: u32) -> Result<(), Stop> {
    let off = p.l4_off & L4_OFF_MAX;
    let uh = bytes_at(ctx, off, 8)?;
    if p.l4_len < 8 {
        return Err(Stop::Malformed);
    }
    let payload_len = p.l4_len - 8;
    let payload_off = (off + 8) as u32;
    let sport = uh.raw16(0);
    let dport = uh.raw16(2);
    let key = flow_key(p, sport, dport);
    let flow = flow_state(&key);
    if let Some(st) = flow {
        // SAFETY: a flow table slot's state, valid for this run.
        if unsafe { (*st).seen } & FLOW_DECOY_OPENED != 0 {
            // An answer to a datagram the decoy sent first (its own lookup).
            bump(Stat::DecoyOwnTraffic);
            return Ok(());
        }
    }
    let now = now_ns();
    let status = emit(
        ctx,
        p,
        decky_id,
        EventKind::UdpProbe,
        payload_len,
        Some(u16::from_be(dport)),
        now,
        |ev| {
            ev.src_port = sport;
            ev.dst_port = dport;
            copy_payload(ctx, ev, payload_off, payload_len);
        },
    );
    // Every datagram is a probe the decoy may answer (ICMP port unreachable): the flow
    // remembers the latest, so the answer links to it. Withheld ones open none.
    let emitted = status == Emitted::Sent;
    let segs = ctx.segs();
    match flow {
        // SAFETY: a flow table slot's state, valid for this run.
        Some(st) => unsafe {
            (*st).pkts_fwd += segs;
            (*st).bytes_fwd += p.ip_len as u64;
            (*st).payload_fwd += payload_len;
            (*st).last_ns = now;
            (*st).probe_ns = now;
            let seen = (*st).seen & !(FLOW_OUTCOME | FLOW_REPORTED);
            (*st).seen = seen | if emitted { FLOW_REPORTED } else { 0 };
        },
        None if status != Emitted::Withheld => new_flow(&key, now, 0, 0, p.ip_len, emitted),
        None => {}
    }
    Ok(())
}

#[inline(always)]
pub(crate) fn icmp<F: Frame>(ctx: &F, p: &Parsed, decky_id: u32) -> Result<(), Stop> {
    let off = p.l4_off & L4_OFF_MAX;
    let ih = bytes_at(ctx, off, 8)?;
    if p.l4_len < 8 {
        return Err(Stop::Malformed);
    }
    let ty = ih.u8(0);
    let code = ih.u8(1);
    let echo = (p.proto == IPPROTO_ICMP && ty == 8) || (p.proto == IPPROTO_ICMPV6 && ty == 128);
    let kind = if echo {
        EventKind::IcmpEcho
    } else if first_of_flow(p, ty as u16, code as u16, FLOW_SEEN_OTHER) {
        EventKind::IcmpOther
    } else {
        bump(Stat::DecoyNotEmitted);
        return Ok(());
    };
    let payload_len = p.l4_len - 8;
    let payload_off = (off + 8) as u32;
    emit(
        ctx,
        p,
        decky_id,
        kind,
        payload_len,
        Some(0),
        now_ns(),
        |ev| {
            ev.icmp_type = ty;
            ev.icmp_code = code;
            if echo {
                ev.src_port = ih.raw16(4);
                ev.dst_port = ih.raw16(6);
            }
            copy_payload(ctx, ev, payload_off, payload_len);
        },
    );
    Ok(())
}
