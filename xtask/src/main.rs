//! Project tasks: `cargo xtask setup | run | test | bench`.
//!
//! `setup` makes the eBPF toolchain available: the nightly's rust-src and a bpf-linker
//! built against the nightly's own libLLVM (recipe in ../shared/TOOLCHAIN.md), installed in
//! `<workspace>/.tools`. Every other task runs it first, so a fresh clone needs nothing else.

mod demo;
mod kernel;
mod layers;
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
    /// Print each kernel program's instructions and stack, read from the built eBPF object
    /// (the newest under target/ unless one is named).
    Kernel { object: Option<PathBuf> },
    /// Print the daemon's stages and the imports between them; fail when a file imports a
    /// later stage, files import each other in a circle, or a file outgrows 700 lines.
    Layers {
        /// Another checkout to read (an older commit's worktree, say); this one by default.
        dir: Option<PathBuf>,
    },
    /// Check the structure (layers), formatting and lints, install test tools if missing
    /// (as root, through apt), build, and run every test.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a benchmark: `sensor`, `ingest`, `profile`, `alerts`, `fleet`, `stream`,
    /// `tracing`, `capture` or `replay`.
    Bench { name: String },
    /// Soak the daemon (root): scanners, a flood, 50 SSE clients, two restarts and journal
    /// rotations for N minutes, with the release binary; prints the figures.
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
    /// Fuzz the parsers of hostile input (cargo-fuzz, libFuzzer): every target, or one, for
    /// a bounded time each. A crash fails with the input saved under fuzz/artifacts/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// One target (journal_line, payload, ring_event); all when omitted.
        target: Option<String>,
    },
}

/// The fuzz targets in fuzz/fuzz_targets.
const FUZZ_TARGETS: &[&str] = &["journal_line", "payload", "ring_event"];

/// Seconds each fuzz target runs within `cargo xtask test`.
const TEST_FUZZ_SECONDS: u32 = 30;

/// Builds the fuzz targets once, then runs each for `seconds` from its seeds (fuzz/seeds,
/// committed) plus whatever corpus earlier runs left (fuzz/corpus, not committed).
fn fuzz(targets: &[&str], seconds: u32) -> anyhow::Result<()> {
    setup::fuzz_tools()?;
    // A debug build (overflow checks, debug assertions) without a sanitizer: the targets are
    // safe Rust, so what there is to find is panics, and this builds in half the time.
    let base = |c: &mut Command| {
        c.args(["+nightly", "fuzz"]);
        c.env("AYA_BUILD_SKIP", "1");
    };
    let mut build = cargo_plain();
    base(&mut build);
    run(build.args(["build", "--dev", "-s", "none", "--fuzz-dir", "fuzz"]))?;
    for t in targets {
        let corpus = root().join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        eprintln!("fuzz: {t} for {seconds} s");
        let mut c = cargo_plain();
        base(&mut c);
        run(c
            .args(["run", "--dev", "-s", "none", "--fuzz-dir", "fuzz", t])
            .arg(&corpus)
            .arg(root().join("fuzz/seeds").join(t))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-rss_limit_mb=4096", "-print_final_stats=1"]))?;
    }
    Ok(())
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs a command, failing with the command line on a non-zero exit.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
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

/// `cargo` through rustup's proxy (so `+nightly` works), with `.tools` on PATH.
fn cargo_plain() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root());
    c.env("PATH", setup::path_with_tools());
    // The proxy would otherwise keep the stable toolchain cargo chose for xtask.
    c.env_remove("RUSTUP_TOOLCHAIN");
    c.env_remove("CARGO");
    c.env_remove("RUSTC");
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
        Cmd::Layers { dir } => layers::check(&dir.unwrap_or_else(root)),
        Cmd::Kernel { object } => {
            if object.is_none() {
                setup::setup()?;
                run(cargo().args(["build", "-p", "decnet"]))?;
            }
            kernel::report(object)
        }
        Cmd::Test { args } => {
            // The structure rules and the formatting first: they take seconds and name the
            // file at fault.
            layers::check(&root())?;
            run(cargo().args(["fmt", "--all", "--check"]))?;
            setup::setup()?;
            setup::test_tools()?;
            setup::packaged_captures()?;
            // Lints of the default members, warnings as errors: every crate but the kernel's
            // (built for BPF only, by decnet/build.rs) and the fuzz targets (cargo-fuzz).
            run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
            // The kernel crate, as decnet/build.rs builds it (nightly, BPF target, core
            // from source), in a target dir of its own.
            run(cargo_plain()
                .current_dir(root().join("decnet-ebpf"))
                .args([
                    "+nightly",
                    "clippy",
                    "-p",
                    "decnet-ebpf",
                    "-Z",
                    "build-std=core",
                ])
                .args(["--bins", "--release", "--target", "bpfel-unknown-none"])
                .arg("--target-dir")
                .arg(root().join("target/ebpf-clippy"))
                .args(["--", "-D", "warnings"]))?;
            run(cargo().args(["build", "-p", "decnet"]))?;
            // The kernel programs just built, within their stack budget.
            if std::env::var_os("AYA_BUILD_SKIP").is_some() {
                eprintln!("skipping: the kernel stack budget (AYA_BUILD_SKIP: no eBPF object)");
            } else {
                kernel::report(None)?;
            }
            let bin = root().join("target/debug/decnet");
            // The soak runs the binary users run.
            run(cargo().args(["build", "--release", "-p", "decnet"]))?;
            let soak_bin = root().join("target/release/decnet");
            run(cargo()
                .arg("test")
                .env("DECNET_BIN", &bin)
                .env("DECNET_SOAK_BIN", &soak_bin)
                .args(&args))?;
            // Hostile-input parsers, bounded; a filtered run (`cargo xtask test NAME`) skips it.
            if args.is_empty() {
                fuzz(FUZZ_TARGETS, TEST_FUZZ_SECONDS)?;
            }
            Ok(())
        }
        Cmd::Soak { minutes } => {
            setup::setup()?;
            setup::test_tools()?;
            run(cargo().args(["build", "--release", "-p", "decnet"]))?;
            let bin = root().join("target/release/decnet");
            run(cargo()
                .args(["test", "--release", "-p", "decnet-tests", "--test", "soak"])
                .args(["--", "--nocapture"])
                .env("DECNET_SOAK_BIN", &bin)
                .env("DECNET_SOAK_MINUTES", minutes.to_string()))
        }
        Cmd::Fuzz { seconds, target } => {
            setup::setup()?;
            match target {
                Some(t) if FUZZ_TARGETS.contains(&t.as_str()) => fuzz(&[t.as_str()], seconds),
                Some(t) => bail!(
                    "unknown fuzz target `{t}` (known: {})",
                    FUZZ_TARGETS.join(", ")
                ),
                None => fuzz(FUZZ_TARGETS, seconds),
            }
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
                "alerts" => {
                    // The receivers: a loopback webhook and rsyslog.
                    setup::test_tools()?;
                    run(cargo().args(["bench", "-p", "decnet", "--bench", "alerts"]))
                }
                "fleet" => {
                    // The real binary, against a throwaway PostgreSQL cluster.
                    setup::test_tools()?;
                    run(cargo().args(["build", "--release", "-p", "decnet"]))?;
                    run(cargo().args(["bench", "-p", "decnet", "--bench", "fleet"]))
                }
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
                "replay" => {
                    // The release binary against tcpdump -r and p0f -r on one capture.
                    setup::replay_tools()?;
                    run(cargo().args(["build", "--release", "-p", "decnet"]))?;
                    let bin = root().join("target/release/decnet");
                    run(cargo()
                        .args(["bench", "-p", "decnet-tests", "--bench", "replay"])
                        .env("DECNET_BIN", &bin))
                }
                other => {
                    bail!(
                        "unknown benchmark `{other}` (known: sensor, ingest, profile, alerts, fleet, stream, tracing, capture, replay)"
                    )
                }
            }
        }
    }
}
