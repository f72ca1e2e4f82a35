//! The walking skeleton end to end: the real `.wasm`, the real harness, a real HTTP
//! receiver on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use status_push_cli::receiver::{Receiver, Recorded, Reply};
use status_push_host::bindings::{Property, PushError};
use status_push_host::{BuildEvent, Event, HostError, Outcome, Reporter};

const WAIT: Duration = Duration::from_secs(5);

async fn sample_event(reporter: &mut Reporter, file: &str) -> BuildEvent {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/buildbot/default_start_finish")
        .join(file);
    let documents = std::fs::read_to_string(path).unwrap();
    reporter
        .parse_event(&documents)
        .await
        .expect("sample parses")
}

async fn push_once(config: Value, event: Event) -> Result<Outcome, HostError> {
    let mut reporter = common::configured(&config).await;
    let file = match event {
        Event::Started => "started.json",
        Event::Finished => "finished.json",
    };
    let build = sample_event(&mut reporter, file).await;
    reporter.report(event, &build).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_and_finished_arrive_as_json_posts_with_path_and_query() {
    let receiver = Receiver::start(0).await.unwrap();
    let url = format!("{}/hooks/buildbot?token=abc&x=%20y", receiver.origin());
    let mut reporter = common::configured(&json!({"serverUrl": url, "wantProperties": true})).await;
    for (event, file) in [
        (Event::Started, "started.json"),
        (Event::Finished, "finished.json"),
    ] {
        let build = sample_event(&mut reporter, file).await;
        let outcome = reporter.report(event, &build).await.expect("delivered");
        assert!(
            matches!(&outcome, Outcome::Delivered(d) if d.status == 200 && d.attempts == 1),
            "{outcome:?}"
        );
    }
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    for (request, complete) in got.iter().zip([false, true]) {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks/buildbot?token=abc&x=%20y");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("authorization"), None);
        let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
        assert_eq!(body["complete"], complete);
        assert_eq!(body["builder"]["name"], "Builder0");
        assert_eq!(body["url"], "http://localhost:8080/#/builders/79/builds/0");
        assert_eq!(body["properties"]["branch"], json!(["master", "Build"]));
        assert_eq!(
            request.header("content-length"),
            Some(request.body.len().to_string().as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_written_before_and_after_handle_arrive_whole() {
    // The guest writes a body the host takes in one write (1 MiB in wasmtime-wasi-http 48)
    // before `handle`, which our host then sends within that call; a larger one after
    // `handle`, in 4 KiB pieces, through wasmtime-wasi-http's own path (src/transport.rs).
    let receiver = Receiver::start(0).await.unwrap();
    let mut reporter =
        common::configured(&json!({"serverUrl": receiver.origin(), "wantProperties": true})).await;
    let sizes = [10, 3 << 20];
    for size in sizes {
        let mut build = sample_event(&mut reporter, "started.json").await;
        build.properties.push(Property {
            name: "padding".into(),
            value: serde_json::to_string(&"x".repeat(size)).unwrap(),
            source: "test".into(),
        });
        let outcome = reporter.report(Event::Started, &build).await;
        assert!(matches!(outcome, Ok(Outcome::Delivered(_))), "{outcome:?}");
    }
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    for (request, size) in got.iter().zip(sizes) {
        let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
        assert_eq!(
            body["properties"]["padding"][0].as_str().map(str::len),
            Some(size)
        );
        assert_eq!(body["builder"]["name"], "Builder0");
        assert_eq!(
            request.header("content-length"),
            Some(request.body.len().to_string().as_str())
        );
    }
    assert!(got[1].body.len() > 1 << 20, "the large body fits one write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_become_basic_auth() {
    let receiver = Receiver::start(0).await.unwrap();
    let config = json!({"serverUrl": receiver.origin(), "user": "alice", "password": "s3cr3t:pw"});
    push_once(config, Event::Started).await.expect("delivered");
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].path, "/");
    assert_eq!(
        common::basic_auth(got[0].header("authorization")),
        Some(("alice".into(), "s3cr3t:pw".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_are_sent_and_content_type_stays_json() {
    let receiver = Receiver::start(0).await.unwrap();
    let config = json!({
        "serverUrl": format!("{}/x", receiver.origin()),
        "headers": {"X-Api-Key": "k-123", "Content-Type": "text/plain", "X-Trace": "t1"}
    });
    push_once(config, Event::Finished).await.expect("delivered");
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("x-api-key"), Some("k-123"));
    assert_eq!(got[0].header("x-trace"), Some("t1"));
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    let content_types = got[0]
        .headers
        .iter()
        .filter(|(n, _)| n == "content-type")
        .count();
    assert_eq!(content_types, 1, "exactly one Content-Type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_a_typed_http_status_error_after_the_configured_attempts() {
    let receiver = Receiver::start_with(0, Arc::new(|_: &Recorded| Reply::from(500)))
        .await
        .unwrap();
    let config = json!({"serverUrl": receiver.origin(), "maxAttempts": 2});
    let err = push_once(config, Event::Started)
        .await
        .expect_err("a 500 is not delivered");
    let HostError::Push(failure) = &err else {
        panic!("expected an HTTP status error, got {err:?}");
    };
    assert!(
        matches!(&failure.error, PushError::HttpStatus(h) if h.status == 500),
        "{err:?}"
    );
    assert_eq!(failure.attempts, 2);
    assert!(err.is_retryable(), "5xx is worth retrying later");
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "both attempts arrived");
    let key = got[0].header("idempotency-key").expect("a delivery id");
    assert_eq!(
        got[1].header("idempotency-key"),
        Some(key),
        "same id on every attempt"
    );
    assert_eq!(key, failure.delivery_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_a_typed_unreachable_error() {
    // Bind then drop a listener so the port is known to be closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = json!({"serverUrl": format!("http://127.0.0.1:{port}/"), "maxAttempts": 1});
    let err = push_once(config, Event::Started)
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(&err, HostError::Push(f) if matches!(f.error, PushError::Unreachable(_))),
        "expected unreachable, got {err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_url_is_a_config_error_and_nothing_is_sent() {
    let receiver = Receiver::start(0).await.unwrap();
    let mut reporter = common::runtime().reporter().await.unwrap();
    let bad = format!("{}/a b\r\nX-Injected: 1", receiver.origin());
    let config = reporter
        .parse_config(&json!({"serverUrl": bad}).to_string())
        .await
        .unwrap();
    match reporter.configure(config).await {
        Err(HostError::Config(e)) => assert_eq!(e.key, "serverUrl"),
        other => panic!("expected a config error, got {other:?}"),
    }
    // Unconfigured, the reporter refuses to push rather than using a half-valid config.
    let build = sample_event(&mut reporter, "started.json").await;
    let err = reporter.report(Event::Started, &build).await.unwrap_err();
    assert!(
        matches!(&err, HostError::Push(f) if matches!(f.error, PushError::NotConfigured) && f.attempts == 0),
        "{err:?}"
    );
    assert!(receiver
        .wait_for(1, Duration::from_millis(300))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_errors_name_the_key() {
    let mut reporter = common::runtime().reporter().await.unwrap();
    let err = reporter
        .parse_config(r#"{"serverUrl": "http://127.0.0.1:9/", "wantStep": true}"#)
        .await
        .unwrap_err();
    match err {
        HostError::Config(e) => assert_eq!(e.key, "wantStep"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_builder_sends_nothing() {
    let receiver = Receiver::start(0).await.unwrap();
    let config = json!({"serverUrl": receiver.origin(), "builders": ["Other"]});
    let outcome = push_once(config, Event::Started).await.unwrap();
    assert!(matches!(outcome, Outcome::Skipped(_)), "{outcome:?}");
    assert!(receiver
        .wait_for(1, Duration::from_millis(300))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_natively_built_config_has_the_component_parsers_defaults() {
    let mut reporter = common::runtime().reporter().await.unwrap();
    let parsed = reporter
        .parse_config(r#"{"serverUrl": "http://127.0.0.1:9/x"}"#)
        .await
        .unwrap();
    let built = status_push_host::bindings::Config::new("http://127.0.0.1:9/x");
    // Debug shows every field (credentials redacted, none set here).
    assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
}

/// A log streamed from a file (`content_file`) goes out in the same attempt loop as a
/// body in memory: once, with its `Idempotency-Key`, its text whole; a stream is read
/// once, so a retryable failure is not tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_log_is_sent_in_one_attempt_with_its_idempotency_key() {
    let dir = std::env::temp_dir().join(format!("status-push-streamed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log.txt");
    std::fs::write(&log, "line one\nline two\n").unwrap();
    let fixture = |file: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/buildbot/want_steps_logs_content")
                .join(file),
        )
        .unwrap()
    };
    let mut documents: Value = serde_json::from_str(&fixture("finished.json")).unwrap();
    let entry = &mut documents["steps"][0]["logs"][0];
    entry.as_object_mut().unwrap().remove("content");
    entry["content_file"] = json!(log.display().to_string());
    let config: Value = serde_json::from_str(&fixture("config.json")).unwrap();

    for (status, attempts) in [(200u16, 1u32), (503, 1)] {
        let receiver = Receiver::start_with(0, Arc::new(move |_: &Recorded| Reply::from(status)))
            .await
            .unwrap();
        let mut config = config.clone();
        config["serverUrl"] = json!(format!("{}/hook", receiver.origin()));
        config["maxAttempts"] = json!(3);
        let mut reporter = common::configured(&config).await;
        let outcome = reporter
            .report_documents(Event::Finished, &documents.to_string())
            .await;
        match (&outcome, status) {
            (Ok(Outcome::Delivered(d)), 200) => assert_eq!(d.attempts, attempts),
            (Err(HostError::Push(f)), 503) => {
                assert_eq!(f.attempts, attempts, "{f:?}");
                assert!(f.retryable, "{f:?}");
            }
            other => panic!("{other:?}"),
        }
        let got = receiver.wait_for(1, WAIT).await;
        assert_eq!(got.len(), 1, "one attempt only");
        assert!(got[0]
            .header("idempotency-key")
            .is_some_and(|k| k.starts_with("sp_")));
        let body: Value = serde_json::from_slice(&got[0].body).expect("JSON body");
        assert_eq!(
            body["steps"][0]["logs"][0]["content"]["content"],
            json!("line one\nline two\n"),
            "the text read from the file"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formatted_body_in_the_documents_is_sent_instead_of_the_payload_and_signed() {
    // A Buildbot report generator's formatter output: sent as Python's json.dumps writes
    // it, not our payload, and `format_fn`/`want*` do not touch it.
    let receiver = Receiver::start(0).await.unwrap();
    let mut reporter = common::configured(&json!({
        "serverUrl": receiver.origin(),
        "wantProperties": true,
        "format_fn": "{\"ours\": 1}",
        "headers": {"X-Team": "ci"},
        "signingScheme": "github",
        "signingSecret": "s3cret",
    }))
    .await;
    let mut documents: Value =
        serde_json::from_str(&common::sample_documents("finished", 7)).unwrap();
    documents["body"] = json!({"state": "build successful", "n": 1.5, "big": 12345678901234567890u64,
        "names": ["Grüße", "🚀"], "nested": {"z": null, "a": [true, false]}});
    let outcome = reporter
        .report_json(Event::Finished, &documents.to_string())
        .await
        .expect("delivered");
    assert!(matches!(outcome, Outcome::Delivered(_)), "{outcome:?}");
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(
        String::from_utf8_lossy(&got[0].body),
        r#"{"state": "build successful", "n": 1.5, "big": 12345678901234567890, "names": ["Gr\u00fc\u00dfe", "\ud83d\ude80"], "nested": {"z": null, "a": [true, false]}}"#
    );
    assert_eq!(got[0].header("x-team"), Some("ci"));
    assert!(got[0].header("x-hub-signature-256").is_some());

    // Anything but an object or array is refused, naming `body`, and nothing is sent.
    documents["body"] = json!("text");
    match reporter
        .report_json(Event::Finished, &documents.to_string())
        .await
    {
        Err(HostError::Push(f)) => {
            assert!(
                matches!(&f.error, PushError::InvalidInput(e) if e.key == "body"),
                "{f:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        receiver.wait_for(2, Duration::from_millis(300)).await.len(),
        1
    );
}
