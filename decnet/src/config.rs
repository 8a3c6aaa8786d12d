//! Run configuration: command-line flags, `DECNET_*` environment variables and an optional
//! TOML file, merged in that order of precedence (flag > env > file > default).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::Args;
use serde::Deserialize;

use crate::{
    collector::FsyncPolicy,
    sensor::{Decoy, FloodBudget, XdpModeChoice},
};

pub const DEFAULT_DATA_DIR: &str = "./decnet-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";
pub const DEFAULT_USER: &str = "nobody";
/// Where `--pin` pins the programs, links and maps (one subdirectory per interface).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/decnet";

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
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Flags of `decnet run`. Every flag also reads `DECNET_<FLAG>`.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Interface the decoy addresses live on (the XDP program attaches here).
    #[arg(long, env = "DECNET_IFACE")]
    pub iface: Option<String>,
    /// A decoy address and an optional decky name; repeat for several (env: comma-separated).
    #[arg(
        long = "decoy",
        value_name = "IP[=NAME]",
        env = "DECNET_DECOY",
        value_delimiter = ','
    )]
    pub decoys: Vec<Decoy>,
    /// Directory for the journal (events.jsonl) and the database [default: ./decnet-data].
    #[arg(long, env = "DECNET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the HTTP API listens on [default: 127.0.0.1:8470].
    #[arg(long, env = "DECNET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Ingress hook: auto tries native (driver) XDP, then the TC ingress hook (tc), then
    /// generic XDP (skb); on a veth tc, skb, native: the cheapest there first.
    #[arg(long, value_enum, env = "DECNET_XDP_MODE")]
    pub xdp_mode: Option<XdpModeChoice>,
    /// Rotate the journal when it would grow past this many MiB (0: never) [default: 256].
    #[arg(long, env = "DECNET_JOURNAL_MAX_MB")]
    pub journal_max_mb: Option<u64>,
    /// Rotated journal files to keep (events.jsonl.1 ..= .N) [default: 8].
    #[arg(long, env = "DECNET_JOURNAL_KEEP")]
    pub journal_keep: Option<usize>,
    /// When to fsync the journal: always (every 100 ms flush), interval (1 s), never.
    #[arg(long, value_enum, env = "DECNET_JOURNAL_FSYNC")]
    pub journal_fsync: Option<FsyncPolicy>,
    /// Flood guard: events per second one source may send before the kernel summarises it
    /// instead (0: guard off) [default: 1000].
    #[arg(long, env = "DECNET_FLOOD_RATE")]
    pub flood_rate: Option<u32>,
    /// Flood guard: events one source may send at once above the rate [default: 2000].
    #[arg(long, env = "DECNET_FLOOD_BURST")]
    pub flood_burst: Option<u32>,
    /// Seconds without a packet after which an open TCP flow is summarised as idle
    /// [default: 60].
    #[arg(long, env = "DECNET_FLOW_IDLE_SECS")]
    pub flow_idle_secs: Option<u64>,
    /// Seconds a SIGTERM/SIGINT shutdown may take (drain the ring, flush the journal, commit
    /// the last batch and profiles, close the streams) before the daemon exits anyway
    /// [default: 5].
    #[arg(long, env = "DECNET_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// User the daemon becomes once the programs are attached, keeping no capability
    /// (`root`: stay root) [default: nobody].
    #[arg(long, env = "DECNET_USER")]
    pub user: Option<String>,
    /// Pin the programs, their links and maps in bpffs, so that a restarted or upgraded
    /// daemon takes over the same ring and no probe sent meanwhile is lost (`decnet detach`
    /// removes them) [default: on under systemd, off otherwise].
    #[arg(long, env = "DECNET_PIN", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL")]
    pub pin: Option<bool>,
    /// bpffs directory for the pins; each interface gets its own subdirectory
    /// [default: /sys/fs/bpf/decnet].
    #[arg(long, env = "DECNET_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Keep a helper process with CAP_BPF and CAP_NET_ADMIN that attaches the programs again
    /// when the decoy interface is deleted and recreated; `false`: no process of decnet keeps
    /// a capability, and a recreated interface needs a restart [default: true].
    #[arg(long, env = "DECNET_REATTACH", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL")]
    pub reattach: Option<bool>,
    /// What this process runs: `sensor` (capture, journal, ingest), `analyst` (profiles,
    /// one per fleet at a time), `api` (HTTP API and streams) or `all` [default: all].
    /// Anything but `all` needs a shared --store postgres://.
    #[arg(long, value_enum, env = "DECNET_ROLE")]
    pub role: Option<Role>,
    /// The database: sqlite://PATH, or postgres://USER@HOST/DB for a fleet sharing one
    /// PostgreSQL [default: sqlite://DATA_DIR/decnet.db].
    #[arg(long, env = "DECNET_STORE")]
    pub store: Option<String>,
    /// This sensor's name in a fleet: its rows carry it and its ingest cursor is its own
    /// [default: the name kept in DATA_DIR/sensor-id, else the hostname, kept there].
    #[arg(long, env = "DECNET_SENSOR_ID")]
    pub sensor_id: Option<String>,
    /// TOML file with the same keys as the flags (iface, decoy, data_dir, listen, xdp_mode,
    /// journal_max_mb, journal_keep, journal_fsync, flood_rate, flood_burst, flow_idle_secs,
    /// shutdown_timeout_secs, user, pin, pin_dir, reattach, role, store, sensor_id).
    #[arg(long, env = "DECNET_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The TOML file. Unknown keys are an error, not silently ignored. Values whose errors can
/// only be found after parsing keep their position, so the error names the line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    iface: Option<toml::Spanned<String>>,
    #[serde(default)]
    decoy: Vec<toml::Spanned<String>>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    xdp_mode: Option<XdpModeChoice>,
    journal_max_mb: Option<u64>,
    journal_keep: Option<usize>,
    journal_fsync: Option<FsyncPolicy>,
    flood_rate: Option<u32>,
    flood_burst: Option<u32>,
    flow_idle_secs: Option<u64>,
    shutdown_timeout_secs: Option<u64>,
    user: Option<String>,
    pin: Option<bool>,
    pin_dir: Option<PathBuf>,
    reattach: Option<bool>,
    role: Option<Role>,
    store: Option<toml::Spanned<String>>,
    sensor_id: Option<toml::Spanned<String>>,
}

/// Which parts of decnet a process runs (`--role`).
#[derive(
    clap::ValueEnum, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Capture, journal and ingest into the (shared) database.
    Sensor,
    /// The profiler: one instance of the fleet at a time, the others stand by.
    Analyst,
    /// The HTTP API and its live streams.
    Api,
    /// Everything in one process.
    #[default]
    All,
}

impl Role {
    pub fn sensor(self) -> bool {
        matches!(self, Role::Sensor | Role::All)
    }
    pub fn analyst(self) -> bool {
        matches!(self, Role::Analyst | Role::All)
    }
    pub fn api(self) -> bool {
        matches!(self, Role::Api | Role::All)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Sensor => "sensor",
            Role::Analyst => "analyst",
            Role::Api => "api",
            Role::All => "all",
        })
    }
}

/// Everything `decnet run` needs, resolved.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub iface: String,
    /// Where `iface` came from (for the error when it does not exist).
    pub iface_origin: Origin,
    pub decoys: Vec<Decoy>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub xdp_mode: XdpModeChoice,
    pub journal_max_bytes: u64,
    pub journal_keep: usize,
    pub journal_fsync: FsyncPolicy,
    pub flood: FloodBudget,
    pub flow_idle: std::time::Duration,
    pub shutdown_timeout: std::time::Duration,
    pub user: String,
    /// Pin the programs, links and maps under `pin_dir`.
    pub pin: bool,
    /// The bpffs root of the pins (also checked when not pinning: an unpinned start next to
    /// a pinned sensor is refused).
    pub pin_dir: PathBuf,
    /// Fork the re-attach helper (see `reattach`).
    pub reattach: bool,
    pub role: Role,
    /// The store URL (`sqlite://...` or `postgres://...`).
    pub store: String,
    /// `--sensor-id` as given (None: the data dir's kept id or the hostname, see
    /// [`RunConfig::sensor_id`]).
    pub sensor_id: Option<String>,
}

impl RunConfig {
    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join("events.jsonl")
    }

    /// The store URL with any password replaced, for logs and `check-config`.
    pub fn store_display(&self) -> String {
        redact_url(&self.store)
    }

    /// This sensor's id (see [`resolve_sensor_id`]).
    pub fn sensor_id(&self) -> std::io::Result<String> {
        resolve_sensor_id(&self.data_dir, self.sensor_id.as_deref())
    }

    pub fn resolve(args: RunArgs) -> Result<Self, ConfigError> {
        let (file, text) = match &args.config {
            Some(p) => load_file(p)?,
            None => (FileConfig::default(), String::new()),
        };
        let path = args.config.clone().unwrap_or_default();
        let at = |span: std::ops::Range<usize>| Origin::File {
            path: path.clone(),
            line: line_of(&text, span.start),
        };
        let decoys: Vec<(Decoy, Origin)> = if !args.decoys.is_empty() {
            args.decoys
                .into_iter()
                .map(|d| (d, Origin::Flag("--decoy/DECNET_DECOY")))
                .collect()
        } else {
            file.decoy
                .iter()
                .map(|s| {
                    let origin = at(s.span());
                    match s.get_ref().parse() {
                        Ok(d) => Ok((d, origin)),
                        Err(msg) => Err(ConfigError::BadDecoy {
                            origin,
                            value: s.get_ref().clone(),
                            msg,
                        }),
                    }
                })
                .collect::<Result<_, _>>()?
        };
        let role = args.role.or(file.role).unwrap_or_default();
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let store = match (args.store, &file.store) {
            (Some(s), _) => (s, Origin::Flag("--store/DECNET_STORE")),
            (None, Some(s)) => (s.get_ref().clone(), at(s.span())),
            (None, None) => (
                format!("sqlite://{}", data_dir.join("decnet.db").display()),
                Origin::Flag("--data-dir"),
            ),
        };
        let postgres = store.0.starts_with("postgres://") || store.0.starts_with("postgresql://");
        if !postgres && !store.0.starts_with("sqlite://") {
            return Err(ConfigError::BadStore {
                origin: store.1,
                value: redact_url(&store.0),
            });
        }
        if !postgres && role != Role::All {
            return Err(ConfigError::RoleNeedsSharedStore(role));
        }
        let store = store.0;
        let sensor_id = match (args.sensor_id, &file.sensor_id) {
            (Some(s), _) => Some((s, Origin::Flag("--sensor-id/DECNET_SENSOR_ID"))),
            (None, Some(s)) => Some((s.get_ref().clone(), at(s.span()))),
            (None, None) => None,
        };
        if let Some((id, origin)) = &sensor_id
            && !valid_sensor_id(id)
        {
            return Err(ConfigError::BadSensorId {
                origin: origin.clone(),
                value: id.clone(),
            });
        }
        let sensor_id = sensor_id.map(|(id, _)| id);
        // Only a sensor needs an interface and decoys.
        if decoys.is_empty() && role.sensor() {
            return Err(ConfigError::NoDecoy);
        }
        for (i, (d, origin)) in decoys.iter().enumerate() {
            // 10.0.0.1 and ::ffff:10.0.0.1 are one address to the kernel's decoy map.
            let key = crate::sensor::decoy_key(d.addr);
            if let Some((_, first)) = decoys[..i]
                .iter()
                .find(|(e, _)| crate::sensor::decoy_key(e.addr) == key)
            {
                return Err(ConfigError::DuplicateDecoy {
                    addr: d.addr,
                    first: first.clone(),
                    second: origin.clone(),
                });
            }
        }
        let (iface, iface_origin) = match (args.iface, file.iface) {
            (Some(i), _) => (i, Origin::Flag("--iface/DECNET_IFACE")),
            (None, Some(i)) => {
                let origin = at(i.span());
                (i.into_inner(), origin)
            }
            (None, None) if role.sensor() => return Err(ConfigError::NoIface),
            (None, None) => (String::new(), Origin::Flag("--iface/DECNET_IFACE")),
        };
        Ok(RunConfig {
            iface,
            iface_origin,
            decoys: decoys.into_iter().map(|(d, _)| d).collect(),
            data_dir,
            listen: args.listen.or(file.listen).unwrap_or_else(default_listen),
            xdp_mode: args.xdp_mode.or(file.xdp_mode).unwrap_or_default(),
            journal_max_bytes: args.journal_max_mb.or(file.journal_max_mb).unwrap_or(256) << 20,
            journal_keep: args.journal_keep.or(file.journal_keep).unwrap_or(8).max(1),
            journal_fsync: args
                .journal_fsync
                .or(file.journal_fsync)
                .unwrap_or_default(),
            flood: FloodBudget {
                rate: args
                    .flood_rate
                    .or(file.flood_rate)
                    .unwrap_or(FloodBudget::default().rate),
                burst: args
                    .flood_burst
                    .or(file.flood_burst)
                    .unwrap_or(FloodBudget::default().burst)
                    .max(1),
            },
            flow_idle: std::time::Duration::from_secs(
                args.flow_idle_secs
                    .or(file.flow_idle_secs)
                    .unwrap_or(60)
                    .max(1),
            ),
            shutdown_timeout: std::time::Duration::from_secs(
                args.shutdown_timeout_secs
                    .or(file.shutdown_timeout_secs)
                    .unwrap_or(5)
                    .max(1),
            ),
            user: args
                .user
                .or(file.user)
                .unwrap_or_else(|| DEFAULT_USER.to_owned()),
            // systemd sets INVOCATION_ID for every unit it starts: a service restarts there.
            pin: args
                .pin
                .or(file.pin)
                .unwrap_or_else(|| std::env::var_os("INVOCATION_ID").is_some()),
            pin_dir: args
                .pin_dir
                .or(file.pin_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR)),
            reattach: args.reattach.or(file.reattach).unwrap_or(true),
            role,
            store,
            sensor_id,
        })
    }

    /// The resolved settings, one `key = value` per line (what `decnet check-config` prints).
    pub fn describe(&self) -> String {
        let decoys: Vec<String> = self.decoys.iter().map(|d| d.to_string()).collect();
        format!(
            "iface = {} ({})\ndecoy = {}\ndata_dir = {}\nlisten = {}\nxdp_mode = {}\n\
             journal_max_mb = {}\njournal_keep = {}\njournal_fsync = {}\n\
             flood_rate = {}\nflood_burst = {}\nflow_idle_secs = {}\n\
             shutdown_timeout_secs = {}\nuser = {}\npin = {}\npin_dir = {}\nreattach = {}\n\
             role = {}\nstore = {}\nsensor_id = {}\n",
            self.iface,
            self.iface_origin,
            decoys.join(", "),
            self.data_dir.display(),
            self.listen,
            format!("{:?}", self.xdp_mode).to_lowercase(),
            self.journal_max_bytes >> 20,
            self.journal_keep,
            format!("{:?}", self.journal_fsync).to_lowercase(),
            self.flood.rate,
            self.flood.burst,
            self.flow_idle.as_secs(),
            self.shutdown_timeout.as_secs(),
            self.user,
            self.pin,
            self.pin_dir.display(),
            self.reattach,
            self.role,
            self.store_display(),
            self.sensor_id
                .as_deref()
                .unwrap_or("(kept in the data dir, else the hostname)"),
        )
    }

    /// Checks what only this host can tell: that the interface exists. `decnet run` and
    /// `decnet check-config` both do this before anything is loaded.
    pub fn check_host(&self) -> Result<(), ConfigError> {
        if self.role.sensor() && crate::sensor::loader::nix_if_index(&self.iface).is_none() {
            return Err(ConfigError::NoSuchIface {
                iface: self.iface.clone(),
                origin: self.iface_origin.clone(),
            });
        }
        Ok(())
    }
}

/// Where the data dir keeps the sensor id it was first given (see [`RunConfig::sensor_id`]).
pub const SENSOR_ID_FILE: &str = "sensor-id";

/// A sensor id: `given`, else the one kept in `data_dir`, else the hostname, which is then
/// kept there (the data dir must exist). Kept, because the ingest cursor is named by it: a
/// host renamed later must not ingest its journal again under a new name.
pub fn resolve_sensor_id(data_dir: &Path, given: Option<&str>) -> std::io::Result<String> {
    if let Some(id) = given {
        return Ok(id.to_owned());
    }
    let kept = data_dir.join(SENSOR_ID_FILE);
    match std::fs::read_to_string(&kept) {
        Ok(id) if valid_sensor_id(id.trim()) => return Ok(id.trim().to_owned()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold a valid sensor id", kept.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| valid_sensor_id(h))
        .unwrap_or_else(|| "sensor".to_owned());
    std::fs::write(&kept, format!("{host}\n"))?;
    Ok(host)
}

/// A sensor id: short, printable, safe in a state key and a log line.
pub fn valid_sensor_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(x) => x,
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8470))
}

fn load_file(path: &Path) -> Result<(FileConfig, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
    match toml::from_str(&text) {
        Ok(f) => Ok((f, text)),
        Err(e) => Err(ConfigError::Parse {
            origin: Origin::File {
                path: path.into(),
                line: e.span().map(|s| line_of(&text, s.start)).unwrap_or(1),
            },
            msg: e.message().trim().to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs::default()
    }

    #[test]
    fn flags_beat_file_and_defaults_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decnet.toml");
        std::fs::write(
            &path,
            "iface = \"eth9\"\ndecoy = [\"10.0.0.5=db\"]\nxdp_mode = \"skb\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        let c = RunConfig::resolve(a).unwrap();
        assert_eq!(c.iface, "eth9");
        assert_eq!(c.decoys[0].name, "db");
        assert_eq!(c.xdp_mode, XdpModeChoice::Skb);
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));

        let mut a = args();
        a.config = Some(path);
        a.iface = Some("veth1".into());
        a.decoys = vec!["10.0.0.7".parse().unwrap()];
        let c = RunConfig::resolve(a).unwrap();
        assert_eq!(c.iface, "veth1");
        assert_eq!(c.decoys.len(), 1);
        assert_eq!(c.decoys[0].name, "10.0.0.7");
    }

    #[test]
    fn unknown_keys_and_bad_decoys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "iface = \"x\"\ndecoys = []\n").unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        let e = RunConfig::resolve(a).unwrap_err().to_string();
        assert!(e.contains("decoys") && e.contains("bad.toml"), "{e}");

        assert!(e.contains("line 2"), "{e}");

        std::fs::write(
            &path,
            "iface = \"x\"\ndecoy = [\n  \"10.0.0.1\",\n  \"300.1.1.1\",\n]\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        let e = RunConfig::resolve(a).unwrap_err().to_string();
        assert!(e.contains("300.1.1.1") && e.contains("line 4"), "{e}");

        // A bad listen address: the key and its line.
        std::fs::write(
            &path,
            "iface = \"x\"\ndecoy = [\"10.0.0.1\"]\n\nlisten = \"1.2.3\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        let e = RunConfig::resolve(a).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("bad.toml"), "{e}");

        // Overlapping decoys: the same address twice, even in its IPv4-mapped IPv6 form.
        std::fs::write(
            &path,
            "iface = \"x\"\ndecoy = [\"10.0.0.1=a\",\n \"::ffff:10.0.0.1=b\"]\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        let e = RunConfig::resolve(a).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("line 2"), "{e}");

        // A missing interface names where it was set.
        std::fs::write(&path, "decoy = [\"10.0.0.1\"]\niface = \"nosuch0\"\n").unwrap();
        let mut a = args();
        a.config = Some(path);
        let c = RunConfig::resolve(a).unwrap();
        let e = c.check_host().unwrap_err().to_string();
        assert!(e.contains("nosuch0") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn roles_stores_and_sensor_ids() {
        // Split roles need a shared store; the SQLite file is one process's.
        let mut a = args();
        a.role = Some(Role::Analyst);
        assert!(matches!(
            RunConfig::resolve(a.clone()),
            Err(ConfigError::RoleNeedsSharedStore(Role::Analyst))
        ));
        // An analyst or an API needs no interface or decoy.
        a.store = Some("postgres://decnet:s3cret@db.example/decnet".into());
        let c = RunConfig::resolve(a.clone()).unwrap();
        assert_eq!(c.role, Role::Analyst);
        assert!(c.iface.is_empty() && c.decoys.is_empty());
        c.check_host().unwrap();
        assert_eq!(c.store_display(), "postgres://decnet:***@db.example/decnet");
        assert!(!c.describe().contains("s3cret"), "{}", c.describe());
        // A sensor still does.
        a.role = Some(Role::Sensor);
        assert!(matches!(
            RunConfig::resolve(a.clone()),
            Err(ConfigError::NoDecoy)
        ));
        let mut a = args();
        a.iface = Some("lo".into());
        a.decoys = vec!["10.0.0.1".parse().unwrap()];
        a.store = Some("mysql://x/y".into());
        let e = RunConfig::resolve(a.clone()).unwrap_err().to_string();
        assert!(e.contains("--store") && e.contains("postgres://"), "{e}");
        a.store = None;
        a.sensor_id = Some("site a/../b".into());
        let e = RunConfig::resolve(a.clone()).unwrap_err().to_string();
        assert!(
            e.contains("--sensor-id") && e.contains("site a/../b"),
            "{e}"
        );
        a.sensor_id = None;
        let c = RunConfig::resolve(a).unwrap();
        assert_eq!(c.role, Role::All);
        assert_eq!(
            c.store,
            format!(
                "sqlite://{}",
                PathBuf::from(DEFAULT_DATA_DIR).join("decnet.db").display()
            )
        );

        // The sensor id is kept in the data dir: a renamed host keeps its cursor.
        let dir = tempfile::tempdir().unwrap();
        let first = resolve_sensor_id(dir.path(), None).unwrap();
        assert!(valid_sensor_id(&first), "{first}");
        std::fs::write(dir.path().join(SENSOR_ID_FILE), "kept-name\n").unwrap();
        assert_eq!(resolve_sensor_id(dir.path(), None).unwrap(), "kept-name");
        assert_eq!(
            resolve_sensor_id(dir.path(), Some("given")).unwrap(),
            "given"
        );
        std::fs::write(dir.path().join(SENSOR_ID_FILE), "bad id\n").unwrap();
        assert!(resolve_sensor_id(dir.path(), None).is_err());
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }

    #[test]
    fn missing_pieces_are_errors() {
        assert!(matches!(
            RunConfig::resolve(args()),
            Err(ConfigError::NoDecoy)
        ));
        let mut a = args();
        a.decoys = vec!["10.0.0.1".parse().unwrap()];
        assert!(matches!(
            RunConfig::resolve(a.clone()),
            Err(ConfigError::NoIface)
        ));
        a.iface = Some("lo".into());
        a.decoys.push("10.0.0.1=again".parse().unwrap());
        assert!(matches!(
            RunConfig::resolve(a),
            Err(ConfigError::DuplicateDecoy { .. })
        ));
    }
}
