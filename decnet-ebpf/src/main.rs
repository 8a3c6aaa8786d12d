//! decnet kernel side: the XDP ingress program and the TC egress program on a decoy
//! interface.
//!
//! Ingress: every packet costs one decoy-map lookup; only packets to a decoy become events,
//! and TCP/UDP packets to a decoy update their flow's state. Egress: packets *from* a decoy
//! are its answers; a SYN-ACK, RST or ICMP unreachable answering a reported probe becomes a
//! `probe_outcome`, and every decoy packet counts into its flow. A flow that ends (FIN both
//! ways, or RST) and carried more than a scan probe becomes a `tcp_flow` summary.
//!
//! A flood costs per packet a decoy lookup and the source's guard state on ingress, and a
//! decoy lookup and a per-CPU note on egress: a withheld SYN and its answer never touch the
//! flow table (`WITHHELD_HOT`).
//!
//! Neither program drops or redirects anything: they observe. Every path, including parse
//! failures, returns `XDP_PASS` / `TC_ACT_UNSPEC`. Events are built directly in the reserved
//! ring entry so the 264-byte record never touches the 512-byte BPF stack.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_skb_load_bytes, bpf_xdp_load_bytes},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use decnet_common::{
    DEFAULT_RING_BYTES, DecoyKey, EventKind, FAMILY_V4, FAMILY_V6, FLOW_CLIENT_CLOSED, FLOW_ENDED,
    FLOW_FIN_FWD, FLOW_FIN_REV, FLOW_HANDSHAKE, FLOW_OUTCOME, FLOW_REPORTED, FLOW_REV_PAYLOAD,
    FLOW_SEEN_OTHER, FLOW_SEEN_PAYLOAD, FLOW_SEEN_SYN, FLOW_SEQ, FLOW_STATE_SIZE, FLOW_SYNACK,
    FlowKey, FlowState, GuardConfig, MAX_DECOYS, MAX_FLOWS, MAX_SOURCES, OUTCOME_OPT_LEN,
    OutcomeInfo, PAYLOAD_MAX, PORT_BITS, RawEvent, STAT_COUNT, SUMMARY_EVERY_NS, SUMMARY_OPT_LEN,
    SourceState, Stat, SuppressedSummary, flow_end, tcp_flags,
};

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "DECOYS")]
static DECOYS: HashMap<DecoyKey, u32> = HashMap::with_max_entries(MAX_DECOYS, 0);

#[map(name = "FLOWS")]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[map(name = "STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

#[map(name = "GUARD")]
static GUARD: Array<GuardConfig> = Array::with_max_entries(1, 0);

#[map(name = "SOURCES")]
static SOURCES: LruHashMap<[u8; 16], SourceState> = LruHashMap::with_max_entries(MAX_SOURCES, 0);

/// What this CPU's flood guard withheld last: the source, and the last SYN with its ports.
/// The decoy answers a probe on the CPU that received it, in the same softirq, so the
/// egress program finds an answer to a withheld SYN here and skips the flow table (the SYN
/// opened no flow), and a flooding source's other answers without the SOURCES lookup. A
/// miss falls back to those lookups, which give the same verdict.
#[map(name = "WITHHELD_HOT")]
static WITHHELD_HOT: PerCpuArray<HotSource> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct HotSource {
    /// The source withheld last, as two native-order words (compared as words).
    addr: [u64; 2],
    last_ns: u64,
    /// The last withheld SYN: source, ports (as in its FlowKey) and time.
    syn_addr: [u64; 2],
    syn_ports: [u16; 2],
    syn_ns: u64,
}

/// An answer this soon after its SYN was withheld on this CPU is the answer to that SYN.
const HOT_ANSWER_NS: u64 = 10_000_000;

#[inline(always)]
fn addr_words(a: &[u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&a[..8]);
    hi.copy_from_slice(&a[8..]);
    [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)]
}

/// A zeroed SourceState to insert from: 176 bytes are too many for the 512-byte stack.
#[map(name = "SOURCE_SCRATCH")]
static SOURCE_SCRATCH: PerCpuArray<SourceState> = PerCpuArray::with_max_entries(1, 0);

/// Where a new FlowState is built before insertion (kept off the stack like SourceState).
#[map(name = "FLOW_SCRATCH")]
static FLOW_SCRATCH: PerCpuArray<FlowState> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
// IPv6 extension headers we step over to reach the transport header.
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
const IPV6_MAX_EXT: usize = 6;

/// Why parsing stopped; every variant still returns XDP_PASS.
enum Stop {
    /// Not for us (non-IP, non-decoy): counted only as seen.
    Pass,
    /// Cut short or impossible header values.
    Malformed,
}

#[inline(always)]
fn bump(stat: Stat) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// What the parsers need from a program context: the packet's bounds and the interface.
/// XDP (ingress) and TC (egress) parse frames with the same code through it.
trait Frame {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
    fn ifindex(&self) -> u32;
    /// The whole frame's length. An skb's data past `end()` sits in page fragments
    /// (TCP payload from the local stack, for one): it is there, `load` reads it.
    fn wire_len(&self) -> u32;
    /// Copies `n` bytes at `off` into `dst` (also from a non-linear skb); 0 on success.
    fn load(&self, off: u32, dst: *mut u8, n: u32) -> i64;
    /// Wire packets this frame stands for: more than one for a GRO-merged skb on the TC
    /// hook, so flow packet counts stay per wire packet.
    fn segs(&self) -> u32;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }
    #[inline(always)]
    fn wire_len(&self) -> u32 {
        (self.data_end() - self.data()) as u32
    }
    #[inline(always)]
    fn load(&self, off: u32, dst: *mut u8, n: u32) -> i64 {
        // SAFETY: dst holds n bytes (callers bound n for the verifier).
        unsafe { bpf_xdp_load_bytes(self.ctx, off, dst.cast(), n) }
    }
    #[inline(always)]
    fn segs(&self) -> u32 {
        1
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context's __sk_buff, readable for the whole run.
        unsafe { (*self.skb.skb).ifindex }
    }
    #[inline(always)]
    fn wire_len(&self) -> u32 {
        self.len()
    }
    #[inline(always)]
    fn load(&self, off: u32, dst: *mut u8, n: u32) -> i64 {
        // SAFETY: dst holds n bytes (callers bound n for the verifier).
        unsafe { bpf_skb_load_bytes(self.skb.skb as *const _, off, dst.cast(), n) }
    }
    #[inline(always)]
    fn segs(&self) -> u32 {
        // SAFETY: the context's __sk_buff, readable for the whole run.
        let n = unsafe { (*self.skb.skb).gso_segs };
        if n > 1 { n } else { 1 }
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: no arguments, no side effects.
    unsafe { bpf_ktime_get_ns() }
}

/// CLOCK_MONOTONIC at tick resolution (4 ms at HZ=250), behind [`now_ns`] by less than a
/// tick: the flood guard's clock. Reading it is a load, where `now_ns` reads the clock
/// source, which on this VM's TSC cost about a quarter of the programs' time for each
/// flooded packet and its answer (perf). Everything the guard keeps (token bucket, first
/// and last withheld, the per-CPU note of the last withheld SYN) and everything compared
/// with it is on this clock; events and flows keep `now_ns`.
#[inline(always)]
fn coarse_ns() -> u64 {
    // SAFETY: no arguments, no side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The one bounds check: a pointer to `len` bytes at `off`, or Malformed.
#[inline(always)]
fn bytes_at<F: Frame>(ctx: &F, off: usize, len: usize) -> Result<*const u8, Stop> {
    let start = ctx.start();
    let end = ctx.end();
    if start + off + len > end {
        return Err(Stop::Malformed);
    }
    Ok((start + off) as *const u8)
}

#[inline(always)]
fn be16(p: *const u8, i: usize) -> u16 {
    // SAFETY: callers checked the range with bytes_at.
    unsafe { u16::from_be_bytes([*p.add(i), *p.add(i + 1)]) }
}

#[inline(always)]
fn raw16(p: *const u8, i: usize) -> u16 {
    // Wire bytes kept in network order (see RawEvent docs).
    unsafe { u16::from_ne_bytes([*p.add(i), *p.add(i + 1)]) }
}

#[inline(always)]
fn raw32(p: *const u8, i: usize) -> u32 {
    unsafe { u32::from_ne_bytes([*p.add(i), *p.add(i + 1), *p.add(i + 2), *p.add(i + 3)]) }
}

/// Header facts gathered before the decision to emit.
struct Parsed {
    src: [u8; 16],
    dst: [u8; 16],
    family: u8,
    ttl: u8,
    tos: u8,
    df: u8,
    ip_id: u16,
    ip_len: u32,
    proto: u8,
    /// Offset of the transport header; 0 for a non-first fragment (no L4 header).
    l4_off: usize,
    /// Bytes from l4_off to the end of the IP packet.
    l4_len: u32,
    vlan_depth: u8,
    vlan_id: u16,
}

#[xdp]
pub fn decnet_xdp(ctx: XdpContext) -> u32 {
    bump(Stat::PacketsSeen);
    match ingress(&ctx) {
        Ok(()) | Err(Stop::Pass) => {}
        Err(Stop::Malformed) => {
            bump(Stat::Malformed);
            // Off unless userspace raises AYA_LOG_LEVEL to debug.
            debug!(&ctx, "decnet: malformed frame");
        }
    }
    xdp_action::XDP_PASS
}

/// Baseline for benchmarks: the cheapest possible XDP program.
#[xdp]
pub fn decnet_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The same analysis as `decnet_xdp`, on the TC ingress hook (`--xdp-mode tc`). Where XDP
/// can only run in generic mode, as on a veth, this sees the same packets without the
/// generic XDP hook's cost (it re-allocates every skb with less than 256 bytes of headroom
/// before the program runs).
#[classifier]
pub fn decnet_tc_ingress(ctx: TcContext) -> i32 {
    bump(Stat::PacketsSeen);
    linear_headers(&ctx);
    if let Err(Stop::Malformed) = ingress(&ctx) {
        bump(Stat::Malformed);
    }
    TC_ACT_UNSPEC
}

/// Bytes of an skb the parsers read directly (headers; payload and options go through
/// `Frame::load`, which reads fragments too).
const HEADER_BYTES: u32 = 128;

/// Makes the headers of a non-linear skb directly readable. The stack normally puts them in
/// the linear part already, so this costs a comparison; when it did not, the pull copies them
/// (a failure leaves the packet to be counted malformed).
#[inline(always)]
fn linear_headers(ctx: &TcContext) {
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
fn ingress<F: Frame>(ctx: &F) -> Result<(), Stop> {
    let p = parse_ip(ctx)?;
    let key = DecoyKey { addr: p.dst };
    // SAFETY: plain u32 value, read once.
    let decky_id = match unsafe { DECOYS.get(&key) } {
        Some(id) => *id,
        None => return Err(Stop::Pass),
    };
    bump(Stat::PacketsToDecoy);
    match p.proto {
        IPPROTO_TCP if p.l4_off != 0 => tcp(ctx, &p, decky_id),
        IPPROTO_UDP if p.l4_off != 0 => udp(ctx, &p, decky_id),
        IPPROTO_ICMP | IPPROTO_ICMPV6 if p.l4_off != 0 => icmp(ctx, &p, decky_id),
        _ => {
            if first_of_flow(&p, 0, 0, FLOW_SEEN_OTHER) {
                emit(
                    ctx,
                    &p,
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
fn parse_ip<F: Frame>(ctx: &F) -> Result<Parsed, Stop> {
    let eth = bytes_at(ctx, 0, ETH_HLEN)?;
    let mut ethertype = be16(eth, 12);
    let mut off = ETH_HLEN;
    let mut vlan_depth = 0u8;
    let mut vlan_id = 0u16;
    // Up to two tags: 802.1ad outer + 802.1Q inner (QinQ).
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag = bytes_at(ctx, off, 4)?;
        vlan_id = be16(tag, 0) & 0x0fff;
        ethertype = be16(tag, 2);
        off += 4;
        vlan_depth += 1;
    }
    let avail = ctx.wire_len();
    match ethertype {
        ETH_P_IP => parse_v4(ctx, off, avail, vlan_depth, vlan_id),
        ETH_P_IPV6 => parse_v6(ctx, off, avail, vlan_depth, vlan_id),
        _ => Err(Stop::Pass),
    }
}

#[inline(always)]
fn parse_v4<F: Frame>(
    ctx: &F,
    off: usize,
    avail: u32,
    vlan_depth: u8,
    vlan_id: u16,
) -> Result<Parsed, Stop> {
    let ip = bytes_at(ctx, off, 20)?;
    // SAFETY: 20 bytes checked above.
    let vihl = unsafe { *ip };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(Stop::Malformed);
    }
    // Options must be present in the frame too.
    bytes_at(ctx, off, ihl)?;
    let tot_len = be16(ip, 2) as u32;
    if tot_len < ihl as u32 || off as u32 + tot_len > avail {
        return Err(Stop::Malformed);
    }
    let frag = be16(ip, 6);
    let mut dst = [0u8; 16];
    let mut src = [0u8; 16];
    dst[10] = 0xff;
    dst[11] = 0xff;
    src[10] = 0xff;
    src[11] = 0xff;
    unsafe {
        for i in 0..4 {
            src[12 + i] = *ip.add(12 + i);
            dst[12 + i] = *ip.add(16 + i);
        }
    }
    let first_fragment = frag & 0x1fff == 0;
    Ok(Parsed {
        src,
        dst,
        family: FAMILY_V4,
        tos: unsafe { *ip.add(1) },
        ttl: unsafe { *ip.add(8) },
        proto: unsafe { *ip.add(9) },
        df: ((frag & 0x4000) != 0) as u8,
        ip_id: raw16(ip, 4),
        ip_len: tot_len,
        l4_off: if first_fragment { off + ihl } else { 0 },
        l4_len: tot_len - ihl as u32,
        vlan_depth,
        vlan_id,
    })
}

#[inline(always)]
fn parse_v6<F: Frame>(
    ctx: &F,
    off: usize,
    avail: u32,
    vlan_depth: u8,
    vlan_id: u16,
) -> Result<Parsed, Stop> {
    let ip = bytes_at(ctx, off, 40)?;
    if unsafe { *ip } >> 4 != 6 {
        return Err(Stop::Malformed);
    }
    let payload_len = be16(ip, 4) as u32;
    if off as u32 + 40 + payload_len > avail {
        return Err(Stop::Malformed);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    unsafe {
        for i in 0..16 {
            src[i] = *ip.add(8 + i);
            dst[i] = *ip.add(24 + i);
        }
    }
    let mut next = unsafe { *ip.add(6) };
    let mut l4 = off + 40;
    let mut first_fragment = true;
    for _ in 0..IPV6_MAX_EXT {
        let ext_len = match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let h = bytes_at(ctx, l4, 2)?;
                (unsafe { *h.add(1) } as usize + 1) * 8
            }
            IPV6_AH => {
                let h = bytes_at(ctx, l4, 2)?;
                (unsafe { *h.add(1) } as usize + 2) * 4
            }
            IPV6_FRAGMENT => {
                let h = bytes_at(ctx, l4, 8)?;
                if be16(h, 2) & 0xfff8 != 0 {
                    first_fragment = false;
                }
                8
            }
            _ => break,
        };
        let h = bytes_at(ctx, l4, 1)?;
        next = unsafe { *h };
        // Keep the offset bounded for the verifier; real chains are far shorter.
        l4 = (l4 + ext_len) & 0x3fff;
    }
    let ext_total = (l4 - (off + 40)) as u32;
    if ext_total > payload_len {
        return Err(Stop::Malformed);
    }
    let vtc = be16(ip, 0);
    Ok(Parsed {
        src,
        dst,
        family: FAMILY_V6,
        tos: ((vtc >> 4) & 0xff) as u8,
        ttl: unsafe { *ip.add(7) },
        proto: next,
        df: 0,
        ip_id: 0,
        ip_len: 40 + payload_len,
        l4_off: if first_fragment { l4 } else { 0 },
        l4_len: payload_len - ext_total,
        vlan_depth,
        vlan_id,
    })
}

#[inline(always)]
fn flow_key(p: &Parsed, sport: u16, dport: u16) -> FlowKey {
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
fn new_flow(key: &FlowKey, now: u64, seen: u32, probe_flags: u16, ip_len: u32, reported: bool) {
    let Some(st) = FLOW_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, ours for this run.
    unsafe {
        core::ptr::write_bytes(st, 0, 1);
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
fn first_of_flow(p: &Parsed, sport: u16, dport: u16, bit: u32) -> bool {
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
fn live_flow(key: &FlowKey) -> (Option<*mut FlowState>, u32) {
    match FLOWS.get_ptr_mut(key) {
        // SAFETY: LRU value pointer, valid for this run.
        Some(st) => {
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

#[inline(always)]
fn tcp<F: Frame>(ctx: &F, p: &Parsed, decky_id: u32) -> Result<(), Stop> {
    let off = p.l4_off & 0xffff;
    let th = bytes_at(ctx, off, 20)?;
    let doff = ((unsafe { *th.add(12) } >> 4) as usize) * 4;
    if doff < 20 || doff as u32 > p.l4_len {
        return Err(Stop::Malformed);
    }
    bytes_at(ctx, off, doff)?;
    let flags = be16(th, 12) & 0x01ff;
    let sport = raw16(th, 0);
    let dport = raw16(th, 2);
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
                let seen = unsafe { (*st).seen };
                if payload_len > 0 && seen & FLOW_SEEN_PAYLOAD == 0 {
                    unsafe { (*st).seen = seen | FLOW_SEEN_PAYLOAD };
                    Some(EventKind::TcpPayload)
                } else if seen & FLOW_SEEN_OTHER == 0 && payload_len == 0 {
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
                    ev.seq = raw32(th, 4);
                    ev.ack = raw32(th, 8);
                    ev.tcp_flags = flags;
                    ev.window = raw16(th, 14);
                    ev.urg_ptr = raw16(th, 18);
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
    // SAFETY: st is the live LRU value of this flow (see guard() on racing CPUs).
    let segs = ctx.segs();
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
            let seq_end = u32::from_be(raw32(th, 4)).wrapping_add(payload_len);
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

/// How a segment with `flags` ends its flow (given the flow's `seen` bits after it): a RST
/// ends it as `rst` says (who sent it), the second FIN as a FIN exchange.
#[inline(always)]
fn flow_end_of(flags: u16, seen: u32, rst: u8) -> u8 {
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
fn end_flow<F: Frame>(
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

#[inline(always)]
fn udp<F: Frame>(ctx: &F, p: &Parsed, decky_id: u32) -> Result<(), Stop> {
    let off = p.l4_off & 0xffff;
    let uh = bytes_at(ctx, off, 8)?;
    if p.l4_len < 8 {
        return Err(Stop::Malformed);
    }
    let payload_len = p.l4_len - 8;
    let payload_off = (off + 8) as u32;
    let sport = raw16(uh, 0);
    let dport = raw16(uh, 2);
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
    let key = flow_key(p, sport, dport);
    let segs = ctx.segs();
    match FLOWS.get_ptr_mut(&key) {
        // SAFETY: LRU value pointer, valid for this run.
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
fn icmp<F: Frame>(ctx: &F, p: &Parsed, decky_id: u32) -> Result<(), Stop> {
    let off = p.l4_off & 0xffff;
    let ih = bytes_at(ctx, off, 8)?;
    if p.l4_len < 8 {
        return Err(Stop::Malformed);
    }
    let ty = unsafe { *ih };
    let code = unsafe { *ih.add(1) };
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
                ev.src_port = raw16(ih, 4);
                ev.dst_port = raw16(ih, 6);
            }
            copy_payload(ctx, ev, payload_off, payload_len);
        },
    );
    Ok(())
}

#[inline(always)]
fn copy_payload<F: Frame>(ctx: &F, ev: &mut RawEvent, off: u32, payload_len: u32) {
    let cap = if payload_len > PAYLOAD_MAX as u32 {
        PAYLOAD_MAX as u32
    } else {
        payload_len
    };
    ev.payload_cap = cap as u8;
    if cap > 0 {
        // Written so the verifier can see 1 <= n <= 128.
        let n = ((cap - 1) & (PAYLOAD_MAX as u32 - 1)) + 1;
        let r = ctx.load(off, ev.payload.as_mut_ptr(), n);
        if r != 0 {
            ev.payload_cap = 0;
        }
    }
}

/// The TC egress program: the decoy's side of each conversation.
#[classifier]
pub fn decnet_tc_egress(ctx: TcContext) -> i32 {
    bump(Stat::EgressSeen);
    linear_headers(&ctx);
    if let Err(Stop::Malformed) = try_egress(&ctx) {
        bump(Stat::EgressMalformed);
    }
    // Not a verdict: let the next program (or the default action) decide.
    TC_ACT_UNSPEC
}

#[inline(always)]
fn try_egress(ctx: &TcContext) -> Result<(), Stop> {
    let p = parse_ip(ctx)?;
    // SAFETY: plain u32 value, read once.
    let decky_id = match unsafe { DECOYS.get(&DecoyKey { addr: p.src }) } {
        Some(id) => *id,
        None => return Err(Stop::Pass),
    };
    bump(Stat::EgressFromDecoy);
    match p.proto {
        IPPROTO_TCP if p.l4_off != 0 => egress_tcp(ctx, &p, decky_id),
        IPPROTO_ICMP if p.l4_off != 0 && p.family == FAMILY_V4 => egress_icmp(ctx, &p, decky_id),
        IPPROTO_ICMPV6 if p.l4_off != 0 && p.family == FAMILY_V6 => egress_icmp(ctx, &p, decky_id),
        _ => Ok(()),
    }
}

/// The attacker -> decoy view of a decoy packet's flow, for the events it causes.
#[inline(always)]
fn forward(p: &Parsed, proto: u8) -> Parsed {
    Parsed {
        src: p.dst,
        dst: p.src,
        family: p.family,
        ttl: p.ttl,
        tos: p.tos,
        df: p.df,
        ip_id: p.ip_id,
        ip_len: p.ip_len,
        proto,
        l4_off: 0,
        l4_len: 0,
        vlan_depth: p.vlan_depth,
        vlan_id: p.vlan_id,
    }
}

#[inline(always)]
fn egress_tcp(ctx: &TcContext, p: &Parsed, decky_id: u32) -> Result<(), Stop> {
    let off = p.l4_off & 0xffff;
    let th = bytes_at(ctx, off, 20)?;
    let doff = ((unsafe { *th.add(12) } >> 4) as usize) * 4;
    if doff < 20 || doff as u32 > p.l4_len {
        return Err(Stop::Malformed);
    }
    let flags = be16(th, 12) & 0x01ff;
    let window = raw16(th, 14);
    let payload_len = p.l4_len - doff as u32;
    let fwd = forward(p, IPPROTO_TCP);
    let key = flow_key(&fwd, raw16(th, 2), raw16(th, 0));
    use tcp_flags::*;
    let answer = flags & (SYN | ACK) == SYN | ACK || flags & RST != 0;
    // The guard's clock first: under a flood nearly every answer stops here.
    let coarse = coarse_ns();
    if answer && answers_withheld_syn(&key, coarse) {
        bump(Stat::OutcomesWithheld);
        return Ok(());
    }
    let Some(st) = live_flow(&key).0 else {
        if answer {
            no_flow_answer(&key.src, coarse);
        }
        return Ok(());
    };
    let now = now_ns();
    // SAFETY: st is the flow's live LRU value.
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
        outcome(ctx, &fwd, decky_id, &key, st, flags, 0, 0, window, now);
    }
    if end != flow_end::OPEN {
        end_flow(ctx, &fwd, decky_id, &key, st, end, now);
    }
    Ok(())
}

const ICMP_DEST_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;

/// An ICMP destination-unreachable from the decoy: the quoted header names the probe.
#[inline(always)]
fn egress_icmp(ctx: &TcContext, p: &Parsed, decky_id: u32) -> Result<(), Stop> {
    let off = p.l4_off & 0xffff;
    let ih = bytes_at(ctx, off, 8)?;
    let (ty, code) = unsafe { (*ih, *ih.add(1)) };
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
        let ihl = ((unsafe { *ip } & 0x0f) as usize) * 4;
        key.proto = unsafe { *ip.add(9) };
        key.src[10] = 0xff;
        key.src[11] = 0xff;
        key.dst[10] = 0xff;
        key.dst[11] = 0xff;
        for i in 0..4 {
            unsafe {
                key.src[12 + i] = *ip.add(12 + i);
                key.dst[12 + i] = *ip.add(16 + i);
            }
        }
        inner + (ihl & 0x3c)
    } else {
        let ip = bytes_at(ctx, inner, 40)?;
        key.proto = unsafe { *ip.add(6) };
        for i in 0..16 {
            unsafe {
                key.src[i] = *ip.add(8 + i);
                key.dst[i] = *ip.add(24 + i);
            }
        }
        inner + 40
    };
    let ports = bytes_at(ctx, l4, 4)?;
    key.src_port = raw16(ports, 0);
    key.dst_port = raw16(ports, 2);
    if key.proto != IPPROTO_TCP && key.proto != IPPROTO_UDP {
        return Ok(());
    }
    let Some(st) = live_flow(&key).0 else {
        no_flow_answer(&key.src, coarse_ns());
        return Ok(());
    };
    let now = now_ns();
    // SAFETY: st is the flow's live LRU value.
    unsafe {
        (*st).last_ns = now;
        if (*st).reply_ns == 0 {
            (*st).reply_ns = now;
        }
    }
    let fwd = forward(p, key.proto);
    outcome(ctx, &fwd, decky_id, &key, st, 0, ty, code, 0, now);
    Ok(())
}

/// True when `key` is the SYN this CPU's flood guard withheld just now: a SYN-ACK or RST
/// on it answers that SYN (which was reported nowhere and opened no flow). `now`:
/// [`coarse_ns`], the clock the note was taken on.
#[inline(always)]
fn answers_withheld_syn(key: &FlowKey, now: u64) -> bool {
    let Some(hot) = WITHHELD_HOT.get_ptr(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, plain loads.
    unsafe {
        (*hot).syn_ports == [key.src_port, key.dst_port]
            && (*hot).syn_addr == addr_words(&key.src)
            && now.saturating_sub((*hot).syn_ns) < HOT_ANSWER_NS
    }
}

/// Counts an answer whose probe has no flow: withheld when the flood guard is withholding
/// that source's probes (they open no flow), else unmatched (evicted, or older than us).
/// `now`: [`coarse_ns`], the guard's clock.
#[inline(always)]
fn no_flow_answer(attacker: &[u8; 16], now: u64) {
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
    // SAFETY: LRU value pointer, plain loads.
    let flooding = match SOURCES.get_ptr(attacker) {
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
fn outcome(
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
    // SAFETY: st is the flow's live LRU value.
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

/// The flood guard: true when the source is within its budget (the event goes out), false
/// when it is over (the event is counted into the source's state instead, and a summary is
/// submitted at most once a second). `port` is the destination port in host order (0 for
/// portless protocols); `now` is [`coarse_ns`].
#[inline(always)]
fn guard<F: Frame>(ctx: &F, p: &Parsed, decky_id: u32, port: u16, now: u64) -> bool {
    let Some(cfg) = GUARD.get(0) else {
        return true;
    };
    let (interval, burst) = (cfg.interval_ns, cfg.burst_ns);
    if interval == 0 {
        return true;
    }
    let Some(st) = SOURCES.get_ptr_mut(&p.src) else {
        // A new source: this is its first event.
        if let Some(fresh) = SOURCE_SCRATCH.get_ptr_mut(0) {
            // SAFETY: per-CPU scratch slot, ours for this run.
            unsafe {
                core::ptr::write_bytes(fresh, 0, 1);
                (*fresh).tat_ns = now + interval;
                let _ = SOURCES.insert(&p.src, &*fresh, 0);
            }
        }
        return true;
    };
    // SAFETY: LRU value pointer, valid for this run. Plain read-modify-write: the BPF
    // target has no 64-bit atomics in `core`, so two CPUs racing on one source may let one
    // extra event through or lose an increment of its counters (the per-CPU `Suppressed`
    // stat stays exact). One source's packets are normally handled on one CPU at a time.
    unsafe {
        let tat = (*st).tat_ns;
        let t = if tat > now { tat } else { now };
        if t + interval - now <= burst {
            (*st).tat_ns = t + interval;
            return true;
        }
        (*st).suppressed += 1;
        if (*st).first_ns == 0 {
            (*st).first_ns = now;
        }
        (*st).last_ns = now;
        (*st).decoys |= 1u64 << (decky_id & 63);
        let bit = port_bit(port);
        let w = (bit >> 6) & (PORT_BITS / 64 - 1);
        (*st).ports[w] |= 1u64 << (bit & 63);
    }
    bump(Stat::Suppressed);
    if let Some(hot) = WITHHELD_HOT.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*hot).addr = addr_words(&p.src);
            (*hot).last_ns = now;
        }
    }
    let due = unsafe { now - (*st).summary_ns >= SUMMARY_EVERY_NS };
    if due {
        unsafe { (*st).summary_ns = now };
        // The record itself is stamped like every event (at most once a second).
        summarize(ctx, p, decky_id, st, now_ns());
    }
    false
}

/// The bitmap bit of a port: murmur3's finalizer, so that linear counting over the bitmap
/// estimates distinct ports whatever their spacing (a plain multiplicative hash clusters
/// evenly spaced ports, as scanners send them).
#[inline(always)]
fn port_bit(port: u16) -> usize {
    let mut x = port as u32;
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^= x >> 16;
    (x as usize) & (PORT_BITS - 1)
}

/// Submits a `source_suppressed` event with the source's cumulative counters.
#[inline(always)]
fn summarize<F: Frame>(ctx: &F, p: &Parsed, decky_id: u32, st: *mut SourceState, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
        // The next summary carries the same (cumulative) counters.
        bump(Stat::RingReserveFailed);
        return;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_common(
        ctx.ifindex(),
        ev,
        p,
        decky_id,
        EventKind::SourceSuppressed,
        0,
        now,
    );
    // SAFETY: st is the live map value; plain loads.
    let s = unsafe {
        SuppressedSummary {
            suppressed: (*st).suppressed,
            first_ns: (*st).first_ns,
            last_ns: (*st).last_ns,
            decoys: (*st).decoys,
            at_ns: now,
        }
    };
    let o = s.to_options();
    for i in 0..SUMMARY_OPT_LEN {
        ev.options[i] = o[i];
    }
    ev.opt_len = SUMMARY_OPT_LEN as u8;
    for w in 0..PORT_BITS / 64 {
        let b = unsafe { (*st).ports[w] }.to_le_bytes();
        for j in 0..8 {
            ev.payload[w * 8 + j] = b[j];
        }
    }
    ev.payload_cap = PAYLOAD_MAX as u8;
    entry.submit(0);
    bump(Stat::EventsEmitted);
    bump(Stat::SuppressedSummaries);
}

/// What became of an event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Emitted {
    Sent,
    /// The flood guard withheld it (counted in the source's summary).
    Withheld,
    /// The ring was full (counted).
    Lost,
}

/// [`submit`]s the event unless the flood guard withholds it (`port`: destination port,
/// host order; None when the guard already let this packet through).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit<F: Frame>(
    ctx: &F,
    p: &Parsed,
    decky_id: u32,
    kind: EventKind,
    payload_len: u32,
    port: Option<u16>,
    now: u64,
    fill: impl FnOnce(&mut RawEvent),
) -> Emitted {
    if let Some(port) = port
        && !guard(ctx, p, decky_id, port, coarse_ns())
    {
        return Emitted::Withheld;
    }
    if submit(ctx, p, decky_id, kind, payload_len, now, fill) {
        Emitted::Sent
    } else {
        Emitted::Lost
    }
}

/// Reserves a ring entry, fills the common fields, lets `fill` add the L4 ones, submits.
/// True when it went out (false: the ring was full, counted).
#[inline(always)]
fn submit<F: Frame>(
    ctx: &F,
    p: &Parsed,
    decky_id: u32,
    kind: EventKind,
    payload_len: u32,
    now: u64,
    fill: impl FnOnce(&mut RawEvent),
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
        bump(Stat::RingReserveFailed);
        return false;
    };
    // SAFETY: the entry is exclusively ours until submit; every scalar is written below and
    // the option/payload arrays are only read up to opt_len/payload_cap.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_common(ctx.ifindex(), ev, p, decky_id, kind, payload_len, now);
    fill(ev);
    entry.submit(0);
    bump(Stat::EventsEmitted);
    true
}

/// The fields every event has; L4 fields zeroed for the caller to fill.
#[inline(always)]
fn fill_common(
    ifindex: u32,
    ev: &mut RawEvent,
    p: &Parsed,
    decky_id: u32,
    kind: EventKind,
    payload_len: u32,
    now: u64,
) {
    ev.ts_ns = now;
    ev.src_addr = p.src;
    ev.dst_addr = p.dst;
    ev.kind = kind as u32;
    ev.ifindex = ifindex;
    ev.decky_id = decky_id;
    ev.ip_len = p.ip_len;
    ev.seq = 0;
    ev.ack = 0;
    ev.src_port = 0;
    ev.dst_port = 0;
    ev.window = 0;
    ev.urg_ptr = 0;
    ev.tcp_flags = 0;
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
