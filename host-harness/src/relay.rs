//! Hosts the relay world (`target/status-push-relay.wasm`) as a `wasi:http/proxy` runtime
//! would: each request gets a fresh instance whose `STATUS_PUSH_CONFIG` environment
//! variable holds the configuration, in the same sandbox as a [`crate::Reporter`] (one
//! origin, memory limit, deadline, TLS policy). The listener is the embedder's: hand each
//! request to [`Relay::handle`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::WasiHttpView;

use crate::client::Client;
use crate::policy::Policy;
use crate::runtime::{compile, instance_pre};
use crate::store::{new_store, Host};
use crate::{Config, HostError, Limits, Runtime, RuntimeOptions};

/// The environment variable the relay component reads its configuration from.
pub use status_push::relay_api::CONFIG_VARIABLE;

/// The body of a relay's response, streamed from the component.
pub type RelayBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The error a request body given to [`Relay::handle`] may end with.
pub type BodyError = wasmtime_wasi_http::Error;

/// A compiled relay component and the configuration it serves with.
pub struct Relay {
    proxy: ProxyPre<Host>,
    client: Arc<Client>,
    limits: Limits,
    config_json: String,
    config: Config,
    policy: Policy,
    runtime: Runtime,
}

impl Relay {
    /// Compiles the relay at `path` and derives the sandbox's policy from `config_json`
    /// (the seed's option names, as for `push`): the component's own `parse-config` reads
    /// it, so a configuration it refuses is [`HostError::Config`] here, before any request.
    pub async fn load(
        path: &Path,
        options: &RuntimeOptions,
        config_json: &str,
    ) -> Result<Relay, HostError> {
        let (engine, component) = compile(path, options)?;
        let pre = instance_pre(&engine, &component)?;
        let proxy = ProxyPre::new(pre.clone()).map_err(HostError::Instantiate)?;
        // The relay world exports the reporter's interfaces too: parse with them.
        let runtime = Runtime::from_instance_pre(pre, options.limits)?;
        let config = runtime.reporter().await?.parse_config(config_json).await?;
        let policy = Policy::from_config(&config, &options.limits, &runtime.client)?;
        Ok(Relay {
            proxy,
            client: runtime.client.clone(),
            limits: options.limits,
            config_json: config_json.to_string(),
            config,
            policy,
            runtime,
        })
    }

    /// The configuration, as the component's `parse-config` read it.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration as given to [`Relay::load`] (JSON, the seed's option names).
    pub fn config_json(&self) -> &str {
        &self.config_json
    }

    /// The relay component as a reporter (the relay world exports the reporter's
    /// interfaces too): what a host that queues events itself delivers them with.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// How long one request may keep an instance busy: the configuration's retry
    /// deadline plus [`Limits::report_margin`].
    pub fn request_budget(&self) -> Duration {
        self.policy.report_budget
    }

    /// Age after which an undelivered outbox event becomes a dead letter
    /// (`deadLetterAfterSeconds`).
    pub fn dead_letter_after(&self) -> Duration {
        self.policy.dead_letter_after
    }

    /// How long an outbox keeps this configuration's dead letters
    /// (`deadLetterRetentionDays`).
    pub fn dead_letter_retention(&self) -> Duration {
        self.policy.retention
    }

    /// The most events an outbox holds pending for this configuration
    /// (`maxPendingEvents`).
    pub fn max_pending_events(&self) -> u64 {
        self.policy.max_pending
    }

    /// Handles one request in a fresh instance and returns its response, whose body the
    /// component may still be writing. The body may be hyper's `Incoming` or one the
    /// embedder already read (`Full<Bytes>` mapped to [`BodyError`]).
    pub async fn handle<B>(
        &self,
        request: hyper::Request<B>,
    ) -> Result<hyper::Response<RelayBody>, HostError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BodyError>,
    {
        let mut store = new_store(
            self.proxy.engine(),
            self.client.clone(),
            &self.limits,
            Some((&self.policy.opening, self.policy.report_budget)),
            Some((CONFIG_VARIABLE, &self.config_json)),
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(HostError::Instantiate)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(HostError::Instantiate)?;
        let pre = self.proxy.clone();
        let task = tokio::spawn(async move {
            let proxy = pre
                .instantiate_async(&mut store)
                .await
                .map_err(HostError::Instantiate)?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(store, incoming, out)
                .await
                .map_err(HostError::Trap)
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(HostError::Trap(wasmtime::format_err!(
                "the relay component answered with an error: {code:?}"
            ))),
            Err(_) => match task.await {
                Ok(Err(e)) => Err(e),
                _ => Err(HostError::Trap(wasmtime::format_err!(
                    "the relay component gave no response"
                ))),
            },
        }
    }
}
