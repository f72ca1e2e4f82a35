//! Hosts the relay world (`target/status-push-relay.wasm`) as a `wasi:http/proxy` runtime
//! would: each request gets a fresh instance whose `STATUS_PUSH_CONFIG` environment
//! variable holds the configuration, in the same sandbox as a [`crate::Reporter`] (one
//! origin, memory limit, deadline, TLS policy). The listener is the embedder's: hand each
//! request to [`Relay::handle`].

use std::path::Path;
use std::sync::Arc;

use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::WasiHttpView;

use crate::client::Client;
use crate::policy::Policy;
use crate::runtime::{compile, instance_pre};
use crate::store::{new_store, Host};
use crate::{HostError, Limits, Runtime, RuntimeOptions};

/// The environment variable the relay component reads its configuration from.
pub const CONFIG_VARIABLE: &str = "STATUS_PUSH_CONFIG";

/// The body of a relay's response, streamed from the component.
pub type RelayBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A compiled relay component and the configuration it serves with.
pub struct Relay {
    proxy: ProxyPre<Host>,
    client: Arc<Client>,
    limits: Limits,
    config_json: String,
    policy: Policy,
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
            policy,
        })
    }

    /// Handles one request in a fresh instance and returns its response, whose body the
    /// component may still be writing.
    pub async fn handle(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<RelayBody>, HostError> {
        let mut store = new_store(
            self.proxy.engine(),
            self.client.clone(),
            &self.limits,
            Some(&self.policy),
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
