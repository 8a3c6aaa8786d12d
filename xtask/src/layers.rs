//! `cargo xtask layers`: the daemon's stages, the imports between them, and three rules.
//!
//! The daemon is a pipeline (docs/architecture.md): each stage may use the stages before it
//! and never one after it. This reads every source file of `decnet/src` with syn, collects
//! the paths it names (`use` items and paths in code, outside `#[cfg(test)]` items), resolves
//! each to the file that defines it (following `pub use` re-exports), and checks:
//! 1. no file imports a file of a later stage;
//! 2. no files import each other in a circle;
//! 3. no source file is longer than [`MAX_LINES`] lines, counting its tests.
//!
//! The kernel crate (`decnet-ebpf/src`) has no stages; rules 2 and 3 apply to it too.
//!
//! It prints the import graph between stages either way, so a change to the structure shows
//! in one command.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use syn::visit::Visit;

/// The stages in pipeline order, and the modules each holds (by path from the crate root;
/// the longest matching prefix decides). A file may import its own stage and earlier ones.
pub(crate) const STAGES: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "",
            "row",
            "timefmt",
            "textsafe",
            "pace",
            "counters",
            "stats",
            "telemetry",
            "privilege",
            "tls",
        ],
    ),
    ("intel", &["intel"]),
    ("sensor", &["sensor"]),
    ("collector", &["collector"]),
    ("store", &["store"]),
    ("live", &["hub", "relay"]),
    ("ingest", &["ingest"]),
    ("profile", &["profile"]),
    ("alert", &["alert"]),
    ("feed", &["feed"]),
    ("retain", &["retain"]),
    ("config", &["config"]),
    ("serve", &["api", "client"]),
    (
        "daemon",
        &["daemon", "handover", "reattach", "replay", "main"],
    ),
];

/// The longest a source file may grow before it is split by concern.
pub(crate) const MAX_LINES: usize = 700;

/// One source file: its module path (`api::data`), its text, and what it names.
struct Source {
    path: PathBuf,
    module: Vec<String>,
    /// Every path named, made absolute (segments from the crate root).
    uses: Vec<Vec<String>>,
    /// `pub use` re-exports: the name seen from outside -> the absolute path it stands for.
    reexports: BTreeMap<String, Vec<String>>,
    lines: usize,
}

/// The source files of one crate and the imports between them.
struct Tree {
    sources: Vec<Source>,
    /// File-level imports, each with the first name seen for it (for the messages).
    named: BTreeMap<(usize, usize), String>,
}

/// Reads every file under `src`; `crate_root` is the file that is the crate's root module
/// (`lib.rs`, or a `no_std` binary's `main.rs`).
fn read_tree(src: &Path, crate_root: &str) -> anyhow::Result<Tree> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    files.sort();
    let mut sources = Vec::new();
    for path in files {
        let rel = path.strip_prefix(src).unwrap_or(&path).to_path_buf();
        let module = if rel == Path::new(crate_root) {
            Vec::new()
        } else {
            module_of(&rel)
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut v = Visitor {
            module: module.clone(),
            // The library's own binary names it by the crate's name.
            is_main: crate_root == "lib.rs" && rel == Path::new("main.rs"),
            children: BTreeSet::new(),
            uses: Vec::new(),
            reexports: BTreeMap::new(),
        };
        v.children = ast
            .items
            .iter()
            .filter_map(|i| match i {
                syn::Item::Mod(m) if m.content.is_none() && !is_test(&m.attrs) => {
                    Some(m.ident.to_string())
                }
                _ => None,
            })
            .collect();
        v.visit_file(&ast);
        sources.push(Source {
            path: rel,
            module,
            uses: v.uses,
            reexports: v.reexports,
            lines: text.lines().count(),
        });
    }
    let by_module: BTreeMap<Vec<String>, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.module.clone(), i))
        .collect();
    let mut named: BTreeMap<(usize, usize), String> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        for u in &s.uses {
            if let Some(j) = resolve(u, &sources, &by_module, 0)
                && j != i
            {
                named.entry((i, j)).or_insert_with(|| u.join("::"));
            }
        }
    }
    Ok(Tree { sources, named })
}

/// Import cycles and long files of a tree, as problems.
fn cycles_and_sizes(tree: &Tree, prefix: &str, problems: &mut Vec<String>) {
    let edges: BTreeSet<(usize, usize)> = tree.named.keys().copied().collect();
    let sources = &tree.sources;
    for cycle in cycles(sources.len(), &edges) {
        let ties: Vec<String> = edges
            .iter()
            .filter(|(a, b)| cycle.contains(a) && cycle.contains(b))
            .map(|e| {
                format!(
                    "{prefix}{} -> {prefix}{} ({})",
                    sources[e.0].path.display(),
                    sources[e.1].path.display(),
                    tree.named[e]
                )
            })
            .collect();
        problems.push(format!("import cycle: {}", ties.join("; ")));
    }
    for s in sources {
        if s.lines > MAX_LINES {
            problems.push(format!(
                "{prefix}{} has {} lines (at most {MAX_LINES})",
                s.path.display(),
                s.lines
            ));
        }
    }
}

pub(crate) fn check(root: &Path) -> anyhow::Result<()> {
    let tree = read_tree(&root.join("decnet/src"), "lib.rs")?;
    let sources = &tree.sources;
    let named = &tree.named;
    let edges: BTreeSet<(usize, usize)> = named.keys().copied().collect();
    let mut problems = Vec::new();
    let stage_of: Vec<usize> = sources
        .iter()
        .map(|s| {
            stage(&s.module).unwrap_or_else(|| {
                problems.push(format!(
                    "{} belongs to no stage: add its module to layers::STAGES and docs/architecture.md",
                    s.path.display()
                ));
                0
            })
        })
        .collect();
    // The stage graph.
    let mut between: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for &(a, b) in &edges {
        *between.entry((stage_of[a], stage_of[b])).or_default() += 1;
        if stage_of[b] > stage_of[a] {
            problems.push(format!(
                "{} ({}) imports {} of the later stage {} ({})",
                sources[a].path.display(),
                STAGES[stage_of[a]].0,
                sources[b].path.display(),
                STAGES[stage_of[b]].0,
                named[&(a, b)]
            ));
        }
    }
    println!("stages, in pipeline order, and the stages each imports (file imports):");
    for (n, (name, modules)) in STAGES.iter().enumerate() {
        let files = stage_of.iter().filter(|&&s| s == n).count();
        let lines: usize = sources
            .iter()
            .zip(&stage_of)
            .filter(|(_, s)| **s == n)
            .map(|(s, _)| s.lines)
            .sum();
        let to: Vec<String> = between
            .iter()
            .filter(|((a, b), _)| *a == n && *b != n)
            .map(|((_, b), c)| format!("{} ({c})", STAGES[*b].0))
            .collect();
        let shown: Vec<&str> = modules
            .iter()
            .map(|m| if m.is_empty() { "lib" } else { m })
            .collect();
        println!(
            "  {n:>2} {name:<10} {files:>3} files {lines:>6} lines  [{}]  -> {}",
            shown.join(", "),
            if to.is_empty() {
                "-".to_owned()
            } else {
                to.join(", ")
            }
        );
    }
    cycles_and_sizes(&tree, "", &mut problems);
    // The kernel crate has no stages, but the same rules on circles and size.
    let kernel = read_tree(&root.join("decnet-ebpf/src"), "main.rs")?;
    cycles_and_sizes(&kernel, "decnet-ebpf/src/", &mut problems);
    println!(
        "decnet-ebpf: {} files, {} file imports",
        kernel.sources.len(),
        kernel.named.len()
    );
    println!(
        "{} files, {} file imports, {} rules broken",
        sources.len(),
        edges.len(),
        problems.len()
    );
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("layers: {p}");
        }
        anyhow::bail!(
            "{} structure rule(s) broken (see docs/architecture.md)",
            problems.len()
        );
    }
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// `api/data.rs` -> [api, data]; `api/mod.rs` -> [api]; `lib.rs` -> []; `main.rs` -> [main].
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn stage(module: &[String]) -> Option<usize> {
    let path = module.join("::");
    let mut best: Option<(usize, usize)> = None;
    for (n, (_, prefixes)) in STAGES.iter().enumerate() {
        for p in *prefixes {
            let hit = if p.is_empty() {
                path.is_empty()
            } else {
                path == *p || path.starts_with(&format!("{p}::"))
            };
            if hit && best.is_none_or(|(_, len)| p.len() + 1 > len) {
                best = Some((n, p.len() + 1));
            }
        }
    }
    best.map(|(n, _)| n)
}

/// The file an absolute path lands in: its longest module prefix, then through that file's
/// re-exports when the next segment is one.
fn resolve(
    path: &[String],
    sources: &[Source],
    by_module: &BTreeMap<Vec<String>, usize>,
    depth: usize,
) -> Option<usize> {
    let mut n = path.len();
    while n > 0 {
        if let Some(&i) = by_module.get(&path[..n]) {
            if depth < 8
                && let Some(next) = path.get(n)
                && let Some(target) = sources[i].reexports.get(next)
            {
                let mut t = target.clone();
                t.extend_from_slice(&path[n + 1..]);
                return resolve(&t, sources, by_module, depth + 1).or(Some(i));
            }
            return Some(i);
        }
        n -= 1;
    }
    // The crate root itself (a macro exported at the root, say).
    by_module.get(&Vec::new()).copied()
}

/// Circles of files that import each other (strongly connected parts of more than one).
fn cycles(n: usize, edges: &BTreeSet<(usize, usize)>) -> Vec<Vec<usize>> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a].push(b);
    }
    // Tarjan, iterative enough for a few hundred files by recursion.
    struct T<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T<'_>, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in &t.adj[v] {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut part = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                part.push(w);
                if w == v {
                    break;
                }
            }
            if part.len() > 1 {
                part.sort_unstable();
                t.out.push(part);
            }
        }
    }
    let mut t = T {
        adj: &adj,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    t.out
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta.require_list().is_ok_and(|l| {
                l.tokens
                    .to_string()
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|w| w == "test")
            })
    })
}

struct Visitor {
    module: Vec<String>,
    is_main: bool,
    children: BTreeSet<String>,
    uses: Vec<Vec<String>>,
    reexports: BTreeMap<String, Vec<String>>,
}

impl Visitor {
    /// A path as written here, made absolute; None for paths outside the crate.
    fn absolute(&self, segs: &[String]) -> Option<Vec<String>> {
        let first = segs.first()?;
        let mut out: Vec<String>;
        let mut rest = &segs[1..];
        match first.as_str() {
            "crate" => out = Vec::new(),
            "decnet" if self.is_main => out = Vec::new(),
            "self" => out = self.module.clone(),
            "super" => {
                out = self.module.clone();
                out.pop();
                while rest.first().is_some_and(|s| s == "super") {
                    out.pop();
                    rest = &rest[1..];
                }
            }
            c if self.children.contains(c) => {
                out = self.module.clone();
                out.push(c.to_owned());
            }
            _ => return None,
        }
        out.extend(rest.iter().cloned());
        Some(out)
    }

    fn tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, public: bool) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.tree(prefix, &p.tree, public);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.leaf(prefix, &n.ident.to_string(), None, public),
            syn::UseTree::Rename(r) => self.leaf(
                prefix,
                &r.ident.to_string(),
                Some(r.rename.to_string()),
                public,
            ),
            syn::UseTree::Glob(_) => {
                if let Some(abs) = self.absolute(prefix) {
                    self.uses.push(abs);
                }
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.tree(prefix, t, public);
                }
            }
        }
    }

    fn leaf(&mut self, prefix: &[String], name: &str, rename: Option<String>, public: bool) {
        let mut segs = prefix.to_vec();
        if name != "self" {
            segs.push(name.to_owned());
        }
        if let Some(abs) = self.absolute(&segs) {
            if public {
                let seen = rename.unwrap_or_else(|| segs.last().cloned().unwrap_or_default());
                self.reexports.insert(seen, abs.clone());
            }
            self.uses.push(abs);
        }
    }
}

impl<'ast> Visit<'ast> for Visitor {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match i {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Impl(x) => &x.attrs,
            syn::Item::Struct(x) => &x.attrs,
            syn::Item::Enum(x) => &x.attrs,
            syn::Item::Const(x) => &x.attrs,
            syn::Item::Static(x) => &x.attrs,
            syn::Item::Trait(x) => &x.attrs,
            syn::Item::Type(x) => &x.attrs,
            syn::Item::Macro(x) => &x.attrs,
            _ => &[],
        };
        if is_test(attrs) {
            return;
        }
        syn::visit::visit_item(self, i);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let public = matches!(
            u.vis,
            syn::Visibility::Public(_) | syn::Visibility::Restricted(_)
        );
        self.tree(&mut Vec::new(), &u.tree, public);
    }

    /// `pub(super)` names who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(abs) = self.absolute(&segs) {
            self.uses.push(abs);
        }
        syn::visit::visit_path(self, p);
    }

    /// Macro bodies are tokens, not syntax: paths inside `format!(..)` are not seen, but a
    /// stage's own macros (`crate::dev_span!`) are, by their path.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.visit_path(&m.path);
        // Paths inside the body, as tokens: `crate :: a :: b`.
        let text = m.tokens.to_string();
        let toks: Vec<&str> = text.split_whitespace().collect();
        let mut i = 0;
        while i < toks.len() {
            if matches!(toks[i], "crate" | "super" | "self") {
                let mut segs = vec![toks[i].to_owned()];
                let mut j = i + 1;
                while j + 1 < toks.len() && toks[j] == "::" {
                    let seg =
                        toks[j + 1].trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_');
                    if seg.is_empty() {
                        break;
                    }
                    segs.push(seg.to_owned());
                    j += 2;
                }
                if let Some(abs) = self.absolute(&segs) {
                    self.uses.push(abs);
                }
                i = j;
            } else {
                i += 1;
            }
        }
    }
}
