//! A loopback HTTP receiver that records every request: what `receive` and `demo` run,
//! and what the end-to-end tests push to.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use status_push::inbound::Inbound;
use status_push::secret::{is_secret_header, REDACTED};
use status_push::signature::Signer;
use status_push::SigningScheme;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers in arrival order, names lower-cased by HTTP/1 parsing.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes.
    pub body: Bytes,
    /// When it had fully arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request for a person: method, path, headers with credentials redacted, and the
    /// body as pretty JSON when it is JSON.
    pub fn describe(&self) -> String {
        let mut out = format!("{} {}\n", self.method, self.path);
        for (name, value) in &self.headers {
            let shown = if is_secret_header(name) {
                REDACTED
            } else {
                value.as_str()
            };
            out.push_str(&format!("{name}: {shown}\n"));
        }
        out.push('\n');
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(json) => out.push_str(&serde_json::to_string_pretty(&json).unwrap_or_default()),
            Err(_) => out.push_str(&String::from_utf8_lossy(&self.body)),
        }
        out.push('\n');
        out
    }
}

/// The receiver's answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra response headers, e.g. `Retry-After`.
    pub headers: Vec<(String, String)>,
}

impl From<u16> for Reply {
    fn from(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
        }
    }
}

/// How the receiver answers each request.
pub type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    arrived: Notify,
    respond: Responder,
}

/// A running receiver on 127.0.0.1; stopped when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1:port` (0 picks a free port) answering 200.
    pub async fn start(port: u16) -> std::io::Result<Receiver> {
        Receiver::start_with(port, Arc::new(|_: &Recorded| Reply::from(200))).await
    }

    /// Starts a receiver whose status code for each request comes from `respond`.
    pub async fn start_with(port: u16, respond: Responder) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            respond,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Receiver { addr, shared, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `n` requests arrived, or `timeout` passed; returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let requests = self.requests();
            if requests.len() >= n || tokio::time::Instant::now() >= deadline {
                return requests;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Waits for the next request after the first `seen`, forever.
    pub async fn next_after(&self, seen: usize) -> Recorded {
        loop {
            let notified = self.shared.arrived.notified();
            if let Some(r) = self.requests().get(seen) {
                return r.clone();
            }
            notified.await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let recorded = Recorded {
                        method: parts.method.to_string(),
                        path: parts
                            .uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "/".into()),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(n, v)| {
                                (
                                    n.to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect(),
                        body,
                        at: std::time::Instant::now(),
                    };
                    let reply = (shared.respond)(&recorded);
                    if let Ok(mut requests) = shared.requests.lock() {
                        requests.push(recorded);
                    }
                    shared.arrived.notify_waiters();
                    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
                        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                    for (name, value) in &reply.headers {
                        if let (Ok(name), Ok(value)) = (
                            hyper::header::HeaderName::from_bytes(name.as_bytes()),
                            hyper::header::HeaderValue::from_str(value),
                        ) {
                            response.headers_mut().append(name, value);
                        }
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Checks the signature of each request `receive` prints: Standard Webhooks (a `whsec_`
/// key; the timestamp must be within ±5 minutes) or GitHub (`X-Hub-Signature-256`). The
/// component's own code, natively; comparisons in constant time.
#[derive(Debug, Default)]
pub struct Verifier {
    standard: Option<Inbound>,
    github: Option<Signer>,
}

impl Verifier {
    /// A verifier for either key or both; the error says which is malformed.
    pub fn new(whsec: Option<&str>, github: Option<&str>) -> Result<Verifier, String> {
        let standard = whsec
            .map(|key| Inbound::new(None, Some(key)))
            .transpose()
            .map_err(|(_, why)| format!("--verify-secret: {why}"))?;
        let github = github
            .map(|key| Signer::new(SigningScheme::Github, key))
            .transpose()
            .map_err(|why| format!("--github-secret: {why}"))?;
        Ok(Verifier { standard, github })
    }

    /// One line per configured scheme, `signature: verified (…)` or
    /// `signature: does not verify (…): why`; `None` when no key was given.
    pub fn check(&self, request: &Recorded) -> Option<String> {
        let mut lines = Vec::new();
        if let Some(inbound) = &self.standard {
            let header = |name: &str| request.header(name).map(str::to_string);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            lines.push(match inbound.check(&header, &request.body, now) {
                Ok(_) => "signature: verified (Standard Webhooks)".to_string(),
                Err(refusal) => {
                    format!("signature: does not verify (Standard Webhooks): {refusal}")
                }
            });
        }
        if let Some(signer) = &self.github {
            lines.push(match request.header("x-hub-signature-256") {
                Some(header) if signer.verifies_github(&request.body, header) => {
                    "signature: verified (GitHub)".to_string()
                }
                Some(_) => "signature: does not verify (GitHub): X-Hub-Signature-256 does not match the body".to_string(),
                None => "signature: does not verify (GitHub): no X-Hub-Signature-256 header".to_string(),
            });
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}
