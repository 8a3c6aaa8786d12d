//! The incremental profiler against a real SQLite file.

use decnet::{
    profile::Profiler,
    store::{Batch, NewLog, Store},
};

fn rows(n: usize) -> Vec<NewLog> {
    let mut s: u64 = 0x853c49e6748fea9b;
    let mut next = move |m: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % m
    };
    let mut t: i64 = 1_795_723_674_000_000_000;
    (0..n)
        .map(|i| {
            // Mostly forward in time, sometimes a little backwards (another writer's clock).
            t += next(3_000_000_000) as i64 - 200_000_000;
            let ip = format!("10.1.{}.{}", next(4), next(50));
            let (et, fields) = match next(6) {
                0 => (
                    "tcp_probe",
                    format!(
                        r#"{{"dst_port":{},"flags":"FPU","probe":"xmas","window":1024}}"#,
                        next(1000)
                    ),
                ),
                1 => (
                    "udp_probe",
                    format!(r#"{{"dst_port":{},"payload_len":10}}"#, next(200)),
                ),
                _ => (
                    "tcp_syn",
                    format!(
                        r#"{{"dst_port":{},"flags":"S","window":1024,"ttl":{},"options":"M1460"}}"#,
                        next(1000),
                        40 + next(10)
                    ),
                ),
            };
            NewLog {
                ts: decnet::timefmt::rfc3339_ns(t),
                decky: format!("decky-{}", next(3)),
                service: format!("svc{}", i % 5),
                event_type: et.into(),
                attacker_ip: ip,
                fields,
                trace_id: None,
                span_id: None,
            }
        })
        .collect()
}

async fn store_with(dir: &std::path::Path, logs: &[NewLog]) -> Store {
    let store = Store::open(&dir.join("decnet.db")).await.unwrap();
    for chunk in logs.chunks(5000) {
        store
            .commit_batch(&Batch {
                logs: chunk.to_vec(),
                ..Batch::default()
            })
            .await
            .unwrap();
    }
    store
}

#[tokio::test]
async fn restarts_after_random_batches_give_the_same_profiles() {
    let logs = rows(20_000);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let one = store_with(a.path(), &logs).await;
    let many = store_with(b.path(), &logs).await;
    assert_eq!(Profiler::new(one.clone()).catch_up().await.unwrap(), 20_000);
    let mut done = 0;
    let mut k = 1;
    while done < 20_000 {
        // A fresh profiler each time: nothing survives but the database.
        done += Profiler::new(many.clone()).step(k).await.unwrap();
        k = k % 7 + 1;
    }
    let sa = one.all_behaviors().await.unwrap();
    let sb = many.all_behaviors().await.unwrap();
    assert_eq!(sa.len(), 200);
    assert_eq!(sa, sb, "streaming states differ after restarts");
    for ip in sa.keys() {
        assert_eq!(
            one.attacker_profile(ip).await.unwrap(),
            many.attacker_profile(ip).await.unwrap()
        );
    }
    // New rows are absorbed incrementally on top.
    let more = rows(600);
    for s in [&one, &many] {
        s.commit_batch(&Batch {
            logs: more.clone(),
            ..Batch::default()
        })
        .await
        .unwrap();
        assert_eq!(Profiler::new(s.clone()).catch_up().await.unwrap(), 600);
    }
    assert_eq!(
        one.all_behaviors().await.unwrap(),
        many.all_behaviors().await.unwrap()
    );
}

#[tokio::test]
async fn profile_fields() {
    let d = tempfile::tempdir().unwrap();
    let mk = |decky: &str, port: u16, et: &str, fields: &str, t: i64| NewLog {
        ts: decnet::timefmt::rfc3339_ns(1_795_723_674_000_000_000 + t * 100_000_000),
        decky: decky.into(),
        service: format!("tcp/{port}"),
        event_type: et.into(),
        attacker_ip: "10.9.9.9".into(),
        fields: fields.replace("PORT", &port.to_string()),
        trace_id: None,
        span_id: None,
    };
    let mut logs = vec![];
    for p in 1..=20u16 {
        logs.push(mk(
            "web",
            p,
            "tcp_syn",
            r#"{"dst_port":PORT,"flags":"S","window":1024,"ttl":52,"options":"M1460","df":false}"#,
            p as i64,
        ));
    }
    logs.push(mk(
        "db",
        5432,
        "tcp_probe",
        r#"{"dst_port":PORT,"flags":"FPU","probe":"xmas","window":1024}"#,
        30,
    ));
    let store = store_with(d.path(), &logs).await;
    Profiler::new(store.clone()).catch_up().await.unwrap();
    let p: serde_json::Value =
        serde_json::from_str(&store.attacker_profile("10.9.9.9").await.unwrap().unwrap()).unwrap();
    assert_eq!(p["event_count"], 21);
    assert_eq!(p["deckies"], serde_json::json!(["web", "db"]));
    assert_eq!(p["is_traversal"], true);
    assert_eq!(p["scan"]["kinds"], serde_json::json!(["syn", "xmas"]));
    assert_eq!(p["scan"]["pattern"], "mixed");
    assert_eq!(p["behavior"]["class"], "scanning");
    // nmap draws the TTL of its raw packets at random: they give no hop distance, and being
    // crafted, no OS guess.
    assert_eq!(p["hop_distance"], serde_json::Value::Null);
    assert_eq!(p["os_guess"], serde_json::Value::Null);
    assert_eq!(p["tcp_fingerprint"], "64:1024:M1460:");
    let timing = &p["behavior"]["timing"];
    // 19 gaps of 0.1 s and one of 1.0 s.
    assert!(
        (timing["mean_iat_s"].as_f64().unwrap() - 0.145).abs() < 1e-9,
        "{timing}"
    );
    assert_eq!(timing["median_iat_s"], 0.1);
    assert_eq!(timing["max_iat_s"], 1.0);
    assert!((timing["duration_s"].as_f64().unwrap() - 2.9).abs() < 1e-9);
}
