//! The house rules, read from the source: the component's pure modules name no `wasi:*`
//! item, and no two modules import each other in a circle, in the component (`src/`),
//! the host library (`host-harness/src/`) or the CLI (`host-harness/cli/src/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that compute without I/O: they may use the WIT records `lib.rs` re-exports,
/// never a `wasi:*` import or resource.
const PURE: [&str; 12] = [
    "payload",
    "encoder",
    "config",
    "documents",
    "filter",
    "template",
    "retry",
    "signature",
    "body",
    "secret",
    "inbound",
    "wire",
];

/// The three source trees whose modules may not import each other in a circle.
const TREES: [&str; 3] = ["src", "host-harness/src", "host-harness/cli/src"];

/// Each module of a tree and its source: `NAME.rs`, or `NAME/*.rs` read as one module
/// (`outbox/`). The crate roots (`lib.rs`, `main.rs`) are left out, and so is `bin/`:
/// each binary there is a crate of its own.
fn modules_of(tree: &str) -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(tree);
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("a source tree is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(name) = path
            .file_stem()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if path.is_dir() {
            if name == "bin" {
                continue;
            }
            let mut text = String::new();
            for file in std::fs::read_dir(&path).expect("a module folder is readable") {
                let file = file.expect("a directory entry").path();
                if file.extension().is_some_and(|e| e == "rs") {
                    text += &std::fs::read_to_string(&file).expect("a source file is readable");
                }
            }
            modules.insert(name, text);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            modules.insert(name, text);
        }
    }
    modules
}

/// The component's modules.
fn modules() -> BTreeMap<String, String> {
    modules_of("src")
}

/// What the crate roots of `tree` re-export (`pub use MODULE::{A, B}`), name to
/// module: `use crate::Limits` depends on the module that defines `Limits`.
fn reexports(tree: &str) -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(tree);
    let mut map = BTreeMap::new();
    for root in ["lib.rs", "main.rs"] {
        let Ok(text) = std::fs::read_to_string(dir.join(root)) else {
            continue;
        };
        for statement in code(&text).split(';') {
            let Some(path) = statement.trim().strip_prefix("pub use ") else {
                continue;
            };
            let Some((module, names)) = path.split_once("::") else {
                continue;
            };
            for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
                let name = name.rsplit("::").next().unwrap_or_default().trim();
                let name = name.rsplit(" as ").next().unwrap_or(name).trim();
                if !name.is_empty() {
                    map.insert(name.to_string(), module.trim().to_string());
                }
            }
        }
    }
    map
}

/// The code of `text` without comments, so a doc line that mentions `wasi:io` is fine.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn pure_modules_name_no_wasi_item() {
    let modules = modules();
    for name in PURE {
        let text = modules
            .get(name)
            .unwrap_or_else(|| panic!("src/{name}.rs is missing: update PURE"));
        let code = code(text);
        for forbidden in ["bindings::wasi", "wasi::", "bindings::exports::wasi"] {
            assert!(
                !code.contains(forbidden),
                "src/{name}.rs is a pure module but names `{forbidden}`: move that use to an edge module (transport, log_stream, clock, random)"
            );
        }
    }
}

/// The `crate::NAME` modules `text` refers to, directly or through
/// a name the crate root re-exports.
fn uses(
    text: &str,
    modules: &BTreeSet<String>,
    reexported: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let resolve = |ident: &str| -> Option<String> {
        if modules.contains(ident) {
            Some(ident.to_string())
        } else {
            reexported
                .get(ident)
                .filter(|m| modules.contains(*m))
                .cloned()
        }
    };
    let code = code(text);
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if let Some(module) = resolve(&ident) {
            found.insert(module);
        }
        // `use crate::{a, b::c}`: every name at the top level of the braces.
        if rest.starts_with('{') {
            let group: String = rest.chars().take_while(|c| *c != '}').collect();
            for part in group.trim_start_matches('{').split(',') {
                let head = part.trim().split("::").next().unwrap_or_default();
                if let Some(module) = resolve(head) {
                    found.insert(module);
                }
            }
        }
    }
    found
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// A circle of imports in `graph`, if there is one, as the path that closes it.
fn find_circle(graph: &Graph) -> Option<Vec<String>> {
    // Depth-first search; a module met again while on the path closes a circle.
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if done.contains(node) {
            return None;
        }
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(dep, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|name| visit(name, graph, &mut Vec::new(), &mut done))
}

/// The import graph of one tree.
fn graph_of(tree: &str) -> Graph {
    let modules = modules_of(tree);
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let reexported = reexports(tree);
    modules
        .iter()
        .map(|(name, text)| {
            let mut deps = uses(text, &names, &reexported);
            deps.remove(name);
            (name.clone(), deps)
        })
        .collect()
}

#[test]
fn modules_import_each_other_in_no_circle() {
    for tree in TREES {
        let graph = graph_of(tree);
        if let Some(circle) = find_circle(&graph) {
            panic!(
                "{tree}/ modules import each other in a circle: {}",
                circle.join(" -> ")
            );
        }
    }
    // The graphs were really read: edges that must exist, through a re-export too.
    let component = graph_of("src");
    assert!(component["delivery"].contains("transport"), "{component:?}");
    assert!(component["payload"].contains("config"), "{component:?}");
    let host = graph_of("host-harness/src");
    assert!(host["runtime"].contains("reporter"), "{host:?}");
    assert!(host["reporter"].contains("limits"), "{host:?}");
    assert!(host["outbox"].contains("reporter"), "{host:?}");
    let cli = graph_of("host-harness/cli/src");
    assert!(cli["serve"].contains("courier"), "{cli:?}");
}

#[test]
fn imports_are_read_and_circles_found() {
    let names: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    let none = BTreeMap::new();
    assert_eq!(
        uses(
            "use crate::{b, Config};\nfn f() { crate::a::g() }",
            &names,
            &none
        ),
        names
    );
    assert!(uses("// crate::a only in a comment", &names, &none).is_empty());
    let reexported: BTreeMap<String, String> = [("Limits".to_string(), "a".to_string())].into();
    assert_eq!(
        uses("use crate::{HostError, Limits};", &names, &reexported),
        ["a".to_string()].into()
    );
    let graph = |edges: &[(&str, &str)]| {
        let mut graph = Graph::new();
        for (from, to) in edges {
            graph
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string());
        }
        graph
    };
    assert_eq!(
        find_circle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        find_circle(&graph(&[("a", "b"), ("a", "c"), ("b", "c")])),
        None
    );
}
