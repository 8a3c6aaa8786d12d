//! Why a configuration does not resolve, and where the offending setting came from.

use std::path::PathBuf;

use super::role::Role;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    /// A TOML syntax error, an unknown key or a value of the wrong shape (a bad `listen`
    /// address, an unknown `xdp_mode`), with the line it is on.
    #[error("{origin}: {msg}")]
    Parse { origin: Origin, msg: String },
    #[error("no interface: pass --iface IFACE (or DECNET_IFACE, or `iface` in the config file)")]
    NoIface,
    #[error("no decoy: pass at least one --decoy IP[=NAME]")]
    NoDecoy,
    #[error("{second}: decoy {addr} is listed twice (first at {first})")]
    DuplicateDecoy {
        addr: std::net::IpAddr,
        first: Origin,
        second: Origin,
    },
    #[error("{origin}: decoy `{value}`: {msg}")]
    BadDecoy {
        origin: Origin,
        value: String,
        msg: String,
    },
    #[error(
        "--role {0} splits decnet across processes, which share a database: give them \
         --store postgres://... (the SQLite file is for one process, --role all)"
    )]
    RoleNeedsSharedStore(Role),
    #[error("{origin}: store `{value}`: expected sqlite://PATH or postgres://...")]
    BadStore { origin: Origin, value: String },
    #[error("{origin}: sensor id `{value}`: 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadSensorId { origin: Origin, value: String },
    #[error("{origin}: interface `{iface}` does not exist on this host")]
    NoSuchIface { iface: String, origin: Origin },
    #[error("known-scanner list {0}")]
    KnownScanners(std::io::Error),
    #[error("allow list {0}")]
    AllowList(std::io::Error),
    #[error("GeoIP database {0}")]
    GeoIp(crate::intel::geoip::GeoError),
    /// A `[[sink]]` or `[[alert]]` table that does not check, at its line.
    #[error("{origin}: {err}")]
    Alert {
        origin: Origin,
        err: crate::alert::SpecError,
    },
    #[error("{origin}: {msg}")]
    Retention { origin: Origin, msg: String },
    #[error("{0}")]
    Tls(crate::tls::TlsError),
    #[error("{0}")]
    TlsHalf(&'static str),
    #[error(
        "--listen {0} is beyond loopback: serve it over TLS (--tls-cert FILE --tls-key FILE), \
         or give --insecure-http when a TLS-terminating proxy is in front"
    )]
    PlainHttpExposed(std::net::SocketAddr),
    #[error("[[sink]] `{name}`: {msg}")]
    Sink { name: String, msg: String },
}

/// Where a setting came from, for error messages: a flag (or its variable), or a line of
/// the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    File { path: PathBuf, line: usize },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(name) => write!(f, "{name}"),
            Origin::File { path, line } => write!(f, "config file {} line {line}", path.display()),
        }
    }
}

/// The 1-based line of byte offset `at` in `text`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
