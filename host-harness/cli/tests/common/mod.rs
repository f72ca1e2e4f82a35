//! What the CLI's test files share: where the workspace and the built component are.

use std::path::{Path, PathBuf};

#[allow(dead_code)] // Only the PostgreSQL tests start a server.
pub mod postgres;

/// The workspace root: `host-harness/cli` is two levels below it.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host-harness/cli is two levels below the workspace")
        .to_path_buf()
}

/// The component `cargo xtask wasm` builds.
#[allow(dead_code)] // Not every test file pushes through the component.
pub fn wasm() -> PathBuf {
    let path = workspace().join("target/status-push.wasm");
    assert!(path.exists(), "build the component first: cargo xtask wasm");
    path
}

/// The recorded `default_start_finish` documents of `event`, as build `buildid`.
#[allow(dead_code)]
pub fn documents(event: &str, buildid: i64) -> String {
    let fixture = workspace().join(format!(
        "tests/fixtures/buildbot/default_start_finish/{event}.json"
    ));
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    doc["build"]["buildid"] = buildid.into();
    doc["build"]["number"] = buildid.into();
    doc.to_string()
}

/// A fresh, empty `status-push-NAME-PID` under the system's temporary directory.
#[allow(dead_code)]
pub fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("status-push-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A test's directory, removed when the test ends, unless it fails: what it holds is
/// then left for whoever reads the failure.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// An outbox key file made once per test process (mode 0600), for the outboxes given
/// one explicitly (a PostgreSQL outbox needs one). It outlives its process (no test owns
/// it), so it goes under `target/tmp`, which `cargo clean` empties, not the system's.
#[allow(dead_code)]
pub fn key_file() -> PathBuf {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("test-outbox-{}.key", std::process::id()));
        let _ = std::fs::remove_file(&path);
        status_push_host::outbox::KeyRing::write_new(&path).unwrap();
        path
    })
    .clone()
}

/// The keys of [`key_file`].
#[allow(dead_code)]
pub fn test_keys() -> status_push_host::outbox::KeyRing {
    status_push_host::outbox::KeyRing::read(&key_file()).unwrap()
}

/// A call that ended well, as a settle takes it (for tests that claim and settle by
/// hand).
#[allow(dead_code)]
pub fn ended() -> Result<status_push_host::Outcome, status_push_host::HostError> {
    Ok(status_push_host::Outcome::Skipped(
        status_push_host::bindings::SkipReason::Builder,
    ))
}

/// A call that ran out of time (an environmental failure: its event stays pending), as
/// a settle takes it.
#[allow(dead_code)]
pub fn timed_out() -> Result<status_push_host::Outcome, status_push_host::HostError> {
    Err(status_push_host::HostError::TimeBudget {
        budget: std::time::Duration::from_secs(1),
        doing: "a test",
    })
}

/// What pruning tests start from, settled by hand (no courier) for the destination of
/// `config_json`: `delivered` builds delivered, each leaving a chain with no event;
/// build `dead|1` whose event is a dead letter; build `pending|1` whose event waits.
#[allow(dead_code)]
pub async fn delivered_dead_and_pending(
    outbox: &status_push_host::outbox::Outbox,
    config_json: &str,
    destination: &str,
    delivered: usize,
) {
    use status_push_host::outbox::Accepted;
    let started = documents("started", 1);
    let keys: Vec<String> = (0..delivered)
        .map(|i| format!("delivered|{i}"))
        .chain(["dead|1".into(), "pending|1".into()])
        .collect();
    let accepted = |build_key| Accepted {
        config_json,
        destination,
        event: status_push_host::Event::Started,
        documents_json: &started,
        build_key,
        dead_after: std::time::Duration::from_secs(3_600),
        retention: std::time::Duration::from_secs(3_600),
        max_pending: u64::MAX,
        report_budget: std::time::Duration::from_secs(30),
        webhook_id: None,
    };
    let (delivered_keys, last) = keys.split_at(delivered);
    for chunk in delivered_keys.chunks(500) {
        let events: Vec<Accepted<'_>> = chunk.iter().map(|k| accepted(k)).collect();
        outbox.accept_batch(&events).await.unwrap();
    }
    let mut settled = 0;
    while settled < delivered {
        let claimed = outbox.claim(500).await.unwrap();
        assert!(!claimed.is_empty(), "{settled} of {delivered} claimed");
        let ok = ended();
        for head in &claimed {
            outbox.settle(head, Some(&ok)).await.unwrap();
        }
        settled += claimed.len();
    }
    outbox.accept_batch(&[accepted(&last[0])]).await.unwrap();
    let dead = outbox.claim(1).await.unwrap().remove(0);
    outbox.settle(&dead, None).await.unwrap();
    outbox.accept_batch(&[accepted(&last[1])]).await.unwrap();
    let counts = outbox.counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (1, 1));
}

/// Asserts that `redeliver` refuses dead letter `seq` as superseded.
#[allow(dead_code)]
pub async fn assert_superseded(outbox: &status_push_host::outbox::Outbox, seq: i64) {
    use status_push_host::outbox::{OutboxError, Redeliver};
    match outbox.redeliver(&Redeliver::Seq(seq), false).await {
        Err(OutboxError::Superseded(refused)) => assert_eq!(refused, seq),
        other => panic!("{other:?}"),
    }
}

/// A loopback port nothing listens on (at the time of asking).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `status-push`, with both components and a compile cache named `cache` under
/// `target/tmp`; killed when dropped.
#[allow(dead_code)]
pub fn cli(cache: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_status-push"));
    command
        .env(
            "STATUS_PUSH_WASM",
            workspace().join("target/status-push.wasm"),
        )
        .env(
            "STATUS_PUSH_RELAY_WASM",
            workspace().join("target/status-push-relay.wasm"),
        )
        .env(
            "STATUS_PUSH_CACHE_DIR",
            workspace().join("target/tmp").join(cache),
        )
        .kill_on_drop(true);
    command
}

/// The first line a started `serve` prints, and the `HOST:PORT` it listens on; panics
/// with the log at `log` if `serve` exits first.
#[allow(dead_code)]
pub async fn serve_address(child: &mut tokio::process::Child, log: &Path) -> (String, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let stdout = child.stdout.take().expect("serve's stdout is piped");
    let line = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("serve starts")
    .unwrap()
    .unwrap_or_else(|| {
        panic!(
            "serve exited: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    });
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split([' ', '(']).next())
        .map(|a| a.trim_end_matches(':').to_string())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (line, addr)
}
