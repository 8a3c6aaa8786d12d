//! Alert delivery in batches, against a real SQLite file and real loopback receivers: a
//! webhook taking NDJSON batches, one refusing them (so each message goes alone), and a
//! file written a page at a time. Every detection reaches every sink exactly once.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use decnet::{
    alert::{self, AlertStats, RuleFile, SinkFile},
    profile::Profiler,
    row::NewLog,
    store::{Batch, Store},
};
use decnet_tests::receivers::{Received, Webhook};

/// `n` SYNs from `sources` addresses, a second apart.
fn syns(n: usize, sources: usize) -> Vec<NewLog> {
    let t0: i64 = 1_795_723_674_000_000_000;
    (0..n)
        .map(|i| NewLog {
            ts: decnet::timefmt::rfc3339_ns(t0 + i as i64 * 1_000_000_000),
            decky: "web".into(),
            service: "tcp".into(),
            event_type: "tcp_syn".into(),
            attacker_ip: format!("10.9.{}.{}", (i % sources) / 250, (i % sources) % 250 + 1),
            fields: format!(
                r#"{{"dst_port":{},"flags":"S","window":1024,"ttl":52,"options":"M1460"}}"#,
                1 + i % 1000
            ),
            trace_id: None,
            span_id: None,
            sensor: Default::default(),
        })
        .collect()
}

/// Idempotency keys of the accepted messages, with how often each was accepted.
fn accepted(got: &[Received], key: impl Fn(&Received) -> String) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in got.iter().filter(|r| r.status == 200) {
        *out.entry(key(r)).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_and_refused_batches_deliver_every_detection_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("decnet.db")).await.unwrap();
    let (bulk, single) = (Webhook::start(), Webhook::start());
    single.answer_batches(413);
    let archive = dir.path().join("alerts.ndjson");
    let sink = |name: &str, webhook: Option<String>, batch| SinkFile {
        name: name.into(),
        webhook,
        file: (name == "archive").then(|| archive.clone()),
        format: Some("ecs".into()),
        batch,
        ..SinkFile::default()
    };
    let sinks = [
        (
            sink("bulk", Some(format!("http://{}/", bulk.addr)), Some(64)),
            1,
        ),
        (
            sink("single", Some(format!("http://{}/", single.addr)), Some(64)),
            2,
        ),
        (sink("archive", None, None), 3),
    ];
    let rules = [(
        RuleFile {
            name: "all".into(),
            min_risk: Some(0),
            sinks: vec!["bulk".into(), "single".into(), "archive".into()],
            rearm_minutes: Some(0),
            ..RuleFile::default()
        },
        4,
    )];
    let plan = alert::spec::plan(&sinks, &rules).expect("plan");
    let stats = Arc::new(AlertStats::new(&plan));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let workers = alert::spawn(&plan, &store, None, &stats, stop_rx);
    // A new sink starts after the newest detection: let each commit its start first.
    let deadline = Instant::now() + Duration::from_secs(10);
    for name in ["bulk", "single", "archive"] {
        while store.load_sink(name).await.unwrap().cursor.is_none() {
            assert!(Instant::now() < deadline, "sink {name} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    store
        .commit_batch_copy(&Batch {
            logs: syns(3000, 300),
            ..Batch::default()
        })
        .await
        .unwrap();
    Profiler::new(store.clone()).catch_up().await.unwrap();
    let detections: Vec<i64> = store
        .detections_after(0, i64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert!(detections.len() >= 300, "one per source at least");
    let last = *detections.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.sinks.iter().any(|s| s.cursor.load(Relaxed) < last) {
        assert!(Instant::now() < deadline, "the sinks did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }

    // Each detection once, under the rule's key, on every sink.
    let want: BTreeMap<String, usize> = detections
        .iter()
        .map(|id| (format!("decnet:all:{id}"), 1))
        .collect();
    let event_id = |r: &Received| r.body["event"]["id"].as_str().unwrap_or("").to_owned();
    let got = bulk.requests();
    let posts = got
        .iter()
        .map(|r| (r.idempotency_key.clone(), r.at_unix_ns))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    eprintln!(
        "{} detections; batched webhook: {} messages in {posts} POSTs",
        detections.len(),
        got.len()
    );
    assert_eq!(accepted(&got, event_id), want);
    // In batches: NDJSON of up to 64, keyed first..last.
    let largest = got.iter().map(|r| r.batch).max().unwrap();
    assert!(largest > 1 && largest <= 64, "largest batch {largest}");
    assert!(got.iter().all(|r| r.status == 200));
    let batched = got.iter().find(|r| r.batch > 1).unwrap();
    let key = batched.idempotency_key.as_deref().unwrap();
    assert!(key.contains(".."), "{key}");
    // The receiver that refuses batches got each message alone after the refusal.
    let got = single.requests();
    assert_eq!(accepted(&got, event_id), want);
    assert!(got.iter().filter(|r| r.status == 200).all(|r| r.batch == 1));
    assert!(got.iter().any(|r| r.status == 413), "no batch was tried");
    let s = stats.sink("single").unwrap();
    assert_eq!(s.delivered.load(Relaxed), detections.len() as u64);
    assert_eq!(s.rejected.load(Relaxed), 0);
    // The file, a page per write.
    let text = std::fs::read_to_string(&archive).unwrap();
    let mut lines = BTreeMap::new();
    for l in text.lines() {
        let doc: serde_json::Value = serde_json::from_str(l).expect("an ECS document per line");
        *lines
            .entry(doc["event"]["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(lines, want);
    store.close().await;
}

/// Digests through the real worker: a rule with `digest_minutes = 1` sends one summary per
/// minute window of the detections' times, as decnet's JSON to one webhook and as Slack's
/// `{"text": ...}` to another. The workers stop between two batches while a window is
/// open: the open digest is kept, and the restarted workers fold the second batch into
/// it (or, when a minute boundary fell between them, send both windows), each window once.
/// A window closes by the clock, so this waits up to a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_one_per_window_in_json_and_slack_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("decnet.db")).await.unwrap();
    let (hook, chat) = (Webhook::start(), Webhook::start());
    let sink = |name: &str, addr: &std::net::SocketAddr, format: &str| SinkFile {
        name: name.into(),
        webhook: Some(format!("http://{addr}/")),
        format: Some(format.into()),
        ..SinkFile::default()
    };
    let sinks = [
        (sink("hook", &hook.addr, "json"), 1),
        (sink("chat", &chat.addr, "slack"), 2),
    ];
    let rules = [(
        RuleFile {
            name: "summary".into(),
            min_risk: Some(0),
            sinks: vec!["hook".into(), "chat".into()],
            rearm_minutes: Some(0),
            digest_minutes: Some(1),
            ..RuleFile::default()
        },
        3,
    )];
    let plan = alert::spec::plan(&sinks, &rules).expect("plan");
    let stats = Arc::new(AlertStats::new(&plan));

    // Two batches from different sources (each new source is a detection).
    let first = syns(300, 30);
    let mut second = syns(300, 30);
    for l in second.iter_mut() {
        l.attacker_ip = l.attacker_ip.replacen("10.9.", "10.19.", 1);
    }
    let mut after = 0;
    // Detections per minute window (Unix ns of its start): what the digests must count.
    let mut windows = BTreeMap::<i64, u64>::new();
    let mut running = None;
    for (round, logs) in [first, second].into_iter().enumerate() {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let workers = alert::spawn(&plan, &store, None, &stats, stop_rx);
        let deadline = Instant::now() + Duration::from_secs(10);
        for name in ["hook", "chat"] {
            while store.load_sink(name).await.unwrap().cursor.is_none() {
                assert!(Instant::now() < deadline, "sink {name} did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        store
            .commit_batch_copy(&Batch {
                logs,
                ..Batch::default()
            })
            .await
            .unwrap();
        Profiler::new(store.clone()).catch_up().await.unwrap();
        let detections = store.detections_after(after, i64::MAX).await.unwrap();
        assert!(
            detections.len() >= 30,
            "round {round}: one per source at least"
        );
        for d in &detections {
            let ns = decnet::timefmt::parse_rfc3339_ns(&d.ts).unwrap();
            *windows
                .entry(ns - ns.rem_euclid(60_000_000_000))
                .or_default() += 1;
        }
        after = detections.last().unwrap().id;
        // Decided (into the open digest) before the stop.
        let deadline = Instant::now() + Duration::from_secs(30);
        while stats.sinks.iter().any(|s| s.cursor.load(Relaxed) < after) {
            assert!(
                Instant::now() < deadline,
                "round {round}: the sinks did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round == 0 {
            let _ = stop.send(true);
            for w in workers {
                w.await.unwrap();
            }
        } else {
            running = Some((stop, workers));
        }
    }
    // Every window has closed a minute after it began, plus the worker's poll.
    let deadline = Instant::now() + Duration::from_secs(75);
    while [&hook, &chat]
        .iter()
        .any(|w| w.requests().iter().filter(|r| r.status == 200).count() < windows.len())
    {
        assert!(
            Instant::now() < deadline,
            "{} windows; hook got {}, chat {}",
            windows.len(),
            hook.requests().len(),
            chat.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (stop, workers) = running.unwrap();
    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }

    // decnet's JSON: one digest per window, keyed by its start, counting every alert in it.
    let mut seen = BTreeMap::new();
    for r in &hook.requests() {
        assert_eq!(r.body["type"], "digest", "{}", r.body);
        let key = r.body["idempotency_key"].as_str().unwrap().to_owned();
        assert_eq!(r.idempotency_key.as_deref(), Some(key.as_str()));
        let start = key.strip_prefix("decnet:summary:digest:").unwrap();
        let count = r.body["count"].as_u64().unwrap();
        let listed = r.body["sources"].as_array().unwrap().len() as u64;
        assert!(listed >= 1 && listed <= count, "{}", r.body);
        assert!(
            seen.insert(start.parse::<i64>().unwrap(), count).is_none(),
            "{key} twice"
        );
    }
    assert_eq!(seen, windows, "one digest per window, with its alert count");
    // Slack: the same digests as `{"text": ...}` and nothing else.
    let got = chat.requests();
    assert_eq!(got.len(), windows.len());
    for r in &got {
        let obj = r.body.as_object().unwrap();
        assert_eq!(obj.len(), 1, "{}", r.body);
        let text = obj["text"].as_str().unwrap();
        assert!(text.starts_with("decnet digest `summary`: "), "{text}");
        assert!(text.contains(" alert(s) from "), "{text}");
    }
    eprintln!(
        "{} detections in {} window(s): {:?}",
        windows.values().sum::<u64>(),
        windows.len(),
        windows.values().collect::<Vec<_>>()
    );
    store.close().await;
}
