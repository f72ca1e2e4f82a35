//! The built component imports nothing a `wasi:http/proxy` runtime does not provide.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

/// Interface names (`wasi:http/types@0.2.0`, …) the proxy world imports, from the
/// committed WIT.
fn proxy_imports() -> BTreeSet<String> {
    let mut resolve = wit_parser::Resolve::default();
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit");
    let (pkg, _) = resolve.push_dir(&wit).expect("wit/ parses");
    let _ = pkg;
    let http = resolve
        .packages
        .iter()
        .find(|(_, p)| p.name.namespace == "wasi" && p.name.name == "http")
        .map(|(id, _)| id)
        .expect("wasi:http is in wit/deps");
    let proxy = resolve
        .select_world(&[http], Some("proxy"))
        .expect("proxy world");
    resolve.worlds[proxy]
        .imports
        .keys()
        .map(|key| resolve.name_world_key(key))
        .collect()
}

/// Top-level import (or export) names of a component binary.
fn top_level_names(bytes: &[u8], imports: bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut depth = 0;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.expect("valid component") {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentImportSection(section) if depth == 0 && imports => {
                for import in section {
                    names.insert(import.expect("import").name.name.to_string());
                }
            }
            wasmparser::Payload::ComponentExportSection(section) if depth == 0 && !imports => {
                for export in section {
                    names.insert(export.expect("export").name.name.to_string());
                }
            }
            _ => {}
        }
    }
    names
}

fn component_imports(bytes: &[u8]) -> BTreeSet<String> {
    top_level_names(bytes, true)
}

fn exports(bytes: &[u8]) -> BTreeSet<String> {
    top_level_names(bytes, false)
}

#[test]
fn component_imports_are_within_wasi_http_proxy() {
    let bytes = std::fs::read(common::wasm_path()).expect("run `cargo xtask wasm` first");
    let imports = component_imports(&bytes);
    let allowed = proxy_imports();
    assert!(
        allowed.contains("wasi:http/outgoing-handler@0.2.0"),
        "{allowed:?}"
    );
    assert!(
        imports.contains("wasi:http/outgoing-handler@0.2.0"),
        "{imports:?}"
    );
    let outside: Vec<_> = imports.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "imports outside wasi:http/proxy: {outside:?}"
    );
}

/// The deployed components' size budget. They are built at `opt-level = 3` with
/// minijinja at `"z"` (Cargo.toml); a dependency or profile change that crosses 1 MiB
/// fails here.
#[test]
fn each_component_stays_under_one_mebibyte() {
    for name in ["status-push.wasm", "status-push-relay.wasm"] {
        assert_within_budget(name);
    }
}

#[test]
fn each_world_imports_only_what_it_may_and_exports_what_it_promises() {
    let target = common::wasm_path().parent().unwrap().to_path_buf();
    let reporter =
        std::fs::read(target.join("status-push.wasm")).expect("run `cargo xtask wasm` first");
    let relay =
        std::fs::read(target.join("status-push-relay.wasm")).expect("run `cargo xtask wasm` first");
    let proxy = proxy_imports();
    let mut relay_allowed = proxy.clone();
    relay_allowed.insert("wasi:cli/environment@0.2.0".into());
    for (name, bytes, allowed) in [
        ("status-push", &reporter, &proxy),
        ("relay", &relay, &relay_allowed),
    ] {
        let imports = component_imports(bytes);
        let exports = exports(bytes);
        eprintln!("{name}: imports {imports:?}\n{name}: exports {exports:?}");
        let outside: Vec<_> = imports.difference(allowed).collect();
        assert!(
            outside.is_empty(),
            "{name} imports outside its allowed set: {outside:?}"
        );
        for export in [
            "status-push:reporter/types@0.1.0",
            "status-push:reporter/reporter@0.1.0",
            "status-push:reporter/documents@0.1.0",
        ] {
            assert!(
                exports.contains(export),
                "{name} lacks {export}: {exports:?}"
            );
        }
    }
    assert!(exports(&relay).contains("wasi:http/incoming-handler@0.2.0"));
    assert!(!exports(&reporter).contains("wasi:http/incoming-handler@0.2.0"));
    assert!(!component_imports(&reporter).contains("wasi:cli/environment@0.2.0"));
}

#[test]
fn the_import_check_would_catch_a_cli_import() {
    let allowed = proxy_imports();
    for forbidden in [
        "wasi:cli/environment@0.2.0",
        "wasi:cli/exit@0.2.0",
        "wasi:filesystem/types@0.2.0",
    ] {
        assert!(
            !allowed.contains(forbidden),
            "{forbidden} must not count as proxy"
        );
    }
}

/// Interface names the WASI 0.3 `wasi:http/service` world imports, from `wit/p3/`, plus
/// the `wasi:io@0.2.0` streams a log may arrive as (`wit/p3/world.wit` says why).
fn p3_service_imports() -> BTreeSet<String> {
    let mut resolve = wit_parser::Resolve::default();
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/p3");
    resolve.push_dir(&wit).expect("wit/p3/ parses");
    let http = resolve
        .packages
        .iter()
        .find(|(_, p)| {
            p.name.namespace == "wasi"
                && p.name.name == "http"
                && p.name
                    .version
                    .as_ref()
                    .is_some_and(|v| v.major == 0 && v.minor == 3)
        })
        .map(|(id, _)| id)
        .expect("wasi:http@0.3 is in wit/p3/deps");
    let service = resolve
        .select_world(&[http], Some("service"))
        .expect("service world");
    let mut names: BTreeSet<String> = resolve.worlds[service]
        .imports
        .keys()
        .map(|key| resolve.name_world_key(key))
        .collect();
    names.insert("wasi:io/error@0.2.0".into());
    names.insert("wasi:io/streams@0.2.0".into());
    names
}

/// `wit/p3/world.wit` is `wit/world.wit`'s package with the three reports `async`: its
/// interfaces, up to the worlds, are the original's but for that one word.
#[test]
fn the_p3_wit_is_the_contract_with_async_reports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let interfaces = |path: &str| {
        let text = std::fs::read_to_string(root.join(path)).expect("the WIT is readable");
        let start = text
            .find("package status-push:reporter@0.1.0;")
            .expect("the package");
        let end = text[start..]
            .find("\nworld ")
            .map(|i| start + i)
            .expect("a world");
        // Up to the doc comment of the first world.
        let body = &text[start..end];
        let end = body.rfind("\n}\n").expect("the last interface") + 3;
        body[..end].to_string()
    };
    let p2 = interfaces("wit/world.wit");
    let p3 = interfaces("wit/p3/world.wit");
    for report in ["on-build-started", "on-build-finished", "report-json"] {
        assert!(
            p3.contains(&format!("    {report}: async func(")),
            "{report} is async in wit/p3"
        );
    }
    assert_eq!(
        p3.matches("async func").count(),
        3,
        "only the reports are async"
    );
    assert_eq!(
        p3.replace(": async func(", ": func("),
        p2,
        "wit/p3/world.wit's interfaces differ from wit/world.wit's: copy the change over"
    );
}

#[test]
fn each_p3_world_imports_only_what_it_may_and_exports_what_it_promises() {
    let target = common::wasm_path().parent().unwrap().to_path_buf();
    let reporter =
        std::fs::read(target.join("status-push-p3.wasm")).expect("run `cargo xtask wasm` first");
    let relay = std::fs::read(target.join("status-push-relay-p3.wasm"))
        .expect("run `cargo xtask wasm` first");
    let service = p3_service_imports();
    let mut relay_allowed = service.clone();
    relay_allowed.insert("wasi:cli/environment@0.3.0".into());
    for (name, bytes, allowed) in [
        ("status-push-p3", &reporter, &service),
        ("relay-p3", &relay, &relay_allowed),
    ] {
        let imports = component_imports(bytes);
        let exports = exports(bytes);
        eprintln!("{name}: imports {imports:?}\n{name}: exports {exports:?}");
        let outside: Vec<_> = imports.difference(allowed).collect();
        assert!(
            outside.is_empty(),
            "{name} imports outside its allowed set: {outside:?}"
        );
        assert!(imports.contains("wasi:http/client@0.3.0"), "{imports:?}");
        assert!(
            !imports
                .iter()
                .any(|i| i.starts_with("wasi:http/") && i.ends_with("@0.2.0")),
            "{name} imports wasi:http 0.2: {imports:?}"
        );
        for export in [
            "status-push:reporter/types@0.1.0",
            "status-push:reporter/reporter@0.1.0",
            "status-push:reporter/documents@0.1.0",
        ] {
            assert!(
                exports.contains(export),
                "{name} lacks {export}: {exports:?}"
            );
        }
    }
    assert!(exports(&relay).contains("wasi:http/handler@0.3.0"));
    assert!(!exports(&reporter).contains("wasi:http/handler@0.3.0"));
    assert!(!component_imports(&reporter).contains("wasi:cli/environment@0.3.0"));
}

/// The 1 MiB budget for the WASI 0.3 builds. They carry wit-bindgen's async runtime on top
/// of the same core, so they are built at `opt-level = "s"` (the `wasm-release-p3`
/// profile); at 3 they were 1,060,752 and 1,105,045 bytes (docs/performance.md).
#[test]
fn each_p3_component_stays_under_one_mebibyte() {
    for name in ["status-push-p3.wasm", "status-push-relay-p3.wasm"] {
        assert_within_budget(name);
    }
}

/// `target/<name>` is under 1 MiB and carries no `component-name` section: `cargo xtask
/// wasm` leaves it out (8.9 KB of names only a disassembler reads).
fn assert_within_budget(name: &str) {
    let path = common::wasm_path().parent().unwrap().join(name);
    let bytes = std::fs::read(&path).expect("run `cargo xtask wasm` first");
    assert!(
        bytes.len() < 1 << 20,
        "{} is {} bytes, over the 1 MiB budget",
        path.display(),
        bytes.len()
    );
    let mut depth = 0;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.expect("the component parses") {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::CustomSection(section) if depth == 0 => assert_ne!(
                section.name(),
                "component-name",
                "{} carries its debug names",
                path.display()
            ),
            _ => {}
        }
    }
}
