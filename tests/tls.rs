//! TLS against a local receiver with a freshly generated self-signed certificate: the
//! default verifies (and refuses it), `caFile` trusts it, `verify: false` skips checks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::json;
use status_push_host::bindings::PushError;
use status_push_host::{Event, HostError, Outcome};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// An HTTPS receiver on 127.0.0.1 with a self-signed certificate for that address.
/// Returns its origin, the certificate's PEM, and a channel of received bodies.
async fn tls_receiver() -> (String, String, mpsc::UnboundedReceiver<Bytes>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
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
    (origin, pem, bodies)
}

async fn push(config: serde_json::Value) -> Result<Outcome, HostError> {
    let mut reporter = common::runtime().reporter().await.unwrap();
    let config = reporter.parse_config(&config.to_string()).await?;
    reporter.configure(config).await?;
    let build = reporter
        .parse_event(&common::sample_documents("started", 3))
        .await
        .unwrap();
    reporter.report(Event::Started, &build).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_permanent_tls_error_by_default() {
    let (origin, _, mut bodies) = tls_receiver().await;
    let result = push(json!({"serverUrl": origin, "maxAttempts": 3})).await;
    match result {
        Err(HostError::Push(f)) => {
            assert!(matches!(f.error, PushError::Tls(_)), "{f:?}");
            assert!(!f.retryable, "a bad certificate will not fix itself");
            assert_eq!(f.attempts, 1);
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), bodies.recv())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_makes_the_certificate_trusted() {
    let (origin, pem, mut bodies) = tls_receiver().await;
    let dir = std::env::temp_dir().join(format!("status-push-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, pem).unwrap();
    let result = push(json!({"serverUrl": origin, "caFile": ca_file})).await;
    assert!(
        matches!(&result, Ok(Outcome::Delivered(d)) if d.status == 200),
        "{result:?}"
    );
    let body = bodies.recv().await.unwrap();
    assert!(body.starts_with(b"{\"buildid\": 3,"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_false_is_honoured_when_configured() {
    let (origin, _, mut bodies) = tls_receiver().await;
    let result = push(json!({"serverUrl": origin, "verify": false})).await;
    assert!(
        matches!(&result, Ok(Outcome::Delivered(d)) if d.status == 200),
        "{result:?}"
    );
    assert!(bodies.recv().await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_file_is_a_config_error() {
    let result =
        push(json!({"serverUrl": "https://127.0.0.1:9/", "caFile": "/nonexistent/ca.pem"})).await;
    match result {
        Err(HostError::Config(e)) => assert_eq!(e.key, "caFile"),
        other => panic!("{other:?}"),
    }
}
