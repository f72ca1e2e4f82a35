//! The outbox through the CLI: a burst of events to a receiver that is down, a `kill -9`
//! in the middle, then `deliver` once the receiver is back. Every event must arrive
//! exactly once (by delivery id) and in per-build order.

mod common;

use common::workspace;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use status_push_cli::receiver::Receiver;

fn cli() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_status-push"));
    command.env(
        "STATUS_PUSH_WASM",
        workspace().join("target/status-push.wasm"),
    );
    command
}

/// `status-push push --outbox OUTBOX --config CONFIG --event EVENT --build BUILD`.
fn push(outbox: &Path, config: &Path, event: &str, build: &Path) -> tokio::process::Command {
    let mut command = cli();
    command
        .args([
            "push",
            "--outbox",
            outbox.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .args(["--event", event, "--build", build.to_str().unwrap()]);
    command
}

fn documents(dir: &Path, event: &str, buildid: i64) -> PathBuf {
    let path = dir.join(format!("{event}-{buildid}.json"));
    std::fs::write(&path, common::documents(event, buildid)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pusher_loses_nothing_and_order_holds_per_build() {
    let dir = std::env::temp_dir().join(format!("status-push-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let outbox = dir.join("outbox.sqlite");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let quick = dir.join("quick.json");
    std::fs::write(
        &quick,
        json!({"serverUrl": url, "maxAttempts": 1}).to_string(),
    )
    .unwrap();
    let patient = dir.join("patient.json");
    std::fs::write(
        &patient,
        json!({"serverUrl": url, "maxAttempts": 100, "retryDeadlineSeconds": 120}).to_string(),
    )
    .unwrap();

    // A burst, interleaving builds, while the receiver is down: each stays pending.
    let burst = [
        ("started", 101),
        ("started", 102),
        ("finished", 101),
        ("started", 103),
        ("finished", 102),
        ("finished", 103),
    ];
    for (event, buildid) in burst {
        let out = push(&outbox, &quick, event, &documents(&dir, event, buildid))
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("pending: "),
            "{out:?}"
        );
    }

    // One more pusher, still retrying when it is killed with SIGKILL.
    let mut victim = push(
        &outbox,
        &patient,
        "started",
        &documents(&dir, "started", 104),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Kill it only once its event is in the outbox: that write is what must survive.
    let queued = async {
        loop {
            let location = status_push_host::outbox::Location::Sqlite(outbox.clone());
            let pending = match status_push_host::outbox::Outbox::open(&location).await {
                Ok(o) => o.pending().await.map(|p| p.len()).unwrap_or(0),
                Err(_) => 0,
            };
            if pending == 7 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), queued)
        .await
        .expect("the last pusher queued its event");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the pusher is still retrying"
    );
    victim.kill().await.unwrap(); // SIGKILL: no cleanup runs
    let _ = victim.wait().await;

    // The receiver comes up; a fresh process delivers what is pending.
    let receiver = Receiver::start(port).await.unwrap();
    let out = cli()
        .args([
            "deliver",
            "--outbox",
            outbox.to_str().unwrap(),
            "--budget-seconds",
            "30",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "delivered: 7, dead letters: 0, pending: 0"
    );

    let got = receiver.wait_for(7, Duration::from_secs(5)).await;
    let mut first_arrival: HashMap<String, usize> = HashMap::new();
    let mut events: HashMap<String, (i64, bool)> = HashMap::new();
    for (i, request) in got.iter().enumerate() {
        let id = request
            .header("idempotency-key")
            .expect("delivery id")
            .to_string();
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        events.insert(
            id.clone(),
            (
                body["buildid"].as_i64().unwrap(),
                body["complete"].as_bool().unwrap(),
            ),
        );
        assert!(
            first_arrival.insert(id, i).is_none(),
            "a delivery id arrived twice"
        );
    }
    assert_eq!(got.len(), 7, "every event exactly once");
    let arrival = |buildid: i64, finished: bool| {
        events
            .iter()
            .find(|(_, e)| **e == (buildid, finished))
            .map(|(id, _)| first_arrival[id])
            .unwrap_or_else(|| panic!("build {buildid} finished={finished} never arrived"))
    };
    for buildid in [101, 102, 103] {
        assert!(
            arrival(buildid, false) < arrival(buildid, true),
            "build {buildid} out of order"
        );
    }
    arrival(104, false);

    let letters = cli()
        .args(["dead-letters", "--outbox", outbox.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&letters.stdout).lines().count(),
        1,
        "only the header"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_becomes_a_listed_dead_letter() {
    let dir = std::env::temp_dir().join(format!("status-push-dead-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let outbox = dir.join("outbox.sqlite");
    let receiver = Receiver::start_with(
        0,
        std::sync::Arc::new(|_: &_| status_push_cli::receiver::Reply::from(410)),
    )
    .await
    .unwrap();
    let config = dir.join("config.json");
    std::fs::write(&config, json!({"serverUrl": receiver.origin()}).to_string()).unwrap();
    let out = push(&outbox, &config, "started", &documents(&dir, "started", 9))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("dead letter: "),
        "{out:?}"
    );
    let letters = cli()
        .args(["dead-letters", "--outbox", outbox.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let listing = String::from_utf8_lossy(&letters.stdout);
    let rows: Vec<&str> = listing.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{listing}");
    assert!(
        rows[0].contains("Started") && rows[0].contains("HTTP 410") && rows[0].contains("sp_"),
        "{listing}"
    );
    assert_eq!(
        receiver.requests().len(),
        1,
        "a permanent failure is not retried"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
