//! What the CLI's test files share: where the workspace and the built component are.

use std::path::{Path, PathBuf};

#[allow(dead_code)] // Only the PostgreSQL tests start a server.
pub mod postgres;

/// The workspace root: `host-harness/cli` is two levels below it.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host-harness/cli is two levels below the workspace")
        .to_path_buf()
}

/// The component `cargo xtask wasm` builds.
#[allow(dead_code)] // Not every test file pushes through the component.
pub fn wasm() -> PathBuf {
    let path = workspace().join("target/status-push.wasm");
    assert!(path.exists(), "build the component first: cargo xtask wasm");
    path
}
