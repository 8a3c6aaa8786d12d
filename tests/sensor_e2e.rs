//! End-to-end: real scanners in a namespace made by the test, the real decnet binary
//! attached to the host end, assertions on the journal and on the counters.

use std::collections::{BTreeMap, BTreeSet};

use decnet_tests::{
    Bpffs, ChildGuard, Daemon, Lab, link_exists, netns_exists, read_journal, require_root,
    require_tool,
};
use serde_json::Value;

/// Records written since the last call.
struct Journal<'a> {
    daemon: &'a Daemon,
    seen: usize,
}

impl Journal<'_> {
    fn next_phase(&mut self) -> Vec<Value> {
        self.daemon.settle();
        let all = read_journal(&self.daemon.journal_path());
        let new = all[self.seen..].to_vec();
        self.seen = all.len();
        new
    }
}

fn field<'a>(r: &'a Value, k: &str) -> &'a Value {
    &r["fields"][k]
}

fn from<'a>(recs: &'a [Value], attacker: &str, event_type: &str) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| r["attacker_ip"] == attacker && r["event_type"] == event_type)
        .collect()
}

fn ports(recs: &[&Value]) -> BTreeSet<u64> {
    recs.iter()
        .map(|r| field(r, "dst_port").as_u64().expect("dst_port"))
        .collect()
}

#[test]
fn real_scanners_produce_exact_records_and_counters_balance() {
    if !require_root() {
        return;
    }
    for t in ["nmap", "hping3", "masscan", "ip"] {
        require_tool(t);
    }
    let lab = Lab::new(11);
    let dir = tempfile_dir("scanners");
    // A second IPv4 decoy on the same interface, for the traversal case.
    let db = same_subnet(&lab.decoy, 4);
    let out = std::process::Command::new("ip")
        .args(["addr", "add", &format!("{db}/24"), "dev", &lab.host_if])
        .output()
        .expect("ip addr add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut daemon = Daemon::start(
        &lab.host_if,
        &[
            format!("{}=web", lab.decoy),
            format!("{}=web6", lab.decoy6),
            format!("{db}=db"),
        ],
        &dir,
    );
    let mut j = Journal {
        daemon: &daemon,
        seen: 0,
    };
    let a = lab.attacker.as_str();
    let d = lab.decoy.as_str();

    // nmap -sS: one SYN per port (closed ports answer RST, so no retries), window 1024,
    // options exactly MSS 1460, a raw-packet TTL and one source port for the whole run.
    lab.exec(&["nmap", "-n", "-Pn", "-sS", "-p", "1-200", d], 120);
    let recs = j.next_phase();
    let syns = from(&recs, a, "tcp_syn");
    assert_eq!(
        ports(&syns),
        (1..=200).collect(),
        "every scanned port appears as tcp_syn"
    );
    for r in &syns {
        assert_eq!(r["decky"], "web");
        assert_eq!(field(r, "flags"), "S");
        assert_eq!(field(r, "options"), "M1460", "{r}");
        assert_eq!(field(r, "options_hex"), "020405b4");
        assert_eq!(field(r, "mss"), 1460);
        assert_eq!(field(r, "dst_ip"), d);
        let w = field(r, "window").as_u64().unwrap();
        assert!([1024, 2048, 3072, 4096].contains(&w), "nmap window {w}");
        assert!(chrono_like(r["ts"].as_str().unwrap()), "ts {}", r["ts"]);
        // Passive fingerprint (SIGNATURES.md): initial TTL 64, window, MSS 1460 only, no DF;
        // the nmap trait; no OS guess and no hop count from a TTL nmap drew at random.
        assert_eq!(
            field(r, "fingerprint"),
            format!("64:{w}:M1460:").as_str(),
            "{r}"
        );
        assert_eq!(field(r, "traits"), &serde_json::json!(["nmap"]), "{r}");
        assert!(
            field(r, "os_guess").is_null() && field(r, "hops").is_null(),
            "{r}"
        );
    }
    let w1024 = syns.iter().filter(|r| field(r, "window") == 1024).count();
    assert!(
        w1024 * 10 >= syns.len() * 9,
        "nmap -sS SYNs use window 1024 ({w1024}/{})",
        syns.len()
    );
    let ttls: BTreeSet<_> = syns
        .iter()
        .map(|r| field(r, "ttl").as_u64().unwrap())
        .collect();
    // Measured with Debian's nmap 7.93: the TTL is drawn from 37..=59 per packet, not per
    // run as SIGNATURES.md suggests; both fit this range check.
    assert!(
        ttls.iter().all(|t| (37..=59).contains(t)),
        "nmap raw-packet TTLs: {ttls:?}"
    );
    let sports: BTreeSet<_> = syns
        .iter()
        .map(|r| field(r, "src_port").as_u64().unwrap())
        .collect();
    assert!(
        sports.len() <= 2,
        "nmap -sS reuses its source port: {sports:?}"
    );
    assert_eq!(syns.iter().filter(|r| r["service"] == "ssh").count(), 1);

    // Stealth scans: every probe is a tcp_probe with the exact flags.
    for (flag, probe, flags) in [
        ("-sF", "fin", "F"),
        ("-sN", "null", ""),
        ("-sX", "xmas", "FPU"),
        ("-sA", "ack", "A"),
    ] {
        lab.exec(&["nmap", "-n", "-Pn", flag, "-p", "20-30", d], 120);
        let recs = j.next_phase();
        let probes = from(&recs, a, "tcp_probe");
        assert_eq!(
            ports(&probes),
            (20..=30).collect(),
            "{flag}: every port probed"
        );
        for r in &probes {
            assert_eq!(field(r, "probe"), probe, "{flag}: {r}");
            assert_eq!(field(r, "flags"), flags, "{flag}: {r}");
        }
        assert!(from(&recs, a, "tcp_syn").is_empty(), "{flag} sends no SYN");
    }

    // UDP: nmap sends protocol payloads to 53 and 161.
    lab.exec(&["nmap", "-n", "-Pn", "-sU", "-p", "53,161", d], 120);
    let recs = j.next_phase();
    let udp = from(&recs, a, "udp_probe");
    assert_eq!(ports(&udp), [53, 161].into());
    for r in &udp {
        assert_eq!(field(r, "proto"), "udp");
        assert!(
            field(r, "payload_len").as_u64().unwrap() > 0,
            "nmap -sU carries a payload: {r}"
        );
        assert!(field(r, "payload_b64").is_string());
    }
    assert!(
        udp.iter().any(|r| r["service"] == "snmp") && udp.iter().any(|r| r["service"] == "dns")
    );

    // hping3 -S: exactly 5 SYNs, window 512, no options, source port +1 per packet.
    lab.exec(
        &["hping3", "-S", "-c", "5", "-i", "u100000", "-p", "80", d],
        60,
    );
    let recs = j.next_phase();
    let syns = from(&recs, a, "tcp_syn");
    assert_eq!(syns.len(), 5, "{syns:?}");
    let mut sp: Vec<u64> = syns
        .iter()
        .map(|r| field(r, "src_port").as_u64().unwrap())
        .collect();
    sp.sort();
    assert!(
        sp.windows(2).all(|w| w[1] == w[0] + 1),
        "hping3 source ports increment: {sp:?}"
    );
    for r in &syns {
        assert_eq!(field(r, "window"), 512);
        assert_eq!(field(r, "options"), "");
        assert!(field(r, "options_hex").is_null());
        assert_eq!(field(r, "ttl"), 64);
        assert_eq!(field(r, "dst_port"), 80);
        assert_eq!(r["service"], "http");
        // Measured here: hping3 3.0.0a2 puts a random ack number on its SYNs (p0f's `ack+`).
        assert_eq!(field(r, "fingerprint"), "64:512::ack+", "{r}");
        assert_eq!(field(r, "traits"), &serde_json::json!(["hping3"]), "{r}");
        assert_eq!(field(r, "hops"), 0, "{r}");
        assert!(
            field(r, "os_guess").is_null(),
            "crafted SYNs say nothing of the OS: {r}"
        );
    }

    // masscan: TTL 255, window 1024, no options, and its IP ID tell
    // (dst_ip ^ dst_port ^ seq) & 0xffff on every probe.
    let mac = lab.host_mac();
    lab.exec(
        &[
            "masscan",
            d,
            "-p1-20",
            "--rate",
            "2000",
            "--wait",
            "1",
            "--adapter",
            &lab.ns_if,
            "--adapter-ip",
            a,
            "--router-mac",
            &mac,
        ],
        60,
    );
    let recs = j.next_phase();
    let syns = from(&recs, a, "tcp_syn");
    assert_eq!(
        ports(&syns),
        (1..=20).collect(),
        "masscan probes every port"
    );
    let dst: u32 = d.parse::<std::net::Ipv4Addr>().unwrap().into();
    for r in &syns {
        assert_eq!(field(r, "ttl"), 255, "{r}");
        assert_eq!(field(r, "window"), 1024, "{r}");
        assert_eq!(field(r, "options"), "", "{r}");
        assert_eq!(field(r, "df"), false);
        let (port, seq) = (
            field(r, "dst_port").as_u64().unwrap() as u32,
            field(r, "seq").as_u64().unwrap() as u32,
        );
        assert_eq!(
            field(r, "ip_id").as_u64().unwrap() as u32,
            (dst ^ port ^ seq) & 0xffff,
            "masscan IP ID: {r}"
        );
        assert_eq!(field(r, "fingerprint"), "255:1024::", "{r}");
        assert_eq!(field(r, "traits"), &serde_json::json!(["masscan"]), "{r}");
        assert_eq!(field(r, "hops"), 0, "{r}");
    }

    // IPv6 SYN scan reaches the IPv6 decoy.
    lab.exec(
        &["nmap", "-6", "-n", "-Pn", "-sS", "-p", "20-30", &lab.decoy6],
        120,
    );
    let recs = j.next_phase();
    let syns6 = from(&recs, &lab.attacker6, "tcp_syn");
    assert_eq!(ports(&syns6), (20..=30).collect());
    assert!(
        syns6
            .iter()
            .all(|r| r["decky"] == "web6" && field(r, "dst_ip") == lab.decoy6.as_str())
    );

    // Two more sources, each from its own address in the attacker namespace: one touches
    // both decoys (traversal), one makes a single ordinary connection attempt (benign).
    let (walker, benign) = (same_subnet(&lab.attacker, 3), same_subnet(&lab.attacker, 5));
    for extra in [&walker, &benign] {
        lab.exec(
            &[
                "ip",
                "addr",
                "add",
                &format!("{extra}/24"),
                "dev",
                &lab.ns_if,
            ],
            10,
        );
    }
    let connect = |src: &str, dst: &str, port: u16| {
        let py = format!(
            "import socket\ns=socket.socket()\ns.bind(('{src}',0))\ns.settimeout(2)\ntry: s.connect(('{dst}',{port}))\nexcept OSError: pass"
        );
        lab.exec(&["python3", "-c", &py], 20);
    };
    connect(&walker, &db, 80);
    connect(&walker, d, 80);
    connect(&benign, d, 443);
    let recs = j.next_phase();
    // A SYN of the host's own stack: no scanner trait, an OS guess, hops 0 on this link.
    let own = from(&recs, &benign, "tcp_syn");
    assert!(!own.is_empty(), "benign connect() SYN");
    for r in own {
        assert_eq!(field(r, "traits"), &serde_json::json!([]), "{r}");
        assert_eq!(field(r, "hops"), 0, "{r}");
        let os = field(r, "os_guess").as_str().unwrap_or("");
        assert!(os.starts_with("Linux"), "{r}");
    }

    // The books balance: kernel emitted == journal written + counted drops, and the file
    // holds exactly the lines the writer says it wrote.
    let s = daemon.settle();
    let k = &s["kernel"];
    let p = &s["pipeline"];
    // (Userspace sweeps add flood-guard and flow summaries of their own.)
    let emitted = k["events_emitted"].as_u64().unwrap()
        + p["summaries_swept"].as_u64().unwrap()
        + p["flows_swept"].as_u64().unwrap();
    let written = p["journal_written"].as_u64().unwrap();
    let dropped = p["channel_full_dropped"].as_u64().unwrap()
        + p["journal_write_failed"].as_u64().unwrap()
        + p["decode_errors"].as_u64().unwrap();
    assert_eq!(
        emitted,
        written + dropped + p["summaries_merged"].as_u64().unwrap(),
        "{s}"
    );
    assert_eq!(p["ring_read"], k["events_emitted"]);
    assert_eq!(k["ring_reserve_failed"], 0, "{s}");
    assert_eq!(dropped, 0, "nothing dropped at this rate: {s}");
    assert_eq!(k["malformed"], 0);
    let all = read_journal(&daemon.journal_path());
    assert_eq!(all.len() as u64, written);
    // Every journal line reached SQLite exactly once, none dead-lettered.
    assert_eq!(s["ingest"]["rows"].as_u64().unwrap(), written, "{s}");
    assert_eq!(s["ingest"]["dead_letters"], 0, "{s}");
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for r in &all {
        *by_type
            .entry(r["event_type"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    eprintln!("journal: {by_type:?}; stats: {s}");

    // The attacker's profile: every scan kind it used, one decoy, a port scan.
    let p = daemon.attacker(a);
    let kinds: BTreeSet<&str> = p["scan"]["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    for k in ["syn", "fin", "null", "xmas", "ack", "udp"] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    assert_eq!(p["scan"]["pattern"], "port_scan", "{p}");
    assert_eq!(p["behavior"]["class"], "scanning", "{p}");
    assert_eq!(p["deckies"], serde_json::json!(["web"]));
    assert_eq!(p["is_traversal"], false);
    // One source ran nmap, masscan and hping3; each passes the vote on its own packets.
    let tools: Vec<&str> = p["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in ["nmap", "masscan", "hping3"] {
        assert!(tools.contains(&t), "{t} not attributed: {tools:?}");
    }
    // A broad, stealthy, multi-tool scanner scores at least "high", with reasons.
    assert!(p["risk"]["score"].as_u64().unwrap() >= 50, "{}", p["risk"]);
    assert!(!p["risk"]["reasons"].as_array().unwrap().is_empty());
    let w = daemon.attacker(&walker);
    assert_eq!(
        w["deckies"],
        serde_json::json!(["db", "web"]),
        "first-contact order: {w}"
    );
    assert_eq!(w["is_traversal"], true);
    let b = daemon.attacker(&benign);
    assert_eq!(b["behavior"]["class"], "unknown", "{b}");
    assert_eq!(b["risk"]["band"], "low", "{b}");
    assert_eq!(b["tools"], serde_json::json!([]));
    // The IPv6 source only ran nmap -sS (hop limit 255, window 1024, MSS 1460: measured).
    let p6 = daemon.attacker(&lab.attacker6);
    assert_eq!(p6["tools"], serde_json::json!(["nmap"]), "{p6}");
    let rows = all.iter().filter(|r| r["attacker_ip"] == a).count();
    assert_eq!(
        decnet_tests::profile_rows(&p) as usize,
        rows,
        "every row of the attacker profiled"
    );

    // Clean stop: exit 0, the journal is complete, the program is gone.
    let status = daemon.stop();
    assert!(
        status.success(),
        "decnet exit {status}:\n{}",
        daemon.log_text()
    );
    assert!(
        !lab.ingress_attached(),
        "XDP program left on {} after stop",
        lab.host_if
    );
}

#[test]
fn nmap_os_detection_is_recognised_as_such() {
    if !require_root() {
        return;
    }
    require_tool("nmap");
    let lab = Lab::new(13);
    // One open port on the decoy, as nmap -O needs.
    let listener =
        std::net::TcpListener::bind((lab.decoy.as_str(), 2222)).expect("listener on the decoy");
    let dir = tempfile_dir("osdetect");
    let daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    lab.exec(
        &["nmap", "-n", "-Pn", "-O", "-p", "1,2222", &lab.decoy],
        120,
    );
    drop(listener);
    daemon.settle();
    let p = daemon.attacker(&lab.attacker);
    let kinds: BTreeSet<&str> = p["scan"]["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(kinds.contains("os_detection"), "{p}");
    // Its T2/T4/T6/T7 probes are OS probes, not NULL/ACK/Xmas scans.
    for k in ["null", "ack", "xmas"] {
        assert!(!kinds.contains(k), "{k} reported for nmap -O: {kinds:?}");
    }
    assert!(
        p["tools"].as_array().unwrap().iter().any(|t| t == "nmap"),
        "{p}"
    );
}

#[test]
fn nmap_syn_scan_is_profiled_within_one_second() {
    if !require_root() {
        return;
    }
    require_tool("nmap");
    let lab = Lab::new(15);
    let dir = tempfile_dir("within1s");
    let daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    lab.exec(&["nmap", "-n", "-Pn", "-sS", "-p", "1-100", &lab.decoy], 60);
    // nmap has exited: its last probe is out. Sample the API until 3 s have passed.
    let done = std::time::Instant::now();
    let path = format!("/api/v1/attackers/{}", lab.attacker);
    let mut samples = vec![];
    while done.elapsed() < std::time::Duration::from_secs(3) {
        if let Some((200, body)) = decnet_tests::http_get(daemon.api, &path) {
            let v: Value = serde_json::from_str(&body).expect("profile JSON");
            samples.push((done.elapsed(), decnet_tests::profile_rows(&v)));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    daemon.settle();
    let want = read_journal(&daemon.journal_path())
        .iter()
        .filter(|r| r["attacker_ip"] == lab.attacker.as_str())
        .count() as u64;
    assert!(want >= 100, "{want} records for 100 ports");
    let first_complete = samples
        .iter()
        .find(|(_, n)| *n == want)
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("profile never reached {want} events: {samples:?}"));
    eprintln!("complete profile {first_complete:?} after nmap exited");
    assert!(
        first_complete <= std::time::Duration::from_secs(1),
        "profile complete only {first_complete:?} after the last probe"
    );
    let p = daemon.attacker(&lab.attacker);
    assert_eq!(p["behavior"]["class"], "scanning", "{p}");
    assert_eq!(p["scan"]["kinds"], serde_json::json!(["syn"]), "{p}");
    assert_eq!(p["scan"]["pattern"], "port_scan", "{p}");
    assert_eq!(p["tools"], serde_json::json!(["nmap"]), "{p}");
    // Crafted SYNs with a random TTL: no OS guess and no hop distance from them.
    assert_eq!(p["os_guess"], Value::Null, "{p}");
    assert_eq!(p["hop_distance"], Value::Null, "{p}");
}

#[test]
fn hping3_hammering_one_port_is_brute_force() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let lab = Lab::new(14);
    let dir = tempfile_dir("hammer");
    let daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    hping_syns(&lab, 22, 40, 100000);
    daemon.settle();
    let p = daemon.attacker(&lab.attacker);
    // One service, 40 SYNs 0.1 s apart: the documented brute_force rule (classify.rs).
    assert_eq!(p["behavior"]["class"], "brute_force", "{p}");
    assert_eq!(p["event_count"], 40);
    assert_eq!(p["ports"], serde_json::json!([22]));
    let mean = p["behavior"]["timing"]["mean_iat_s"].as_f64().unwrap();
    assert!((0.09..0.2).contains(&mean), "mean gap {mean}");
    assert_eq!(p["tools"], serde_json::json!(["hping3"]));
}

#[test]
fn attach_detach_reattach_leave_nothing_behind() {
    if !require_root() {
        return;
    }
    require_tool("ip");
    let (ns, host_if);
    {
        let lab = Lab::new(12);
        ns = lab.ns.clone();
        host_if = lab.host_if.clone();
        let dir = tempfile_dir("reattach");
        let decoys = [lab.decoy.clone()];
        // Each ingress hook: generic XDP, the TC hook, and auto (the TC hook on a veth).
        for (round, (mode, shown)) in [("skb", "skb"), ("tc", "tc"), ("auto", "tc")]
            .into_iter()
            .enumerate()
        {
            let mut d =
                Daemon::start_with_env(&lab.host_if, &decoys, &dir, &[("DECNET_XDP_MODE", mode)]);
            assert!(lab.ingress_attached(), "round {round}: not attached");
            assert_eq!(
                d.health()["xdp_mode"].as_str(),
                Some(shown),
                "round {round}: --xdp-mode {mode}"
            );
            // A request to a listener on the decoy that answers 3,000 bytes: the local
            // stacks keep TCP payload in page fragments, past the skb's linear part.
            let listener = std::net::TcpListener::bind((lab.decoy.as_str(), 0)).expect("listener");
            let port = listener.local_addr().expect("addr").port();
            let server = std::thread::spawn(move || {
                use std::io::{Read as _, Write as _};
                let (mut c, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 256];
                let _ = c.read(&mut buf);
                let _ = c.write_all(&[b'x'; 3000]);
                // Close gracefully: our FIN, then the client's (a close with unread data
                // would reset the connection).
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = c.read_to_end(&mut Vec::new());
            });
            lab.exec(
                &[
                    "bash",
                    "-c",
                    &format!(
                        "exec 3<>/dev/tcp/{}/{port}; printf 'GET /round HTTP/1.0\r\n\r\n' >&3; \
                         timeout 2 cat <&3 >/dev/null",
                        lab.decoy
                    ),
                ],
                10,
            );
            server.join().expect("server");
            let s = d.settle();
            let k = &s["kernel"];
            assert!(
                k["events_emitted"].as_u64().unwrap() >= 1,
                "round {round}: {s}"
            );
            assert_eq!(
                (k["malformed"].as_u64(), k["egress_malformed"].as_u64()),
                (Some(0), Some(0)),
                "round {round}: {s}"
            );
            let payloads = read_journal(&dir.join("events.jsonl"))
                .iter()
                .filter(|r| r["event_type"] == "tcp_payload")
                .count();
            assert_eq!(payloads, round + 1, "round {round}: the request's payload");
            let st = d.stop();
            assert!(st.success(), "round {round}: exit {st}:\n{}", d.log_text());
            assert!(
                !lab.ingress_attached(),
                "round {round}: a program left after SIGTERM"
            );
        }
        // A crash (SIGKILL) cannot run any cleanup; the bpf_link dies with the process.
        let mut d = Daemon::start(&lab.host_if, &decoys, &dir);
        assert!(lab.ingress_attached());
        d.stop_with(libc::SIGKILL);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while lab.ingress_attached() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!lab.ingress_attached(), "a program left after SIGKILL");
        // Two journals' worth of records from the clean rounds survived.
        assert!(read_journal(&dir.join("events.jsonl")).len() >= 2);
    }
    assert!(!netns_exists(&ns), "namespace {ns} left behind");
    assert!(!link_exists(&host_if), "veth {host_if} left behind");
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let bin = decnet_tests::decnet_bin();
    let out = std::process::Command::new(&bin)
        .args(["run", "--iface", "lo", "--decoy", "10.0.0.300"])
        .output()
        .expect("run decnet");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("10.0.0.300") && err.contains("IP[=NAME]"),
        "{err}"
    );
    // check-config: the same resolution without starting; the file's errors name key and line.
    let dir = tempfile_dir("checkconfig");
    let conf = dir.join("decnet.toml");
    std::fs::write(
        &conf,
        "iface = \"lo\"\ndecoy = [\"10.0.0.1=web\"]\nflood_rate = 100\n",
    )
    .unwrap();
    let out = std::process::Command::new(&bin)
        .arg("check-config")
        .arg("--config")
        .arg(&conf)
        .output()
        .expect("check-config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("flood_rate = 100") && text.contains("configuration ok"),
        "{text}"
    );
    for (body, want) in [
        (
            "iface = \"lo\"\ndecoy = [\"10.0.0.1\"]\nflood = 1\n",
            "line 3",
        ),
        (
            "iface = \"lo\"\n\ndecoy = [\"10.0.0.1\", \"10.0.0.400\"]\n",
            "line 3",
        ),
        (
            "iface = \"lo\"\ndecoy = [\"10.0.0.1\"]\nlisten = \"nowhere\"\n",
            "line 3",
        ),
        (
            "decoy = [\"10.0.0.1\",\n  \"10.0.0.1=again\"]\niface = \"lo\"\n",
            "line 2",
        ),
        (
            "decoy = [\"10.0.0.1\"]\niface = \"dn-no-such1\"\n",
            "line 2",
        ),
    ] {
        std::fs::write(&conf, body).unwrap();
        let out = std::process::Command::new(&bin)
            .arg("check-config")
            .arg("--config")
            .arg(&conf)
            .output()
            .expect("check-config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{body}: accepted");
        assert!(
            err.contains(want) && err.contains("decnet.toml"),
            "{body}: {err}"
        );
    }
    if !require_root() {
        return;
    }
    // A directory holding anything else is not a data dir: it would be tightened and given
    // away. (/tmp always holds something.)
    let out = std::process::Command::new(&bin)
        .args(["run", "--iface", "lo", "--decoy", "10.0.0.1", "--data-dir"])
        .arg(std::env::temp_dir())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run decnet");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not decnet's own"), "{err}");
    let dir = tempfile_dir("noiface");
    let out = std::process::Command::new(&bin)
        .args([
            "run",
            "--iface",
            "dn-no-such0",
            "--decoy",
            "10.0.0.1",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .expect("run decnet");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dn-no-such0") && err.contains("does not exist"),
        "{err}"
    );
}

/// `count` SYNs from hping3 in the attacker namespace to `port` on the decoy, `gap_us`
/// apart (bounded at 60 s).
fn hping_syns(lab: &Lab, port: u16, count: u32, gap_us: u32) {
    let (port, count, gap) = (port.to_string(), count.to_string(), format!("u{gap_us}"));
    lab.exec(
        &[
            "hping3", "-S", "-p", &port, "-i", &gap, "-c", &count, &lab.decoy,
        ],
        60,
    );
}

/// Another host address in the /24 of `ip`.
fn same_subnet(ip: &str, host: u8) -> String {
    let (net, _) = ip.rsplit_once('.').expect("IPv4 address");
    format!("{net}.{host}")
}

/// RFC 3339 UTC with nanoseconds: 2026-11-26T20:07:54.123456789Z
fn chrono_like(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 30 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[29] == b'Z'
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("decnet-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    // The daemon's log (appended to across restarts) is the dir's sibling.
    let _ = std::fs::remove_file(p.with_extension("log"));
    std::fs::create_dir_all(&p).expect("temp dir");
    p
}

/// Resident set size of a process in MiB (from /proc).
fn rss_mib(pid: i32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

#[test]
fn hping3_flood_is_summarised_in_the_kernel_and_a_second_source_keeps_full_detail() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let lab = Lab::new(24);
    let dir = tempfile_dir("flood");
    let daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    let second = same_subnet(&lab.attacker, 3);
    let out = std::process::Command::new("ip")
        .args([
            "-n",
            &lab.ns,
            "addr",
            "add",
            &format!("{second}/24"),
            "dev",
            &lab.ns_if,
        ])
        .output()
        .expect("ip addr add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss_before = rss_mib(daemon.pid());
    // A bounded flood (3 s) from the first address; during it, three SYNs from the second.
    let flood = std::process::Command::new("timeout")
        .args([
            "3", "ip", "netns", "exec", &lab.ns, "hping3", "--flood", "-S", "-p", "80", "-q",
        ])
        .arg(&lab.decoy)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hping3 --flood");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    lab.exec(
        &[
            "hping3", "-S", "-c", "3", "-i", "u100000", "-p", "2222", "-a", &second, &lab.decoy,
        ],
        20,
    );
    let flood_status = flood.wait_with_output().expect("flood").status;
    // timeout(1) ends hping3 with SIGTERM: exit 124.
    assert_eq!(
        flood_status.code(),
        Some(124),
        "hping3 --flood did not run its 3 s"
    );
    let rss_after = rss_mib(daemon.pid());
    let s = daemon.settle();
    let k = &s["kernel"];
    let p = &s["pipeline"];
    let suppressed = k["suppressed"].as_u64().expect("suppressed");
    assert!(suppressed > 50_000, "a 3 s flood was not summarised: {s}");
    assert_eq!(k["ring_reserve_failed"], 0, "{s}");
    assert_eq!(p["channel_full_dropped"], 0, "{s}");
    // Every decoy packet is accounted for: an event, a repeat of a known flow, withheld, or
    // an answer to the decoy's own traffic. (Summaries, the decoy's answers and flow
    // summaries are events but not packets to it.)
    let n = |key: &str| k[key].as_u64().unwrap();
    let events =
        n("events_emitted") - n("suppressed_summaries") - n("probe_outcomes") - n("flow_summaries");
    assert_eq!(
        n("packets_to_decoy"),
        events + n("decoy_not_emitted") + suppressed + n("decoy_own_traffic"),
        "{s}"
    );
    assert_eq!(s["flood_guard"]["rate"], 1000, "{s}");
    let journal = read_journal(&daemon.journal_path());
    let sums: Vec<&Value> = journal
        .iter()
        .filter(|r| r["event_type"] == "source_suppressed")
        .collect();
    let reported: u64 = sums
        .iter()
        .map(|r| r["fields"]["suppressed"].as_u64().unwrap())
        .sum();
    assert_eq!(
        reported, suppressed,
        "summaries add up to what the kernel withheld"
    );
    assert!(
        sums.iter()
            .all(|r| r["attacker_ip"] == lab.attacker.as_str())
    );
    // At most one kernel summary a second (3 s flood) plus the sweep after it went quiet.
    assert!(sums.len() <= 6, "{} summaries", sums.len());
    let per_packet = journal
        .iter()
        .filter(|r| r["attacker_ip"] == lab.attacker.as_str() && r["event_type"] == "tcp_syn")
        .count() as u64;
    assert!(
        per_packet <= 2_000 + 1_000 * 4,
        "{per_packet} per-packet events from the flooder: over burst + rate x time"
    );
    // The second source's probes arrived whole, during the flood.
    let other: Vec<&Value> = journal
        .iter()
        .filter(|r| r["attacker_ip"] == second.as_str() && r["event_type"] == "tcp_syn")
        .collect();
    assert_eq!(other.len(), 3, "second source during the flood");
    // ... and so did the decoy's answers to them; the answers to withheld probes were
    // counted, never more of them than probes withheld.
    let answers = journal
        .iter()
        .filter(|r| r["attacker_ip"] == second.as_str() && r["event_type"] == "probe_outcome")
        .filter(|r| r["fields"]["outcome"] == "closed")
        .count();
    assert_eq!(answers, 3, "the second source's answers during the flood");
    assert!(n("outcomes_withheld") <= suppressed, "{s}");
    assert!(
        other
            .iter()
            .all(|r| r["fields"]["dst_port"] == 2222 && r["fields"]["ttl"].as_u64().is_some())
    );
    // The profile describes the flood.
    let prof = daemon.attacker(&lab.attacker);
    assert_eq!(
        prof["flood"]["suppressed"].as_u64(),
        Some(suppressed),
        "{prof}"
    );
    assert!(
        prof["flood"]["distinct_ports_est"].as_u64().unwrap_or(0) >= 1,
        "{prof}"
    );
    eprintln!(
        "flood: {} decoy packets, {events} events, {suppressed} withheld in {} summaries; daemon RSS {rss_before:.1} -> {rss_after:.1} MiB",
        k["packets_to_decoy"],
        sums.len()
    );
    assert!(
        rss_after < rss_before + 64.0,
        "daemon RSS grew from {rss_before:.1} to {rss_after:.1} MiB during the flood"
    );
}

/// Unix ns of an RFC 3339 UTC timestamp as the journal writes them.
fn unix_ns(ts: &str) -> i128 {
    let n = |a: usize, b: usize| ts[a..b].parse::<i64>().expect("digits");
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    let frac = &ts[20..ts.len() - 1];
    secs as i128 * 1_000_000_000
        + frac.parse::<i128>().expect("ns") * 10i128.pow(9 - frac.len() as u32)
}

/// A python listener makes one decoy port open; nmap -sS and -sT scan it and two closed
/// ports. Every answer is a probe_outcome linked to its probe; the connect scan leaves
/// connect-scan flows, the SYN scan none; IPv6 alike.
#[test]
fn nmap_syn_and_connect_scans_get_outcomes_and_are_told_apart() {
    if !require_root() {
        return;
    }
    require_tool("nmap");
    require_tool("python3");
    let lab = Lab::new(25);
    let dir = tempfile_dir("outcomes");
    let daemon = Daemon::start(
        &lab.host_if,
        &[format!("{}=web", lab.decoy), format!("{}=web6", lab.decoy6)],
        &dir,
    );
    // Auto mode on a veth is the TC ingress hook (cheaper there than generic or native
    // XDP); egress is a tcx link.
    let (code, body) = decnet_tests::http_get(daemon.api, "/api/v1/health").expect("health");
    assert_eq!(code, 200);
    let h: Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(
        (h["xdp_mode"].as_str(), h["egress_mode"].as_str()),
        (Some("tc"), Some("tcx")),
        "{h}"
    );
    let open = decnet_tests::free_port();
    let closed = [decnet_tests::free_port(), decnet_tests::free_port()];
    // Listeners on the decoy addresses only (both families), killed when the test ends.
    let servers: Vec<ChildGuard> = [lab.decoy.as_str(), lab.decoy6.as_str()]
        .iter()
        .map(|addr| {
            ChildGuard(
                std::process::Command::new("python3")
                    .args(["-m", "http.server", &open.to_string(), "--bind", addr])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("python3 -m http.server"),
            )
        })
        .collect();
    for addr in [
        format!("{}:{open}", lab.decoy),
        format!("[{}]:{open}", lab.decoy6),
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "listener on {addr} never came up"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let port_list = format!("{open},{},{}", closed[0], closed[1]);
    let mut journal = Journal {
        daemon: &daemon,
        seen: 0,
    };
    // Our own readiness probes (from the host, not the attacker) are not part of this.
    journal.next_phase();
    let a = lab.attacker.as_str();

    let check_outcomes = |recs: &[Value], who: &str| {
        let outs = from(recs, who, "probe_outcome");
        let syns = from(recs, who, "tcp_syn");
        let verdict = |port: u16| -> BTreeSet<String> {
            outs.iter()
                .filter(|r| field(r, "dst_port") == port)
                .map(|r| field(r, "outcome").as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            verdict(open),
            BTreeSet::from(["open".to_owned()]),
            "{outs:?}"
        );
        for c in closed {
            assert_eq!(
                verdict(c),
                BTreeSet::from(["closed".to_owned()]),
                "{outs:?}"
            );
        }
        for o in &outs {
            // Linked: a SYN with the same ports at the probe's timestamp.
            let probe_ts = unix_ns(field(o, "probe_ts").as_str().unwrap());
            let linked = syns.iter().any(|s| {
                field(s, "src_port") == field(o, "src_port")
                    && field(s, "dst_port") == field(o, "dst_port")
                    && (unix_ns(s["ts"].as_str().unwrap()) - probe_ts).abs() < 1_000_000
            });
            assert!(linked, "outcome {o} answers no recorded SYN");
            let rtt = field(o, "rtt_ns").as_u64().unwrap();
            assert!(rtt > 0 && rtt < 1_000_000_000, "rtt {rtt} ns: {o}");
            assert_eq!(
                unix_ns(o["ts"].as_str().unwrap()) - probe_ts,
                rtt as i128,
                "the outcome's time is the probe's plus the round trip: {o}"
            );
        }
    };

    // SYN scan: outcomes, and no flow summary (SYN, SYN-ACK, RST is a scan probe).
    lab.exec(
        &["nmap", "-n", "-Pn", "-sS", "-p", &port_list, &lab.decoy],
        60,
    );
    let recs = journal.next_phase();
    check_outcomes(&recs, a);
    assert!(from(&recs, a, "tcp_flow").is_empty(), "{recs:?}");
    let p = daemon.attacker(a);
    assert_eq!(p["scan"]["kinds"], serde_json::json!(["syn"]), "{p}");
    assert_eq!(p["answers"]["open_ports"], serde_json::json!([open]), "{p}");

    // Connect scan from the same source: handshake, silence, the scanner hangs up.
    lab.exec(
        &["nmap", "-n", "-Pn", "-sT", "-p", &port_list, &lab.decoy],
        60,
    );
    let recs = journal.next_phase();
    check_outcomes(&recs, a);
    let flows = from(&recs, a, "tcp_flow");
    assert!(
        !flows.is_empty(),
        "a connect scan of an open port leaves a flow: {recs:?}"
    );
    eprintln!("connect-scan flow: {}", flows[0]);
    eprintln!("outcome: {}", from(&recs, a, "probe_outcome")[0]);
    for f in &flows {
        assert_eq!(field(f, "dst_port"), open, "{f}");
        assert_eq!(field(f, "handshake"), true, "{f}");
        assert_eq!(field(f, "attacker_payload_bytes"), 0, "{f}");
        assert_eq!(field(f, "closed_by"), "attacker", "{f}");
        assert_eq!(field(f, "connect_scan"), true, "{f}");
        assert!(field(f, "handshake_rtt_ns").as_u64().unwrap() > 0, "{f}");
    }
    let p = daemon.attacker(a);
    assert_eq!(
        p["scan"]["kinds"],
        serde_json::json!(["connect", "syn"]),
        "{p}"
    );

    // IPv6, connect scan only: the profile says connect and nothing else.
    let a6 = lab.attacker6.as_str();
    lab.exec(
        &[
            "nmap",
            "-6",
            "-n",
            "-Pn",
            "-sT",
            "-p",
            &port_list,
            &lab.decoy6,
        ],
        60,
    );
    let recs = journal.next_phase();
    check_outcomes(&recs, a6);
    let flows6 = from(&recs, a6, "tcp_flow");
    assert!(!flows6.is_empty(), "{recs:?}");
    assert!(
        flows6
            .iter()
            .all(|f| field(f, "connect_scan") == true && field(f, "dst_port") == open),
        "{recs:?}"
    );
    let p6 = daemon.attacker(a6);
    assert_eq!(p6["scan"]["kinds"], serde_json::json!(["connect"]), "{p6}");
    assert_eq!(
        p6["answers"]["open_ports"],
        serde_json::json!([open]),
        "{p6}"
    );
    assert_eq!(p6["answers"]["closed"].as_u64().unwrap() % 2, 0, "{p6}");
    let reasons = p6["risk"]["reasons"].to_string();
    assert!(reasons.contains("open port"), "{reasons}");

    let s = daemon.settle();
    let k = &s["kernel"];
    assert!(k["probe_outcomes"].as_u64().unwrap() >= 9, "{s}");
    assert_eq!(k["egress_malformed"], 0, "{s}");
    assert_eq!(k["outcomes_withheld"], 0, "{s}");
    drop(servers);
}

/// Kills a child process when dropped (also when the test panics).
/// The daemon runs as `nobody` with no capability once attached; SIGTERM in the middle of
/// traffic: the ring is drained, the journal flushed, the last batch committed and
/// announced, and every stream ends with a `shutdown` event, within the shutdown bound.
#[test]
fn sigterm_drains_everything_and_closes_streams_with_a_final_event() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    use std::io::{Read as _, Write as _};
    let lab = Lab::new(26);
    let dir = tempfile_dir("sigterm");
    let mut daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    let mut sse = std::net::TcpStream::connect(daemon.api).expect("connect");
    write!(
        sse,
        "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        decnet_tests::API_TOKEN
    )
    .expect("stream request");
    // Least privilege: attached, then `nobody` with no capability on any thread, owning
    // its data dir; everything below (capture, journal, SQLite, stream) works like that.
    let pid = daemon.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        status.contains("Uid:\t65534\t65534\t65534\t65534"),
        "{status}"
    );
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for k in ["CapEff:", "CapPrm:", "CapAmb:"] {
            let v = st
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or("?")
                .trim();
            assert_eq!(v, "0000000000000000", "thread {:?} {k}", t.file_name());
        }
    }
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let m = std::fs::metadata(&dir).expect("data dir");
        assert_eq!((m.uid(), m.permissions().mode() & 0o777), (65534, 0o750));
    }
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = sse.set_read_timeout(Some(std::time::Duration::from_secs(20)));
        let _ = sse.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });
    // 1,500 SYNs as fast as hping3 goes, and stop while they are still being taken in.
    hping_syns(&lab, 80, 1500, 200);
    let t = std::time::Instant::now();
    let st = daemon.stop();
    let took = t.elapsed();
    assert!(st.success(), "exit {st}:\n{}", daemon.log_text());
    assert!(
        took < std::time::Duration::from_secs(6),
        "shutdown took {took:?} (bound 5 s)"
    );
    let text = reader.join().expect("stream reader");
    let journal = read_journal(&dir.join("events.jsonl"));
    let logs = text.matches("event: log\n").count();
    assert!(journal.len() >= 1500, "{} journal lines", journal.len());
    assert_eq!(
        logs,
        journal.len(),
        "every journal line was committed and announced before the end"
    );
    // (The body is chunked: look for the event, then check nothing came after it.)
    let at = text.rfind("event: shutdown").unwrap_or_else(|| {
        panic!(
            "no shutdown event; stream tail: {}",
            &text[text.len().saturating_sub(300)..]
        )
    });
    let tail = &text[at..];
    assert!(tail.contains("resume_after"), "{tail}");
    assert!(
        !tail.contains("event: log") && !tail.contains("event: stats"),
        "{tail}"
    );
    assert!(
        tail.ends_with("0\r\n\r\n"),
        "the response ends after it: {tail:?}"
    );
    let log = daemon.log_text();
    assert!(
        log.contains("stopped") && !log.contains("shutdown took too long"),
        "{log}"
    );
    eprintln!("shutdown in {took:?}; {logs} rows announced");
}

/// Unmounts a tmpfs when dropped (also when the test panics).
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The data dir's disk fills up: journal writes fail and are counted, the error is logged
/// once per interval, the daemon keeps running, and once space is freed writing resumes
/// with nothing committed lost and no half line left behind.
#[test]
fn a_full_disk_costs_counted_records_and_writing_resumes() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let lab = Lab::new(27);
    let dir = std::env::temp_dir().join(format!("decnet-e2e-diskfull-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m,mode=0750", "tmpfs"])
        .arg(&dir)
        .status()
        .expect("mount");
    assert!(ok.success(), "mounting a tmpfs");
    let _mount = Tmpfs(dir.clone());
    let daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    hping_syns(&lab, 21, 50, 2000);
    let before = daemon.settle();
    let written_before = before["pipeline"]["journal_written"].as_u64().unwrap();
    assert!(written_before >= 50, "{before}");

    // Fill the disk.
    {
        use std::io::Write as _;
        let mut filler = std::fs::File::create(dir.join("filler")).expect("filler");
        let block = vec![0u8; 64 << 10];
        while filler.write_all(&block).is_ok() {}
    }
    hping_syns(&lab, 22, 300, 2000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let full = loop {
        let s = daemon.stats();
        if s["pipeline"]["journal_write_failed"].as_u64().unwrap_or(0) > 0 {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write failure counted: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (code, _) = decnet_tests::http_get(daemon.api, "/api/v1/health").expect("health");
    assert_eq!(code, 200, "the daemon keeps running on a full disk");

    // Free the space: writing resumes.
    std::fs::remove_file(dir.join("filler")).expect("free space");
    hping_syns(&lab, 23, 50, 2000);
    let s = daemon.settle();
    let p = &s["pipeline"];
    assert!(p["journal_write_failed"].as_u64().unwrap() > 0, "{s}");
    assert!(
        p["journal_written"].as_u64().unwrap() >= written_before + 50,
        "writing resumed: {s}"
    );
    // No half line: every line in the file parses, every one is a row, none dead-lettered.
    let journal = read_journal(&dir.join("events.jsonl"));
    assert_eq!(
        journal.len() as u64,
        p["journal_written"].as_u64().unwrap(),
        "{s}"
    );
    assert_eq!(
        s["ingest"]["rows"].as_u64().unwrap(),
        journal.len() as u64,
        "{s}"
    );
    assert_eq!(s["ingest"]["dead_letters"], 0, "{s}");
    // The first phase's probes are all still there.
    let first = journal
        .iter()
        .filter(|r| r["event_type"] == "tcp_syn" && r["fields"]["dst_port"] == 21)
        .count();
    assert_eq!(first, 50);
    let resumed = journal
        .iter()
        .filter(|r| r["event_type"] == "tcp_syn" && r["fields"]["dst_port"] == 23)
        .count();
    assert_eq!(resumed, 50, "the probes after the space came back");
    // Logged once per interval, not once per failed write.
    let log = daemon.log_text();
    let logged = log.matches("journal write failed").count();
    assert!((1..=3).contains(&logged), "{logged} error lines:\n{log}");
    eprintln!(
        "disk full: {} records lost (counted), {} written; {logged} error line(s); during: {}",
        p["journal_write_failed"], p["journal_written"], full["pipeline"]
    );
}

/// Another process holds SQLite's write lock past the busy timeout (10 s) while probes
/// arrive: the ingester and the profiler retry with backoff and lose nothing.
#[test]
fn a_locked_database_is_retried_and_nothing_is_lost() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    require_tool("python3");
    let lab = Lab::new(28);
    let dir = tempfile_dir("locked");
    let daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    hping_syns(&lab, 21, 20, 2000);
    daemon.settle();
    let mut locker = ChildGuard(
        std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys, time\n\
                 c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n\
                 c.execute('BEGIN IMMEDIATE')\n\
                 print('locked', flush=True)\n\
                 time.sleep(12)\n\
                 c.execute('COMMIT')\n",
            ])
            .arg(dir.join("decnet.db"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 sqlite3"),
    );
    {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(locker.0.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("locker ready");
        assert_eq!(line.trim(), "locked");
    }
    hping_syns(&lab, 22, 100, 2000);
    let _ = locker.0.wait();
    let s = daemon.settle();
    let journal = read_journal(&dir.join("events.jsonl"));
    assert_eq!(
        s["ingest"]["rows"].as_u64().unwrap(),
        journal.len() as u64,
        "{s}"
    );
    assert!(s["ingest"]["commit_retries"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["ingest"]["dead_letters"], 0, "{s}");
    let p = daemon.attacker(&lab.attacker);
    assert_eq!(p["event_count"], 120, "{p}");
    eprintln!(
        "locked 12 s: ingest retries {}, profile retries {}",
        s["ingest"]["commit_retries"], s["profile"]["retries"]
    );
}

/// The journal is deleted while the daemon runs: the writer creates a new one before its
/// next write, and the ingester follows it; every probe still becomes a row.
#[test]
fn a_deleted_journal_is_recreated_and_followed() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let lab = Lab::new(29);
    let dir = tempfile_dir("deleted");
    let daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    hping_syns(&lab, 21, 20, 2000);
    let s = daemon.settle();
    let first = s["pipeline"]["journal_written"].as_u64().unwrap();
    std::fs::remove_file(dir.join("events.jsonl")).expect("delete the journal");
    hping_syns(&lab, 22, 30, 2000);
    let s = daemon.settle();
    let written = s["pipeline"]["journal_written"].as_u64().unwrap();
    let now = read_journal(&dir.join("events.jsonl"));
    assert_eq!(
        now.len() as u64,
        written - first,
        "the new journal has the later lines: {s}"
    );
    assert!(
        now.iter().all(|r| r["fields"]["dst_port"] == 22),
        "only the later probes"
    );
    assert_eq!(s["ingest"]["rows"].as_u64().unwrap(), written, "{s}");
    assert_eq!(s["ingest"]["dead_letters"], 0, "{s}");
    // (daemon.attacker() counts the rows of the current journal file only.)
    let path = format!("/api/v1/attackers/{}", lab.attacker);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, body) = decnet_tests::http_get(daemon.api, &path).expect("profile");
        let p: Value = serde_json::from_str(&body).expect("profile JSON");
        if p["event_count"] == 50 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "profile: {p}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(daemon.log_text().contains("deleted or replaced"));
}

/// The decoy interface goes down and comes back: the programs stay attached (bpf_links
/// belong to the interface, not to its state) and the probes after it are recorded.
#[test]
fn the_interface_going_down_and_up_keeps_capturing() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let lab = Lab::new(31);
    let dir = tempfile_dir("downup");
    let daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    hping_syns(&lab, 21, 10, 2000);
    daemon.settle();
    for state in ["down", "up"] {
        let ok = std::process::Command::new("ip")
            .args(["link", "set", &lab.host_if, state])
            .status()
            .expect("ip link set");
        assert!(ok.success());
    }
    // The peer needs a moment to see carrier again.
    std::thread::sleep(std::time::Duration::from_millis(500));
    hping_syns(&lab, 22, 10, 2000);
    daemon.settle();
    let journal = read_journal(&dir.join("events.jsonl"));
    let after = journal
        .iter()
        .filter(|r| r["event_type"] == "tcp_syn" && r["fields"]["dst_port"] == 22)
        .count();
    assert_eq!(after, 10, "probes after the interface came back");
    assert!(lab.ingress_attached());
}

/// Text a prober or another journal writer controls reaches people escaped: `decnet tail`,
/// `decnet attackers` and the daemon's own log show control characters and bidi overrides
/// as `\u{..}`, so nothing can drive a terminal or forge a log line.
#[test]
fn hostile_text_never_reaches_a_terminal_or_a_log_line() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(32);
    let dir = tempfile_dir("hostile");
    let daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    let client = |args: &[&str]| {
        let mut c = std::process::Command::new(decnet_tests::decnet_bin());
        c.args(args)
            .arg("--listen")
            .arg(daemon.api.to_string())
            .arg("--data-dir")
            .arg(&dir)
            .env("DECNET_API_TOKEN", decnet_tests::API_TOKEN)
            .env("DECNET_LOG", "warn");
        c
    };
    let mut tail = ChildGuard(
        client(&["tail"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("decnet tail"),
    );
    // Let tail connect before the lines are appended: it shows the live stream.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let valid = r#"{"ts":"2026-11-27T08:00:00.000000000Z","decky":"web\u001b]0;pwned\u0007\u202e\r","service":"ssh","event_type":"tcp_syn","attacker_ip":"10.231.32.9","fields":{"dst_port":22}}"#;
    let forged = r#"{"ts":"t","decky":"d","service":"s","event_type":"e","attacker_ip":"\u001b[2J\n2026-11-27T08:00:00Z  INFO decnet: all clear"}"#;
    {
        use std::io::Write as _;
        let mut j = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("events.jsonl"))
            .expect("journal");
        writeln!(j, "{valid}\n{forged}").expect("append");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = daemon.stats();
        if s["ingest"]["rows"] == 1 && s["ingest"]["dead_letters"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ingested: {s}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let unsafe_chars = |s: &str| {
        s.chars()
            .filter(|&c| c != '\n' && (c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)))
            .collect::<Vec<_>>()
    };

    // decnet attackers: the decoy name in the profile.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let table = loop {
        let out = client(&["attackers"]).output().expect("decnet attackers");
        assert!(out.status.success());
        let t = String::from_utf8(out.stdout).expect("UTF-8");
        if t.contains("10.231.32.9") {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "no profile: {t}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(unsafe_chars(&table), vec![], "{table:?}");
    assert!(
        table.contains(r"web\u{1b}]0;pwned\u{7}\u{202e}\u{d}"),
        "{table}"
    );

    // decnet tail: the live log line.
    let mut out = tail.0.stdout.take().expect("tail stdout");
    let reader = std::thread::spawn(move || {
        use std::io::Read as _;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = out.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if String::from_utf8_lossy(&buf).contains("pwned") {
                break;
            }
        }
        buf
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = tail.0.kill();
    let shown = String::from_utf8(reader.join().expect("reader")).expect("UTF-8");
    assert!(shown.contains(r"web\u{1b}]0;pwned\u{7}"), "{shown:?}");
    assert_eq!(unsafe_chars(&shown), vec![], "{shown:?}");

    // The daemon's log: the dead letter's reason quotes the hostile address, escaped, on the
    // same line.
    let log = daemon.log_text();
    assert!(log.contains("dead-lettered"), "{log}");
    assert_eq!(unsafe_chars(&log), vec![], "{log:?}");
    assert!(
        !log.lines()
            .any(|l| l.contains("all clear") && !l.contains("dead-lettered")),
        "a forged log line: {log}"
    );
}

/// `--pin`: a daemon restarted in the middle of a probe stream takes over the same ring, so
/// every probe is recorded exactly once, the counters continue across the restart, and
/// `decnet detach` removes what the pins left attached.
/// The handover does not wait for the profiler: a clean stop whose last profile update
/// outlasts the shutdown timeout (a backlog of rows to profile) still hands its counters
/// over, so the next start continues them. (CI's soak once restarted into an "unclean"
/// start this way, after a flood left the profiler behind.)
#[test]
fn a_stop_with_a_profile_backlog_still_hands_over() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    require_tool("python3");
    let lab = Lab::new(42);
    let dir = tempfile_dir("backlog");
    let bpffs = Bpffs::mount("backlog");
    let pin_dir = bpffs.0.join("decnet").to_string_lossy().into_owned();
    let env = [
        ("DECNET_PIN", "true"),
        ("DECNET_PIN_DIR", pin_dir.as_str()),
        ("DECNET_SHUTDOWN_TIMEOUT_SECS", "1"),
        ("DECNET_LOG", "info,decnet::daemon=debug"),
    ];
    let decoys = [format!("{}=web", lab.decoy)];
    let mut first = Daemon::start_with_env(&lab.host_if, &decoys, &dir, &env);
    hping_syns(&lab, 80, 20, 2000);
    first.settle();
    assert!(first.stop().success());
    // While no daemon runs: 120,000 rows from 12,000 sources that nothing has profiled yet,
    // seconds of work for the profiler (the debug binary; the write-behind profiler took
    // 20,000 rows inside the 1 s stop timeout), yet little enough for the third daemon to
    // finish them within settle()'s 15 s.
    const INSERT_BACKLOG: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
rows = ((f"2026-01-01T00:00:{i % 60:02d}.000000000Z", "web", "tcp", "tcp_syn",
         f"198.18.{i % 12000 // 250}.{i % 250 + 1}",
         '{"src_port": %d, "dst_port": %d, "ttl": 64}' % (1024 + i % 60000, 1 + i % 1000))
        for i in range(120000))
c.executemany("INSERT INTO logs (ts, decky, service, event_type, attacker_ip, fields) "
              "VALUES (?, ?, ?, ?, ?, ?)", rows)
c.commit()
"#;
    let status = std::process::Command::new("python3")
        .args(["-c", INSERT_BACKLOG])
        .arg(dir.join("decnet.db"))
        .status()
        .expect("python3 sqlite3");
    assert!(status.success(), "rows inserted");
    // The second daemon starts profiling the backlog at once; it is stopped in the middle.
    let mut second = Daemon::start_with_env(&lab.host_if, &decoys, &dir, &env);
    assert_eq!(second.health()["pin"]["start"], "clean");
    hping_syns(&lab, 81, 10, 2000);
    assert!(second.stop().success());
    let log = second.log_text();
    assert!(
        log.contains("shutdown took too long") && log.contains("updating the last profiles"),
        "the stop outlasted its timeout in the profiler (what this test is about):\n{log}"
    );
    let third = Daemon::start_with_env(&lab.host_if, &decoys, &dir, &env);
    let h = third.health();
    assert_eq!(h["pin"]["start"], "clean", "{h}");
    assert_eq!(h["pin"]["restarts"], 2, "{h}");
    // Counters continued across both stops: kernel emitted == written + drops again.
    let s = third.settle();
    let journal = read_journal(&dir.join("events.jsonl"));
    assert_eq!(
        s["pipeline"]["journal_written"].as_u64(),
        Some(journal.len() as u64),
        "{s}"
    );
    let syns = journal
        .iter()
        .filter(|r| r["event_type"] == "tcp_syn" && r["attacker_ip"] == lab.attacker)
        .count();
    assert_eq!(syns, 30, "both rounds of SYNs, once each");
    drop(third);
}

#[test]
fn a_pinned_sensor_restarts_without_losing_a_probe() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let lab = Lab::new(33);
    let dir = tempfile_dir("pinned");
    let bpffs = Bpffs::mount("pinned");
    let pins = bpffs.0.join("decnet");
    let pin_dir = pins.to_string_lossy().into_owned();
    let env = [("DECNET_PIN", "true"), ("DECNET_PIN_DIR", pin_dir.as_str())];
    let decoys = [format!("{}=web", lab.decoy)];
    const SENT: usize = 1500;
    let mut first = Daemon::start_with_env(&lab.host_if, &decoys, &dir, &env);
    assert_eq!(first.health()["pin"]["start"], "first");
    let now_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as i128
    };
    let (second, down) = std::thread::scope(|s| {
        // About 3 s of SYNs, one source port each; the restart falls in the middle.
        let sender = s.spawn(|| hping_syns(&lab, 80, SENT as u32, 2000));
        std::thread::sleep(std::time::Duration::from_millis(800));
        let before = first.stats()["pipeline"]["journal_written"]
            .as_u64()
            .unwrap_or(0);
        assert!(before > 0, "the first daemon saw the start of the stream");
        assert!(first.stop().success());
        let stopped = now_ns();
        // Nobody reads the ring for a moment: the kernel keeps capturing into it.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let second = Daemon::start_with_env(&lab.host_if, &decoys, &dir, &env);
        let started = now_ns();
        sender.join().expect("hping3");
        (second, stopped..started)
    });
    assert!(
        second
            .log_text()
            .contains("took over the pinned ingress link")
    );
    let h = second.health();
    assert_eq!(h["pin"]["start"], "clean", "{h}");
    assert_eq!(h["pin"]["restarts"], 1, "{h}");
    assert_eq!(h["egress_mode"], "tcx", "{h}");
    // The counters span both daemons: settle() checks kernel emitted == written + drops.
    let s = second.settle();
    assert_eq!(s["kernel"]["ring_reserve_failed"], 0, "{s}");
    assert_eq!(s["kernel"]["suppressed"], 0, "{s}");
    let journal = read_journal(&dir.join("events.jsonl"));
    let syns: Vec<&Value> = journal
        .iter()
        .filter(|r| r["event_type"] == "tcp_syn" && r["attacker_ip"] == lab.attacker)
        .collect();
    let ports: BTreeSet<u64> = syns
        .iter()
        .map(|r| r["fields"]["src_port"].as_u64().expect("src_port"))
        .collect();
    assert_eq!(syns.len(), SENT, "every SYN once");
    assert_eq!(ports.len(), SENT, "no SYN twice");
    let unattended = syns
        .iter()
        .filter(|r| down.contains(&unix_ns(r["ts"].as_str().expect("ts"))))
        .count();
    assert!(
        unattended > 50,
        "SYNs sent while no daemon ran are in the journal: {unattended}"
    );
    eprintln!("{unattended} of {SENT} SYNs arrived while no daemon was running");
    assert_eq!(
        s["pipeline"]["journal_written"].as_u64(),
        Some(journal.len() as u64),
        "{s}"
    );
    assert_eq!(
        s["ingest"]["rows"].as_u64(),
        Some(journal.len() as u64),
        "{s}"
    );
    // The profile spans both daemons too (the profiler resumed from its cursor).
    let p = second.attacker(&lab.attacker);
    assert_eq!(p["event_count"], SENT as u64, "{p}");
    drop(second);

    // Killed, not stopped: the programs stay attached and keep counting; the next start
    // takes over without a handover and says so.
    assert!(lab.ingress_attached(), "pinned programs outlive the daemon");
    let mut third = Daemon::start_with_env(&lab.host_if, &decoys, &dir, &env);
    assert_eq!(third.health()["pin"]["start"], "unclean");
    assert!(third.stop().success());

    // An unpinned start next to the pins is refused with what to do.
    let out = std::process::Command::new(decnet_tests::decnet_bin())
        .args([
            "run",
            "--iface",
            &lab.host_if,
            "--decoy",
            &lab.decoy,
            "--data-dir",
        ])
        .arg(&dir)
        .env("DECNET_API_TOKEN", decnet_tests::API_TOKEN)
        .env("DECNET_PIN", "false")
        .env("DECNET_PIN_DIR", &pin_dir)
        .output()
        .expect("decnet run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("decnet detach --iface"), "{err}");

    let out = std::process::Command::new(decnet_tests::decnet_bin())
        .args(["detach", "--iface", &lab.host_if, "--pin-dir", &pin_dir])
        .output()
        .expect("decnet detach");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("tc_ingress_link") && said.contains("EVENTS"),
        "{said}"
    );
    assert!(!lab.ingress_attached(), "detached");
    assert!(!pins.exists(), "pin dir removed");
}

/// The decoy interface is deleted and created again (a new index, nothing attached): the
/// daemon notices, attaches its programs again through its privileged helper, and the
/// probes after it are recorded with their answers; stopping detaches everything.
#[test]
fn a_recreated_interface_is_attached_again() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let lab = Lab::new(34);
    let dir = tempfile_dir("recreated");
    let mut daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    hping_syns(&lab, 21, 10, 2000);
    daemon.settle();
    lab.recreate_link();
    // The new interface starts bare, but the daemon's once-a-second look may already have
    // attached it again by now (CI saw that race): the health counters below say it was
    // lost and attached again, which only the daemon can have done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let state = loop {
        let h = daemon.health();
        let st = h["iface_state"].clone();
        if st["reattached"] == 1 && st["state"] == "attached" {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not attached again: {h}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(state["lost"], 1, "{state}");
    assert!(lab.ingress_attached());
    // The peer needs a moment to see carrier.
    std::thread::sleep(std::time::Duration::from_millis(500));
    hping_syns(&lab, 22, 10, 2000);
    let s = daemon.settle();
    let journal = read_journal(&dir.join("events.jsonl"));
    let of = |kind: &str| {
        journal
            .iter()
            .filter(|r| r["event_type"] == kind && r["fields"]["dst_port"] == 22)
            .count()
    };
    assert_eq!(of("tcp_syn"), 10, "probes after the interface came back");
    // The decoy's RSTs: the egress program is back too.
    assert_eq!(
        of("probe_outcome"),
        10,
        "answers after the interface came back: {s}"
    );
    let log = daemon.log_text();
    assert!(
        log.contains("the decoy interface is gone") || log.contains("is back"),
        "{log}"
    );
    assert!(daemon.stop().success());
    assert!(
        !lab.ingress_attached(),
        "stopping detaches what the helper attached"
    );
}

/// `--reattach=false`: no helper process (nothing of decnet keeps a capability), and a
/// recreated interface is reported, not attached again.
#[test]
fn without_the_helper_a_recreated_interface_is_reported() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(35);
    let dir = tempfile_dir("nohelper");
    let daemon = Daemon::start_with_env(
        &lab.host_if,
        &[format!("{}=web", lab.decoy)],
        &dir,
        &[("DECNET_REATTACH", "false")],
    );
    let pid = daemon.pid().to_string();
    let children: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                == Some(pid.as_str())
        })
        .collect();
    assert_eq!(children, Vec::<String>::new(), "no helper process");
    lab.recreate_link();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let h = daemon.health();
        let st = &h["iface_state"];
        if st["state"] == "detached" {
            assert_eq!(st["lost"], 1, "{h}");
            assert_eq!(st["reattached"], 0, "{h}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not reported: {h}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!lab.ingress_attached());
}
