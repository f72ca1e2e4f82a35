//! Secrets stay secret: everything the CLI prints, in every path (delivery with `debug`,
//! a failing receiver, a refused configuration, the outbox and its dead letters, the
//! receiver's own printout), is searched for the password, the signing secret, the
//! bearer token and the encoded `Authorization` value.

mod common;

use common::workspace;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use status_push_cli::receiver::{Receiver, Recorded, Reply};
use tokio::io::AsyncReadExt;

const PASSWORD: &str = "pw-S3CRET-4711";
const SIGNING: &str = "gh-S3CRET-0815";
const TOKEN: &str = "tok-S3CRET-42";

/// The secrets, and the forms they take on the wire.
fn needles() -> Vec<String> {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"));
    vec![PASSWORD.into(), SIGNING.into(), TOKEN.into(), basic]
}

async fn run(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_status-push"))
        .args(args)
        .env(
            "STATUS_PUSH_WASM",
            workspace().join("target/status-push.wasm"),
        )
        .env("RUST_LOG", "trace")
        .output()
        .await
        .expect("the CLI runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_clean(what: &str, printed: &str) {
    for needle in needles() {
        assert!(
            !printed.contains(&needle),
            "{what} printed a secret ({needle}):\n{printed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_the_cli_prints_contains_a_secret() {
    let dir = std::env::temp_dir().join(format!("status-push-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let build = workspace().join("tests/fixtures/buildbot/default_start_finish/started.json");
    let build = build.to_str().unwrap();
    let write = |name: &str, config: serde_json::Value| {
        let path = dir.join(name);
        std::fs::write(&path, config.to_string()).unwrap();
        path.to_str().unwrap().to_string()
    };

    let ok = Receiver::start(0).await.unwrap();
    let failing = Receiver::start_with(0, Arc::new(|_: &Recorded| Reply::from(500)))
        .await
        .unwrap();
    let with_secrets = |url: String| {
        json!({"serverUrl": url, "user": "alice", "password": PASSWORD, "debug": true,
               "signingScheme": "github", "signingSecret": SIGNING, "maxAttempts": 2,
               "headers": {"X-Auth-Token": TOKEN}})
    };
    let mut printed = Vec::new();

    let config = write("ok.json", with_secrets(ok.origin()));
    let out = run(&[
        "push", "--config", &config, "--event", "started", "--build", build,
    ])
    .await;
    assert!(
        out.contains("delivered: HTTP 200") && out.contains("-> POST"),
        "{out}"
    );
    printed.push(("push with debug", out));

    let config = write("fail.json", with_secrets(failing.origin()));
    let out = run(&[
        "push", "--config", &config, "--event", "started", "--build", build,
    ])
    .await;
    assert!(out.contains("HTTP 500"), "{out}");
    printed.push(("a failing push", out));

    let mut bearer = with_secrets(ok.origin());
    bearer["auth"] = json!({"bearer": TOKEN});
    let config = write("refused.json", bearer);
    let out = run(&[
        "push", "--config", &config, "--event", "started", "--build", build,
    ])
    .await;
    assert!(
        out.contains("auth"),
        "user/password and auth together are refused: {out}"
    );
    printed.push(("a refused configuration", out));

    let outbox = dir.join("outbox.sqlite");
    let outbox = outbox.to_str().unwrap();
    let config = write("dead.json", {
        let mut c = with_secrets(failing.origin());
        c["serverUrl"] = json!(format!("{}/gone", failing.origin()));
        c
    });
    printed.push((
        "push --outbox",
        run(&[
            "push", "--outbox", outbox, "--config", &config, "--event", "started", "--build", build,
        ])
        .await,
    ));
    printed.push((
        "dead-letters",
        run(&["dead-letters", "--outbox", outbox]).await,
    ));
    printed.push((
        "deliver",
        run(&["deliver", "--outbox", outbox, "--budget-seconds", "1"]).await,
    ));

    // The receiver's printout redacts what the component sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut receive = tokio::process::Command::new(env!("CARGO_BIN_EXE_status-push"))
        .args(["receive", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = write(
        "to-receive.json",
        with_secrets(format!("http://127.0.0.1:{port}/")),
    );
    let out = run(&[
        "push", "--config", &config, "--event", "started", "--build", build,
    ])
    .await;
    assert!(out.contains("delivered"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    receive.kill().await.unwrap();
    let mut received = String::new();
    receive
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut received)
        .await
        .unwrap();
    assert!(received.contains("authorization: <redacted>"), "{received}");
    printed.push(("receive", received));

    for (what, text) in &printed {
        assert_clean(what, text);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
