//! Builds the eBPF object (decnet-ebpf) with aya-build so that `cargo build` builds
//! everything. With AYA_BUILD_SKIP=1 it writes an empty object instead, so `cargo check`
//! and clippy work without the eBPF toolchain; the loader then refuses with a clear error.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("decnet-ebpf");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(&object, b"").context("writing empty eBPF object")?;
        return Ok(());
    }
    // `cargo xtask setup` installs bpf-linker into <workspace>/.tools/bin; put it on PATH for
    // the nested cargo so a plain `cargo build` works after setup.
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    let root = manifest.parent().context("workspace root")?;
    let tools = root.join(".tools").join("bin");
    println!(
        "cargo:rerun-if-changed={}",
        tools.join("bpf-linker").display()
    );
    if tools.is_dir() {
        let path = env::var_os("PATH").unwrap_or_default();
        let mut parts = vec![tools.clone()];
        parts.extend(env::split_paths(&path));
        let joined = env::join_paths(parts).context("joining PATH")?;
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { env::set_var("PATH", joined) };
    }
    let ebpf_dir = root.join("decnet-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "decnet-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF object; run `cargo xtask setup` (installs rust-src and bpf-linker) or set AYA_BUILD_SKIP=1 to build without it")?;
    Ok(())
}
