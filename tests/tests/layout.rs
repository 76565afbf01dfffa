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
    let group = regex::Regex::new(r"\b(crate::|(?:super::)+)\{").expect("regex");
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
        // `super` from a file's module: its parent, then one more per further `super`; at the
        // crate root, the name after it is the top-level module.
        let above = |ups: usize, name: &str| if module.len() <= ups { name.to_owned() } else { module[0].clone() };
        for c in group.captures_iter(&text) {
            let start = c.get(0).expect("a match").end();
            for first in group_heads(&text[start..]) {
                let to =
                    if &c[1] == "crate::" { first.clone() } else { above(c[1].matches("super::").count(), &first) };
                targets.push((to, shown(&format!("{}{{{first}}}", &c[1]))));
            }
        }
        for c in super_path.captures_iter(&text) {
            // `super::super::{…}` backtracks to a name `super`: the group above reads it.
            if &c[2] == "super" {
                continue;
            }
            targets.push((above(c[1].matches("super::").count(), &c[2]), shown(&c[0])));
        }
        for (to, why) in targets {
            if to != from && tops.contains(&to) {
                graph.entry(from.clone()).or_default().entry(to).or_insert(why);
            }
        }
    }
    graph
}

/// The first name of each item of a `use` group whose text follows its `{` (nested groups
/// belong to their item: `a::{b, c}, d` gives `a` and `d`).
fn group_heads(after_brace: &str) -> Vec<String> {
    let (mut depth, mut items, mut item) = (1usize, Vec::new(), String::new());
    for ch in after_brace.chars() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => items.push(std::mem::take(&mut item)),
            _ if depth == 1 => item.push(ch),
            _ => {}
        }
    }
    items.push(item);
    items
        .iter()
        .filter_map(|i| i.trim().split("::").next().map(|h| h.split_whitespace().next().unwrap_or("").to_owned()))
        .filter(|h| !h.is_empty() && h != "self")
        .collect()
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
fn use_groups_are_read_to_their_closing_brace() {
    assert_eq!(group_heads("a::{b, c}, d as e, self};"), vec!["a", "d"]);
    assert_eq!(group_heads("x};"), vec!["x"]);
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

/// A manifest's lines that are not comments: a crate named in any of them (in whatever
/// dependency table, as `name = …`, `name.workspace = true` or `[dependencies.name]`) is one
/// the crate may depend on.
fn manifest(path: &str) -> String {
    let text = std::fs::read_to_string(workspace().join(path)).expect("readable manifest");
    text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n")
}

#[test]
fn neither_plane_depends_on_the_other() {
    let (cp, dp) = (manifest("control-plane/Cargo.toml"), manifest("data-plane/Cargo.toml"));
    assert!(cp.contains("gatehouse-shared") && dp.contains("gatehouse-shared"), "manifests read");
    assert!(!cp.contains("gatehouse-data-plane"), "the control plane names the data plane:\n{cp}");
    assert!(!dp.contains("gatehouse-control-plane"), "the data plane names the control plane:\n{dp}");
    let bins = manifest("gatehouse/Cargo.toml");
    assert!(bins.contains("gatehouse-control-plane") && bins.contains("gatehouse-data-plane"));
}
