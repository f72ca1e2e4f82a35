//! A compiled-component cache on disk: compiling takes hundreds of milliseconds, loading
//! a compiled artifact a few. Entries are keyed by the component's SHA-256, the wasmtime
//! version and the engine's compatibility hash, written to a temporary file and renamed
//! into place, so processes can share a cache directory safely.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The wasmtime this host is built with (pinned in Cargo.toml).
const WASMTIME_VERSION: &str = "48.0.8";

/// Where `bytes` compiled for `engine` lives under `dir`.
fn entry(dir: &Path, engine: &Engine, bytes: &[u8]) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!(
        "{hex}-wasmtime{WASMTIME_VERSION}-{:016x}.cwasm",
        hasher.finish()
    ))
}

/// The component from the cache, else compiled and stored there. A cache that cannot
/// be read or written costs only time, never correctness.
pub(crate) fn load_or_compile(
    dir: &Path,
    engine: &Engine,
    bytes: &[u8],
) -> wasmtime::Result<Component> {
    let path = entry(dir, engine, bytes);
    if path.exists() {
        // SAFETY: the file was written by `precompile_component` of this same wasmtime
        // version and engine configuration (both are in its name), and is replaced
        // only by atomic rename, never modified in place.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring an unusable cache entry: {e:#}")
            }
        }
    }
    let compiled = engine.precompile_component(bytes)?;
    if let Err(e) = store(dir, &path, &compiled) {
        tracing::warn!(path = %path.display(), "cannot write the compile cache: {e}");
    }
    // SAFETY: `compiled` was just produced by this engine.
    unsafe { Component::deserialize(engine, &compiled) }
}

fn store(dir: &Path, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, compiled)?;
    std::fs::rename(&temporary, path)
}

/// The default cache directory: `$STATUS_PUSH_CACHE_DIR`, else `$XDG_CACHE_HOME/status-push`,
/// else `~/.cache/status-push`.
pub(crate) fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STATUS_PUSH_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("status-push"))
}
