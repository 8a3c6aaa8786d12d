//! Least privilege: after the programs are loaded and attached and their maps are open, the
//! daemon needs no capability at all. Map fds, the ring's mapping and the bpf_links keep
//! working for whoever holds them (since Linux 5.19, even with
//! `kernel.unprivileged_bpf_disabled`), and closing a link fd detaches its program.
//!
//! Two ways in, one way out:
//! - started as root (`sudo decnet run`, tests): the data dir is handed to the target user,
//!   then groups, gid and uid are changed; leaving uid 0 clears every capability.
//! - started as that user with ambient capabilities (the systemd unit in `dist/`): the
//!   ambient set is cleared and the thread's capability sets emptied.
//!
//! Either way `no_new_privs` is set and the result is checked on every thread (capability
//! sets are per thread): a thread that kept a capability is reported by name. This runs
//! before the tokio runtime starts, so the only other thread that can exist is the developer
//! tracing exporter.

use std::{ffi::CString, path::Path};

/// The user value that keeps root (for debugging; logged as a warning).
pub(crate) const KEEP_ROOT: &str = "root";

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("user `{0}` does not exist (set --user / DECNET_USER / `user`)")]
    NoSuchUser(String),
    #[error("handing {0} to the daemon user: {1}")]
    Chown(std::path::PathBuf, #[source] std::io::Error),
    #[error("dropping privileges ({0}): {1}")]
    Syscall(&'static str, #[source] std::io::Error),
    #[error(
        "user `{user}` cannot reach the data dir {dir}: {blocker} does not let it through \
         (choose a --data-dir it can reach, e.g. under /var/lib, or --user root)"
    )]
    Unreachable {
        user: String,
        dir: std::path::PathBuf,
        blocker: std::path::PathBuf,
    },
    #[error("threads kept capabilities after the drop: {0}")]
    Kept(String),
    #[error(
        "started as uid {current}, which cannot become `{user}` without root: start as root, \
         or as `{user}` (with ambient capabilities, like dist/decnet.service)"
    )]
    WrongUser { current: u32, user: String },
}

/// What the drop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// `--user root`: nothing dropped.
    KeptRoot,
    /// Now running as this uid/gid with no capabilities.
    To { user: String, uid: u32, gid: u32 },
}

fn os_err(what: &'static str) -> PrivilegeError {
    PrivilegeError::Syscall(what, std::io::Error::last_os_error())
}

/// uid and gid of a user name.
fn lookup(user: &str) -> Result<(u32, u32), PrivilegeError> {
    let name = CString::new(user).map_err(|_| PrivilegeError::NoSuchUser(user.into()))?;
    // SAFETY: passwd is plain data (integers and pointers); all-zero is a valid value.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; getpwnam_r writes only into pw and buf.
    let r = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if r != 0 || out.is_null() {
        return Err(PrivilegeError::NoSuchUser(user.into()));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

/// Gives `dir` and the files directly in it to `uid:gid` (the daemon creates no subdirs).
fn hand_over(dir: &Path, uid: u32, gid: u32) -> Result<(), PrivilegeError> {
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .map_err(|e| PrivilegeError::Chown(p.to_owned(), e))
    };
    chown(dir)?;
    let entries = std::fs::read_dir(dir).map_err(|e| PrivilegeError::Chown(dir.to_owned(), e))?;
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            chown(&e.path())?;
        }
    }
    Ok(())
}

/// Checks that `uid:gid` (no supplementary groups) may walk every directory above `dir`:
/// SQLite resolves the database's full path component by component at every open.
fn reachable(dir: &Path, uid: u32, gid: u32) -> Result<(), std::path::PathBuf> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    // The dir itself may not exist yet: check what exists above it.
    let Ok(abs) = std::path::absolute(dir) else {
        return Ok(());
    };
    for a in abs.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(a) else {
            continue;
        };
        let mode = m.permissions().mode();
        let x = if m.uid() == uid {
            mode & 0o100
        } else if m.gid() == gid {
            mode & 0o010
        } else {
            mode & 0o001
        };
        if x == 0 {
            return Err(a.to_owned());
        }
    }
    Ok(())
}

/// What can be checked before anything is loaded: the user exists, this process can become
/// it, and it can reach the data dir. Returns its uid and gid (None for `root`).
pub fn preflight(user: &str, data_dir: &Path) -> Result<Option<(u32, u32)>, PrivilegeError> {
    if user == KEEP_ROOT {
        return Ok(None);
    }
    let (uid, gid) = lookup(user)?;
    // SAFETY: no arguments.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        reachable(data_dir, uid, gid).map_err(|blocker| PrivilegeError::Unreachable {
            user: user.to_owned(),
            dir: data_dir.to_owned(),
            blocker,
        })?;
    } else if euid != uid {
        return Err(PrivilegeError::WrongUser {
            current: euid,
            user: user.to_owned(),
        });
    }
    Ok(Some((uid, gid)))
}

/// Drops to `user` (see the module docs). `data_dir` is handed over first when starting as
/// root.
pub fn drop_to(user: &str, data_dir: &Path) -> Result<Dropped, PrivilegeError> {
    let Some((uid, gid)) = preflight(user, data_dir)? else {
        return Ok(Dropped::KeptRoot);
    };
    // SAFETY: geteuid and prctl take no pointers.
    unsafe {
        if libc::geteuid() == 0 {
            hand_over(data_dir, uid, gid)?;
            become_user(uid, gid)?;
        } else {
            clear_ambient()?;
            set_thread_caps(0)?;
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os_err("no_new_privs"));
        }
    }
    let kept = threads_with_caps();
    if !kept.is_empty() {
        return Err(PrivilegeError::Kept(kept.join(", ")));
    }
    Ok(Dropped::To {
        user: user.to_owned(),
        uid,
        gid,
    })
}

/// `CAP_NET_ADMIN` (linux/capability.h): attaching XDP and TC.
pub(crate) const CAP_NET_ADMIN: u32 = 12;
/// `CAP_BPF`: creating links for loaded programs.
pub const CAP_BPF: u32 = 39;

/// The re-attach helper's drop (see `reattach`): becomes `user` like the daemon does, but
/// keeps `caps` in its effective and permitted sets (nothing inheritable or ambient), with
/// `no_new_privs`. Only for a single-threaded process (capability sets are per thread): the
/// helper is a child forked before the runtime started. `root` keeps root, as for the daemon.
pub(crate) fn narrow_to(user: &str, data_dir: &Path, caps: &[u32]) -> Result<(), PrivilegeError> {
    let Some((uid, gid)) = preflight(user, data_dir)? else {
        return Ok(());
    };
    let mask = caps.iter().fold(0u64, |m, &c| m | 1 << c);
    // SAFETY: geteuid and prctl take no pointers.
    unsafe {
        if libc::geteuid() == 0 {
            // Leaving uid 0 would clear the permitted set; KEEPCAPS keeps it (effective is
            // still cleared, and set again below).
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
                return Err(os_err("keepcaps"));
            }
            become_user(uid, gid)?;
        } else {
            clear_ambient()?;
        }
    }
    set_thread_caps(mask)?;
    // SAFETY: no pointers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os_err("no_new_privs"));
    }
    Ok(())
}

/// No supplementary groups, then `gid` and `uid` for real, effective and saved ids (glibc
/// applies these to every thread of the process).
fn become_user(uid: u32, gid: u32) -> Result<(), PrivilegeError> {
    // SAFETY: plain syscalls without pointers (a null list for setgroups).
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(os_err("setgroups"));
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(os_err("setresgid"));
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(os_err("setresuid"));
        }
    }
    Ok(())
}

/// Empties the ambient set (what a systemd unit's AmbientCapabilities granted).
fn clear_ambient() -> Result<(), PrivilegeError> {
    // SAFETY: prctl without pointers.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(os_err("clearing ambient capabilities"));
    }
    Ok(())
}

/// Sets the calling thread's effective and permitted sets to `mask` (a bit per capability)
/// and empties its inheritable set.
fn set_thread_caps(mask: u64) -> Result<(), PrivilegeError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| (mask >> shift) as u32;
    let d = [
        Data {
            effective: half(0),
            permitted: half(0),
            inheritable: 0,
        },
        Data {
            effective: half(32),
            permitted: half(32),
            inheritable: 0,
        },
    ];
    // SAFETY: header and two data structs as capset(2) v3 expects.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) };
    if r != 0 {
        return Err(os_err("capset"));
    }
    Ok(())
}

/// `name (tid)` of every thread whose effective or permitted set is not empty.
pub(crate) fn threads_with_caps() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return vec!["(cannot read /proc/self/task)".into()];
    };
    let mut kept = vec![];
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let nonzero = |v: String| u64::from_str_radix(&v, 16) != Ok(0);
        if nonzero(field("CapEff:")) || nonzero(field("CapPrm:")) {
            kept.push(format!(
                "{} ({})",
                field("Name:"),
                t.file_name().to_string_lossy()
            ));
        }
    }
    kept
}

/// Whether this process holds capability `cap` in its effective set (CAP_BPF for `decnet
/// replay`, which loads and runs programs but attaches nothing).
pub fn has_effective(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|eff| cap < 64 && eff & (1 << cap) != 0)
}
