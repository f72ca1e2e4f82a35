//! `status-push`: push Buildbot build statuses through the sandboxed component.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use status_push_cli::receiver::{Receiver, Reply};
use status_push_host::outbox::{Outbox, OutboxError, PushResult};
use status_push_host::relay::Relay;
use status_push_host::{Event, HostError, Outcome, Runtime, RuntimeOptions};

mod bench;

/// The component the CLI loads unless --wasm or STATUS_PUSH_WASM says otherwise.
const DEFAULT_WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/status-push.wasm");

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

/// The component file and how to load it.
pub struct Loader {
    wasm: PathBuf,
    options: RuntimeOptions,
}

impl Loader {
    /// The component, compiled or from the cache.
    pub fn load(&self) -> Result<Runtime, HostError> {
        Runtime::load_with(&self.wasm, &self.options)
    }
}

/// `--event`: which report to make.
#[derive(Clone, Copy, clap::ValueEnum)]
enum EventArg {
    /// `on-build-started`.
    Started,
    /// `on-build-finished`.
    Finished,
}

impl From<EventArg> for Event {
    fn from(event: EventArg) -> Event {
        match event {
            EventArg::Started => Event::Started,
            EventArg::Finished => Event::Finished,
        }
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
        /// Which event to report.
        #[arg(long, value_enum)]
        event: EventArg,
        /// Buildbot data-API documents of the build: build, properties, buildrequest,
        /// buildset, builder, steps, … (as in tests/fixtures/buildbot/*/started.json).
        #[arg(long)]
        build: PathBuf,
        /// Write the event to this outbox (SQLite) before the first attempt; it stays
        /// there until delivered or dead (see `deliver`, `dead-letters`).
        #[arg(long)]
        outbox: Option<PathBuf>,
        /// Print `stats:` with this process's peak RSS and the component's peak memory.
        #[arg(long)]
        stats: bool,
    },
    /// Deliver everything pending in an outbox, in per-build order (after a crash or an
    /// outage). Exits 0 once nothing is pending, 1 if events are still pending when the
    /// budget is spent.
    Deliver {
        /// The outbox file.
        #[arg(long)]
        outbox: PathBuf,
        /// How long to keep trying, in seconds.
        #[arg(long, default_value_t = 60)]
        budget_seconds: u64,
    },
    /// List an outbox's dead letters: events that failed permanently or expired.
    DeadLetters {
        /// The outbox file.
        #[arg(long)]
        outbox: PathBuf,
    },
    /// Run a receiver on 127.0.0.1 that prints every request it gets.
    Receive {
        /// Port to listen on; 0 picks a free one.
        #[arg(long, default_value_t = 8010)]
        port: u16,
        /// HTTP status to answer with.
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
    /// Push a sample build's started and finished events to a local receiver and show
    /// what arrived.
    Demo,
    /// Host the relay world (target/status-push-relay.wasm) as an HTTP service:
    /// POST a build's data-API documents to /started or /finished and it pushes them.
    Serve {
        /// JSON options, the same keys as for `push`.
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The relay component.
        #[arg(long, env = "STATUS_PUSH_RELAY_WASM", default_value = DEFAULT_RELAY_WASM)]
        relay: PathBuf,
    },
    /// Measure the component against a native client on one loopback receiver: events
    /// per second, latency, cold start, memory, size. The last line is
    /// `throughput ratio component/native: X.XX`.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    let cli = Cli::parse();
    let loader = Loader {
        wasm: cli.wasm.clone(),
        options: RuntimeOptions {
            cache_dir: if cli.no_cache {
                None
            } else {
                cli.cache_dir
                    .clone()
                    .or_else(RuntimeOptions::default_cache_dir)
            },
            ..RuntimeOptions::default()
        },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("status-push: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Push {
                config,
                event,
                build,
                outbox: None,
                stats,
            } => push(&loader, &config, event.into(), &build, stats).await,
            Command::Push {
                config,
                event,
                build,
                outbox: Some(outbox),
                ..
            } => push_via_outbox(&loader, &config, event.into(), &build, &outbox).await,
            Command::Deliver {
                outbox,
                budget_seconds,
            } => deliver(&loader, &outbox, Duration::from_secs(budget_seconds)).await,
            Command::DeadLetters { outbox } => dead_letters(&outbox),
            Command::Receive { port, status } => receive(port, status).await,
            Command::Demo => demo(&loader).await,
            Command::Serve {
                config,
                listen,
                relay,
            } => serve(&loader, &config, &listen, &relay).await,
            Command::Bench(args) => bench::run(&loader, &args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("status-push: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(error: &anyhow::Error) -> u8 {
    let host =
        error
            .downcast_ref::<HostError>()
            .or_else(|| match error.downcast_ref::<OutboxError>() {
                Some(OutboxError::Host(e)) => Some(e),
                _ => None,
            });
    match host {
        Some(HostError::Push(_)) => 1,
        Some(HostError::Config(_)) => 2,
        Some(_) => 3,
        None if error.downcast_ref::<OutboxError>().is_some() => 3,
        None => 2,
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn push(
    loader: &Loader,
    config: &Path,
    event: Event,
    build: &Path,
    stats: bool,
) -> Result<ExitCode> {
    let config = read(config)?;
    let build = read(build)?;
    let runtime = loader.load()?;
    let mut reporter = runtime.reporter().await?;
    let config = reporter.parse_config(&config).await?;
    reporter.configure(config).await?;
    let documents = reporter.parse_event(&build).await?;
    let outcome = reporter.report(event, &documents).await;
    if stats {
        println!(
            "stats: peak RSS {} KiB, component memory {} KiB",
            bench::peak_rss_kib().unwrap_or(0),
            reporter.peak_memory() / 1024
        );
    }
    println!("{}", outcome?);
    Ok(ExitCode::SUCCESS)
}

async fn push_via_outbox(
    loader: &Loader,
    config: &Path,
    event: Event,
    build: &Path,
    outbox_path: &Path,
) -> Result<ExitCode> {
    let config = read(config)?;
    let build = read(build)?;
    let runtime = loader.load()?;
    let outbox = Outbox::open(outbox_path)?;
    match outbox.push(&runtime, &config, event, &build).await? {
        PushResult::Done(outcome) => {
            println!("{outcome}");
            Ok(ExitCode::SUCCESS)
        }
        PushResult::Pending(reason) => {
            println!("pending: {reason} (kept in {})", outbox_path.display());
            Ok(ExitCode::from(1))
        }
        PushResult::Dead(reason) => {
            println!("dead letter: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn deliver(loader: &Loader, outbox_path: &Path, budget: Duration) -> Result<ExitCode> {
    let runtime = loader.load()?;
    let outbox = Outbox::open(outbox_path)?;
    let summary = outbox.deliver(&runtime, budget).await?;
    println!(
        "delivered: {}, dead letters: {}, pending: {}",
        summary.delivered, summary.dead, summary.pending
    );
    Ok(if summary.pending == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn dead_letters(outbox_path: &Path) -> Result<ExitCode> {
    let outbox = Outbox::open(outbox_path)?;
    let letters = outbox.dead_letters()?;
    println!("seq\tevent\tbuild\tdelivery_id\tattempts\tqueued_at\treason");
    for e in &letters {
        println!(
            "{}\t{:?}\t{}\t{}\t{}\t{}\t{}",
            e.seq,
            e.event,
            e.build_key,
            e.delivery_id,
            e.attempts,
            e.created_at,
            e.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn receive(port: u16, status: u16) -> Result<ExitCode> {
    let receiver =
        Receiver::start_with(port, std::sync::Arc::new(move |_: &_| Reply::from(status)))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    println!(
        "listening on {} (answering {status}); Ctrl-C stops",
        receiver.origin()
    );
    let mut seen = 0;
    loop {
        tokio::select! {
            request = receiver.next_after(seen) => {
                seen += 1;
                println!("--- request {seen}\n{}", request.describe());
            }
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn serve(loader: &Loader, config: &Path, listen: &str, relay: &Path) -> Result<ExitCode> {
    let config = read(config)?;
    let relay = std::sync::Arc::new(Relay::load(relay, &loader.options, &config).await?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!(
        "relay listening on http://{}: POST build documents to /started or /finished",
        listener.local_addr()?
    );
    tokio::select! {
        served = status_push_cli::serve::serve(relay, listener) => {
            served.context("the relay listener failed")?
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn demo(loader: &Loader) -> Result<ExitCode> {
    let receiver = Receiver::start(0)
        .await
        .context("cannot start the demo receiver")?;
    println!("receiver listening on {}", receiver.origin());
    let runtime = loader.load()?;
    let mut reporter = runtime.reporter().await?;
    let config = format!(
        r#"{{"serverUrl": "{}/buildbot/status", "buildbotURL": "http://buildbot.example.org/",
            "wantProperties": true, "wantSteps": true, "headers": {{"X-Demo": "status-push"}}}}"#,
        receiver.origin()
    );
    let config = reporter.parse_config(&config).await?;
    reporter.configure(config).await?;
    let samples = [
        (Event::Started, include_str!("../demo/started.json")),
        (Event::Finished, include_str!("../demo/finished.json")),
    ];
    for (i, (event, documents)) in samples.into_iter().enumerate() {
        let build = reporter.parse_event(documents).await?;
        let outcome: Outcome = reporter.report(event, &build).await?;
        println!("\n=== {event:?} event: {outcome}");
        let arrived = receiver.wait_for(i + 1, Duration::from_secs(5)).await;
        match arrived.get(i) {
            Some(request) => println!("--- the receiver got:\n{}", request.describe()),
            None => anyhow::bail!("the receiver got no request for the {event:?} event"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
