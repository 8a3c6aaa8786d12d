//! Fleet mode end to end: sensor, analyst and API processes sharing one PostgreSQL (a
//! throwaway cluster of the test's own on a unix socket), real XDP on veths, real hping3.
//!
//! - Three sensors, two analysts, one API: an attacker namespace wired to two sensors' decoys
//!   (one source address on both links) is one traversal in its profile; every row carries its
//!   sensor; exactly one analyst profiles; the API's stream carries every row of every sensor
//!   in id order, without a gap.
//! - Failover: the analyst holding the lock is SIGKILLed mid-stream; the standby takes over
//!   (time measured) and the final profiles equal an uninterrupted analyst's over the same rows.
//!   Both analysts have the same webhook sink: only the lock holder delivers, the standby
//!   resumes from the cursor the holder committed, and every detection arrives (at least
//!   once, each repeat carrying the key it had).

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use decnet_tests::{Lab, Proc, free_port, http_get, ip, pg::Postgres, require_root, require_tool};
use serde_json::Value;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("decnet-fleet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_file(d.with_extension("log"));
    d
}

/// One attacker namespace wired to two decoy interfaces on the host, with the same source
/// address on both links: what two decoy sites see of one attacker.
struct TwoSites {
    ns: String,
    links: [String; 2],
    decoys: [&'static str; 2],
    attacker: &'static str,
}

impl TwoSites {
    fn new() -> TwoSites {
        let id = std::process::id() % 100_000;
        let t = TwoSites {
            ns: format!("dnfleet-{id}"),
            links: [format!("dnf{id}a"), format!("dnf{id}b")],
            decoys: ["10.231.36.1", "10.231.37.1"],
            attacker: "10.231.39.2",
        };
        ip(&["netns", "add", &t.ns]);
        ip(&["-n", &t.ns, "link", "set", "lo", "up"]);
        for (link, decoy) in t.links.iter().zip(t.decoys) {
            let peer = format!("{link}n");
            ip(&["link", "add", link, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "netns", &t.ns]);
            ip(&["addr", "add", &format!("{decoy}/32"), "dev", link]);
            ip(&["link", "set", link, "up"]);
            ip(&[
                "-n",
                &t.ns,
                "addr",
                "add",
                &format!("{}/32", t.attacker),
                "dev",
                &peer,
            ]);
            ip(&["-n", &t.ns, "link", "set", &peer, "up"]);
            ip(&[
                "-n",
                &t.ns,
                "route",
                "add",
                &format!("{decoy}/32"),
                "dev",
                &peer,
                "src",
                t.attacker,
            ]);
        }
        ip(&[
            "route",
            "add",
            &format!("{}/32", t.attacker),
            "dev",
            &t.links[0],
        ]);
        t
    }

    /// `count` SYNs from the attacker to decoy `site`.
    fn syns(&self, site: usize, port: u16, count: u32) {
        hping(&self.ns, self.decoys[site], port, count, 5_000);
    }
}

impl Drop for TwoSites {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del", &format!("{}/32", self.attacker)])
            .status();
        for l in &self.links {
            let _ = Command::new("ip").args(["link", "del", l]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// hping3 SYNs from namespace `ns` to `dst`, `gap_us` apart, bounded in time.
fn hping(ns: &str, dst: &str, port: u16, count: u32, gap_us: u32) {
    let out = Command::new("timeout")
        .args(["60", "ip", "netns", "exec", ns, "hping3", "-q", "-S", "-p"])
        .arg(port.to_string())
        .args(["-c", &count.to_string(), "-i", &format!("u{gap_us}"), dst])
        .output()
        .expect("hping3");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "hping3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// `decnet run --role sensor` on `iface` with one decoy; its status API is on `listen`.
fn sensor_at(
    url: &str,
    id: &str,
    iface: &str,
    decoy: &str,
    data: &Path,
    listen: std::net::SocketAddr,
) -> Proc {
    let args = vec![
        s("run"),
        s("--role"),
        s("sensor"),
        s("--store"),
        s(url),
        s("--sensor-id"),
        s(id),
        s("--iface"),
        s(iface),
        s("--decoy"),
        s(decoy),
        s("--data-dir"),
        data.display().to_string(),
        s("--listen"),
        listen.to_string(),
    ];
    let mut p = Proc::spawn(&args, &[], &data.with_extension("log"));
    p.wait_log("API listening", 1, Duration::from_secs(20));
    p
}

fn sensor(url: &str, id: &str, iface: &str, decoy: &str, data: &Path) -> Proc {
    let listen = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    sensor_at(url, id, iface, decoy, data, listen)
}

fn analyst(url: &str, data: &Path) -> Proc {
    analyst_with(url, data, &[])
}

fn analyst_with(url: &str, data: &Path, env: &[(&str, &str)]) -> Proc {
    let args = vec![
        s("run"),
        s("--role"),
        s("analyst"),
        s("--store"),
        s(url),
        s("--data-dir"),
        data.display().to_string(),
    ];
    Proc::spawn(&args, env, &data.with_extension("log"))
}

fn api(url: &str, data: &Path, listen: std::net::SocketAddr) -> Proc {
    let args = vec![
        s("run"),
        s("--role"),
        s("api"),
        s("--store"),
        s(url),
        s("--listen"),
        listen.to_string(),
        s("--data-dir"),
        data.display().to_string(),
    ];
    let mut p = Proc::spawn(&args, &[], &data.with_extension("log"));
    p.wait_log("API listening", 1, Duration::from_secs(20));
    p
}

/// Waits (bounded) until `check` holds of `psql(sql)`'s output.
fn wait_sql(
    pg: &Postgres,
    db: &str,
    sql: &str,
    within: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let out = pg.psql(db, sql);
        if check(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "`{sql}` still {out:?} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the analyst's cursor has reached the last log row and both stay put.
fn wait_profiled(pg: &Postgres, db: &str, within: Duration) -> String {
    let sql = "SELECT (SELECT COALESCE(MAX(id), 0) FROM logs)::text || ' ' || \
               COALESCE((SELECT value FROM state WHERE key = 'attacker_worker_cursor'), '0')";
    let mut last = String::new();
    let mut stable = Instant::now();
    let deadline = Instant::now() + within;
    loop {
        let out = pg.psql(db, sql);
        let (top, cursor) = out.split_once(' ').unwrap_or(("", ""));
        if out != last {
            last = out.clone();
            stable = Instant::now();
        } else if top == cursor && stable.elapsed() >= Duration::from_millis(1500) {
            return top.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "profiles did not catch up: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The log row ids of an SSE transcript, in order.
fn log_ids(text: &str) -> Vec<i64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("event_type").is_some())
        .filter_map(|v| v["id"].as_i64())
        .collect()
}

/// Opens the stream resuming after `last_event_id` and reads until an event id names log
/// `top` (bounded: 10 s).
fn stream_until(api: std::net::SocketAddr, last_event_id: &str, top: &str) -> String {
    let mut sse = std::net::TcpStream::connect(api).expect("connect");
    write!(
        sse,
        "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Last-Event-ID: {last_event_id}\r\n\r\n",
        decnet_tests::API_TOKEN
    )
    .expect("stream request");
    let _ = sse.set_read_timeout(Some(Duration::from_millis(200)));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    let want = format!("id: {top}-");
    while Instant::now() < deadline {
        if let Ok(n) = sse.read(&mut buf) {
            all.extend_from_slice(&buf[..n]);
        }
        if String::from_utf8_lossy(&all).contains(&want) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&all).into_owned();
    assert!(
        text.contains(&want),
        "the resumed stream never reached {top}"
    );
    text
}

#[test]
fn three_sensors_two_analysts_one_api_see_one_traversal() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let pg = Postgres::start();
    let url = pg.create_db("fleet");
    let sites = TwoSites::new();
    let lab = Lab::new(38);
    let dirs: Vec<PathBuf> = ["s1", "s2", "s3", "a1", "a2", "api"]
        .iter()
        .map(|n| dir(n))
        .collect();
    let site_a: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut sensors = vec![
        sensor_at(
            &url,
            "site-a",
            &sites.links[0],
            &format!("{}=alpha", sites.decoys[0]),
            &dirs[0],
            site_a,
        ),
        sensor(
            &url,
            "site-b",
            &sites.links[1],
            &format!("{}=beta", sites.decoys[1]),
            &dirs[1],
        ),
        sensor(
            &url,
            "site-c",
            &lab.host_if,
            &format!("{}=gamma", lab.decoy),
            &dirs[2],
        ),
    ];
    let mut first = analyst(&url, &dirs[3]);
    first.wait_log("analyst lock taken", 1, Duration::from_secs(20));
    let mut second = analyst(&url, &dirs[4]);
    second.wait_log("standing by", 1, Duration::from_secs(20));
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut api_proc = api(&url, &dirs[5], listen);

    // The stream, open before the probes: every row must come through it.
    let mut sse = std::net::TcpStream::connect(listen).expect("connect");
    write!(
        sse,
        "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        decnet_tests::API_TOKEN
    )
    .expect("stream request");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = sse.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = sse.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });
    std::thread::sleep(Duration::from_millis(300));

    sites.syns(0, 22, 20);
    sites.syns(1, 80, 20);
    hping(&lab.ns, &lab.decoy, 443, 20, 5_000);

    // The attacker of both sites: one profile, a traversal across alpha and beta.
    let deadline = Instant::now() + Duration::from_secs(20);
    let profile = loop {
        if let Some((200, body)) =
            http_get(listen, &format!("/api/v1/attackers/{}", sites.attacker))
        {
            let v: Value = serde_json::from_str(&body).expect("profile JSON");
            if v["event_count"] == 40 {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no 40-event profile of {} in 20 s",
            sites.attacker
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(profile["is_traversal"], true, "{profile}");
    let deckies: Vec<&str> = profile["deckies"]
        .as_array()
        .expect("deckies")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        deckies.contains(&"alpha") && deckies.contains(&"beta"),
        "{profile}"
    );
    // Each row says which sensor saw it.
    assert_eq!(
        pg.psql(
            "fleet",
            &format!(
                "SELECT sensor || ':' || COUNT(*) FROM logs WHERE attacker_ip = '{}' \
                 AND event_type = 'tcp_syn' GROUP BY sensor ORDER BY sensor",
                sites.attacker
            )
        ),
        "site-a:20\nsite-b:20"
    );
    let third = wait_sql(
        &pg,
        "fleet",
        &format!(
            "SELECT event_count FROM attackers WHERE ip = '{}'",
            lab.attacker
        ),
        Duration::from_secs(10),
        |o| o == "20",
    );
    assert_eq!(third, "20");
    // Each sensor's own cursor.
    assert_eq!(
        pg.psql(
            "fleet",
            "SELECT key FROM state WHERE key LIKE 'ingest_worker_position%' ORDER BY key"
        ),
        "ingest_worker_position:site-a\ningest_worker_position:site-b\ningest_worker_position:site-c"
    );
    let top = wait_profiled(&pg, "fleet", Duration::from_secs(20));
    // A sensor serves its own status (its kernel and ingest counters), not the data.
    let (code, body) = http_get(site_a, "/api/v1/stats").expect("sensor stats");
    assert_eq!(code, 200, "{body}");
    let st: Value = serde_json::from_str(&body).expect("stats JSON");
    assert!(
        st["kernel"]["events_emitted"].as_u64().unwrap_or(0) >= 20,
        "{st}"
    );
    assert_eq!(
        st["ingest"]["rows"], st["pipeline"]["journal_written"],
        "{st}"
    );
    let (code, health) = http_get(site_a, "/api/v1/health").expect("sensor health");
    assert!(
        code == 200 && health.contains(r#""role":"sensor""#),
        "{health}"
    );
    assert_eq!(
        http_get(site_a, "/api/v1/attackers").map(|(c, _)| c),
        Some(503)
    );
    let stored: Vec<i64> = pg
        .psql("fleet", "SELECT id FROM logs ORDER BY id")
        .lines()
        .map(|l| l.parse().expect("id"))
        .collect();
    // A client resuming with Last-Event-ID replays from the shared database what came
    // after, then goes live: every later row once, in order.
    let mid = stored[stored.len() / 2];
    let resumed = stream_until(listen, &format!("{mid}-0"), &top);
    assert_eq!(
        log_ids(&resumed),
        stored
            .iter()
            .copied()
            .filter(|&i| i > mid)
            .collect::<Vec<_>>(),
        "resumed after {mid}"
    );

    // Stop: sensors, analysts, then the API (its stream ends with a shutdown event).
    for p in &mut sensors {
        assert!(p.stop_with(libc::SIGTERM).success(), "{}", p.log_text());
    }
    assert!(second.stop_with(libc::SIGTERM).success());
    assert!(first.stop_with(libc::SIGTERM).success());
    // One analyst profiled; the other never took the lock.
    assert_eq!(first.log_text().matches("analyst lock taken").count(), 1);
    assert_eq!(second.log_text().matches("analyst lock taken").count(), 0);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        api_proc.stop_with(libc::SIGTERM).success(),
        "{}",
        api_proc.log_text()
    );
    let text = reader.join().expect("stream reader");
    assert!(text.contains("event: shutdown"), "no shutdown event");
    // Every row of every sensor came through the stream, in id order, once.
    assert_eq!(stored.last().map(|l| l.to_string()), Some(top));
    assert_eq!(
        log_ids(&text),
        stored,
        "the stream's log ids are the table's"
    );
    eprintln!(
        "fleet: {} rows from 3 sensors streamed in order; traversal profile {}",
        stored.len(),
        profile["deckies"]
    );
}

/// The profile tables, in a comparable form: states by IP, the attackers' sortable columns
/// and summaries, campaigns. (Detections are left out: they report changes between batches,
/// and a live analyst's batches follow the traffic, not a replay's.)
fn profiles(pg: &Postgres, db: &str) -> String {
    [
        "SELECT ip || ' ' || state FROM attacker_behavior ORDER BY ip",
        "SELECT ip || ' ' || first_seen || ' ' || last_seen || ' ' || event_count || ' ' || class \
         || ' ' || risk_score || ' ' || COALESCE(campaign_id::text, '-') || ' ' || \
         COALESCE(summary, '-') FROM attackers ORDER BY ip",
        "SELECT id || ' ' || summary FROM campaigns ORDER BY id",
    ]
    .iter()
    .map(|q| pg.psql(db, q))
    .collect::<Vec<_>>()
    .join("\n--\n")
}

#[test]
fn killing_the_analyst_hands_over_and_profiles_match_an_uninterrupted_run() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    require_tool("nmap");
    let pg = Postgres::start();
    let url = pg.create_db("failover");
    let lab = Lab::new(40);
    let dirs: Vec<PathBuf> = ["fs", "fa", "fb", "fref"].iter().map(|n| dir(n)).collect();
    let mut sensor_proc = sensor(
        &url,
        "site",
        &lab.host_if,
        &format!("{}=web", lab.decoy),
        &dirs[0],
    );
    // One webhook sink with a rule sending every detection, in both analysts' configuration.
    let hook = decnet_tests::receivers::Webhook::start();
    let config = dir("fleet-alerts.toml");
    std::fs::write(
        &config,
        format!(
            "[[sink]]\nname = \"soc\"\nwebhook = \"http://{}/\"\n\
             [[alert]]\nname = \"all\"\nmin_risk = 0\nrearm_minutes = 0\nsinks = [\"soc\"]\n",
            hook.addr
        ),
    )
    .unwrap();
    let env = [("DECNET_CONFIG", config.to_str().unwrap())];
    let mut holder = analyst_with(&url, &dirs[1], &env);
    holder.wait_log("analyst lock taken", 1, Duration::from_secs(20));
    let mut standby = analyst_with(&url, &dirs[2], &env);
    standby.wait_log("standing by", 1, Duration::from_secs(20));

    // 1,500 SYNs over about 3 s; the holder dies after the first second of them.
    let ns = lab.ns.clone();
    let decoy = lab.decoy.clone();
    let probes = std::thread::spawn(move || hping(&ns, &decoy, 8080, 1500, 2_000));
    std::thread::sleep(Duration::from_secs(1));
    let profiled_before = pg.psql(
        "failover",
        "SELECT COALESCE((SELECT value FROM state WHERE key = 'attacker_worker_cursor'), '0')",
    );
    let killed = Instant::now();
    holder.stop_with(libc::SIGKILL);
    standby.wait_log("analyst lock taken", 1, Duration::from_secs(10));
    let takeover = killed.elapsed();
    probes.join().expect("hping3");
    // A scan after the takeover changes the source's headline (tools, class): detections
    // the standby must deliver, after whatever the holder had sent.
    let out = lab.exec(
        &["nmap", "-sS", "-n", "-Pn", "-p", "1-300", &lab.decoy],
        120,
    );
    assert!(out.status.success(), "nmap failed");
    let top = wait_profiled(&pg, "failover", Duration::from_secs(30));
    // Every detection reaches the webhook, from whichever analyst held the lock.
    let detections: std::collections::BTreeSet<String> = pg
        .psql("failover", "SELECT id FROM detections ORDER BY id")
        .lines()
        .map(|id| format!("decnet:all:{}", id.trim()))
        .collect();
    assert!(!detections.is_empty(), "no detection");
    let keys = |h: &decnet_tests::receivers::Webhook| -> Vec<String> {
        h.requests()
            .iter()
            .filter_map(|r| r.idempotency_key.clone())
            .collect()
    };
    hook.wait(Duration::from_secs(15), "every detection", |got| {
        let got: std::collections::BTreeSet<String> = got
            .iter()
            .filter_map(|r| r.idempotency_key.clone())
            .collect();
        detections.is_subset(&got)
    });
    assert!(sensor_proc.stop_with(libc::SIGTERM).success());
    assert!(standby.stop_with(libc::SIGTERM).success());
    let got = keys(&hook);
    let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
    assert!(
        distinct.iter().all(|k| detections.contains(*k)),
        "a key that names no detection: {got:?}"
    );
    // At least once: what the killed holder sent after its last cursor commit is sent again
    // by the standby (at most a commit interval's worth; never the whole history).
    let repeats = got.len() - distinct.len();
    assert!(
        repeats < detections.len().max(2) / 2 + 1,
        "{repeats} repeats of {} detections",
        detections.len()
    );
    assert_eq!(
        standby.log_text().matches("alert sink: new").count(),
        0,
        "the standby started a new cursor instead of resuming the holder's"
    );
    let rows: i64 = pg
        .psql("failover", "SELECT COUNT(*) FROM logs")
        .parse()
        .expect("count");
    assert!(rows >= 1500, "{rows} rows");
    assert_ne!(
        profiled_before, "0",
        "the first analyst had profiled before it died"
    );

    // The same rows profiled by one analyst that nobody interrupts.
    pg.psql("postgres", "CREATE DATABASE reference TEMPLATE failover");
    pg.psql(
        "reference",
        "DELETE FROM attackers; DELETE FROM attacker_behavior; DELETE FROM campaigns; \
         DELETE FROM detections; DELETE FROM state WHERE key NOT LIKE 'ingest_worker_position%'",
    );
    let reference_url = pg.url("reference");
    let mut reference = analyst(&reference_url, &dirs[3]);
    reference.wait_log("analyst lock taken", 1, Duration::from_secs(20));
    assert_eq!(
        wait_profiled(&pg, "reference", Duration::from_secs(30)),
        top
    );
    assert!(reference.stop_with(libc::SIGTERM).success());

    let (got, want) = (profiles(&pg, "failover"), profiles(&pg, "reference"));
    assert!(got.contains(&lab.attacker), "{got}");
    assert_eq!(
        got, want,
        "profiles after the takeover differ from an uninterrupted run"
    );
    eprintln!(
        "failover: takeover {} ms after SIGKILL (cursor then at {profiled_before}); {rows} rows; \
         profiles equal to an uninterrupted analyst's; {} detections alerted, {repeats} sent \
         twice across the takeover",
        takeover.as_millis(),
        detections.len()
    );
}

/// Waits until the campaign pass of sharded analysts has reached the last log row (every
/// shard has folded it) and every shard has applied every campaign move of its sources,
/// and both stay put.
fn wait_sharded(pg: &Postgres, db: &str, shards: u32, within: Duration) -> String {
    let sql = format!(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM logs)::text || ' ' || \
         COALESCE((SELECT value FROM state WHERE key = 'campaign_cursor'), '0') || ' ' || \
         (SELECT count(*) FROM campaign_moves m WHERE m.seq > COALESCE((SELECT value::bigint \
         FROM state WHERE key = 'campaign_moves_cursor.' || ((hashtext(m.ip) & 2147483647) % {shards}) \
         || 'of{shards}'), 0))::text"
    );
    let mut last = String::new();
    let mut stable = Instant::now();
    let deadline = Instant::now() + within;
    loop {
        let out = pg.psql(db, &sql);
        let parts: Vec<&str> = out.split(' ').collect();
        if out != last {
            last = out.clone();
            stable = Instant::now();
        } else if parts.len() == 3
            && parts[0] == parts[1]
            && parts[2] == "0"
            && stable.elapsed() >= Duration::from_millis(1500)
        {
            return parts[0].to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "sharded profiles did not catch up (top, campaign cursor, moves not applied): {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--analyst-shards 2`: one analyst holds the analyst lock (campaign pass) and a shard,
/// the other the other shard; the first is killed mid-stream, the second takes over its
/// locks, and the final profiles equal one unsharded analyst's over the same rows.
#[test]
fn killing_a_shard_analyst_hands_its_shards_over_and_profiles_match_one_analysts() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    require_tool("nmap");
    let pg = Postgres::start();
    let url = pg.create_db("sharded");
    let lab = Lab::new(44);
    let dirs: Vec<PathBuf> = ["gs", "ga", "gb", "gref"].iter().map(|n| dir(n)).collect();
    let mut sensor_proc = sensor(
        &url,
        "site",
        &lab.host_if,
        &format!("{}=web", lab.decoy),
        &dirs[0],
    );
    let env = [("DECNET_ANALYST_SHARDS", "2")];
    let mut first = analyst_with(&url, &dirs[1], &env);
    // Alone: the analyst lock (campaign pass) and both shards.
    first.wait_log("analyst lock taken", 3, Duration::from_secs(20));
    // A second analyst queues on the shards: the first hands it one.
    let mut second = analyst_with(&url, &dirs[2], &env);
    second.wait_log("analyst lock taken", 1, Duration::from_secs(20));
    first.wait_log("handed over", 1, Duration::from_secs(5));
    // Shard locks a process holds now: taken, less handed over.
    let shards = |p: &Proc| {
        let text = p.log_text();
        let taken = text
            .lines()
            .filter(|l| l.contains("analyst lock taken") && l.contains("duty=shard"))
            .count();
        taken - text.matches("handed over").count()
    };
    assert_eq!(
        (shards(&first), shards(&second)),
        (1, 1),
        "each analyst holds one shard:\n{}\n{}",
        first.log_text(),
        second.log_text()
    );

    let ns = lab.ns.clone();
    let decoy = lab.decoy.clone();
    let probes = std::thread::spawn(move || hping(&ns, &decoy, 8080, 1500, 2_000));
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    first.stop_with(libc::SIGKILL);
    // The second takes the analyst lock and the first's shard (3 locks taken in all; the
    // shard after up to 3 s, as a process holding one lets others go first).
    second.wait_log("analyst lock taken", 3, Duration::from_secs(20));
    let takeover = killed.elapsed();
    probes.join().expect("hping3");
    let out = lab.exec(
        &["nmap", "-sS", "-n", "-Pn", "-p", "1-300", &lab.decoy],
        120,
    );
    assert!(out.status.success(), "nmap failed");
    let top = wait_sharded(&pg, "sharded", 2, Duration::from_secs(30));
    assert!(sensor_proc.stop_with(libc::SIGTERM).success());
    assert!(second.stop_with(libc::SIGTERM).success());
    let rows: i64 = pg
        .psql("sharded", "SELECT COUNT(*) FROM logs")
        .parse()
        .expect("count");
    assert!(rows >= 1500, "{rows} rows");

    // The same rows profiled by one unsharded analyst that nobody interrupts.
    pg.psql("postgres", "CREATE DATABASE unsharded TEMPLATE sharded");
    pg.psql(
        "unsharded",
        "DELETE FROM attackers; DELETE FROM attacker_behavior; DELETE FROM campaigns; \
         DELETE FROM detections; DELETE FROM campaign_moves; \
         DELETE FROM state WHERE key NOT LIKE 'ingest_worker_position%'",
    );
    let mut reference = analyst(&pg.url("unsharded"), &dirs[3]);
    reference.wait_log("analyst lock taken", 1, Duration::from_secs(20));
    assert_eq!(
        wait_profiled(&pg, "unsharded", Duration::from_secs(30)),
        top
    );
    assert!(reference.stop_with(libc::SIGTERM).success());
    let (got, want) = (profiles(&pg, "sharded"), profiles(&pg, "unsharded"));
    assert!(got.contains(&lab.attacker), "{got}");
    assert_eq!(
        got, want,
        "sharded profiles after the takeover differ from one unsharded analyst's"
    );
    eprintln!(
        "shards: takeover {} ms after SIGKILL; {rows} rows; profiles equal to one unsharded \
         analyst's",
        takeover.as_millis()
    );
}

/// Journal lines once the journal has stopped growing for a second (bounded: 15 s). The
/// last probes reach it up to a drain gap and a flush after the tool exits.
fn settled_journal_lines(data: &Path) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = journal_lines(data);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = journal_lines(data);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    last
}

/// Journal lines in a data dir's `events.jsonl`.
fn journal_lines(data: &Path) -> usize {
    std::fs::read_to_string(data.join("events.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_database_outage_is_ridden_out_and_nothing_is_lost_or_doubled() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let mut pg = Postgres::start();
    let url = pg.create_db("outage");
    let lab = Lab::new(41);
    let data = dir("outage");
    let mut sensor_proc = sensor(
        &url,
        "site",
        &lab.host_if,
        &format!("{}=web", lab.decoy),
        &data,
    );
    let count = |pg: &Postgres| -> usize {
        pg.psql("outage", "SELECT COUNT(*) FROM logs")
            .parse()
            .expect("count")
    };
    hping(&lab.ns, &lab.decoy, 22, 200, 2_000);
    let want = settled_journal_lines(&data);
    wait_sql(
        &pg,
        "outage",
        "SELECT COUNT(*) FROM logs",
        Duration::from_secs(10),
        |o| o == want.to_string(),
    );

    // The database goes away while probes keep coming: they are captured and journaled,
    // and their batch waits in memory, retried.
    pg.stop();
    hping(&lab.ns, &lab.decoy, 23, 200, 2_000);
    sensor_proc.wait_log("retrying batch", 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    pg.restart();
    let want = settled_journal_lines(&data);
    assert!(want >= 400, "{want} journal lines");
    wait_sql(
        &pg,
        "outage",
        "SELECT COUNT(*) FROM logs",
        Duration::from_secs(30),
        |o| o == want.to_string(),
    );
    assert_eq!(
        pg.psql(
            "outage",
            "SELECT COUNT(*) - COUNT(DISTINCT (ts, event_type, fields)) FROM logs"
        ),
        "0",
        "a row was committed twice"
    );
    assert_eq!(count(&pg), want);
    assert!(
        sensor_proc.stop_with(libc::SIGTERM).success(),
        "{}",
        sensor_proc.log_text()
    );
    eprintln!("outage: {want} rows, every journal line once, after a database restart");
}
