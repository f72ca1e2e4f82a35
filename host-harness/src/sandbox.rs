//! The component's network sandbox: it may reach only the origin (scheme, host, port) of
//! its configured `server-url`. Anything else is refused with `HttpRequestDenied`, which
//! the component reports as a typed `denied` error. What passes goes through the shared
//! [`Client`] with the instance's TLS policy.

use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::client::{Client, TlsPolicy};

type Sent = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

/// The largest body read whole before its request is sent (when its `Content-Length`
/// says how large it is).
///
/// Why: a WASI 0.3 guest writes its body into a stream after `client.send` has begun, and
/// the host reads it as it goes. Handed to hyper as it is, that stream was read by the
/// connection's task on another worker, each piece a wake-up across threads; read here,
/// in the guest's own call, the pooled client gets it whole, as the 0.2 build's finished
/// bodies ([`crate::outgoing`]). A larger body (a streamed log) is sent as it is written.
const READ_WHOLE_LIMIT: u64 = 1 << 20;

/// A scheme and authority, with the scheme's default port made explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an absolute `http(s)` URL, or `None` if it has none.
    pub(crate) fn of_url(url: &str) -> Option<Origin> {
        let uri: http::Uri = url.parse().ok()?;
        Origin::new(uri.scheme()?, uri.authority()?)
    }

    fn new(scheme: &Scheme, authority: &Authority) -> Option<Origin> {
        let scheme = scheme.as_str().to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        Some(Origin {
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default_port),
            scheme,
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// What the sandbox is opened to: one origin (`None`: nothing), and how that origin's
/// certificate is checked. The store takes this, not the whole policy it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opening {
    /// The one origin allowed.
    pub(crate) origin: Option<Origin>,
    /// How its certificate is checked.
    pub(crate) tls: TlsPolicy,
}

/// `wasi:http` hooks that let requests through only to one origin.
pub(crate) struct OriginGuard {
    /// The one origin allowed; `None` (before `configure`) allows nothing.
    pub(crate) allowed: Option<Origin>,
    /// How that origin's certificate is checked.
    pub(crate) tls: TlsPolicy,
    /// Connections shared with the other instances.
    pub(crate) client: Arc<Client>,
}

impl WasiHttpHooks for OriginGuard {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let _ = fut;
        let uri = request.uri();
        let origin = uri
            .scheme()
            .zip(uri.authority())
            .and_then(|(s, a)| Origin::new(s, a));
        if origin.is_none() || origin != self.allowed {
            tracing::warn!(
                requested = %origin.map(|o| o.to_string()).unwrap_or_else(|| "<no origin>".into()),
                allowed = %self.allowed.as_ref().map(|o| o.to_string()).unwrap_or_else(|| "<none>".into()),
                "refused a request outside the configured origin"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let (client, tls) = (self.client.clone(), self.tls.clone());
        let read_whole = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|length| length <= READ_WHOLE_LIMIT);
        Box::new(async move {
            let request = if read_whole {
                // Trailers are dropped: a body whose length is known has none of ours.
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await?.to_bytes();
                let body = Full::new(bytes)
                    .map_err(|never| match never {})
                    .boxed_unsync();
                http::Request::from_parts(parts, body)
            } else {
                request
            };
            let response = client.send(request, options, tls).await?;
            Ok((response, crate::client::no_worker()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_made_explicit() {
        assert_eq!(
            Origin::of_url("http://H.example.com/x"),
            Origin::of_url("http://h.example.com:80/y")
        );
        assert_ne!(
            Origin::of_url("http://h:80/"),
            Origin::of_url("https://h:80/")
        );
        assert_ne!(
            Origin::of_url("http://h:8080/"),
            Origin::of_url("http://h/")
        );
        assert_eq!(Origin::of_url("ftp://h/"), None);
    }
}
