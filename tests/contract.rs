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
    let target = common::wasm_path().parent().unwrap().to_path_buf();
    for name in ["status-push.wasm", "status-push-relay.wasm"] {
        let path = target.join(name);
        let size = std::fs::metadata(&path)
            .expect("run `cargo xtask wasm` first")
            .len();
        assert!(
            size < 1 << 20,
            "{} is {size} bytes, over the 1 MiB budget",
            path.display()
        );
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
