//! Shared by the end-to-end tests: the real component, compiled once per test process.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use status_push_host::{Reporter, Runtime};

pub mod tls;

/// The release component `cargo xtask wasm` builds.
pub fn wasm_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-push.wasm")
}

/// The component, compiled once for the whole test process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let path = wasm_path();
        assert!(
            path.exists(),
            "{} is missing: build it with `cargo xtask wasm` (the README's test command does)",
            path.display()
        );
        Runtime::load(&path).expect("the component loads")
    })
}

/// The WASI 0.3 build of the same component (`target/status-push-p3.wasm`), compiled once.
pub fn runtime_p3() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-push-p3.wasm");
        let runtime =
            Runtime::load(&path).expect("run `cargo xtask wasm` to build the p3 component");
        assert_eq!(
            runtime.wasi(),
            status_push_host::Wasi::P3,
            "{}",
            path.display()
        );
        runtime
    })
}

/// Both builds of the reporter world: WASI 0.2 (the default) and WASI 0.3.
pub fn runtimes() -> [&'static Runtime; 2] {
    [runtime(), runtime_p3()]
}

/// A reporter of `runtime` configured from a JSON options object.
pub async fn configured_on(runtime: &Runtime, config: &serde_json::Value) -> Reporter {
    runtime
        .configured_reporter(&config.to_string())
        .await
        .expect("a valid configuration")
}

/// A reporter configured from a JSON options object.
pub async fn configured(config: &serde_json::Value) -> Reporter {
    runtime()
        .configured_reporter(&config.to_string())
        .await
        .expect("a valid configuration")
}

/// The recorded Buildbot cases under tests/fixtures/buildbot.
pub fn fixture_cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/buildbot");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures are present")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected.json").exists())
        .collect();
    cases.sort();
    cases
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `serverUrl` with its origin replaced by `origin` (`http://127.0.0.1:PORT`); path and
/// query stay.
pub fn with_origin(server_url: &str, origin: &str) -> String {
    let after_scheme = server_url
        .split_once("://")
        .map_or(server_url, |(_, rest)| rest);
    let path_start = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    format!("{origin}{}", &after_scheme[path_start..])
}

/// The (user, password) of an `Authorization: Basic` header.
pub fn basic_auth(header: Option<&str>) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = header?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The sample build's data-API documents for `event` ("started" or "finished"), with
/// its buildid (and number) set to `buildid`.
pub fn sample_documents(event: &str, buildid: i64) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/buildbot/default_start_finish")
        .join(format!("{event}.json"));
    let mut doc = read_json(&path);
    doc["build"]["buildid"] = buildid.into();
    doc["build"]["number"] = buildid.into();
    doc.to_string()
}

/// A free port on 127.0.0.1 with nothing listening on it (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
