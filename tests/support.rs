//! Helpers for the end-to-end tests: namespaces and veth pairs made by the test itself, the
//! real `decnet` binary as a child process, and readers for its journal and API.
//!
//! Traffic only ever goes to addresses created here. Every wait has a deadline.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod certs;
pub mod chain;
pub mod cpu;
pub mod mmdb;
pub mod otlp;
pub mod pg;
pub mod receivers;
pub mod sse;
pub mod webdriver;

/// Says `skipping: <why>` where it is seen: straight to the process's stderr. The test
/// harness captures `eprintln!` of a passing test, so a skip said that way passed silently.
pub fn skip(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipping: {why}");
}

/// True when the test may run; says `skipping: <why>` otherwise.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root for network namespaces and XDP");
        return false;
    }
    true
}

/// Panics with an install hint when a tool the test drives is missing.
pub fn require_tool(tool: &str) {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(tool).is_file());
    assert!(
        found,
        "{tool} is not installed: `apt-get install {tool}` (cargo xtask test does it as root)"
    );
}

/// The decnet binary: $DECNET_BIN (set by `cargo xtask test`) or target/debug/decnet.
pub fn decnet_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DECNET_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/decnet");
    assert!(
        p.is_file(),
        "{} missing: run through `cargo xtask test`, or `cargo build -p decnet` first",
        p.display()
    );
    p
}

fn sh(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ip ARGS...`, which must succeed.
pub fn ip(args: &[&str]) {
    sh(Command::new("ip").args(args));
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace with the attacker end of a veth pair; the decoy addresses sit on the
/// host end. Removed on drop.
pub struct Lab {
    pub ns: String,
    pub host_if: String,
    pub ns_if: String,
    pub decoy: String,
    pub attacker: String,
    pub decoy6: String,
    pub attacker6: String,
}

impl Lab {
    /// `subnet` (1..=250) picks 10.231.<subnet>.0/24 and fd00:231:<subnet>::/64; tests use
    /// distinct subnets so they can run in parallel.
    pub fn new(subnet: u8) -> Lab {
        let id = std::process::id() % 10_000 * 10 + NEXT.fetch_add(1, Ordering::SeqCst);
        let lab = Lab {
            ns: format!("dntest-{id}"),
            host_if: format!("dnt{id}h"),
            ns_if: format!("dnt{id}n"),
            decoy: format!("10.231.{subnet}.1"),
            attacker: format!("10.231.{subnet}.2"),
            decoy6: format!("fd00:231:{subnet}::1"),
            attacker6: format!("fd00:231:{subnet}::2"),
        };
        sh(Command::new("ip").args(["netns", "add", &lab.ns]));
        lab.plumb();
        sh(Command::new("ip").args(["-n", &lab.ns, "link", "set", "lo", "up"]));
        lab
    }

    /// The veth pair, its addresses and links up.
    fn plumb(&self) {
        let ip = |args: &[&str]| sh(Command::new("ip").args(args));
        ip(&[
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &self.ns_if,
        ]);
        ip(&["link", "set", &self.ns_if, "netns", &self.ns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.decoy),
            "dev",
            &self.host_if,
        ]);
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", self.decoy6),
            "dev",
            &self.host_if,
            "nodad",
        ]);
        ip(&["link", "set", &self.host_if, "up"]);
        ip(&[
            "-n",
            &self.ns,
            "addr",
            "add",
            &format!("{}/24", self.attacker),
            "dev",
            &self.ns_if,
        ]);
        ip(&[
            "-n",
            &self.ns,
            "-6",
            "addr",
            "add",
            &format!("{}/64", self.attacker6),
            "dev",
            &self.ns_if,
            "nodad",
        ]);
        ip(&["-n", &self.ns, "link", "set", &self.ns_if, "up"]);
    }

    /// Deletes the veth pair and creates it again with the same names and addresses (a new
    /// interface index: whatever was attached to the old one is gone).
    pub fn recreate_link(&self) {
        sh(Command::new("ip").args(["link", "del", &self.host_if]));
        self.plumb();
    }

    /// Runs a command inside the attacker namespace, bounded by `timeout_s`.
    pub fn exec(&self, args: &[&str], timeout_s: u32) -> Output {
        let out = Command::new("timeout")
            .arg(timeout_s.to_string())
            .args(["ip", "netns", "exec", &self.ns])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("starting {args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?} in {} failed ({}): {}",
            self.ns,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// MAC address of the host (decoy) end, for tools that need a next-hop MAC (masscan).
    pub fn host_mac(&self) -> String {
        std::fs::read_to_string(format!("/sys/class/net/{}/address", self.host_if))
            .expect("host MAC")
            .trim()
            .to_owned()
    }

    /// Whether the host end currently has an XDP program attached.
    /// Whether an ingress program is on the host side: XDP (any mode) or a tcx ingress
    /// link (`--xdp-mode tc`, and auto on a veth).
    pub fn ingress_attached(&self) -> bool {
        let out = sh(Command::new("ip").args(["-d", "link", "show", "dev", &self.host_if]));
        String::from_utf8_lossy(&out.stdout).contains("xdp") || self.tcx_ingress_programs() > 0
    }

    /// Programs on the host side's tcx ingress hook (BPF_PROG_QUERY; `ip` does not show tcx).
    pub fn tcx_ingress_programs(&self) -> u32 {
        /// The BPF_PROG_QUERY part of `union bpf_attr` (linux/bpf.h).
        #[repr(C)]
        #[derive(Default)]
        struct Query {
            target_ifindex: u32,
            attach_type: u32,
            query_flags: u32,
            attach_flags: u32,
            prog_ids: u64,
            prog_cnt: u32,
            _pad: u32,
            prog_attach_flags: u64,
            link_ids: u64,
            link_attach_flags: u64,
            revision: u64,
        }
        const BPF_PROG_QUERY: libc::c_long = 16;
        const BPF_TCX_INGRESS: u32 = 46;
        let name = std::ffi::CString::new(self.host_if.as_str()).expect("name");
        // SAFETY: a NUL-terminated name; the query struct is ours and sized as passed.
        unsafe {
            let mut q = Query {
                target_ifindex: libc::if_nametoindex(name.as_ptr()),
                attach_type: BPF_TCX_INGRESS,
                ..Query::default()
            };
            if q.target_ifindex == 0 {
                return 0;
            }
            let rc = libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_QUERY,
                &mut q as *mut Query,
                std::mem::size_of::<Query>() as u32,
            );
            if rc == 0 { q.prog_cnt } else { 0 }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether a network namespace of that name exists.
pub fn netns_exists(name: &str) -> bool {
    let out = sh(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Whether an interface of that name exists in the root namespace.
pub fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// A UDP port on 127.0.0.1 free at the time of the call.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp port 0");
    s.local_addr().expect("local addr").port()
}

/// A running `decnet run` child with its API. SIGKILLed on drop if still running.
pub struct Daemon {
    proc_: Proc,
    pub data_dir: PathBuf,
    pub api: SocketAddr,
}

impl Daemon {
    pub fn start(iface: &str, decoys: &[String], data_dir: &Path) -> Daemon {
        Self::start_with_env(iface, decoys, data_dir, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub fn start_with_env(
        iface: &str,
        decoys: &[String],
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Self::start_at(&decnet_bin(), iface, decoys, data_dir, env, api)
    }

    /// [`start_with_env`](Self::start_with_env) of the binary `bin` with the API on `api` (a
    /// restarted daemon where its clients expect it). The log is appended to, so restarts
    /// keep one log.
    pub fn start_at(
        bin: &Path,
        iface: &str,
        decoys: &[String],
        data_dir: &Path,
        env: &[(&str, &str)],
        api: SocketAddr,
    ) -> Daemon {
        let mut args = vec![
            "run".to_owned(),
            "--iface".to_owned(),
            iface.to_owned(),
            "--listen".to_owned(),
            api.to_string(),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
        ];
        for d in decoys {
            args.extend(["--decoy".to_owned(), d.clone()]);
        }
        let mut d = Daemon {
            proc_: Proc::spawn_bin(bin, &args, env, &data_dir.with_extension("log")),
            data_dir: data_dir.to_owned(),
            api,
        };
        // Served over TLS: the plain health check cannot speak to it; the log says when
        // it listens.
        let tls = env.iter().any(|(k, _)| *k == "DECNET_TLS_CERT");
        d.wait_healthy(tls);
        d
    }

    fn wait_healthy(&mut self, tls: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.proc_.exited() {
                panic!("decnet exited early ({status}):\n{}", self.log_text());
            }
            if tls && self.log_text().contains("API listening") {
                return;
            }
            if !tls && http_get(self.api, "/api/v1/health").is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "decnet did not become healthy in 20 s:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        self.proc_.log_text()
    }

    pub fn pid(&self) -> i32 {
        self.proc_.pid()
    }

    /// `GET /api/v1/health`.
    pub fn health(&self) -> Value {
        let (_, body) = http_get(self.api, "/api/v1/health").expect("GET /api/v1/health");
        serde_json::from_str(&body).expect("health JSON")
    }

    pub fn stats(&self) -> Value {
        let (code, body) = http_get(self.api, "/api/v1/stats").expect("GET /api/v1/stats");
        assert_eq!(code, 200, "stats: {body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// Waits until every event the kernel emitted is accounted for in userspace (written
    /// or counted as dropped), every written line is ingested (row or dead letter), and
    /// nothing moved for 300 ms. Returns the final stats.
    pub fn settle(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = Value::Null;
        let mut stable_since = Instant::now();
        loop {
            let s = self.stats();
            let p = &s["pipeline"];
            // Flood-guard and flow summaries written by the userspace sweeps come on top of
            // the kernel's events; kernel summaries a sweep had already covered are not written.
            let emitted = s["kernel"]["events_emitted"].as_u64().unwrap_or(0)
                + p["summaries_swept"].as_u64().unwrap_or(0)
                + p["flows_swept"].as_u64().unwrap_or(0);
            let accounted = [
                "journal_written",
                "channel_full_dropped",
                "journal_write_failed",
                "decode_errors",
                "summaries_merged",
            ]
            .iter()
            .map(|k| p[*k].as_u64().unwrap_or(0))
            .sum::<u64>();
            let ingested = s["ingest"]["rows"].as_u64().unwrap_or(0)
                + s["ingest"]["dead_letters"].as_u64().unwrap_or(0);
            let written = p["journal_written"].as_u64().unwrap_or(0);
            // Withheld events are all in summaries once the sweep has seen the flood end.
            let summarised = s["kernel"]["suppressed"].as_u64().unwrap_or(0)
                == p["suppressed_reported"].as_u64().unwrap_or(0);
            if s != last {
                last = s.clone();
                stable_since = Instant::now();
            } else if emitted == accounted
                && summarised
                && ingested == written
                && stable_since.elapsed() >= Duration::from_millis(300)
            {
                return s;
            }
            if Instant::now() >= deadline {
                let log = self.log_text();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "pipeline did not settle: {s}\nlast lines of the daemon's log:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /api/v1/attackers/{ip}`, waiting (bounded) until the profile has absorbed every
    /// ingested row of that attacker's journal lines (see [`profile_rows`]).
    pub fn attacker(&self, ip: &str) -> Value {
        let want = read_journal(&self.journal_path())
            .iter()
            .filter(|r| r["attacker_ip"] == ip)
            .count() as u64;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some((200, body)) = http_get(self.api, &format!("/api/v1/attackers/{ip}")) {
                let v: Value = serde_json::from_str(&body).expect("profile JSON");
                if profile_rows(&v) == want {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "profile of {ip} did not reach {want} events within 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join("events.jsonl")
    }

    /// Sends `signal` and waits (bounded) for exit.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        self.proc_.stop_with(signal)
    }

    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.stop_with(libc::SIGTERM)
    }
}

/// Every journal line parsed; panics naming the line that is not JSON.
/// The journal rows a profile has absorbed: its own events plus the decoy's answers and
/// flow summaries, which the profile keeps apart (`answers`) from the source's events.
pub fn profile_rows(p: &Value) -> u64 {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    n(&p["event_count"]) + n(&p["answers"]["outcomes"]) + n(&p["answers"]["flows"])
}

pub fn read_journal(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line {}: {e}: {l}", i + 1))
        })
        .collect()
}

/// Minimal blocking HTTP/1.1 request on loopback: (status, body), `None` when nothing
/// answers. Handles chunked bodies.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    // Servers may keep the connection open despite `Connection: close` (chromedriver
    // does): read the head, then exactly the body its headers announce.
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let mut body = buf.split_off(head_end);
    let complete = |b: &[u8]| match (length, chunked) {
        (Some(n), _) => b.len() >= n,
        (None, true) => b.ends_with(b"0\r\n\r\n"),
        (None, false) => false,
    };
    while !complete(&body) {
        let n = s.read(&mut byte).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&byte[..n]);
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    if !chunked {
        return Some((code, text));
    }
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].strip_prefix("\r\n").unwrap_or(&tail[n..]);
    }
    Some((code, out))
}

/// The API token every test daemon gets (DECNET_API_TOKEN).
pub const API_TOKEN: &str = "decnet-test-token-7d1f0c2e9a";

/// Minimal HTTP/1.1 GET on loopback with the test token: (status, body), `None` when
/// nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// A process's CPU seconds (user + system), RSS and peak RSS in KiB, from /proc.
pub fn proc_usage(pid: i32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (ticks / hz, kib("VmRSS:"), kib("VmHWM:"))
}

/// A helper process (a listener, a client) the test started: killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bpffs instance of a test's own (this machine may have none at /sys/fs/bpf), for
/// `--pin-dir`; unmounting it releases whatever is still pinned there.
pub struct Bpffs(pub PathBuf);

impl Bpffs {
    pub fn mount(name: &str) -> Bpffs {
        let p = std::env::temp_dir().join(format!("decnet-bpffs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&p)
            .status()
            .expect("mount");
        assert!(ok.success(), "mount -t bpf");
        Bpffs(p)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A `decnet` process of any role (`run --role sensor|analyst|api`), its stderr appended
/// to `log`. SIGKILLed on drop if still running.
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[String], env: &[(&str, &str)], log: &Path) -> Proc {
        Self::spawn_bin(&decnet_bin(), args, env, log)
    }

    /// [`spawn`](Self::spawn) of the binary `bin`.
    pub fn spawn_bin(bin: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Proc {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("process log file");
        let child = Command::new(bin)
            .args(args)
            .env("DECNET_LOG", "info")
            .env("DECNET_API_TOKEN", API_TOKEN)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawning decnet");
        Proc {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits (bounded) until the log holds `needle` `times` times; panics with the log
    /// when the process exits or the time is up.
    pub fn wait_log(&mut self, needle: &str, times: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let text = self.log_text();
            if text.matches(needle).count() >= times {
                return;
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("decnet exited ({st}) before logging `{needle}`:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` (x{times}) within {within:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` and waits (bounded) for the exit.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "decnet did not exit within 10 s of signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
