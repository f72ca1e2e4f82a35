//! `cargo xtask wasm`: builds the release component at `target/status-push.wasm`, its relay
//! world at `target/status-push-relay.wasm`, and the sandbox tests' hostile component at
//! `target/test-components/misbehaving.wasm`.
//!
//! The core module is compiled for `wasm32-unknown-unknown`, whose std links no wasi-libc,
//! so the module imports exactly what the WIT world names; `wit-component` then wraps it
//! into a component using the WIT embedded by wit-bindgen.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const TARGET: &str = "wasm32-unknown-unknown";
/// The size-tuned profile in the workspace's Cargo.toml.
const PROFILE: &str = "wasm-release";

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "wasm" => {
            build_component("status-push", &[], "status_push", "status-push.wasm")?;
            build_component(
                "status-push",
                &["--features", "relay"],
                "status_push",
                "status-push-relay.wasm",
            )?;
            build_component(
                "misbehaving-component",
                &[],
                "misbehaving_component",
                "test-components/misbehaving.wasm",
            )
        }
        _ => bail!("usage: cargo xtask wasm   (builds target/status-push.wasm)"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Builds `package` for the wasm target and wraps its module into `target/<output>`.
fn build_component(package: &str, features: &[&str], module: &str, output: &str) -> Result<()> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--profile",
            PROFILE,
            "--package",
            package,
            "--lib",
            "--target",
            TARGET,
        ])
        .args(features)
        .status()
        .context("running cargo build for the component")?;
    if !status.success() {
        bail!("cargo build for {TARGET} failed");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let core = target_dir
        .join(TARGET)
        .join(PROFILE)
        .join(format!("{module}.wasm"));
    let module = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .context("reading the core module's WIT metadata")?
        .validate(true)
        .encode()
        .context("encoding the component")?;
    let out = target_dir.join(output);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, &component).with_context(|| format!("writing {}", out.display()))?;
    println!("{} ({} bytes)", out.display(), component.len());
    Ok(())
}
