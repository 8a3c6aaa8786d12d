//! Attaching again when the decoy interface is deleted and created anew.
//!
//! Deleting an interface detaches its programs for good: a bpf_link whose device is gone is
//! defunct, and the new interface of the same name starts bare. Attaching needs CAP_BPF and
//! CAP_NET_ADMIN, which the daemon gave up (see `privilege`). So before giving them up,
//! `decnet run` forks a helper, privilege-separation style: it becomes the daemon's user too
//! but keeps exactly those two capabilities (nothing inheritable, `no_new_privs`), holds a
//! copy of the loaded programs, and does only what a one-byte command on its socket asks:
//! - `A`: attach the programs to the interface as it is now (XDP and TC egress), answering
//!   `ok <xdp mode> <egress mode>` or `err <why>`;
//! - `D`: detach what it attached (unpinned sensors, at shutdown), answering `ok`.
//!
//! It reads nothing an attacker controls and exits when the daemon's end closes (or the
//! daemon dies). The daemon polls the interface's index once a second ([`watch`]): gone is
//! reported, back (a new index) is attached again through the helper.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use tokio::sync::watch as tokio_watch;

use crate::{
    config::RunConfig,
    privilege,
    sensor::{
        Sensor,
        iface::{IfaceState, IfaceStatus},
        loader::nix_if_index,
    },
};

/// The daemon's end of the helper.
pub struct Helper {
    sock: UnixStream,
    pid: i32,
}

impl Helper {
    /// Forks the helper. Call while privileged and before any runtime thread exists.
    pub fn spawn(sensor: &mut Sensor, cfg: &RunConfig) -> io::Result<Helper> {
        let (ours, theirs) = UnixStream::pair()?;
        // SAFETY: fork before the runtime starts; the child only runs `serve`, which uses
        // its own copies of the sensor and socket, and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop(ours);
            let code = serve(sensor, cfg, theirs);
            // SAFETY: ends the child without running the parent's destructors or atexit.
            unsafe { libc::_exit(code) }
        }
        drop(theirs);
        Ok(Helper { sock: ours, pid })
    }

    fn ask(&mut self, cmd: u8) -> io::Result<String> {
        self.sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        self.sock.write_all(&[cmd])?;
        let mut line = String::new();
        BufReader::new(&self.sock).read_line(&mut line)?;
        if line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the re-attach helper is gone",
            ));
        }
        Ok(line.trim_end().to_owned())
    }

    /// Attaches the programs to the interface as it is now. Returns the helper's answer
    /// (`ok skb tcx`), or its reason.
    pub fn reattach(&mut self) -> Result<String, String> {
        match self.ask(b'A') {
            Ok(l) if l.starts_with("ok") => Ok(l),
            Ok(l) => Err(l.trim_start_matches("err ").to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Detaches what the helper attached.
    pub fn detach(&mut self) {
        let _ = self.ask(b'D');
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        // SAFETY: reaps our own child (it exits on EOF).
        unsafe {
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

/// The helper's life: narrow privileges, then answer commands until the socket closes.
fn serve(sensor: &mut Sensor, cfg: &RunConfig, mut sock: UnixStream) -> i32 {
    // SAFETY: prctl without pointers; getppid has no arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() == 1 {
            return 0;
        }
    }
    // With pins, new links are pinned next to the old ones: the pin directory must be
    // writable by the user the helper becomes.
    if cfg.pin
        && let Some((uid, gid)) = privilege::preflight(&cfg.user, &cfg.data_dir)
            .ok()
            .flatten()
    {
        let _ = std::os::unix::fs::chown(cfg.pin_dir.join(&cfg.iface), Some(uid), Some(gid));
    }
    if let Err(e) = privilege::narrow_to(
        &cfg.user,
        &cfg.data_dir,
        &[privilege::CAP_BPF, privilege::CAP_NET_ADMIN],
    ) {
        tracing::error!(error = %e, "re-attach helper: dropping privileges failed; exiting");
        return 1;
    }
    let mut cmd = [0u8; 1];
    loop {
        match sock.read(&mut cmd) {
            Ok(1) => {}
            _ => return 0,
        }
        let reply = match cmd[0] {
            b'A' => match sensor.attach(&cfg.iface, cfg.xdp_mode) {
                Ok(mode) => {
                    let egress = match sensor.attach_egress(&cfg.iface) {
                        Ok(m) => m.to_string(),
                        Err(e) => {
                            tracing::warn!(error = %e, "re-attach: no egress program");
                            "none".to_owned()
                        }
                    };
                    format!("ok {mode} {egress}\n")
                }
                Err(e) => format!("err {e}\n"),
            },
            b'D' => {
                let _ = sensor.detach();
                "ok\n".to_owned()
            }
            _ => "err unknown command\n".to_owned(),
        };
        if sock.write_all(reply.as_bytes()).is_err() {
            return 0;
        }
    }
}

/// Polls the interface's index once a second until `shutdown`; attaches again through the
/// helper when the interface comes back as a new one. Returns the helper for shutdown.
pub async fn watch(
    iface: String,
    mut helper: Option<Helper>,
    status: Arc<IfaceStatus>,
    mut shutdown: tokio_watch::Receiver<bool>,
) -> Option<Helper> {
    let mut attached_to = nix_if_index(&iface);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return helper,
        }
        let now = nix_if_index(&iface);
        if now == attached_to {
            continue;
        }
        if attached_to.is_some() {
            status.lost.fetch_add(1, Relaxed);
            tracing::warn!(
                iface,
                "the decoy interface is gone, and its programs with it; \
                waiting for it to come back"
            );
            status.set(IfaceState::Gone);
            attached_to = None;
        }
        let Some(index) = now else { continue };
        let Some(mut h) = helper.take() else {
            tracing::warn!(
                iface,
                "the decoy interface is back but there is no re-attach helper: \
                restart decnet to capture on it"
            );
            status.set(IfaceState::Detached);
            attached_to = Some(index);
            continue;
        };
        let (h, answer) = match tokio::task::spawn_blocking(move || {
            let a = h.reattach();
            (h, a)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => return None,
        };
        helper = Some(h);
        match answer {
            Ok(how) => {
                status.reattached.fetch_add(1, Relaxed);
                status.set(IfaceState::Attached);
                attached_to = Some(index);
                tracing::info!(iface, ifindex = index, answer = %how,
                    "the decoy interface is back: programs attached again");
            }
            Err(e) => {
                status.set(IfaceState::Detached);
                tracing::error!(iface, error = %e, "attaching to the recreated interface failed; retrying");
            }
        }
    }
}
