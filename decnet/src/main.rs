//! The decnet command line. All logic lives in the library; this file parses flags,
//! installs logging and signal handling, and reports errors with context.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use decnet::config::{RunArgs, RunConfig};
use tracing_subscriber::EnvFilter;

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
    /// Ingest the journal of a data dir into its database without the sensor (for journals
    /// written by other honeypots, or to catch up after the daemon stopped).
    Ingest {
        /// Data dir holding events.jsonl and decnet.db.
        #[arg(long, env = "DECNET_DATA_DIR", default_value = decnet::config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// Stop at the end of the journal instead of following it.
        #[arg(long)]
        once: bool,
    },
    /// Print the counters of a running daemon (GET /api/v1/stats).
    Stats {
        /// Address of the daemon's API.
        #[arg(long, env = "DECNET_LISTEN", default_value = decnet::config::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("DECNET_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.cmd {
        Cmd::Run(args) => {
            let cfg = RunConfig::resolve(args).context("configuration")?;
            rt.block_on(async move {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = tx.send(true);
                });
                decnet::daemon::run(cfg, rx).await
            })
            .context("decnet run")
        }
        Cmd::Ingest { data_dir, once } => rt.block_on(async move {
            let db = data_dir.join("decnet.db");
            let store = decnet::store::Store::open(&db)
                .await
                .with_context(|| format!("opening {}", db.display()))?;
            tokio::spawn(
                store
                    .clone()
                    .checkpoint_loop(std::time::Duration::from_millis(500)),
            );
            let ing = decnet::ingest::Ingester::new(
                store,
                decnet::ingest::IngestConfig::new(data_dir.clone()),
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
        Cmd::Stats { listen } => rt.block_on(async move {
            let body = http_get(listen, "/api/v1/stats").await?;
            println!("{body}");
            Ok(())
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

/// Minimal HTTP/1.1 GET for the local client commands (loopback only, no TLS).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| {
            format!("connecting to the decnet daemon at {addr}; is `decnet run` up?")
        })?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .context("sending request")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.context("reading response")?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head.lines().next().unwrap_or("");
    anyhow::ensure!(status.contains(" 200 "), "daemon answered {status}: {body}");
    Ok(body.to_owned())
}
