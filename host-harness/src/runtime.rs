//! Loading the component: the engine, its epoch ticker, the compile cache and the linker.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{
    Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use crate::bindings::ReporterExportsPre;
use crate::cache;
use crate::client::Client;
use crate::error::HostError;
use crate::files::FileError;
use crate::limits::Limits;
use crate::reporter::Reporter;
use crate::store::{new_store, Host, EPOCH_TICK};

/// How a [`Runtime`] is set up.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// What each instance may use.
    pub limits: Limits,
    /// Where compiled components are cached; `None` compiles every time. See
    /// [`RuntimeOptions::default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Reuse pre-reserved instance slots (wasmtime's pooling allocator): cheaper
    /// instantiation, at the cost of reserving address space up front.
    pub pooling: bool,
    /// Profiling only (`status-push-bench component --perf-map`, feature `bench`): name
    /// the compiled guest functions in `/tmp/perf-PID.map`, for `perf` and `valgrind`.
    #[cfg(feature = "bench")]
    #[doc(hidden)]
    pub perf_map: bool,
}

impl Default for RuntimeOptions {
    fn default() -> RuntimeOptions {
        RuntimeOptions {
            limits: Limits::default(),
            cache_dir: None,
            pooling: true,
            #[cfg(feature = "bench")]
            perf_map: false,
        }
    }
}

impl RuntimeOptions {
    /// The conventional cache directory: `$STATUS_PUSH_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/status-push`, else `~/.cache/status-push`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        cache::default_dir()
    }
}

/// Which WASI a component was built for, told apart by its imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wasi {
    /// WASI 0.2 (`target/status-push.wasm`, `target/status-push-relay.wasm`): the default
    /// build, which every runtime runs.
    P2,
    /// WASI 0.3 (`target/status-push-p3.wasm`, `target/status-push-relay-p3.wasm`): the
    /// reports are async exports, requests go through `wasi:http/client`. Run on an engine
    /// with the component model's concurrency; a 0.2 component is not, since that
    /// machinery would cost every call of it.
    P3,
}

impl Wasi {
    /// `p2` or `p3`, as the benchmark and the docs name the builds.
    pub fn as_str(self) -> &'static str {
        match self {
            Wasi::P2 => "p2",
            Wasi::P3 => "p3",
        }
    }

    /// The WASI a component's bytes were built for: 0.3 when it imports any `wasi:*@0.3`
    /// interface (our 0.3 builds still import `wasi:io@0.2.0` for streamed logs), else 0.2.
    pub(crate) fn of_component(bytes: &[u8]) -> wasmtime::Result<Wasi> {
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            if let wasmparser::Payload::ComponentImportSection(imports) = payload? {
                for import in imports {
                    let name = import?.name.name;
                    if name.starts_with("wasi:") && name.contains("@0.3") {
                        return Ok(Wasi::P3);
                    }
                }
            }
        }
        Ok(Wasi::P2)
    }
}

impl std::fmt::Display for Wasi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Concurrent instances a pooling runtime holds slots for.
const POOLED_INSTANCES: u32 = 256;

/// A compiled component, ready to instantiate many times. Cheap to share (`Sync`).
pub struct Runtime {
    pre: ReporterExportsPre<Host>,
    pub(crate) client: Arc<Client>,
    limits: Limits,
    wasi: Wasi,
}

impl Runtime {
    /// Compiles the component at `path`, with the default [`RuntimeOptions`].
    pub fn load(path: &Path) -> Result<Runtime, HostError> {
        Runtime::load_with(path, &RuntimeOptions::default())
    }

    /// Compiles (or loads from the cache) the component at `path`.
    pub fn load_with(path: &Path, options: &RuntimeOptions) -> Result<Runtime, HostError> {
        let (engine, component, wasi) = compile(path, options)?;
        Runtime::from_instance_pre(
            instance_pre(&engine, &component, wasi)?,
            options.limits,
            wasi,
        )
    }

    /// Which WASI the component was built for.
    pub fn wasi(&self) -> Wasi {
        self.wasi
    }

    /// A runtime over a linked component that exports the reporter's interfaces (the
    /// `status-push` world, or the relay world, which exports them too). The 0.3 worlds'
    /// reports are `async func`s of the same types: the generated 0.2 bindings call them
    /// (`call_async` runs an async export on a store with concurrency).
    pub(crate) fn from_instance_pre(
        pre: InstancePre<Host>,
        limits: Limits,
        wasi: Wasi,
    ) -> Result<Runtime, HostError> {
        Ok(Runtime {
            pre: ReporterExportsPre::new(pre).map_err(HostError::Instantiate)?,
            client: Arc::new(Client::default()),
            limits,
            wasi,
        })
    }

    /// A new instance configured from the seed's JSON options: the one way every caller
    /// that holds its configuration as JSON (the CLI, the outbox, the bindings) gets one.
    pub async fn configured_reporter(&self, config_json: &str) -> Result<Reporter, HostError> {
        let mut reporter = self.reporter().await?;
        reporter.configure_json(config_json).await?;
        Ok(reporter)
    }

    /// A fresh, unconfigured instance: it can parse, and reaches no network until
    /// [`Reporter::configure`].
    pub async fn reporter(&self) -> Result<Reporter, HostError> {
        let mut store = new_store(
            self.pre.engine(),
            self.client.clone(),
            &self.limits,
            None,
            None,
        );
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(HostError::Instantiate)?;
        Ok(Reporter::new(
            store,
            instance,
            self.limits,
            self.client.clone(),
        ))
    }
}

/// Hooks for `status-push-bench` only (feature `bench`); not part of the API.
#[cfg(feature = "bench")]
impl Runtime {
    /// Answers every request the sandbox lets through with `200 {}` from the host itself
    /// (the body is read first), without a socket: everything but the network.
    #[doc(hidden)]
    pub fn with_canned_responses(mut self) -> Runtime {
        self.client = Arc::new(Client::canned());
        self
    }

    /// Sends `request` (an absolute `http` URL) through the connection pool the sandbox
    /// uses, reads the response, and gives its status: the native baseline's transport.
    #[doc(hidden)]
    pub async fn send_natively(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<u16, wasmtime_wasi_http::Error> {
        use http_body_util::BodyExt;
        let request = request.map(|body| {
            http_body_util::Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync()
        });
        let tls = crate::client::TlsPolicy::verified(None);
        let response = self.client.clone().send(request, None, tls).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// The component, linked against WASI (with `wasi:cli/environment`, which only the relay
/// imports) and wasi:http. A 0.2 component gets wasi:http 0.2, whose
/// `outgoing-handler.handle` is ours ([`crate::outgoing`]); a 0.3 one gets WASI and
/// wasi:http 0.3, whose `client.send` needs no such replacement (it sends within the
/// guest's call, through the same sandbox hook), and WASI 0.2's `wasi:io`, which carries
/// its streamed logs.
pub(crate) fn instance_pre(
    engine: &Engine,
    component: &Component,
    wasi: Wasi,
) -> Result<InstancePre<Host>, HostError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(HostError::Instantiate)?;
    match wasi {
        Wasi::P2 => {
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
                .map_err(HostError::Instantiate)?;
            crate::outgoing::add_to_linker(&mut linker).map_err(HostError::Instantiate)?;
        }
        Wasi::P3 => {
            wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(HostError::Instantiate)?;
            wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(HostError::Instantiate)?;
        }
    }
    linker
        .instantiate_pre(component)
        .map_err(HostError::Instantiate)
}

/// An engine for `options` (its epoch ticking) and the component at `path`, compiled or
/// from the cache, and which WASI it was built for.
pub(crate) fn compile(
    path: &Path,
    options: &RuntimeOptions,
) -> Result<(Engine, Component, Wasi), HostError> {
    let load = |source| HostError::Load {
        path: path.to_path_buf(),
        source,
    };
    let bytes = read_component(path).map_err(load)?;
    let wasi = Wasi::of_component(&bytes).map_err(load)?;
    let engine = engine(options, wasi).map_err(load)?;
    let component = match &options.cache_dir {
        Some(dir) => cache::load_or_compile(dir, &engine, &bytes),
        None => Component::new(&engine, &bytes),
    }
    .map_err(load)?;
    start_epoch_ticker(&engine);
    Ok((engine, component, wasi))
}

fn engine(options: &RuntimeOptions, wasi: Wasi) -> wasmtime::Result<Engine> {
    let mut config = EngineConfig::new();
    // Off for 0.2: with it, every call goes through the concurrent call machinery.
    config.concurrency_support(wasi == Wasi::P3);
    // Lets the host stop a component that loops, whatever it is doing.
    config.epoch_interruption(true);
    #[cfg(feature = "bench")]
    if options.perf_map {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
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

/// The largest component file read; ours is about 1 MiB.
const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// Reads a component file: a regular file of at most [`MAX_COMPONENT_BYTES`].
fn read_component(path: &Path) -> wasmtime::Result<Vec<u8>> {
    crate::files::read_capped(path, MAX_COMPONENT_BYTES).map_err(|e| match e {
        FileError::NotRegular(_) => {
            wasmtime::format_err!("{e}: give the .wasm that `cargo xtask wasm` builds")
        }
        e => e.into(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::bindings::PushError;
    use crate::client::TlsPolicy;
    use crate::reporter::Event;
    use crate::sandbox::{Opening, Origin};

    /// Both builds' requests pass the same sandbox hook (0.2's `handle`, 0.3's
    /// `client.send`): outside the opened origin a request is refused as a permanent
    /// `denied`, and nothing connects.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn either_build_is_refused_outside_the_opened_origin() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let documents = std::fs::read_to_string(root.join("host-harness/cli/demo/started.json"))
            .expect("the demo build");
        for wasm in ["status-push.wasm", "status-push-p3.wasm"] {
            let runtime = Runtime::load(&root.join("target").join(wasm))
                .expect("run `cargo xtask wasm` first");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let url = format!("http://{}/hook", listener.local_addr().unwrap());
            let mut reporter = runtime
                .configured_reporter(&format!(r#"{{"serverUrl": "{url}"}}"#))
                .await
                .unwrap();
            // Opened elsewhere: the configured server is now outside the sandbox.
            reporter.store_mut().data_mut().open(&Opening {
                origin: Origin::of_url("http://127.0.0.1:9/"),
                tls: TlsPolicy::verified(None),
            });
            let outcome = reporter.report_json(Event::Started, &documents).await;
            assert!(
                matches!(&outcome, Err(HostError::Push(f))
                    if matches!(f.error, PushError::Denied(_)) && !f.retryable),
                "{wasm}: {outcome:?}"
            );
            assert!(
                listener.accept().is_err(),
                "{wasm}: a refused request connected"
            );
        }
    }
}
