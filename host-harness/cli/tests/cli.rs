//! The `status-push` binary against loopback receivers: exit codes, one-line reasons and
//! the requests that arrive.

mod common;

use common::{temp_dir, wasm, workspace};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use status_push_cli::receiver::{Receiver, Recorded, Reply};

async fn run(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_status-push"))
        .args(args)
        .env("STATUS_PUSH_WASM", wasm())
        .output()
        .await
        .expect("the CLI runs")
}

/// `status-push-bench` with `args`, measuring the same component as [`run`].
async fn run_bench(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_status-push-bench"))
        .args(args)
        .env("STATUS_PUSH_WASM", wasm())
        .output()
        .await
        .expect("status-push-bench runs")
}

fn write_config(dir: &Path, config: &Value) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_sends_each_fixture_case_like_buildbot() {
    let root = workspace().join("tests/fixtures/buildbot");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let dir = temp_dir("fixtures");
    for case in cases.iter().filter(|c| c.join("expected.json").exists()) {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let receiver = Receiver::start(0).await.unwrap();
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("config.json")).unwrap())
                .unwrap();
        let server_url = config["serverUrl"].as_str().unwrap();
        let path = &server_url[server_url.find("://").unwrap() + 3..];
        let path = &path[path.find('/').unwrap_or(path.len())..];
        config["serverUrl"] = Value::String(format!("{}{path}", receiver.origin()));
        let config_path = write_config(&dir, &config);
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap())
                .unwrap();
        let mut total = 0;
        for event in ["started", "finished"] {
            let build = case.join(format!("{event}.json"));
            let out = run(&[
                "push",
                "--config",
                config_path.to_str().unwrap(),
                "--event",
                event,
                "--build",
                build.to_str().unwrap(),
            ])
            .await;
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{name}/{event}: {out:?}");
            let want = expected[event].as_array().unwrap();
            if want.is_empty() {
                assert!(stdout.starts_with("skipped: "), "{name}/{event}: {stdout}");
            } else {
                assert_eq!(stdout.trim(), "delivered: HTTP 200", "{name}/{event}");
            }
            total += want.len();
            let got = receiver.wait_for(total, Duration::from_secs(5)).await;
            assert_eq!(got.len(), total, "{name}/{event}");
            if let Some(want) = want.first() {
                assert_eq!(got[total - 1].path, want["path"], "{name}/{event}");
                assert_eq!(
                    std::str::from_utf8(&got[total - 1].body).unwrap(),
                    want["body"].as_str().unwrap(),
                    "{name}/{event}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_exits_non_zero_with_a_one_line_reason() {
    let receiver = Receiver::start_with(0, Arc::new(|_: &Recorded| Reply::from(500)))
        .await
        .unwrap();
    let dir = temp_dir("500");
    let config = write_config(
        &dir,
        &serde_json::json!({"serverUrl": receiver.origin(), "maxAttempts": 1}),
    );
    let build = workspace().join("tests/fixtures/buildbot/default_start_finish/started.json");
    let out = run(&[
        "push",
        "--config",
        config.to_str().unwrap(),
        "--event",
        "started",
        "--build",
        build.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("HTTP 500"), "{stderr}");
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_exits_2_naming_the_key_and_sends_nothing() {
    let receiver = Receiver::start(0).await.unwrap();
    let dir = temp_dir("badconfig");
    let config = write_config(
        &dir,
        &serde_json::json!({"serverUrl": receiver.origin(), "wantLogs": true}),
    );
    let build = workspace().join("tests/fixtures/buildbot/default_start_finish/started.json");
    let out = run(&[
        "push",
        "--config",
        config.to_str().unwrap(),
        "--event",
        "started",
        "--build",
        build.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wantLogs") && stderr.contains("wantSteps"),
        "{stderr}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_both_events_as_received() {
    let out = run(&["demo"]).await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("=== Started event: delivered: HTTP 200"),
        "{stdout}"
    );
    assert!(
        stdout.contains("=== Finished event: delivered: HTTP 200"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("POST /buildbot/status").count(),
        2,
        "{stdout}"
    );
    assert!(
        stdout.contains("\"state_string\": \"build successful\""),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_bad_config_before_it_listens() {
    let relay = workspace().join("target/status-push-relay.wasm");
    assert!(relay.exists(), "build the relay first: cargo xtask wasm");
    let dir = temp_dir("serve-badconfig");
    // A FIFO as caFile would block an open() for reading until a writer came: it must be
    // refused from its metadata, before serve listens.
    let fifo = dir.join("ca.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let cases = [
        (
            serde_json::json!({"serverUrl": "http://127.0.0.1:9/", "wantStep": true}),
            "wantStep".to_string(),
        ),
        (
            serde_json::json!({"serverUrl": "https://127.0.0.1:9/", "caFile": fifo}),
            "caFile".to_string(),
        ),
        (
            serde_json::json!({"serverUrl": "https://127.0.0.1:9/", "caFile": &*dir}),
            "caFile".to_string(),
        ),
    ];
    for (config, key) in cases {
        let config = write_config(&dir, &config);
        let serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_status-push"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--relay")
            .arg(&relay)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), serve)
            .await
            .expect("serve exits instead of listening")
            .expect("the CLI runs");
        assert_eq!(out.status.code(), Some(2), "{key}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(&key), "{stderr}");
    }
}

/// `status-push-bench component`'s last five lines are read by scripts: the three of issue
/// #15, then both worlds' CPU per event and `cpu ratio best-world/native-same-work` (issue
/// #25). Its attribution runs include the ones docs/performance.md's table quotes; `--only`
/// prints one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_ends_with_cpu_per_event_and_the_two_ratios() {
    let out = run_bench(&["component", "--events", "40", "--concurrency", "1,2"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for row in [
        "component, reused, parse + report",
        "component p3, reused, records",
        "component p3, reused, report-json",
        "one-thread runtime, records",
        "one-thread runtime, native same work",
    ] {
        assert!(stdout.contains(row), "no {row:?} in\n{stdout}");
    }
    let lines: Vec<&str> = stdout.lines().collect();
    let [cpu, native, replay, by_world, best] = lines[lines.len() - 5..] else {
        panic!("fewer than five lines:\n{stdout}");
    };
    let micros = |text: &str| {
        let value = text.strip_suffix(" µs").expect("in µs");
        value.parse::<f64>().expect("a number") > 0.0
            && value.split('.').nth(1).map(str::len) == Some(1)
    };
    let cpu = cpu
        .strip_prefix("cpu per event: component ")
        .unwrap_or_else(|| panic!("{cpu}"));
    let figures: Vec<&str> = cpu
        .split(", native same work ")
        .flat_map(|part| part.split(", byte replay "))
        .collect();
    assert_eq!(figures.len(), 3, "{cpu}");
    assert!(figures.iter().all(|f| micros(f)), "{cpu}");
    let by_world = by_world
        .strip_prefix("cpu per event by world: p2 ")
        .unwrap_or_else(|| panic!("{by_world}"));
    let figures: Vec<&str> = by_world
        .split(", p3 ")
        .flat_map(|part| part.split(", native same work "))
        .collect();
    assert_eq!(figures.len(), 3, "{by_world}");
    assert!(figures.iter().all(|f| micros(f)), "{by_world}");
    for (line, label) in [
        (native, "ratio component/native-same-work: "),
        (replay, "ratio component/byte-replay: "),
        (best, "cpu ratio best-world/native-same-work: "),
    ] {
        let ratio = line.strip_prefix(label).unwrap_or_else(|| panic!("{line}"));
        assert_eq!(ratio.split('.').nth(1).map(str::len), Some(2), "{line}");
        assert!(ratio.parse::<f64>().unwrap() > 0.0, "{line}");
    }

    for only in ["parsed", "one-thread"] {
        let out = run_bench(&["component", "--only", only, "--events", "20"]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{only}: {out:?}");
        assert_eq!(stdout.lines().count(), 1, "{only}: {stdout}");
        assert!(
            stdout.contains("20 events, concurrency 1"),
            "{only}: {stdout}"
        );
    }
}

/// `status-push-bench outbox` ends with exactly the two lines of issue #22, after its
/// couriers (tasks of their own) delivered every due event and none of the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_bench_ends_with_claim_p99_and_delivered_per_second() {
    let dir = temp_dir("outbox-bench");
    let file = dir.join("bench.sqlite");
    let _ = std::fs::remove_file(&file);
    let out = run_bench(&[
        "outbox",
        "--outbox",
        file.to_str().unwrap(),
        "--pending",
        "30",
        "--due",
        "60",
        "--workers",
        "3",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    let [.., summary, cpu, p99, rate] = lines[..] else {
        panic!("fewer than four lines:\n{stdout}");
    };
    // The backlog's destination refuses: only the due events reach the receiver.
    assert!(summary.contains("receiver got 60 request(s)"), "{summary}");
    // The machine's CPU over the timed part, per delivered event (Linux's /proc/stat).
    let per_event = cpu
        .strip_prefix("machine cpu: ")
        .and_then(|rest| rest.split_once("busy, "))
        .and_then(|(_, rest)| rest.split_once(" µs per delivered event"))
        .unwrap_or_else(|| panic!("{cpu}"))
        .0;
    assert!(per_event.parse::<u64>().is_ok(), "{cpu}");
    let p99 = p99
        .strip_prefix("claim p99: ")
        .and_then(|rest| rest.strip_suffix(" ms at 30 pending"))
        .unwrap_or_else(|| panic!("{p99}"));
    assert!(p99.parse::<f64>().unwrap() > 0.0, "{p99}");
    let rate = rate
        .strip_prefix("delivered per second: ")
        .and_then(|rest| rest.strip_suffix(" with 3 workers"))
        .unwrap_or_else(|| panic!("{rate}"));
    assert!(rate.parse::<u64>().unwrap() > 0, "{rate}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The benchmarks live in `status-push-bench`: the product binary has no `bench`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_push_help_has_no_bench() {
    let out = run(&["--help"]).await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("push"), "{stdout}");
    assert!(!stdout.to_lowercase().contains("bench"), "{stdout}");
}

/// Outbox URLs print through the one redactor: a password written as users write it,
/// not percent-encoded, never reaches the terminal, whatever it holds.
#[tokio::test]
async fn an_outbox_password_never_reaches_the_terminal() {
    for password in ["Ab/cd+=", "a?b", "x#y", "p@ss", "a:b", "50%off", "Ab%2Fcd"] {
        // Port 1 on loopback: refused at once, so the command fails and says why.
        let url = format!("postgresql://ci:{password}@127.0.0.1:1/x");
        let out = run(&["dead-letters", "--outbox", &url]).await;
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{printed}");
        assert!(printed.contains("<redacted>"), "{password}: {printed}");
        assert!(!printed.contains(password), "{password}: {printed}");
    }
}
