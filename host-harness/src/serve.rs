//! Hosts the relay world (`target/status-push-relay.wasm`) behind an HTTP listener, as a
//! `wasi:http/proxy` runtime would: each request gets a fresh instance whose
//! `STATUS_PUSH_CONFIG` environment variable holds the configuration, in the same sandbox
//! as the reporter (one origin, memory limit, deadline, TLS policy).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use tokio::net::TcpListener;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::client::{Client, TlsPolicy};
use crate::meter::MemoryMeter;
use crate::sandbox::{Origin, OriginGuard};
use crate::{compile, ticks, ConfigError, Host, HostError, Limits, RuntimeOptions};

/// The environment variable the relay component reads its configuration from.
pub const CONFIG_VARIABLE: &str = "STATUS_PUSH_CONFIG";

/// A compiled relay component and the configuration it serves with.
pub struct Relay {
    pre: ProxyPre<Host>,
    client: Arc<Client>,
    limits: Limits,
    config_json: String,
    origin: Option<Origin>,
    tls: TlsPolicy,
    budget: Duration,
}

fn config_error(key: &str, message: String) -> HostError {
    HostError::Config(ConfigError {
        key: key.into(),
        message,
    })
}

impl Relay {
    /// Compiles the relay at `path`. The host reads `serverUrl`, `verify`, `caFile` and
    /// `retryDeadlineSeconds` from `config_json` itself: they are the sandbox's to enforce.
    pub fn load(
        path: &Path,
        options: &RuntimeOptions,
        config_json: &str,
    ) -> Result<Relay, HostError> {
        let config: serde_json::Value = serde_json::from_str(config_json)
            .map_err(|e| config_error("", format!("not JSON: {e}")))?;
        let server_url = config["serverUrl"]
            .as_str()
            .ok_or_else(|| config_error("serverUrl", "is missing".into()))?;
        let tls = if config["verify"].as_bool().unwrap_or(true) {
            TlsPolicy::Verify {
                ca_file: config["caFile"].as_str().map(PathBuf::from),
            }
        } else {
            TlsPolicy::Insecure
        };
        let client = Arc::new(Client::default());
        client
            .tls_config(&tls)
            .map_err(|e| config_error("caFile", e.to_string()))?;
        let deadline = config["retryDeadlineSeconds"]
            .as_f64()
            .unwrap_or(30.0)
            .clamp(0.0, 86_400.0);
        let (engine, component) = compile(path, options)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(HostError::Instantiate)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(HostError::Instantiate)?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(ProxyPre::new)
            .map_err(HostError::Instantiate)?;
        Ok(Relay {
            pre,
            client,
            limits: options.limits,
            config_json: config_json.to_string(),
            origin: Origin::of_url(server_url),
            tls,
            budget: Duration::from_secs_f64(deadline) + options.limits.report_margin,
        })
    }

    /// Serves requests from `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let relay = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let relay = relay.clone();
                    async move { relay.handle(request).await }
                });
                if let Err(e) = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("relay connection ended: {e}");
                }
            });
        }
    }

    async fn handle(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let wasi = WasiCtx::builder()
            .env(CONFIG_VARIABLE, &self.config_json)
            .stderr(crate::guest_log::GuestLog)
            .build();
        let host = Host {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            guard: OriginGuard {
                allowed: self.origin.clone(),
                tls: self.tls.clone(),
                client: self.client.clone(),
            },
            meter: MemoryMeter::new(self.limits.memory_bytes),
        };
        let mut store = Store::new(self.pre.engine(), host);
        store.limiter(|host| &mut host.meter);
        store.set_epoch_deadline(ticks(self.budget));
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(store, incoming, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(code.into()),
            Err(_) => match task.await {
                Ok(Err(e)) => Err(e),
                _ => Err(wasmtime::format_err!(
                    "the relay component gave no response"
                )),
            },
        }
    }
}
