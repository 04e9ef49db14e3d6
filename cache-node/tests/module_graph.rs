//! The module graph of cache-node's library is a stack: every top-level module depends only
//! on modules in layers below its own, so there is no cycle and `store`, `persist` and
//! `replication` never import each other. A `use crate::…` that breaks this fails here, with
//! the file and line, instead of slowly turning the layers into a knot.
//!
//! The graph is read from the source: every `crate::<module>` path outside comments. Test
//! modules (`tests.rs`, `*_tests.rs`, `tests/` directories) are left out, as `cargo-modules`
//! leaves out `cfg(test)` code: tests compose real components from several layers on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first. `docs/architecture.md` draws the same picture.
const LAYERS: &[&[&str]] = &[
    &["base"],
    &["store", "persist", "replication", "backend"],
    &["metrics"],
    &["sweeper"],
    &["cache"],
    &["http", "resp"],
    &["config"],
    &["node"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("the source directory is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn is_test_module(relative: &Path) -> bool {
    relative.components().any(|c| c.as_os_str() == "tests")
        || relative
            .file_stem()
            .and_then(|stem| stem.to_str())
            .is_some_and(|stem| stem == "tests" || stem.ends_with("_tests"))
}

/// The top-level modules a line of code names with `crate::<module>`.
fn named_modules(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        found.push(name);
    }
    found
}

/// (from, to) → the places that make the edge.
fn edges(src: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        if is_test_module(relative) {
            continue;
        }
        let from = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|first| first.trim_end_matches(".rs").to_string())
            .expect("a file name");
        if from == "lib" || from == "main" {
            continue;
        }
        let text = fs::read_to_string(&file).expect("readable source");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            assert!(
                !code.contains("crate::{"),
                "{}:{}: write one `use crate::<module>::…` per module, so that this check \
                 sees which modules the file depends on",
                relative.display(),
                number + 1
            );
            for to in named_modules(code) {
                if to != from {
                    edges.entry((from.clone(), to)).or_default().push(format!(
                        "{}:{}",
                        relative.display(),
                        number + 1
                    ));
                }
            }
        }
    }
    edges
}

#[test]
fn every_module_depends_only_on_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = edges(&src);
    assert!(
        edges.len() > 20,
        "the scan found the imports ({} edges)",
        edges.len()
    );
    let mut violations = Vec::new();
    for ((from, to), places) in &edges {
        let (Some(from_layer), Some(to_layer)) = (layer_of(from), layer_of(to)) else {
            violations.push(format!(
                "{from} -> {to}: add the module to LAYERS (at {})",
                places[0]
            ));
            continue;
        };
        if to_layer >= from_layer {
            violations.push(format!(
                "{from} (layer {from_layer}) -> {to} (layer {to_layer}) at {}",
                places.join(", ")
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges(&src).into_keys() {
        graph.entry(from).or_default().insert(to);
    }
    // Depth-first search; a node met again while still on the path closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let cycle = visit(node, &graph, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "a cycle: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}
