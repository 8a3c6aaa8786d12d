//! What can go wrong at the kernel boundary.

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
