//! `cargo xtask bench fleet`: ingest into one shared PostgreSQL from 1, 2 and 4 concurrent
//! sensor ingesters (each the real `decnet ingest --once --store postgres://...` on its own
//! journal), beside the SQLite figure of the same machine and run; then the analyst
//! takeover time after the lock holder is SIGKILLed; then how fast analysts profile eight
//! sensors' rows: one unsharded analyst, against two analysts with `--analyst-shards 2`.
//!
//! PostgreSQL runs with its defaults (fsync and synchronous_commit on: each ingest batch
//! waits for its WAL flush); SQLite as decnet opens it (WAL, synchronous=NORMAL).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod common;
use common::{decnet_bin, percentile, write_journal};

// Shared with the decnet-tests crate, where its items are its library's public API.
#[path = "../../tests/cpu.rs"]
#[allow(unreachable_pub, dead_code)]
mod cpu;
#[path = "../../tests/pg.rs"]
#[allow(unreachable_pub)]
mod pg;

/// Lines per sensor journal.
const LINES: usize = 200_000;
const SOURCES: u64 = 5000;

fn ingest(dir: &Path, store: Option<&str>, sensor: &str) -> Child {
    let mut c = Command::new(decnet_bin());
    c.args(["ingest", "--once", "--sensor-id", sensor, "--data-dir"])
        .arg(dir)
        .env("DECNET_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(url) = store {
        c.args(["--store", url]);
    }
    c.spawn()
        .expect("spawn decnet ingest (build it: cargo build --release -p decnet)")
}

/// Runs the ingesters of `dirs` at once; returns rows per second over all of them.
fn concurrent(dirs: &[PathBuf], store: Option<&str>) -> f64 {
    let t = Instant::now();
    let children: Vec<Child> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| ingest(d, store, &format!("sensor-{i}")))
        .collect();
    for mut c in children {
        let st = c.wait().expect("wait");
        assert!(st.success(), "decnet ingest failed: {st}");
    }
    (dirs.len() * LINES) as f64 / t.elapsed().as_secs_f64()
}

/// Fresh copies of the journals (an ingest leaves its cursor in the database, not in the
/// dir, but a SQLite run leaves its database file there).
fn journals(base: &Path, n: usize, tag: &str) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let d = base.join(format!("{tag}-{i}"));
            std::fs::create_dir_all(&d).expect("dir");
            std::fs::copy(
                base.join(format!("journal-{i}/events.jsonl")),
                d.join("events.jsonl"),
            )
            .expect("copy journal");
            d
        })
        .collect()
}

fn analyst(url: &str, data: &Path) -> Child {
    analyst_sharded(url, data, 1)
}

fn analyst_sharded(url: &str, data: &Path, shards: u32) -> Child {
    let log = std::fs::File::create(data.with_extension("log")).expect("log");
    Command::new(decnet_bin())
        .args(["run", "--role", "analyst", "--user", "root", "--store", url])
        .arg("--data-dir")
        .arg(data)
        .env("DECNET_ANALYST_SHARDS", shards.to_string())
        .env("DECNET_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn analyst")
}

fn wait_log(data: &Path, needle: &str, n: usize, within: Duration) -> Option<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
        if text.matches(needle).count() >= n {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Lines per sensor journal, and sensors, of the analysts' case.
const ANALYST_LINES: usize = 50_000;
const ANALYST_SENSORS: usize = 8;

/// The SQL that is true once the profiles of `db` are complete: the unsharded cursor, or
/// the campaign pass's with every move applied, at the last log row.
fn profiled_sql(shards: u32) -> String {
    if shards <= 1 {
        return "SELECT COALESCE((SELECT value FROM state WHERE key = 'attacker_worker_cursor'), '0') \
                = (SELECT MAX(id) FROM logs)::text"
            .into();
    }
    format!(
        "SELECT COALESCE((SELECT value FROM state WHERE key = 'campaign_cursor'), '0') \
         = (SELECT MAX(id) FROM logs)::text AND NOT EXISTS (SELECT 1 FROM campaign_moves m \
         WHERE m.seq > COALESCE((SELECT value::bigint FROM state WHERE key = \
         'campaign_moves_cursor.' || ((hashtext(m.ip) & 2147483647) % {shards}) || 'of{shards}'), 0))"
    )
}

/// Seconds for `procs` analysts of `shards` to profile a fresh copy of `template`'s rows,
/// and the machine's busy cores meanwhile (PostgreSQL's and the analysts' CPU alike).
fn profile_backlog(
    pg: &pg::Postgres,
    base: &Path,
    template: &str,
    procs: usize,
    shards: u32,
    round: usize,
) -> (f64, f64) {
    let db = format!("an{procs}x{shards}r{round}");
    pg.psql(
        "postgres",
        &format!("CREATE DATABASE {db} TEMPLATE {template}"),
    );
    let url = pg.url(&db);
    let done = profiled_sql(shards);
    let busy = cpu::busy_s();
    let t = Instant::now();
    let mut children: Vec<Child> = (0..procs)
        .map(|i| analyst_sharded(&url, &base.join(format!("{db}-{i}")), shards))
        .collect();
    let deadline = t + Duration::from_secs(600);
    while pg.psql(&db, &done) != "t" {
        assert!(Instant::now() < deadline, "{db}: not profiled in 600 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let secs = t.elapsed().as_secs_f64();
    let cores = (cpu::busy_s() - busy) / secs;
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let sources: i64 = pg
        .psql(&db, "SELECT COUNT(*) FROM attackers")
        .parse()
        .expect("count");
    assert!(sources > 0, "{db}: no profile");
    pg.psql("postgres", &format!("DROP DATABASE {db}"));
    (secs, cores)
}

fn main() {
    let base = std::env::var_os("DECNET_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("decnet-bench-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    // DECNET_BENCH_FLEET=analysts: the analysts' part alone.
    let only_analysts = std::env::var("DECNET_BENCH_FLEET").is_ok_and(|v| v == "analysts");
    let pg = pg::Postgres::start_with(&[]);
    if !only_analysts {
        for i in 0..4 {
            write_journal(
                &base.join(format!("journal-{i}")),
                LINES,
                SOURCES,
                0x9e37_79b9 + i as u64,
            );
        }
        println!("journals: 4 x {LINES} sensor records");

        println!("\n== journal -> committed rows, concurrent ingesters ==");
        let sqlite = concurrent(&journals(&base, 1, "sqlite"), None);
        println!(
            "{:<52} {:>10.0} rows/s  1.00x",
            "SQLite, 1 ingester (decnet ingest --once)", sqlite
        );
        for n in [1usize, 2, 4] {
            let url = pg.create_db(&format!("bench{n}"));
            let rate = concurrent(&journals(&base, n, &format!("pg{n}")), Some(&url));
            let rows: usize = pg
                .psql(&format!("bench{n}"), "SELECT COUNT(*) FROM logs")
                .parse()
                .expect("count");
            assert_eq!(rows, n * LINES, "every row once");
            println!(
                "{:<52} {:>10.0} rows/s  {:.2}x",
                format!("PostgreSQL, {n} concurrent ingester(s)"),
                rate,
                rate / sqlite
            );
        }

        // Takeover: two analysts on the 1-ingester database; kill whichever holds the lock.
        println!("\n== analyst takeover after SIGKILL of the lock holder (5 rounds) ==");
        let url = pg.url("bench1");
        let dirs = [base.join("analyst-a"), base.join("analyst-b")];
        let mut procs = [analyst(&url, &dirs[0]), analyst(&url, &dirs[1])];
        // "analyst lock taken" lines in each process's current log.
        let mut taken = [0usize; 2];
        let mut holder = loop {
            if let Some(i) = (0..2)
                .find(|&i| wait_log(&dirs[i], "analyst lock taken", 1, Duration::ZERO).is_some())
            {
                break i;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        taken[holder] = 1;
        let mut times = Vec::new();
        for _ in 0..5 {
            let standby = 1 - holder;
            // The standby has tried for the lock at least once.
            wait_log(&dirs[standby], "standing by", 1, Duration::from_secs(10))
                .expect("standby never stood by");
            let t = Instant::now();
            let _ = procs[holder].kill();
            let _ = procs[holder].wait();
            taken[standby] += 1;
            let at = wait_log(
                &dirs[standby],
                "analyst lock taken",
                taken[standby],
                Duration::from_secs(10),
            )
            .expect("no takeover in 10 s");
            times.push(at.duration_since(t).as_secs_f64() * 1e3);
            // The killed one comes back as the next standby (a fresh log).
            procs[holder] = analyst(&url, &dirs[holder]);
            taken[holder] = 0;
            holder = standby;
        }
        for p in &mut procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        println!(
            "takeover ms: {} (median {:.0}, max {:.0}; standbys wait on the lock)",
            times
                .iter()
                .map(|t| format!("{t:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            percentile(&sorted, 0.5),
            sorted.last().copied().unwrap_or(0.0)
        );
    }
    // Analysts: eight sensors' rows ingested first, then profiled from a fresh copy by each
    // arrangement in turn, 3 rounds (the machine is shared: medians).
    println!(
        "\n== analysts profiling {ANALYST_SENSORS} sensors' rows ({ANALYST_SENSORS} x {ANALYST_LINES} lines, a backlog) =="
    );
    let dirs: Vec<PathBuf> = (0..ANALYST_SENSORS)
        .map(|i| {
            let d = base.join(format!("an-journal-{i}"));
            write_journal(&d, ANALYST_LINES, SOURCES, 0x5eed_0000 + i as u64);
            d
        })
        .collect();
    let url = pg.create_db("analysts");
    concurrent(&dirs, Some(&url));
    let rows: f64 = pg
        .psql("analysts", "SELECT COUNT(*) FROM logs")
        .parse()
        .expect("count");
    let arrangements: [(usize, u32, &str); 3] = [
        (1, 1, "1 analyst, unsharded"),
        (2, 2, "2 analysts, --analyst-shards 2"),
        (1, 2, "1 analyst process, --analyst-shards 2"),
    ];
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); arrangements.len()];
    let mut cores: Vec<Vec<f64>> = vec![Vec::new(); arrangements.len()];
    for round in 0..3 {
        for (k, (procs, shards, _)) in arrangements.iter().enumerate() {
            let (s, c) = profile_backlog(&pg, &base, "analysts", *procs, *shards, round);
            secs[k].push(s);
            cores[k].push(c);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        percentile(&v, 0.5)
    };
    let baseline = rows / median(&secs[0]);
    for (k, (_, _, name)) in arrangements.iter().enumerate() {
        let rate = rows / median(&secs[k]);
        println!(
            "{name:<52} {rate:>10.0} rows/s  {:.2}x  (rounds: {} s; busy cores {:.2} of {})",
            rate / baseline,
            secs[k]
                .iter()
                .map(|s| format!("{s:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            median(&cores[k]),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    drop(pg);
    let _ = std::fs::remove_dir_all(&base);
}
