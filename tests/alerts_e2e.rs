//! Alert sinks end to end: a real nmap scan from a namespace, the real daemon, a webhook
//! receiver on loopback, Debian's rsyslog over UDP and TCP, and an ECS file.
//!
//! - One scan under a rule `min_risk = 25` gives exactly one webhook POST, one syslog
//!   message per transport and one ECS line for the source, within 2 s of the detection.
//! - A second scan within `rearm_minutes` gives none.
//! - A sink whose receiver fails is retried with the same idempotency key, shows as
//!   `retrying` in the API, and survives a SIGKILL of the daemon: after the restart it
//!   delivers, and the sinks that had delivered send nothing twice.
//! - A GeoIP database written by MaxMind's writer library puts `asn`, `as_org` and
//!   `country` into profiles, alerts, ECS and both feeds, and is reloaded on SIGHUP (a
//!   broken replacement keeps the one in force).

use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use decnet_tests::{
    Daemon, Lab, free_port, http_get,
    mmdb::{self, Net},
    receivers::{Rsyslog, Webhook},
    require_root, require_tool,
};
use serde_json::Value;

fn posts_for<'a>(
    got: &'a [decnet_tests::receivers::Received],
    ip: &str,
) -> Vec<&'a decnet_tests::receivers::Received> {
    got.iter()
        .filter(|r| r.body["ip"] == ip || r.body["source"]["ip"] == ip)
        .collect()
}

fn syslog_for(r: &Rsyslog, input: &str, ip: &str) -> Vec<Vec<String>> {
    r.messages()
        .into_iter()
        .filter(|m| {
            m[0] == input
                && m.get(4)
                    .is_some_and(|sd| sd.contains(&format!("ip=\"{ip}\"")))
        })
        .collect()
}

#[test]
fn one_scan_one_alert_per_sink_and_nothing_lost_or_repeated_across_a_kill() {
    if !require_root() {
        return;
    }
    for t in ["nmap", "rsyslogd", "hping3", "python3", "mmdblookup"] {
        require_tool(t);
    }
    mmdb::require_writer();
    let dir = tempfile::tempdir().unwrap();
    // The daemon drops to `nobody`, which must reach its data dir below this one.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let syslog_dir = dir.path().join("syslog");
    std::fs::create_dir(&syslog_dir).unwrap();
    // rsyslog also listens for TLS (RFC 5425) with a certificate from a throwaway CA.
    let pki = decnet_tests::certs::Pki::new(&dir.path().join("pki"));
    let rsyslog = Rsyslog::start_tls(&syslog_dir, &pki.server("rsyslog"));
    let soc = Webhook::start();
    let flaky = Webhook::start();
    flaky.answer(503);
    // The daemon drops to `nobody`: the archive directory must be writable by it.
    let archive_dir = dir.path().join("archive");
    std::fs::create_dir(&archive_dir).unwrap();
    std::fs::set_permissions(&archive_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let archive = archive_dir.join("alerts.ndjson");
    let config = dir.path().join("decnet.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[sink]]
name = "soc"
webhook = "http://{soc}/hook/SECRET-PATH-7731"
[[sink]]
name = "siem-udp"
syslog = "udp://127.0.0.1:{udp}"
[[sink]]
name = "siem-tcp"
syslog = "tcp://127.0.0.1:{tcp}"
[[sink]]
name = "siem-tls"
syslog = "tls://127.0.0.1:{tls}"
ca = "{ca}"
[[sink]]
name = "archive"
file = "{archive}"
format = "ecs"
[[sink]]
name = "flaky"
webhook = "http://{flaky}/"

[[alert]]
name = "targeted"
min_risk = 25
sinks = ["soc", "siem-udp", "siem-tcp", "siem-tls", "archive"]
rearm_minutes = 60

[[alert]]
name = "pager"
min_risk = 25
sinks = ["flaky"]
"#,
            soc = soc.addr,
            flaky = flaky.addr,
            udp = rsyslog.udp,
            tcp = rsyslog.tcp,
            tls = rsyslog.tls.unwrap(),
            ca = pki.ca.display(),
            archive = archive.display(),
        ),
    )
    .unwrap();

    let lab = Lab::new(43);
    // One open port on each decoy address: a source that completes a handshake has proved
    // its address, and only such a source goes into the feeds.
    let open = [lab.decoy.clone(), lab.decoy6.clone()].map(|a| {
        let l = std::net::TcpListener::bind((a.as_str(), 80)).expect("listener on the decoy");
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                drop(c)
            }
        });
    });
    let _ = open;
    // A third address of the attacker's namespace completes a handshake too, but is on the
    // allow list; the IPv6 attacker is a known (benign) scanner; a fourth address only
    // ever sends forged SYNs (spoofable).
    let (allowed, forged) = ("10.231.43.3".to_owned(), "10.231.43.4".to_owned());
    lab.exec(
        &[
            "ip",
            "addr",
            "add",
            &format!("{allowed}/24"),
            "dev",
            &lab.ns_if,
        ],
        10,
    );
    let lists = dir.path().join("lists");
    std::fs::create_dir(&lists).unwrap();
    std::fs::write(
        lists.join("known.txt"),
        format!("{},Example Research,research\n", lab.attacker6),
    )
    .unwrap();
    std::fs::write(
        lists.join("allow.txt"),
        format!("# our own scanner\n{allowed}/32,vuln scanner\n"),
    )
    .unwrap();
    // The GeoIP database: the attacker's /24 is AS64500 in NL.
    let geo = lists.join("GeoLite2-test.mmdb");
    let transit = |asn, org, cc| Net {
        cidr: "10.231.43.0/24",
        asn: Some(asn),
        as_org: Some(org),
        country: Some(cc),
    };
    mmdb::write(&geo, &[transit(64500, "Example Transit", "NL")]);
    let seen = mmdb::lookup(&geo, &lab.attacker);
    assert!(seen.contains("64500") && seen.contains("NL"), "{seen}");
    let data = dir.path().join("data");
    let decoys = [format!("{}=web", lab.decoy), format!("{}=web", lab.decoy6)];
    let known = lists.join("known.txt");
    let allow = lists.join("allow.txt");
    let env = [
        ("DECNET_CONFIG", config.to_str().unwrap()),
        ("DECNET_KNOWN_SCANNERS", known.to_str().unwrap()),
        ("DECNET_ALLOW", allow.to_str().unwrap()),
        ("DECNET_GEOIP_DB", geo.to_str().unwrap()),
    ];
    let mut daemon = Daemon::start_with_env(&lab.host_if, &decoys, &data, &env);

    // --- One scan: one message per sink, within 2 s of the detection. ---
    let out = lab.exec(
        &["nmap", "-sS", "-n", "-Pn", "-p", "1-1000", &lab.decoy],
        120,
    );
    assert!(out.status.success(), "nmap failed");
    soc.wait(Duration::from_secs(15), "an alert for the attacker", |g| {
        !posts_for(g, &lab.attacker).is_empty()
    });
    let p = daemon.attacker(&lab.attacker);
    assert!(p["risk"]["score"].as_i64().unwrap() >= 25, "{}", p["risk"]);
    assert_eq!(
        (&p["asn"], &p["as_org"], &p["country"]),
        (
            &serde_json::json!(64500),
            &serde_json::json!("Example Transit"),
            &serde_json::json!("NL")
        ),
        "{p}"
    );
    let posts = soc.requests();
    let mine = posts_for(&posts, &lab.attacker);
    let first = mine[0];
    assert_eq!(first.path, "/hook/SECRET-PATH-7731");
    assert_eq!(first.body["type"], "alert");
    assert_eq!(first.body["rule"], "targeted");
    let key = first
        .idempotency_key
        .clone()
        .expect("Idempotency-Key header");
    assert_eq!(first.body["idempotency_key"], key.as_str());
    assert!(first.body["risk"]["score"].as_i64().unwrap() >= 25);
    assert_eq!(
        first.body["detection"]["deckies"],
        serde_json::json!(["web"])
    );
    assert_eq!(first.body["detection"]["country"], "NL");
    assert_eq!(first.body["detection"]["asn"], 64500);
    // Latency: the detection's commit time to the POST's arrival.
    let detected = parse_ts(first.body["ts"].as_str().unwrap());
    let latency_ms = (first.at_unix_ns - detected) as f64 / 1e6;
    eprintln!("detection -> webhook POST: {latency_ms:.1} ms");
    assert!(latency_ms < 2000.0, "alert took {latency_ms} ms");
    // Syslog (UDP, TCP and TLS), parsed by rsyslog as RFC 5424; and the ECS file.
    let inputs = ["imudp", "imtcp", "imtls"];
    let deadline = Instant::now() + Duration::from_secs(5);
    while inputs
        .iter()
        .any(|i| syslog_for(&rsyslog, i, &lab.attacker).is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for input in inputs {
        let m = syslog_for(&rsyslog, input, &lab.attacker);
        assert_eq!(m.len(), 1, "{input}: {m:?}");
        let m = &m[0];
        assert_eq!(
            (m[1].as_str(), m[2].as_str(), m[3].as_str()),
            ("1", "decnet", "alert"),
            "{m:?}"
        );
        assert!(m[4].starts_with("[decnet@32473 "), "{m:?}");
        assert!(m[4].contains(&format!("key=\"{key}\"")), "{m:?}");
        let body: Value = serde_json::from_str(&m[5]).expect("syslog MSG is the alert JSON");
        assert_eq!(body["idempotency_key"], key.as_str());
    }
    let ecs = wait_lines(&archive, 1);
    let doc: Value = serde_json::from_str(&ecs[0]).unwrap();
    assert_eq!(doc["event"]["kind"], "alert");
    assert_eq!(doc["source"]["ip"], lab.attacker.as_str());
    assert_eq!(doc["related"]["ip"][0], lab.attacker.as_str());
    assert_eq!(doc["event"]["id"], key.as_str());
    assert_eq!(doc["source"]["as"]["number"], 64500, "{doc}");
    assert_eq!(
        doc["source"]["as"]["organization"]["name"],
        "Example Transit"
    );
    assert_eq!(doc["source"]["geo"]["country_iso_code"], "NL");

    // --- The failing sink: retried with one key, and shown as retrying. ---
    flaky.wait(Duration::from_secs(10), "three failed attempts", |g| {
        g.len() >= 3
    });
    let tries = flaky.requests();
    let flaky_key = tries[0].idempotency_key.clone().unwrap();
    assert!(
        tries
            .iter()
            .all(|r| r.idempotency_key.as_deref() == Some(&flaky_key))
    );
    let health = daemon.health();
    let sink = |h: &Value, name: &str| -> Value {
        h["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(sink(&health, "flaky")["state"], "retrying", "{health}");
    assert!(
        sink(&health, "flaky")["lag"].as_i64().unwrap() >= 1,
        "{health}"
    );
    assert_eq!(
        sink(&health, "flaky")["last_error"],
        "HTTP 503 Service Unavailable"
    );
    assert_eq!(sink(&health, "soc")["state"], "ok");
    assert_eq!(
        sink(&health, "soc")["target"],
        format!("http://{}/***", soc.addr)
    );
    let (_, metrics) = http_get(daemon.api, "/metrics").unwrap();
    assert!(
        metrics.contains("decnet_sink_retrying{sink=\"flaky\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("decnet_sink_delivered_total{sink=\"soc\"} "),
        "{metrics}"
    );
    assert!(
        !daemon.log_text().contains("SECRET-PATH"),
        "a secret reached the log"
    );
    assert!(!health.to_string().contains("SECRET-PATH"));

    // --- SIGKILL while the alert is undelivered; the receiver recovers; restart. ---
    daemon.stop_with(libc::SIGKILL);
    flaky.answer(200);
    let soc_before = soc.requests().len();
    let syslog_before = rsyslog.messages().len();
    let mut daemon = Daemon::start_at(
        &decnet_tests::decnet_bin(),
        &lab.host_if,
        &decoys,
        &data,
        &env,
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    flaky.wait(
        Duration::from_secs(15),
        "the delivery after the restart",
        |g| g.iter().any(|r| r.status == 200),
    );
    let ok: Vec<_> = flaky
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .collect();
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].idempotency_key.as_deref(), Some(flaky_key.as_str()));

    // --- A second scan within the re-arm window: nothing new anywhere. ---
    let out = lab.exec(
        &["nmap", "-sS", "-n", "-Pn", "-p", "1-1000", &lab.decoy],
        120,
    );
    assert!(out.status.success(), "nmap failed");
    daemon.settle();
    daemon.attacker(&lab.attacker);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(soc.requests().len(), soc_before, "{:?}", soc.requests());
    assert_eq!(
        rsyslog.messages().len(),
        syslog_before,
        "{:?}",
        rsyslog.messages()
    );
    assert_eq!(wait_lines(&archive, 1).len(), 1);
    assert_eq!(
        flaky.requests().iter().filter(|r| r.status == 200).count(),
        1
    );
    let health = daemon.health();
    assert_eq!(sink(&health, "flaky")["state"], "ok", "{health}");
    assert_eq!(sink(&health, "soc")["lag"], 0, "{health}");

    // --- Feeds. ---
    // The attacker completes a handshake (no longer spoofable); so do the known scanner
    // and the allow-listed address; the forged source never can.
    let connect = |src: &str, dst: &str| {
        let py = format!(
            "import socket;s=socket.socket(socket.AF_INET6 if ':' in '{dst}' else socket.AF_INET);\
             s.bind(('{src}',0));s.connect(('{dst}',80));s.close()"
        );
        let out = lab.exec(&["python3", "-c", &py], 20);
        assert!(out.status.success(), "connect {src} -> {dst}: {out:?}");
    };
    connect(&lab.attacker, &lab.decoy);
    connect(&lab.attacker6, &lab.decoy6);
    connect(&allowed, &lab.decoy);
    lab.exec(
        &["nmap", "-sS", "-n", "-Pn", "-p", "1-200", &lab.decoy6],
        60,
    );
    lab.exec(
        &[
            "nmap", "-sS", "-n", "-Pn", "-p", "1-200", "-S", &allowed, "-e", &lab.ns_if, &lab.decoy,
        ],
        60,
    );
    // hping3 exits 1 when nothing answers, as nothing does a forged address.
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", &lab.ns, "timeout", "20", "hping3", "-S", "-c", "5",
        ])
        .args(["-i", "u20000", "-p", "++1", "-a", &forged, &lab.decoy])
        .output()
        .expect("hping3");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("5 packets transmitted"),
        "hping3: {out:?}"
    );
    daemon.settle();
    for ip in [&lab.attacker, &lab.attacker6, &allowed, &forged] {
        daemon.attacker(ip);
    }
    let get = |path: &str| -> String {
        let (code, body) = http_get(daemon.api, path).expect(path);
        assert_eq!(code, 200, "{path}: {body}");
        body
    };
    let json: Value =
        serde_json::from_str(&get("/api/v1/export/blocklist?min_risk=0&format=json")).unwrap();
    let listed: Vec<&str> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&lab.attacker.as_str()), "{json}");
    let mine = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ip"] == lab.attacker.as_str())
        .unwrap();
    assert_eq!(
        (&mine["asn"], &mine["country"]),
        (&serde_json::json!(64500), &serde_json::json!("NL")),
        "{mine}"
    );
    for out in [&lab.attacker6, &allowed, &forged] {
        assert!(!listed.contains(&out.as_str()), "{out} listed: {json}");
    }
    assert!(json["excluded"]["benign"].as_u64().unwrap() >= 1, "{json}");
    assert!(json["excluded"]["allowed"].as_u64().unwrap() >= 1, "{json}");
    assert!(
        json["excluded"]["spoofable"].as_u64().unwrap() >= 1,
        "{json}"
    );
    let txt = get("/api/v1/export/blocklist?min_risk=25");
    assert!(
        txt.lines()
            .any(|l| l.starts_with(&format!("{} # expires=", lab.attacker))),
        "{txt}"
    );
    let csv = get("/api/v1/export/blocklist?min_risk=25&format=csv");
    assert!(csv.starts_with("ip,expires,risk,"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{},", lab.attacker))),
        "{csv}"
    );
    let (code, body) = http_get(daemon.api, "/api/v1/export/blocklist?min_risk=101").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("min_risk"), "{body}");
    // STIX 2.1, checked by the official validator.
    let stix = get("/api/v1/export/stix?min_risk=0");
    let bundle: Value = serde_json::from_str(&stix).unwrap();
    assert_eq!(bundle["type"], "bundle");
    let patterns: Vec<&str> = bundle["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "indicator")
        .map(|o| o["pattern"].as_str().unwrap())
        .collect();
    assert!(
        patterns.contains(&format!("[ipv4-addr:value = '{}']", lab.attacker).as_str()),
        "{patterns:?}"
    );
    assert!(!stix.contains(&forged) && !stix.contains(&allowed) && !stix.contains(&lab.attacker6));
    let objects = bundle["objects"].as_array().unwrap();
    let asys = objects
        .iter()
        .find(|o| o["type"] == "autonomous-system")
        .expect("an autonomous-system object");
    assert_eq!(
        (&asys["number"], &asys["name"]),
        (
            &serde_json::json!(64500),
            &serde_json::json!("Example Transit")
        )
    );
    let addr = objects
        .iter()
        .find(|o| o["type"] == "ipv4-addr" && o["value"] == lab.attacker.as_str())
        .unwrap();
    assert_eq!(addr["belongs_to_refs"][0], asys["id"], "{addr}");
    let file = dir.path().join("bundle.json");
    std::fs::write(&file, &stix).unwrap();
    match std::process::Command::new("stix2_validator")
        .arg("--strict")
        .arg(&file)
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "stix2_validator rejected the bundle:\n{text}\n{stix}"
            );
            eprintln!(
                "stix2_validator --strict: {}",
                text.lines().last().unwrap_or("")
            );
        }
        Err(e) => panic!("stix2_validator is not installed (pip install stix2-validator): {e}"),
    }

    // --- SIGHUP: a new database is read (profiles follow at once); a broken one is not. ---
    mmdb::write(&geo, &[transit(64502, "Other Net", "SE")]);
    let hup = |d: &Daemon| {
        // SAFETY: plain kill(2) on the daemon this test started.
        unsafe { libc::kill(d.pid(), libc::SIGHUP) };
    };
    hup(&daemon);
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.attacker(&lab.attacker)["asn"] != 64502 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the GeoIP database"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(daemon.attacker(&lab.attacker)["country"], "SE");
    std::fs::write(&geo, b"truncated by a failed download").unwrap();
    hup(&daemon);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log_text().contains("GeoIP databases not reloaded") {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        daemon.log_text().contains("GeoLite2-test.mmdb"),
        "the log names the file"
    );
    assert_eq!(
        daemon.attacker(&lab.attacker)["asn"],
        64502,
        "the loaded one stays"
    );
    daemon.stop();

    // --- The backfill: `decnet export` of the stopped daemon's database, as ECS. ---
    let export = |args: &[&str]| {
        std::process::Command::new(decnet_tests::decnet_bin())
            .arg("export")
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .expect("decnet export")
    };
    let out = export(&["--format", "ecs", "--since", "1d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one ECS document per line"))
        .collect();
    let probes: Vec<&Value> = docs
        .iter()
        .filter(|d| d["event"]["kind"] == "event")
        .collect();
    let alerts: Vec<&Value> = docs
        .iter()
        .filter(|d| d["event"]["kind"] == "alert")
        .collect();
    assert!(probes.len() > 1000, "{} probe documents", probes.len());
    assert!(!alerts.is_empty());
    let syn = probes
        .iter()
        .find(|d| d["event"]["action"] == "tcp_syn" && d["source"]["ip"] == lab.attacker.as_str())
        .expect("a SYN of the attacker");
    assert_eq!(syn["destination"]["ip"], lab.decoy.as_str());
    assert_eq!(syn["network"]["transport"], "tcp");
    assert!(syn["destination"]["port"].as_u64().is_some());
    assert_eq!(syn["related"]["ip"][1], lab.decoy.as_str());
    assert!(
        alerts
            .iter()
            .any(|a| a["threat"]["indicator"]["ip"] == lab.attacker.as_str())
    );
    let json = export(&["--what", "detections"]);
    let lines = String::from_utf8_lossy(&json.stdout).lines().count();
    assert_eq!(lines, alerts.len(), "the same detections in both formats");
    let bad = export(&["--since", "last week"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since `last week`"));
    let nowhere = std::process::Command::new(decnet_tests::decnet_bin())
        .args(["export", "--data-dir", "/nonexistent/decnet"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("no database there"));
}

/// RFC 3339 with nanoseconds (what decnet writes) to Unix ns.
fn parse_ts(s: &str) -> i64 {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", s, "+%s%N"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("date +%s%N")
}

/// The file's lines once it has at least `n` (bounded wait).
fn wait_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_geoip_database_that_does_not_load_is_named_by_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("GeoLite2-ASN.mmdb");
    std::fs::write(&bad, b"<html>rate limited</html>").unwrap();
    let out = std::process::Command::new(decnet_tests::decnet_bin())
        .args(["check-config", "--iface", "lo", "--decoy", "10.0.0.1"])
        .arg("--geoip-db")
        .arg(&bad)
        .output()
        .expect("check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(
        err.contains("GeoIP database") && err.contains("GeoLite2-ASN.mmdb"),
        "{err}"
    );
}
