//! Hosts the relay world (`target/status-push-relay.wasm`, or its WASI 0.3 build
//! `target/status-push-relay-p3.wasm`) as a `wasi:http/proxy` (or `wasi:http/service`)
//! runtime would: each request gets a fresh instance whose `STATUS_PUSH_CONFIG` environment
//! variable holds the configuration, in the same sandbox as a [`crate::Reporter`] (one
//! origin, memory limit, deadline, TLS policy). The listener is the embedder's: hand each
//! request to [`Relay::handle`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::WasiHttpView;

use crate::client::Client;
use crate::policy::Policy;
use crate::runtime::{compile, instance_pre, Wasi};
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
    handler: Handler,
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
        let (engine, component, wasi) = compile(path, options)?;
        let pre = instance_pre(&engine, &component, wasi)?;
        let handler = match wasi {
            Wasi::P2 => Handler::P2(ProxyPre::new(pre.clone()).map_err(HostError::Instantiate)?),
            Wasi::P3 => Handler::P3(ServicePre::new(pre.clone()).map_err(HostError::Instantiate)?),
        };
        // The relay world exports the reporter's interfaces too: parse with them.
        let runtime = Runtime::from_instance_pre(pre, options.limits, wasi)?;
        let config = runtime.reporter().await?.parse_config(config_json).await?;
        let policy = Policy::from_config(&config, &options.limits, &runtime.client)?;
        Ok(Relay {
            handler,
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
        let engine = match &self.handler {
            Handler::P2(pre) => pre.engine(),
            Handler::P3(pre) => pre.engine(),
        };
        let store = new_store(
            engine,
            self.client.clone(),
            &self.limits,
            Some((&self.policy.opening, self.policy.report_budget)),
            Some((CONFIG_VARIABLE, &self.config_json)),
        );
        match &self.handler {
            Handler::P2(pre) => handle_p2(pre.clone(), store, request).await,
            Handler::P3(pre) => handle_p3(pre.clone(), store, request).await,
        }
    }
}

/// The relay's `wasi:http` export: `incoming-handler` (0.2) or `handler` (0.3).
enum Handler {
    P2(ProxyPre<Host>),
    P3(ServicePre<Host>),
}

/// One request through `wasi:http/incoming-handler@0.2`: the response arrives through
/// its outparam, while the instance's task may still be writing the body.
async fn handle_p2<B>(
    pre: ProxyPre<Host>,
    mut store: Store<Host>,
    request: hyper::Request<B>,
) -> Result<hyper::Response<RelayBody>, HostError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BodyError>,
{
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

/// One request through `wasi:http/handler@0.3`: the instance's task keeps the store's
/// event loop running until the response body is read to its end (or dropped), since the
/// component writes that body after returning the response.
async fn handle_p3<B>(
    pre: ServicePre<Host>,
    mut store: Store<Host>,
    request: hyper::Request<B>,
) -> Result<hyper::Response<RelayBody>, HostError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BodyError>,
{
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let service = pre
            .instantiate_async(&mut store)
            .await
            .map_err(HostError::Instantiate)?;
        store
            .run_concurrent(async move |accessor| {
                let (request, request_io) = accessor.with(|mut access| {
                    let (request, io) = wasmtime_wasi_http::p3::Request::from_http(
                        access.get().http().hooks,
                        request,
                    );
                    // Boxed: the future is `'static`, but its type names the hooks' borrow.
                    let io: RequestIo = Box::pin(io);
                    (request, io)
                });
                let response = match service.handle(accessor, request).await? {
                    Ok(response) => response,
                    Err(code) => {
                        wasmtime::bail!("the relay component answered with an error: {code:?}")
                    }
                };
                let response =
                    accessor.with(|mut access| response.into_http(&mut access, request_io))?;
                let (read, done) = tokio::sync::oneshot::channel();
                let response = response.map(|body| {
                    Watched {
                        body,
                        done: Some(read),
                    }
                    .boxed_unsync()
                });
                if sender.send(response).is_ok() {
                    // Whether read to its end or dropped, the body needs the store no more.
                    let _ = done.await;
                }
                Ok(())
            })
            .await
            .and_then(|handled| handled)
            .map_err(HostError::Trap)
    });
    match receiver.await {
        Ok(response) => Ok(response),
        Err(_) => match task.await {
            Ok(Err(e)) => Err(e),
            _ => Err(HostError::Trap(wasmtime::format_err!(
                "the relay component gave no response"
            ))),
        },
    }
}

/// What becomes of the request's body, as wasmtime-wasi-http reports it.
type RequestIo = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
>;

/// A response body that says when it is done with: read to its end, or dropped.
struct Watched<B> {
    body: B,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.done.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
