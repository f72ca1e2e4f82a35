//! Live signatures, checked by a verifier status-push did not write (the
//! `standardwebhooks` package from PyPI, and Python's hmac for GitHub's scheme), on the
//! exact bytes that reached a loopback receiver. `scripts/test.sh` installs the verifier
//! into `target/verifier-venv`; `STATUS_PUSH_VERIFIER_PYTHON` may name another Python.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use status_push_cli::receiver::{Receiver, Recorded};
use status_push_host::Event;

fn python() -> PathBuf {
    std::env::var_os("STATUS_PUSH_VERIFIER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/verifier-venv/bin/python")
        })
}

/// Runs the independent verifier; `Ok` when it accepts the signature.
fn verify(scheme: &str, secret: &str, request: &Recorded) -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verifier/verify.py");
    let python = python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs the verifier",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone().into()))
        .collect();
    let input = json!({"scheme": scheme, "secret": secret, "headers": headers,
                       "body": String::from_utf8(request.body.to_vec()).unwrap()});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn signed_request(scheme: &str, secret: &str) -> Recorded {
    let receiver = Receiver::start(0).await.unwrap();
    let config =
        json!({"serverUrl": receiver.origin(), "signingScheme": scheme, "signingSecret": secret});
    let mut reporter = common::configured(&config).await;
    let build = reporter
        .parse_event(&common::sample_documents("finished", 77))
        .await
        .unwrap();
    reporter
        .report(Event::Finished, &build)
        .await
        .expect("delivered");
    receiver.wait_for(1, Duration::from_secs(5)).await.remove(0)
}

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_signature_verifies_with_the_reference_library() {
    let request = signed_request("standard-webhooks", WHSEC).await;
    assert!(request.header("webhook-id").unwrap().starts_with("sp_"));
    assert!(
        request.header("idempotency-key").is_none(),
        "the id travels as webhook-id"
    );
    verify("standard-webhooks", WHSEC, &request).expect("the reference verifier accepts it");
    // The verifier is not a rubber stamp: a changed body or another secret fails.
    let mut tampered = request.clone();
    tampered.body = bytes::Bytes::from(request.body.iter().rev().copied().collect::<Vec<u8>>());
    assert!(verify("standard-webhooks", WHSEC, &tampered).is_err());
    assert!(verify(
        "standard-webhooks",
        "whsec_c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1vbmU=",
        &request
    )
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_signature_verifies_independently() {
    let secret = "It's a Secret to Everybody";
    let request = signed_request("github", secret).await;
    assert!(request
        .header("x-github-delivery")
        .unwrap()
        .starts_with("sp_"));
    assert!(request
        .header("x-hub-signature-256")
        .unwrap()
        .starts_with("sha256="));
    verify("github", secret, &request).expect("valid");
    assert!(verify("github", "another secret", &request).is_err());
}
