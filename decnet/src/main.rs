//! The decnet command line. All logic lives in the library; this file parses flags,
//! installs logging and signal handling, and reports errors with context.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use decnet::config::{RunArgs, RunConfig};

#[derive(Parser)]
#[command(
    name = "decnet",
    version,
    about = "eBPF-accelerated sensor and analyst for deception networks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach to the decoy interface and run the sensor, journal and API.
    Run(RunArgs),
    /// Validate a configuration (the flags, variables and file `run` would use) without
    /// starting anything: prints the resolved settings, or the first error with its origin.
    CheckConfig(RunArgs),
    /// Ingest the journal of a data dir into its database without the sensor (for journals
    /// written by other honeypots, or to catch up after the daemon stopped).
    Ingest {
        /// Data dir holding events.jsonl and decnet.db.
        #[arg(long, env = "DECNET_DATA_DIR", default_value = decnet::config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// Stop at the end of the journal instead of following it.
        #[arg(long)]
        once: bool,
        /// The database (sqlite://PATH or postgres://...) [default: sqlite://DATA_DIR/decnet.db].
        #[arg(long, env = "DECNET_STORE")]
        store: Option<String>,
        /// The sensor the journal belongs to [default: as `run`: kept in the data dir, else
        /// the hostname].
        #[arg(long, env = "DECNET_SENSOR_ID")]
        sensor_id: Option<String>,
    },
    /// Write the stored logs and detections as NDJSON to stdout, in decnet's JSON or in
    /// Elastic Common Schema (for Filebeat, Elastic Agent or a SIEM backfill).
    Export {
        /// Data dir holding decnet.db.
        #[arg(long, env = "DECNET_DATA_DIR", default_value = decnet::config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// The database (sqlite://PATH or postgres://...) [default: sqlite://DATA_DIR/decnet.db].
        #[arg(long, env = "DECNET_STORE")]
        store: Option<String>,
        /// json: the API's objects with `record` = log or detection; ecs: ECS documents.
        #[arg(long, value_enum, default_value = "json")]
        format: decnet::feed::export::Format,
        /// Only records at or after this time: RFC 3339, or an age such as 24h or 30d
        /// [default: everything].
        #[arg(long)]
        since: Option<String>,
        /// logs, detections or all.
        #[arg(long, value_enum, default_value = "all")]
        what: decnet::feed::export::What,
    },
    /// Write a consistent copy of a data dir's SQLite database to OUT while the daemon
    /// runs (SQLite's VACUUM INTO, compacted). To restore: stop the daemon, put the copy at
    /// DATA_DIR/decnet.db (removing decnet.db-wal and -shm), start it; the journal since the
    /// copy is ingested again exactly once. PostgreSQL: pg_dump (docs/operations.md).
    Backup {
        /// Data dir holding decnet.db.
        #[arg(long, env = "DECNET_DATA_DIR", default_value = decnet::config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// The file to write; it must not exist yet.
        out: std::path::PathBuf,
    },
    /// Remove what `decnet run --pin` left attached on an interface: its pinned links (which
    /// detaches the programs once no daemon holds them), programs and maps.
    Detach {
        /// The interface the sensor was pinned on.
        #[arg(long, env = "DECNET_IFACE")]
        iface: String,
        /// The bpffs directory given to `run --pin-dir`.
        #[arg(long, env = "DECNET_PIN_DIR", default_value = decnet::config::DEFAULT_PIN_DIR)]
        pin_dir: std::path::PathBuf,
    },
    /// Replay pcap/pcapng captures through the kernel programs, journal, ingest and
    /// profiler (BPF_PROG_TEST_RUN, one frame at a time, on the capture's clock), then print
    /// the attackers. Needs root (CAP_BPF).
    Replay {
        /// A decoy address and its decky name; repeat for each decoy. Without any, every
        /// address the capture probes (SYN, UDP datagram, echo request) more than it probes
        /// others is a decoy.
        #[arg(long = "decoy", value_name = "IP[=NAME]")]
        decoys: Vec<decnet::sensor::Decoy>,
        /// Where the journal and database go [default: a temporary directory, removed at
        /// exit]. An existing data dir gets the replay's events added.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// A known-scanner list (`CIDR[,name[,category]]` lines), as `run --known-scanners`;
        /// repeat for several.
        #[arg(
            long = "known-scanners",
            value_name = "FILE",
            env = "DECNET_KNOWN_SCANNERS",
            value_delimiter = ','
        )]
        known_scanners: Vec<std::path::PathBuf>,
        /// A MaxMind-format database (GeoLite2 Country, City, ASN), as `run --geoip-db`:
        /// profiles carry `asn`, `as_org` and `country`. Repeat for several.
        #[arg(
            long = "geoip-db",
            value_name = "FILE",
            env = "DECNET_GEOIP_DB",
            value_delimiter = ','
        )]
        geoip_db: Vec<std::path::PathBuf>,
        /// Print one full profile (JSON) per line instead of the attackers table.
        #[arg(long)]
        json: bool,
        /// The captures, replayed in this order.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
    },
    /// Manage a running daemon's API token.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print the counters of a running daemon (GET /api/v1/stats).
    Stats {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// List the attackers a running daemon has profiled, riskiest first.
    Attackers {
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Rows to show (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Order: risk, last_seen, first_seen or events.
        #[arg(long, default_value = "risk")]
        sort: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Follow a running daemon's live stream of logs and detections (resumes after a
    /// disconnect without gaps).
    Tail {
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Print each event's JSON, one per line.
        #[arg(long)]
        json: bool,
        /// Only this source.
        #[arg(long)]
        attacker_ip: Option<std::net::IpAddr>,
        /// Only logs of this event type (tcp_syn, tcp_probe, ...).
        #[arg(long)]
        event_type: Option<String>,
        /// Only detections with at least this risk score.
        #[arg(long)]
        min_risk: Option<u8>,
        /// Only detections of this classification (benign, malicious, suspicious, unknown).
        #[arg(long)]
        classification: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Replace the token without a restart: the daemon writes a new one to its token file
    /// (DATA_DIR/api-token) and uses it from then on; the old one, its stream tickets and
    /// the streams it opened end (each stream with a `reset` event).
    Rotate {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
}

/// How to reach a running daemon.
#[derive(clap::Args)]
struct DaemonArgs {
    /// Address of the daemon's API.
    #[arg(long, env = "DECNET_LISTEN", default_value = decnet::config::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// The daemon's data dir, where it keeps `api-token` (unless DECNET_API_TOKEN is set).
    #[arg(long, env = "DECNET_DATA_DIR", default_value = decnet::config::DEFAULT_DATA_DIR)]
    data_dir: std::path::PathBuf,
    /// Speak TLS to a daemon run with --tls-cert, trusting the CA(s) in this PEM file.
    #[arg(long, env = "DECNET_CA")]
    ca: Option<std::path::PathBuf>,
    /// The name the daemon's certificate must carry [default: the --listen address].
    #[arg(long, env = "DECNET_TLS_NAME", requires = "ca")]
    tls_name: Option<String>,
}

impl DaemonArgs {
    fn client(&self) -> anyhow::Result<decnet::client::Client> {
        let c = decnet::client::Client::new(self.listen, &self.data_dir)?;
        match &self.ca {
            Some(ca) => c.with_tls(ca, self.tls_name.as_deref()),
            None => Ok(c),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = decnet::telemetry::init().context("telemetry")?;
    let result = run(cli);
    // Flush developer traces before saying what became of them.
    drop(telemetry);
    if let Some(t) = decnet::telemetry::snapshot() {
        tracing::info!(
            exported = t.exported,
            dropped_queue_full = t.dropped_queue_full,
            export_failed = t.export_failed,
            "developer tracing: spans"
        );
    }
    result
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::CheckConfig(args) => {
            let cfg = RunConfig::resolve(args).context("configuration")?;
            cfg.check_host().context("configuration")?;
            decnet::privilege::preflight(&cfg.user, &cfg.data_dir).context("configuration")?;
            print!("{}", cfg.describe());
            let (list, bad) = cfg.known_scanner_list().context("configuration")?;
            for e in &bad {
                println!("warning: known-scanner line skipped: {e}");
            }
            if !cfg.known_scanners.is_empty() {
                println!("known scanners: {} entries loaded", list.len());
            }
            let (allow, bad) = cfg.allow_list().context("configuration")?;
            for e in &bad {
                println!("warning: allow-list line skipped: {e}");
            }
            if !cfg.allow.is_empty() {
                println!("allow lists: {} entries loaded", allow.len());
            }
            println!("configuration ok");
            Ok(())
        }
        Cmd::Run(args) => {
            let cfg = RunConfig::resolve(args).context("configuration")?;
            cfg.check_host().context("configuration")?;
            decnet::privilege::preflight(&cfg.user, &cfg.data_dir).context("configuration")?;
            // Everything that needs a capability happens here, before the runtime's threads
            // exist; then the process becomes an unprivileged user for good.
            let prepared = decnet::daemon::prepare(&cfg).context("decnet run")?;
            match decnet::privilege::drop_to(&cfg.user, &cfg.data_dir)
                .context("dropping privileges")?
            {
                decnet::privilege::Dropped::KeptRoot => {
                    tracing::warn!("running as root (--user root): nothing was dropped")
                }
                decnet::privilege::Dropped::To { user, uid, gid } => {
                    tracing::info!(user, uid, gid, "privileges dropped: no capabilities left")
                }
            }
            let rt = runtime()?;
            rt.block_on(async move {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = tx.send(true);
                });
                decnet::daemon::run(cfg, prepared, rx).await
            })
            .context("decnet run")
        }
        Cmd::Detach { iface, pin_dir } => {
            let removed = decnet::sensor::pin::remove_all(&pin_dir, &iface)
                .with_context(|| format!("detaching {iface}"))?;
            if removed.is_empty() {
                println!("nothing pinned for {iface} under {}", pin_dir.display());
            } else {
                for p in &removed {
                    println!("removed {}", p.display());
                }
                println!(
                    "detached: {} pins removed (a daemon still running on {iface} keeps its \
                     programs until it stops)",
                    removed.len()
                );
            }
            Ok(())
        }
        Cmd::Replay {
            decoys,
            data_dir,
            known_scanners,
            geoip_db,
            json,
            files,
        } => {
            let (list, bad) = decnet::intel::scanners::ScannerList::load(&known_scanners)
                .context("known-scanner list")?;
            for e in &bad {
                eprintln!("warning: known-scanner line skipped: {e}");
            }
            decnet::intel::scanners::install(list);
            let dbs = decnet::intel::geoip::GeoDbs::open(&geoip_db).context("GeoIP database")?;
            decnet::intel::geoip::install(dbs);
            replay(decoys, data_dir, json, files)
        }
        other => run_other(other),
    }
}

/// `decnet replay`: the capture pass (no runtime: the kernel programs and the journal
/// writer's thread), then ingest and profiles, then the report on stdout and the replay's
/// account on stderr.
fn replay(
    decoys: Vec<decnet::sensor::Decoy>,
    data_dir: Option<std::path::PathBuf>,
    json: bool,
    files: Vec<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use decnet::privilege::{CAP_BPF, has_effective};
    anyhow::ensure!(
        has_effective(CAP_BPF),
        "decnet replay runs the kernel programs with BPF_PROG_TEST_RUN: it needs root (CAP_BPF)"
    );
    let (dir, temporary) = match data_dir {
        Some(d) => (d, false),
        None => {
            let d = std::env::temp_dir().join(format!("decnet-replay-{}", std::process::id()));
            (d, true)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let opts = decnet::replay::ReplayOptions {
        files,
        decoys,
        data_dir: dir.clone(),
        flood: decnet::sensor::FloodBudget::default(),
        flow_idle: std::time::Duration::from_secs(60),
    };
    let result = (|| {
        let mut replayed = decnet::replay::capture(&opts).context("decnet replay")?;
        let started = std::time::Instant::now();
        let report = runtime()?.block_on(async {
            let store = decnet::replay::analyse(&dir).await?;
            replayed.analysed = Some(started.elapsed());
            let report = decnet::replay::report(&store, json).await;
            store.close().await;
            report
        });
        let report = report.context("decnet replay")?;
        eprint!("{}", replayed.describe());
        print!("{report}");
        if let Some(e) = replayed.error {
            return Err(anyhow::Error::new(e).context("decnet replay stopped early"));
        }
        anyhow::ensure!(
            replayed.frames == 0 || replayed.skipped.values().sum::<u64>() < replayed.frames,
            "decnet replay: no frame could be replayed (the link types read are {})",
            decnet::replay::link::SUPPORTED
        );
        Ok(())
    })();
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The commands that need no privileges: one runtime, one async body.
fn run_other(cmd: Cmd) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        // run() handles these itself (privileges, runtime after the drop).
        Cmd::Run(_) | Cmd::CheckConfig(_) | Cmd::Detach { .. } | Cmd::Replay { .. } => {
            anyhow::bail!("internal: run/check-config/detach/replay")
        }
        Cmd::Ingest {
            data_dir,
            once,
            store,
            sensor_id,
        } => rt.block_on(async move {
            let url = store
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("decnet.db").display()));
            if let Some(id) = &sensor_id {
                anyhow::ensure!(
                    decnet::config::valid_sensor_id(id),
                    "sensor id `{id}`: 1-64 characters of A-Z a-z 0-9 . _ -"
                );
            }
            let sensor = decnet::config::resolve_sensor_id(&data_dir, sensor_id.as_deref())
                .context("sensor id")?;
            let store = decnet::store::Store::connect(&url)
                .await
                .with_context(|| format!("opening {}", decnet::config::redact_url(&url)))?;
            tokio::spawn(
                store
                    .clone()
                    .checkpoint_loop(std::time::Duration::from_millis(500)),
            );
            let mut ingest_cfg = decnet::ingest::IngestConfig::new(data_dir.clone());
            ingest_cfg.sensor = sensor.into();
            let ing = decnet::ingest::Ingester::new(
                store,
                ingest_cfg,
                std::sync::Arc::new(tokio::sync::Notify::new()),
            );
            let stats = ing.stats();
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                let _ = tx.send(true);
            });
            ing.run(rx, once).await.context("ingest")?;
            let s = stats.snapshot();
            tracing::info!(
                rows = s.rows,
                dead_letters = s.dead_letters,
                batches = s.batches,
                "ingest done"
            );
            Ok(())
        }),
        Cmd::Backup { data_dir, out } => rt.block_on(async move {
            let db = data_dir.join("decnet.db");
            let t = std::time::Instant::now();
            let bytes = decnet::store::backup(&db, &out).await?;
            eprintln!(
                "backup: {} -> {} ({:.1} MiB, {:.1} s)",
                db.display(),
                out.display(),
                bytes as f64 / (1 << 20) as f64,
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }),
        Cmd::Export {
            data_dir,
            store,
            format,
            since,
            what,
        } => rt.block_on(async move {
            let since_ns = match &since {
                None => i64::MIN,
                Some(s) => decnet::feed::since(s).with_context(|| {
                    format!("--since `{s}`: expected an RFC 3339 time or an age such as 24h or 30d")
                })?,
            };
            let url = store
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("decnet.db").display()));
            if let Some(path) = url.strip_prefix("sqlite://") {
                // Opening a SQLite URL creates the file: a mistyped data dir would export
                // nothing and leave an empty database behind.
                anyhow::ensure!(
                    std::path::Path::new(path).is_file(),
                    "{path}: no database there (is --data-dir right?)"
                );
            }
            let store = decnet::store::Store::connect(&url)
                .await
                .with_context(|| format!("opening {}", decnet::config::redact_url(&url)))?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = decnet::feed::export::write(&store, what, format, since_ns, &mut out)
                .await
                .context("export")?;
            eprintln!("exported {} logs, {} detections", n.logs, n.detections);
            Ok(())
        }),
        Cmd::Token {
            action: TokenAction::Rotate { daemon },
        } => rt.block_on(async move {
            let body = daemon.client()?.post("/api/v1/token/rotate").await?;
            let v: serde_json::Value =
                serde_json::from_str(&body).context("the daemon's answer")?;
            eprintln!(
                "token rotated; the new one is in {} (the old one no longer works)",
                v["token_file"].as_str().unwrap_or("the daemon's data dir")
            );
            Ok(())
        }),
        Cmd::Stats { daemon } => rt.block_on(async move {
            let body = daemon.client()?.get("/api/v1/stats").await?;
            println!("{body}");
            Ok(())
        }),
        Cmd::Attackers {
            daemon,
            limit,
            sort,
            json,
        } => rt.block_on(async move {
            let body = daemon
                .client()?
                .get(&format!("/api/v1/attackers?limit={limit}&sort={sort}"))
                .await?;
            if json {
                println!("{body}");
            } else {
                print!("{}", decnet::client::attackers_table(&body)?);
            }
            Ok(())
        }),
        Cmd::Tail {
            daemon,
            json,
            attacker_ip,
            event_type,
            min_risk,
            classification,
        } => rt.block_on(async move {
            let mut query = Vec::new();
            if let Some(ip) = attacker_ip {
                query.push(format!("attacker_ip={ip}"));
            }
            if let Some(et) = event_type {
                query.push(format!("event_type={et}"));
            }
            if let Some(r) = min_risk {
                query.push(format!("min_risk={r}"));
            }
            if let Some(c) = classification {
                let c: String = form_urlencoded::byte_serialize(c.as_bytes()).collect();
                query.push(format!("classification={c}"));
            }
            let client = daemon.client()?;
            let query = query.join("&");
            let follow = client.tail(&query, None, |ev| {
                if json {
                    if ev.event != "stats" {
                        println!("{}", ev.data);
                    }
                } else if let Some(line) = decnet::client::event_line(ev) {
                    println!("{line}");
                }
                true
            });
            tokio::select! {
                r = follow => r.map(|_| ()),
                _ = wait_for_signal() => Ok(()),
            }
        }),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
