//! Run the status-push component — Buildbot's `HttpStatusPush` as a sandboxed WASI 0.2
//! component — inside your own program, on wasmtime.
//!
//! The component builds Buildbot's JSON payload and POSTs it; this library gives it a
//! sandbox that lets it reach only the server it was configured for, with a memory limit
//! and a deadline per call, and hands back typed results. The `status-push` CLI
//! (`host-harness/cli`) is built on exactly this API.
//!
//! # Load once, report many times
//!
//! [`Runtime::load`] compiles the component (`target/status-push.wasm`, built by
//! `cargo xtask wasm`); a [`Reporter`] is one instance with one configuration. The
//! configuration and the event can come as Buildbot's JSON (the seed's option names, the
//! data-API documents), parsed by the component itself:
//!
//! ```no_run
//! use status_push_host::{Event, HostError, Runtime};
//!
//! # async fn run() -> Result<(), HostError> {
//! let runtime = Runtime::load("target/status-push.wasm".as_ref())?; // compile once
//! let mut reporter = runtime.reporter().await?;                    // one instance per config
//! let config = reporter
//!     .parse_config(r#"{"serverUrl": "https://hooks.example.com/ci", "wantSteps": true}"#)
//!     .await?;
//! reporter.configure(config).await?; // also opens the sandbox to that origin only
//!
//! let documents = std::fs::read_to_string("started.json").expect("readable");
//! let build = reporter.parse_event(&documents).await?;
//! let outcome = reporter.report(Event::Started, &build).await?;
//! println!("{outcome}"); // "delivered: HTTP 200", or "skipped: builder not in builders"
//! # Ok(()) }
//! ```
//!
//! One [`Runtime`] serves many concurrent [`Reporter`]s on one tokio runtime, and they
//! share its HTTP connection pool. A [`Reporter`] keeps its configuration for any number
//! of events; make one per configuration (or per event: instantiation costs tens of
//! microseconds with the default pooling allocator).
//!
//! # Configuration as records
//!
//! A host that holds its settings natively fills [`bindings::Config`] itself; its
//! credentials are [`Secret`]s, so `{:?}` of a configuration never shows them:
//!
//! ```no_run
//! use status_push_host::bindings::{Auth, Config};
//! use status_push_host::{HostError, Reporter, Secret};
//!
//! # async fn run(reporter: &mut Reporter) -> Result<(), HostError> {
//! let mut config = reporter.parse_config(r#"{"serverUrl": "https://hooks.example.com/ci"}"#).await?;
//! config.auth = Some(Auth::Bearer(Secret::new("token from your vault")));
//! config.max_attempts = Some(8);
//! println!("{config:?}"); // … auth: Some(Bearer(<redacted>)) …
//! reporter.configure(config).await?;
//! # Ok(()) }
//! ```
//!
//! # Events as JSON, in one call
//!
//! A host that holds the event as JSON can skip the records: [`Reporter::report_json`]
//! hands the documents to the component once, as one string (log texts inline), and
//! [`Reporter::report_documents`] does so unless a log names a `content_file` to stream.
//! Parsing first ([`Reporter::parse_event`], then [`Reporter::report`]) lifts the
//! records out of the component and lowers them back in: a fifth more work per event.
//!
//! ```no_run
//! # use status_push_host::{Event, HostError, Reporter};
//! # async fn run(reporter: &mut Reporter, documents: &str) -> Result<(), HostError> {
//! let outcome = reporter.report_documents(Event::Finished, documents).await?;
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! Every call ends in a [`HostError`]: [`HostError::Config`] for a configuration the
//! component refused and [`HostError::Event`] for refused build documents (each names the
//! key or JSON path; nothing was sent), [`HostError::Push`] for a delivery that failed
//! (the WIT's `push-failure`: the last error, attempts, delivery id), and
//! [`HostError::Load`], [`HostError::Instantiate`], [`HostError::OutOfMemory`],
//! [`HostError::TimeBudget`], [`HostError::Trap`] for the component itself.
//! [`HostError::is_retryable`] says whether the same event may succeed later:
//!
//! ```no_run
//! # use status_push_host::{bindings::BuildEvent, Event, Reporter};
//! # async fn run(reporter: &mut Reporter, build: &BuildEvent) {
//! match reporter.report(Event::Finished, build).await {
//!     Ok(outcome) => println!("{outcome}"),
//!     Err(e) if e.is_retryable() => eprintln!("retry later: {e}"), // unreachable, 503, …
//!     Err(e) => eprintln!("giving up: {e}"),                        // 4xx, bad config, …
//! }
//! # }
//! ```
//!
//! # Limits and options
//!
//! [`Runtime::load_with`] takes [`RuntimeOptions`]: the [`Limits`] of each instance
//! (linear memory, the wall time of parse and configure calls, and the margin a report
//! call gets beyond the configuration's `retryDeadlineSeconds`), a directory where
//! compiled components are cached, and whether to use wasmtime's pooling allocator. A
//! component that exceeds a limit traps ([`HostError::Trap`]); the host and its other
//! instances carry on.
//!
//! ```no_run
//! use std::time::Duration;
//! use status_push_host::{HostError, Limits, Runtime, RuntimeOptions};
//!
//! # fn run() -> Result<(), HostError> {
//! let options = RuntimeOptions {
//!     limits: Limits { memory_bytes: 64 << 20, report_margin: Duration::from_secs(5), ..Limits::default() },
//!     cache_dir: RuntimeOptions::default_cache_dir(),
//!     ..RuntimeOptions::default()
//! };
//! let runtime = Runtime::load_with("target/status-push.wasm".as_ref(), &options)?;
//! # Ok(()) }
//! ```
//!
//! The component's stderr (its `debug` output) goes to `tracing` under the target
//! `status_push::guest`. A request to any origin other than `serverUrl`'s is refused by
//! the host, and the component reports it as the typed `denied` error.
//!
//! # The outbox (feature `outbox`, on by default)
//!
//! [`outbox::Outbox`] keeps events until they are delivered or dead, so a crash or an
//! outage loses none; events of one build are delivered in order. It lives in a SQLite
//! file (one machine) or a PostgreSQL database (`postgresql://…`, shared by several hosts,
//! each event attempted by one worker at a time). Without the feature the library has no
//! SQLite or PostgreSQL dependency.
//!
//! ```no_run
//! # #[cfg(feature = "outbox")]
//! # async fn run(runtime: &status_push_host::Runtime) -> Result<(), Box<dyn std::error::Error>> {
//! use status_push_host::outbox::{Location, Outbox, PushResult};
//! use status_push_host::Event;
//!
//! // Or Location::parse("postgresql://status@db.example.com/ci".as_ref())?
//! let outbox = Outbox::open(&Location::Sqlite("status.sqlite".into())).await?;
//! let config = r#"{"serverUrl": "https://hooks.example.com/ci"}"#;
//! let documents = std::fs::read_to_string("started.json")?;
//! match outbox.push(runtime, config, Event::Started, &documents).await? {
//!     PushResult::Done(outcome) => println!("{outcome}"),
//!     PushResult::Pending(why) => println!("kept for later: {why}"),
//!     PushResult::Dead(why) => println!("dead letter: {why}"),
//!     PushResult::Queued => println!("a running courier delivers it"),
//! }
//! // Later, or from another process: deliver whatever is still pending.
//! let summary = outbox.deliver(runtime, std::time::Duration::from_secs(60)).await?;
//! # Ok(()) }
//! ```
//!
//! # The relay
//!
//! [`relay::Relay`] hosts the relay world (`target/status-push-relay.wasm`), the same
//! component as an HTTP service for `wasi:http/proxy` runtimes: it answers
//! `POST /started` and `POST /finished` with the event's documents as the body. Bring
//! your own listener and hand each request to [`relay::Relay::handle`]; the sandbox is
//! the reporter's.
//!
//! ```no_run
//! use std::sync::Arc;
//! use status_push_host::relay::Relay;
//! use status_push_host::RuntimeOptions;
//!
//! # async fn run(request: hyper::Request<hyper::body::Incoming>) -> Result<(), status_push_host::HostError> {
//! let config = r#"{"serverUrl": "https://hooks.example.com/ci"}"#;
//! let relay = Arc::new(
//!     Relay::load("target/status-push-relay.wasm".as_ref(), &RuntimeOptions::default(), config).await?,
//! );
//! let response = relay.handle(request).await?; // in your hyper service
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod bindings;
mod cache;
mod client;
mod error;
pub mod files;
mod guest_log;
mod limits;
mod meter;
#[cfg(feature = "outbox")]
pub mod outbox;
mod outgoing;
mod policy;
pub mod relay;
mod reporter;
mod runtime;
mod sandbox;
mod store;

pub use bindings::{BuildEvent, Config, InputError, Outcome, PushError};
pub use error::HostError;
pub use limits::Limits;
pub use reporter::{Event, Reporter, UnknownEvent};
pub use runtime::{Runtime, RuntimeOptions, Wasi};
pub use status_push::documents::{CONFIG_KEYS, RELAY_ONLY_KEYS};
pub use status_push::secret::Secret;
