//! A build with a 1 GiB log, streamed from disk (`content_file`) through the component
//! to a loopback receiver. Ignored by default (it writes 1 GiB and takes a while):
//! `cargo test -p status-push-cli --test huge_log -- --ignored --nocapture`.
//! Asserts the host's peak RSS under 100 MiB, the component's linear memory under 16 MiB,
//! valid JSON at the receiver, and log content byte-identical to the file.

mod common;

use common::workspace;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use status_push_cli::receiver::Receiver;

const LOG_BYTES: usize = 1 << 30;

/// Writes about `LOG_BYTES` of log lines (with non-ASCII, quotes and tabs to escape).
fn write_log(path: &Path) -> usize {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut written = 0;
    let mut n = 0u64;
    while written < LOG_BYTES {
        let line = format!("line {n:09}: Grüße 🚀 \"quoted\"\tand a backslash \\ — ok\n");
        out.write_all(line.as_bytes()).unwrap();
        written += line.len();
        n += 1;
    }
    out.flush().unwrap();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes and pushes 1 GiB; run with --ignored"]
async fn a_1_gib_log_streams_within_the_memory_limits() {
    let dir = std::env::temp_dir().join(format!("status-push-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("big.log");
    let size = write_log(&log);

    let mut documents: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace().join("tests/fixtures/buildbot/want_steps_logs_content/finished.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let first = &mut documents["steps"][0]["logs"][0];
    first.as_object_mut().unwrap().remove("content");
    first["content_file"] = json!(log);
    let build = dir.join("finished.json");
    std::fs::write(&build, documents.to_string()).unwrap();

    let receiver = Receiver::start(0).await.unwrap();
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        json!({"serverUrl": format!("{}/big", receiver.origin()), "wantSteps": true, "wantLogs": true,
               "timeoutSeconds": 120, "retryDeadlineSeconds": 600})
        .to_string(),
    )
    .unwrap();

    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_status-push"))
        .args(["push", "--stats", "--config", config.to_str().unwrap()])
        .args(["--event", "finished", "--build", build.to_str().unwrap()])
        .env(
            "STATUS_PUSH_WASM",
            workspace().join("target/status-push.wasm"),
        )
        .output()
        .await
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");

    // "stats: peak RSS N KiB, component memory N KiB"
    let numbers: Vec<u64> = stdout
        .lines()
        .find(|l| l.starts_with("stats:"))
        .expect("a stats line")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (rss_kib, component_kib) = (numbers[0], numbers[1]);
    eprintln!(
        "1 GiB log: {size} bytes in {took:.1?} ({:.0} MB/s), host peak RSS {} MiB, component memory {} MiB",
        size as f64 / took.as_secs_f64() / 1e6,
        rss_kib / 1024,
        component_kib / 1024
    );
    assert!(rss_kib < 100 * 1024, "host peak RSS {rss_kib} KiB");
    assert!(
        component_kib < 16 * 1024,
        "component memory {component_kib} KiB"
    );

    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let body: Value = serde_json::from_slice(&got[0].body).expect("the receiver got valid JSON");
    let content = body["steps"][0]["logs"][0]["content"]["content"]
        .as_str()
        .expect("log text");
    let source = std::fs::read(&log).unwrap();
    assert!(
        content.as_bytes() == source.as_slice(),
        "log content differs from the file"
    );
    assert_eq!(body["steps"][0]["logs"][0]["content"]["logid"], 60);
    let _ = std::fs::remove_dir_all(&dir);
}
