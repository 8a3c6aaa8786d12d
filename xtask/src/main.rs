//! Project tasks: `cargo xtask setup | run | test | bench`.
//!
//! `setup` makes the eBPF toolchain available: the nightly's rust-src and a bpf-linker
//! built against the nightly's own libLLVM (recipe in ../shared/TOOLCHAIN.md), installed in
//! `<workspace>/.tools`. Every other task runs it first, so a fresh clone needs nothing else.

mod demo;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build needs (rust-src for the nightly, a matching bpf-linker).
    Setup,
    /// Build and run the sensor. Without arguments: on a demo decoy created here (network
    /// namespace + veth), removed again on Ctrl-C. With arguments: `decnet run ARGS...`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Install test tools if missing (as root, through apt), build, and run every test.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a benchmark: `sensor`, `ingest`, `profile`, `stream`, `tracing` or `capture`.
    Bench { name: String },
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs a command, failing with the command line on a non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c.env("PATH", setup::path_with_tools());
    c
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Run { args } => {
            setup::setup()?;
            run(cargo().args(["build", "--release", "-p", "decnet"]))?;
            let bin = root().join("target/release/decnet");
            let args: Vec<String> = args.into_iter().skip_while(|a| a == "--").collect();
            if args.is_empty() {
                demo::run_demo(&bin)
            } else {
                demo::run_direct(&bin, &args)
            }
        }
        Cmd::Test { args } => {
            setup::setup()?;
            setup::test_tools()?;
            run(cargo().args(["build", "-p", "decnet"]))?;
            let bin = root().join("target/debug/decnet");
            run(cargo().arg("test").env("DECNET_BIN", &bin).args(&args))
        }
        Cmd::Bench { name } => {
            setup::setup()?;
            match name.as_str() {
                "sensor" => run(cargo().args(["bench", "-p", "decnet", "--bench", "sensor"])),
                "ingest" => {
                    // The benchmark drives the real binary.
                    run(cargo().args(["build", "--release", "-p", "decnet"]))?;
                    run(cargo().args(["bench", "-p", "decnet", "--bench", "ingest"]))
                }
                "profile" => run(cargo().args(["bench", "-p", "decnet", "--bench", "profile"])),
                "tracing" => {
                    // The real binary twice: as shipped, and built without the `otel`
                    // feature (no tracing code at all) as the baseline. `ingest` needs no
                    // eBPF object, so the baseline skips that build.
                    run(cargo().args(["build", "--release", "-p", "decnet"]))?;
                    let no_otel = root().join("target/no-otel");
                    run(cargo()
                        .args([
                            "build",
                            "--release",
                            "-p",
                            "decnet",
                            "--no-default-features",
                        ])
                        .arg("--target-dir")
                        .arg(&no_otel)
                        .env("AYA_BUILD_SKIP", "1"))?;
                    run(cargo()
                        .args(["bench", "-p", "decnet", "--bench", "tracing"])
                        .env("DECNET_BIN_NO_OTEL", no_otel.join("release/decnet")))
                }
                "stream" => {
                    // The real daemon (release) in a namespace lab, and wrk for REST.
                    setup::bench_tools()?;
                    run(cargo().args(["build", "--release", "-p", "decnet"]))?;
                    let bin = root().join("target/release/decnet");
                    run(cargo()
                        .args(["bench", "-p", "decnet-tests", "--bench", "stream"])
                        .env("DECNET_BIN", &bin))
                }
                "capture" => {
                    // The release daemon against tcpdump and scapy on a namespace lab.
                    setup::capture_tools()?;
                    run(cargo().args(["build", "--release", "-p", "decnet"]))?;
                    let bin = root().join("target/release/decnet");
                    run(cargo()
                        .args(["bench", "-p", "decnet-tests", "--bench", "capture"])
                        .env("DECNET_BIN", &bin))
                }
                other => {
                    bail!(
                        "unknown benchmark `{other}` (known: sensor, ingest, profile, stream, tracing, capture)"
                    )
                }
            }
        }
    }
}
