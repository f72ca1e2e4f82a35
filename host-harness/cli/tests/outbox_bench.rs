//! Benchmark, not a test (ignored; docs/delivery-and-outbox.md, "Choosing an outbox backend"): events per second
//! delivered from one outbox by 1, 2 and 4 `status-push deliver` workers sharing a
//! PostgreSQL server, and by one worker on SQLite. Each run queues the same events first
//! (not timed), then times the workers from their start until every one has exited with
//! nothing pending. Both backends flush their commits (PostgreSQL `fsync = on`, SQLite
//! `synchronous = FULL`).
//!
//! ```sh
//! cargo xtask wasm && cargo test --release -p status-push-cli --test outbox_bench -- --ignored --nocapture
//! ```
//! `OUTBOX_BENCH_EVENTS` (default 2000) sets the number of events: `started` and
//! `finished` of half as many builds.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::{documents, wasm};
use serde_json::json;
use status_push_cli::receiver::Receiver;
use status_push_host::outbox::{Location, Outbox};
use status_push_host::{Event, Runtime};

/// Queues `events` events (not timed), then runs `workers` deliver processes until the
/// outbox is empty; returns the wall time of the delivery.
async fn run(
    runtime: &Runtime,
    location: &str,
    receiver: &Receiver,
    events: i64,
    workers: usize,
) -> Duration {
    let outbox = Outbox::open(&Location::parse(location.as_ref()).unwrap())
        .await
        .unwrap();
    let config = json!({"serverUrl": format!("{}/hook", receiver.origin())}).to_string();
    for n in 0..events {
        let (event, name) = if n % 2 == 0 {
            (Event::Started, "started")
        } else {
            (Event::Finished, "finished")
        };
        let doc = documents(name, 10_000 + n / 2);
        outbox.enqueue(runtime, &config, event, &doc).await.unwrap();
    }
    assert_eq!(outbox.counts().await.unwrap().pending, events as u64);
    let before = receiver.requests().len();
    let clock = Instant::now();
    let mut children = Vec::new();
    for _ in 0..workers {
        children.push(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_status-push"))
                .env("STATUS_PUSH_WASM", wasm())
                .args(["deliver", "--outbox", location, "--budget-seconds", "600"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for child in &mut children {
        assert!(child.wait().await.unwrap().success());
    }
    let took = clock.elapsed();
    assert_eq!(outbox.counts().await.unwrap().pending, 0);
    assert!(receiver.requests().len() - before >= events as usize);
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it with --ignored --nocapture"]
async fn outbox_backends_events_per_second() {
    let events: i64 = std::env::var("OUTBOX_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let runtime = Runtime::load(&wasm()).unwrap();
    let receiver = Receiver::start(0).await.unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{events} events (started + finished of {} builds); load before: {}",
        events / 2,
        load.trim()
    );
    let pg = Postgres::start_durable("bench");
    for workers in [1, 2, 4] {
        // A fresh database per run, so each starts from the same empty tables.
        let db = format!("bench{workers}");
        pg.sql(&format!("CREATE DATABASE {db}"));
        let url = pg.url_of(&db);
        let took = run(&runtime, &url, &receiver, events, workers).await;
        println!(
            "postgresql, {workers} worker(s): {events} delivered in {:.2}s = {:.0} events/s",
            took.as_secs_f64(),
            events as f64 / took.as_secs_f64()
        );
    }
    let dir = std::env::temp_dir().join(format!("status-push-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("outbox.sqlite");
    let took = run(&runtime, file.to_str().unwrap(), &receiver, events, 1).await;
    println!(
        "sqlite, 1 worker: {events} delivered in {:.2}s = {:.0} events/s",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
