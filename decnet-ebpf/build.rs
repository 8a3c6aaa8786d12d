// Rebuild the eBPF object when a different bpf-linker is installed: the object depends on it
// but cargo cannot see that on its own.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
