//! `status-push-bench`: measurements of status-push, kept out of the `status-push`
//! binary. They need hooks of `status-push-host` that a product must not carry (a host
//! that answers without a socket, the native baseline's transport, a perf map), which
//! only its `bench` feature compiles in.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use status_push_host::{HostError, Runtime, RuntimeOptions};

mod component;
// The `status-push` binary's module, not the library's: its log writer and its handling
// of closed standard descriptors apply here just as well. `say` is not used here.
#[allow(dead_code)]
#[path = "../../output.rs"]
mod output;

/// The component measured unless --wasm or STATUS_PUSH_WASM says otherwise: the one
/// `status-push` loads.
const DEFAULT_WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/status-push.wasm");

/// Warnings from the host, and what the component writes to stderr: as `status-push`.
const DEFAULT_LOG: &str = "warn,wasmtime_wasi_http=error,status_push::guest=info";

#[derive(Parser)]
#[command(
    name = "status-push-bench",
    version,
    about = "Measure status-push: where an event's time goes",
    long_about = "Measure status-push: where an event's time goes.\n\n\
Exit codes: 0 measured; 1 a measurement failed; 2 invalid arguments; 3 the component \
could not be loaded or trapped."
)]
struct Cli {
    /// The component to run (built by `cargo xtask wasm`).
    #[arg(long, global = true, env = "STATUS_PUSH_WASM", default_value = DEFAULT_WASM)]
    wasm: PathBuf,
    /// Where compiled components are cached (default: $XDG_CACHE_HOME/status-push).
    #[arg(long, global = true, env = "STATUS_PUSH_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile the component every time instead of using the cache.
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the component against the same work done natively and against a byte
    /// replay, on one loopback receiver: events per second, latency, CPU per event, cold
    /// start, memory, size. The last lines are `cpu per event: …` and the ratios
    /// `component/native-same-work` and `component/byte-replay`.
    Component(component::Args),
}

/// The component file and how to load it.
struct Loader {
    wasm: PathBuf,
    options: RuntimeOptions,
}

impl Loader {
    /// The component, compiled or from the cache.
    fn load(&self) -> Result<Runtime, HostError> {
        Runtime::load_with(&self.wasm, &self.options)
    }
}

fn main() -> ExitCode {
    output::reopen_closed_standard_fds();
    tracing_subscriber::fmt()
        .with_writer(|| output::QuietStderr)
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    let cli = Cli::parse();
    let loader = Loader {
        wasm: cli.wasm,
        options: RuntimeOptions {
            cache_dir: if cli.no_cache {
                None
            } else {
                cli.cache_dir.or_else(RuntimeOptions::default_cache_dir)
            },
            ..RuntimeOptions::default()
        },
    };
    // The same multi-thread runtime as `status-push`'s, so that what is measured here is
    // what the product does.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            output::complain(format_args!(
                "status-push-bench: cannot start the async runtime: {e}"
            ));
            return ExitCode::from(3);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Component(args) => component::run(&loader, &args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            output::complain(format_args!("status-push-bench: {e:#}"));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 3 when the component could not be loaded or trapped (its limits included), as for
/// `status-push`; 1 for any other failure: the bench's own configurations and events
/// refused, a push the loopback receiver did not take, a bad option value.
fn exit_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<HostError>() {
        Some(HostError::Push(_) | HostError::Config(_) | HostError::Event(_)) | None => 1,
        Some(_) => 3,
    }
}
