//! `status-push-bench`: measurements of status-push, kept out of the `status-push`
//! binary. They need hooks of `status-push-host` that a product must not carry (a host
//! that answers without a socket, the native baseline's transport, a perf map), which
//! only its `bench` feature compiles in.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use status_push_cli::loader::LoadArgs;
use status_push_cli::output;
use status_push_host::HostError;

mod component;
mod outbox;

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
    #[command(flatten)]
    load: LoadArgs,
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
    /// Claims and deliveries with a backlog: N events pending for a refusing destination,
    /// D due for one that answers at once, K couriers. The last lines are
    /// `claim p99: X ms at N pending` and `delivered per second: Y with K workers`.
    Outbox(outbox::Args),
}

fn main() -> ExitCode {
    output::init(DEFAULT_LOG);
    let cli = Cli::parse();
    let loader = cli.load.loader();
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
            Command::Outbox(args) => outbox::run(&loader, &args).await,
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
