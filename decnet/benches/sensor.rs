//! `cargo xtask bench sensor`: the sensor path, each figure beside a baseline measured in
//! the same run (machines here are shared and noisy, so only ratios mean much).
//!
//! 1. Kernel ns/packet (BPF_PROG_TEST_RUN, kernel-timed): a program that only returns
//!    XDP_PASS (baseline) vs decnet on non-decoy traffic vs decnet on decoy SYNs.
//! 2. Userspace events/s: a ring pre-filled by the kernel is drained (a) by a reader that only
//!    counts entries (baseline) and (b) through decode + JSON + journal write(2).
//! 3. Live: the kernel produces on one core while the full pipeline consumes; every event is
//!    accounted for: emitted + reserve failures == produced, emitted == written + drops.
//!
//! Needs root (CAP_BPF); prints `skipping:` without it.

// The frame builders the BPF tests use (test code, kept out of the library); the
// benchmark builds only TCP frames.
#[path = "../tests/frames/mod.rs"]
#[allow(dead_code)]
mod frames;
use frames::{Frame, L4};

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use decnet::{
    collector::{Collector, JournalConfig, JournalWriter},
    sensor::{
        Decoy, Output, Sensor,
        loader::{LoadOptions, XDP_PASS_PROGRAM, XDP_PROGRAM},
        ring,
    },
    stats::PipelineStats,
};

const DECOY: &str = "10.9.0.1";
const CHUNK: u32 = 50_000;

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: the sensor benchmark needs root (CAP_BPF)");
        return;
    }
    let ring_bytes = 512 << 20; // holds ~1.9 M events, so the drain test needs no producer
    let decoys: Vec<Decoy> = vec![format!("{DECOY}=bench").parse().expect("decoy")];
    let mut sensor = Sensor::load(
        &decoys,
        &LoadOptions {
            ring_bytes,
            // One source floods here: measure the pipeline, not the flood guard.
            flood: decnet::sensor::FloodBudget { rate: 0, burst: 1 },
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
    let mut ring = sensor.take_ring().expect("ring");
    let kstats = sensor.take_stats().expect("stats");

    let syn = Frame::new("10.9.0.2", DECOY, L4::syn(40000, 22)).build();
    let other = Frame::new("10.9.0.2", "10.9.0.99", L4::syn(40000, 22)).build();

    // 1. Kernel cost per packet.
    let kernel =
        |s: &mut Sensor, r: &mut RingBuf<MapData>, prog: &'static str, frame: &[u8], total: u32| {
            let mut ns = 0f64;
            let mut done = 0;
            while done < total {
                let n = CHUNK.min(total - done);
                let (_, per) = s.test_run(prog, frame, n).expect("test_run");
                ns += per.as_nanos() as f64 * n as f64;
                done += n;
                while r.next().is_some() {}
            }
            ns / total as f64
        };
    let n = 2_000_000;
    let base = kernel(&mut sensor, &mut ring, XDP_PASS_PROGRAM, &syn, n);
    let miss = kernel(&mut sensor, &mut ring, XDP_PROGRAM, &other, n);
    let hit = kernel(&mut sensor, &mut ring, XDP_PROGRAM, &syn, n);
    println!("== kernel (BPF_PROG_TEST_RUN, {n} runs each, ns/packet) ==");
    println!(
        "{:<34} {:>9.1} ns  1.00x",
        "baseline: XDP_PASS-only program", base
    );
    println!(
        "{:<34} {:>9.1} ns  {:.2}x",
        "decnet, non-decoy packet",
        miss,
        miss / base
    );
    println!(
        "{:<34} {:>9.1} ns  {:.2}x",
        "decnet, decoy SYN (emits event)",
        hit,
        hit / base
    );
    // A scan's SYNs each open a new flow (the loops above repeat one four-tuple, whose flow
    // stays live). One run per frame, with a baseline timed the same way.
    let fresh: Vec<Vec<u8>> = (0..100_000u32)
        .map(|i| {
            Frame::new(
                &format!("10.{}.{}.2", 10 + i / 60_000, (i / 250) % 240),
                DECOY,
                L4::syn(1024 + (i % 60_000) as u16, 22),
            )
            .build()
        })
        .collect();
    // The same SYN, one run each: its flow stays live, so beside the fresh flows this
    // shows what a distinct flow costs over one the caches hold.
    let same = vec![syn.clone(); fresh.len()];
    let one_each =
        |s: &mut Sensor, r: &mut RingBuf<MapData>, prog: &'static str, frames: &[Vec<u8>]| {
            let mut ns = 0f64;
            for (i, f) in frames.iter().enumerate() {
                ns += s.test_run(prog, f, 1).expect("test_run").1.as_nanos() as f64;
                // Drained now and then, not after every run: the first event into an empty
                // ring wakes its reader (a self-IPI, microseconds in a VM), which is the
                // reader's pace, not the program's cost.
                if i % 10_000 == 9_999 {
                    while r.next().is_some() {}
                }
            }
            while r.next().is_some() {}
            ns / frames.len() as f64
        };
    let base_one = one_each(&mut sensor, &mut ring, XDP_PASS_PROGRAM, &fresh);
    let new_flow = one_each(&mut sensor, &mut ring, XDP_PROGRAM, &fresh);
    let live_flow = one_each(&mut sensor, &mut ring, XDP_PROGRAM, &same);
    // The newest 50,000 of those flows again: all still in the table, so nothing is
    // inserted, but each SYN looks up a flow of its own (as a scan's answers and re-sent
    // probes do).
    let revisit = one_each(
        &mut sensor,
        &mut ring,
        XDP_PROGRAM,
        &fresh[fresh.len() - 50_000..],
    );
    println!(
        "{:<34} {:>9.1} ns  1.00x",
        "baseline: XDP_PASS, one run each", base_one
    );
    println!(
        "{:<34} {:>9.1} ns  {:.2}x  (over the baseline: {:.1} ns)",
        "decnet, decoy SYN opening a flow",
        new_flow,
        new_flow / base_one,
        new_flow - base_one
    );
    println!(
        "{:<34} {:>9.1} ns  {:.2}x  (over the baseline: {:.1} ns; a fresh flow costs {:.1} ns \
         more, {} flows in a table of {})",
        "decnet, same SYN, one run each",
        live_flow,
        live_flow / base_one,
        live_flow - base_one,
        new_flow - live_flow,
        fresh.len(),
        decnet_common::MAX_FLOWS
    );
    println!(
        "{:<34} {:>9.1} ns  {:.2}x  (over the baseline: {:.1} ns; 50000 live flows, none \
         inserted: what a distinct flow costs apart from its insert)",
        "decnet, SYN on its own live flow",
        revisit,
        revisit / base_one,
        revisit - base_one
    );
    // The same with the flood guard on: a budget no test_run loop can exceed (every SYN
    // still emits, the bucket is checked and updated), then the default budget, which this
    // one-source loop exhausts at once (nearly every SYN is withheld and counted).
    for (label, flood) in [
        (
            "decnet, decoy SYN, guard under budget",
            decnet::sensor::FloodBudget {
                rate: 1_000_000_000,
                burst: 1_000_000,
            },
        ),
        (
            "decnet, decoy SYN, guard withholding",
            decnet::sensor::FloodBudget::default(),
        ),
    ] {
        let mut g = Sensor::load(
            &decoys,
            &LoadOptions {
                flood,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
        let mut gr = g.take_ring().expect("ring");
        let ns = kernel(&mut g, &mut gr, XDP_PROGRAM, &syn, n);
        println!("{:<34} {:>9.1} ns  {:.2}x", label, ns, ns / base);
    }
    // Background radiation: each SYN from a source never seen, so with the guard on (the
    // default budget) it opens a flow and a source state. One run each, as the fresh flows.
    let strangers: Vec<Vec<u8>> = (0..fresh.len() as u32)
        .map(|i| {
            Frame::new(
                &format!("10.{}.{}.{}", 20 + i / 65_536, (i / 256) % 256, i % 256),
                DECOY,
                L4::syn(40_000, 22),
            )
            .build()
        })
        .collect();
    let mut g = Sensor::load(&decoys, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
    let mut gr = g.take_ring().expect("ring");
    let stranger = one_each(&mut g, &mut gr, XDP_PROGRAM, &strangers);
    println!(
        "{:<34} {:>9.1} ns  {:.2}x  (over the baseline: {:.1} ns; {:.1} ns more than a fresh \
         flow with the guard off: the guard's lookup and first-sighting note, {} sources, \
         {} slots for source states)",
        "decnet, SYN from a new source",
        stranger,
        stranger / base_one,
        stranger - base_one,
        stranger - new_flow,
        strangers.len(),
        decnet_common::MAX_SOURCES
    );

    // 2. Userspace drain rate from a pre-filled ring.
    let fill = |s: &mut Sensor, events: u32| {
        let mut done = 0;
        while done < events {
            let n = CHUNK.min(events - done);
            s.test_run(XDP_PROGRAM, &syn, n).expect("test_run");
            done += n;
        }
    };
    let events = 1_500_000u32;
    let before = kstats.read().expect("stats");
    fill(&mut sensor, events);
    let t = Instant::now();
    let mut counted = 0u64;
    while ring.next().is_some() {
        counted += 1;
    }
    let count_rate = counted as f64 / t.elapsed().as_secs_f64();

    fill(&mut sensor, events);
    // DECNET_BENCH_DIR picks the file system the journal goes to (default: the temp dir).
    let base = std::env::var_os("DECNET_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("decnet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let journal_path = dir.join("events.jsonl");
    let stats = Arc::new(PipelineStats::default());
    let deckies: Arc<[String]> = vec!["bench".to_owned()].into();
    let t = Instant::now();
    let (handle, writer) =
        JournalWriter::spawn(JournalConfig::new(journal_path.clone()), stats.clone())
            .expect("journal");
    let mut out = Output::new(Collector::new(handle, deckies.clone()), stats.clone());
    while !ring::drain(&mut ring, &mut out, None, &stats) {}
    drop(out);
    // Rate to the last write(2); the shutdown fsync of ~600 MB is reported separately.
    while stats.snapshot().journal_written + stats.snapshot().channel_full_dropped < events as u64 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let pipe_secs = t.elapsed().as_secs_f64();
    writer.join();
    let fsync_secs = t.elapsed().as_secs_f64() - pipe_secs;
    let p = stats.snapshot();
    let after = kstats.read().expect("stats");
    let pipe_rate = p.journal_written as f64 / pipe_secs;
    // From the counters: the journal may have rotated during the run.
    let bytes = p.journal_bytes;
    println!("\n== userspace (ring pre-filled with {events} decoy SYN events) ==");
    println!(
        "{:<34} {:>9.2} M events/s  1.00x",
        "baseline: reader that only counts",
        count_rate / 1e6
    );
    println!(
        "{:<34} {:>9.2} M events/s  {:.2}x  ({} lines, {:.0} B/line, channel drops {}, write failures {})",
        "decode + JSON + journal write",
        pipe_rate / 1e6,
        pipe_rate / count_rate,
        p.journal_written,
        bytes as f64 / p.journal_written.max(1) as f64,
        p.channel_full_dropped,
        p.journal_write_failed
    );
    println!("{:<34} {:>9.2} s for the shutdown fsync", "", fsync_secs);
    let emitted = after.events_emitted - before.events_emitted;
    println!(
        "accounting: kernel emitted {emitted}, counted-only {counted}, through pipeline {} + dropped {}; reserve failures {}",
        p.ring_read,
        p.channel_full_dropped,
        after.ring_reserve_failed - before.ring_reserve_failed
    );
    assert_eq!(
        emitted,
        counted + p.ring_read,
        "every emitted event was read"
    );
    assert_eq!(
        p.ring_read,
        p.journal_written + p.channel_full_dropped + p.journal_write_failed + p.decode_errors
    );
    let _ = std::fs::remove_file(&journal_path);

    // Stage breakdown on one thread: decode, then decode + JSON into memory (no I/O).
    fill(&mut sensor, 500_000);
    let mut raws = Vec::with_capacity(500_000);
    while let Some(item) = ring.next() {
        raws.push(item.to_vec());
    }
    let t = Instant::now();
    let probes: Vec<_> = raws
        .iter()
        .map(|r| decnet::sensor::Probe::decode(r).expect("decode"))
        .collect();
    let decode_rate = probes.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut buf = Vec::with_capacity(1 << 20);
    for p in &probes {
        decnet::collector::write_probe_record(
            &mut buf,
            p,
            "bench",
            1_795_723_674_000_000_000,
            None,
        );
        if buf.len() > 1 << 20 {
            buf.clear();
        }
    }
    let json_rate = probes.len() as f64 / t.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>9.2} M events/s  {:.2}x",
        "stage: decode only",
        decode_rate / 1e6,
        decode_rate / count_rate
    );
    println!(
        "{:<34} {:>9.2} M events/s  {:.2}x",
        "stage: JSON only (into memory)",
        json_rate / 1e6,
        json_rate / count_rate
    );

    // 3. Live: producer (kernel, one thread) and the whole pipeline at once, for ~3 s.
    let stats = Arc::new(PipelineStats::default());
    let (handle, writer) =
        JournalWriter::spawn(JournalConfig::new(journal_path.clone()), stats.clone())
            .expect("journal");
    let mut out = Output::new(Collector::new(handle, deckies), stats.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let before = kstats.read().expect("stats");
    let reader = {
        let stop = stop.clone();
        let stats = stats.clone();
        std::thread::spawn(move || {
            loop {
                let empty = ring::drain(&mut ring, &mut out, None, &stats);
                if empty {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    let t = Instant::now();
    let mut produced = 0u64;
    while t.elapsed() < Duration::from_secs(3) {
        sensor
            .test_run(XDP_PROGRAM, &syn, 20_000)
            .expect("test_run");
        produced += 20_000;
    }
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    reader.join().expect("reader");
    writer.join();
    let after = kstats.read().expect("stats");
    let p = stats.snapshot();
    let emitted = after.events_emitted - before.events_emitted;
    let reserve_failed = after.ring_reserve_failed - before.ring_reserve_failed;
    println!("\n== live: kernel producing while the pipeline consumes ({secs:.1} s) ==");
    println!(
        "produced {produced} ({:.2} M/s offered); emitted {emitted}, ring full {reserve_failed}; written {} ({:.2} M/s), channel drops {}, write failures {}",
        produced as f64 / secs / 1e6,
        p.journal_written,
        p.journal_written as f64 / secs / 1e6,
        p.channel_full_dropped,
        p.journal_write_failed
    );
    assert_eq!(
        produced,
        emitted + reserve_failed,
        "sent == emitted + ring-full drops"
    );
    assert_eq!(
        emitted,
        p.journal_written + p.channel_full_dropped + p.journal_write_failed + p.decode_errors,
        "emitted == written + counted drops"
    );
    println!("accounting: sent == received + counted drops at every stage: ok");
    let _ = std::fs::remove_dir_all(&dir);
}
