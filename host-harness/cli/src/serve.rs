//! `status-push serve`: HTTP/1 connections on a listener, each request checked by the
//! host before anything else sees it, then either relayed to the relay component (which
//! pushes and answers delivered, retry or give up) or, with an outbox, authenticated,
//! validated and queued durably (202), to be delivered by the [`crate::courier`].
//!
//! Every request gets a status, whatever it sends: 404/405/415 for a wrong path, method
//! or content type, 413 for a body over the limit (refused from `Content-Length` before
//! reading, and the rest drained so the answer is not lost to a reset), 408 for a body
//! that stalls, 503 with `Retry-After` beyond `max_concurrent` requests, 401 for a caller
//! who is not authenticated or replays a `webhook-id`, 400 for documents that do not
//! parse, and 500 (JSON) if the component traps.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use status_push::inbound::{Caller, Inbound};
use status_push::relay_api::{self, Refusal};
use status_push::EventKind;
use status_push_host::outbox::{Accepted, Outbox, OutboxError};
use status_push_host::relay::{BodyError, Relay, RelayBody};
use status_push_host::Event;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::courier::Courier;
use crate::metrics::{self, Metrics};

/// A body over the limit is read and thrown away up to this many bytes (so the client
/// sees the 413 rather than a reset), then the connection is closed.
const DRAIN_LIMIT: u64 = 256 << 20;

/// Accepted events whose acceptance time is kept (for the latency histogram) before old
/// ones are forgotten; settled events leave at once.
const ACCEPTED_KEPT: usize = 10_000;
/// How long an accepted event's time is kept when another host may deliver it.
const ACCEPTED_FOR: Duration = Duration::from_secs(600);

/// How the host treats requests.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests handled at once; more get 503 with `Retry-After`.
    pub max_concurrent: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_timeout: Duration,
    /// At shutdown, time in-flight requests (and deliveries) have to finish.
    pub grace: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_concurrent: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(10),
        }
    }
}

/// Why a [`Service`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A key of the configuration is unusable (e.g. a short `inboundToken`).
    #[error("invalid configuration: {key}: {message}")]
    Config {
        /// The key.
        key: String,
        /// What it expects.
        message: String,
    },
}

/// What `serve --outbox` keeps to queue events.
struct Durable {
    outbox: Arc<Outbox>,
    /// `serverUrl` and `buildbotURL` as the component reads them: the delivery id's
    /// inputs.
    target_url: String,
    buildbot_url: String,
    wake: Arc<Notify>,
    accepted: Arc<Mutex<HashMap<i64, Instant>>>,
}

/// The relay service: the component, the host's checks, and (with an outbox) the queue.
pub struct Service {
    relay: Arc<Relay>,
    durable: Option<Durable>,
    inbound: Inbound,
    max_body_bytes: u64,
    options: Options,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    accepting: AtomicBool,
}

fn config_error(key: &str, message: impl Into<String>) -> ServeError {
    ServeError::Config {
        key: key.into(),
        message: message.into(),
    }
}

impl Service {
    /// A service over `relay`; with `outbox`, requests are queued there (202) and
    /// delivered by [`Service::courier`] rather than pushed while the caller waits.
    pub fn new(
        relay: Arc<Relay>,
        outbox: Option<Arc<Outbox>>,
        options: Options,
    ) -> Result<Service, ServeError> {
        let config = relay.config();
        // The same check the relay component makes, natively: one implementation.
        let inbound = Inbound::new(
            config.inbound_token.as_ref().map(|s| s.expose()),
            config.inbound_secret.as_ref().map(|s| s.expose()),
        )
        .map_err(|(key, message)| config_error(key, message))?;
        // The component's own reading of the configuration, natively, for what the host
        // must agree with it on: the body limit and the delivery id's inputs.
        let settings = status_push::documents::parse_json(relay.config_json())
            .and_then(|doc| status_push::documents::config_from_json(&doc))
            .and_then(status_push::config::Settings::from_config)
            .map_err(|e| config_error(&e.key, e.message))?;
        let durable = outbox.map(|outbox| Durable {
            outbox,
            target_url: settings.target.url(),
            buildbot_url: settings.payload.buildbot_url.clone(),
            wake: Arc::new(Notify::new()),
            accepted: Arc::new(Mutex::new(HashMap::new())),
        });
        Ok(Service {
            relay,
            durable,
            inbound,
            max_body_bytes: settings.max_body_bytes,
            permits: Arc::new(Semaphore::new(options.max_concurrent.max(1))),
            options,
            metrics: Arc::new(Metrics::default()),
            accepting: AtomicBool::new(true),
        })
    }

    /// Whether callers must authenticate (`inboundToken` or `inboundSecret`).
    pub fn is_authenticated(&self) -> bool {
        self.inbound.is_configured()
    }

    /// The background deliverer of the outbox, or `None` without an outbox.
    pub fn courier(&self) -> Option<Courier> {
        let durable = self.durable.as_ref()?;
        Some(Courier {
            outbox: durable.outbox.clone(),
            relay: self.relay.clone(),
            metrics: self.metrics.clone(),
            wake: durable.wake.clone(),
            accepted: durable.accepted.clone(),
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Answers one request; never fails, whatever the request.
    pub async fn respond(&self, request: Request<Incoming>) -> Response<RelayBody> {
        let response = self.route(request).await;
        self.metrics.answered(response.status().as_u16());
        if response.status().is_server_error() && response.status() != StatusCode::BAD_GATEWAY {
            tracing::warn!("serve: answered {}", response.status());
        }
        response
    }

    async fn route(&self, request: Request<Incoming>) -> Response<RelayBody> {
        match request.uri().path() {
            "/healthz" => return self.health(request.method()),
            "/metrics" => return self.metrics_page(request.method()).await,
            _ => {}
        }
        self.relay_request(request)
            .await
            .unwrap_or_else(|refusal| answer(refusal.answer()))
    }

    /// `/started` and `/finished`, checked in the order `relay_api` documents.
    async fn relay_request(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<RelayBody>, Refusal> {
        let kind = relay_api::route(request.uri().path()).ok_or(Refusal::NotFound)?;
        self.metrics.received.inc();
        relay_api::check_method(request.method().as_str())?;
        relay_api::check_content_type(request.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()))?;
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return Err(Refusal::Busy {
                in_progress: self.options.max_concurrent,
            });
        };
        let too_large = Refusal::TooLarge {
            max_body_bytes: self.max_body_bytes,
        };
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let (parts, body) = request.into_parts();
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            drain(body);
            return Err(too_large);
        }
        let body = match read_body(body, self.max_body_bytes, self.options.body_timeout).await {
            BodyRead::Complete(body) => body,
            BodyRead::TooLarge(rest) => {
                drain(rest);
                return Err(too_large);
            }
            BodyRead::TimedOut => {
                tracing::warn!(
                    "serve: a client sent its body too slowly (over {:?})",
                    self.options.body_timeout
                );
                return Err(Refusal::TooSlow {
                    seconds: self.options.body_timeout.as_secs(),
                });
            }
            BodyRead::Failed(why) => return Err(Refusal::Unreadable(why)),
        };
        match &self.durable {
            Some(durable) => self.accept(durable, kind, &parts.headers, body).await,
            None => Ok(self.relay_call(parts, body).await),
        }
    }

    fn health(&self, method: &Method) -> Response<RelayBody> {
        if method != Method::GET && method != Method::HEAD {
            return with_header(
                json_answer(405, json!({"error": "method not allowed: use GET"})),
                "allow",
                "GET",
            );
        }
        if self.accepting.load(Ordering::Relaxed) {
            json_answer(200, json!({"status": "ok"}))
        } else {
            json_answer(503, json!({"status": "shutting down"}))
        }
    }

    async fn metrics_page(&self, method: &Method) -> Response<RelayBody> {
        if method != Method::GET {
            return with_header(
                json_answer(405, json!({"error": "method not allowed: use GET"})),
                "allow",
                "GET",
            );
        }
        if let Some(durable) = &self.durable {
            match durable.outbox.counts().await {
                Ok(counts) => {
                    self.metrics.pending.set(counts.pending as i64);
                    self.metrics.dead_letters.set(counts.dead as i64);
                    self.metrics.open_circuits.set(counts.open_circuits as i64);
                    let age = counts
                        .oldest_pending_at
                        .map_or(0, |at| unix_now().saturating_sub(at.max(0) as u64));
                    self.metrics.oldest_pending_seconds.set(age as i64);
                }
                Err(e) => tracing::warn!("serve: cannot count the outbox: {e}"),
            }
        }
        let mut response = Response::new(full(Bytes::from(self.metrics.encode())));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        response
    }

    /// `--outbox`: authenticate, refuse replays, validate, queue, 202.
    async fn accept(
        &self,
        durable: &Durable,
        kind: EventKind,
        headers: &hyper::HeaderMap,
        body: Bytes,
    ) -> Result<Response<RelayBody>, Refusal> {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let webhook_id = match self.inbound.check(&header, &body, unix_now()) {
            Ok(Caller::Signed { id }) => Some(id),
            Ok(_) => None,
            Err(refusal) => return Err(Refusal::Unauthorized(refusal.to_string())),
        };
        let buildid = relay_api::event_documents(&body)?.0.build.buildid;
        let delivery_id = status_push::signature::delivery_id(
            &durable.target_url,
            &durable.buildbot_url,
            buildid,
            kind,
        );
        let build_key = format!("{}|{}", self.relay.config().buildbot_url, buildid);
        // `event_documents` read the body as UTF-8.
        let text = std::str::from_utf8(&body).unwrap_or_default();
        let queued = durable
            .outbox
            .accept(&Accepted {
                config_json: self.relay.config_json(),
                destination: &self.relay.config().server_url,
                event: Event::from(kind),
                documents_json: text,
                build_key: &build_key,
                dead_after: self.relay.dead_letter_after(),
                retention: self.relay.dead_letter_retention(),
                max_pending: self.relay.max_pending_events(),
                report_budget: self.relay.request_budget(),
                webhook_id: webhook_id.as_deref(),
            })
            .await;
        match queued {
            Ok(seq) => {
                if let Ok(mut accepted) = durable.accepted.lock() {
                    // Events another host delivers never settle here: forget old ones.
                    if accepted.len() >= ACCEPTED_KEPT {
                        accepted.retain(|_, at| at.elapsed() < ACCEPTED_FOR);
                    }
                    accepted.insert(seq, Instant::now());
                }
                durable.wake.notify_one();
                Ok(answer(relay_api::accepted(&delivery_id, seq)))
            }
            Err(OutboxError::Replayed(id)) => Err(Refusal::Unauthorized(format!(
                "replayed: webhook-id {id} was already accepted"
            ))),
            Err(OutboxError::Full { pending, .. }) => {
                tracing::warn!("serve: the outbox is full ({pending} events pending): 503");
                Err(Refusal::OutboxFull { pending })
            }
            Err(e) => {
                tracing::warn!("serve: cannot queue an event: {e}");
                Ok(json_answer(
                    500,
                    json!({"error": "the outbox could not store the event; retry"}),
                ))
            }
        }
    }

    /// Without an outbox: the relay component pushes while the caller waits.
    async fn relay_call(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> Response<RelayBody> {
        let request = Request::from_parts(
            parts,
            Full::new(body).map_err(|never: Infallible| -> BodyError { match never {} }),
        );
        let started = Instant::now();
        let budget = self.relay.request_budget() + Duration::from_secs(5);
        let answered = tokio::time::timeout(budget, async {
            let response = self
                .relay
                .handle(request)
                .await
                .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("the relay component's answer broke off: {e:?}"))?;
            Ok::<_, String>((parts, body.to_bytes()))
        })
        .await;
        match answered {
            Ok(Ok((parts, body))) => {
                self.count_relayed(&body, started.elapsed());
                Response::from_parts(parts, full(body))
            }
            Ok(Err(why)) => {
                tracing::warn!("serve: the relay component failed: {why}");
                self.metrics.failed("trap");
                json_answer(
                    500,
                    json!({"error": "the relay component failed", "message": why}),
                )
            }
            Err(_) => {
                tracing::warn!("serve: the relay component did not answer within {budget:?}");
                self.metrics.failed("trap");
                json_answer(
                    500,
                    json!({"error": format!("the relay component did not answer within {} s", budget.as_secs())}),
                )
            }
        }
    }

    /// Counts a relayed call from the component's JSON answer.
    fn count_relayed(&self, body: &[u8], took: Duration) {
        let Ok(answer) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let attempts = answer["attempts"].as_u64().unwrap_or(0);
        self.metrics.attempts.inc_by(attempts);
        match answer["outcome"].as_str() {
            Some("delivered" | "skipped") => {
                self.metrics.delivered.inc();
                self.metrics.latency.observe(took.as_secs_f64());
            }
            Some("failed") => self
                .metrics
                .failed(answer["error"]["kind"].as_str().unwrap_or("unknown")),
            _ => {}
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn full(body: Bytes) -> RelayBody {
    Full::new(body)
        .map_err(|never: Infallible| -> BodyError { match never {} })
        .boxed_unsync()
}

/// A response carrying one of `relay_api`'s answers.
fn answer(answer: relay_api::Answer) -> Response<RelayBody> {
    let mut response = json_answer(answer.status, answer.body);
    for (name, value) in answer.headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A JSON response of the host's own: health, metrics, its own failures.
fn json_answer(status: u16, body: Value) -> Response<RelayBody> {
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn with_header(
    mut response: Response<RelayBody>,
    name: &'static str,
    value: &'static str,
) -> Response<RelayBody> {
    response
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
    response
}

/// How reading a body ended.
enum BodyRead {
    Complete(Bytes),
    /// Over the limit; the rest is still unread.
    TooLarge(Incoming),
    TimedOut,
    Failed(String),
}

async fn read_body(mut body: Incoming, max_bytes: u64, timeout: Duration) -> BodyRead {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut bytes = BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return BodyRead::TimedOut,
            Ok(None) => return BodyRead::Complete(bytes.freeze()),
            Ok(Some(Err(e))) => return BodyRead::Failed(e.to_string()),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if (bytes.len() + data.len()) as u64 > max_bytes {
                        return BodyRead::TooLarge(body);
                    }
                    bytes.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Reads and discards the rest of a refused body in the background, so the client,
/// still sending, reads the answer rather than a reset.
fn drain(mut body: Incoming) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let mut seen = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        })
        .await;
    });
}

/// Serves `listener` until `shutdown` completes; then stops accepting, lets requests in
/// flight finish within [`Options::grace`], and returns.
pub async fn serve(
    service: Arc<Service>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(service.clone(), stream, stopped.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept:
                    // keep serving the others.
                    tracing::warn!("serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    service.accepting.store(false, Ordering::Relaxed);
    drop(listener);
    let _ = stop.send(true);
    let grace = service.options.grace;
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            "serve: {} connection(s) still busy after {grace:?}: closed",
            connections.len()
        );
        connections.abort_all();
    }
    Ok(())
}

async fn connection(service: Arc<Service>, stream: TcpStream, mut stop: watch::Receiver<bool>) {
    let header_timeout = service.options.header_timeout;
    let handler = hyper::service::service_fn(move |request| {
        let service = service.clone();
        async move { Ok::<_, Infallible>(service.respond(request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), handler);
    tokio::pin!(connection);
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::select! {
        ended = connection.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!("serve: connection ended: {e}");
            }
        }
        () = stopping => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
