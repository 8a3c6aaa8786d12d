//! The maps both programs share with userspace, and the per-CPU scratch and notes that
//! keep large values off the 512-byte stack.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use decnet_common::{
    DEFAULT_RING_BYTES, DecoyKey, FlowKey, FlowState, GuardConfig, MAX_DECOYS, MAX_FLOWS,
    MAX_SOURCES, STAT_COUNT, SourceState, Stat,
};

#[map(name = "EVENTS")]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "DECOYS")]
pub(crate) static DECOYS: HashMap<DecoyKey, u32> = HashMap::with_max_entries(MAX_DECOYS, 0);

#[map(name = "FLOWS")]
pub(crate) static FLOWS: LruHashMap<FlowKey, FlowState> =
    LruHashMap::with_max_entries(MAX_FLOWS, 0);

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

/// A zeroed SourceState to insert from: 176 bytes are too many for the 512-byte stack.
#[map(name = "SOURCE_SCRATCH")]
pub(crate) static SOURCE_SCRATCH: PerCpuArray<SourceState> = PerCpuArray::with_max_entries(1, 0);

/// Where a new FlowState is built before insertion (kept off the stack like SourceState).
#[map(name = "FLOW_SCRATCH")]
pub(crate) static FLOW_SCRATCH: PerCpuArray<FlowState> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub(crate) fn bump(stat: Stat) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}
