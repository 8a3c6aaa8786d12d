//! Verdicts on traffic as a decoy on the internet receives it: real tools probing from
//! behind a chain of routed namespaces (every hop decrements the TTL).

use std::{collections::BTreeSet, time::Duration};

use decnet_tests::{Daemon, Lab, chain::Chain, require_root, require_tool};
use serde_json::Value;

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
    let dir = std::env::temp_dir().join(format!("decnet-fidelity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
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
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let p = loop {
        let p = daemon.attacker(&chain.attacker);
        if p["tools"].as_array().is_some_and(|t| t.len() == 2) {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hping3 never attributed: {p}"
        );
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
