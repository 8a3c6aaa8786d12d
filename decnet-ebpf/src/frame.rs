//! Reading a frame: the program context behind one trait (XDP and TC parse with the same
//! code), the clocks, and the one bounds-checked window every packet read goes through.

use aya_ebpf::{
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};

use crate::maps::CLOCK;

/// Why parsing stopped; every variant still returns XDP_PASS.
pub(crate) enum Stop {
    /// Not for us (non-IP, non-decoy): counted only as seen.
    Pass,
    /// Cut short or impossible header values.
    Malformed,
}

/// What the parsers need from a program context: the packet's bounds and the interface.
/// XDP (ingress) and TC (egress) parse frames with the same code through it.
pub(crate) trait Frame {
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

/// Set to 1 at load time by `decnet replay` (a read-only global, so the verifier knows its
/// value and removes the branch it does not take: live programs never read [`CLOCK`]).
#[unsafe(no_mangle)]
static REPLAY_CLOCK: u8 = 0;

/// Whether the programs run under `decnet replay`.
#[inline(always)]
pub(crate) fn replaying() -> bool {
    // SAFETY: a read of a constant global; volatile so the compiler keeps the load the
    // loader's value decides (it would otherwise fold the 0 written here).
    unsafe { core::ptr::read_volatile(&REPLAY_CLOCK) != 0 }
}

/// Ring submit flags: BPF_RB_NO_WAKEUP under `decnet replay`, which empties the ring after
/// every frame itself; a wake-up per event (an IPI to a poller nobody runs) cost about 8 %
/// of a replay.
#[inline(always)]
pub(crate) fn ring_flags() -> u64 {
    if replaying() { 1 } else { 0 }
}

/// A replayed frame's capture time, when the program runs under `decnet replay`: events,
/// flows and the flood guard then live on the capture's clock, not the replay's.
#[inline(always)]
fn replay_ns() -> Option<u64> {
    if !replaying() {
        return None;
    }
    Some(CLOCK.get(0).copied().unwrap_or(0))
}

#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    if let Some(t) = replay_ns() {
        return t;
    }
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
pub(crate) fn coarse_ns() -> u64 {
    if let Some(t) = replay_ns() {
        return t;
    }
    // SAFETY: no arguments, no side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// `len` bytes of the frame at a position [`bytes_at`] checked. Every read of packet bytes
/// goes through one: the check is made once, where the verifier needs it, and each read
/// below stays inside the window (an index past it reads 0; with constant indices and
/// lengths, as everywhere here, the compiler removes that test).
#[derive(Clone, Copy)]
pub(crate) struct Window {
    p: *const u8,
    len: usize,
}

/// The one bounds check: the `len` bytes at `off`, or Malformed.
#[inline(always)]
pub(crate) fn bytes_at<F: Frame>(ctx: &F, off: usize, len: usize) -> Result<Window, Stop> {
    let start = ctx.start();
    let end = ctx.end();
    if start + off + len > end {
        return Err(Stop::Malformed);
    }
    Ok(Window {
        p: (start + off) as *const u8,
        len,
    })
}

impl Window {
    #[inline(always)]
    pub(crate) fn u8(&self, i: usize) -> u8 {
        if i >= self.len {
            return 0;
        }
        // SAFETY: bytes_at checked that [p, p + len) lies inside the frame, and i < len.
        unsafe { *self.p.add(i) }
    }

    /// A big-endian u16 at `i`.
    #[inline(always)]
    pub(crate) fn be16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.u8(i), self.u8(i + 1)])
    }

    /// A u16 at `i` kept in network order (see RawEvent's docs).
    #[inline(always)]
    pub(crate) fn raw16(&self, i: usize) -> u16 {
        u16::from_ne_bytes([self.u8(i), self.u8(i + 1)])
    }

    /// A u32 at `i` kept in network order.
    #[inline(always)]
    pub(crate) fn raw32(&self, i: usize) -> u32 {
        u32::from_ne_bytes([self.u8(i), self.u8(i + 1), self.u8(i + 2), self.u8(i + 3)])
    }

    /// Copies the bytes at `from` into `dst` (an address, say).
    #[inline(always)]
    pub(crate) fn copy_to(&self, from: usize, dst: &mut [u8]) {
        for (k, b) in dst.iter_mut().enumerate() {
            *b = self.u8(from + k);
        }
    }
}
