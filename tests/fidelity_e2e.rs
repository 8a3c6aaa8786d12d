//! Verdicts on traffic as a decoy on the internet receives it: real tools probing from
//! behind a chain of routed namespaces (every hop decrements the TTL), and each case the
//! fidelity issue measured on internet traffic (a spoofed storm, backscatter, a client's
//! stray segments, one page fetch, a SYN scan by a tool decnet does not know) made live
//! with real tools. Expected labels come from what the test sent, not from decnet's rules.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use decnet_tests::{
    ChildGuard, Daemon, Lab, chain::Chain, http_get, ip, require_root, require_tool,
};
use serde_json::Value;

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("decnet-fidelity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A helper process inside network namespace `ns` (the root namespace when empty).
fn spawn_in(ns: &str, args: &[&str]) -> ChildGuard {
    let mut cmd = if ns.is_empty() {
        Command::new(args[0])
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, args[0]]);
        c
    };
    cmd.args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("starting {args:?}: {e}")),
    )
}

/// Waits (bounded) until `path` exists: a helper's sign that it is ready.
fn wait_file(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for a helper to finish, which it must do successfully.
fn wait_exit(child: &mut ChildGuard, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.0.try_wait().expect("wait") {
            assert!(st.success(), "{what} failed: {st}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not finish within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP listener on `addr:port` in namespace `ns` that reads each connection to its end
/// and closes it; it touches `ready` once listening.
fn listener(ns: &str, addr: &str, port: u16, ready: &Path) -> ChildGuard {
    let py = format!(
        "import socket\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{addr}', {port}))\n\
         s.listen(8)\n\
         open('{}', 'w').close()\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   while c.recv(4096):\n\
         \x20       pass\n\
         \x20   c.close()\n",
        ready.display()
    );
    spawn_in(ns, &["python3", "-c", &py])
}

/// `a.b.c.host` for the address `a.b.c.d`.
fn same_prefix(ip: &str, host: u8) -> String {
    let (net, _) = ip.rsplit_once('.').expect("an IPv4 address");
    format!("{net}.{host}")
}

fn kinds(p: &Value) -> BTreeSet<String> {
    p["scan"]["kinds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn nmap_hping3_masscan_and_zmap_from_24_routed_hops_keep_their_verdicts() {
    if !require_root() {
        return;
    }
    for tool in ["nmap", "hping3", "masscan", "zmap"] {
        require_tool(tool);
    }
    let lab = Lab::new(62);
    let chain = Chain::behind(&lab, 24, 62);
    let dir = data_dir("hops");
    let mut daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    // The path works, and is 24 hops long: the decoy's echo reply arrives 24 below its 64.
    let ping = chain.exec(&["hping3", "-1", "-c", "1", &lab.decoy], 20);
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        text.contains("ttl=40"),
        "the decoy's answer crossed 24 routers: {text}"
    );

    chain.exec(
        &["nmap", "-n", "-Pn", "-sS", "-p", "1-300", &lab.decoy],
        120,
    );
    daemon.settle();
    let p = daemon.attacker(&chain.attacker);
    assert_eq!(p["tools"], serde_json::json!(["nmap"]), "{p}");
    assert!(kinds(&p).contains("syn"), "{p}");
    // nmap draws its TTL at random: no hop distance rather than a wrong one.
    assert_eq!(p["hop_distance"], Value::Null, "{p}");
    assert_eq!(p["classification"], "suspicious", "{p}");

    // hping3's TTL is fixed (64): its SYNs give the true distance.
    chain.exec(
        &[
            "hping3", "-c", "5", "-S", "-p", "8080", "-i", "u20000", &lab.decoy,
        ],
        30,
    );
    daemon.settle();
    let deadline = Instant::now() + Duration::from_secs(10);
    let p = loop {
        let p = daemon.attacker(&chain.attacker);
        if p["tools"].as_array().is_some_and(|t| t.len() == 2) {
            break p;
        }
        assert!(Instant::now() < deadline, "hping3 never attributed: {p}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(p["tools"], serde_json::json!(["nmap", "hping3"]), "{p}");
    assert_eq!(p["hop_distance"], 24, "{p}");

    // masscan (TTL 255) and zmap (IP ID 54321) from a second address on the same host:
    // each is attributed by its header relation, and its fixed TTL gives the distance.
    for (tool, alias) in [("masscan", 200u8), ("zmap", 201)] {
        let src = same_prefix(&chain.attacker, alias);
        chain.exec(
            &[
                "ip",
                "addr",
                "add",
                &format!("{src}/32"),
                "dev",
                &chain.attacker_if,
            ],
            10,
        );
        let port = "8443";
        let args: Vec<String> = match tool {
            "masscan" => [
                lab.decoy.as_str(),
                "-p",
                port,
                "--rate",
                "100",
                "--wait",
                "1",
                "--adapter",
                &chain.attacker_if,
                "--adapter-ip",
                &src,
                "--router-mac",
                &chain.gateway_mac,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            _ => [
                "-p",
                port,
                "-i",
                &chain.attacker_if,
                "-S",
                &src,
                "-G",
                &chain.gateway_mac,
                "-b",
                "/dev/null",
                "-P",
                "3",
                "-r",
                "100",
                "-c",
                "1",
                "-o",
                "/dev/null",
                &format!("{}/32", lab.decoy),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        };
        let mut cmd = vec![tool];
        cmd.extend(args.iter().map(String::as_str));
        chain.exec(&cmd, 60);
        daemon.settle();
        let p = daemon.attacker(&src);
        assert_eq!(p["tools"], serde_json::json!([tool]), "{tool}: {p}");
        assert!(kinds(&p).contains("syn"), "{tool}: {p}");
        assert_eq!(p["hop_distance"], 24, "{tool}: {p}");
    }
    daemon.stop();
    drop(chain);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tools(p: &Value) -> Vec<String> {
    p["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A spoofed SYN storm as one reached 38 sensors on the internet: many addresses, one or two
/// SYNs each, three fixed packet templates, one port, spread over three decoys. Each
/// template's addresses are one campaign; none is traversal or above low risk, including
/// those that hit two decoys. The addresses are spoofed inside the lab's own /24, so the
/// decoy's answers go nowhere (nobody answers its ARP for them).
#[test]
fn a_spoofed_storm_is_one_campaign_per_template_at_low_risk() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let lab = Lab::new(63);
    let decoys: Vec<String> = [1u8, 3, 4]
        .iter()
        .map(|h| same_prefix(&lab.decoy, *h))
        .collect();
    for d in &decoys[1..] {
        ip(&["addr", "add", &format!("{d}/32"), "dev", &lab.host_if]);
    }
    let dir = data_dir("storm");
    let named: Vec<String> = decoys
        .iter()
        .enumerate()
        .map(|(i, d)| format!("{d}=sensor{i}"))
        .collect();
    let mut daemon = Daemon::start(&lab.host_if, &named, &dir);
    // (window, TTL): crafted SYNs without options, none of them a known tool's.
    const TEMPLATES: [(u16, u8); 3] = [(5840, 64), (14600, 128), (29200, 255)];
    const SOURCES: usize = 90;
    let mut template_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut two_decoys = BTreeSet::new();
    let mut script = String::new();
    for i in 0..SOURCES {
        let src = same_prefix(&lab.decoy, 10 + i as u8);
        let t = i % TEMPLATES.len();
        let (w, ttl) = TEMPLATES[t];
        let mut to = vec![&decoys[(i / 3) % 3]];
        if i % 5 == 0 {
            to.push(&decoys[(i / 3 + 1) % 3]);
            two_decoys.insert(src.clone());
        }
        for d in to {
            script += &format!(
                "hping3 -q -c 1 -S -p 3389 -w {w} -t {ttl} -a {src} {d} >/dev/null 2>&1 &\n"
            );
        }
        template_of.insert(src, t);
    }
    // hping3 exits non-zero when no answer reaches it, which none does here.
    script += "wait\ntrue\n";
    lab.exec(&["sh", "-c", &script], 60);
    daemon.settle();

    let mut campaign_of: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    for (src, t) in &template_of {
        let p = daemon.attacker(src);
        campaign_of
            .entry(*t)
            .or_default()
            .insert(p["campaign_id"].as_i64().unwrap_or(-1));
        assert_eq!(p["risk"]["band"], "low", "{src}: {p}");
        assert_eq!(p["is_traversal"], false, "{src}: {p}");
        assert_eq!(p["spoofable"], true, "{src}: {p}");
        assert!(tools(&p).is_empty(), "{src}: {p}");
        assert_ne!(p["classification"], "malicious", "{src}: {p}");
        let decks = p["deckies"].as_array().map_or(0, Vec::len);
        let want = if two_decoys.contains(src) { 2 } else { 1 };
        assert_eq!(decks, want, "{src}: {p}");
    }
    // One campaign per template, each its own.
    let ids: BTreeSet<i64> = campaign_of.values().flatten().copied().collect();
    for (t, set) in &campaign_of {
        assert_eq!(set.len(), 1, "template {t} spread over campaigns {set:?}");
        assert!(
            !set.contains(&-1),
            "template {t} has sources in no campaign"
        );
    }
    assert_eq!(ids.len(), TEMPLATES.len(), "{campaign_of:?}");
    for id in ids {
        let (code, body) =
            http_get(daemon.api, &format!("/api/v1/campaigns/{id}")).expect("campaign");
        assert_eq!(code, 200, "{body}");
        let c: Value = serde_json::from_str(&body).expect("campaign JSON");
        assert_eq!(c["kind"], "spoofed_storm", "{c}");
    }
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Backscatter: a server answers SYNs that someone else sent with the decoy's address, as a
/// CDN answers a spoofed attack. Its SYN-ACKs, RSTs and ICMP errors reach the decoy, which
/// sent nothing: that is backscatter at low risk, not a scan.
#[test]
fn a_victims_answers_to_spoofed_probes_are_backscatter() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    require_tool("python3");
    let lab = Lab::new(64);
    // The victim sits two routers away; the spoofer is the first router.
    let chain = Chain::behind(&lab, 2, 64);
    let victim = chain.attacker.clone();
    let dir = data_dir("backscatter");
    std::fs::create_dir_all(&dir).expect("data dir");
    let ready = dir.with_extension("listening");
    let _ = std::fs::remove_file(&ready);
    let _server = listener(chain.attacker_ns(), &victim, 8080, &ready);
    wait_file(&ready, "the victim's listener");
    let mut daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    let d = lab.decoy.as_str();
    let spoof = format!(
        "hping3 -q -c 4 -i u50000 -S -a {d} -p 8080 {victim}; \
         hping3 -q -c 4 -i u50000 -S -a {d} -p 8081 {victim}; \
         hping3 -q -c 2 -i u50000 -2 -a {d} -p 5353 {victim}; true"
    );
    lab.exec(&["sh", "-c", &spoof], 30);
    daemon.settle();
    let p = daemon.attacker(&victim);
    assert!(p["event_count"].as_u64().unwrap_or(0) >= 8, "{p}");
    assert_eq!(p["behavior"]["class"], "backscatter", "{p}");
    assert_eq!(p["risk"]["band"], "low", "{p}");
    assert_eq!(kinds(&p), BTreeSet::new(), "{p}");
    assert!(tools(&p).is_empty(), "{p}");
    assert_ne!(p["classification"], "malicious", "{p}");
    daemon.stop();
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client's connection that began before the sensor started: what the decoy sees of it
/// is keep-alive ACKs and a FIN+ACK without options (timestamps off, as Windows sends
/// them). Those are the tail of a connection, not an ACK or Maimon scan, and not nmap.
#[test]
fn a_connections_stray_segments_are_no_stealth_scan() {
    if !require_root() {
        return;
    }
    require_tool("python3");
    let lab = Lab::new(65);
    let dir = data_dir("strays");
    std::fs::create_dir_all(&dir).expect("data dir");
    let (ready, connected, go) = (
        dir.with_extension("listening"),
        dir.with_extension("connected"),
        dir.with_extension("go"),
    );
    for f in [&ready, &connected, &go] {
        let _ = std::fs::remove_file(f);
    }
    let port = 8443;
    let _server = listener("", &lab.decoy, port, &ready);
    wait_file(&ready, "the decoy's listener");
    lab.exec(&["sysctl", "-qw", "net.ipv4.tcp_timestamps=0"], 10);
    let py = format!(
        "import os, socket, time\n\
         c = socket.create_connection(('{}', {port}))\n\
         c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)\n\
         c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)\n\
         c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)\n\
         open('{}', 'w').close()\n\
         while not os.path.exists('{}'):\n\
         \x20   time.sleep(0.02)\n\
         time.sleep(2.5)\n\
         c.shutdown(socket.SHUT_WR)\n\
         while c.recv(4096):\n\
         \x20   pass\n\
         c.close()\n",
        lab.decoy,
        connected.display(),
        go.display()
    );
    let mut client = spawn_in(&lab.ns, &["python3", "-c", &py]);
    wait_file(&connected, "the client's connection");
    // Only now does the sensor start: the connection's start is never seen.
    let mut daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    std::fs::write(&go, b"").expect("go");
    wait_exit(&mut client, "the client");
    daemon.settle();
    let p = daemon.attacker(&lab.attacker);
    assert!(p["event_count"].as_u64().unwrap_or(0) >= 2, "{p}");
    assert!(tools(&p).is_empty(), "not nmap: {p}");
    assert_eq!(kinds(&p), BTreeSet::new(), "no stealth scan: {p}");
    assert_eq!(p["risk"]["band"], "low", "{p}");
    daemon.stop();
    for f in [&ready, &connected, &go] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One `curl` of the decoy's web page is no command and not medium risk; a SYN scan by a
/// tool decnet does not know (nping) is still a SYN scan, with no tool named.
#[test]
fn a_page_fetch_is_low_risk_and_an_unknown_tools_syn_scan_is_a_syn_scan() {
    if !require_root() {
        return;
    }
    for t in ["python3", "curl", "nping"] {
        require_tool(t);
    }
    let lab = Lab::new(66);
    let dir = data_dir("fetch");
    std::fs::create_dir_all(&dir).expect("data dir");
    let ready = dir.with_extension("listening");
    let _ = std::fs::remove_file(&ready);
    let _server = spawn_in(
        "",
        &[
            "python3",
            "-c",
            &format!(
                "import http.server\n\
                 s = http.server.HTTPServer(('{}', 80), http.server.SimpleHTTPRequestHandler)\n\
                 open('{}', 'w').close()\n\
                 s.serve_forever()\n",
                lab.decoy,
                ready.display()
            ),
        ],
    );
    wait_file(&ready, "the decoy's web server");
    let mut daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    lab.exec(
        &[
            "curl",
            "-sf",
            "-o",
            "/dev/null",
            &format!("http://{}/", lab.decoy),
        ],
        20,
    );
    daemon.settle();
    let p = daemon.attacker(&lab.attacker);
    assert_eq!(p["risk"]["band"], "low", "{p}");
    assert_eq!(p["command_count"], 0, "{p}");
    assert_ne!(p["classification"], "malicious", "{p}");

    // nping from a second address: SYNs to 30 ports, none a known tool's.
    let src = same_prefix(&lab.attacker, 9);
    lab.exec(
        &["ip", "addr", "add", &format!("{src}/24"), "dev", &lab.ns_if],
        10,
    );
    lab.exec(
        &[
            "nping",
            "-q",
            "--tcp",
            "--flags",
            "syn",
            "-p",
            "2000-2029",
            "-c",
            "1",
            "--delay",
            "5ms",
            "-S",
            &src,
            &lab.decoy,
        ],
        60,
    );
    daemon.settle();
    let p = daemon.attacker(&src);
    assert!(tools(&p).is_empty(), "nping is no tool decnet knows: {p}");
    assert!(kinds(&p).contains("syn"), "{p}");
    daemon.stop();
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_dir_all(&dir);
}
