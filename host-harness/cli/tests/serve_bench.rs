//! How many requests `status-push serve` accepts per second, with `--outbox` (202 once
//! the event is durably queued) and without (200 once the relay component pushed it),
//! and the p50/p99 time to the answer. A benchmark, not a timed test: ignored by default.
//!
//! cargo test --release -p status-push-cli --test serve_bench -- --ignored --nocapture
//!
//! `--outbox` is a fresh SQLite file unless `STATUS_PUSH_SERVE_BENCH_OUTBOX` names another
//! outbox, such as an empty PostgreSQL database (its key from
//! `STATUS_PUSH_OUTBOX_KEY_FILE`, which `serve` inherits).

mod common;

use common::{documents, workspace};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use status_push_cli::receiver::Receiver;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

const TOKEN: &str = "t0ken-of-sixteen-chars";
const CLIENTS: usize = 4;
const RUN: Duration = Duration::from_secs(5);

/// Starts `serve` with `args`; returns the child and its address.
async fn serve(dir: &Path, config: &Value, args: &[&str]) -> (tokio::process::Child, String) {
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_status-push"))
        .env(
            "STATUS_PUSH_RELAY_WASM",
            workspace().join("target/status-push-relay.wasm"),
        )
        .env(
            "STATUS_PUSH_CACHE_DIR",
            workspace().join("target/tmp/serve-bench-cache"),
        )
        .args(["serve", "--config", path.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split([' ', '(']).next())
        .map(|a| a.trim_end_matches(':').to_string())
        .unwrap();
    (child, addr)
}

/// `CLIENTS` keep-alive clients POST for `RUN`; returns (answers per second, p50, p99).
async fn measure(addr: &str, expect: u16) -> (f64, Duration, Duration) {
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS as i64 {
        let addr = addr.to_string();
        clients.spawn(async move {
            let stream = TcpStream::connect(&addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            let mut n = 0;
            while started.elapsed() < RUN {
                n += 1;
                let body = documents("started", 10_000_000 * (client + 1) + n);
                let request = hyper::Request::post("/started")
                    .header("host", &addr)
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let sent = Instant::now();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await.unwrap();
                latencies.push(sent.elapsed());
                assert_eq!(status, expect);
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = clients.join_next().await {
        latencies.extend(done.unwrap());
    }
    let took = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (
        latencies.len() as f64 / took.as_secs_f64(),
        at(0.5),
        at(0.99),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn serve_throughput_with_and_without_an_outbox() {
    let receiver = Receiver::start(0).await.unwrap();
    let dir = std::env::temp_dir().join(format!("status-push-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = json!({"serverUrl": format!("{}/hook", receiver.origin()), "inboundToken": TOKEN});
    let outbox = std::env::var("STATUS_PUSH_SERVE_BENCH_OUTBOX")
        .unwrap_or_else(|_| dir.join("outbox.sqlite").display().to_string());
    println!(
        "{} build: {CLIENTS} keep-alive clients for {RUN:?}, POST /started, bearer token, {} outbox",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        // The kind only: a database URL may carry a password.
        if outbox.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let (child, addr) = serve(&dir, &config, &["--outbox", &outbox]).await;
    let (rate, p50, p99) = measure(&addr, 202).await;
    println!(
        "serve --outbox (202 once queued):   {rate:7.0} requests/s  p50 {:7.2} ms  p99 {:7.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    drop(child);
    let (child, addr) = serve(&dir, &config, &[]).await;
    let (rate, p50, p99) = measure(&addr, 200).await;
    println!(
        "serve (200 once pushed):            {rate:7.0} requests/s  p50 {:7.2} ms  p99 {:7.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
