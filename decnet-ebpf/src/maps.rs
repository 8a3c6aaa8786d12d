//! The maps both programs share with userspace, and the per-CPU scratch and notes that
//! keep large values off the 512-byte stack.

use crate::headers::Parsed;
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use decnet_common::{
    DECOY_FILTER_WORDS, DEFAULT_RING_BYTES, DecoyKey, FlowSlot, GuardConfig, MAX_DECOYS, MAX_FLOWS,
    MAX_SOURCES, STAT_COUNT, SourceState, Stat,
};

#[map(name = "EVENTS")]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "DECOYS")]
pub(crate) static DECOYS: HashMap<DecoyKey, u32> = HashMap::with_max_entries(MAX_DECOYS, 0);

/// The decoy each program (slot [`INGRESS`] or [`EGRESS`]) found last on this CPU, so that
/// a run of packets to one decoy (a scan, a flood) skips the 16-byte hash in [`DECOYS`]: a
/// per-CPU array read is inlined by the verifier. Not pinned: each load starts empty, and
/// decoys change only at load. Neither program nests in itself on a CPU (softirq, or
/// bottom halves off on egress), so a slot is never half written when read.
#[map(name = "LAST_DECOY")]
pub(crate) static LAST_DECOY: PerCpuArray<LastDecoy> = PerCpuArray::with_max_entries(2, 0);

/// The headers of the packet each program is handling (slot [`INGRESS`] or [`EGRESS`]; and
/// [`FORWARD`], egress's attacker -> decoy view), filled by `parse::parse_ip`. On the stack,
/// the address bytes of the two families' parses met in byte-sized values that LLVM spilled
/// to 8-byte slots, over half of a 512-byte stack; in map memory they are stored as read.
/// Never shared by two runs at once (see [`LAST_DECOY`]).
#[map(name = "PARSED")]
pub(crate) static PARSED: PerCpuArray<Parsed> = PerCpuArray::with_max_entries(3, 0);

pub(crate) const INGRESS: u32 = 0;
pub(crate) const EGRESS: u32 = 1;
/// `PARSED`'s slot for egress's attacker -> decoy view of the packet (`egress::forward`).
pub(crate) const FORWARD: u32 = 2;

#[repr(C)]
pub(crate) struct LastDecoy {
    /// The address as two native-order words; id 0 (no decky has it) means empty.
    addr: [u64; 2],
    id: u32,
    _pad: u32,
}

/// The decky id of `addr`, if it is a decoy: from this CPU's note of the last one `slot`
/// found, else from [`DECOYS`] (and noted).
#[inline(always)]
pub(crate) fn decoy_id(addr: &[u8; 16], slot: u32) -> Option<u32> {
    let words = addr_words(addr);
    let last = LAST_DECOY.get_ptr_mut(slot);
    if let Some(l) = last {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU (see LAST_DECOY).
        unsafe {
            if (*l).id != 0 && (*l).addr == words {
                return Some((*l).id);
            }
        }
    }
    // SAFETY: plain u32 value, read once.
    let id = *unsafe { DECOYS.get(&DecoyKey { addr: *addr }) }?;
    if let Some(l) = last {
        // SAFETY: as above.
        unsafe {
            (*l).addr = words;
            (*l).id = id;
        }
    }
    Some(id)
}

/// The decoy prefilter (decnet_common::decoy_filter_slot): a clear bit means "no decoy".
#[map(name = "DECOY_FILTER")]
pub(crate) static DECOY_FILTER: Array<u64> = Array::with_max_entries(DECOY_FILTER_WORDS, 0);

/// False when no decoy address ends in `tail` (the address's last two bytes, big-endian):
/// the packet is then no decoy's business without the hash lookup. True means "look".
#[inline(always)]
pub(crate) fn may_be_decoy(tail: u16) -> bool {
    let (word, mask) = decnet_common::decoy_filter_slot(tail);
    match DECOY_FILTER.get(word) {
        Some(w) => *w & mask != 0,
        None => true,
    }
}

/// The flow table: `decnet_common::FLOW_WAYS`-way sets of slots (decnet_common::FlowKey::set). A new
/// flow costs the one set's cache lines, where an LRU hash map's insert cost a bucket, an
/// element from the LRU free lists and, once full, an eviction (perf: half of a fresh
/// flow's time). An array lookup is inlined by the verifier.
#[map(name = "FLOWS")]
pub(crate) static FLOWS: Array<FlowSlot> = Array::with_max_entries(MAX_FLOWS, 0);

#[map(name = "STATS")]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

#[map(name = "GUARD")]
pub(crate) static GUARD: Array<GuardConfig> = Array::with_max_entries(1, 0);

/// The capture time of the frame being replayed (`decnet replay`; see frame::now_ns).
#[map(name = "CLOCK")]
pub(crate) static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "SOURCES")]
pub(crate) static SOURCES: LruHashMap<[u8; 16], SourceState> =
    LruHashMap::with_max_entries(MAX_SOURCES, 0);

/// Slots of [`FIRST_SEEN`] (a power of two): 64 KiB of fingerprints.
pub(crate) const FIRST_SEEN_SLOTS: u32 = 16384;

/// Sources the flood guard has seen once, by fingerprint (direct-mapped, shared by the
/// CPUs; a slot holds its latest source). Most of the internet's background radiation is
/// one packet per source, and making a SOURCES state for each cost an LRU insert (and,
/// with the table full, an eviction) per packet, and a bigger userspace sweep. So a source
/// gets its state at its second event while its fingerprint is still here; under heavy
/// churn a slow source may get a few more unmetered events, each far below any budget.
/// Not pinned: a restart forgets who was seen once.
#[map(name = "FIRST_SEEN")]
pub(crate) static FIRST_SEEN: Array<u32> = Array::with_max_entries(FIRST_SEEN_SLOTS, 0);

/// What this CPU's flood guard withheld last: the source, and the last SYN with its ports.
/// The decoy answers a probe on the CPU that received it, in the same softirq, so the
/// egress program finds an answer to a withheld SYN here and skips the flow table (the SYN
/// opened no flow), and a flooding source's other answers without the SOURCES lookup. A
/// miss falls back to those lookups, which give the same verdict.
#[map(name = "WITHHELD_HOT")]
pub(crate) static WITHHELD_HOT: PerCpuArray<HotSource> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub(crate) struct HotSource {
    /// The source withheld last, as two native-order words (compared as words).
    pub(crate) addr: [u64; 2],
    pub(crate) last_ns: u64,
    /// The last withheld SYN: source, ports (as in its FlowKey) and time.
    pub(crate) syn_addr: [u64; 2],
    pub(crate) syn_ports: [u16; 2],
    pub(crate) syn_ns: u64,
}

/// An answer this soon after its SYN was withheld on this CPU is the answer to that SYN.
pub(crate) const HOT_ANSWER_NS: u64 = 10_000_000;

#[inline(always)]
pub(crate) fn addr_words(a: &[u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&a[..8]);
    hi.copy_from_slice(&a[8..]);
    [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)]
}

/// Zeroes `*p` a u64 word at a time. `write_bytes` on a 168-byte FlowState compiled to a
/// call of the BPF target's byte-at-a-time `memset` (about 840 instructions, paid by every
/// new flow and every new source); volatile word stores stay 21 stores.
///
/// # Safety
/// `p` is valid for writes of `T` and 8-byte aligned (a map value is).
#[inline(always)]
pub(crate) unsafe fn zero_words<T>(p: *mut T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(8)) };
    let w = p.cast::<u64>();
    for i in 0..core::mem::size_of::<T>() / 8 {
        // SAFETY: i < size_of::<T>() / 8 words, inside *p.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
    }
}

/// A zeroed SourceState to insert from: 176 bytes are too many for the 512-byte stack.
#[map(name = "SOURCE_SCRATCH")]
pub(crate) static SOURCE_SCRATCH: PerCpuArray<SourceState> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub(crate) fn bump(stat: Stat) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}
