//! Wasmtime host for the status-push component.
//!
//! Load the component once with [`Runtime::load`], make a [`Reporter`] per configuration,
//! then report events:
//!
//! ```no_run
//! # async fn run() -> Result<(), status_push_host::HostError> {
//! use status_push_host::{Event, Runtime};
//! let runtime = Runtime::load("target/status-push.wasm".as_ref())?;
//! let mut reporter = runtime.reporter().await?;
//! let config = reporter.parse_config(r#"{"serverUrl": "http://127.0.0.1:8010/hook"}"#).await?;
//! reporter.configure(config).await?;
//! let event = reporter.parse_event(&std::fs::read_to_string("started.json").unwrap()).await?;
//! let outcome = reporter.report(Event::Started, &event).await?;
//! println!("{outcome}");
//! # Ok(()) }
//! ```

pub mod bindings;
pub mod cache;
pub mod client;
mod error;
pub mod guest_log;
pub mod meter;
pub mod outbox;
pub mod receiver;
pub mod sandbox;
pub mod serve;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use bindings::{BuildEvent, Config, ConfigError, Outcome, PushError};
use client::{Client, TlsPolicy};
pub use error::HostError;
use meter::MemoryMeter;
use sandbox::{Origin, OriginGuard};

/// The component's retry deadline when the configuration gives none (see the WIT).
const DEFAULT_RETRY_DEADLINE_MS: u32 = 30_000;

/// Which reporter call an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Event {
    /// `on-build-started`.
    Started,
    /// `on-build-finished`.
    Finished,
}

/// Per-instance host state: WASI with no files, environment or arguments; wasi:http
/// through the origin guard.
struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    guard: OriginGuard,
    meter: MemoryMeter,
}

/// What one instance may use. A component that exceeds them traps, and the call ends in
/// [`HostError::Trap`]; the host and its other instances carry on.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory_bytes: usize,
    /// Wall time for `parse-*` and `configure` calls.
    pub parse_budget: Duration,
    /// Wall time a report call may take beyond the configuration's own retry deadline.
    pub report_margin: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 128 << 20,
            parse_budget: Duration::from_secs(10),
            report_margin: Duration::from_secs(10),
        }
    }
}

/// How a [`Runtime`] is set up.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// What each instance may use.
    pub limits: Limits,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Reuse pre-reserved instance slots (wasmtime's pooling allocator): cheaper
    /// instantiation, at the cost of reserving address space up front.
    pub pooling: bool,
}

impl Default for RuntimeOptions {
    fn default() -> RuntimeOptions {
        RuntimeOptions {
            limits: Limits::default(),
            cache_dir: None,
            pooling: true,
        }
    }
}

/// Concurrent instances a pooling runtime holds slots for.
const POOLED_INSTANCES: u32 = 256;

/// How often the engine's epoch advances; call budgets are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

fn ticks(budget: Duration) -> u64 {
    (budget.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("status-push-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .ok();
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.guard,
        }
    }
}

/// A compiled component, ready to instantiate many times. Cheap to share (`Sync`).
pub struct Runtime {
    pre: bindings::ReporterExportsPre<Host>,
    client: Arc<Client>,
    limits: Limits,
}

impl Runtime {
    /// Compiles the component at `path`, with the default [`RuntimeOptions`].
    pub fn load(path: &Path) -> Result<Runtime, HostError> {
        Runtime::load_with(path, &RuntimeOptions::default())
    }

    /// Compiles (or loads from the cache) the component at `path`.
    pub fn load_with(path: &Path, options: &RuntimeOptions) -> Result<Runtime, HostError> {
        let (engine, component) = compile(path, options)?;
        Runtime::from_component(&engine, &component, options.limits)
    }

    fn from_component(
        engine: &Engine,
        component: &Component,
        limits: Limits,
    ) -> Result<Runtime, HostError> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(HostError::Instantiate)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(HostError::Instantiate)?;
        let pre = linker
            .instantiate_pre(component)
            .and_then(bindings::ReporterExportsPre::new)
            .map_err(HostError::Instantiate)?;
        Ok(Runtime {
            pre,
            client: Arc::new(Client::default()),
            limits,
        })
    }

    /// A fresh, unconfigured instance.
    pub async fn reporter(&self) -> Result<Reporter, HostError> {
        let wasi = WasiCtx::builder().stderr(guest_log::GuestLog).build();
        let host = Host {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            guard: OriginGuard {
                allowed: None,
                tls: TlsPolicy::Verify { ca_file: None },
                client: self.client.clone(),
            },
            meter: MemoryMeter::new(self.limits.memory_bytes),
        };
        let mut store = Store::new(self.pre.engine(), host);
        store.limiter(|host| &mut host.meter);
        store.set_epoch_deadline(ticks(self.limits.parse_budget));
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(HostError::Instantiate)?;
        Ok(Reporter {
            store,
            instance,
            limits: self.limits,
            report_budget: self.limits.parse_budget,
        })
    }
}

/// An engine for `options` (its epoch ticking) and the component at `path`, compiled or
/// from the cache.
fn compile(path: &Path, options: &RuntimeOptions) -> Result<(Engine, Component), HostError> {
    let load = |source| HostError::Load {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|e| load(e.into()))?;
    let engine = engine(options).map_err(load)?;
    let component = match &options.cache_dir {
        Some(dir) => cache::load_or_compile(dir, &engine, &bytes),
        None => Component::new(&engine, &bytes),
    }
    .map_err(load)?;
    start_epoch_ticker(&engine);
    Ok((engine, component))
}

fn engine(options: &RuntimeOptions) -> wasmtime::Result<Engine> {
    let mut config = EngineConfig::new();
    // Lets the host stop a component that loops, whatever it is doing.
    config.epoch_interruption(true);
    if options.pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOLED_INSTANCES)
            .total_core_instances(POOLED_INSTANCES * 4)
            .total_memories(POOLED_INSTANCES * 2)
            .total_tables(POOLED_INSTANCES * 4)
            .total_stacks(POOLED_INSTANCES)
            .max_core_instances_per_component(16)
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_memory_size(options.limits.memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config)
}

/// `(step, log, path)` of every log that names a `content_file` and has no `content`.
fn content_files(json: &str) -> Vec<(usize, usize, PathBuf)> {
    if !json.contains("\"content_file\"") {
        return vec![];
    }
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(json) else {
        return vec![];
    };
    let steps = doc["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut files = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let logs = step["logs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (j, log) in logs.iter().enumerate() {
            if let (Some(path), None) = (log["content_file"].as_str(), log.get("content")) {
                files.push((i, j, PathBuf::from(path)));
            }
        }
    }
    files
}

/// One component instance with its own configuration.
pub struct Reporter {
    store: Store<Host>,
    instance: bindings::ReporterExports,
    limits: Limits,
    /// Wall time a report call may take, from the configuration's retry deadline.
    report_budget: Duration,
}

impl Reporter {
    fn budget(&mut self, budget: Duration) {
        self.store.set_epoch_deadline(ticks(budget));
    }

    /// Parses a configuration object with the seed's option names, in the component.
    pub async fn parse_config(&mut self, json: &str) -> Result<Config, HostError> {
        self.budget(self.limits.parse_budget);
        let documents = self.instance.status_push_reporter_documents();
        documents
            .call_parse_config(&mut self.store, json)
            .await
            .map_err(HostError::Trap)?
            .map_err(HostError::Config)
    }

    /// Parses an event's data-API documents, in the component. A log may give
    /// `content_file: PATH` instead of `content`: its text is then streamed from that
    /// file while the request is written, never held whole in memory.
    pub async fn parse_event(&mut self, json: &str) -> Result<BuildEvent, HostError> {
        self.budget(self.limits.parse_budget);
        let documents = self.instance.status_push_reporter_documents();
        let mut event = documents
            .call_parse_event(&mut self.store, json)
            .await
            .map_err(HostError::Trap)?
            .map_err(HostError::Config)?;
        for (step, log, path) in content_files(json) {
            let file = std::fs::File::open(&path).map_err(|e| {
                HostError::Config(bindings::ConfigError {
                    key: format!("steps[{step}].logs[{log}].content_file"),
                    message: format!("cannot open {}: {e}", path.display()),
                })
            })?;
            let stream: wasmtime_wasi::p2::DynInputStream = Box::new(
                wasmtime_wasi::p2::pipe::AsyncReadStream::new(tokio::fs::File::from_std(file)),
            );
            let handle = self
                .store
                .data_mut()
                .table
                .push(stream)
                .map_err(|e| HostError::Instantiate(e.into()))?;
            if let Some(entry) = event.steps.get_mut(step).and_then(|s| s.logs.get_mut(log)) {
                entry.content = Some(bindings::LogContent::Stream(handle));
            }
        }
        Ok(event)
    }

    /// The most linear memory this instance has used so far, in bytes.
    pub fn peak_memory(&self) -> usize {
        self.store.data().meter.peak()
    }

    /// Configures the instance and opens the sandbox to the origin of `server-url` only,
    /// with the TLS policy of `verify` and `ca-file`.
    pub async fn configure(&mut self, config: Config) -> Result<(), HostError> {
        let origin = Origin::of_url(&config.server_url);
        let tls = if config.verify {
            TlsPolicy::Verify {
                ca_file: config.ca_file.as_ref().map(PathBuf::from),
            }
        } else {
            TlsPolicy::Insecure
        };
        // Check the CA file now, so a bad one is a configuration error, not a failed push.
        let client = self.store.data().guard.client.clone();
        client.tls_config(&tls).map_err(|e| {
            HostError::Config(bindings::ConfigError {
                key: "caFile".into(),
                message: e.to_string(),
            })
        })?;
        let deadline_ms = config
            .retry_deadline_ms
            .unwrap_or(DEFAULT_RETRY_DEADLINE_MS);
        self.budget(self.limits.parse_budget);
        let reporter = self.instance.status_push_reporter_reporter();
        reporter
            .call_configure(&mut self.store, &config)
            .await
            .map_err(HostError::Trap)?
            .map_err(HostError::Config)?;
        let guard = &mut self.store.data_mut().guard;
        guard.allowed = origin;
        guard.tls = tls;
        self.report_budget =
            Duration::from_millis(u64::from(deadline_ms)) + self.limits.report_margin;
        Ok(())
    }

    /// Reports one event; `Ok` is delivered or deliberately skipped.
    pub async fn report(&mut self, event: Event, build: &BuildEvent) -> Result<Outcome, HostError> {
        self.budget(self.report_budget);
        let reporter = self.instance.status_push_reporter_reporter();
        let result = match event {
            Event::Started => reporter.call_on_build_started(&mut self.store, build).await,
            Event::Finished => {
                reporter
                    .call_on_build_finished(&mut self.store, build)
                    .await
            }
        };
        result.map_err(HostError::Trap)?.map_err(HostError::Push)
    }
}
