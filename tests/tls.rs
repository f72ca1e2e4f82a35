//! TLS against a local receiver with a freshly generated self-signed certificate: the
//! default verifies (and refuses it), `caFile` trusts it, `verify: false` skips checks.
//! Mutual TLS against a receiver that requires a client certificate from its own CA:
//! `clientCertFile` (with `clientKeyFile`, or both in one file as requests' `cert` takes
//! it) is presented; without one, or with one from another CA, nothing is delivered.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::tls::{ca, leaf, nothing_received, pem_der, provider, push, serve};
use hyper::body::Bytes;
use rustls::pki_types::PrivateKeyDer;
use serde_json::json;
use status_push_host::bindings::PushError;
use status_push_host::{HostError, Outcome};
use tokio::sync::mpsc;

/// An HTTPS receiver on 127.0.0.1 with a self-signed certificate for that address.
/// Returns its origin, the certificate's PEM, and a channel of received bodies.
async fn tls_receiver() -> (String, String, mpsc::UnboundedReceiver<Bytes>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = cert.cert.pem();
    let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let (origin, bodies) = serve(config).await;
    (origin, pem, bodies)
}

/// Files of a mutual-TLS setup, in a directory of their own.
struct MutualTls {
    dir: PathBuf,
    /// The CA of the receiver's certificate and of the client certificates it accepts.
    ca: PathBuf,
    /// A client certificate it accepts, and its key in a file of its own.
    cert: PathBuf,
    key: PathBuf,
    /// The same certificate and key in one file (requests' `cert` as one path).
    combined: PathBuf,
    /// A client certificate and key from another CA, in one file.
    stranger: PathBuf,
}

impl Drop for MutualTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A receiver that requires a client certificate from its own CA, and the files to
/// reach it.
async fn mtls_receiver(name: &str) -> (String, MutualTls, mpsc::UnboundedReceiver<Bytes>) {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let (issuer, ca_pem) = ca("status-push test CA");
    let (server, server_key) = leaf(&issuer, &["127.0.0.1"], ServerAuth);
    let (client, client_key) = leaf(&issuer, &["buildbot-master"], ClientAuth);
    let (other_issuer, _) = ca("another CA");
    let (stranger, stranger_key) = leaf(&other_issuer, &["buildbot-master"], ClientAuth);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_der(&ca_pem)).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.der().clone()],
            PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    let (origin, bodies) = serve(config).await;

    let dir = std::env::temp_dir().join(format!("status-push-mtls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |file: &str, text: String| {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        path
    };
    let files = MutualTls {
        ca: write("ca.pem", ca_pem),
        cert: write("client.crt", client.pem()),
        key: write("client.key", client_key.serialize_pem()),
        combined: write("client.pem", client.pem() + &client_key.serialize_pem()),
        stranger: write(
            "stranger.pem",
            stranger.pem() + &stranger_key.serialize_pem(),
        ),
        dir: dir.clone(),
    };
    (origin, files, bodies)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_requires_a_client_certificate_refuses_an_event_without_one() {
    let (origin, files, mut bodies) = mtls_receiver("none").await;
    let result = push(json!({"serverUrl": origin, "caFile": files.ca, "maxAttempts": 1})).await;
    match result {
        Err(HostError::Push(f)) => {
            // The receiver's alert, not a lost connection: retrying cannot help.
            assert!(
                matches!(&f.error, PushError::Tls(why) if why.contains("CertificateRequired")),
                "{f:?}"
            );
            assert!(!f.retryable, "{f:?}");
        }
        other => panic!("expected the receiver to refuse the connection, got {other:?}"),
    }
    assert!(nothing_received(&mut bodies).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_and_its_key_are_presented_for_mutual_tls() {
    let (origin, files, mut bodies) = mtls_receiver("pair").await;
    let result = push(json!({
        "serverUrl": origin,
        "caFile": files.ca,
        "clientCertFile": files.cert,
        "clientKeyFile": files.key,
    }))
    .await;
    assert!(
        matches!(&result, Ok(Outcome::Delivered(d)) if d.status == 200),
        "{result:?}"
    );
    assert!(bodies
        .recv()
        .await
        .unwrap()
        .starts_with(b"{\"buildid\": 3,"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_file_that_holds_its_key_is_enough() {
    let (origin, files, mut bodies) = mtls_receiver("combined").await;
    let result = push(json!({
        "serverUrl": origin,
        "caFile": files.ca,
        "clientCertFile": files.combined,
    }))
    .await;
    assert!(
        matches!(&result, Ok(Outcome::Delivered(d)) if d.status == 200),
        "{result:?}"
    );
    assert!(bodies.recv().await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_of_another_ca_is_refused_by_the_receiver() {
    let (origin, files, mut bodies) = mtls_receiver("stranger").await;
    let result = push(json!({
        "serverUrl": origin,
        "caFile": files.ca,
        "clientCertFile": files.stranger,
        "maxAttempts": 1,
    }))
    .await;
    assert!(
        matches!(&result, Err(HostError::Push(f)) if matches!(f.error, PushError::Tls(_)) && !f.retryable),
        "{result:?}"
    );
    assert!(nothing_received(&mut bodies).await);
}

/// A client certificate renewed in place (the same path, new contents) is presented from
/// the next connection on, without a restart: the host's TLS configurations are built
/// again when their files change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_renewed_in_place_is_presented_without_a_restart() {
    let (origin, files, mut bodies) = mtls_receiver("renewed").await;
    let renewed = files.dir.join("renewed.pem");
    std::fs::copy(&files.stranger, &renewed).unwrap();
    let config = json!({
        "serverUrl": origin,
        "caFile": files.ca,
        "clientCertFile": renewed,
        "maxAttempts": 1,
    });
    let result = push(config.clone()).await;
    assert!(
        matches!(&result, Err(HostError::Push(f)) if matches!(f.error, PushError::Tls(_))),
        "the old certificate, from another CA: {result:?}"
    );
    assert!(nothing_received(&mut bodies).await);

    std::fs::copy(&files.combined, &renewed).unwrap();
    let result = push(config).await;
    assert!(
        matches!(&result, Ok(Outcome::Delivered(d)) if d.status == 200),
        "the renewed one: {result:?}"
    );
    assert!(bodies.recv().await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_client_certificate_files_are_config_errors_naming_their_key() {
    let (origin, files, _bodies) = mtls_receiver("bad").await;
    let key_of = |result: Result<Outcome, HostError>| match result {
        Err(HostError::Config(e)) => (e.key, e.message),
        other => panic!("expected a configuration error, got {other:?}"),
    };
    let (key, _) = key_of(push(json!({"serverUrl": origin, "clientKeyFile": files.key})).await);
    assert_eq!(key, "clientKeyFile", "a key needs its certificate");
    let (key, message) = key_of(
        push(json!({"serverUrl": origin, "clientCertFile": files.dir.join("missing.pem")})).await,
    );
    assert_eq!(key, "clientCertFile");
    assert!(message.contains("missing.pem"), "{message}");
    let (key, message) =
        key_of(push(json!({"serverUrl": origin, "clientCertFile": files.cert})).await);
    assert_eq!(key, "clientCertFile", "a certificate without its key");
    assert!(message.contains("clientKeyFile"), "{message}");
    let (key, _) = key_of(
        push(json!({"serverUrl": origin, "clientCertFile": files.cert, "clientKeyFile": files.ca}))
            .await,
    );
    assert_eq!(key, "clientKeyFile", "a file without a private key");
    let (key, _) = key_of(
        push(
            json!({"serverUrl": origin, "clientCertFile": files.cert, "clientKeyFile": files.dir}),
        )
        .await,
    );
    assert_eq!(key, "clientKeyFile", "a directory is not a key file");
}
