//! The ring reader: an AsyncFd over the BPF ring buffer.
//!
//! Reading an entry is a load from shared memory; the only syscall is the epoll wait when
//! the ring is empty. Entries are decoded and handed to the sink in batches; the task
//! yields after each batch so a flood cannot starve the runtime.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch};

use super::{
    decode::Probe,
    error::SensorError,
    flows::Flows,
    guard::{Sources, mono_now_ns},
    ledger::Reported,
    sink::{Output, ProbeSink},
};
use crate::{
    pace::{BUSY_PER_SECOND, Pace},
    stats::PipelineStats,
};

/// Probes per batch handed to the writer.
pub(crate) const BATCH: usize = 4096;
/// The longest a pinned sensor's last drain runs (its programs keep capturing meanwhile).
const FINAL_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);
/// While probes come at [`BUSY_PER_SECOND`] or more, the reader rests this long after
/// emptying the ring before it waits on it again: a busy stream is taken in one drain per
/// gap instead of one wake-up, journal write, ingest commit, SQLite transaction and
/// profiler batch per few probes, which cost more CPU than the capture itself. Under an
/// hping3 flood (~16,000 rows in 6 s) the daemon used 0.85 CPU-s at 10 ms, 0.65 at 50 ms,
/// 0.62 at 100 ms and 0.48 at 250 ms. A busy stream's probe therefore reaches the journal
/// up to 250 ms late, which leaves most of the second in which a person should see it.
/// Slower, each probe is read the moment it lands. The 16 MiB ring holds far more than a
/// gap's worth.
const DRAIN_GAP: std::time::Duration = std::time::Duration::from_millis(250);
/// How often the flood guard's map is swept for sources that went quiet.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The kernel maps swept from userspace every second.
#[derive(Default)]
pub(crate) struct Sweepers {
    /// The flood guard's sources: summaries for sources that went quiet.
    pub sources: Option<Sources>,
    /// The flow table: summaries for flows that went idle or were evicted.
    pub flows: Option<Flows>,
    /// The programs stay attached after this daemon (pinned): open flows are left for the
    /// next daemon to watch instead of being summarised as `shutdown`.
    pub keep_open: bool,
}

impl Sweepers {
    /// Writes the summaries due at `now` (the kernel's clock: CLOCK_MONOTONIC live, the
    /// capture's time in a replay); `force` writes every open one.
    pub(crate) fn sweep<S: ProbeSink>(&mut self, now: u64, force: bool, out: &mut Output<S>) {
        if let Some(s) = &self.sources {
            s.sweep(now, force, out);
        }
        if let Some(f) = &mut self.flows {
            f.sweep(now, force, out);
        }
        out.ship();
    }
}

/// Reads until `shutdown` flips to true, then drains what is left in the ring and returns
/// the flood-guard totals written per source (for a handover). Every second, and once more
/// at the end with everything still open (unless `keep_open`), the sweepers write what the
/// kernel cannot: summaries of sources and flows that went quiet.
pub(crate) async fn run_reader<S: ProbeSink>(
    ring: RingBuf<MapData>,
    mut out: Output<S>,
    mut sweepers: Sweepers,
    stats: Arc<PipelineStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Vec<(std::net::IpAddr, Reported)>, SensorError> {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as the
    // AsyncFd owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| SensorError::Io(e.into()))?;
    let mut pace = Pace::new(BUSY_PER_SECOND);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let before = stats.ring_read.load(std::sync::atomic::Ordering::Relaxed);
                let empty = drain(
                    guard.get_inner_mut(),
                    &mut out,
                    sweepers.flows.as_mut(),
                    &stats,
                );
                let read = stats.ring_read.load(std::sync::atomic::Ordering::Relaxed) - before;
                let busy = pace.note(read);
                if empty {
                    guard.clear_ready();
                    if busy {
                        drop(guard);
                        tokio::time::sleep(DRAIN_GAP).await;
                    }
                }
            }
            _ = sweep.tick() => sweepers.sweep(mono_now_ns(), false, &mut out),
            _ = shutdown.changed() => break,
        }
        tokio::task::yield_now().await;
    }
    // Final drain: everything the kernel submitted before we stopped reaches the journal.
    // Unpinned, the programs are detached by now, so the ring only empties. Pinned, they
    // keep capturing: take what is there for at most FINAL_DRAIN; the rest stays in the
    // pinned ring for the next daemon.
    let until = std::time::Instant::now() + FINAL_DRAIN;
    while !drain(fd.get_mut(), &mut out, sweepers.flows.as_mut(), &stats) {
        if sweepers.keep_open && std::time::Instant::now() >= until {
            break;
        }
    }
    let force = !sweepers.keep_open;
    sweepers.sweep(mono_now_ns(), force, &mut out);
    Ok(out.reported())
}

/// Moves up to one batch from the ring to the sink. Returns true when the ring is empty.
pub fn drain<S: ProbeSink>(
    ring: &mut RingBuf<MapData>,
    out: &mut Output<S>,
    flows: Option<&mut Flows>,
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
    out.tick();
    let (read, bad, empty) = take(ring, out, flows, stats, BATCH);
    out.ship();
    span.record("read", read);
    span.record("decode_errors", bad);
    empty
}

/// Moves up to `max` entries from the ring to the sink without shipping them (the caller
/// ships), counting them in `stats`. Returns the entries read, how many of them did not
/// decode, and whether the ring is now empty.
pub(crate) fn take<S: ProbeSink>(
    ring: &mut RingBuf<MapData>,
    out: &mut Output<S>,
    mut flows: Option<&mut Flows>,
    stats: &PipelineStats,
    max: usize,
) -> (u64, u64, bool) {
    let mut read = 0u64;
    let mut bad = 0u64;
    while let Some(item) = ring.next() {
        read += 1;
        match Probe::decode(&item) {
            Ok(p) => {
                if let Some(f) = flows.as_deref_mut() {
                    f.note(&p, stats);
                }
                out.push(&p);
            }
            Err(e) => {
                bad += 1;
                tracing::debug!(error = %e, "undecodable ring entry");
            }
        }
        if read as usize >= max {
            break;
        }
    }
    PipelineStats::add(&stats.ring_read, read);
    PipelineStats::add(&stats.decode_errors, bad);
    (read, bad, (read as usize) < max)
}
