//! `cargo xtask bench alerts`: what alert delivery costs ingest, and how fast it delivers.
//!
//! Each round ingests the same generated journal twice, in one process as `decnet run`
//! wires it (ingester -> hub -> profiler -> detections): once with no sink, once with a
//! rule sending every detection (`min_risk = 0`, `rearm_minutes = 0`) to a webhook on
//! loopback and to Debian's rsyslog over TCP. It prints ingest rows/s of both and their
//! ratio, detections/s delivered, and the delivery latency (the detection's commit time to
//! the webhook's arrival, and to rsyslog's receive time) at p50 and p99. Medians of the
//! rounds; goal: at most 5 % ingest slowdown, p99 under 1 s.

use std::{
    path::Path,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use decnet::{
    alert::{self, AlertStats, RuleFile, SinkFile},
    hub::Hub,
    ingest::{IngestConfig, Ingester},
    profile::Profiler,
    store::Store,
};
use decnet_tests::receivers::{Rsyslog, Webhook};

mod common;
use common::{percentile, write_journal};

const LINES: usize = 200_000;
const SOURCES: u64 = 20_000;
const ROUNDS: usize = 3;

struct Run {
    ingest_rows_s: f64,
    /// Ingest's end to the profiler's last commit, and to the sinks' last delivery (s).
    profiled_s: f64,
    delivered_after_s: f64,
    detections: i64,
    delivered_s: f64,
    webhook_ms: Vec<f64>,
    syslog_ms: Vec<f64>,
    /// From the detection's commit (its announcement on the hub) instead of its time.
    webhook_commit_ms: Vec<f64>,
    syslog_commit_ms: Vec<f64>,
}

fn unix_ns() -> i64 {
    decnet_tests::receivers::unix_ns()
}

/// Unix ns of an RFC 3339 time (rsyslog writes `+00:00`; decnet `Z`).
fn ns(rfc3339: &str) -> i64 {
    decnet::timefmt::parse_rfc3339_ns(rfc3339).unwrap_or(0)
}

async fn round(dir: &Path, sinks: Option<(&Webhook, &Rsyslog)>) -> Run {
    write_journal(dir, LINES, SOURCES, 7);
    let store = Store::open(&dir.join("decnet.db")).await.expect("store");
    let hub = Hub::default();
    let ingester = Ingester::new(
        store.clone(),
        IngestConfig::new(dir.to_owned()),
        Arc::new(tokio::sync::Notify::new()),
    )
    .with_hub(hub.clone());
    let ingest_stats = ingester.stats();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let profiler = Profiler::with_hub(store.clone(), hub.clone()).with_feed(&hub);
    let profile_stats = profiler.stats();
    let profiling = tokio::spawn(profiler.run(ingester.subscribe(), stop_rx.clone()));
    let (plan, stats) = match sinks {
        Some((web, syslog)) => {
            let sinks = [
                (
                    SinkFile {
                        name: "web".into(),
                        webhook: Some(format!("http://{}/", web.addr)),
                        // The bench measures delivery, not the backlog's cap.
                        max_backlog: Some(u64::MAX >> 1),
                        ..SinkFile::default()
                    },
                    0,
                ),
                (
                    SinkFile {
                        name: "siem".into(),
                        syslog: Some(format!("tcp://127.0.0.1:{}", syslog.tcp)),
                        max_backlog: Some(u64::MAX >> 1),
                        ..SinkFile::default()
                    },
                    0,
                ),
            ];
            let rules = [(
                RuleFile {
                    name: "all".into(),
                    min_risk: Some(0),
                    sinks: vec!["web".into(), "siem".into()],
                    rearm_minutes: Some(0),
                    ..RuleFile::default()
                },
                0,
            )];
            let plan = alert::spec::plan(&sinks, &rules).expect("plan");
            let stats = Arc::new(AlertStats::new(&plan));
            (plan, stats)
        }
        None => Default::default(),
    };
    // When each detection was committed: the profiler announces it on the hub right after.
    let committed = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let watcher = {
        let (committed, mut rx) = (committed.clone(), hub.subscribe());
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(decnet::hub::HubMsg::Detection(d)) => {
                        committed.lock().unwrap().insert(d.id, unix_ns());
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        })
    };
    let workers = alert::spawn(&plan, &store, Some(&hub), &stats, stop_rx.clone());
    let t = Instant::now();
    let (_never, idle) = tokio::sync::watch::channel(false);
    ingester.run(idle, true).await.expect("ingest");
    let ingest_s = t.elapsed().as_secs_f64();
    // Let the profiler and the sinks finish what ingest gave them.
    let last_row = ingest_stats.last_id.load(Relaxed);
    let deadline = Instant::now() + Duration::from_secs(300);
    let ingested = Instant::now();
    while profile_stats.cursor.load(Relaxed) < last_row && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let profiled_s = ingested.elapsed().as_secs_f64();
    let detections = store
        .detections_after(0, i64::MAX)
        .await
        .expect("detections")
        .len() as i64;
    // Every sink has committed past the last detection (the profiler has made them all).
    let last_detection = store.last_detection_id().await.expect("last detection");
    while stats
        .sinks
        .iter()
        .any(|s| s.cursor.load(Relaxed) < last_detection)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_after_s = ingested.elapsed().as_secs_f64();
    let _ = stop.send(true);
    for w in workers {
        let _ = w.await;
    }
    let _ = profiling.await;
    watcher.abort();
    let committed = committed.lock().unwrap().clone();
    let since_commit = |body: &serde_json::Value, at: i64| {
        body["detection"]["id"]
            .as_i64()
            .and_then(|id| committed.get(&id))
            .map(|c| (at - c) as f64 / 1e6)
    };
    let mut run = Run {
        ingest_rows_s: LINES as f64 / ingest_s,
        profiled_s,
        delivered_after_s,
        detections,
        delivered_s: 0.0,
        webhook_ms: Vec::new(),
        syslog_ms: Vec::new(),
        webhook_commit_ms: Vec::new(),
        syslog_commit_ms: Vec::new(),
    };
    if let Some((web, syslog)) = sinks {
        // rsyslog writes its file on its own schedule.
        let deadline = Instant::now() + Duration::from_secs(30);
        while (syslog.received().len() as i64) < detections && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = web.requests();
        let (first, last) = (got.first().map(|r| r.at), got.last().map(|r| r.at));
        if let (Some(a), Some(b)) = (first, last) {
            run.delivered_s = got.len() as f64 / (b - a).as_secs_f64().max(1e-3);
        }
        for r in &got {
            let ts = r.body["ts"].as_str().unwrap_or("");
            run.webhook_ms.push((r.at_unix_ns - ns(ts)) as f64 / 1e6);
            run.webhook_commit_ms
                .extend(since_commit(&r.body, r.at_unix_ns));
        }
        for (at, m) in syslog.received() {
            let body: serde_json::Value =
                serde_json::from_str(m.get(5).map(String::as_str).unwrap_or(""))
                    .unwrap_or_default();
            let ts = body["ts"].as_str().unwrap_or("");
            run.syslog_ms.push((ns(&at) - ns(ts)) as f64 / 1e6);
            run.syslog_commit_ms.extend(since_commit(&body, ns(&at)));
        }
        assert_eq!(
            got.len() as i64,
            detections,
            "every detection reached the webhook"
        );
    }
    store.close().await;
    run
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        percentile(&v, q)
    }
}

fn main() {
    let has_rsyslog = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .iter()
        .any(|p| Path::new(p).is_file());
    if !has_rsyslog {
        eprintln!("skipping: needs rsyslogd (apt-get install rsyslog)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let base = tempfile::tempdir().expect("tempdir");
    let (mut off, mut on, mut rate) = (vec![], vec![], vec![]);
    // Latency percentiles per round: webhook and syslog, from the detection's time and from
    // its commit, p50 and p99.
    let mut lat: [Vec<f64>; 8] = Default::default();
    let mut detections = 0;
    for r in 0..ROUNDS {
        let a = rt.block_on(round(&base.path().join(format!("off{r}")), None));
        let syslog_dir = base.path().join(format!("syslog{r}"));
        std::fs::create_dir_all(&syslog_dir).unwrap();
        let syslog = Rsyslog::start(&syslog_dir);
        let web = Webhook::start();
        let b = rt.block_on(round(
            &base.path().join(format!("on{r}")),
            Some((&web, &syslog)),
        ));
        let figures = [
            p(&b.webhook_ms, 0.5),
            p(&b.webhook_ms, 0.99),
            p(&b.syslog_ms, 0.5),
            p(&b.syslog_ms, 0.99),
            p(&b.webhook_commit_ms, 0.5),
            p(&b.webhook_commit_ms, 0.99),
            p(&b.syslog_commit_ms, 0.5),
            p(&b.syslog_commit_ms, 0.99),
        ];
        println!(
            "round {}: ingest {:.0} rows/s without sinks, {:.0} with ({:.3}x); {} detections, \
             {:.0}/s delivered; from the profile change: webhook p50 {:.1} ms p99 {:.1} ms, \
             syslog p50 {:.1} ms p99 {:.1} ms; from the commit: webhook p50 {:.1} ms p99 {:.1} ms, \
             syslog p50 {:.1} ms p99 {:.1} ms; profiled {:.1} s after ingest without sinks, \
             {:.1} s with; sinks done {:.1} s after",
            r + 1,
            a.ingest_rows_s,
            b.ingest_rows_s,
            b.ingest_rows_s / a.ingest_rows_s,
            b.detections,
            b.delivered_s,
            figures[0],
            figures[1],
            figures[2],
            figures[3],
            figures[4],
            figures[5],
            figures[6],
            figures[7],
            a.profiled_s,
            b.profiled_s,
            b.delivered_after_s,
        );
        detections = b.detections;
        off.push(a.ingest_rows_s);
        on.push(b.ingest_rows_s);
        rate.push(b.delivered_s);
        for (v, f) in lat.iter_mut().zip(figures) {
            v.push(f);
        }
    }
    let (off, on) = (median(off), median(on));
    println!(
        "\nmedians of {ROUNDS} rounds ({LINES} journal lines from {SOURCES} sources, {detections} detections):"
    );
    println!("  ingest without sinks  {off:>10.0} rows/s  (baseline)");
    println!(
        "  ingest with 2 sinks   {on:>10.0} rows/s  {:.3}x  (goal >= 0.95x)",
        on / off
    );
    println!(
        "  delivered             {:>10.0} detections/s per sink",
        median(rate)
    );
    let m: Vec<f64> = lat.into_iter().map(median).collect();
    println!(
        "  from the profile change (the detection's time; includes the profiler's batch and commit):"
    );
    println!(
        "    webhook             p50 {:.1} ms, p99 {:.1} ms  (goal p99 < 1000 ms)",
        m[0], m[1]
    );
    println!(
        "    syslog (TCP)        p50 {:.1} ms, p99 {:.1} ms",
        m[2], m[3]
    );
    println!("  from the commit (the sinks' own part):");
    println!(
        "    webhook             p50 {:.1} ms, p99 {:.1} ms  (goal p99 < 1000 ms)",
        m[4], m[5]
    );
    println!(
        "    syslog (TCP)        p50 {:.1} ms, p99 {:.1} ms",
        m[6], m[7]
    );
}
