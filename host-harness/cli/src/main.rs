//! `status-push`: push Buildbot build statuses through the sandboxed component.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use status_push_cli::loader::{LoadArgs, Loader};
use status_push_cli::output;
use status_push_cli::receiver::{Receiver, Reply, Verifier};
use status_push_cli::serve::{Options as ServeOptions, Service};
use status_push_host::outbox::{KeyRing, Location, Redeliver, KEY_FILE_ENV};
use status_push_host::relay::Relay;
use status_push_host::{Event, Outcome, UnknownEvent};

use crate::error::CliError;
use crate::push::{open_outbox, OutboxArgs};

mod error;
mod input;
mod push;

/// What every command returns.
type Result<T> = std::result::Result<T, CliError>;

/// The relay component `serve` hosts.
const DEFAULT_RELAY_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../target/status-push-relay.wasm"
);

/// Warnings from the host, and what the component writes to stderr (its `debug` output).
const DEFAULT_LOG: &str = "warn,wasmtime_wasi_http=error,status_push::guest=info";

#[derive(Parser)]
#[command(
    name = "status-push",
    version,
    about = "Push Buildbot build statuses through a sandboxed WebAssembly component",
    long_about = "Push Buildbot build statuses (HttpStatusPush's JSON payload) through the \
status-push WebAssembly component, which may reach only its configured server.\n\n\
Exit codes: 0 delivered or deliberately skipped; 1 the push failed; 2 invalid \
configuration or input; 3 the component could not be loaded or trapped."
)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
    #[command(subcommand)]
    command: Command,
}

/// `--event`: `started` or `finished`, through [`Event`]'s own parser.
fn event_name(name: &str) -> std::result::Result<Event, UnknownEvent> {
    name.parse()
}

/// `--outbox`: a SQLite file or a PostgreSQL URL, parsed by clap without clap's usual
/// error, which repeats the value (and so a URL's password) on the terminal.
#[derive(Clone)]
struct OutboxParser;

impl clap::builder::TypedValueParser for OutboxParser {
    type Value = Location;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<Location, clap::Error> {
        Location::parse(value).map_err(|e| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid --outbox: {e}\n"),
            )
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// POST one build event, as Buildbot's HttpStatusPush would.
    #[command(
        after_help = "Example:\n  status-push push --config push.json --event started --build started.json"
    )]
    Push {
        /// JSON options with the seed's names: serverUrl, buildbotURL, user, password, auth,
        /// headers, format_fn, builders, wantProperties, wantSteps, wantLogs, …
        #[arg(long)]
        config: PathBuf,
        /// Which event to report: started or finished.
        #[arg(long, value_parser = event_name, value_name = "started|finished")]
        event: Event,
        /// Buildbot data-API documents of the build: build, properties, buildrequest,
        /// buildset, builder, steps, … (as in tests/fixtures/buildbot/*/started.json).
        #[arg(long)]
        build: PathBuf,
        /// Write the event to this outbox before the first attempt; it stays there until
        /// delivered or dead (see `deliver`, `dead-letters`). A SQLite file, or a
        /// PostgreSQL database: postgresql://user@host:port/db.
        #[arg(long, value_parser = OutboxParser, value_name = "FILE|URL")]
        outbox: Option<Location>,
        /// The outbox key file (one base64 key per line; the first seals, every one
        /// opens; `status-push keygen` writes one). Default for a SQLite outbox:
        /// FILE.key beside it, made on first use. A PostgreSQL outbox needs one.
        #[arg(long, env = KEY_FILE_ENV, value_name = "PATH")]
        outbox_key_file: Option<PathBuf>,
        /// Print `stats:` with this process's peak RSS and the component's peak memory.
        #[arg(long)]
        stats: bool,
    },
    /// Deliver everything pending in an outbox, in per-build order (after a crash or an
    /// outage). Exits 0 once nothing is pending, 1 if events are still pending when the
    /// budget is spent.
    Deliver {
        /// The outbox: a SQLite file, or postgresql://user@host:port/db.
        #[arg(long, value_parser = OutboxParser, value_name = "FILE|URL")]
        outbox: Location,
        /// The outbox key file (one base64 key per line; the first seals, every one
        /// opens; `status-push keygen` writes one). Default for a SQLite outbox:
        /// FILE.key beside it, made on first use. A PostgreSQL outbox needs one.
        #[arg(long, env = KEY_FILE_ENV, value_name = "PATH")]
        outbox_key_file: Option<PathBuf>,
        /// How long to keep trying, in seconds.
        #[arg(long, default_value_t = 60)]
        budget_seconds: u64,
    },
    /// List an outbox's dead letters: events that failed permanently or expired.
    DeadLetters {
        /// The outbox: a SQLite file, or postgresql://user@host:port/db.
        #[arg(long, value_parser = OutboxParser, value_name = "FILE|URL")]
        outbox: Location,
        /// The outbox key file (one base64 key per line; the first seals, every one
        /// opens; `status-push keygen` writes one). Default for a SQLite outbox:
        /// FILE.key beside it, made on first use. A PostgreSQL outbox needs one.
        #[arg(long, env = KEY_FILE_ENV, value_name = "PATH")]
        outbox_key_file: Option<PathBuf>,
    },
    /// Make dead letters pending again (then `deliver`, or a running `serve --outbox`,
    /// sends them).
    #[command(group = clap::ArgGroup::new("which").required(true))]
    Redeliver {
        /// The outbox: a SQLite file, or postgresql://user@host:port/db.
        #[arg(long, value_parser = OutboxParser, value_name = "FILE|URL")]
        outbox: Location,
        /// The outbox key file (one base64 key per line; the first seals, every one
        /// opens; `status-push keygen` writes one). Default for a SQLite outbox:
        /// FILE.key beside it, made on first use. A PostgreSQL outbox needs one.
        #[arg(long, env = KEY_FILE_ENV, value_name = "PATH")]
        outbox_key_file: Option<PathBuf>,
        /// The dead letter's seq or delivery id (as `dead-letters` lists them).
        #[arg(long, group = "which")]
        id: Option<String>,
        /// Every dead letter.
        #[arg(long, group = "which")]
        all: bool,
        /// Also a superseded dead letter: one whose build has had a later event
        /// delivered to its destination since (or being delivered), so that it arrives
        /// after it.
        #[arg(long)]
        force: bool,
    },
    /// Write a new outbox key file (mode 0600; an existing file is never overwritten).
    /// Give it to every host of the outbox: --outbox-key-file PATH or
    /// STATUS_PUSH_OUTBOX_KEY_FILE.
    #[command(
        after_help = "Example:\n  status-push keygen /etc/status-push/outbox.key\n\nRotation: write a new key with keygen, add its line on top of the key file every host uses, then `status-push reseal --outbox LOCATION` (see docs/outbox-key.md)."
    )]
    Keygen {
        /// Where to write it.
        path: PathBuf,
    },
    /// Seal an outbox's events anew. With --config: the pending events and dead letters
    /// of that configuration's reporter (its serverUrl's origin and path) take that
    /// configuration, so a rotated password, token or signing secret reaches them (dead
    /// letters stay dead until `redeliver`). Without: every event sealed by an older key
    /// is sealed under the key file's first key (a key rotation).
    #[command(
        after_help = "Example:\n  status-push reseal --outbox /var/lib/status-push/outbox.sqlite --config push.json"
    )]
    Reseal {
        /// The outbox: a SQLite file, or postgresql://user@host:port/db.
        #[arg(long, value_parser = OutboxParser, value_name = "FILE|URL")]
        outbox: Location,
        /// The outbox key file (one base64 key per line; the first seals, every one
        /// opens; `status-push keygen` writes one). Default for a SQLite outbox:
        /// FILE.key beside it, made on first use. A PostgreSQL outbox needs one.
        #[arg(long, env = KEY_FILE_ENV, value_name = "PATH")]
        outbox_key_file: Option<PathBuf>,
        /// The reporter's new configuration (the same keys as for `push`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a receiver on 127.0.0.1 that prints every request it gets.
    Receive {
        /// Port to listen on; 0 picks a free one.
        #[arg(long, default_value_t = 8010)]
        port: u16,
        /// HTTP status to answer with.
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// Check each request's Standard Webhooks signature with this `whsec_…` key (and
        /// its timestamp, ±5 minutes); prints `signature: verified` or why not.
        #[arg(long, value_name = "WHSEC")]
        verify_secret: Option<String>,
        /// Check each request's GitHub signature (`X-Hub-Signature-256`) with this secret.
        #[arg(long, value_name = "SECRET")]
        github_secret: Option<String>,
    },
    /// Push a sample build's started and finished events to a local receiver and show
    /// what arrived.
    Demo,
    /// Host the relay world (target/status-push-relay.wasm) as an HTTP service:
    /// POST a build's data-API documents to /started or /finished and it pushes them.
    /// GET /healthz and /metrics (Prometheus) for operations; SIGTERM or Ctrl-C stops it.
    #[command(
        after_help = "Beyond loopback, the config must set inboundToken or inboundSecret.\n\nExample:\n  status-push serve --config relay.json --listen 0.0.0.0:8080 --outbox /var/lib/status-push/outbox.sqlite"
    )]
    Serve {
        /// JSON options, the same keys as for `push`, plus inboundToken / inboundSecret
        /// (how callers authenticate) and maxBodyBytes.
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The relay component.
        #[arg(long, env = "STATUS_PUSH_RELAY_WASM", default_value = DEFAULT_RELAY_WASM)]
        relay: PathBuf,
        /// Queue each event in this outbox (a SQLite file, or postgresql://user@host/db)
        /// and answer 202 with its delivery id, then deliver in the background (per-build
        /// order, backoff, dead letters).
        #[arg(long, value_parser = OutboxParser, value_name = "FILE|URL")]
        outbox: Option<Location>,
        /// The outbox key file (one base64 key per line; the first seals, every one
        /// opens; `status-push keygen` writes one). Default for a SQLite outbox:
        /// FILE.key beside it, made on first use. A PostgreSQL outbox needs one.
        #[arg(long, env = KEY_FILE_ENV, value_name = "PATH")]
        outbox_key_file: Option<PathBuf>,
        /// Requests handled at once; more get 503 with Retry-After.
        #[arg(long, default_value_t = 64)]
        max_concurrent: usize,
        /// Seconds a client has to send a request's headers.
        #[arg(long, default_value_t = 10)]
        header_timeout_seconds: u64,
        /// Seconds a client has to send a request's body (408 after).
        #[arg(long, default_value_t = 10)]
        body_timeout_seconds: u64,
        /// At SIGTERM or Ctrl-C, seconds requests in flight have to finish.
        #[arg(long, default_value_t = 10)]
        shutdown_seconds: u64,
    },
}

fn main() -> ExitCode {
    output::init(DEFAULT_LOG);
    let cli = Cli::parse();
    let loader = cli.load.loader();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            output::complain(format_args!(
                "status-push: cannot start the async runtime: {e}"
            ));
            return ExitCode::from(3);
        }
    };
    let result = runtime.block_on(run(cli.command, &loader));
    match result {
        Ok(code) => code,
        Err(e) => {
            output::complain(format_args!("status-push: {}", e.with_causes()));
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(command: Command, loader: &Loader) -> Result<ExitCode> {
    match command {
        Command::Push {
            config,
            event,
            build,
            outbox: None,
            stats,
            ..
        } => push::push(loader, &config, event, &build, stats).await,
        Command::Push {
            config,
            event,
            build,
            outbox: Some(outbox),
            outbox_key_file,
            ..
        } => {
            let outbox = OutboxArgs::new(outbox, outbox_key_file);
            push::push_via_outbox(loader, &config, event, &build, &outbox).await
        }
        Command::Deliver {
            outbox,
            outbox_key_file,
            budget_seconds,
        } => {
            let outbox = OutboxArgs::new(outbox, outbox_key_file);
            deliver(loader, &outbox, Duration::from_secs(budget_seconds)).await
        }
        Command::DeadLetters {
            outbox,
            outbox_key_file,
        } => dead_letters(&OutboxArgs::new(outbox, outbox_key_file)).await,
        Command::Redeliver {
            outbox,
            outbox_key_file,
            id,
            all,
            force,
        } => redeliver(&OutboxArgs::new(outbox, outbox_key_file), id, all, force).await,
        Command::Keygen { path } => keygen(&path),
        Command::Reseal {
            outbox,
            outbox_key_file,
            config,
        } => {
            let outbox = OutboxArgs::new(outbox, outbox_key_file);
            reseal(loader, &outbox, config.as_deref()).await
        }
        Command::Receive {
            port,
            status,
            verify_secret,
            github_secret,
        } => {
            let verifier = Verifier::new(verify_secret.as_deref(), github_secret.as_deref())
                .map_err(|why| CliError::Usage(why.to_string()))?;
            receive(port, status, verifier).await
        }
        Command::Demo => demo(loader).await,
        Command::Serve {
            config,
            listen,
            relay,
            outbox,
            outbox_key_file,
            max_concurrent,
            header_timeout_seconds,
            body_timeout_seconds,
            shutdown_seconds,
        } => {
            let options = ServeOptions {
                max_concurrent,
                header_timeout: Duration::from_secs(header_timeout_seconds.max(1)),
                body_timeout: Duration::from_secs(body_timeout_seconds.max(1)),
                grace: Duration::from_secs(shutdown_seconds),
            };
            let outbox = outbox.map(|outbox| OutboxArgs::new(outbox, outbox_key_file));
            serve(loader, &config, &listen, &relay, outbox.as_ref(), options).await
        }
    }
}

/// `keygen PATH`: a new key file, one line out.
fn keygen(path: &Path) -> Result<ExitCode> {
    let id = KeyRing::write_new(path).map_err(status_push_host::outbox::OutboxError::from)?;
    output::say(format_args!(
        "wrote outbox key {id} to {} (mode 0600): give every host of the outbox this file (--outbox-key-file or {KEY_FILE_ENV})",
        path.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// `reseal`: a reporter's new configuration onto its queued events, or every event
/// under the key file's first key.
async fn reseal(loader: &Loader, location: &OutboxArgs, config: Option<&Path>) -> Result<ExitCode> {
    let outbox = open_outbox(location).await?;
    let done = match config {
        Some(path) => {
            let text = input::read_text("--config", path, input::MAX_CONFIG_BYTES)?;
            let runtime = loader.load()?;
            let done = outbox.reseal(&runtime, &text).await?;
            output::say(format_args!(
                "resealed: {} pending event(s) and dead letter(s) now carry --config {} (dead letters stay dead until `status-push redeliver`)",
                done.resealed,
                path.display()
            ));
            done
        }
        None => {
            let done = outbox.reseal_keys().await?;
            output::say(format_args!(
                "resealed: {} event(s) now sealed under the key file's first key",
                done.resealed
            ));
            done
        }
    };
    if done.unopened > 0 {
        output::say(format_args!(
            "not sealed by this outbox's key, left as they were: {} (they become dead letters when claimed)",
            done.unopened
        ));
    }
    Ok(ExitCode::SUCCESS)
}

async fn deliver(loader: &Loader, location: &OutboxArgs, budget: Duration) -> Result<ExitCode> {
    let runtime = loader.load()?;
    let outbox = open_outbox(location).await?;
    let summary = outbox.deliver(&runtime, budget).await?;
    output::say(format_args!(
        "delivered: {}, dead letters: {}, pending: {}",
        summary.delivered, summary.dead, summary.pending
    ));
    if summary.open_circuits > 0 {
        output::say(format_args!("open circuits: {}", summary.open_circuits));
    }
    for circuit in outbox.circuits().await? {
        output::say(format_args!(
            "circuit open: {} ({} failed call(s) in a row, {} pending): {}",
            circuit.destination,
            circuit.failures,
            circuit.pending,
            circuit.last_error.as_deref().unwrap_or("")
        ));
    }
    Ok(if summary.pending == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn dead_letters(location: &OutboxArgs) -> Result<ExitCode> {
    let outbox = open_outbox(location).await?;
    let letters = outbox.dead_letters().await?;
    output::say("seq\tevent\tbuild\tdelivery_id\tattempts\tqueued_at\treason");
    for e in &letters {
        output::say(format_args!(
            "{}\t{:?}\t{}\t{}\t{}\t{}\t{}",
            e.seq,
            e.event,
            e.build_key,
            e.delivery_id,
            e.attempts,
            e.created_at,
            e.last_error.as_deref().unwrap_or("")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

async fn redeliver(
    location: &OutboxArgs,
    id: Option<String>,
    all: bool,
    force: bool,
) -> Result<ExitCode> {
    let which = match id {
        _ if all => Redeliver::All,
        Some(id) => match id.parse::<i64>() {
            Ok(seq) => Redeliver::Seq(seq),
            Err(_) => Redeliver::DeliveryId(id),
        },
        None => {
            return Err(CliError::Usage(
                "say which dead letters: --id ID or --all".into(),
            ))
        }
    };
    let outbox = open_outbox(location).await?;
    let done = outbox.redeliver(&which, force).await?;
    output::say(format_args!(
        "pending again: {} (deliver them with `status-push deliver --outbox {}`, or a running `serve --outbox` does)",
        done.revived,
        outbox.location()
    ));
    if !done.superseded.is_empty() {
        let seqs: Vec<String> = done.superseded.iter().map(i64::to_string).collect();
        output::say(format_args!(
            "superseded, left dead: {} (a later event of their build was delivered since, or is being delivered; --force sends them anyway)",
            seqs.join(", ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

async fn receive(port: u16, status: u16, verifier: Verifier) -> Result<ExitCode> {
    let receiver =
        Receiver::start_with(port, std::sync::Arc::new(move |_: &_| Reply::from(status)))
            .await
            .map_err(CliError::system(format!(
                "cannot listen on 127.0.0.1:{port}"
            )))?;
    output::say(format_args!(
        "listening on {} (answering {status}); Ctrl-C stops",
        receiver.origin()
    ));
    let mut seen = 0;
    loop {
        tokio::select! {
            request = receiver.next_after(seen) => {
                seen += 1;
                output::say(format_args!("--- request {seen}\n{}", request.describe()));
                if let Some(verdict) = verifier.check(&request) {
                    output::say(verdict);
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn serve(
    loader: &Loader,
    config: &Path,
    listen: &str,
    relay: &Path,
    location: Option<&OutboxArgs>,
    options: ServeOptions,
) -> Result<ExitCode> {
    let config = input::read_text("--config", config, input::MAX_CONFIG_BYTES)?;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot resolve --listen {listen}: {e}")))?
        .collect();
    let relay = std::sync::Arc::new(Relay::load(relay, &loader.options, &config).await?);
    let outbox = match location {
        Some(location) => Some(std::sync::Arc::new(open_outbox(location).await?)),
        None => None,
    };
    let shown = outbox.as_ref().map(|o| o.location());
    let service = Service::new(relay, outbox.clone(), options.clone())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if !service.is_authenticated() && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(CliError::Usage(format!(
            "refusing to listen on {listen} without inbound authentication: anyone who reaches it could push build statuses; set inboundToken or inboundSecret in the config, or listen on 127.0.0.1"
        )));
    }
    // One courier per SQLite outbox: while `serve` runs, `deliver` waits and
    // `push --outbox` leaves its event to it. (PostgreSQL: hosts share by claims.)
    let lock = match &outbox {
        Some(outbox) => Some(outbox.courier_lock()?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(CliError::system(format!("cannot listen on {listen}")))?;
    let local = listener
        .local_addr()
        .map_err(CliError::system("cannot read the listener's address"))?;
    let service = std::sync::Arc::new(service);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let courier = service
        .courier()
        .map(|courier| tokio::spawn(courier.run(stopped, options.grace)));
    output::say(format_args!(
        "relay listening on http://{local}{}: POST build documents to /started or /finished",
        shown.map(|l| format!(" (outbox {l})")).unwrap_or_default()
    ));
    status_push_cli::serve::serve(service, listener, shutdown_signal())
        .await
        .map_err(CliError::system("the relay listener failed"))?;
    let _ = stop.send(true);
    if let Some(courier) = courier {
        let _ = courier.await;
    }
    drop(lock);
    output::complain("status-push: stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn demo(loader: &Loader) -> Result<ExitCode> {
    let receiver = Receiver::start(0)
        .await
        .map_err(CliError::system("cannot start the demo receiver"))?;
    output::say(format_args!("receiver listening on {}", receiver.origin()));
    let runtime = loader.load()?;
    let config = format!(
        r#"{{"serverUrl": "{}/buildbot/status", "buildbotURL": "http://buildbot.example.org/",
            "wantProperties": true, "wantSteps": true, "headers": {{"X-Demo": "status-push"}}}}"#,
        receiver.origin()
    );
    let mut reporter = runtime.configured_reporter(&config).await?;
    let samples = [
        (Event::Started, include_str!("../demo/started.json")),
        (Event::Finished, include_str!("../demo/finished.json")),
    ];
    for (i, (event, documents)) in samples.into_iter().enumerate() {
        let build = reporter.parse_event(documents).await?;
        let outcome: Outcome = reporter.report(event, &build).await?;
        output::say(format_args!("\n=== {event:?} event: {outcome}"));
        let arrived = receiver.wait_for(i + 1, Duration::from_secs(5)).await;
        match arrived.get(i) {
            Some(request) => output::say(format_args!(
                "--- the receiver got:\n{}",
                request.describe()
            )),
            None => {
                return Err(CliError::System {
                    what: format!("the receiver got no request for the {event:?} event"),
                    source: std::io::ErrorKind::TimedOut.into(),
                })
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
