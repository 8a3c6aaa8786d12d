//! Soak: the release daemon (`DECNET_SOAK_BIN`, which `cargo xtask test` and
//! `cargo xtask soak` set) under a mixed, bounded workload for `DECNET_SOAK_MINUTES`
//! (default 2; `cargo xtask soak --minutes N` runs it longer). A debug build of the daemon
//! is several times slower and is not what runs on a decoy, so without `DECNET_SOAK_BIN` the
//! test skips.
//!
//! Network: the decoy interface is one end of a veth pair whose other end is a port of a
//! bridge in a hub namespace; four attacker namespaces hang off that bridge, so every probe
//! crosses the decoy interface like traffic from several hosts would.
//!
//! Workload, all bounded in rate and time:
//! - `nmap -sS` over 2,000 ports at 100 packets/s, again and again (attacker 1);
//! - `hping3` SYNs at 50/s over moving ports (attacker 2);
//! - `masscan` at 100 packets/s over 3,000 ports (attacker 3);
//! - one `hping3 --flood` burst of 3 s at 30% of the run (attacker 4);
//! - 50 SSE clients following the stream, each resuming with Last-Event-ID when cut off;
//! - two daemon restarts (SIGTERM, pinned: at 20% and 45%) and journal rotations (the
//!   journal is capped at a few MiB).
//!
//! At the end: every event the kernel counted is in the database or a counted drop (the
//! pipeline identity, across both restarts); no SSE client saw a gap or a duplicate in the
//! log ids; RSS and open descriptors are flat over the last half (one daemon's life).

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI32, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use decnet_tests::{
    Bpffs, Daemon, free_port, ip, require_root, require_tool,
    sse::{Seen, sse_client},
};
use serde_json::Value;

const SSE_CLIENTS: usize = 50;
const SUBNET: &str = "10.233.0";

/// The decoy interface, a hub namespace with a bridge, and attacker namespaces on it.
struct Net {
    host_if: String,
    hub: String,
    attackers: Vec<(String, String, String)>,
    decoy: String,
}

impl Net {
    fn new(n: usize) -> Net {
        let id = std::process::id() % 100_000;
        let net = Net {
            host_if: format!("dsk{id}h"),
            hub: format!("dsoak-{id}-hub"),
            attackers: (1..=n)
                .map(|i| {
                    (
                        format!("dsoak-{id}-a{i}"),
                        format!("dsk{id}a{i}"),
                        format!("{SUBNET}.{}", 10 + i),
                    )
                })
                .collect(),
            decoy: format!("{SUBNET}.1"),
        };
        let hub = net.hub.as_str();
        ip(&["netns", "add", hub]);
        ip(&["-n", hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", hub, "link", "set", "br0", "up"]);
        let port = format!("dsk{id}p");
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &port,
        ]);
        ip(&["link", "set", &port, "netns", hub]);
        ip(&["-n", hub, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.decoy),
            "dev",
            &net.host_if,
        ]);
        ip(&["link", "set", &net.host_if, "up"]);
        for (i, (ns, ifname, addr)) in net.attackers.iter().enumerate() {
            let hub_end = format!("dsk{id}b{}", i + 1);
            ip(&["netns", "add", ns]);
            ip(&[
                "link", "add", ifname, "type", "veth", "peer", "name", &hub_end,
            ]);
            ip(&["link", "set", ifname, "netns", ns]);
            ip(&["link", "set", &hub_end, "netns", hub]);
            ip(&["-n", hub, "link", "set", &hub_end, "master", "br0", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                ifname,
            ]);
            ip(&["-n", ns, "link", "set", ifname, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn mac(&self) -> String {
        std::fs::read_to_string(format!("/sys/class/net/{}/address", self.host_if))
            .expect("decoy MAC")
            .trim()
            .to_owned()
    }

    /// Runs `args` in attacker `i`'s namespace, bounded by `timeout_s`.
    fn exec(&self, i: usize, args: &[&str], timeout_s: f64) {
        let _ = Command::new("timeout")
            .arg(format!("{timeout_s}"))
            .args(["ip", "netns", "exec", &self.attackers[i].0])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        for ns in self
            .attackers
            .iter()
            .map(|a| a.0.as_str())
            .chain([self.hub.as_str()])
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// (seconds since start, pid, RSS MiB, open descriptors, CPU seconds), every second.
type Sample = (f64, i32, f64, usize, f64);

/// (RSS MiB, open descriptors, CPU seconds) of a process.
fn usage(pid: i32) -> Option<(f64, usize, f64)> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let (cpu, rss, _) = decnet_tests::proc_usage(pid);
    Some((rss as f64 / 1024.0, fds, cpu))
}

#[test]
fn soak() {
    if !require_root() {
        return;
    }
    let Some(bin) = std::env::var_os("DECNET_SOAK_BIN").map(std::path::PathBuf::from) else {
        decnet_tests::skip(
            "the soak runs the release binary; set DECNET_SOAK_BIN \
             (cargo xtask test and cargo xtask soak do)",
        );
        return;
    };
    for t in ["nmap", "hping3", "masscan"] {
        require_tool(t);
    }
    let minutes: f64 = std::env::var("DECNET_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2.0);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let net = Net::new(4);
    let bpffs = Bpffs::mount("soak");
    let dir = std::env::temp_dir().join(format!("decnet-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
    std::fs::create_dir_all(&dir).expect("data dir");
    let pin_dir = bpffs.0.join("decnet").to_string_lossy().into_owned();
    // A journal cap that rotates a few times per run at this workload.
    let journal_mb = ((minutes * 2.0).ceil() as u64).max(2).to_string();
    let env = [
        ("DECNET_PIN", "true"),
        ("DECNET_PIN_DIR", pin_dir.as_str()),
        ("DECNET_JOURNAL_MAX_MB", journal_mb.as_str()),
        ("DECNET_JOURNAL_KEEP", "64"),
        // Shutdown stages with their times, for a slow stop.
        ("DECNET_LOG", "info,decnet::daemon=debug"),
    ];
    let decoys = [format!("{}=soak", net.decoy)];
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let start = |a| Daemon::start_at(&bin, &net.host_if, &decoys, &dir, &env, a);
    let mut daemon = start(addr);
    let api = Arc::new(Mutex::new(addr));
    let pid = Arc::new(AtomicI32::new(daemon.pid()));
    let t0 = Instant::now();
    let end = t0 + total;
    let at = |f: f64| t0 + total.mul_f64(f);

    let stop_clients = Arc::new(AtomicBool::new(false));
    let seen: Vec<Arc<Mutex<Seen>>> = (0..SSE_CLIENTS).map(|_| Arc::default()).collect();
    let clients: Vec<_> = seen
        .iter()
        .map(|s| {
            let (api, stop, s) = (api.clone(), stop_clients.clone(), s.clone());
            std::thread::spawn(move || sse_client(api, stop, s))
        })
        .collect();

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop, pid) = (samples.clone(), stop_sampler.clone(), pid.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let p = pid.load(Relaxed);
                if let Some((rss, fds, cpu)) = usage(p) {
                    samples.lock().expect("samples").push((
                        t0.elapsed().as_secs_f64(),
                        p,
                        rss,
                        fds,
                        cpu,
                    ));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let decoy = net.decoy.clone();
    let mac = net.mac();
    let left = || end.saturating_duration_since(Instant::now()).as_secs_f64();
    let restarts = std::thread::scope(|s| {
        // nmap: 2,000 ports at 100 packets/s, repeated.
        s.spawn(|| {
            while Instant::now() < end {
                net.exec(
                    0,
                    &[
                        "nmap",
                        "-n",
                        "-Pn",
                        "-sS",
                        "--max-rate",
                        "100",
                        "-p",
                        "1-2000",
                        &decoy,
                    ],
                    left().min(60.0),
                );
            }
        });
        // hping3: 50 SYNs/s, the destination port moving with each.
        s.spawn(|| {
            while Instant::now() < end {
                net.exec(
                    1,
                    &[
                        "hping3", "-S", "-p", "++3000", "-i", "u20000", "-c", "250", &decoy,
                    ],
                    left().min(10.0),
                );
            }
        });
        // masscan: 3,000 ports at 100 packets/s.
        s.spawn(|| {
            let (ifname, addr) = (&net.attackers[2].1, &net.attackers[2].2);
            while Instant::now() < end {
                net.exec(
                    2,
                    &[
                        "masscan",
                        &decoy,
                        "-p1-3000",
                        "--rate",
                        "100",
                        "--wait",
                        "1",
                        "--adapter",
                        ifname,
                        "--adapter-ip",
                        addr,
                        "--router-mac",
                        &mac,
                    ],
                    left().min(40.0),
                );
            }
        });
        // One flood burst.
        s.spawn(|| {
            std::thread::sleep(at(0.3).saturating_duration_since(Instant::now()));
            net.exec(3, &["hping3", "--flood", "-S", "-p", "80", &decoy], 3.0);
        });
        // Two restarts.
        let mut restarts = 0;
        for f in [0.2, 0.45] {
            std::thread::sleep(at(f).saturating_duration_since(Instant::now()));
            assert!(daemon.stop().success(), "clean stop");
            daemon = start(addr);
            pid.store(daemon.pid(), Relaxed);
            restarts += 1;
            // A restart that did not take the handover restarts the userspace counters, and
            // the identity settle() waits for can then never hold: say so here, with the
            // stopped daemon's shutdown in view.
            let h = daemon.health();
            if h["pin"]["start"] != "clean" {
                let log = daemon.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "restart {restarts} did not take the handover: {}\n{}",
                    h["pin"],
                    tail.join("\n")
                );
            }
        }
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        restarts
    });

    // Everything the kernel counted, accounted for (the identity settle() waits for).
    let s = daemon.settle();
    let last_id = s["ingest"]["last_id"].as_i64().expect("last_id");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !seen
            .iter()
            .all(|c| c.lock().expect("seen").last == Some(last_id))
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_clients.store(true, Relaxed);
    for c in clients {
        c.join().expect("SSE client");
    }
    stop_sampler.store(true, Relaxed);
    sampler.join().expect("sampler");
    let h = daemon.health();

    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let (k, p, i) = (&s["kernel"], &s["pipeline"], &s["ingest"]);
    let samples = samples.lock().expect("samples").clone();
    let final_pid = daemon.pid();
    let life: Vec<_> = samples.iter().filter(|x| x.1 == final_pid).collect();
    let half = total.as_secs_f64() / 2.0;
    let last_half: Vec<_> = life.iter().filter(|x| x.0 >= half).collect();
    let third = (last_half.len() / 3).max(1);
    let peak = |xs: &[&&Sample]| {
        xs.iter()
            .fold((0.0f64, 0usize), |(r, f), x| (r.max(x.2), f.max(x.3)))
    };
    let (rss_early, fds_early) = peak(&last_half[..third.min(last_half.len())]);
    let (rss_late, fds_late) = peak(&last_half[last_half.len().saturating_sub(third)..]);
    let seen: Vec<Seen> = seen
        .iter()
        .map(|c| c.lock().expect("seen").clone())
        .collect();
    let sum = |f: fn(&Seen) -> u64| seen.iter().map(f).sum::<u64>();

    println!("\n== soak: {minutes} min, {SSE_CLIENTS} SSE clients, {restarts} restarts ==");
    println!(
        "kernel: {} packets to decoys, {} events emitted, {} withheld by the flood guard \
         (in {} summaries), {} probe outcomes, {} flow summaries",
        n(&k["packets_to_decoy"]),
        n(&k["events_emitted"]),
        n(&k["suppressed"]),
        n(&k["suppressed_summaries"]),
        n(&k["probe_outcomes"]),
        n(&k["flow_summaries"]),
    );
    println!(
        "journal: {} lines written ({} MiB), {} rotations; database: {} rows, {} dead letters",
        n(&p["journal_written"]),
        n(&p["journal_bytes"]) >> 20,
        n(&i["rotations"]),
        n(&i["rows"]),
        n(&i["dead_letters"]),
    );
    println!(
        "drops by stage: ring full {}, malformed {}, decode {}, channel full {}, journal write {}, dead letters {}",
        n(&k["ring_reserve_failed"]),
        n(&k["malformed"]),
        n(&p["decode_errors"]),
        n(&p["channel_full_dropped"]),
        n(&p["journal_write_failed"]),
        n(&i["dead_letters"]),
    );
    println!(
        "SSE: {} log events per client (min {}), gaps {}, duplicates {}, reconnects {}, \
         shutdown events {}, resets {}",
        sum(|c| c.logs) / SSE_CLIENTS as u64,
        seen.iter().map(|c| c.logs).min().unwrap_or(0),
        sum(|c| c.gaps),
        sum(|c| c.dups),
        sum(|c| c.reconnects),
        sum(|c| c.shutdowns),
        sum(|c| c.resets),
    );
    let first = samples.first().copied().unwrap_or_default();
    let lastx = samples.last().copied().unwrap_or_default();
    println!(
        "RSS: {:.1} MiB at start, {:.1} MiB at the end; last half: peak {:.1} MiB in its first \
         third, {:.1} MiB in its last; fds {} -> {} (last half {} -> {})",
        first.2, lastx.2, rss_early, rss_late, first.3, lastx.3, fds_early, fds_late
    );
    // Each daemon's CPU load over its life (CPU seconds per wall second).
    let mut pids: Vec<i32> = samples.iter().map(|x| x.1).collect();
    pids.dedup();
    let loads: Vec<String> = pids
        .iter()
        .map(|p| {
            let xs: Vec<_> = samples.iter().filter(|x| x.1 == *p).collect();
            let (a, b) = (xs[0], xs[xs.len() - 1]);
            format!("{:.2}", (b.4 - a.4) / (b.0 - a.0).max(1.0))
        })
        .collect();
    println!("daemon CPU load (cores) per life: {}", loads.join(", "));
    println!(
        "restarts survived: {} (pin: {})",
        n(&h["pin"]["restarts"]),
        h["pin"]
    );

    assert_eq!(restarts, 2);
    assert_eq!(h["pin"]["start"], "clean", "{h}");
    assert_eq!(h["pin"]["restarts"], 2, "{h}");
    assert!(n(&i["rotations"]) >= 1, "the journal rotated: {s}");
    assert!(n(&k["suppressed"]) > 0, "the flood was summarised: {s}");
    assert_eq!(n(&i["rows"]), n(&p["journal_written"]), "{s}");
    assert_eq!(n(&i["dead_letters"]), 0, "{s}");
    for (c, x) in seen.iter().enumerate() {
        assert_eq!(x.gaps, 0, "client {c} missed log ids: {x:?}");
        assert_eq!(x.dups, 0, "client {c} saw log ids twice: {x:?}");
        assert_eq!(x.last, Some(last_id), "client {c} did not catch up: {x:?}");
        assert!(x.shutdowns >= 2, "client {c} saw both restarts: {x:?}");
    }
    assert!(
        last_half.len() >= 6,
        "samples over the last half: {}",
        last_half.len()
    );
    assert!(
        rss_late <= rss_early * 1.15 + 8.0,
        "RSS grew over the last half: {rss_early:.1} -> {rss_late:.1} MiB"
    );
    assert!(
        fds_late <= fds_early + 4,
        "descriptors grew over the last half: {fds_early} -> {fds_late}"
    );
    assert!(daemon.stop().success());
}
