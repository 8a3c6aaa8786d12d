//! decnet kernel side: the XDP ingress program and the TC egress program on a decoy
//! interface.
//!
//! Ingress: every packet costs a prefilter bit; one that may be to a decoy, a compare with
//! this CPU's last decoy or else a decoy-map lookup. Only packets to a decoy become events,
//! and TCP/UDP packets to a decoy update their flow's state. Egress: packets *from* a decoy
//! are its answers; a SYN-ACK, RST or ICMP unreachable answering a reported probe becomes a
//! `probe_outcome`, and every decoy packet counts into its flow. A flow that ends (FIN both
//! ways, or RST) and carried more than a scan probe becomes a `tcp_flow` summary.
//!
//! A flood of one decoy costs per packet a per-CPU compare and the source's guard state on
//! ingress, and a per-CPU compare and a per-CPU note on egress: a withheld SYN and its answer never touch the
//! flow table (`WITHHELD_HOT`).
//!
//! Neither program drops or redirects anything: they observe. Every path, including parse
//! failures, returns `XDP_PASS` / `TC_ACT_UNSPEC`. Events are built directly in the reserved
//! ring entry so the 264-byte record never touches the 512-byte BPF stack.
#![no_std]
#![no_main]
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values go to the helpers by reference: by value they would be copied \
              onto the 512-byte stack"
)]
#![allow(
    clippy::manual_memcpy,
    clippy::needless_range_loop,
    reason = "copies into a ring entry are loops with constant bounds, which the verifier \
              follows, not slice copies that may become calls to memcpy"
)]

mod egress;
mod emit;
mod flows;
mod frame;
mod guard;
mod headers;
mod ingress;
mod maps;
mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use decnet_common::Stat;

use crate::{
    egress::try_egress,
    frame::Stop,
    ingress::{ingress, linear_headers},
    maps::bump,
};

#[xdp]
fn decnet_xdp(ctx: XdpContext) -> u32 {
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
fn decnet_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The same analysis as `decnet_xdp`, on the TC ingress hook (`--xdp-mode tc`). Where XDP
/// can only run in generic mode, as on a veth, this sees the same packets without the
/// generic XDP hook's cost (it re-allocates every skb with less than 256 bytes of headroom
/// before the program runs).
#[classifier]
fn decnet_tc_ingress(ctx: TcContext) -> i32 {
    bump(Stat::PacketsSeen);
    linear_headers(&ctx);
    if let Err(Stop::Malformed) = ingress(&ctx) {
        bump(Stat::Malformed);
    }
    TC_ACT_UNSPEC
}

/// The TC egress program: the decoy's side of each conversation.
#[classifier]
fn decnet_tc_egress(ctx: TcContext) -> i32 {
    bump(Stat::EgressSeen);
    linear_headers(&ctx);
    if let Err(Stop::Malformed) = try_egress(&ctx) {
        bump(Stat::EgressMalformed);
    }
    // Not a verdict: let the next program (or the default action) decide.
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
