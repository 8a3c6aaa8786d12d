//! `cargo xtask bench alerts`: what alert delivery costs ingest, and how fast it delivers.
//!
//! Each round ingests the same generated journal twice, in one process as `decnet run`
//! wires it (ingester -> hub -> profiler -> detections): once with no sink, once with a
//! rule sending every detection (`min_risk = 0`, `rearm_minutes = 0`) to three sinks: a
//! webhook on loopback taking one message per POST, another taking NDJSON batches
//! (`batch = 256`), and Debian's rsyslog over TCP. It prints ingest rows/s of both and
//! their ratio, detections/s delivered, and the delivery latency (from the detection's time
//! and from its commit, to the webhook's arrival and to rsyslog's receive time) at p50 and
//! p99. It also prints the whole machine's busy cores while ingest ran, and the CPU the
//! sinks added to the round (workers, receivers, rsyslog, loopback) per detection: on a
//! machine that ingest already keeps busy, that is what the sinks take from it. Beside it,
//! a floor from the same round: the same messages, rendered beforehand, sent to fresh
//! receivers of the same three kinds with nothing of decnet in between; and the idle CPU
//! ingest without sinks left, against what that floor needs for the round's detections.
//! Medians of the rounds; goal: at most 5 % ingest slowdown, p99 under 1 s.

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
use decnet_tests::{
    cpu::busy_s,
    receivers::{Rsyslog, Webhook},
};

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
    /// Per sink (one per POST, batched, syslog): latency from the detection's time, and
    /// from its commit (its announcement on the hub).
    since_ts_ms: [Vec<f64>; 3],
    since_commit_ms: [Vec<f64>; 3],
    /// The whole machine's busy CPU seconds (every process: rsyslog, the receivers and the
    /// kernel's loopback included) while ingest ran, and from ingest's start until the
    /// profiler (no sinks) or the last sink (sinks) was done.
    ingest_cpu_s: f64,
    round_cpu_s: f64,
    /// The stored detections as the sinks render them (JSON, and an RFC 5424 line), for the
    /// delivery floor.
    rendered: Vec<(String, String)>,
}

/// The receivers of one round.
struct Receivers<'a> {
    web: &'a Webhook,
    bulk: &'a Webhook,
    syslog: &'a Rsyslog,
}

fn unix_ns() -> i64 {
    decnet_tests::receivers::unix_ns()
}

/// Unix ns of an RFC 3339 time (rsyslog writes `+00:00`; decnet `Z`).
fn ns(rfc3339: &str) -> i64 {
    decnet::timefmt::parse_rfc3339_ns(rfc3339).unwrap_or(0)
}

async fn round(dir: &Path, sinks: Option<&Receivers<'_>>) -> Run {
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
        Some(rx) => {
            let sinks = [
                (
                    SinkFile {
                        name: "web".into(),
                        webhook: Some(format!("http://{}/", rx.web.addr)),
                        // The bench measures delivery, not the backlog's cap.
                        max_backlog: Some(u64::MAX >> 1),
                        ..SinkFile::default()
                    },
                    0,
                ),
                (
                    SinkFile {
                        name: "bulk".into(),
                        webhook: Some(format!("http://{}/", rx.bulk.addr)),
                        batch: Some(256),
                        max_backlog: Some(u64::MAX >> 1),
                        ..SinkFile::default()
                    },
                    0,
                ),
                (
                    SinkFile {
                        name: "siem".into(),
                        syslog: Some(format!("tcp://127.0.0.1:{}", rx.syslog.tcp)),
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
                    sinks: vec!["web".into(), "bulk".into(), "siem".into()],
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
                    Ok(decnet::hub::HubMsg::Detections(ds)) => {
                        let at = unix_ns();
                        let mut c = committed.lock().unwrap();
                        for d in ds.iter() {
                            c.insert(d.id, at);
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        })
    };
    let workers = alert::spawn(&plan, &store, Some(&hub), &stats, stop_rx.clone());
    let cpu0 = busy_s();
    let t = Instant::now();
    let (_never, idle) = tokio::sync::watch::channel(false);
    ingester.run(idle, true).await.expect("ingest");
    let ingest_s = t.elapsed().as_secs_f64();
    let ingest_cpu_s = busy_s() - cpu0;
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
    let round_cpu_s = busy_s() - cpu0;
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
    let rendered = if sinks.is_some() {
        rendered(&store).await
    } else {
        Vec::new()
    };
    let mut run = Run {
        ingest_rows_s: LINES as f64 / ingest_s,
        profiled_s,
        delivered_after_s,
        detections,
        delivered_s: 0.0,
        since_ts_ms: Default::default(),
        since_commit_ms: Default::default(),
        ingest_cpu_s,
        round_cpu_s,
        rendered,
    };
    if let Some(rx) = sinks {
        // rsyslog writes its file on its own schedule.
        let deadline = Instant::now() + Duration::from_secs(30);
        while (rx.syslog.received().len() as i64) < detections && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = rx.web.requests();
        let (first, last) = (got.first().map(|r| r.at), got.last().map(|r| r.at));
        if let (Some(a), Some(b)) = (first, last) {
            run.delivered_s = got.len() as f64 / (b - a).as_secs_f64().max(1e-3);
        }
        for (i, hook) in [rx.web, rx.bulk].into_iter().enumerate() {
            let got = hook.requests();
            for r in &got {
                let ts = r.body["ts"].as_str().unwrap_or("");
                run.since_ts_ms[i].push((r.at_unix_ns - ns(ts)) as f64 / 1e6);
                run.since_commit_ms[i].extend(since_commit(&r.body, r.at_unix_ns));
            }
            assert_eq!(
                got.len() as i64,
                detections,
                "every detection reached webhook {i}"
            );
        }
        for (at, m) in rx.syslog.received() {
            let body: serde_json::Value =
                serde_json::from_str(m.get(5).map(String::as_str).unwrap_or(""))
                    .unwrap_or_default();
            let ts = body["ts"].as_str().unwrap_or("");
            run.since_ts_ms[2].push((ns(&at) - ns(ts)) as f64 / 1e6);
            run.since_commit_ms[2].extend(since_commit(&body, ns(&at)));
        }
    }
    store.close().await;
    run
}

/// Every stored detection as a rule without conditions alerts it: its JSON and its syslog
/// line, framed as the TCP sink frames it.
async fn rendered(store: &Store) -> Vec<(String, String)> {
    use decnet::alert::{
        render::Message,
        rule::{Alert, Detection},
    };
    let rows = store
        .detections_after(0, i64::MAX)
        .await
        .expect("detections");
    rows.iter()
        .map(|row| {
            let detection = Detection::from_row(row).expect("a stored detection");
            let m = Message::Alert(Box::new(Alert {
                idempotency_key: format!("decnet:all:{}", row.id),
                rule: "all".into(),
                detection,
                folded: None,
            }));
            let line = m.syslog(16, "bench", std::process::id());
            (m.json_string(), format!("{} {line}", line.len()))
        })
        .collect()
}

/// The floor under the three sinks: the same messages, rendered beforehand, sent to fresh
/// receivers of the same kinds with nothing of decnet in between (no database, no rules,
/// no cursor): one POST each with 8 in flight, NDJSON POSTs of 256, and one write of 256
/// framed lines at a time to rsyslog over TCP. Returns the machine's busy CPU seconds
/// above its idle rate, from the first send until every receiver had every message.
async fn floor(dir: &Path, msgs: &[(String, String)]) -> f64 {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let (web, bulk) = (Webhook::start(), Webhook::start());
    let syslog_dir = dir.join("floor-syslog");
    std::fs::create_dir_all(&syslog_dir).unwrap();
    let syslog = Rsyslog::start(&syslog_dir);
    let client = reqwest::Client::new();
    // The machine's idle rate (this process waits), to take off the window.
    let idle0 = busy_s();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rate = busy_s() - idle0;
    let cpu0 = busy_s();
    let t = Instant::now();
    let post = |url: String, kind: &'static str, body: String| {
        let client = &client;
        async move {
            let r = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, kind)
                .body(body)
                .send()
                .await
                .expect("POST to the floor's receiver");
            assert!(r.status().is_success());
        }
    };
    let one = futures_util::stream::iter(msgs.iter().map(|(j, _)| {
        post(
            format!("http://{}/", web.addr),
            "application/json",
            j.clone(),
        )
    }))
    .buffer_unordered(8)
    .count();
    let batched = futures_util::stream::iter(msgs.chunks(256).map(|c| {
        let mut body = String::new();
        for (j, _) in c {
            body.push_str(j);
            body.push('\n');
        }
        post(
            format!("http://{}/", bulk.addr),
            "application/x-ndjson",
            body,
        )
    }))
    .buffer_unordered(8)
    .count();
    let syslog_tcp = syslog.tcp;
    let lines = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", syslog_tcp))
            .await
            .expect("connect to rsyslog");
        for c in msgs.chunks(256) {
            let page: String = c.iter().map(|(_, l)| l.as_str()).collect();
            s.write_all(page.as_bytes())
                .await
                .expect("write to rsyslog");
        }
        s.flush().await.expect("flush");
        s
    };
    let (_, _, _conn) = tokio::join!(one, batched, lines);
    let n = msgs.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let len = |w: &Webhook| w.got.lock().unwrap().len();
    while (len(&web) < n || len(&bulk) < n) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // rsyslog writes its file on its own schedule: done once it stops growing.
    let size = || std::fs::metadata(&syslog.out).map_or(0, |m| m.len());
    let mut last = (size(), Instant::now());
    while last.1.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = size();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let cpu = busy_s() - cpu0 - idle_rate * t.elapsed().as_secs_f64();
    assert_eq!(
        len(&web),
        n,
        "the floor's one-per-POST receiver got every message"
    );
    assert_eq!(
        len(&bulk),
        n,
        "the floor's batch receiver got every message"
    );
    assert_eq!(
        syslog.received().len(),
        n,
        "rsyslog got every floor message"
    );
    cpu
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
    // p50 and p99 per round, per sink, from the detection's time and from its commit.
    const SINKS: [&str; 3] = ["webhook, 1 per POST", "webhook, batch 256", "syslog (TCP)"];
    let mut lat: [[[Vec<f64>; 2]; 2]; 3] = Default::default();
    let mut detections = 0;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut busy_off, mut busy_on, mut extra_us) = (vec![], vec![], vec![]);
    let (mut floor_per, mut idle_left, mut floor_need) = (vec![], vec![], vec![]);
    for r in 0..ROUNDS {
        let a = rt.block_on(round(&base.path().join(format!("off{r}")), None));
        let syslog_dir = base.path().join(format!("syslog{r}"));
        std::fs::create_dir_all(&syslog_dir).unwrap();
        let syslog = Rsyslog::start(&syslog_dir);
        let (web, bulk) = (Webhook::start(), Webhook::start());
        let rx = Receivers {
            web: &web,
            bulk: &bulk,
            syslog: &syslog,
        };
        let b = rt.block_on(round(&base.path().join(format!("on{r}")), Some(&rx)));
        println!(
            "round {}: ingest {:.0} rows/s without sinks, {:.0} with ({:.3}x); {} detections, \
             {:.0}/s delivered one per POST; profiled {:.1} s after ingest without sinks, \
             {:.1} s with; sinks done {:.1} s after",
            r + 1,
            a.ingest_rows_s,
            b.ingest_rows_s,
            b.ingest_rows_s / a.ingest_rows_s,
            b.detections,
            b.delivered_s,
            a.profiled_s,
            b.profiled_s,
            b.delivered_after_s,
        );
        for (k, name) in SINKS.iter().enumerate() {
            let f = [&b.since_ts_ms[k], &b.since_commit_ms[k]].map(|v| [p(v, 0.5), p(v, 0.99)]);
            println!(
                "  {name:<20} from the detection's time p50 {:.1} ms p99 {:.1} ms; \
                 from its commit p50 {:.1} ms p99 {:.1} ms",
                f[0][0], f[0][1], f[1][0], f[1][1]
            );
            for (from, q) in f.iter().enumerate() {
                for (i, v) in q.iter().enumerate() {
                    lat[k][from][i].push(*v);
                }
            }
        }
        // Cores busy while ingest ran (of all the machine has), and what the sinks added
        // to the whole round: their workers, the receivers and rsyslog, the loopback.
        let busy = |r: &Run| r.ingest_cpu_s / (LINES as f64 / r.ingest_rows_s);
        let extra = (b.round_cpu_s - a.round_cpu_s) / b.detections.max(1) as f64 * 1e6;
        println!(
            "  machine: {:.2} of {cores} cores busy during ingest without sinks, {:.2} with; \
             round CPU {:.1} s without, {:.1} s with: {:.0} us more per detection delivered \
             to the 3 sinks",
            busy(&a),
            busy(&b),
            a.round_cpu_s,
            b.round_cpu_s,
            extra
        );
        let floor_cpu = rt.block_on(floor(&base.path().join(format!("floor{r}")), &b.rendered));
        let floor_us = floor_cpu / b.rendered.len().max(1) as f64 * 1e6;
        // What ingest without sinks left idle, against what the floor needs for this
        // round's detections: below it, no delivery fits beside ingest on this machine.
        let idle_core_s = (cores as f64 - busy(&a)) * LINES as f64 / a.ingest_rows_s;
        println!(
            "  delivery floor (same messages pre-rendered, no decnet in between): {floor_us:.0} us \
             per detection; decnet's sinks {:.2}x of it; the floor needs {floor_cpu:.1} core-s \
             for the round's detections, ingest without sinks left {idle_core_s:.1} idle",
            extra / floor_us
        );
        floor_per.push(floor_us);
        idle_left.push(idle_core_s);
        floor_need.push(floor_cpu);
        busy_off.push(busy(&a));
        busy_on.push(busy(&b));
        extra_us.push(extra);
        detections = b.detections;
        off.push(a.ingest_rows_s);
        on.push(b.ingest_rows_s);
        rate.push(b.delivered_s);
    }
    let (off, on) = (median(off), median(on));
    println!(
        "\nmedians of {ROUNDS} rounds ({LINES} journal lines from {SOURCES} sources, {detections} detections):"
    );
    println!("  ingest without sinks  {off:>10.0} rows/s  (baseline)");
    println!(
        "  ingest with 3 sinks   {on:>10.0} rows/s  {:.3}x  (goal >= 0.95x)",
        on / off
    );
    println!(
        "  delivered             {:>10.0} detections/s to the webhook taking 1 per POST",
        median(rate)
    );
    println!(
        "  machine CPU           {:.2} of {cores} cores busy during ingest without sinks, {:.2} \
         with; the sinks' whole cost (workers, receivers, rsyslog, loopback) {:.0} us per \
         detection",
        median(busy_off),
        median(busy_on),
        median(extra_us.clone())
    );
    println!(
        "  delivery floor        {:.0} us per detection (the same messages, pre-rendered, sent \
         with nothing of decnet in between); decnet's sinks {:.2}x of it",
        median(floor_per.clone()),
        median(extra_us.clone()) / median(floor_per)
    );
    println!(
        "  CPU budget            the floor needs {:.1} core-s for the {detections} detections; \
         ingest without sinks left {:.1} core-s idle",
        median(floor_need),
        median(idle_left)
    );
    println!(
        "  latency, from the detection's time (includes the profiler's batch and commit) / from its commit (the sink's own part); goal p99 < 1000 ms:"
    );
    for (k, name) in SINKS.iter().enumerate() {
        let m = lat[k].clone().map(|q| q.map(median));
        println!(
            "    {name:<20} p50 {:>8.1} ms, p99 {:>8.1} ms  /  p50 {:>8.1} ms, p99 {:>8.1} ms",
            m[0][0], m[0][1], m[1][0], m[1][1]
        );
    }
}
