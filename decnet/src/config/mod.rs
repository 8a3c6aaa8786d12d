//! Run configuration: command-line flags, `DECNET_*` environment variables and an optional
//! TOML file, merged in that order of precedence (flag > env > file > default).
//!
//! - `keys`: every setting declared once (flag, variable, TOML key, default, meaning);
//! - `error`: what does not resolve, and where it came from; `role`: `--role`;
//! - `sensor_id`: a fleet sensor's name.
//!
//! Stage 11 (config) of the pipeline: docs/architecture.md.

mod error;
pub mod keys;
mod role;
mod sensor_id;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use error::line_of;
pub use error::{ConfigError, Origin};
use keys::FileConfig;
pub use keys::{KEYS, RunArgs};
pub use role::Role;
pub use sensor_id::{SENSOR_ID_FILE, resolve_sensor_id, valid_sensor_id};

use crate::{
    collector::FsyncPolicy,
    sensor::{Decoy, FloodBudget, XdpModeChoice},
};

pub const DEFAULT_DATA_DIR: &str = "./decnet-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";
pub(crate) const DEFAULT_USER: &str = "nobody";
/// Where `--pin` pins the programs, links and maps (one subdirectory per interface).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/decnet";

/// What [`RunConfig::describe`] shows for a key it does not know.
const UNSHOWN: &str = "(not shown)";

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
    /// Known-scanner lists (`intel::scanners`), read at start and on SIGHUP.
    pub known_scanners: Vec<PathBuf>,
    /// Allow lists (`intel::scanners` format): never in the feeds. Read at start and on
    /// SIGHUP.
    pub allow: Vec<PathBuf>,
    /// GeoIP databases (`intel::geoip`), read at start and on SIGHUP.
    pub geoip_db: Vec<PathBuf>,
    /// What retention keeps (`retain`).
    pub retention: crate::retain::Policy,
    /// The API's certificate and key (None: plain HTTP).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Plain HTTP beyond loopback was asked for (a TLS-terminating proxy in front).
    pub insecure_http: bool,
    /// The `[[sink]]` and `[[alert]]` tables, checked.
    pub alerts: crate::alert::Plan,
    /// Shards the fleet's profiling is split into (1: one analyst profiles everything).
    pub analyst_shards: u32,
}

impl RunConfig {
    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join("events.jsonl")
    }

    /// The store URL with any password replaced, for logs and `check-config`.
    pub(crate) fn store_display(&self) -> String {
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
            file.decoys
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
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::TlsHalf("--tls-cert needs --tls-key")),
            (None, Some(_)) => return Err(ConfigError::TlsHalf("--tls-key needs --tls-cert")),
        };
        let insecure_http = args.insecure_http.or(file.insecure_http).unwrap_or(false);
        let listen = args.listen.or(file.listen).unwrap_or_else(default_listen);
        // Roles that serve HTTP: the API, and a sensor's status.
        if (role.api() || role.sensor())
            && !listen.ip().to_canonical().is_loopback()
            && tls.is_none()
            && !insecure_http
        {
            return Err(ConfigError::PlainHttpExposed(listen));
        }
        let number =
            |flag: Option<i64>, name: &'static str, file: &Option<toml::Spanned<i64>>| match (
                flag, file,
            ) {
                (Some(v), _) => Some((v, Origin::Flag(name))),
                (None, Some(v)) => Some((*v.get_ref(), at(v.span()))),
                (None, None) => None,
            };
        let bad = |origin: Origin, msg: String| ConfigError::Retention { origin, msg };
        let retain_days = match number(
            args.retain_days,
            "--retain-days/DECNET_RETAIN_DAYS",
            &file.retain_days,
        ) {
            None => 30,
            Some((d, o)) if d < 0 => {
                return Err(bad(
                    o,
                    format!("retain_days {d}: a number of days, 0 (keep everything) or more"),
                ));
            }
            Some((d, o)) if d > 36_500 => {
                return Err(bad(
                    o,
                    format!("retain_days {d}: at most 36500 (100 years); 0 keeps everything"),
                ));
            }
            Some((d, _)) => d as u32,
        };
        let max_db_mb = match number(
            args.max_db_mb,
            "--max-db-mb/DECNET_MAX_DB_MB",
            &file.max_db_mb,
        ) {
            None => 0,
            Some((0, _)) => 0,
            Some((m, o)) if m < 0 => {
                return Err(bad(
                    o,
                    format!(
                        "max_db_mb {m}: MiB, 0 (no cap) or at least {}",
                        crate::retain::MIN_DB_MB
                    ),
                ));
            }
            Some((m, o)) if (m as u64) < crate::retain::MIN_DB_MB => {
                return Err(bad(
                    o,
                    format!(
                        "max_db_mb {m}: smaller than one ingest batch and the profiles need; 0 (no cap) or at least {}",
                        crate::retain::MIN_DB_MB
                    ),
                ));
            }
            Some((_, o)) if store.starts_with("postgres") => {
                return Err(bad(o, "max_db_mb caps the SQLite file; a PostgreSQL server bounds its own storage (use retain_days)".into()));
            }
            Some((m, _)) => m as u64,
        };
        let analyst_shards = match number(
            args.analyst_shards,
            "--analyst-shards/DECNET_ANALYST_SHARDS",
            &file.analyst_shards,
        ) {
            None | Some((1, _)) => 1,
            Some((n, o)) if !(1..=64).contains(&n) => {
                return Err(ConfigError::Parse {
                    origin: o,
                    msg: format!(
                        "analyst_shards {n}: from 1 (one analyst profiles everything) to 64"
                    ),
                });
            }
            Some((_, o)) if !store.starts_with("postgres") => {
                return Err(ConfigError::Parse {
                    origin: o,
                    msg: "analyst_shards splits a fleet's profiling among analysts on a shared PostgreSQL store; SQLite has one process".into(),
                });
            }
            Some((n, _)) => n as u32,
        };
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
        let alerts = {
            let sinks: Vec<_> = file
                .sinks
                .iter()
                .map(|s| (s.get_ref().clone(), s.span().start))
                .collect();
            let rules: Vec<_> = file
                .alerts
                .iter()
                .map(|r| (r.get_ref().clone(), r.span().start))
                .collect();
            crate::alert::spec::plan(&sinks, &rules).map_err(|e| ConfigError::Alert {
                origin: at(e.at..e.at),
                err: e,
            })?
        };
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
            listen,
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
            known_scanners: if args.known_scanners.is_empty() {
                file.known_scanners
            } else {
                args.known_scanners
            },
            allow: if args.allow.is_empty() {
                file.allow
            } else {
                args.allow
            },
            geoip_db: if args.geoip_db.is_empty() {
                file.geoip_db
            } else {
                args.geoip_db
            },
            alerts,
            retention: crate::retain::Policy {
                retain_days,
                max_db_bytes: max_db_mb << 20,
            },
            tls,
            insecure_http,
            analyst_shards,
        })
    }

    /// Reads the allow lists, as [`known_scanner_list`](Self::known_scanner_list) does.
    pub fn allow_list(
        &self,
    ) -> Result<
        (
            crate::intel::scanners::ScannerList,
            Vec<crate::intel::scanners::LineError>,
        ),
        ConfigError,
    > {
        crate::intel::scanners::ScannerList::load(&self.allow).map_err(ConfigError::AllowList)
    }

    /// Reads the known-scanner lists: an unreadable file is an error; malformed lines come
    /// back as reports (each with its file and line), the rest of the file loads.
    pub fn known_scanner_list(
        &self,
    ) -> Result<
        (
            crate::intel::scanners::ScannerList,
            Vec<crate::intel::scanners::LineError>,
        ),
        ConfigError,
    > {
        crate::intel::scanners::ScannerList::load(&self.known_scanners)
            .map_err(ConfigError::KnownScanners)
    }

    /// Opens the GeoIP databases (none configured: an empty set).
    pub fn geoip_dbs(&self) -> Result<crate::intel::geoip::GeoDbs, ConfigError> {
        crate::intel::geoip::GeoDbs::open(&self.geoip_db).map_err(ConfigError::GeoIp)
    }

    /// The resolved settings, one `key = value` per line in [`KEYS`] order (what
    /// `decnet check-config` prints).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for k in KEYS {
            out.push_str(&format!("{} = {}\n", k.toml, self.value_of(k.toml)));
        }
        out.push_str(&self.alerts.describe());
        out
    }

    /// A setting's resolved value as `check-config` shows it (a password as `***`).
    fn value_of(&self, key: &str) -> String {
        match key {
            "iface" => format!("{} ({})", self.iface, self.iface_origin),
            "decoy" => {
                let decoys: Vec<String> = self.decoys.iter().map(|d| d.to_string()).collect();
                decoys.join(", ")
            }
            "data_dir" => self.data_dir.display().to_string(),
            "listen" => self.listen.to_string(),
            "xdp_mode" => format!("{:?}", self.xdp_mode).to_lowercase(),
            "journal_max_mb" => (self.journal_max_bytes >> 20).to_string(),
            "journal_keep" => self.journal_keep.to_string(),
            "journal_fsync" => format!("{:?}", self.journal_fsync).to_lowercase(),
            "flood_rate" => self.flood.rate.to_string(),
            "flood_burst" => self.flood.burst.to_string(),
            "flow_idle_secs" => self.flow_idle.as_secs().to_string(),
            "shutdown_timeout_secs" => self.shutdown_timeout.as_secs().to_string(),
            "user" => self.user.clone(),
            "pin" => self.pin.to_string(),
            "pin_dir" => self.pin_dir.display().to_string(),
            "reattach" => self.reattach.to_string(),
            "role" => self.role.to_string(),
            "store" => self.store_display(),
            "sensor_id" => self
                .sensor_id
                .clone()
                .unwrap_or_else(|| "(kept in the data dir, else the hostname)".to_owned()),
            "known_scanners" => paths(&self.known_scanners),
            "allow" => paths(&self.allow),
            "geoip_db" => paths(&self.geoip_db),
            "retain_days" => self.retention.retain_days.to_string(),
            "tls_cert" => self
                .tls
                .as_ref()
                .map_or("none".into(), |t| t.cert.display().to_string()),
            "tls_key" => self
                .tls
                .as_ref()
                .map_or("none".into(), |t| t.key.display().to_string()),
            "insecure_http" => self.insecure_http.to_string(),
            "max_db_mb" => (self.retention.max_db_bytes >> 20).to_string(),
            "analyst_shards" => self.analyst_shards.to_string(),
            // A key added to the table but not here: the test of describe() fails.
            _ => UNSHOWN.to_owned(),
        }
    }

    /// Checks what only this host can tell: that the interface exists, the known-scanner
    /// lists can be read, the GeoIP databases open, each sink's CA file loads and each file sink's directory exists.
    /// `decnet run` and `decnet check-config` both do this before anything is loaded.
    pub fn check_host(&self) -> Result<(), ConfigError> {
        if self.role.sensor() && crate::sensor::loader::nix_if_index(&self.iface).is_none() {
            return Err(ConfigError::NoSuchIface {
                iface: self.iface.clone(),
                origin: self.iface_origin.clone(),
            });
        }
        if let Some(t) = &self.tls {
            crate::tls::server_config(t).map_err(ConfigError::Tls)?;
        }
        self.known_scanner_list()?;
        self.allow_list()?;
        self.geoip_dbs()?;
        for sink in &self.alerts.sinks {
            crate::alert::transport::Transport::new(sink).map_err(|msg| ConfigError::Sink {
                name: sink.name.clone(),
                msg,
            })?;
            if let crate::alert::spec::Target::File { path } = &sink.target {
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                if dir.is_some_and(|d| !d.is_dir()) {
                    return Err(ConfigError::Sink {
                        name: sink.name.clone(),
                        msg: format!("{}: its directory does not exist", path.display()),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Paths as `check-config` lists them.
fn paths(p: &[PathBuf]) -> String {
    let v: Vec<String> = p.iter().map(|p| p.display().to_string()).collect();
    v.join(", ")
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let mut out = match main.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{main}"),
        },
        None => format!("{scheme}://{main}"),
    };
    if let Some(q) = query {
        // libpq takes a password in the query too (`password=`, `sslpassword=`).
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _))
                    if k.eq_ignore_ascii_case("password")
                        || k.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{k}=***")
                }
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
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
mod tests;
