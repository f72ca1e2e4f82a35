//! `trustSystemRoots: false` trusts `caFile`'s certificates alone, as Buildbot's
//! `verify="/path"` (requests) does; by default the system's roots are trusted beside
//! them. The system's roots are read once per process (rustls-native-certs, which takes
//! `SSL_CERT_FILE`), so this is a test process of its own, whose "system" is a test CA.

mod common;

use common::tls::{ca, leaf, nothing_received, provider, push, serve};
use rustls::pki_types::PrivateKeyDer;
use serde_json::json;
use status_push_host::bindings::PushError;
use status_push_host::{HostError, Outcome};

#[test]
fn without_the_system_roots_only_the_ca_file_is_trusted() {
    let dir = std::env::temp_dir().join(format!("status-push-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (system, system_pem) = ca("the system's CA");
    let (_, other_pem) = ca("another CA");
    let (system_ca, other_ca) = (dir.join("system.pem"), dir.join("other.pem"));
    std::fs::write(&system_ca, system_pem).unwrap();
    std::fs::write(&other_ca, other_pem).unwrap();
    // The only test of this process, set before any thread reads the roots.
    std::env::set_var("SSL_CERT_FILE", &system_ca);
    std::env::remove_var("SSL_CERT_DIR");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use rcgen::ExtendedKeyUsagePurpose::ServerAuth;
        let (cert, key) = leaf(&system, &["127.0.0.1"], ServerAuth);
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let (origin, mut bodies) = serve(config).await;
        let delivered = |result: &Result<Outcome, HostError>| {
            matches!(result, Ok(Outcome::Delivered(d)) if d.status == 200)
        };

        let beside = push(json!({"serverUrl": origin, "caFile": other_ca})).await;
        assert!(delivered(&beside), "the system's roots beside caFile's: {beside:?}");
        assert!(bodies.recv().await.is_some());

        let alone = json!({"serverUrl": origin, "caFile": other_ca, "trustSystemRoots": false});
        match push(alone).await {
            Err(HostError::Push(f)) => {
                assert!(matches!(f.error, PushError::Tls(_)), "{f:?}");
                assert!(!f.retryable);
            }
            other => panic!("caFile's alone do not trust it: {other:?}"),
        }
        assert!(nothing_received(&mut bodies).await);

        let own = json!({"serverUrl": origin, "caFile": system_ca, "trustSystemRoots": false});
        let result = push(own).await;
        assert!(delivered(&result), "its own CA in caFile: {result:?}");

        match push(json!({"serverUrl": origin, "trustSystemRoots": false})).await {
            Err(HostError::Config(e)) => assert_eq!(e.key, "trustSystemRoots"),
            other => panic!("no root at all: {other:?}"),
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
