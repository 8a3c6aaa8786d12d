//! The ring reader: an AsyncFd over the BPF ring buffer.
//!
//! Reading an entry is a load from shared memory; the only syscall is the epoll wait when
//! the ring is empty. Entries are decoded and handed to the collector in batches; the task
//! yields after each batch so a flood cannot starve the runtime.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch};

use super::{
    Probe, SensorError,
    guard::{Sources, mono_now_ns},
};
use crate::{collector::Collector, stats::PipelineStats};

/// Probes per batch handed to the writer.
pub const BATCH: usize = 4096;
/// How often the flood guard's map is swept for sources that went quiet.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads until `shutdown` flips to true, then drains what is left in the ring and returns.
/// With `sources`, also sweeps the flood guard's map every second for sources that went
/// quiet with unreported counts (and all of them at the end).
pub async fn run_reader(
    ring: RingBuf<MapData>,
    mut collector: Collector,
    sources: Option<Sources>,
    stats: Arc<PipelineStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SensorError> {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as the
    // AsyncFd owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| SensorError::Io(e.into()))?;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let empty = drain(guard.get_inner_mut(), &mut collector, &stats);
                if empty {
                    guard.clear_ready();
                }
            }
            _ = sweep.tick(), if sources.is_some() => {
                if let Some(s) = &sources {
                    s.sweep(mono_now_ns(), false, &mut collector);
                    collector.ship();
                }
            }
            _ = shutdown.changed() => break,
        }
        tokio::task::yield_now().await;
    }
    // Final drain: everything the kernel submitted before we stopped reaches the journal.
    while !drain(fd.get_mut(), &mut collector, &stats) {}
    if let Some(s) = &sources {
        s.sweep(mono_now_ns(), true, &mut collector);
        collector.ship();
    }
    Ok(())
}

/// Moves up to one batch from the ring to the collector. Returns true when the ring is empty.
pub fn drain(
    ring: &mut RingBuf<MapData>,
    collector: &mut Collector,
    stats: &PipelineStats,
) -> bool {
    // One root span per drain cycle (never per packet: each probe's own span is the
    // collector's `collector.event`).
    let span = crate::dev_span!(
        parent: None,
        "sensor.drain",
        read = tracing::field::Empty,
        decode_errors = tracing::field::Empty
    );
    let _cycle = span.enter();
    collector.tick();
    let mut read = 0u64;
    let mut bad = 0u64;
    let mut empty = true;
    while let Some(item) = ring.next() {
        read += 1;
        match Probe::decode(&item) {
            Ok(p) => collector.push(&p),
            Err(e) => {
                bad += 1;
                tracing::debug!(error = %e, "undecodable ring entry");
            }
        }
        if read as usize >= BATCH {
            empty = false;
            break;
        }
    }
    collector.ship();
    span.record("read", read);
    span.record("decode_errors", bad);
    PipelineStats::add(&stats.ring_read, read);
    PipelineStats::add(&stats.decode_errors, bad);
    empty
}
