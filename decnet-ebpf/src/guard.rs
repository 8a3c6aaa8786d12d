//! The flood guard: a token bucket per source address; an over-budget source's events are
//! counted into `source_suppressed` summaries, at most one a second.

use decnet_common::{
    EventKind, PAYLOAD_MAX, PORT_BITS, RawEvent, SUMMARY_EVERY_NS, SUMMARY_OPT_LEN, SourceState,
    Stat, SuppressedSummary, fmix64,
};

use crate::{
    frame::{Frame, now_ns, ring_flags},
    maps::{
        EVENTS, FIRST_SEEN, FIRST_SEEN_SLOTS, GUARD, SOURCE_SCRATCH, SOURCES, WITHHELD_HOT,
        addr_words, bump, zero_words,
    },
    parse::{Parsed, fill_common},
};

/// The flood guard: true when the source is within its budget (the event goes out), false
/// when it is over (the event is counted into the source's state instead, and a summary is
/// submitted at most once a second). `port` is the destination port in host order (0 for
/// portless protocols); `now` is [`coarse_ns`].
#[inline(always)]
pub(crate) fn guard<F: Frame>(ctx: &F, p: &Parsed, decky_id: u32, port: u16, now: u64) -> bool {
    let Some(cfg) = GUARD.get(0) else {
        return true;
    };
    let (interval, burst) = (cfg.interval_ns, cfg.burst_ns);
    if interval == 0 {
        return true;
    }
    let st = match SOURCES.get_ptr_mut(&p.src) {
        Some(st) => st,
        None => {
            // A source without state: its first event leaves only a fingerprint (see
            // FIRST_SEEN). At its second, the state its first would have made (as if just
            // now) is put in, and this event is judged against it as any other.
            if first_sighting(&p.src) {
                return true;
            }
            let Some(fresh) = SOURCE_SCRATCH.get_ptr_mut(0) else {
                return true;
            };
            // SAFETY: per-CPU scratch slot, ours for this run.
            unsafe {
                zero_words(fresh);
                (*fresh).tat_ns = now + interval;
                let _ = SOURCES.insert(&p.src, &*fresh, 0);
            }
            match SOURCES.get_ptr_mut(&p.src) {
                Some(st) => st,
                None => return true,
            }
        }
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
    // SAFETY: st is this source's live LRU value (see above); a load and a store.
    let due = unsafe { now - (*st).summary_ns >= SUMMARY_EVERY_NS };
    if due {
        // SAFETY: as above.
        unsafe { (*st).summary_ns = now };
        // The record itself is stamped like every event (at most once a second).
        summarize(ctx, p, decky_id, st, now_ns());
    }
    false
}

/// True when `src` is not in [`FIRST_SEEN`] (it is then put there): its first event, as
/// far as the flood guard can tell. The slot and the stored tag are the two halves of a
/// hash with full avalanche ([`fmix64`]). The tag is never 0, the empty slot.
#[inline(always)]
fn first_sighting(src: &[u8; 16]) -> bool {
    let [a, b] = addr_words(src);
    let h = fmix64(a ^ b.rotate_left(32));
    let tag = (h >> 32) as u32 | 1;
    let Some(slot) = FIRST_SEEN.get_ptr_mut(h as u32 & (FIRST_SEEN_SLOTS - 1)) else {
        return false;
    };
    // SAFETY: an array slot, valid for this run; two CPUs racing on one slot leave one of
    // the two tags, which at worst gives one source one more unmetered event.
    unsafe {
        if *slot == tag {
            return false;
        }
        *slot = tag;
    }
    true
}

/// The bitmap bit of a port: murmur3's finalizer, so that linear counting over the bitmap
/// estimates distinct ports whatever their spacing (a plain multiplicative hash clusters
/// evenly spaced ports, as scanners send them).
#[inline(always)]
pub(crate) fn port_bit(port: u16) -> usize {
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
pub(crate) fn summarize<F: Frame>(
    ctx: &F,
    p: &Parsed,
    decky_id: u32,
    st: *mut SourceState,
    now: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
        // The next summary carries the same (cumulative) counters.
        bump(Stat::RingReserveFailed);
        return;
    };
    // SAFETY: the reserved entry is RawEvent-sized, aligned, and ours until submitted.
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
        // SAFETY: st is this source's live LRU value; w < PORT_BITS / 64.
        let b = unsafe { (*st).ports[w] }.to_le_bytes();
        for j in 0..8 {
            ev.payload[w * 8 + j] = b[j];
        }
    }
    ev.payload_cap = PAYLOAD_MAX as u8;
    entry.submit(ring_flags());
    bump(Stat::EventsEmitted);
    bump(Stat::SuppressedSummaries);
}
