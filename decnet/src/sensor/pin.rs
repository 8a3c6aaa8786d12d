//! Pinning in bpffs (`--pin`): the programs, their links and the maps outlive the daemon.
//!
//! While no daemon runs, the pinned links keep the programs attached and the programs keep
//! writing into the pinned ring and counting in the pinned maps; the next daemon re-opens
//! the same maps, swaps its (possibly upgraded) programs into the same links atomically
//! (`bpf_link_update`) and reads the ring from where the last one stopped. No probe sent
//! during a restart is lost, short of the ring filling up, which the kernel counts.
//!
//! Layout, one directory per interface under the pin root (`/sys/fs/bpf/decnet` by default):
//! - the ingress link, one of `xdp_link_skb`, `xdp_link_native` (bpffs reserves names with
//!   dots; the suffix is the XDP mode) or `tc_ingress_link` (the tcx ingress link of
//!   `--xdp-mode tc`);
//! - `tc_link`: the tcx egress link (a clsact filter is not a link and cannot be pinned);
//! - `xdp_prog` or `tc_ingress_prog` (the ingress program in use), `tc_prog` (egress): the
//!   programs;
//! - `maps-<layout>/<MAP>`: the maps. `<layout>` changes whenever what the maps hold changes
//!   shape (record sizes, map sizes, the ring's size), so a daemon never adopts maps it would
//!   misread; an upgrade that changes it starts new maps and says so.

use std::{
    io,
    path::{Path, PathBuf},
};

use decnet_common::{
    DECOY_FILTER_MAP, DECOY_FILTER_WORDS, DECOYS_MAP, EVENTS_MAP, FLOW_STATE_SIZE, FLOW_WAYS,
    FLOWS_MAP, GUARD_MAP, MAX_DECOYS, MAX_FLOWS, MAX_SOURCES, RAW_EVENT_SIZE, SOURCES_MAP,
    STAT_COUNT, STATS_MAP,
};

use serde::Serialize;

use super::{attach::AttachMode, error::SensorError};

/// The maps that are pinned (the kernel log ring is not: its records are diagnostics).
pub(crate) const PINNED_MAPS: [&str; 7] = [
    EVENTS_MAP,
    STATS_MAP,
    DECOYS_MAP,
    DECOY_FILTER_MAP,
    GUARD_MAP,
    SOURCES_MAP,
    FLOWS_MAP,
];

/// Bumped by hand when a map's meaning changes without its size changing. 2: `FLOWS` is an
/// array of two-way sets, each flow in the set `FlowKey::set` hashes it to.
const LAYOUT_VERSION: u64 = 2;

/// bpffs' `f_type` (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pin directory of one interface.
#[derive(Clone, Debug)]
pub struct Pins {
    dir: PathBuf,
    maps: PathBuf,
    /// The maps were already pinned (a restart) when this was opened.
    reused: bool,
}

/// A short digest of everything that decides whether pinned maps can be adopted.
fn layout(ring_bytes: u32) -> String {
    use decnet_common::{DecoyKey, FlowKey, GuardConfig, SourceState};
    let parts = [
        LAYOUT_VERSION,
        RAW_EVENT_SIZE as u64,
        FLOW_STATE_SIZE as u64,
        size_of::<FlowKey>() as u64,
        size_of::<SourceState>() as u64,
        size_of::<DecoyKey>() as u64,
        size_of::<GuardConfig>() as u64,
        STAT_COUNT as u64,
        MAX_DECOYS as u64,
        DECOY_FILTER_WORDS as u64,
        MAX_FLOWS as u64,
        FLOW_WAYS as u64,
        MAX_SOURCES as u64,
        ring_bytes as u64,
    ];
    // FNV-1a over the parts: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("maps-{:012x}", h >> 16)
}

fn pin_err(path: &Path, e: io::Error) -> SensorError {
    SensorError::Pin(path.to_owned(), e)
}

/// Whether `path` (or, when it does not exist yet, its nearest existing ancestor) is on bpffs.
fn on_bpffs(path: &Path) -> bool {
    let mut p = path;
    loop {
        if p.exists() {
            break;
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return false,
        }
    }
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a zeroed statfs the call fills in.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

impl Pins {
    /// The pins of `iface` under `root`, created (mode 0700) if missing. `root` must be on
    /// bpffs.
    pub fn open(root: &Path, iface: &str, ring_bytes: u32) -> Result<Pins, SensorError> {
        if !on_bpffs(root) {
            return Err(SensorError::NotBpffs(root.to_owned()));
        }
        let dir = root.join(iface);
        let maps = dir.join(layout(ring_bytes));
        let reused = maps.join(EVENTS_MAP).exists();
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&maps)
            .map_err(|e| pin_err(&maps, e))?;
        Ok(Pins { dir, maps, reused })
    }

    /// The pins of `iface` under `root` if any exist (for `decnet detach` and for refusing
    /// an unpinned start over a pinned sensor).
    pub fn existing(root: &Path, iface: &str) -> Option<PathBuf> {
        let dir = root.join(iface);
        INGRESS_MODES
            .iter()
            .any(|&m| dir.join(ingress_link_name(m)).exists())
            .then_some(dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when the maps were pinned by an earlier daemon (this start is a restart).
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps.join(name)
    }

    /// Map directories of another layout (left by an older or newer decnet).
    pub(crate) fn stale_maps(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .map(|e| e.path())
            .filter(|p| {
                p != &self.maps
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("maps-"))
            })
            .collect()
    }

    /// Where the ingress program's link is pinned when attached in `mode`.
    pub(crate) fn ingress_link(&self, mode: AttachMode) -> PathBuf {
        self.dir.join(ingress_link_name(mode))
    }

    /// The pinned ingress link and its mode, if there is one.
    pub(crate) fn pinned_ingress_link(&self) -> Option<(PathBuf, AttachMode)> {
        INGRESS_MODES
            .into_iter()
            .map(|m| (self.ingress_link(m), m))
            .find(|(p, _)| p.exists())
    }

    pub(crate) fn tc_link(&self) -> PathBuf {
        self.dir.join("tc_link")
    }

    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

const INGRESS_MODES: [AttachMode; 3] = [AttachMode::Skb, AttachMode::Native, AttachMode::Tc];

fn ingress_link_name(mode: AttachMode) -> String {
    match mode {
        AttachMode::Tc => "tc_ingress_link".to_owned(),
        AttachMode::Native | AttachMode::Skb => format!("xdp_link_{mode}"),
    }
}

/// Removes a pin file; a missing one is fine.
pub(crate) fn unpin(path: &Path) -> Result<(), SensorError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(pin_err(path, e)),
        _ => Ok(()),
    }
}

/// `decnet detach`: removes every pin of `iface` under `root`. Removing a link's last pin
/// (no daemon holds it) detaches its program; removing the maps' pins frees them. Returns
/// the paths removed.
pub fn remove_all(root: &Path, iface: &str) -> Result<Vec<PathBuf>, SensorError> {
    let dir = root.join(iface);
    let mut removed = Vec::new();
    let mut stack = vec![dir.clone()];
    let mut dirs = Vec::new();
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(pin_err(&d, e)),
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                unpin(&p)?;
                removed.push(p);
            }
        }
        dirs.push(d);
    }
    // Deepest first.
    for d in dirs.iter().rev() {
        std::fs::remove_dir(d).map_err(|e| pin_err(d, e))?;
    }
    // The root goes too once no interface is left in it.
    let _ = std::fs::remove_dir(root);
    Ok(removed)
}

/// How this daemon's counters started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// New pins: nothing to take over.
    First,
    /// Totals taken over from the daemon before.
    Clean,
    /// Pins adopted without a handover (the last daemon did not stop cleanly): userspace
    /// counters start from zero while the kernel's carry on.
    Unclean,
}

/// What `GET /api/v1/stats` and `/health` show about pinning.
#[derive(Clone, Debug, Serialize)]
pub struct PinStatus {
    pub dir: PathBuf,
    pub start: Start,
    pub restarts: u64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_layout_follows_the_ring_size() {
        assert_eq!(super::layout(1 << 24), super::layout(1 << 24));
        assert_ne!(super::layout(1 << 24), super::layout(1 << 25));
        assert!(super::layout(4096).starts_with("maps-"));
    }

    #[test]
    fn pins_need_bpffs() {
        let e = super::Pins::open(std::path::Path::new("/tmp/decnet-not-bpffs"), "lo", 4096)
            .unwrap_err();
        assert!(e.to_string().contains("not on bpffs"), "{e}");
    }
}
