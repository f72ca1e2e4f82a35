//! Which component a command runs and how it is loaded: the global options that
//! `status-push` and `status-push-bench` both take, written once.

use std::path::PathBuf;

use status_push_host::{HostError, Runtime, RuntimeOptions};

/// The component loaded unless `--wasm` or `STATUS_PUSH_WASM` says otherwise.
const DEFAULT_WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/status-push.wasm");

/// `--wasm`, `--cache-dir`, `--no-cache`.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// The component to run (built by `cargo xtask wasm`).
    #[arg(long, global = true, env = "STATUS_PUSH_WASM", default_value = DEFAULT_WASM)]
    pub wasm: PathBuf,
    /// Where compiled components are cached (default: $XDG_CACHE_HOME/status-push).
    #[arg(long, global = true, env = "STATUS_PUSH_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the component every time instead of using the cache.
    #[arg(long, global = true)]
    pub no_cache: bool,
}

impl LoadArgs {
    /// The loader these options describe.
    pub fn loader(&self) -> Loader {
        Loader {
            wasm: self.wasm.clone(),
            options: RuntimeOptions {
                cache_dir: if self.no_cache {
                    None
                } else {
                    self.cache_dir
                        .clone()
                        .or_else(RuntimeOptions::default_cache_dir)
                },
                ..RuntimeOptions::default()
            },
        }
    }
}

/// The component file and how to load it.
pub struct Loader {
    /// The `.wasm` file.
    pub wasm: PathBuf,
    /// How it is compiled and run.
    pub options: RuntimeOptions,
}

impl Loader {
    /// The component, compiled or from the cache.
    pub fn load(&self) -> Result<Runtime, HostError> {
        Runtime::load_with(&self.wasm, &self.options)
    }
}
