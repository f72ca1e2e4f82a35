//! `status-push push`: one event, read from bounded files, reported through the
//! component; every failure is one line that says which side failed (the input files,
//! the component, the receiver) and names the flag and file at fault.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use status_push_host::bindings::{PushError, PushFailure};
use status_push_host::outbox::{KeyRing, Location, Outbox, OutboxError, PushResult};
use status_push_host::{Event, HostError, InputError};

use crate::error::{Blamed, CliError};
use crate::input::{self, MAX_BUILD_BYTES, MAX_CONFIG_BYTES};
use status_push_cli::loader::Loader;
use status_push_cli::output::say;

type Result<T> = std::result::Result<T, CliError>;

fn blame(input: String) -> impl Fn(HostError) -> Blamed {
    move |error| Blamed {
        error,
        input: input.clone(),
    }
}

/// A report that ended before any attempt in `invalid-input` (a document, or a body
/// over `maxBodyBytes`) or a `format_fn` failure is the input's fault, not a failed
/// push: nothing was sent.
fn input_fault(error: HostError) -> HostError {
    match error {
        HostError::Push(PushFailure {
            error: PushError::InvalidInput(e),
            attempts: 0,
            ..
        }) => HostError::Event(e),
        HostError::Push(PushFailure {
            error: PushError::Format(f),
            attempts: 0,
            ..
        }) => HostError::Config(InputError {
            key: "format_fn".into(),
            message: f
                .to_string()
                .trim_start_matches("format_fn")
                .trim_start_matches(':')
                .trim_start()
                .to_string(),
        }),
        other => other,
    }
}

/// `push` without an outbox: the documents go to the component as JSON in one call,
/// unless a log names a `content_file` to stream (`Reporter::report_documents`).
pub async fn push(
    loader: &Loader,
    config_path: &Path,
    event: Event,
    build_path: &Path,
    stats: bool,
) -> Result<ExitCode> {
    let config = input::read_text("--config", config_path, MAX_CONFIG_BYTES)?;
    let build = input::read_text("--build", build_path, MAX_BUILD_BYTES)?;
    let runtime = loader.load()?;
    let mut reporter = runtime.reporter().await?;
    reporter
        .configure_json(&config)
        .await
        .map_err(blame(format!("--config {}", config_path.display())))?;
    let outcome = reporter.report_documents(event, &build).await;
    if stats {
        say(format_args!(
            "stats: peak RSS {} KiB, component memory {} KiB",
            status_push_cli::usage::peak_rss_kib().unwrap_or(0),
            reporter.peak_memory() / 1024
        ));
    }
    let outcome = outcome.map_err(input_fault).map_err(|e| -> CliError {
        match e {
            // The receiver's side: no file to blame.
            HostError::Push(_) => e.into(),
            // A trap while reporting may come from either file (a format_fn's output).
            e if e.is_trap() => blame(format!(
                "--config {}, --build {}",
                config_path.display(),
                build_path.display()
            ))(e)
            .into(),
            e @ HostError::Config(_) => {
                blame(format!("--config {}", config_path.display()))(e).into()
            }
            e => blame(format!("--build {}", build_path.display()))(e).into(),
        }
    })?;
    say(outcome);
    Ok(ExitCode::SUCCESS)
}

/// `push --outbox`: the event is kept in the outbox first, then delivered in order.
pub async fn push_via_outbox(
    loader: &Loader,
    config_path: &Path,
    event: Event,
    build_path: &Path,
    location: &OutboxArgs,
) -> Result<ExitCode> {
    let config = input::read_text("--config", config_path, MAX_CONFIG_BYTES)?;
    let build = input::read_text("--build", build_path, MAX_BUILD_BYTES)?;
    let runtime = loader.load()?;
    let outbox = open_outbox(location).await?;
    match outbox.push(&runtime, &config, event, &build).await? {
        PushResult::Done(outcome) => {
            say(outcome);
            Ok(ExitCode::SUCCESS)
        }
        PushResult::Pending(reason) => {
            say(format_args!(
                "pending: {reason} (kept in {})",
                outbox.location()
            ));
            Ok(ExitCode::from(1))
        }
        PushResult::Dead(reason) => {
            say(format_args!("dead letter: {reason}"));
            Ok(ExitCode::from(1))
        }
        PushResult::Queued => {
            say("queued: the running courier delivers it");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--outbox` and `--outbox-key-file` (or `STATUS_PUSH_OUTBOX_KEY_FILE`).
pub struct OutboxArgs {
    /// Where the outbox is.
    pub location: Location,
    /// Its key file, if given.
    pub key_file: Option<PathBuf>,
}

impl OutboxArgs {
    /// The two flags, an empty key file path counting as none.
    pub fn new(location: Location, key_file: Option<PathBuf>) -> OutboxArgs {
        OutboxArgs {
            location,
            key_file: key_file.filter(|p| !p.as_os_str().is_empty()),
        }
    }
}

/// Opens the outbox `--outbox` names (a PostgreSQL database, or a file that must be a
/// regular one, or new) with the key file given, or else the library's default: for a
/// SQLite outbox, FILE.key beside it, made on first use; a PostgreSQL outbox without a
/// key is refused with one line naming `keygen`.
pub async fn open_outbox(args: &OutboxArgs) -> Result<Outbox> {
    if let Location::Sqlite(path) = &args.location {
        input::check_regular_if_exists("--outbox", path)?;
    }
    let keys = match &args.key_file {
        Some(path) => Some(KeyRing::read(path).map_err(OutboxError::from)?),
        None => None,
    };
    Ok(Outbox::open_with(&args.location, keys).await?)
}
