//! `cargo xtask bench profile`: the incremental profiler, beside baselines from the same run.
//!
//! 1. baseline: reading the same 1,000,000 rows back in 500-row pages and parsing their
//!    `fields` JSON, with nothing else (the floor for any profiler reading SQLite);
//! 2. cold build: the profiler absorbing those 1,000,000 stored rows (~10,000 sources)
//!    from cursor 0, in rows/s, with its peak RSS per 10,000 IPs, and the same rows from
//!    four times the sources beside it: how much of the memory grows with the sources;
//! 3. runtime stall while (2) runs: lateness of a task ticking every 1 ms on the same
//!    runtime, p50/p99/max, beside the same ticker on an idle runtime;
//! 4. incremental: 1,000 new rows over 100 sources absorbed on top of 100,000 and of
//!    1,000,000 profiled rows (median of 5 rounds each); the ratio shows whether it scales
//!    with the new rows or with the stored ones.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use decnet::{
    profile::Profiler,
    row::NewLog,
    store::{Batch, Store},
};

mod common;
use common::{Rng, percentile, record};

/// The system allocator, counting live heap bytes and their high-water mark. RSS alone
/// says little here: glibc keeps freed memory in per-thread arenas, so the same build
/// printed 12.6 and 44.6 MiB per 10,000 sources depending on which worker thread ran it.
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { std::alloc::System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: as above.
        let q = unsafe { std::alloc::System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            let now = LIVE.fetch_add(new, Ordering::Relaxed) + new;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Stored rows for the cold build (DECNET_BENCH_ROWS overrides, for quick looks).
fn rows() -> usize {
    std::env::var("DECNET_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
const SMALL: usize = 100_000;
const SOURCES: u64 = 10_000;
/// The sources of the memory comparison's second build, over the same number of rows.
const WIDE_SOURCES: u64 = 40_000;
/// 10 ms between records: the 1,000,000 rows span 2.8 hours, so time windows matter.
const STEP_NS: i64 = 10_000_000;

/// Stores `n` generated rows, starting at record index `from`, from `sources` attackers.
async fn fill(store: &Store, seed: u64, from: usize, n: usize, sources: u64) {
    let mut rng = Rng(seed);
    let mut buf = Vec::new();
    let mut logs: Vec<NewLog> = Vec::with_capacity(10_000);
    for i in from..from + n {
        buf.clear();
        record(&mut rng, i, sources, STEP_NS, &mut buf);
        logs.push(decnet::ingest::parse::parse_line(&buf[..buf.len() - 1]).expect("parse"));
        if logs.len() == 10_000 {
            commit(store, &mut logs).await;
        }
    }
    commit(store, &mut logs).await;
}

async fn commit(store: &Store, logs: &mut Vec<NewLog>) {
    if logs.is_empty() {
        return;
    }
    store
        .commit_batch_copy(&Batch {
            logs: std::mem::take(logs),
            ..Batch::default()
        })
        .await
        .expect("commit rows");
}

/// Reads every row in 500-row pages and parses its fields: the floor.
async fn read_floor(store: &Store) -> f64 {
    let t = Instant::now();
    let (mut cursor, mut n) = (0, 0usize);
    loop {
        let rows = store.logs_after(cursor, 500).await.expect("read");
        let Some((last, _)) = rows.last() else { break };
        cursor = *last;
        for (_, l) in &rows {
            let v: serde_json::Value = serde_json::from_str(&l.fields).expect("fields");
            std::hint::black_box(v);
        }
        n += rows.len();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Ticks every 1 ms until `stop`; returns lateness samples in ms.
async fn ticker(stop: Arc<AtomicBool>) -> Vec<f64> {
    let mut late = Vec::new();
    let mut next = Instant::now() + Duration::from_millis(1);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        late.push(now.saturating_duration_since(next).as_secs_f64() * 1e3);
        next = now + Duration::from_millis(1);
    }
    late.sort_by(|a, b| a.total_cmp(b));
    late
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Median seconds to absorb 1,000 new rows over 100 sources, over 5 rounds.
async fn incremental(store: &Store, profiler: &mut Profiler, stored: usize) -> f64 {
    let mut times = Vec::new();
    for round in 0..5 {
        // New rows from 100 of the existing sources, after everything stored.
        fill(store, 99 + round, stored + round as usize * 1000, 1000, 100).await;
        let t = Instant::now();
        let n = profiler.catch_up().await.expect("incremental");
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(n, 1000);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[2]
}

async fn open(dir: &Path, name: &str) -> Store {
    Store::open(&dir.join(name)).await.expect("open store")
}

fn main() {
    let base = std::env::var_os("DECNET_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("decnet-bench-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rows = rows();
    rt.block_on(async {
        let t = Instant::now();
        let big = open(&dir, "big.db").await;
        // As the daemon runs it: WAL checkpoints in the background.
        tokio::spawn(big.clone().checkpoint_loop(Duration::from_millis(500)));
        fill(&big, 1, 0, rows, SOURCES).await;
        let small = open(&dir, "small.db").await;
        tokio::spawn(small.clone().checkpoint_loop(Duration::from_millis(500)));
        fill(&small, 1, 0, SMALL, SOURCES).await;
        let wide = open(&dir, "wide.db").await;
        tokio::spawn(wide.clone().checkpoint_loop(Duration::from_millis(500)));
        fill(&wide, 1, 0, rows, WIDE_SOURCES).await;
        println!(
            "stored {rows} + {SMALL} + {rows} generated sensor rows in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // Start the measured part with fresh connections and empty caches.
        big.close().await;
        small.close().await;
        wide.close().await;
        let big = open(&dir, "big.db").await;
        let small = open(&dir, "small.db").await;
        tokio::spawn(big.clone().checkpoint_loop(Duration::from_millis(500)));
        tokio::spawn(small.clone().checkpoint_loop(Duration::from_millis(500)));

        // The ticker alone: the idle runtime's own lateness.
        let stop = Arc::new(AtomicBool::new(false));
        let idle = tokio::spawn(ticker(stop.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let idle = idle.await.expect("ticker");

        let floor = read_floor(&big).await;

        // Peak RSS of the cold build: reset the high-water mark first (clear_refs 5).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let rss_before = status_kib("VmRSS:");
        let heap_before = LIVE.load(Ordering::Relaxed);
        PEAK.store(heap_before, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let busy = tokio::spawn(ticker(stop.clone()));
        let mut profiler = Profiler::new(big.clone());
        let t = Instant::now();
        let n = profiler.catch_up().await.expect("cold build");
        let cold = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let busy = busy.await.expect("ticker");
        let peak = status_kib("VmHWM:");
        let heap_peak = PEAK.load(Ordering::Relaxed);
        let ips = big.count_attackers().await.expect("count");
        let campaigns = big.campaigns().await.expect("campaigns").len();
        assert_eq!(n as usize, rows);

        println!("\n== cold build: {rows} stored rows, {ips} sources ({campaigns} campaigns) ==");
        println!(
            "{:<56} {:>10.0} rows/s  1.00x",
            "baseline: read 500-row pages + parse fields JSON", floor
        );
        println!(
            "{:<56} {:>10.0} rows/s  {:.2}x   ({cold:.1} s)",
            "profiler: cold build from cursor 0",
            n as f64 / cold,
            n as f64 / cold / floor
        );
        let per_10k = peak.saturating_sub(rss_before) as f64 / 1024.0 * 10_000.0 / ips as f64;
        println!(
            "peak RSS {:.1} MiB (before {:.1} MiB): {per_10k:.1} MiB per 10,000 IPs",
            peak as f64 / 1024.0,
            rss_before as f64 / 1024.0
        );
        let heap_10k =
            heap_peak.saturating_sub(heap_before) as f64 / 1048576.0 * 10_000.0 / ips as f64;
        println!(
            "peak heap {:.1} MiB above the {:.1} MiB before: {heap_10k:.1} MiB per 10,000 IPs",
            heap_peak.saturating_sub(heap_before) as f64 / 1048576.0,
            heap_before as f64 / 1048576.0
        );

        // The same rows from four times the sources: what memory grows by per source once
        // the sources outnumber the states the profiler holds (10,000); SQLite's page
        // caches, a batch of rows and the held states are then the same in both builds.
        let wide = open(&dir, "wide.db").await;
        tokio::spawn(wide.clone().checkpoint_loop(Duration::from_millis(500)));
        let heap_before_wide = LIVE.load(Ordering::Relaxed);
        PEAK.store(heap_before_wide, Ordering::Relaxed);
        let mut p_wide = Profiler::new(wide.clone());
        p_wide.catch_up().await.expect("cold build, wide");
        let heap_wide = PEAK
            .load(Ordering::Relaxed)
            .saturating_sub(heap_before_wide);
        let ips_wide = wide.count_attackers().await.expect("count");
        drop(p_wide);
        wide.close().await;
        let heap_narrow = heap_peak.saturating_sub(heap_before);
        let slope = (heap_wide as f64 - heap_narrow as f64) / 1048576.0 * 10_000.0
            / (ips_wide as f64 - ips as f64).max(1.0);
        println!("\n== memory against sources: the same {rows} rows from more sources ==");
        println!(
            "{:<40} peak heap {:>7.1} MiB",
            format!("{ips} sources"),
            heap_narrow as f64 / 1048576.0
        );
        println!(
            "{:<40} peak heap {:>7.1} MiB",
            format!("{ips_wide} sources"),
            heap_wide as f64 / 1048576.0
        );
        println!(
            "growth: {slope:.1} MiB per 10,000 more sources, from {ips} to {ips_wide} (past the \
             10,000 states held, only the per-source campaign index grows)"
        );

        println!("\n== runtime stall: a task ticking every 1 ms (lateness) ==");
        for (name, l) in [
            ("idle runtime (baseline)", &idle),
            ("during cold build", &busy),
        ] {
            println!(
                "{name:<28} p50 {:>6.3} ms  p99 {:>6.3} ms  max {:>7.3} ms  ({} ticks)",
                percentile(l, 0.5),
                percentile(l, 0.99),
                l.last().copied().unwrap_or(0.0),
                l.len()
            );
        }
        println!(
            "p99 ratio busy/idle: {:.2}x",
            percentile(&busy, 0.99) / percentile(&idle, 0.99).max(1e-3)
        );

        let mut p_small = Profiler::new(small.clone());
        p_small.catch_up().await.expect("profile small");
        let at_small = incremental(&small, &mut p_small, SMALL).await;
        let at_big = incremental(&big, &mut profiler, rows).await;
        println!("\n== incremental: 1,000 new rows over 100 sources (median of 5) ==");
        println!(
            "{:<40} {:>8.1} ms  1.00x",
            format!("on {SMALL} profiled rows"),
            at_small * 1e3
        );
        println!(
            "{:<40} {:>8.1} ms  {:.2}x",
            format!("on {rows} profiled rows"),
            at_big * 1e3,
            at_big / at_small
        );
    });
    if std::env::var_os("DECNET_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
