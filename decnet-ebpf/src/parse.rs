//! Ethernet (with VLAN/QinQ tags), IPv4 and IPv6 (with extension headers) up to the
//! transport header: what every decision starts from.

use decnet_common::{EventKind, FAMILY_V4, FAMILY_V6, RawEvent};

use crate::frame::{Frame, Stop, bytes_at};
pub(crate) use crate::headers::{L4_OFF_MAX, Parsed};

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86DD;
pub(crate) const ETH_P_8021Q: u16 = 0x8100;
pub(crate) const ETH_P_8021AD: u16 = 0x88A8;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;
// IPv6 extension headers we step over to reach the transport header.
pub(crate) const IPV6_HOPOPTS: u8 = 0;
pub(crate) const IPV6_ROUTING: u8 = 43;
pub(crate) const IPV6_FRAGMENT: u8 = 44;
pub(crate) const IPV6_AH: u8 = 51;
pub(crate) const IPV6_DSTOPTS: u8 = 60;
pub(crate) const IPV6_MAX_EXT: usize = 6;

impl Parsed {
    /// Sets word `i` of the addresses (0-3: `src`, 4-7: `dst`; wire order) with one aligned
    /// 4-byte store, not four byte stores.
    #[inline(always)]
    fn set_addr_word(&mut self, i: usize, w: u32) {
        // SAFETY: Parsed is 8-aligned and begins with src and dst, 32 bytes; word i & 7 lies
        // inside them, 4-aligned.
        unsafe { (self as *mut Parsed).cast::<u32>().add(i & 7).write(w) }
    }
}

/// Parses the frame's link and IP headers into `p`, overwriting every field (`p` is a
/// per-CPU slot that held the previous packet's; see `maps::PARSED` for why).
#[inline(always)]
pub(crate) fn parse_ip<F: Frame>(ctx: &F, p: &mut Parsed) -> Result<(), Stop> {
    let eth = bytes_at(ctx, 0, ETH_HLEN)?;
    let mut ethertype = eth.be16(12);
    let mut off = ETH_HLEN;
    let mut vlan_depth = 0u8;
    let mut vlan_id = 0u16;
    // Up to two tags: 802.1ad outer + 802.1Q inner (QinQ).
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag = bytes_at(ctx, off, 4)?;
        vlan_id = tag.be16(0) & 0x0fff;
        ethertype = tag.be16(2);
        off += 4;
        vlan_depth += 1;
    }
    let avail = ctx.wire_len();
    p.vlan_depth = vlan_depth;
    p.vlan_id = vlan_id;
    match ethertype {
        ETH_P_IP => parse_v4(ctx, off, avail, p),
        ETH_P_IPV6 => parse_v6(ctx, off, avail, p),
        _ => Err(Stop::Pass),
    }
}

/// Which address [`addr_tail`] reads.
#[derive(Clone, Copy)]
pub(crate) enum End {
    Src,
    Dst,
}

/// The last two bytes (big-endian) of an untagged IPv4 or IPv6 frame's source or
/// destination address, read without parsing the rest: the fast path's key for the decoy
/// prefilter (`maps::may_be_decoy`). None for a tagged, non-IP or short frame, which then
/// takes the full parse (and is counted malformed there if it is cut short).
#[inline(always)]
pub(crate) fn addr_tail<F: Frame>(ctx: &F, end: End) -> Option<u16> {
    let ethertype = bytes_at(ctx, 12, 2).ok()?.be16(0);
    // Offsets in the frame: Ethernet header + the address's last two bytes in the IP
    // header (IPv4 src 12..16, dst 16..20; IPv6 src 8..24, dst 24..40).
    let off = match (ethertype, end) {
        (ETH_P_IP, End::Src) => ETH_HLEN + 14,
        (ETH_P_IP, End::Dst) => ETH_HLEN + 18,
        (ETH_P_IPV6, End::Src) => ETH_HLEN + 22,
        (ETH_P_IPV6, End::Dst) => ETH_HLEN + 38,
        _ => return None,
    };
    Some(bytes_at(ctx, off, 2).ok()?.be16(0))
}

#[inline(always)]
pub(crate) fn parse_v4<F: Frame>(
    ctx: &F,
    off: usize,
    avail: u32,
    p: &mut Parsed,
) -> Result<(), Stop> {
    let ip = bytes_at(ctx, off, 20)?;
    // SAFETY: 20 bytes checked above.
    let vihl = ip.u8(0);
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(Stop::Malformed);
    }
    // Options must be present in the frame too.
    bytes_at(ctx, off, ihl)?;
    let tot_len = ip.be16(2) as u32;
    if tot_len < ihl as u32 || off as u32 + tot_len > avail {
        return Err(Stop::Malformed);
    }
    let frag = ip.be16(6);
    // IPv4-mapped: ::ffff:a.b.c.d.
    for (base, from) in [(0, 12), (4, 16)] {
        p.set_addr_word(base, 0);
        p.set_addr_word(base + 1, 0);
        p.set_addr_word(base + 2, u32::from_ne_bytes([0, 0, 0xff, 0xff]));
        p.set_addr_word(base + 3, ip.raw32(from));
    }
    let first_fragment = frag & 0x1fff == 0;
    p.family = FAMILY_V4;
    p.tos = ip.u8(1);
    p.ttl = ip.u8(8);
    p.proto = ip.u8(9);
    p.df = ((frag & 0x4000) != 0) as u8;
    p.ip_id = ip.raw16(4);
    p.ip_len = tot_len;
    p.l4_off = if first_fragment { off + ihl } else { 0 };
    p.l4_len = tot_len - ihl as u32;
    Ok(())
}

#[inline(always)]
pub(crate) fn parse_v6<F: Frame>(
    ctx: &F,
    off: usize,
    avail: u32,
    p: &mut Parsed,
) -> Result<(), Stop> {
    let ip = bytes_at(ctx, off, 40)?;
    if ip.u8(0) >> 4 != 6 {
        return Err(Stop::Malformed);
    }
    let payload_len = ip.be16(4) as u32;
    if off as u32 + 40 + payload_len > avail {
        return Err(Stop::Malformed);
    }
    let mut next = ip.u8(6);
    let mut l4 = off + 40;
    let mut first_fragment = true;
    for _ in 0..IPV6_MAX_EXT {
        let ext_len = match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let h = bytes_at(ctx, l4, 2)?;
                (h.u8(1) as usize + 1) * 8
            }
            IPV6_AH => {
                let h = bytes_at(ctx, l4, 2)?;
                (h.u8(1) as usize + 2) * 4
            }
            IPV6_FRAGMENT => {
                let h = bytes_at(ctx, l4, 8)?;
                if h.be16(2) & 0xfff8 != 0 {
                    first_fragment = false;
                }
                8
            }
            _ => break,
        };
        let h = bytes_at(ctx, l4, 1)?;
        next = h.u8(0);
        // Keep the offset bounded for the verifier; real chains are far shorter.
        l4 = (l4 + ext_len) & L4_OFF_MAX;
    }
    let ext_total = (l4 - (off + 40)) as u32;
    if ext_total > payload_len {
        return Err(Stop::Malformed);
    }
    for k in 0..8 {
        // src at 8..24, dst at 24..40: the 8 words from 8 on.
        p.set_addr_word(k, ip.raw32(8 + 4 * k));
    }
    let vtc = ip.be16(0);
    p.family = FAMILY_V6;
    p.tos = ((vtc >> 4) & 0xff) as u8;
    p.ttl = ip.u8(7);
    p.proto = next;
    p.df = 0;
    p.ip_id = 0;
    p.ip_len = 40 + payload_len;
    p.l4_off = if first_fragment { l4 } else { 0 };
    p.l4_len = payload_len - ext_total;
    Ok(())
}

/// Copies an address byte by byte with volatile stores: a plain copy from a slot whose
/// alignment LLVM cannot see became a call of the BPF target's byte-at-a-time `memmove`
/// (about 150 instructions where these are 32).
#[inline(always)]
fn copy_addr(dst: &mut [u8; 16], src: &[u8; 16]) {
    for i in 0..16 {
        // SAFETY: i < 16, inside dst.
        unsafe { core::ptr::write_volatile(dst.as_mut_ptr().add(i), src[i]) };
    }
}

/// The fields every event has, from the parsed headers; L4 fields zeroed for the caller to
/// fill.
#[inline(always)]
pub(crate) fn fill_common(
    ifindex: u32,
    ev: &mut RawEvent,
    p: &Parsed,
    decky_id: u32,
    kind: EventKind,
    payload_len: u32,
    now: u64,
) {
    ev.ts_ns = now;
    copy_addr(&mut ev.src_addr, &p.src);
    copy_addr(&mut ev.dst_addr, &p.dst);
    ev.kind = kind as u32;
    ev.ifindex = ifindex;
    ev.decky_id = decky_id;
    ev.ip_len = p.ip_len;
    // Volatile: LLVM merges these adjacent zero stores into an 18-byte `memset`, which the
    // BPF target compiles to a byte-at-a-time call.
    // SAFETY: writes to fields of the event being filled.
    unsafe {
        core::ptr::write_volatile(&mut ev.seq, 0);
        core::ptr::write_volatile(&mut ev.ack, 0);
        core::ptr::write_volatile(&mut ev.src_port, 0);
        core::ptr::write_volatile(&mut ev.dst_port, 0);
        core::ptr::write_volatile(&mut ev.window, 0);
        core::ptr::write_volatile(&mut ev.urg_ptr, 0);
        core::ptr::write_volatile(&mut ev.tcp_flags, 0);
    }
    ev.ip_id = p.ip_id;
    ev.payload_len = payload_len;
    ev.proto = p.proto;
    ev.family = p.family;
    ev.ttl = p.ttl;
    ev.tos = p.tos;
    ev.df = p.df;
    ev.opt_len = 0;
    ev.icmp_type = 0;
    ev.icmp_code = 0;
    ev.payload_cap = 0;
    ev.vlan_depth = p.vlan_depth;
    ev.vlan_id = p.vlan_id;
    ev._pad = [0; 4];
}
