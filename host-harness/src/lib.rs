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
pub mod client;
mod error;
pub mod guest_log;
pub mod outbox;
pub mod receiver;
pub mod sandbox;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config as EngineConfig, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use bindings::{BuildEvent, Config, ConfigError, Outcome, PushError};
use client::{Client, TlsPolicy};
pub use error::HostError;
use sandbox::{Origin, OriginGuard};

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
}

impl Runtime {
    /// Compiles the component at `path`.
    pub fn load(path: &Path) -> Result<Runtime, HostError> {
        let load = |source| HostError::Load {
            path: path.to_path_buf(),
            source,
        };
        let bytes = std::fs::read(path).map_err(|e| load(e.into()))?;
        let engine = engine().map_err(load)?;
        let component = Component::new(&engine, &bytes).map_err(load)?;
        Runtime::from_component(&engine, &component)
    }

    fn from_component(engine: &Engine, component: &Component) -> Result<Runtime, HostError> {
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
        };
        let mut store = Store::new(self.pre.engine(), host);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(HostError::Instantiate)?;
        Ok(Reporter { store, instance })
    }
}

fn engine() -> wasmtime::Result<Engine> {
    Engine::new(&EngineConfig::new())
}

/// One component instance with its own configuration.
pub struct Reporter {
    store: Store<Host>,
    instance: bindings::ReporterExports,
}

impl Reporter {
    /// Parses a configuration object with the seed's option names, in the component.
    pub async fn parse_config(&mut self, json: &str) -> Result<Config, HostError> {
        let documents = self.instance.status_push_reporter_documents();
        documents
            .call_parse_config(&mut self.store, json)
            .await
            .map_err(HostError::Trap)?
            .map_err(HostError::Config)
    }

    /// Parses an event's data-API documents, in the component.
    pub async fn parse_event(&mut self, json: &str) -> Result<BuildEvent, HostError> {
        let documents = self.instance.status_push_reporter_documents();
        documents
            .call_parse_event(&mut self.store, json)
            .await
            .map_err(HostError::Trap)?
            .map_err(HostError::Config)
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
        let reporter = self.instance.status_push_reporter_reporter();
        reporter
            .call_configure(&mut self.store, &config)
            .await
            .map_err(HostError::Trap)?
            .map_err(HostError::Config)?;
        let guard = &mut self.store.data_mut().guard;
        guard.allowed = origin;
        guard.tls = tls;
        Ok(())
    }

    /// Reports one event; `Ok` is delivered or deliberately skipped.
    pub async fn report(&mut self, event: Event, build: &BuildEvent) -> Result<Outcome, HostError> {
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
