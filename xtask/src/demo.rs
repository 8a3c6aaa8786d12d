//! `cargo xtask run`: the demo decoy and signal handling around the daemon.
//!
//! The demo is a network namespace holding the attacker end of a veth pair; the decoy
//! addresses sit on the host end, where the sensor attaches. Everything is removed on
//! Ctrl-C or SIGTERM, and leftovers from a crashed run are removed before starting.

use std::{
    path::Path,
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::run;

pub(crate) const NETNS: &str = "decnet-demo";
pub(crate) const HOST_IF: &str = "dndemo0";
pub(crate) const NS_IF: &str = "dndemo1";
pub(crate) const DECOY_V4: &str = "10.203.0.1";
pub(crate) const ATTACKER_V4: &str = "10.203.0.2";
pub(crate) const DECOY_V6: &str = "fd00:dec0::1";
pub(crate) const ATTACKER_V6: &str = "fd00:dec0::2";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Catch SIGINT/SIGTERM so we get to clean up; called after the child is spawned, so the
/// child keeps the default dispositions.
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

fn quiet_ip(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status();
}

/// Removes the demo namespace and veth, whether or not they exist.
pub(crate) fn cleanup() {
    quiet_ip(&["link", "del", HOST_IF]);
    quiet_ip(&["netns", "del", NETNS]);
}

fn create() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the demo creates a network namespace and attaches XDP: run as root (sudo -E cargo xtask run)"
        );
    }
    cleanup();
    ip(&["netns", "add", NETNS])?;
    ip(&[
        "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF,
    ])?;
    ip(&["link", "set", NS_IF, "netns", NETNS])?;
    ip(&["addr", "add", &format!("{DECOY_V4}/24"), "dev", HOST_IF])?;
    ip(&[
        "-6",
        "addr",
        "add",
        &format!("{DECOY_V6}/64"),
        "dev",
        HOST_IF,
        "nodad",
    ])?;
    ip(&["link", "set", HOST_IF, "up"])?;
    ip(&[
        "-n",
        NETNS,
        "addr",
        "add",
        &format!("{ATTACKER_V4}/24"),
        "dev",
        NS_IF,
    ])?;
    ip(&[
        "-n",
        NETNS,
        "-6",
        "addr",
        "add",
        &format!("{ATTACKER_V6}/64"),
        "dev",
        NS_IF,
        "nodad",
    ])?;
    ip(&["-n", NETNS, "link", "set", NS_IF, "up"])?;
    ip(&["-n", NETNS, "link", "set", "lo", "up"])?;
    Ok(())
}

fn supervise(mut child: Child) -> anyhow::Result<std::process::ExitStatus> {
    catch_signals();
    let mut signalled = false;
    loop {
        if let Some(status) = child.try_wait().context("waiting for decnet")? {
            return Ok(status);
        }
        if STOP.load(Ordering::SeqCst) && !signalled {
            signalled = true;
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn run_demo(bin: &Path) -> anyhow::Result<()> {
    create()?;
    println!(
        "\ndecnet demo: decoys {DECOY_V4} and {DECOY_V6} on {HOST_IF}; attacker namespace `{NETNS}`.\n\
         Probe it from another terminal, for example:\n  \
           sudo ip netns exec {NETNS} nmap -sS -p 1-1000 {DECOY_V4}\n  \
           sudo ip netns exec {NETNS} hping3 -S -c 5 -p 22 {DECOY_V4}\n  \
           sudo ip netns exec {NETNS} nmap -6 -sS -p 22,80 {DECOY_V6}\n\
         Journal: ./decnet-data/events.jsonl\n\
         Dashboard: a signed-in link follows once the daemon is up (token: ./decnet-data/api-token)\n\
         From a shell: decnet attackers / decnet tail  (target/release/decnet)\n\
         Ctrl-C detaches and removes the namespace.\n"
    );
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--iface", HOST_IF])
        .args(["--decoy", &format!("{DECOY_V4}=demo-web")])
        .args(["--decoy", &format!("{DECOY_V6}=demo-web6")]);
    // The daemon drops to `nobody` once attached, and `nobody` must be able to walk to
    // ./decnet-data. A checkout under a private home (/root is 0700) is not: the demo then
    // stays root rather than fail (a deployment uses dist/decnet.service).
    if let Some(blocker) = private_ancestor() {
        println!(
            "decnet demo: {} is closed to other users, so the daemon keeps root (--user root)",
            blocker.display()
        );
        cmd.args(["--user", "root"]);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()));
    if child.is_ok() {
        print_dashboard_link();
    }
    let result = child.and_then(supervise);
    cleanup();
    println!("decnet demo: namespace {NETNS} and veth {HOST_IF} removed");
    let status = result?;
    if !status.success() && !STOP.load(Ordering::SeqCst) {
        bail!("decnet exited with {status}");
    }
    Ok(())
}

/// Prints the dashboard's address with the API token in the URL fragment, once the daemon
/// has written the token: the page reads it from there and the browser never sends it to
/// the server. The demo listens on loopback only, so the link works on this machine alone.
fn print_dashboard_link() {
    let listen = std::env::var("DECNET_LISTEN").unwrap_or_else(|_| "127.0.0.1:8470".into());
    let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
        return;
    };
    if !addr.ip().is_loopback() {
        println!("decnet demo: the API listens on {addr}, beyond loopback: no signed-in link");
        return;
    }
    std::thread::spawn(move || {
        let path = std::path::Path::new("decnet-data/api-token");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline && !STOP.load(Ordering::SeqCst) {
            // The daemon takes DECNET_API_TOKEN over the file, as the link must.
            let token = std::env::var("DECNET_API_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .or_else(|| std::fs::read_to_string(path).ok());
            if let Some(token) = token {
                let token = token.trim();
                if !token.is_empty() {
                    println!("\ndecnet demo: dashboard, signed in: http://{addr}/#token={token}\n");
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// The first directory above the current one that other users cannot pass through.
fn private_ancestor() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .find(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        .map(|a| a.to_owned())
}

pub(crate) fn run_direct(bin: &Path, args: &[String]) -> anyhow::Result<()> {
    let child = Command::new(bin)
        .arg("run")
        .args(args)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let status = supervise(child)?;
    if !status.success() && !STOP.load(Ordering::SeqCst) {
        bail!("decnet exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netns_listed() -> bool {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(NETNS))
    }

    fn link_present() -> bool {
        Command::new("ip")
            .args(["link", "show", "dev", HOST_IF])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A second `create` after a "crash" (no cleanup) succeeds, and cleanup leaves nothing.
    /// Note: uses the real demo names, so it removes a demo that is running right now.
    #[test]
    fn demo_survives_leftovers_and_cleans_up() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: the demo needs root to create a network namespace");
            return;
        }
        create().expect("first create");
        assert!(netns_listed() && link_present());
        create().expect("create over leftovers");
        assert!(netns_listed() && link_present());
        cleanup();
        assert!(!netns_listed(), "demo namespace left behind");
        assert!(!link_present(), "demo veth left behind");
    }
}
