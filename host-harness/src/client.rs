//! The HTTP client behind the component's `wasi:http/outgoing-handler`: a pool of
//! keep-alive HTTP/1.1 connections shared by every instance of a [`crate::Runtime`]
//! (stock wasmtime opens a connection per request), TLS by rustls with the policy the
//! configuration asks for, and the request's connect, first-byte and between-bytes
//! timeouts.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::files::MAX_CA_FILE_BYTES;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Idle connections kept per destination.
const MAX_IDLE_PER_KEY: usize = 32;
/// Used when the guest sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How TLS is set up for a destination: how its certificate is checked, and which
/// certificate, if any, this side presents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct TlsPolicy {
    /// How the receiver's certificate is checked (`verify`, `caFile`).
    pub(crate) server: ServerCheck,
    /// The client certificate presented for mutual TLS (`clientCertFile`).
    pub(crate) client_cert: Option<ClientCert>,
}

impl TlsPolicy {
    /// `ca_file`'s certificates alone, and no client certificate.
    pub(crate) fn rooted_in(ca_file: PathBuf) -> TlsPolicy {
        TlsPolicy {
            server: ServerCheck::Verify {
                ca_file: Some(ca_file),
                system_roots: false,
            },
            client_cert: None,
        }
    }

    /// The system's roots plus `ca_file`'s, and no client certificate.
    pub(crate) fn verified(ca_file: Option<PathBuf>) -> TlsPolicy {
        TlsPolicy {
            server: ServerCheck::Verify {
                ca_file,
                system_roots: true,
            },
            client_cert: None,
        }
    }
}

/// How a destination's TLS certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ServerCheck {
    /// The system's roots (unless left out), plus those of an optional PEM file.
    Verify {
        /// Extra CA certificates (`caFile`).
        ca_file: Option<PathBuf>,
        /// Whether the system's roots are trusted too (`trustSystemRoots`).
        system_roots: bool,
    },
    /// No verification at all (`verify: false`); only ever by explicit configuration.
    Insecure,
}

impl Default for ServerCheck {
    fn default() -> ServerCheck {
        ServerCheck::Verify {
            ca_file: None,
            system_roots: true,
        }
    }
}

/// The files of a client certificate (`clientCertFile`, `clientKeyFile`). Paths only: the
/// key is read when the TLS configuration is built and lives on only inside rustls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientCert {
    /// The certificate chain, leaf first; holds the key too when `key_file` is `None`.
    pub(crate) cert_file: PathBuf,
    /// The private key, when it is in a file of its own.
    pub(crate) key_file: Option<PathBuf>,
}

/// Why a TLS policy could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use CA file {path}: {why}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The client certificate file could not be read or holds no certificate.
    #[error("cannot use client certificate file {path}: {why}")]
    ClientCert {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The client key could not be read or holds no private key.
    #[error("cannot use client key file {path}: {why}")]
    ClientKey {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// rustls refused the configuration (a key that is not the certificate's, say).
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsSetupError {
    /// The configuration key at fault, as a configuration error names it.
    pub(crate) fn config_key(&self) -> &'static str {
        match self {
            TlsSetupError::CaFile { .. } => "caFile",
            TlsSetupError::ClientCert { .. } | TlsSetupError::Rustls(_) => "clientCertFile",
            TlsSetupError::ClientKey { .. } => "clientKeyFile",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    scheme: String,
    authority: String,
    tls: TlsPolicy,
}

/// Shared connections and TLS configurations.
#[derive(Default)]
pub(crate) struct Client {
    idle: Mutex<HashMap<PoolKey, Vec<SendRequest<WasiBody>>>>,
    /// Each policy's configuration, and the version of its files it was built from.
    tls: Mutex<HashMap<TlsPolicy, (FilesSeen, Arc<rustls::ClientConfig>)>>,
    /// Benchmarks only: read each request's body and answer `200 {}` without a socket.
    #[cfg(feature = "bench")]
    canned: bool,
}

/// A TLS policy's files as their metadata shows them, without reading them: a file
/// rewritten or replaced (a renewed client certificate, a rotated CA bundle, a mounted
/// secret's new version behind its symlink) shows another, and its configuration is
/// built again, so a long-running host takes it without a restart.
#[derive(Clone, PartialEq, Eq)]
struct FilesSeen(Vec<Option<(std::time::SystemTime, u64)>>);

impl TlsPolicy {
    fn files_seen(&self) -> FilesSeen {
        let ca_file = match &self.server {
            ServerCheck::Verify { ca_file, .. } => ca_file.as_deref(),
            ServerCheck::Insecure => None,
        };
        let client = self.client_cert.as_ref();
        let files = [
            ca_file,
            client.map(|c| c.cert_file.as_path()),
            client.and_then(|c| c.key_file.as_deref()),
        ];
        FilesSeen(
            files
                .into_iter()
                .flatten()
                .map(|path| {
                    let meta = std::fs::metadata(path).ok()?;
                    Some((meta.modified().ok()?, meta.len()))
                })
                .collect(),
        )
    }
}

fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Client {
    /// A client that never connects: every request is read and answered `200 {}`, so a
    /// benchmark can measure everything but the network.
    #[cfg(feature = "bench")]
    pub(crate) fn canned() -> Client {
        Client {
            canned: true,
            ..Client::default()
        }
    }

    /// The rustls configuration for `policy`, built once per version of its files
    /// ([`FilesSeen`]) and shared.
    pub(crate) fn tls_config(
        &self,
        policy: &TlsPolicy,
    ) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
        let seen = policy.files_seen();
        let cached = self.tls.lock().ok().and_then(|m| {
            m.get(policy)
                .filter(|(built_from, _)| *built_from == seen)
                .map(|(_, config)| config.clone())
        });
        if let Some(config) = cached {
            return Ok(config);
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &policy.server {
            ServerCheck::Verify {
                ca_file,
                system_roots: with_system_roots,
            } => {
                let mut roots = rustls::RootCertStore::empty();
                if *with_system_roots {
                    roots.add_parsable_certificates(system_roots().iter().cloned());
                }
                if let Some(path) = ca_file {
                    for cert in read_pem_certificates(path)? {
                        roots.add(cert).map_err(|e| TlsSetupError::CaFile {
                            path: path.clone(),
                            why: e.to_string(),
                        })?;
                    }
                }
                builder.with_root_certificates(roots)
            }
            ServerCheck::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider()))),
        };
        let config = match &policy.client_cert {
            None => builder.with_no_client_auth(),
            Some(client) => {
                let (chain, key) = read_client_cert(client)?;
                builder.with_client_auth_cert(chain, key)?
            }
        };
        let config = Arc::new(config);
        if let Ok(mut map) = self.tls.lock() {
            map.insert(policy.clone(), (seen, config.clone()));
        }
        Ok(config)
    }

    /// Sends `request`, reusing an idle connection to the same destination when there is
    /// one.
    pub(crate) async fn send(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        tls: TlsPolicy,
    ) -> Result<http::Response<WasiBody>, Error> {
        #[cfg(feature = "bench")]
        if self.canned {
            request.into_body().collect().await?;
            let body = http_body_util::Full::new(Bytes::from_static(b"{}"))
                .map_err(|never| match never {})
                .boxed_unsync();
            return Ok(http::Response::new(body));
        }
        let uri = request.uri().clone();
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?.clone();
        let use_tls = scheme == Scheme::HTTPS;
        let key = PoolKey {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            tls: tls.clone(),
        };
        let connect_timeout = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let first_byte = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let between_bytes = options
            .and_then(|o| o.between_bytes_timeout)
            .unwrap_or(DEFAULT_TIMEOUT)
            .max(Duration::from_nanos(1));

        // The request line carries only the path: the authority goes in `Host`.
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;

        let port = authority
            .port_u16()
            .unwrap_or(if use_tls { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = use_tls.then_some(&tls);
        let (mut sender, response) = match self.take_idle(&key) {
            Some(mut pooled) => {
                match tokio::time::timeout(first_byte, pooled.try_send_request(request))
                    .await
                    .map_err(|_| Error::ConnectionReadTimeout)?
                {
                    Ok(response) => (pooled, response),
                    // The peer closed the idle connection before it took the request:
                    // the request is intact, so send it on a fresh connection.
                    Err(mut failed) => match failed.take_message() {
                        Some(request) => {
                            let fresh = connect(host, port, tls, &self, connect_timeout).await?;
                            fresh.send(request, first_byte).await?
                        }
                        None => return Err(Error::from(failed.into_error())),
                    },
                }
            }
            None => {
                let fresh = connect(host, port, tls, &self, connect_timeout).await?;
                fresh.send(request, first_byte).await?
            }
        };
        // Back in the pool now: hyper marks the connection ready again once this response
        // body has been read, and `take_idle` only hands out ready connections.
        let _ = &mut sender;
        self.put_idle(key, sender);
        let mut timer = tokio::time::interval(between_bytes);
        timer.reset();
        Ok(response.map(|incoming| TimedBody { incoming, timer }.boxed_unsync()))
    }

    fn take_idle(&self, key: &PoolKey) -> Option<SendRequest<WasiBody>> {
        let mut idle = self.idle.lock().ok()?;
        let senders = idle.get_mut(key)?;
        senders.retain(|s| !s.is_closed());
        let ready = senders.iter().position(|s| s.is_ready())?;
        Some(senders.swap_remove(ready))
    }

    fn put_idle(&self, key: PoolKey, sender: SendRequest<WasiBody>) {
        if let Ok(mut idle) = self.idle.lock() {
            let senders = idle.entry(key).or_default();
            if senders.len() < MAX_IDLE_PER_KEY {
                senders.push(sender);
            }
        }
    }
}

async fn send(
    sender: &mut SendRequest<WasiBody>,
    request: http::Request<WasiBody>,
    first_byte: Duration,
) -> Result<http::Response<hyper::body::Incoming>, Error> {
    tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(|e| tls_alert(&e).unwrap_or_else(|| Error::from(e)))
}

/// A connection just made, and how its task ended if it ended.
struct Fresh {
    sender: SendRequest<WasiBody>,
    ended: tokio::sync::oneshot::Receiver<hyper::Error>,
}

impl Fresh {
    /// Sends the connection's first request.
    async fn send(
        mut self,
        request: http::Request<WasiBody>,
        first_byte: Duration,
    ) -> Result<(SendRequest<WasiBody>, http::Response<hyper::body::Incoming>), Error> {
        match send(&mut self.sender, request, first_byte).await {
            Ok(response) => Ok((self.sender, response)),
            Err(error) => {
                // A connection whose task failed first leaves the request only "not
                // ready"; the task's own error says why, a receiver's TLS alert included.
                let ended = tokio::time::timeout(Duration::from_millis(100), self.ended).await;
                match ended {
                    Ok(Ok(why)) => Err(tls_alert(&why).unwrap_or(error)),
                    _ => Err(error),
                }
            }
        }
    }
}

/// A receiver's TLS alert in `error`'s chain, as the TLS error it is. With TLS 1.3 a
/// receiver checks a client certificate (or its absence) after the client's handshake is
/// over, so its refusal arrives as the request is written or the response read, rather
/// than in `connect`: unrecognised, it would read as a lost connection, retried to no end,
/// where it is a configuration to fix.
fn tls_alert(error: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut source = Some(error);
    while let Some(e) = source {
        // io::Error's `source` skips the error it wraps, so look inside it too.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(e), inner].into_iter().flatten() {
            if let Some(rustls::Error::AlertReceived(alert)) =
                candidate.downcast_ref::<rustls::Error>()
            {
                return Some(Error::TlsAlertReceived {
                    alert_id: Some(u8::from(*alert)),
                    alert_message: Some(format!("{alert:?}")),
                });
            }
        }
        source = e.source();
    }
    None
}

async fn connect(
    host: &str,
    port: u16,
    tls: Option<&TlsPolicy>,
    client: &Client,
    timeout: Duration,
) -> Result<Fresh, Error> {
    let setup = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(Error::Connect)?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => handshake(tcp).await,
            Some(policy) => {
                let config = client
                    .tls_config(policy)
                    .map_err(|e| Error::Tls(std::io::Error::other(e.to_string())))?;
                let name =
                    ServerName::try_from(host.to_string()).map_err(Error::InvalidDnsNameError)?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(Error::Tls)?;
                handshake(stream).await
            }
        }
    };
    tokio::time::timeout(timeout, setup)
        .await
        .map_err(|_| Error::ConnectionTimeout)?
}

async fn handshake<S>(stream: S) -> Result<Fresh, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;
    // The connection lives as long as the peer keeps it open, so it can be reused.
    let (tell, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            let _ = tell.send(e);
        }
    });
    Ok(Fresh { sender, ended })
}

/// A response body that fails when no byte arrives for the between-bytes timeout.
struct TimedBody {
    incoming: hyper::body::Incoming,
    timer: tokio::time::Interval,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.timer.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.timer.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    let error = |why: String| TlsSetupError::CaFile {
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The certificate chain and private key of `client`, read under the rules of
/// [`crate::files`] with the CA file's cap.
fn read_client_cert(
    client: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    let cert_error = |why: String| TlsSetupError::ClientCert {
        path: client.cert_file.clone(),
        why,
    };
    let cert_pem = crate::files::read_capped(&client.cert_file, MAX_CA_FILE_BYTES)
        .map_err(|e| cert_error(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in it".into()));
    }
    let key = match &client.key_file {
        // requests' `cert` as one path: the key is in the certificate's file.
        None => PrivateKeyDer::from_pem_slice(&cert_pem).map_err(|e| {
            cert_error(format!(
                "no private key in it ({e}); name the key's own file in clientKeyFile"
            ))
        })?,
        Some(path) => {
            let key_error = |why: String| TlsSetupError::ClientKey {
                path: path.clone(),
                why,
            };
            let key_pem = crate::files::read_capped(path, MAX_CA_FILE_BYTES)
                .map_err(|e| key_error(e.to_string()))?;
            PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| key_error(format!("no PEM private key in it ({e})")))?
        }
    };
    Ok((chain, key))
}

/// `verify: false`: every certificate is accepted; signatures are still checked so the
/// handshake itself stays sound.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A future that does nothing: the pooled connection is driven by its own task.
pub(crate) fn no_worker() -> Box<dyn Future<Output = Result<(), Error>> + Send> {
    Box::new(async { Ok(()) })
}
