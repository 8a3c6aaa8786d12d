//! Types shared between the decnet eBPF programs and the userspace daemon.
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so every type is
//! `#[repr(C)]`, `Copy`, padded explicitly and size-checked at compile time. Addresses and
//! ports stay in network byte order, exactly as they were on the wire; userspace converts.
//! Numeric ids (event kinds, stat indices) are never reused once published.
#![no_std]

/// Name of the RingBuf map that carries [`RawEvent`]s to userspace.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the decoy map: [`DecoyKey`] -> decky id (`u32`).
pub const DECOYS_MAP: &str = "DECOYS";
/// Name of the decoy prefilter: [`DECOY_FILTER_WORDS`] u64 words, one bit per value of an
/// address's last 16 bits (see [`decoy_filter_slot`]).
pub const DECOY_FILTER_MAP: &str = "DECOY_FILTER";
/// Words of [`DECOY_FILTER_MAP`]: 65,536 bits, 8 KiB.
pub const DECOY_FILTER_WORDS: u32 = 1024;

/// Where an address's bit sits in [`DECOY_FILTER_MAP`]: (word, mask), from the address's
/// last two bytes (an IPv4 address's too, as it sits IPv4-mapped in 16 bytes).
///
/// Why: most packets on a decoy's interface go to other hosts, and for them the 16-byte
/// hash lookup in [`DECOYS_MAP`] was most of the program's cost. An array read is inlined
/// by the verifier; a clear bit proves the address is no decoy. A set bit only says "look
/// in the hash" (another address may share the bit), so the prefilter never changes a
/// verdict, only how fast a miss is found.
#[inline(always)]
pub const fn decoy_filter_slot(tail: u16) -> (u32, u64) {
    ((tail >> 6) as u32, 1u64 << (tail & 63))
}

/// Name of the per-CPU stats array, indexed by [`Stat`].
pub const STATS_MAP: &str = "STATS";
/// Name of the flow table (an array of [`FlowSlot`]s) used for "first of flow" decisions.
pub const FLOWS_MAP: &str = "FLOWS";
/// Name of the one-entry array holding the flood guard's [`GuardConfig`].
pub const GUARD_MAP: &str = "GUARD";
/// The replay clock: one u64, the capture time of the frame being replayed.
pub const CLOCK_MAP: &str = "CLOCK";
/// The read-only global that switches the programs to [`CLOCK_MAP`] (set only by replay).
pub const REPLAY_CLOCK_GLOBAL: &str = "REPLAY_CLOCK";
/// Name of the LRU map of per-source flood-guard state: source address -> [`SourceState`].
pub const SOURCES_MAP: &str = "SOURCES";
/// Sources the flood guard remembers; the least recently active are evicted first.
pub const MAX_SOURCES: u32 = 65536;

/// Default ring size in bytes (power of two, multiple of the page size). At ~270 bytes per
/// record this holds about 60 000 events: tens of milliseconds of a flood.
pub const DEFAULT_RING_BYTES: u32 = 16 << 20;
/// Maximum number of decoy addresses.
pub const MAX_DECOYS: u32 = 4096;
/// Slots of the flow table (a power of two). A flow lives in one of the [`FLOW_WAYS`] slots
/// of its set ([`FlowKey::set`]); a new flow takes the set's free or ended slot, else the
/// one quiet longest.
pub const MAX_FLOWS: u32 = 65536;
/// Slots per set of the flow table.
pub const FLOW_WAYS: u32 = 2;

/// murmur3's 64-bit finalizer: every input bit reaches every output bit. An IPv4 address
/// varies in a few bytes of one word, which a bare multiply leaves out of the low bits a
/// table is indexed by.
#[inline(always)]
pub const fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Longest TCP option block (60-byte header minus the fixed 20).
pub const TCP_OPTIONS_MAX: usize = 40;
/// Bytes of L4 payload copied into each event.
pub const PAYLOAD_MAX: usize = 128;

/// What the kernel decided a packet was. Ids are stable; never reuse one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A SYN without ACK/FIN/RST: someone opens (or scans) a port.
    TcpSyn = 1,
    /// A flag combination a normal established flow never sends (null, FIN, Xmas, SYN+FIN...)
    /// or an ACK-carrying segment for which no handshake was seen (ACK / window / Maimon scan).
    TcpProbe = 2,
    /// The first payload-carrying segment of a flow.
    TcpPayload = 3,
    /// Any other segment of a known flow, at most once per flow.
    TcpSegment = 4,
    /// A UDP datagram (every one).
    UdpProbe = 5,
    /// An ICMP / ICMPv6 echo request (every one).
    IcmpEcho = 6,
    /// Any other ICMP / ICMPv6 message, at most once per flow (type/code pair).
    IcmpOther = 7,
    /// Any other IP protocol, or a non-first fragment, at most once per flow.
    IpOther = 8,
    /// Flood guard: a source over its event budget, summarised (see [`SuppressedSummary`]).
    SourceSuppressed = 9,
    /// The decoy answered a reported probe (TC egress): SYN-ACK, RST or ICMP unreachable.
    /// Addresses and ports are the probe's (attacker -> decoy); the reply's flags, ICMP type
    /// and code, TTL and window are the reply's; `options` holds an [`OutcomeInfo`].
    ProbeOutcome = 10,
    /// A TCP flow ended (FIN from both sides or a RST): its [`FlowState`] travels in
    /// `payload` (`payload_cap` = `size_of::<FlowState>()`). Flows of at most two attacker
    /// packets without payload give none: their probe events tell the story.
    TcpFlow = 11,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::TcpSyn,
            2 => Self::TcpProbe,
            3 => Self::TcpPayload,
            4 => Self::TcpSegment,
            5 => Self::UdpProbe,
            6 => Self::IcmpEcho,
            7 => Self::IcmpOther,
            8 => Self::IpOther,
            9 => Self::SourceSuppressed,
            10 => Self::ProbeOutcome,
            11 => Self::TcpFlow,
            _ => return None,
        })
    }
}

/// Indices into the per-CPU [`STATS_MAP`]. Stable; append only.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Every frame the program ran on.
    PacketsSeen = 0,
    /// IP packets whose destination is a decoy.
    PacketsToDecoy = 1,
    /// Events submitted to the ring.
    EventsEmitted = 2,
    /// Events lost because the ring was full (`bpf_ringbuf_reserve` failed).
    RingReserveFailed = 3,
    /// Frames that were cut short or had impossible header values.
    Malformed = 4,
    /// Decoy packets that were deliberately not emitted (repeat of a flow already reported).
    DecoyNotEmitted = 5,
    /// Events the flood guard withheld (the source was over budget); counted in the
    /// source's `source_suppressed` summaries instead.
    Suppressed = 6,
    /// `source_suppressed` summaries the kernel submitted (also in `EventsEmitted`).
    SuppressedSummaries = 7,
    /// Packets the TC egress program ran on.
    EgressSeen = 8,
    /// Egress packets whose source is a decoy (the decoy's replies).
    EgressFromDecoy = 9,
    /// `probe_outcome` events submitted (also in `EventsEmitted`).
    ProbeOutcomes = 10,
    /// Decoy answers (SYN-ACK, RST, ICMP unreachable) to no probe the flow map remembers:
    /// the flow was evicted, or began before the sensor did.
    OutcomesUnmatched = 11,
    /// Decoy answers to probes the flood guard withheld (counted, not emitted: the probe
    /// they answer is only in the source's summary).
    OutcomesWithheld = 12,
    /// `tcp_flow` summaries the kernel submitted (also in `EventsEmitted`).
    FlowSummaries = 13,
    /// Egress frames from a decoy cut short or with impossible header values.
    EgressMalformed = 14,
    /// Packets to a decoy that belong to a conversation the decoy opened itself (answers
    /// to its own connections and datagrams): not probes, so never events.
    DecoyOwnTraffic = 15,
}

/// Number of slots in the stats array (leave room to append without resizing).
pub const STAT_COUNT: u32 = 16;
pub const STAT_NAMES: [(Stat, &str); 16] = [
    (Stat::PacketsSeen, "packets_seen"),
    (Stat::PacketsToDecoy, "packets_to_decoy"),
    (Stat::EventsEmitted, "events_emitted"),
    (Stat::RingReserveFailed, "ring_reserve_failed"),
    (Stat::Malformed, "malformed"),
    (Stat::DecoyNotEmitted, "decoy_not_emitted"),
    (Stat::Suppressed, "suppressed"),
    (Stat::SuppressedSummaries, "suppressed_summaries"),
    (Stat::EgressSeen, "egress_seen"),
    (Stat::EgressFromDecoy, "egress_from_decoy"),
    (Stat::ProbeOutcomes, "probe_outcomes"),
    (Stat::OutcomesUnmatched, "outcomes_unmatched"),
    (Stat::OutcomesWithheld, "outcomes_withheld"),
    (Stat::FlowSummaries, "flow_summaries"),
    (Stat::EgressMalformed, "egress_malformed"),
    (Stat::DecoyOwnTraffic, "decoy_own_traffic"),
];

/// The flood guard's budget, set by userspace: a GCRA token bucket per source address.
/// Each event costs `interval_ns` of credit; a source may run `burst_ns` ahead of real time
/// (burst = `burst_ns / interval_ns` events). `interval_ns == 0` turns the guard off.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GuardConfig {
    /// 1e9 / rate (events per second per source).
    pub interval_ns: u64,
    /// burst * interval_ns.
    pub burst_ns: u64,
}
const _: () = assert!(core::mem::size_of::<GuardConfig>() == 16);

/// Ports remembered per source for the distinct-port estimate (bits of the bitmap).
pub const PORT_BITS: usize = 1024;
/// Minimum time between two kernel summaries of one source.
pub const SUMMARY_EVERY_NS: u64 = 1_000_000_000;

/// Per-source flood-guard state. Counters are cumulative for the life of the entry, so a
/// lost or late summary is made good by the next one: userspace reports differences.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceState {
    /// GCRA theoretical arrival time (ns, CLOCK_MONOTONIC).
    pub tat_ns: u64,
    /// Events withheld so far.
    pub suppressed: u64,
    /// First and last withheld event (0 before the first).
    pub first_ns: u64,
    pub last_ns: u64,
    /// When the kernel last submitted a summary for this source.
    pub summary_ns: u64,
    /// Bit `decky_id % 64` for every decoy a withheld event went to.
    pub decoys: u64,
    /// Bit `fmix32(dst_port) % PORT_BITS` (murmur3 finalizer of the host-order port) for
    /// every withheld event: a linear-counting sketch of the distinct ports.
    pub ports: [u64; PORT_BITS / 64],
}
const _: () = assert!(core::mem::size_of::<SourceState>() == 48 + PORT_BITS / 8);

/// The counters of a [`SourceState`] as a `source_suppressed` event carries them in
/// `RawEvent::options` (little-endian u64s; `opt_len` = 40); the port bitmap travels in
/// `RawEvent::payload` (`payload_cap` = 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SuppressedSummary {
    pub suppressed: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub decoys: u64,
    /// Monotonic time the summary was taken.
    pub at_ns: u64,
}
pub const SUMMARY_OPT_LEN: usize = 40;
const _: () = assert!(PORT_BITS / 8 == PAYLOAD_MAX);

impl SuppressedSummary {
    pub fn to_options(&self) -> [u8; SUMMARY_OPT_LEN] {
        let mut o = [0u8; SUMMARY_OPT_LEN];
        let vals = [
            self.suppressed,
            self.first_ns,
            self.last_ns,
            self.decoys,
            self.at_ns,
        ];
        let mut i = 0;
        while i < vals.len() {
            let b = vals[i].to_le_bytes();
            let mut j = 0;
            while j < 8 {
                o[i * 8 + j] = b[j];
                j += 1;
            }
            i += 1;
        }
        o
    }

    pub fn from_options(o: &[u8]) -> Option<Self> {
        if o.len() < SUMMARY_OPT_LEN {
            return None;
        }
        let v = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&o[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        Some(Self {
            suppressed: v(0),
            first_ns: v(1),
            last_ns: v(2),
            decoys: v(3),
            at_ns: v(4),
        })
    }
}

/// Address family tags stored in [`RawEvent::family`].
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// TCP flag bits as they appear in the low 9 bits of the data-offset/flags word.
pub mod tcp_flags {
    pub const FIN: u16 = 0x001;
    pub const SYN: u16 = 0x002;
    pub const RST: u16 = 0x004;
    pub const PSH: u16 = 0x008;
    pub const ACK: u16 = 0x010;
    pub const URG: u16 = 0x020;
    pub const ECE: u16 = 0x040;
    pub const CWR: u16 = 0x080;
    pub const NS: u16 = 0x100;
}

/// A decoy address: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`) so one map serves both.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecoyKey {
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<DecoyKey>() == 16);

/// Flow identity (attacker -> decoy direction). For ICMP the ports hold type and code.
/// 8-aligned, so that it hashes and compares as five words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

impl FlowKey {
    /// The key as five native-order words (every byte of it, `_pad` included).
    #[inline(always)]
    pub fn words(&self) -> [u64; 5] {
        // SAFETY: 40 initialised bytes (repr(C), no implicit padding), 8-aligned.
        unsafe { *(self as *const Self).cast::<[u64; 5]>() }
    }

    /// True when `self` and `other` are the same key (word by word, without the byte-wise
    /// `memcmp` a derived comparison may compile to on BPF).
    #[inline(always)]
    pub fn same(&self, other: &Self) -> bool {
        let (a, b) = (self.words(), other.words());
        let mut d = 0;
        let mut i = 0;
        while i < 5 {
            d |= a[i] ^ b[i];
            i += 1;
        }
        d == 0
    }

    /// The first slot of this key's set in the flow table. The kernel and userspace both
    /// find a flow by it, so it must never change without the pinned layout's version.
    #[inline(always)]
    pub fn set(&self) -> u32 {
        let w = self.words();
        let mut h = 0u64;
        let mut i = 0;
        while i < 5 {
            h = (h ^ w[i])
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(31);
            i += 1;
        }
        fmix64(h) as u32 & (MAX_FLOWS - 1) & !(FLOW_WAYS - 1)
    }
}

/// One slot of the flow table: a flow's key and state. Free while `state.first_ns` is 0.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowSlot {
    pub key: FlowKey,
    pub state: FlowState,
}
const _: () = assert!(core::mem::size_of::<FlowSlot>() == 128);
const _: () = assert!(MAX_FLOWS.is_power_of_two() && FLOW_WAYS.is_power_of_two());

/// Bits in [`FlowState::seen`].
/// A SYN opened the flow.
pub const FLOW_SEEN_SYN: u32 = 1;
/// The attacker sent payload (its first payload segment was reported).
pub const FLOW_SEEN_PAYLOAD: u32 = 2;
/// A non-SYN, non-payload segment was reported (once per flow), or for ICMP / other
/// protocols, the first packet of the flow was.
pub const FLOW_SEEN_OTHER: u32 = 4;
/// The probe that opened the flow was emitted (not withheld by the flood guard), so an
/// answer to it can be linked to its record.
pub const FLOW_REPORTED: u32 = 8;
/// A `probe_outcome` was emitted for the current probe.
pub const FLOW_OUTCOME: u32 = 16;
/// The decoy answered with SYN-ACK.
pub const FLOW_SYNACK: u32 = 32;
/// The attacker acknowledged the SYN-ACK: the three-way handshake completed.
pub const FLOW_HANDSHAKE: u32 = 64;
/// FIN seen from the attacker / from the decoy.
pub const FLOW_FIN_FWD: u32 = 128;
pub const FLOW_FIN_REV: u32 = 256;
/// The attacker closed (FIN or RST) before the decoy did.
pub const FLOW_CLIENT_CLOSED: u32 = 512;
/// The flow is over (`end` says why); its summary, if it gets one, was sent.
pub const FLOW_ENDED: u32 = 1024;
/// `next_seq_fwd` holds a sequence number.
pub const FLOW_SEQ: u32 = 2048;
/// The decoy sent payload.
pub const FLOW_REV_PAYLOAD: u32 = 4096;
/// The decoy itself opened this conversation (a TCP SYN or a UDP datagram it sent first):
/// what comes back answers the decoy's own traffic (its DNS lookups, updates) and is no
/// probe.
pub const FLOW_DECOY_OPENED: u32 = 8192;

/// Why a flow ended ([`FlowState::end`]). Stable ids.
pub mod flow_end {
    /// Still open.
    pub const OPEN: u8 = 0;
    /// Both sides sent FIN.
    pub const FIN: u8 = 1;
    /// The attacker reset it.
    pub const CLIENT_RST: u8 = 2;
    /// The decoy reset it.
    pub const DECOY_RST: u8 = 3;
    /// Userspace: no packet for the idle timeout.
    pub const IDLE: u8 = 4;
    /// Userspace: a new flow took its slot in the flow table before it ended.
    pub const EVICTED: u8 = 5;
    /// Userspace: still open when the daemon stopped.
    pub const SHUTDOWN: u8 = 6;
}

/// Per-flow state (attacker -> decoy key, both directions counted). Times are
/// CLOCK_MONOTONIC ns; sequence numbers host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowState {
    pub first_ns: u64,
    pub last_ns: u64,
    /// When the current probe (the SYN, stealth probe or datagram the decoy may answer) was
    /// seen: an answer's round-trip time starts here.
    pub probe_ns: u64,
    /// When the decoy first answered (0 before).
    pub reply_ns: u64,
    /// IP bytes attacker -> decoy and decoy -> attacker.
    pub bytes_fwd: u64,
    pub bytes_rev: u64,
    pub pkts_fwd: u32,
    pub pkts_rev: u32,
    /// L4 payload bytes each way.
    pub payload_fwd: u32,
    pub payload_rev: u32,
    /// One past the highest attacker payload byte seen (valid with [`FLOW_SEQ`]).
    pub next_seq_fwd: u32,
    /// Attacker payload segments that repeated sequence space already seen.
    pub retransmits: u32,
    /// `FLOW_*` bits.
    pub seen: u32,
    /// TCP flags ORed over each direction.
    pub flags_fwd: u16,
    pub flags_rev: u16,
    /// Flags of the current probe.
    pub probe_flags: u16,
    /// A [`flow_end`] id.
    pub end: u8,
    pub _pad: [u8; 5],
}
pub const FLOW_STATE_SIZE: usize = 88;
const _: () = assert!(core::mem::size_of::<FlowState>() == FLOW_STATE_SIZE);
const _: () = assert!(FLOW_STATE_SIZE <= PAYLOAD_MAX && FLOW_STATE_SIZE.is_multiple_of(8));

impl FlowState {
    /// True when the flow is worth a `tcp_flow` summary: more than two attacker packets, or
    /// payload either way. A scan probe and its answer (SYN / RST, SYN / SYN-ACK / RST) are not.
    pub const fn summarised(&self) -> bool {
        self.pkts_fwd > 2 || self.seen & (FLOW_SEEN_PAYLOAD | FLOW_REV_PAYLOAD) != 0
    }

    /// The state as it travels in a `tcp_flow` event's payload.
    pub fn from_payload(b: &[u8]) -> Option<Self> {
        if b.len() < FLOW_STATE_SIZE {
            return None;
        }
        // SAFETY: length checked; FlowState is plain old data valid for every bit pattern.
        Some(unsafe { core::ptr::read_unaligned(b.as_ptr().cast::<FlowState>()) })
    }
}

/// What a `probe_outcome` event carries in `RawEvent::options` (`opt_len` =
/// [`OUTCOME_OPT_LEN`]): the answered probe's timestamp and flags, little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OutcomeInfo {
    pub probe_ns: u64,
    pub probe_flags: u16,
}
pub const OUTCOME_OPT_LEN: usize = 16;

impl OutcomeInfo {
    pub fn to_options(&self) -> [u8; OUTCOME_OPT_LEN] {
        let mut o = [0u8; OUTCOME_OPT_LEN];
        let a = self.probe_ns.to_le_bytes();
        let b = self.probe_flags.to_le_bytes();
        let mut i = 0;
        while i < 8 {
            o[i] = a[i];
            i += 1;
        }
        o[8] = b[0];
        o[9] = b[1];
        o
    }

    pub fn from_options(o: &[u8]) -> Option<Self> {
        if o.len() < OUTCOME_OPT_LEN {
            return None;
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(&o[..8]);
        Some(Self {
            probe_ns: u64::from_le_bytes(a),
            probe_flags: u16::from_le_bytes([o[8], o[9]]),
        })
    }
}

/// One observed packet, as the kernel hands it to userspace.
///
/// Multi-byte header fields (`seq`, `ack`, ports, `window`, `urg_ptr`, `ip_id`) are copied
/// from the wire untouched, i.e. big-endian; `tcp_flags`, `ip_len` and `payload_len` are
/// computed in the kernel and are native-endian.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    /// An [`EventKind`] id.
    pub kind: u32,
    pub ifindex: u32,
    pub decky_id: u32,
    /// IPv4 total length, or 40 + IPv6 payload length.
    pub ip_len: u32,
    pub seq: u32,
    pub ack: u32,
    /// TCP/UDP ports; for ICMP echo the identifier and sequence number.
    pub src_port: u16,
    pub dst_port: u16,
    pub window: u16,
    pub urg_ptr: u16,
    /// All nine TCP flag bits.
    pub tcp_flags: u16,
    /// IPv4 identification (0 for IPv6).
    pub ip_id: u16,
    /// L4 payload length according to the headers (may exceed what was copied).
    pub payload_len: u32,
    /// IP protocol number of the transport header (after IPv6 extension headers).
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    /// 1 when the IPv4 Don't-Fragment bit is set.
    pub df: u8,
    /// Bytes valid in `options`.
    pub opt_len: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Bytes valid in `payload`.
    pub payload_cap: u8,
    /// Number of VLAN tags that were skipped (0..=2).
    pub vlan_depth: u8,
    /// Innermost VLAN id (0 when untagged).
    pub vlan_id: u16,
    pub _pad: [u8; 4],
    pub options: [u8; TCP_OPTIONS_MAX],
    pub payload: [u8; PAYLOAD_MAX],
}
pub const RAW_EVENT_SIZE: usize = 264;
const _: () = assert!(core::mem::size_of::<RawEvent>() == RAW_EVENT_SIZE);
const _: () = assert!(core::mem::align_of::<RawEvent>() <= 8);

impl RawEvent {
    /// Reinterprets a ring entry. `None` when the entry is too short to be an event.
    pub fn from_bytes(buf: &[u8]) -> Option<Self> {
        if buf.len() < RAW_EVENT_SIZE {
            return None;
        }
        // SAFETY: the length was checked, RawEvent is plain old data with no invalid bit
        // patterns, and read_unaligned copes with any alignment of the ring entry.
        Some(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<RawEvent>()) })
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (each): repr(C), Copy, and valid for every bit pattern (integers and integer
    // arrays only), which is what aya::Pod asks of a map's key or value.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::DecoyKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowState {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowSlot {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RawEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::GuardConfig {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::SourceState {}
}
