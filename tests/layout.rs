//! The component's house rules, read from its source: the pure modules name no `wasi:*`
//! item, and no two modules of `src/` import each other in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that compute without I/O: they may use the WIT records `lib.rs` re-exports,
/// never a `wasi:*` import or resource.
const PURE: [&str; 11] = [
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
];

/// Each module of `src/` (by file stem, `lib` left out) and its source.
fn modules() -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    std::fs::read_dir(&dir)
        .expect("src/ is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_string();
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            (name != "lib").then_some((name, text))
        })
        .collect()
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

/// The `crate::NAME` modules `text` refers to.
fn uses(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = code(text);
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if modules.contains(&ident) {
            found.insert(ident);
        }
        // `use crate::{a, b::c}`: every name at the top level of the braces.
        if rest.starts_with('{') {
            let group: String = rest.chars().take_while(|c| *c != '}').collect();
            for part in group.trim_start_matches('{').split(',') {
                let head = part.trim().split("::").next().unwrap_or_default();
                if modules.contains(head) {
                    found.insert(head.to_string());
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

#[test]
fn modules_import_each_other_in_no_circle() {
    let modules = modules();
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let graph: Graph = modules
        .iter()
        .map(|(name, text)| {
            let mut deps = uses(text, &names);
            deps.remove(name);
            (name.clone(), deps)
        })
        .collect();
    if let Some(circle) = find_circle(&graph) {
        panic!(
            "src/ modules import each other in a circle: {}",
            circle.join(" -> ")
        );
    }
    // The graph was really read: the edge modules sit on top of the pure ones.
    assert!(graph["delivery"].contains("transport"), "{graph:?}");
    assert!(graph["payload"].contains("config"), "{graph:?}");
}

#[test]
fn imports_are_read_and_circles_found() {
    let names: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        uses("use crate::{b, Config};\nfn f() { crate::a::g() }", &names),
        names
    );
    assert!(uses("// crate::a only in a comment", &names).is_empty());
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
