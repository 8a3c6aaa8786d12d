//! Building an event in its reserved ring entry and submitting it.

use decnet_common::{EventKind, PAYLOAD_MAX, RawEvent, Stat};

use crate::{
    frame::{Frame, coarse_ns, ring_flags},
    guard::guard,
    maps::{EVENTS, bump},
    parse::{Parsed, fill_common},
};

#[inline(always)]
pub(crate) fn copy_payload<F: Frame>(ctx: &F, ev: &mut RawEvent, off: u32, payload_len: u32) {
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

/// What became of an event.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Emitted {
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
pub(crate) fn emit<F: Frame>(
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
pub(crate) fn submit<F: Frame>(
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
    entry.submit(ring_flags());
    bump(Stat::EventsEmitted);
    true
}
