//! The store on PostgreSQL (a throwaway cluster): what the fleet relies on beyond what the
//! shared SQL gives for free.

use decnet::{
    row::NewLog,
    store::{Batch, CursorUpdate, DeadLetter, NewBounty, Store, StoreError},
};

// Shared with the decnet-tests crate, where its items are its library's public API.
#[path = "../../tests/pg.rs"]
#[allow(unreachable_pub)]
mod pg;

fn log(decky: &str, fields: &str) -> NewLog {
    NewLog {
        ts: "2026-11-27T10:00:00.000000001Z".into(),
        decky: decky.into(),
        service: "ssh".into(),
        event_type: "tcp_syn".into(),
        attacker_ip: "10.0.0.2".into(),
        fields: fields.into(),
        trace_id: None,
        span_id: None,
        sensor: "s1".into(),
    }
}

#[tokio::test]
async fn hostile_text_is_kept_and_cursors_stay_exclusive() {
    let pg = pg::Postgres::start();
    let store = Store::connect(&pg.create_db("store")).await.unwrap();
    let span = decnet::telemetry::lite::LiteSpan::continuing("test", None, None);

    // PostgreSQL text cannot hold U+0000; a line carrying one (decoded from `\u0000`) is
    // still stored, with U+FFFD in its place, and so are artifacts and dead letters.
    let mut b = Batch::default();
    let i = b.add_log(log("we\u{0}b", r#"{"x":"\u0000"}"#), &span);
    b.add_bounty(
        i,
        NewBounty {
            attacker_ip: "10.0.0.2".into(),
            kind: "http_user_agent",
            value: "curl\u{0}".into(),
            ts: "2026-11-27T10:00:00Z".into(),
        },
        &span,
    );
    b.dead.push(DeadLetter {
        file: "events.jsonl".into(),
        byte_offset: 7,
        reason: "bad \u{0} line".into(),
        raw: "{\u{0}".into(),
    });
    b.cursor = Some(CursorUpdate {
        key: "ingest_worker_position:s1".into(),
        prev: None,
        value: "{}".into(),
    });
    let first = store.commit_batch_copy(&b).await.unwrap();
    assert!(first.is_some());
    let rows = store.logs_after(0, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.decky, "we\u{FFFD}b");
    assert_eq!(
        rows[0].1.fields, r#"{"x":"\u0000"}"#,
        "escaped JSON is kept as it is"
    );
    assert_eq!(&*rows[0].1.sensor, "s1");
    assert_eq!(Some(rows[0].0), first);
    assert_eq!(
        store.bounties_for("10.0.0.2").await.unwrap(),
        vec![("http_user_agent".into(), "curl\u{FFFD}".into(), 1)]
    );
    assert_eq!(store.dead_letters().await.unwrap()[0].raw, "{\u{FFFD}");

    // Tabs, newlines, carriage returns and backslashes (COPY's own syntax) arrive intact.
    let awkward = "a\tb\nc\rd\\e\\N";
    let b = Batch {
        logs: vec![NewLog {
            trace_id: Some(awkward.into()),
            ..log(awkward, r#"{"p":"C:\\temp\t"}"#)
        }],
        ..Batch::default()
    };
    let at = store.commit_batch_copy(&b).await.unwrap().unwrap();
    let (id, back) = store.logs_after(at - 1, 1).await.unwrap().remove(0);
    assert_eq!(id, at);
    assert_eq!(back.decky, awkward);
    assert_eq!(back.trace_id.as_deref(), Some(awkward));
    assert_eq!(back.span_id, None);
    assert_eq!(back.fields, r#"{"p":"C:\\temp\t"}"#);

    // A second writer that believes the cursor is unset, or elsewhere, commits nothing.
    for prev in [None, Some("{\"x\":1}".to_owned())] {
        let stale = Batch {
            logs: vec![log("web", "{}")],
            cursor: Some(CursorUpdate {
                key: "ingest_worker_position:s1".into(),
                prev,
                value: "{}".into(),
            }),
            ..Batch::default()
        };
        assert!(matches!(
            store.commit_batch_copy(&stale).await,
            Err(StoreError::CursorMoved(_))
        ));
    }
    assert_eq!(store.count_logs().await.unwrap(), 2);

    // Batches get consecutive ids even when several sensors commit at once.
    let mut tasks = Vec::new();
    for s in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut firsts = Vec::new();
            for _ in 0..10 {
                let b = Batch {
                    logs: (0..100).map(|_| log(&format!("d{s}"), "{}")).collect(),
                    ..Batch::default()
                };
                firsts.push(store.commit_batch_copy(&b).await.unwrap().unwrap());
            }
            (s, firsts)
        }));
    }
    for t in tasks {
        let (s, firsts) = t.await.unwrap();
        for f in firsts {
            let rows = store.logs_after(f - 1, 100).await.unwrap();
            assert!(
                rows.iter().all(|(_, l)| l.decky == format!("d{s}")),
                "batch at {f} is not one sensor's 100 consecutive rows"
            );
            assert_eq!(rows.last().unwrap().0, f + 99);
        }
    }
    assert_eq!(store.count_logs().await.unwrap(), 4002);
}

#[tokio::test]
async fn retention_prunes_by_age_behind_the_profiler() {
    use decnet::retain::{Policy, RetainStats, Retention};
    let pg = pg::Postgres::start();
    let store = Store::connect(&pg.create_db("retain")).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    const DAY: i64 = 86_400 * 1_000_000_000;
    // 300 rows, one every tenth of a day back from now: 30 days.
    let rows = |salt: usize| -> Vec<NewLog> {
        (0..300)
            .map(|i| NewLog {
                ts: decnet::timefmt::rfc3339_ns(now - (i as i64) * DAY / 10 - salt as i64),
                attacker_ip: format!("10.5.0.{}", i % 50 + 1),
                ..log("web", r#"{"dst_port":22,"flags":"S"}"#)
            })
            .collect()
    };
    let mut b = Batch::default();
    let span = decnet::telemetry::lite::LiteSpan::continuing("test", None, None);
    for l in rows(0) {
        b.add_log(l, &span);
    }
    store.commit_batch_copy(&b).await.unwrap();
    decnet::profile::Profiler::new(store.clone())
        .catch_up()
        .await
        .unwrap();
    // Just as old, but not yet profiled: they stay.
    let mut b = Batch::default();
    for l in rows(1) {
        b.add_log(l, &span);
    }
    store.commit_batch_copy(&b).await.unwrap();
    let r = Retention {
        store: store.clone(),
        policy: Policy {
            retain_days: 7,
            max_db_bytes: 0,
        },
        sinks: vec![],
        stats: std::sync::Arc::new(RetainStats::default()),
    };
    let (_stop, mut rx) = tokio::sync::watch::channel(false);
    r.round(&mut rx).await.unwrap();
    let cutoff = decnet::timefmt::rfc3339_ns(now - 7 * DAY);
    let count = |sql: &str| pg.psql("retain", sql).parse::<i64>().unwrap();
    let q = |cond: &str| format!("SELECT count(*) FROM logs WHERE {cond}");
    // Profiled rows (ids 1..=300): those within 7 days stay; unprofiled ones all stay.
    assert_eq!(count(&q(&format!("id <= 300 AND ts < '{cutoff}'"))), 0);
    // Rows 0..=69: row 70 is exactly 7 days before `now`, older than the round's cutoff
    // (taken a moment later).
    assert_eq!(count(&q("id <= 300")), 70);
    assert_eq!(count(&q("id > 300")), 300);
    assert_eq!(
        r.stats
            .pruned_logs
            .load(std::sync::atomic::Ordering::Relaxed),
        230
    );
    assert!(store.pruned_through().await.unwrap().0 <= 300);
    assert!(store.pruned_through().await.unwrap().0 > 0);
    // No size cap on PostgreSQL: its server bounds its storage.
    assert_eq!(store.db_size().await.unwrap(), None);
}

/// Re-arm windows go in multi-row statements (64 rows each): a commit of more than one
/// statement's worth, then one updating some of them, reads back exactly, on both engines.
#[tokio::test]
async fn sink_windows_round_trip_across_statement_chunks() {
    use decnet::store::{SinkCommit, SinkWindow};
    let window = |i: usize, folded: i64| SinkWindow {
        rule: format!("r{}", i % 3),
        ip: format!("10.1.{}.{}", i / 250, i % 250),
        last_alert_ns: 1_000 + i as i64,
        folded,
        folded_changes: if folded > 0 {
            r#"["tools"]"#.into()
        } else {
            "[]".into()
        },
    };
    let pg = pg::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    for store in [
        Store::connect(&pg.create_db("windows")).await.unwrap(),
        Store::open(&dir.path().join("decnet.db")).await.unwrap(),
    ] {
        let first: Vec<SinkWindow> = (0..150).map(|i| window(i, 0)).collect();
        let c = SinkCommit {
            windows: first.clone(),
            ..SinkCommit::default()
        };
        store.commit_sink("soc", &c).await.unwrap();
        // 70 of them again, folded now: one full statement and a partial one.
        let again: Vec<SinkWindow> = (40..110).map(|i| window(i, 2)).collect();
        let c = SinkCommit {
            windows: again,
            ..SinkCommit::default()
        };
        store.commit_sink("soc", &c).await.unwrap();
        let mut want: Vec<SinkWindow> = (0..150)
            .map(|i| window(i, if (40..110).contains(&i) { 2 } else { 0 }))
            .collect();
        let mut got = store.load_sink("soc").await.unwrap().windows;
        let key = |w: &SinkWindow| (w.rule.clone(), w.ip.clone());
        want.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got, want);
        assert!(store.load_sink("other").await.unwrap().windows.is_empty());
    }
}
