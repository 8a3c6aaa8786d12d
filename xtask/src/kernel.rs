//! `cargo xtask kernel [OBJECT]`: the size of each kernel program in the built eBPF object.
//!
//! For every program (a function in an `xdp` or `classifier` section) it prints the
//! instructions it can run through (its own and those of every BPF function it calls,
//! transitively) and its stack: the deepest sum of frames along a call chain (the verifier
//! rounds each frame up and caps the sum at 512 bytes). A refactoring of the kernel crate should leave both about
//! where they were; this prints them without loading anything, so it needs no root. A
//! program over [`STACK_BUDGET`] is an error (`cargo xtask test` runs this).
//!
//! A frame is the lowest `r10 - N` the function reads, writes or takes the address of.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionIndex};

/// The most stack a program may use. The verifier's limit is 512 bytes; this leaves room
/// for what the next change adds, and `cargo xtask test` fails past it.
const STACK_BUDGET: u64 = 400;

/// One function symbol: where it is, how long, and what it calls.
struct Func {
    name: String,
    section: SectionIndex,
    /// Byte offset in its section.
    start: u64,
    insns: u64,
    frame: u64,
    /// (section, byte offset) of each BPF-to-BPF call target.
    calls: Vec<(SectionIndex, u64)>,
}

pub(crate) fn report(object_path: Option<PathBuf>) -> anyhow::Result<()> {
    let path = match object_path {
        Some(p) => p,
        None => newest_object(&crate::root().join("target"))?,
    };
    let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let file =
        object::File::parse(&*data).with_context(|| format!("parsing {}", path.display()))?;
    let mut funcs = Vec::new();
    for sym in file.symbols() {
        if sym.kind() != object::SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let Some(section) = sym.section_index() else {
            continue;
        };
        let sec = file.section_by_index(section)?;
        let bytes = sec.data()?;
        let (start, size) = (sym.address(), sym.size());
        let code = bytes
            .get(start as usize..(start + size) as usize)
            .context("symbol outside its section")?;
        // Relocations of this section by instruction offset (calls across sections).
        let relocs: BTreeMap<u64, (SectionIndex, u64)> = sec
            .relocations()
            .filter_map(|(off, r)| match r.target() {
                RelocationTarget::Symbol(i) => {
                    let s = file.symbol_by_index(i).ok()?;
                    Some((off, (s.section_index()?, s.address())))
                }
                _ => None,
            })
            .collect();
        let mut calls = Vec::new();
        let mut frame = 0u64;
        // Registers holding r10 (the frame pointer) plus an offset.
        let mut fp_regs: [Option<i64>; 11] = [None; 11];
        for (i, insn) in code.chunks_exact(8).enumerate() {
            let op = insn[0];
            let dst = (insn[1] & 0x0f) as usize;
            let src = (insn[1] >> 4) as usize;
            let off = i16::from_le_bytes([insn[2], insn[3]]) as i64;
            let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]) as i64;
            let at = start + i as u64 * 8;
            let mut low = |o: i64| {
                if o < 0 {
                    frame = frame.max((-o) as u64);
                }
            };
            match op & 0x07 {
                // LDX: dst = *(src + off)
                0x01 if src == 10 => low(off),
                0x01 if src < 11 => {
                    if let Some(b) = fp_regs[src] {
                        low(b + off);
                    }
                }
                // ST/STX: *(dst + off) = ...
                0x02 | 0x03 if dst == 10 => low(off),
                0x02 | 0x03 if dst < 11 => {
                    if let Some(b) = fp_regs[dst] {
                        low(b + off);
                    }
                }
                _ => {}
            }
            if op == 0x85 && src == 1 {
                // A BPF-to-BPF call: relocated (across sections) or relative to the next insn.
                let target = match relocs.get(&at) {
                    Some((sec, base)) => (*sec, (*base as i64 + (imm + 1) * 8) as u64),
                    None => (section, (at as i64 + 8 + imm * 8) as u64),
                };
                calls.push(target);
            }
            // Track frame-pointer copies: `rX = r10`, `rX += imm`; any other write forgets.
            if dst < 11 && op & 0x07 == 0x07 {
                match op {
                    0xbf if src == 10 => fp_regs[dst] = Some(0),
                    0xbf if src < 11 => fp_regs[dst] = fp_regs[src],
                    0x07 => {
                        if let Some(b) = fp_regs[dst] {
                            let v = b + imm;
                            fp_regs[dst] = Some(v);
                            low(v);
                        }
                    }
                    _ => fp_regs[dst] = None,
                }
            } else if matches!(op & 0x07, 0x01 | 0x04 | 0x00) && dst < 11 {
                fp_regs[dst] = None;
            }
            if op == 0x85 {
                // A call clobbers r0-r5.
                for r in fp_regs.iter_mut().take(6) {
                    *r = None;
                }
            }
        }
        funcs.push(Func {
            name: sym.name().unwrap_or("?").to_owned(),
            section,
            start,
            insns: size / 8,
            frame,
            calls,
        });
    }
    let find = |sec: SectionIndex, off: u64| {
        funcs
            .iter()
            .position(|f| f.section == sec && off >= f.start && off < f.start + f.insns * 8)
    };
    let callees: Vec<Vec<usize>> = funcs
        .iter()
        .map(|f| f.calls.iter().filter_map(|&(s, o)| find(s, o)).collect())
        .collect();
    println!("kernel programs in {}", path.display());
    println!(
        "  {:<22} {:>13} {:>11} {:>9}",
        "program", "instructions", "stack (B)", "functions"
    );
    let mut programs = 0;
    let mut over = Vec::new();
    for (i, f) in funcs.iter().enumerate() {
        let section = file.section_by_index(f.section)?.name().unwrap_or("");
        if !matches!(section, "xdp" | "classifier") {
            continue;
        }
        programs += 1;
        let mut seen = BTreeSet::new();
        reach(i, &callees, &mut seen);
        let insns: u64 = seen.iter().map(|&j| funcs[j].insns).sum();
        let stack = deepest(i, &callees, &funcs, &mut BTreeSet::new());
        println!(
            "  {:<22} {insns:>13} {stack:>11} {:>9}",
            short(&f.name),
            seen.len()
        );
        if stack > STACK_BUDGET {
            over.push(format!("{} ({stack} B)", short(&f.name)));
        }
    }
    println!(
        "  {:<22} {:>13} {:>11}",
        "function", "instructions", "frame (B)"
    );
    for f in &funcs {
        println!("  {:<22} {:>13} {:>11}", short(&f.name), f.insns, f.frame);
    }
    if programs == 0 {
        bail!(
            "no xdp or classifier program in {} (built with AYA_BUILD_SKIP?)",
            path.display()
        );
    }
    if !over.is_empty() {
        bail!(
            "kernel programs over the {STACK_BUDGET}-byte stack budget: {}",
            over.join(", ")
        );
    }
    Ok(())
}

/// A mangled Rust name's last identifier (`_RNv..10decnet_xdp` -> `decnet_xdp`).
fn short(name: &str) -> String {
    if !name.starts_with("_R") {
        return name.to_owned();
    }
    // v0 mangling ends with <len><ident>: take the last such run.
    let b = name.as_bytes();
    let mut i = b.len();
    while i > 0 && !b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    let ident = &name[i..];
    let mut j = i;
    while j > 0 && b[j - 1].is_ascii_digit() {
        j -= 1;
    }
    match name[j..i].parse::<usize>() {
        Ok(n) if n <= ident.len() => ident[ident.len() - n..].to_owned(),
        _ => name.to_owned(),
    }
}

fn reach(i: usize, callees: &[Vec<usize>], seen: &mut BTreeSet<usize>) {
    if seen.insert(i) {
        for &c in &callees[i] {
            reach(c, callees, seen);
        }
    }
}

/// The largest sum of frames along a call chain from `i` (recursion is refused by the
/// verifier, so a function on the current path is not entered again).
fn deepest(i: usize, callees: &[Vec<usize>], funcs: &[Func], path: &mut BTreeSet<usize>) -> u64 {
    if !path.insert(i) {
        return 0;
    }
    let own = funcs[i].frame;
    let below = callees[i]
        .iter()
        .map(|&c| deepest(c, callees, funcs, path))
        .max()
        .unwrap_or(0);
    path.remove(&i);
    own + below
}

/// The most recently built `decnet-ebpf` object under `target/`.
fn newest_object(target: &Path) -> anyhow::Result<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for profile in ["debug", "release"] {
        let build = target.join(profile).join("build");
        let Ok(dirs) = std::fs::read_dir(&build) else {
            continue;
        };
        for d in dirs.flatten() {
            let p = d.path().join("out/decnet-ebpf");
            if let Ok(m) = p.metadata()
                && m.len() > 0
                && let Ok(t) = m.modified()
                && best.as_ref().is_none_or(|(bt, _)| t > *bt)
            {
                best = Some((t, p));
            }
        }
    }
    best.map(|(_, p)| p).context(
        "no built eBPF object under target/: run `cargo build -p decnet` first, or name one",
    )
}
