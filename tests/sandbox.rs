//! The host's sandbox against a deliberately hostile component
//! (`tests/misbehaving`): a loop is stopped by the epoch deadline, a memory balloon by the
//! per-instance limit, and a request to another origin is refused as `denied`. Each ends
//! as a typed result, and the host keeps serving.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use status_push_cli::receiver::Receiver;
use status_push_host::bindings::{Config, PushError};
use status_push_host::{Event, HostError, Limits, Runtime, RuntimeOptions};

fn hostile() -> Runtime {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-components/misbehaving.wasm");
    let options = RuntimeOptions {
        limits: Limits {
            memory_bytes: 32 << 20,
            parse_budget: Duration::from_secs(2),
            report_margin: Duration::from_secs(1),
        },
        ..RuntimeOptions::default()
    };
    Runtime::load_with(&path, &options).expect("run `cargo xtask wasm` to build the test component")
}

fn config(server_url: &str, behaviour: &str, target: &str) -> Config {
    Config {
        headers: vec![
            ("X-Misbehave".into(), behaviour.into()),
            ("X-Target".into(), target.into()),
        ],
        retry_deadline_ms: Some(1000),
        ..Config::new(server_url)
    }
}

async fn provoke(runtime: &Runtime, config: Config) -> Result<(), HostError> {
    // Records come from the real component's parser; the types are the world's.
    let mut parser = common::runtime().reporter().await.unwrap();
    let build = parser
        .parse_event(&common::sample_documents("started", 1))
        .await
        .unwrap();
    let mut reporter = runtime.reporter().await?;
    reporter.configure(config).await?;
    reporter.report(Event::Started, &build).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_by_the_deadline() {
    let runtime = hostile();
    let started = Instant::now();
    let result = provoke(&runtime, config("http://127.0.0.1:9/", "loop", "")).await;
    assert!(
        matches!(result, Err(HostError::TimeBudget { .. })),
        "{result:?}"
    );
    let took = started.elapsed();
    // Budget: the 1 s retry deadline plus the 1 s margin.
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // The host is fine: a fresh instance still works.
    assert!(runtime.reporter().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_balloon_is_stopped_by_the_limit() {
    let runtime = hostile();
    let started = Instant::now();
    let result = provoke(&runtime, config("http://127.0.0.1:9/", "balloon", "")).await;
    assert!(
        matches!(result, Err(HostError::OutOfMemory { .. })),
        "{result:?}"
    );
    // The variant says it was memory, not time; the bound only catches a hang.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(runtime.reporter().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_another_origin_is_denied_not_sent() {
    let allowed = Receiver::start(0).await.unwrap();
    let victim = Receiver::start(0).await.unwrap();
    let runtime = hostile();
    let target = victim.addr().to_string();
    let result = provoke(&runtime, config(&allowed.origin(), "elsewhere", &target)).await;
    match result {
        Err(HostError::Push(f)) => assert!(matches!(f.error, PushError::Denied(_)), "{f:?}"),
        other => panic!("expected a denied push, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        victim.requests().is_empty(),
        "nothing reached the other origin"
    );
    assert!(allowed.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_port_on_another_scheme_is_another_origin() {
    let receiver = Receiver::start(0).await.unwrap();
    let runtime = hostile();
    // Allowed: https on this port; requested: http on the same host and port.
    let allowed = format!("https://{}/", receiver.addr());
    let result = provoke(
        &runtime,
        config(&allowed, "elsewhere", &receiver.addr().to_string()),
    )
    .await;
    assert!(
        matches!(&result, Err(HostError::Push(f)) if matches!(f.error, PushError::Denied(_))),
        "{result:?}"
    );
    assert!(receiver.requests().is_empty());
}
