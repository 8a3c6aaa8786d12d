//! The sensor stage: load the XDP program, fill the decoy map, attach to the decoy
//! interface, and read the ring buffer into typed [`Probe`]s.
//!
//! - `loader`: object loading, decoy map, XDP attach with native -> SKB fallback.
//! - `ring`: the AsyncFd ring reader, batching decoded probes to the journal writer.
//! - `decode`: raw kernel event -> [`Probe`].
//! - `guard`: the flood guard's userspace half (sweeping quiet sources).
//! - `flows`: the flow table's userspace half (idle and evicted flows).
//! - `kernel_stats`: the per-CPU counters, summed.
//! - `pin`: the bpffs pins that let a restarted daemon take over the same programs and ring.

pub mod decode;
pub mod flows;
pub mod guard;
pub mod kernel_stats;
pub mod loader;
pub mod pin;
pub mod ring;

use std::{fmt, net::IpAddr, str::FromStr};

pub use decode::{Probe, Suppressed, TcpOptions};
pub use kernel_stats::KernelStats;
pub use loader::{AttachMode, EgressMode, Sensor, XdpModeChoice};

/// Errors at the kernel boundary.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(
        "this build has no eBPF object (built with AYA_BUILD_SKIP); rebuild after `cargo xtask setup`"
    )]
    NoObject,
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {0}: {1}")]
    Program(&'static str, #[source] aya::programs::ProgramError),
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("interface {iface}: XDP attach failed in {mode} mode: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("interface {iface}: TC egress attach failed (tcx, then clsact): {source}")]
    EgressAttach {
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("too many decoys: {0} (the kernel map holds {1})")]
    TooManyDecoys(usize, u32),
    #[error("ring buffer I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("pin {0}: {1}")]
    Pin(std::path::PathBuf, #[source] std::io::Error),
    #[error("pin {0}: {1}")]
    Pinning(std::path::PathBuf, String),
    #[error(
        "pin directory {0} is not on bpffs: mount it (`mount -t bpf bpf /sys/fs/bpf`) or choose \
         another --pin-dir"
    )]
    NotBpffs(std::path::PathBuf),
    #[error(
        "decnet's programs are pinned on {iface} ({dir}) by a daemon started with --pin: start \
         with --pin to take them over, or remove them with `decnet detach --iface {iface}`"
    )]
    PinnedElsewhere {
        iface: String,
        dir: std::path::PathBuf,
    },
}

/// A decoy address and the decky name it reports as (`--decoy IP[=NAME]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoy {
    pub addr: IpAddr,
    pub name: String,
}

impl FromStr for Decoy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, name) = match s.split_once('=') {
            Some((ip, name)) => (ip.trim(), Some(name.trim())),
            None => (s.trim(), None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("`{ip}` is not an IPv4 or IPv6 address (expected IP[=NAME])"))?;
        let name = match name {
            Some("") => return Err(format!("empty decky name in `{s}`")),
            Some(n) => n.to_owned(),
            None => addr.to_string(),
        };
        Ok(Decoy { addr, name })
    }
}

impl fmt::Display for Decoy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.addr, self.name)
    }
}

/// The flood guard's per-source budget: `rate` events per second with bursts of `burst`.
/// A source over it has its events counted into `source_suppressed` summaries instead of
/// sent one by one. `rate` 0 turns the guard off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FloodBudget {
    pub rate: u32,
    pub burst: u32,
}

impl Default for FloodBudget {
    /// A default nmap scan (1,000 ports) and anything slower pass event by event; floods
    /// (masscan, hping3 --flood, 10^5 packets/s and more) are summarised. Every stored event
    /// costs the daemon about 80 µs of CPU across journal, SQLite and profiler on the
    /// reference 2-core machine (`cargo xtask bench capture`), so 1,000 events/s bounds
    /// what one flooding source can take at about 8% of a core, plus its answers.
    fn default() -> Self {
        Self {
            rate: 1000,
            burst: 2000,
        }
    }
}

impl FloodBudget {
    /// The kernel's form (GCRA interval and burst allowance).
    pub fn kernel(&self) -> decnet_common::GuardConfig {
        if self.rate == 0 {
            return decnet_common::GuardConfig::default();
        }
        let interval_ns = (1_000_000_000 / self.rate as u64).max(1);
        decnet_common::GuardConfig {
            interval_ns,
            burst_ns: interval_ns * self.burst.max(1) as u64,
        }
    }
}

/// A kernel map key's address (IPv4 is stored mapped into IPv6) as an address.
pub fn key_addr(raw: &[u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*raw);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Decoy address as the kernel keys it: IPv4 mapped into IPv6.
pub fn decoy_key(addr: IpAddr) -> decnet_common::DecoyKey {
    let v6 = match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    decnet_common::DecoyKey { addr: v6.octets() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoy_parsing() {
        let d: Decoy = "10.0.0.1=web".parse().unwrap();
        assert_eq!(d.name, "web");
        let d: Decoy = "fd00::1".parse().unwrap();
        assert_eq!(d.name, "fd00::1");
        assert!("10.0.0.300".parse::<Decoy>().is_err());
        assert!("10.0.0.1=".parse::<Decoy>().is_err());
    }

    #[test]
    fn v4_keys_are_mapped() {
        let k = decoy_key("10.1.2.3".parse().unwrap());
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 10, 1, 2, 3]);
    }
}
