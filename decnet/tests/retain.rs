//! Retention against a real SQLite file: rows older than the window go and every newer row
//! stays exactly once; nothing the profiler or an alert sink has not read is deleted; a
//! size cap brings the file back within 10 % of itself after each fill.

use std::{collections::BTreeSet, sync::Arc};

use decnet::{
    profile::Profiler,
    retain::{Policy, RetainStats, Retention},
    row::NewLog,
    store::{Batch, Store},
    timefmt,
};

const DAY_NS: i64 = 86_400 * 1_000_000_000;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// `n` rows from 500 sources, their times spread evenly over the last `days` days (the
/// newest a minute ago), in id order but not time order (another writer's clock).
fn rows(n: usize, days: i64, salt: usize) -> Vec<NewLog> {
    let now = now_ns() - 60_000_000_000;
    (0..n)
        .map(|i| {
            // A permutation of the slots, so ids and times are not in the same order.
            let slot = (i * 7919 + salt) % n;
            let ts = now - (slot as i64) * (days * DAY_NS / n as i64);
            NewLog {
                ts: timefmt::rfc3339_ns(ts),
                decky: "web".into(),
                service: "tcp".into(),
                event_type: "tcp_syn".into(),
                attacker_ip: format!("10.8.{}.{}", (i % 500) / 250, (i % 500) % 250 + 1),
                fields: format!(
                    r#"{{"dst_port":{},"flags":"S","window":1024,"ttl":52,"options":"M1460","pad":"{}"}}"#,
                    1 + i % 1000,
                    "x".repeat(200)
                ),
                trace_id: None,
                span_id: None,
                sensor: Default::default(),
            }
        })
        .collect()
}

async fn ingest(store: &Store, logs: &[NewLog]) {
    for chunk in logs.chunks(5000) {
        store
            .commit_batch_copy(&Batch {
                logs: chunk.to_vec(),
                ..Batch::default()
            })
            .await
            .unwrap();
    }
}

/// Every (id, ts) of `logs`.
async fn kept(path: &std::path::Path) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c.prepare("SELECT id, ts FROM logs ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn retention(store: &Store, policy: Policy) -> Retention {
    Retention {
        store: store.clone(),
        policy,
        sinks: vec![],
        stats: Arc::new(RetainStats::default()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_days_keep_seven_and_nothing_unread_goes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decnet.db");
    let store = Store::open(&path).await.unwrap();
    let logs = rows(40_000, 30, 0);
    ingest(&store, &logs).await;
    Profiler::new(store.clone()).catch_up().await.unwrap();
    // Rows the profiler has not read yet: just as old, they must stay.
    let unread = rows(2_000, 30, 1);
    ingest(&store, &unread).await;

    let r = retention(
        &store,
        Policy {
            retain_days: 7,
            max_db_bytes: 0,
        },
    );
    let (_stop, mut rx) = tokio::sync::watch::channel(false);
    let cutoff = timefmt::rfc3339_ns(now_ns() - 7 * DAY_NS);
    r.round(&mut rx).await.unwrap();

    let after = kept(&path).await;
    let ids: BTreeSet<i64> = after.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), after.len(), "an id twice");
    // Profiled rows: exactly the newer ones, each once.
    let profiled: Vec<&(i64, String)> = after.iter().filter(|(id, _)| *id <= 40_000).collect();
    let want = logs.iter().filter(|l| l.ts >= cutoff).count();
    assert!(
        profiled
            .iter()
            .all(|(_, ts)| ts.as_str() >= cutoff.as_str())
    );
    assert_eq!(profiled.len(), want);
    assert!(
        want > 8_000 && want < 11_000,
        "{want} of 40000 within 7 of 30 days"
    );
    // Unread rows: all of them.
    assert_eq!(after.len() - profiled.len(), unread.len());
    let s = r.stats.snapshot();
    assert_eq!(s["pruned"]["logs"], (40_000 - want) as u64, "{s}");
    assert!(s["oldest_log_ts"].as_str().is_some());
    assert_eq!(
        store.pruned_through().await.unwrap().0,
        *(1..=40_000)
            .filter(|i| !ids.contains(i))
            .collect::<Vec<i64>>()
            .last()
            .unwrap()
    );

    // Once profiled, the old unread rows go too.
    Profiler::new(store.clone()).catch_up().await.unwrap();
    r.round(&mut rx).await.unwrap();
    let after = kept(&path).await;
    assert!(after.iter().all(|(_, ts)| ts.as_str() >= cutoff.as_str()));
    assert_eq!(
        after.len(),
        want + unread.iter().filter(|l| l.ts >= cutoff).count()
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_cap_holds_over_three_fills() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decnet.db");
    let store = Store::open(&path).await.unwrap();
    assert!(store.can_shrink().await.unwrap(), "a new file shrinks");
    let cap: u64 = 16 << 20;
    let r = retention(
        &store,
        Policy {
            retain_days: 0,
            max_db_bytes: cap,
        },
    );
    let (_stop, mut rx) = tokio::sync::watch::channel(false);
    for cycle in 0..3 {
        // About 30 MiB of rows a fill: twice the cap.
        ingest(&store, &rows(60_000, 1, cycle)).await;
        Profiler::new(store.clone()).catch_up().await.unwrap();
        let before = store.db_size().await.unwrap().unwrap();
        assert!(
            before.used > cap,
            "cycle {cycle}: filled to {}",
            before.used
        );
        r.round(&mut rx).await.unwrap();
        store.checkpoint().await.unwrap();
        let size = store.db_size().await.unwrap().unwrap();
        let on_disk = std::fs::metadata(&path).unwrap().len();
        eprintln!(
            "cycle {cycle}: {} MiB used before, {} after; file {} MiB (cap 16)",
            before.used >> 20,
            size.used >> 20,
            on_disk >> 20
        );
        assert!(size.used <= cap, "cycle {cycle}: {} used", size.used);
        assert!(
            (on_disk as f64) <= cap as f64 * 1.1,
            "cycle {cycle}: file {on_disk} bytes over the cap by more than 10 %"
        );
        assert!(!kept(&path).await.is_empty(), "everything was deleted");
    }
    store.close().await;
}
