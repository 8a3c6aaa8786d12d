//! `cargo xtask bench tracing`: what developer tracing costs the ingest pipeline.
//!
//! The ingest benchmark's workload (`decnet ingest --once` over a journal of sensor records,
//! each carrying the `traceparent` the collector writes when tracing is on), run by:
//! 1. baseline: a build without the `otel` feature (no tracing code at all);
//! 2. off: the normal build, `DECNET_DEVELOPER_TRACING` unset;
//! 3. on: tracing on, exporting to a real OTLP/gRPC receiver in this process;
//! 4. unreachable: tracing on, the endpoint a loopback port nobody listens on.
//!
//! Rounds are interleaved (1 2 3 4, 1 2 3 4, ...) so machine noise hits every variant alike;
//! each figure is the median round. Wall time of the whole process, so "on" includes the
//! exporter's final flush.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

mod common;
// Shared with the decnet-tests crate, where its items are its library's public API; the
// benchmark uses part of it.
#[path = "../../tests/otlp.rs"]
#[allow(dead_code, unreachable_pub)]
mod otlp;

use common::{Rng, decnet_bin, record_traced};

const LINES: usize = 300_000;
const SOURCES: u64 = 5000;
const ROUNDS: usize = 3;

fn write_journal(path: &Path) -> u64 {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut f = std::fs::File::create(path).expect("journal");
    let mut buf = Vec::with_capacity(1 << 21);
    for i in 0..LINES {
        // Distinct, valid W3C ids per record, as the collector's spans would have.
        let tp = format!(
            "00-{:032x}-{:016x}-01",
            (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835,
            (i as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd) | 1
        );
        record_traced(&mut rng, i, SOURCES, 1000, Some(&tp), &mut buf);
        if buf.len() > 1 << 20 {
            f.write_all(&buf).expect("write");
            buf.clear();
        }
    }
    f.write_all(&buf).expect("write");
    f.metadata().map(|m| m.len()).unwrap_or(0)
}

struct Variant {
    name: &'static str,
    bin: PathBuf,
    env: Vec<(&'static str, String)>,
}

struct Run {
    rows_per_s: f64,
    /// The exporter's own account, from its exit log line.
    exporter: String,
}

fn run(v: &Variant, journal: &Path, dir: &Path) -> Run {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("run dir");
    std::fs::copy(journal, dir.join("events.jsonl")).expect("copy journal");
    let t = Instant::now();
    let out = Command::new(&v.bin)
        .args(["ingest", "--once", "--data-dir"])
        .arg(dir)
        .env_remove("DECNET_DEVELOPER_TRACING")
        .env("DECNET_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(v.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", v.bin.display()));
    let secs = t.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed:\n{log}", v.name);
    assert!(
        log.contains(&format!("rows={LINES}")),
        "{}: not every line ingested:\n{log}",
        v.name
    );
    let exporter = log
        .lines()
        .find(|l| l.contains("developer tracing: spans"))
        .and_then(|l| l.split_once("spans "))
        .map(|(_, rest)| rest.trim().to_owned())
        .unwrap_or_else(|| "-".into());
    Run {
        rows_per_s: LINES as f64 / secs,
        exporter,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let no_otel = std::env::var_os("DECNET_BIN_NO_OTEL")
        .map(PathBuf::from)
        .expect("DECNET_BIN_NO_OTEL: a decnet built with --no-default-features (cargo xtask bench tracing builds it)");
    let base = std::env::var_os("DECNET_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("decnet-bench-tracing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let journal = dir.join("journal.jsonl");
    let bytes = write_journal(&journal);
    println!(
        "journal: {LINES} sensor records with traceparent, {:.0} MB; {ROUNDS} interleaved rounds",
        bytes as f64 / 1e6
    );

    let receiver = otlp::Receiver::start_counting();
    let dead = {
        // Bound and closed again: nothing listens there.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let on = |ep: &str| {
        vec![
            ("DECNET_DEVELOPER_TRACING", "true".to_owned()),
            ("DECNET_OTEL_ENDPOINT", ep.to_owned()),
        ]
    };
    let variants = [
        Variant {
            name: "baseline: built without tracing code (--no-default-features)",
            bin: no_otel,
            env: vec![],
        },
        Variant {
            name: "tracing off (default build, variable unset)",
            bin: decnet_bin(),
            env: vec![],
        },
        Variant {
            name: "tracing on, exporting to a local OTLP receiver",
            bin: decnet_bin(),
            env: on(&receiver.endpoint()),
        },
        Variant {
            name: "tracing on, collector unreachable",
            bin: decnet_bin(),
            env: on(&dead),
        },
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut notes: Vec<String> = vec![String::new(); variants.len()];
    for round in 0..ROUNDS {
        for (i, v) in variants.iter().enumerate() {
            let before = receiver.span_count();
            let r = run(v, &journal, &dir.join("run"));
            let got = receiver.span_count() - before;
            println!(
                "  round {round} {:<64} {:>9.0} rows/s  received {got} spans  {}",
                v.name, r.rows_per_s, r.exporter
            );
            rates[i].push(r.rows_per_s);
            notes[i] = if v.env.is_empty() {
                String::new()
            } else {
                format!("last run: {}; receiver got {got}", r.exporter)
            };
        }
    }
    let m: Vec<f64> = rates.into_iter().map(median).collect();
    println!("\n== decnet ingest --once, {LINES} lines, median of {ROUNDS} ==");
    for (i, v) in variants.iter().enumerate() {
        println!(
            "{:<64} {:>9.0} rows/s  {:.3}x baseline  {}",
            v.name,
            m[i],
            m[i] / m[0],
            notes[i]
        );
    }
    println!(
        "\noff / baseline = {:.3} (goal >= 0.98)   on / off = {:.3} (goal >= 0.75)   unreachable / on = {:.3} (goal >= 1.0)",
        m[1] / m[0],
        m[2] / m[1],
        m[3] / m[2]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
