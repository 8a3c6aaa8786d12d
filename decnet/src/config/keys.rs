//! Every setting of `decnet run`, declared once: its flag, environment variable, TOML key,
//! default and meaning. The `settings!` table below generates the clap arguments
//! ([`RunArgs`], hence `--help`), the file's keys ([`FileConfig`], unknown keys refused) and
//! [`KEYS`], from which `check-config`'s listing and the table in docs/configuration.md
//! are checked (tests below), so none of them can disagree with another.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;
use serde::Deserialize;

use super::role::Role;
use crate::{
    collector::FsyncPolicy,
    sensor::{Decoy, XdpModeChoice},
};

/// One setting, as documented.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The field of [`RunArgs`] (and clap's argument id).
    pub field: &'static str,
    /// The TOML key.
    pub toml: &'static str,
    /// The flag as written on a command line, with its value (`--journal-keep N`).
    pub flag: &'static str,
    pub env: &'static str,
    /// The default, as a person reads it.
    pub default: &'static str,
    /// What it does (the flag's help).
    pub doc: &'static str,
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty, file $fty:ty, toml $toml:literal, flag $flag:literal,
        env $env:literal, default $default:literal, arg($($arg:tt)*);
    )*) => {
        /// Flags of `decnet run`. Every flag also reads its `DECNET_*` variable.
        #[derive(Args, Debug, Clone, Default)]
        pub struct RunArgs {
            $(
                $(#[doc = $doc])+
                // clap reads only literal doc comments: the help with its default is built.
                #[arg(
                    env = $env,
                    help = format!("{} [default: {}]", concat!($($doc),+).trim(), $default),
                    $($arg)*
                )]
                pub $field: $ty,
            )*
            /// TOML file with the keys of the settings above (docs/configuration.md); an
            /// unknown key is an error.
            #[arg(long, env = "DECNET_CONFIG")]
            pub config: Option<PathBuf>,
        }

        /// The TOML file. Unknown keys are an error, not silently ignored. Values whose
        /// errors can only be found after parsing keep their position, so the error names
        /// the line.
        #[derive(Debug, Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub(super) struct FileConfig {
            $(
                #[serde(rename = $toml)]
                pub(super) $field: $fty,
            )*
            /// `[[sink]]` tables (file only): where alerts go.
            #[serde(rename = "sink")]
            pub(super) sinks: Vec<toml::Spanned<crate::alert::SinkFile>>,
            /// `[[alert]]` tables (file only): which detections become alerts.
            #[serde(rename = "alert")]
            pub(super) alerts: Vec<toml::Spanned<crate::alert::RuleFile>>,
        }

        /// Every setting, in the order `--help` and `check-config` list them.
        pub const KEYS: &[Key] = &[$(
            Key {
                field: stringify!($field),
                toml: $toml,
                flag: $flag,
                env: $env,
                default: $default,
                doc: concat!($($doc),+),
            },
        )*];
    };
}

settings! {
    /// Interface the decoys live on (the ingress program attaches here).
    iface: Option<String>, file Option<toml::Spanned<String>>, toml "iface",
    flag "--iface IFACE", env "DECNET_IFACE", default "none (a sensor needs it)", arg(long);

    /// A decoy address and the decky name it reports as (the name defaults to the address);
    /// repeat for several (env: comma-separated).
    decoys: Vec<Decoy>, file Vec<toml::Spanned<String>>, toml "decoy",
    flag "--decoy IP[=NAME]", env "DECNET_DECOY", default "none (a sensor needs it)",
    arg(long = "decoy", value_name = "IP[=NAME]", value_delimiter = ',');

    /// Directory for the journal (events.jsonl), the database and the API token.
    data_dir: Option<PathBuf>, file Option<PathBuf>, toml "data_dir",
    flag "--data-dir DIR", env "DECNET_DATA_DIR", default "./decnet-data", arg(long);

    /// Address the HTTP API listens on (beyond loopback only with DECNET_API_TOKEN set).
    listen: Option<SocketAddr>, file Option<SocketAddr>, toml "listen",
    flag "--listen ADDR", env "DECNET_LISTEN", default "127.0.0.1:8470", arg(long);

    /// Ingress hook: auto tries native (driver) XDP, then the TC ingress hook (tc), then
    /// generic XDP (skb); on a veth tc, skb, native: the cheapest there first.
    xdp_mode: Option<XdpModeChoice>, file Option<XdpModeChoice>, toml "xdp_mode",
    flag "--xdp-mode auto|native|skb|tc", env "DECNET_XDP_MODE", default "auto",
    arg(long, value_enum);

    /// Rotate the journal when a write would take it past this many MiB (0: never).
    journal_max_mb: Option<u64>, file Option<u64>, toml "journal_max_mb",
    flag "--journal-max-mb N", env "DECNET_JOURNAL_MAX_MB", default "256", arg(long);

    /// Rotated journal files to keep (events.jsonl.1, the newest, ..= .N); up to N more are
    /// held while the ingester has not committed them, then the oldest go, counted as
    /// journal_rotated_unread.
    journal_keep: Option<usize>, file Option<usize>, toml "journal_keep",
    flag "--journal-keep N", env "DECNET_JOURNAL_KEEP", default "8", arg(long);

    /// When to fsync the journal: after every 100 ms flush (always), at most once a second
    /// (interval), or only at rotation and shutdown (never).
    journal_fsync: Option<FsyncPolicy>, file Option<FsyncPolicy>, toml "journal_fsync",
    flag "--journal-fsync always|interval|never", env "DECNET_JOURNAL_FSYNC",
    default "interval", arg(long, value_enum);

    /// Flood guard: events per second one source may send before the kernel summarises it
    /// instead (0: guard off).
    flood_rate: Option<u32>, file Option<u32>, toml "flood_rate",
    flag "--flood-rate N", env "DECNET_FLOOD_RATE", default "1000", arg(long);

    /// Flood guard: events one source may send at once above the rate.
    flood_burst: Option<u32>, file Option<u32>, toml "flood_burst",
    flag "--flood-burst N", env "DECNET_FLOOD_BURST", default "2000", arg(long);

    /// Seconds without a packet after which an open TCP flow is summarised as idle
    /// (`tcp_flow`, `end: idle`).
    flow_idle_secs: Option<u64>, file Option<u64>, toml "flow_idle_secs",
    flag "--flow-idle-secs N", env "DECNET_FLOW_IDLE_SECS", default "60", arg(long);

    /// Seconds a SIGTERM/SIGINT shutdown may take (detach, drain the ring, flush the
    /// journal, commit the last batch and profiles, close the streams) before the daemon
    /// exits anyway; the next start resumes from the committed cursors.
    shutdown_timeout_secs: Option<u64>, file Option<u64>, toml "shutdown_timeout_secs",
    flag "--shutdown-timeout-secs N", env "DECNET_SHUTDOWN_TIMEOUT_SECS", default "5",
    arg(long);

    /// User the daemon becomes once the programs are attached, keeping no capability
    /// (`root`: stay root).
    user: Option<String>, file Option<String>, toml "user",
    flag "--user NAME", env "DECNET_USER", default "nobody", arg(long);

    /// Pin the programs, their links and maps in bpffs, so that a restarted or upgraded
    /// daemon takes over the same ring and no probe sent meanwhile is lost (`decnet detach`
    /// removes them).
    pin: Option<bool>, file Option<bool>, toml "pin",
    flag "--pin[=BOOL]", env "DECNET_PIN", default "on under systemd, off otherwise",
    arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL");

    /// bpffs directory for the pins; each interface gets its own subdirectory.
    pin_dir: Option<PathBuf>, file Option<PathBuf>, toml "pin_dir",
    flag "--pin-dir DIR", env "DECNET_PIN_DIR", default "/sys/fs/bpf/decnet", arg(long);

    /// Keep a helper process with CAP_BPF and CAP_NET_ADMIN that attaches the programs again
    /// when the decoy interface is deleted and recreated; `false`: no process of decnet
    /// keeps a capability, and a recreated interface needs a restart.
    reattach: Option<bool>, file Option<bool>, toml "reattach",
    flag "--reattach[=BOOL]", env "DECNET_REATTACH", default "true",
    arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL");

    /// What this process runs: `sensor` (capture, journal, ingest), `analyst` (profiles,
    /// one per fleet at a time), `api` (HTTP API and streams) or `all`. Anything but `all`
    /// needs a shared --store postgres://.
    role: Option<Role>, file Option<Role>, toml "role",
    flag "--role sensor|analyst|api|all", env "DECNET_ROLE", default "all",
    arg(long, value_enum);

    /// The database: `sqlite://PATH`, or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (also
    /// `?host=/socket/dir`) shared by a fleet; a password is shown as `***` in logs and
    /// check-config.
    store: Option<String>, file Option<toml::Spanned<String>>, toml "store",
    flag "--store URL", env "DECNET_STORE", default "sqlite://DATA_DIR/decnet.db", arg(long);

    /// A list of known scanners, lines of `CIDR[,name[,category]]` (docs/configuration.md, "Known-scanner lists"):
    /// their profiles say who they are and their risk stays low. Repeat for several (env:
    /// comma-separated); reloaded on SIGHUP.
    known_scanners: Vec<PathBuf>, file Vec<PathBuf>, toml "known_scanners",
    flag "--known-scanners FILE", env "DECNET_KNOWN_SCANNERS", default "none",
    arg(long = "known-scanners", value_name = "FILE", value_delimiter = ',');

    /// An allow list in the known-scanner format (`CIDR[,name[,category]]`): sources the
    /// blocklist and STIX feeds never include. Repeat for several (env: comma-separated);
    /// reloaded on SIGHUP.
    allow: Vec<PathBuf>, file Vec<PathBuf>, toml "allow",
    flag "--allow FILE", env "DECNET_ALLOW", default "none",
    arg(long = "allow", value_name = "FILE", value_delimiter = ',');

    /// A MaxMind-format database (GeoLite2/GeoIP2 Country, City or ASN, or any mmdb of the
    /// same layout): profiles, feeds and the dashboard then carry `asn`, `as_org` and
    /// `country`. Repeat for several (env: comma-separated; the first that knows a field
    /// wins); reloaded on SIGHUP.
    geoip_db: Vec<PathBuf>, file Vec<PathBuf>, toml "geoip_db",
    flag "--geoip-db FILE", env "DECNET_GEOIP_DB", default "none",
    arg(long = "geoip-db", value_name = "FILE", value_delimiter = ',');

    /// PEM certificate chain (leaf first) the API and the stream are served with over TLS;
    /// with --tls-key. Reloaded on SIGHUP (a file that does not load keeps the one in force).
    tls_cert: Option<PathBuf>, file Option<PathBuf>, toml "tls_cert",
    flag "--tls-cert FILE", env "DECNET_TLS_CERT", default "none (plain HTTP)", arg(long);

    /// PEM private key of --tls-cert.
    tls_key: Option<PathBuf>, file Option<PathBuf>, toml "tls_key",
    flag "--tls-key FILE", env "DECNET_TLS_KEY", default "none", arg(long);

    /// Serve plain HTTP on an address beyond loopback (behind a TLS-terminating proxy);
    /// without it such a --listen needs --tls-cert and --tls-key.
    insecure_http: Option<bool>, file Option<bool>, toml "insecure_http",
    flag "--insecure-http[=BOOL]", env "DECNET_INSECURE_HTTP", default "false",
    arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL");

    /// Days of logs, detections, bounties and dead letters to keep (by each row's own time);
    /// older ones are deleted in small batches, never before the profiler and every alert
    /// sink have read them. Profiles and campaigns stay. 0: keep everything.
    retain_days: Option<i64>, file Option<toml::Spanned<i64>>, toml "retain_days",
    flag "--retain-days N", env "DECNET_RETAIN_DAYS", default "30",
    arg(long, allow_negative_numbers = true);

    /// Shards the fleet's profiling is split into by source address (PostgreSQL, 1-64):
    /// each is profiled by whichever analyst holds its lock, one at a time, and the analyst
    /// holding the fleet's analyst lock matches campaigns over all of them. Every analyst
    /// of a fleet must be started with the same number.
    analyst_shards: Option<i64>, file Option<toml::Spanned<i64>>, toml "analyst_shards",
    flag "--analyst-shards N", env "DECNET_ANALYST_SHARDS", default "1", arg(long);

    /// Cap on the SQLite file in MiB (at least 16): past it the oldest rows go first, as
    /// retention does. 0: no cap. (PostgreSQL bounds its own storage: use --retain-days.)
    max_db_mb: Option<i64>, file Option<toml::Spanned<i64>>, toml "max_db_mb",
    flag "--max-db-mb N", env "DECNET_MAX_DB_MB", default "0", arg(long, allow_negative_numbers = true);

    /// This sensor's name in a fleet, 1-64 of A-Z a-z 0-9 . _ -: its rows carry it and its
    /// ingest cursor is its own.
    sensor_id: Option<String>, file Option<toml::Spanned<String>>, toml "sensor_id",
    flag "--sensor-id ID", env "DECNET_SENSOR_ID",
    default "the name kept in DATA_DIR/sensor-id, else the hostname (then kept there)",
    arg(long);
}

/// The settings as a Markdown table (docs/configuration.md holds it between markers; the
/// test below keeps it the same).
#[cfg(test)]
fn markdown_table() -> String {
    let cell = |s: &str| s.trim().replace('|', "\\|");
    let mut out =
        String::from("| flag | env | TOML key | default | meaning |\n|---|---|---|---|---|\n");
    for k in KEYS {
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} | {} |\n",
            cell(k.flag),
            k.env,
            k.toml,
            cell(k.default),
            cell(k.doc)
        ));
    }
    out.push_str(
        "| `--config FILE` | `DECNET_CONFIG` | | | TOML file with the keys above; an unknown key is an error |\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, Command};

    use super::{KEYS, markdown_table};

    #[test]
    fn every_key_is_the_flag_and_variable_clap_parses() {
        let cmd = super::RunArgs::augment_args(Command::new("run"));
        for k in KEYS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == k.field)
                .unwrap_or_else(|| panic!("no argument for {}", k.field));
            let long = k.flag.split([' ', '[']).next().unwrap_or("");
            assert_eq!(
                Some(long.trim_start_matches("--")),
                arg.get_long(),
                "{}",
                k.toml
            );
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(k.env),
                "{}",
                k.toml
            );
        }
    }

    /// docs/configuration.md carries the generated table; `DECNET_BLESS=1` rewrites it.
    #[test]
    fn the_docs_table_is_the_generated_one() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).expect("docs/configuration.md");
        let (begin, end) = ("<!-- keys:begin -->\n", "<!-- keys:end -->");
        let a = doc.find(begin).expect("keys:begin marker") + begin.len();
        let b = doc.find(end).expect("keys:end marker");
        let want = markdown_table();
        if doc[a..b] != want {
            if std::env::var_os("DECNET_BLESS").is_some() {
                std::fs::write(&path, format!("{}{want}{}", &doc[..a], &doc[b..])).unwrap();
                return;
            }
            panic!(
                "docs/configuration.md's table differs from config::keys; rerun with \
                 DECNET_BLESS=1 to rewrite it:\n{want}"
            );
        }
    }
}
