//! TLS receivers and certificates for the TLS tests: private CAs and leaf certificates
//! (rcgen), an HTTPS receiver on 127.0.0.1, and a push through the real component.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::CertificateDer;
use status_push_host::{Event, HostError, Outcome};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The crypto provider both sides use.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves HTTPS with `config` on 127.0.0.1, answering 200 to every request whose body
/// it read; returns the origin and a channel of the bodies.
pub async fn serve(config: rustls::ServerConfig) -> (String, mpsc::UnboundedReceiver<Bytes>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("https://{}", listener.local_addr().unwrap());
    let (sender, bodies) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let sender = sender.clone();
                        async move {
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let _ = sender.send(body);
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (origin, bodies)
}

/// A private CA, as its issuer and its certificate's PEM.
pub fn ca(name: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (rcgen::Issuer::new(params, key), pem)
}

/// A leaf certificate for `names` signed by `issuer`, for `usage`, and its key.
pub fn leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().unwrap();
    (params.signed_by(&key, issuer).unwrap(), key)
}

pub fn pem_der(pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

pub async fn push(config: serde_json::Value) -> Result<Outcome, HostError> {
    let mut reporter = super::runtime().reporter().await.unwrap();
    let config = reporter.parse_config(&config.to_string()).await?;
    reporter.configure(config).await?;
    let build = reporter
        .parse_event(&super::sample_documents("started", 3))
        .await
        .unwrap();
    reporter.report(Event::Started, &build).await
}

/// Nothing reaches `bodies` within a moment.
pub async fn nothing_received(bodies: &mut mpsc::UnboundedReceiver<Bytes>) -> bool {
    tokio::time::timeout(Duration::from_millis(200), bodies.recv())
        .await
        .is_err()
}
