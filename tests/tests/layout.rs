//! The crate layout holds: the data plane's modules form layers (no import cycle among them),
//! and neither plane's library depends on the other (only the `gatehouse` binaries use both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's root (this crate is `tests/`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Every `.rs` file under `dir` but test modules (`tests.rs`), recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src` (`plugins/log/http_log.rs` → `[plugins, log, http_log]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "lib" || p == "mod") {
        parts.pop();
    }
    parts
}

/// A file's code without comments and without its unit-test module.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let comment = regex::Regex::new(r"//[^\n]*").expect("regex");
    comment.replace_all(text, "").into_owned()
}

/// The top-level modules each top-level module refers to (through `crate::` and `super::`
/// paths), with one reference that shows each edge.
fn top_level_graph(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let tops: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f).first().cloned()).collect();
    let crate_path = regex::Regex::new(r"\bcrate::(\w+)").expect("regex");
    let crate_group = regex::Regex::new(r"\bcrate::\{([^}]*)\}").expect("regex");
    let super_path = regex::Regex::new(r"\b((?:super::)+)(\w+)").expect("regex");
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(src, file);
        let Some(from) = module.first().cloned() else { continue };
        let text = code(&std::fs::read_to_string(file).expect("readable source"));
        let shown = |what: &str| format!("{}: {what}", file.strip_prefix(src).expect("under src").display());
        let mut targets: Vec<(String, String)> = Vec::new();
        for c in crate_path.captures_iter(&text) {
            targets.push((c[1].to_owned(), shown(&c[0])));
        }
        for c in crate_group.captures_iter(&text) {
            for item in c[1].split(',') {
                if let Some(first) = item.trim().split("::").next().filter(|f| !f.is_empty()) {
                    targets.push((first.to_owned(), shown(&format!("crate::{{{first}}}"))));
                }
            }
        }
        for c in super_path.captures_iter(&text) {
            let ups = c[1].matches("super::").count();
            // `super` from a file's module: its parent, then one more per further `super`.
            let kept = module.len().saturating_sub(ups);
            let target = if kept == 0 { c[2].to_owned() } else { module[0].clone() };
            targets.push((target, shown(&c[0])));
        }
        for (to, why) in targets {
            if to != from && tops.contains(&to) {
                graph.entry(from.clone()).or_default().entry(to).or_insert(why);
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the modules on it in order, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_data_plane_modules_have_no_import_cycle() {
    let graph = top_level_graph(&workspace().join("data-plane/src"));
    assert!(graph.len() > 10, "the graph was read: {graph:?}");
    assert!(graph["proxy"].contains_key("plugins"), "the engine runs the plugins: {:?}", graph["proxy"]);
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<&String> = cycle.windows(2).map(|w| &graph[&w[0]][&w[1]]).collect();
        panic!("the data plane's modules import each other in a cycle {cycle:?}, through {edges:#?}");
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(a.into()).or_default().insert(b.into(), format!("{a} uses {b}"));
    }
    assert_eq!(find_cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    graph.get_mut("c").expect("c").remove("a");
    assert_eq!(find_cycle(&graph), None);
}

/// The names in a manifest's `[dependencies]` table.
fn dependencies(manifest: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join(manifest)).expect("readable manifest");
    let table = text.split("[dependencies]").nth(1).expect("a [dependencies] table");
    let table = table.split("\n[").next().unwrap_or(table);
    table.lines().filter_map(|l| l.split('=').next()).map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect()
}

#[test]
fn neither_plane_depends_on_the_other() {
    let cp = dependencies("control-plane/Cargo.toml");
    let dp = dependencies("data-plane/Cargo.toml");
    assert!(
        cp.contains(&"gatehouse-shared".to_owned()) && dp.contains(&"gatehouse-shared".to_owned()),
        "{cp:?} {dp:?}"
    );
    assert!(!cp.contains(&"gatehouse-data-plane".to_owned()), "the control plane depends on the data plane: {cp:?}");
    assert!(!dp.contains(&"gatehouse-control-plane".to_owned()), "the data plane depends on the control plane: {dp:?}");
    let bins = dependencies("gatehouse/Cargo.toml");
    assert!(bins.contains(&"gatehouse-control-plane".to_owned()) && bins.contains(&"gatehouse-data-plane".to_owned()));
}
