//! The architecture, checked: what each function links, and that modules do not import each
//! other in a circle. ARCHITECTURE.md describes the layout these tests hold in place.
//!
//! - Crates: `cargo tree` of each Lambda must not contain the CLI's, the simulation's or the
//!   test tools' crates (axum, clap, serde_yaml, chatops-sim, chatops). Crate cycles are
//!   impossible in Cargo, so this is the whole crate-level check.
//! - Modules: every `crate::<module>` path in a crate's sources is an edge from the file's
//!   top-level module to `<module>`; the graph must have no cycle (Tarjan's SCCs of size > 1).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const FUNCTIONS: &[&str] = &["ingress", "dispatcher", "completion"];
const FORBIDDEN_IN_FUNCTIONS: &[&str] = &["axum", "clap", "serde_yaml", "chatops-sim", "chatops"];
const FORBIDDEN_IN_CORE: &[&str] = &[
    "aws-config",
    "aws-sdk-sqs",
    "aws-sdk-dynamodb",
    "aws-sdk-ssm",
    "lambda_http",
    "lambda_runtime",
    "aws_lambda_events",
    "reqwest",
    "axum",
    "clap",
    "chatops-sim",
    "chatops-adapters",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The names of the crates `package` links (normal dependencies, all depths).
fn linked_crates(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn functions_link_only_the_product() {
    for f in FUNCTIONS {
        let crates = linked_crates(f);
        assert!(crates.contains("chatops-core"), "{f}: {crates:?}");
        assert!(crates.contains("chatops-adapters"), "{f}: {crates:?}");
        for bad in FORBIDDEN_IN_FUNCTIONS {
            assert!(!crates.contains(*bad), "{f} links {bad}");
        }
    }
}

#[test]
fn core_links_no_adapter() {
    let crates = linked_crates("chatops-core");
    for bad in FORBIDDEN_IN_CORE {
        assert!(!crates.contains(*bad), "chatops-core links {bad}");
    }
    let adapters = linked_crates("chatops-adapters");
    for bad in ["chatops-sim", "axum", "clap", "serde_yaml"] {
        assert!(!adapters.contains(bad), "chatops-adapters links {bad}");
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("readable source dir")
        .flatten()
    {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`src/gitlab/client.rs` → `gitlab`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// Edges `module → module` from `crate::x` paths (and `use crate::{x, y}` lists), ignoring
/// `#[cfg(test)]` modules, whose imports never ship.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = top_module(src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).expect("readable source");
        let shipped = text.split("#[cfg(test)]").next().unwrap_or("");
        let mut rest = shipped;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<String> = if let Some(list) = rest.strip_prefix('{') {
                let end = list.find('}').unwrap_or(list.len());
                list[..end]
                    .split(',')
                    .filter_map(|n| n.split("::").next())
                    .map(|n| n.trim().to_owned())
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                vec![rest[..end].to_owned()]
            };
            for to in names {
                if to != from && modules.contains(&to) {
                    graph.entry(from.clone()).or_default().insert(to);
                }
            }
        }
        graph.entry(from).or_default();
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.g.get(v) {
            for w in ws {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(lw));
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(iw));
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_module_imports_itself_in_a_circle() {
    for krate in ["core/src", "adapters/src", "sim/src", "src"] {
        let graph = module_graph(&root().join(krate));
        assert!(graph.len() > 3, "{krate}: read {graph:?}");
        let found = cycles(&graph);
        assert!(found.is_empty(), "{krate}: import cycles {found:?}");
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let edge = |g: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    };
    edge(&mut g, "cli", "dispatcher");
    edge(&mut g, "dispatcher", "store");
    assert!(cycles(&g).is_empty());
    edge(&mut g, "dispatcher", "cli");
    assert_eq!(
        cycles(&g),
        vec![vec!["cli".to_owned(), "dispatcher".to_owned()]]
    );
}
