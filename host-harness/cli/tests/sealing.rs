//! The outbox at rest (#23): no credential in the SQLite files or a PostgreSQL dump; a
//! row altered, copied or written by hand is a dead letter that sends nothing and opens
//! no file; a rotated password reaches queued events through `reseal`; `keygen`; a
//! PostgreSQL outbox without a key; an outbox written by the previous release
//! (`fixtures/outbox-v3/`) sealed on its first open and delivered.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::postgres::Postgres;
use common::{documents, free_port, temp_dir, workspace};
use serde_json::json;
use status_push_cli::receiver::{Receiver, Recorded, Reply};
use status_push_host::outbox::KEY_FILE_ENV;

const PASSWORD: &str = "pw-S3CRET-4711";
const NEW_PASSWORD: &str = "pw-R0TATED-2024";
const SIGNING: &str = "gh-S3CRET-0815";
const TOKEN: &str = "tok-S3CRET-42";
const INBOUND: &str = "in-S3CRET-99-inbound-token";

/// The secrets, and the forms they take on the wire.
fn needles() -> Vec<String> {
    vec![
        PASSWORD.into(),
        SIGNING.into(),
        TOKEN.into(),
        INBOUND.into(),
        basic(PASSWORD),
    ]
}

fn basic(password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"))
}

/// The CLI with no key file in its environment (each test says which it gives).
fn cli() -> tokio::process::Command {
    let mut command = common::cli("sealing-tests-cache");
    command.env_remove(KEY_FILE_ENV);
    command
}

/// Runs the CLI; returns (exit code, stdout, stderr).
async fn run(args: &[&str]) -> (i32, String, String) {
    run_with(cli(), args).await
}

async fn run_with(mut command: tokio::process::Command, args: &[&str]) -> (i32, String, String) {
    let out = command.args(args).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A configuration with a password, a bearer header and a signing secret.
fn with_secrets(origin: &str, password: &str) -> serde_json::Value {
    json!({"serverUrl": format!("{origin}/hooks/ci"), "user": "alice", "password": password,
           "headers": {"X-Auth-Token": format!("Bearer {TOKEN}")},
           "signingScheme": "github", "signingSecret": SIGNING, "maxAttempts": 1})
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The bytes of a SQLite outbox: the file, its WAL and its shared memory.
fn sqlite_bytes(path: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(b) = std::fs::read(format!("{path}{suffix}")) {
            bytes.extend_from_slice(&b);
        }
    }
    bytes
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    for needle in needles() {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{what} holds a secret ({needle})"
        );
    }
}

fn contains(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A receiver answering `status`.
async fn answering(status: u16) -> Receiver {
    Receiver::start_with(0, Arc::new(move |_: &Recorded| Reply::from(status)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_sqlite_files_from_push_or_serve() {
    let dir = temp_dir("sealing-files");
    let build = workspace().join("tests/fixtures/buildbot/default_start_finish/started.json");
    let build = build.to_str().unwrap();
    let outbox = dir.join("outbox.sqlite");
    let outbox = outbox.to_str().unwrap();
    // Delivered, kept pending (500), kept as a dead letter (400).
    for (name, status, code) in [("ok", 200, 0), ("failing", 500, 1), ("refusing", 400, 1)] {
        let receiver = answering(status).await;
        let config = write(
            &dir,
            &format!("{name}.json"),
            &with_secrets(&receiver.origin(), PASSWORD).to_string(),
        );
        let (got, out, err) = run(&[
            "push", "--config", &config, "--event", "started", "--build", build, "--outbox", outbox,
        ])
        .await;
        assert_eq!(got, code, "{name}: {out}{err}");
        assert_eq!(receiver.requests().len(), 1, "{name}");
    }
    let (_, listed, _) = run(&["dead-letters", "--outbox", outbox]).await;
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert_no_secret("the SQLite outbox", &sqlite_bytes(outbox));
    // The key it was sealed with sits beside it, its owner's alone.
    let key = format!("{outbox}.key");
    assert_eq!(mode(Path::new(&key)), 0o600);

    // serve --outbox: the relay's inbound token is never stored; looked at while it runs
    // (its WAL in use) and after.
    let failing = answering(500).await;
    let mut relay = with_secrets(&failing.origin(), PASSWORD);
    relay["inboundToken"] = INBOUND.into();
    let relay = write(&dir, "relay.json", &relay.to_string());
    let served = dir.join("served.sqlite");
    let served = served.to_str().unwrap().to_string();
    let log = dir.join("serve.log");
    let mut child = cli()
        .args([
            "serve",
            "--config",
            &relay,
            "--listen",
            "127.0.0.1:0",
            "--outbox",
            &served,
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let (_, addr) = common::serve_address(&mut child, &log).await;
    let body = documents("started", 31);
    let (status, answer) = post(&addr, "/started", &format!("Bearer {INBOUND}"), &body).await;
    assert_eq!(status, 202, "{answer}");
    failing.wait_for(1, Duration::from_secs(20)).await;
    assert_no_secret("serve's outbox while it runs", &sqlite_bytes(&served));
    child.start_kill().unwrap();
    let _ = child.wait().await;
    assert_no_secret("serve's outbox", &sqlite_bytes(&served));
}

/// A POST of `body` to `serve` at `addr` with `authorization`: (status, answer).
async fn post(addr: &str, path: &str, authorization: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: {authorization}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut answer)).await;
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// One `started` event of build `buildid` queued for `origin`, which is down.
async fn queue_pending(dir: &Path, outbox: &str, origin: &str, buildid: i64) {
    let config = write(
        dir,
        &format!("config-{buildid}.json"),
        &with_secrets(origin, PASSWORD).to_string(),
    );
    let build = write(
        dir,
        &format!("build-{buildid}.json"),
        &documents("started", buildid),
    );
    let (code, out, err) = run(&[
        "push", "--config", &config, "--event", "started", "--build", &build, "--outbox", outbox,
    ])
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("pending"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_with_one_byte_changed_is_a_dead_letter_and_nothing_is_sent() {
    let dir = temp_dir("sealing-flip");
    let outbox = dir.join("outbox.sqlite");
    let outbox = outbox.to_str().unwrap();
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    queue_pending(&dir, outbox, &origin, 41).await;
    {
        let db = rusqlite::Connection::open(outbox).unwrap();
        let config: String = db
            .query_row("SELECT config FROM events", [], |r| r.get(0))
            .unwrap();
        let mut bytes = config.into_bytes();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
        db.execute(
            "UPDATE events SET config = ?1",
            [String::from_utf8(bytes).unwrap()],
        )
        .unwrap();
    }
    let receiver = Receiver::start(port).await.unwrap();
    let (code, out, err) = run(&["deliver", "--outbox", outbox, "--budget-seconds", "5"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("delivered: 0, dead letters: 1, pending: 0"),
        "{out}"
    );
    assert!(err.contains("not sealed by this outbox's key"), "{err}");
    let (_, listed, _) = run(&["dead-letters", "--outbox", outbox]).await;
    assert!(
        listed.contains("not sealed by this outbox's key"),
        "{listed}"
    );
    // Reported once: a second run finds nothing to do.
    let (_, out, _) = run(&["deliver", "--outbox", outbox, "--budget-seconds", "2"]).await;
    assert!(
        out.contains("delivered: 0, dead letters: 0, pending: 0"),
        "{out}"
    );
    assert!(receiver.requests().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_by_hand_send_nothing_and_open_no_file() {
    let dir = temp_dir("sealing-forged");
    let outbox = dir.join("outbox.sqlite");
    let outbox = outbox.to_str().unwrap();
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    queue_pending(&dir, outbox, &origin, 51).await;
    let elsewhere = Receiver::start(0).await.unwrap();
    // A file a forged row asks the host to read and send: its access time set in the
    // past, so a read would move it (relatime updates an access time older than the
    // modification).
    let secret_file = dir.join("secret.log");
    std::fs::write(&secret_file, "MARKER-FILE-S3CRET").unwrap();
    let long_ago = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&secret_file)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_accessed(long_ago))
        .unwrap();
    let mut forged_documents: serde_json::Value =
        serde_json::from_str(&documents("started", 52)).unwrap();
    forged_documents["steps"] = json!([{"stepid": 1, "number": 0, "name": "shell",
        "logs": [{"logid": 1, "name": "stdio", "content_file": secret_file.to_str().unwrap()}]}]);
    {
        let db = rusqlite::Connection::open(outbox).unwrap();
        let (sealed_config, sealed_documents): (String, String) = db
            .query_row("SELECT config, documents FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let target = format!("http://127.0.0.1:{}", elsewhere.addr().port());
        db.execute(
            "INSERT INTO destinations (target, shown, pending) VALUES (?1, ?1, 2)",
            [&target],
        )
        .unwrap();
        let forged = with_secrets(&elsewhere.origin(), PASSWORD).to_string();
        for (key, config, documents) in [
            // Plaintext pointing elsewhere, with a content_file.
            ("m|901", forged, forged_documents.to_string()),
            // A sealed row's values copied onto another row and destination.
            ("m|902", sealed_config, sealed_documents),
        ] {
            db.execute(
                "INSERT INTO events (destination_id, build_key, event, config, documents,
                                     created_at, expires_at)
                 SELECT id, ?2, 'started', ?3, ?4, strftime('%s', 'now'),
                        strftime('%s', 'now') + 86400
                 FROM destinations WHERE target = ?1",
                [&target, key, &config, &documents],
            )
            .unwrap();
            db.execute(
                "INSERT INTO chains (destination_id, build_key, pending)
                 SELECT id, ?2, 1 FROM destinations WHERE target = ?1",
                [&target, key],
            )
            .unwrap();
        }
    }
    let receiver = Receiver::start(port).await.unwrap();
    let (code, out, err) = run(&["deliver", "--outbox", outbox, "--budget-seconds", "5"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("delivered: 1, dead letters: 2, pending: 0"),
        "{out}"
    );
    assert_eq!(receiver.requests().len(), 1, "the real event went out");
    assert!(elsewhere.requests().is_empty(), "nothing went elsewhere");
    for request in receiver.requests() {
        assert!(!contains(&request.body, "MARKER-FILE"));
    }
    let accessed = std::fs::metadata(&secret_file).unwrap().accessed().unwrap();
    assert_eq!(accessed, long_ago, "the file was not opened");
    let (_, listed, _) = run(&["dead-letters", "--outbox", outbox]).await;
    let reasons: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(reasons.len(), 2, "{listed}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("not sealed by this outbox's key")),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_reaches_pending_events_and_dead_letters_through_reseal() {
    let dir = temp_dir("sealing-rotation");
    let outbox = dir.join("outbox.sqlite");
    let outbox = outbox.to_str().unwrap();
    // 0: down (503); 1: the password was rotated: only the new one is taken.
    let mode = Arc::new(AtomicU8::new(0));
    let receiver = {
        let mode = mode.clone();
        Receiver::start_with(
            0,
            Arc::new(move |r: &Recorded| {
                Reply::from(match mode.load(Ordering::SeqCst) {
                    0 => 503,
                    _ if r.header("authorization")
                        == Some(&format!("Basic {}", basic(NEW_PASSWORD))) =>
                    {
                        200
                    }
                    _ => 401,
                })
            }),
        )
        .await
        .unwrap()
    };
    let old = write(
        &dir,
        "old.json",
        &with_secrets(&receiver.origin(), PASSWORD).to_string(),
    );
    let push = |buildid: i64| {
        let build = write(
            &dir,
            &format!("b{buildid}.json"),
            &documents("started", buildid),
        );
        let old = old.clone();
        async move {
            run(&[
                "push", "--config", &old, "--event", "started", "--build", &build, "--outbox",
                outbox,
            ])
            .await
        }
    };
    let (_, out, _) = push(61).await;
    assert!(out.contains("pending"), "{out}");
    mode.store(1, Ordering::SeqCst);
    let (_, out, _) = push(62).await;
    assert!(out.contains("dead letter") && out.contains("401"), "{out}");
    let before = receiver.requests().len();

    let new = write(
        &dir,
        "new.json",
        &with_secrets(&receiver.origin(), NEW_PASSWORD).to_string(),
    );
    let (code, out, err) = run(&["reseal", "--outbox", outbox, "--config", &new]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("resealed: 2 "), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    // Nothing is resent by a reseal itself; the dead letter waits to be asked for.
    assert_eq!(receiver.requests().len(), before);
    let (code, _, err) = run(&["redeliver", "--outbox", outbox, "--all"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["deliver", "--outbox", outbox, "--budget-seconds", "10"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("delivered: 2, dead letters: 0, pending: 0"),
        "{out}"
    );
    let after = &receiver.requests()[before..];
    assert_eq!(after.len(), 2);
    for request in after {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Basic {}", basic(NEW_PASSWORD)).as_str())
        );
    }
    // Delivered events are gone: nothing is left to reseal.
    let (_, out, _) = run(&["reseal", "--outbox", outbox, "--config", &new]).await;
    assert!(out.starts_with("resealed: 0 "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_writes_an_owner_only_file_once_and_postgres_needs_a_key() {
    let dir = temp_dir("sealing-keygen");
    let key = dir.join("outbox.key");
    let key = key.to_str().unwrap();
    let (code, out, err) = run(&["keygen", key]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(KEY_FILE_ENV), "{out}");
    assert_eq!(mode(Path::new(key)), 0o600);
    let written = std::fs::read(key).unwrap();
    let (code, out, err) = run(&["keygen", key]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(key).unwrap(), written, "not overwritten");

    let url = format!("postgresql://ci:pg-S3CRET@127.0.0.1:{}/ci", free_port());
    let (code, _, err) = run(&["dead-letters", "--outbox", &url]).await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("keygen") && err.contains(KEY_FILE_ENV),
        "{err}"
    );
    assert!(!err.contains("pg-S3CRET"), "{err}");

    // A key file others may read is refused, naming the fix.
    std::fs::set_permissions(key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let outbox = dir.join("o.sqlite");
    let (code, _, err) = run(&[
        "dead-letters",
        "--outbox",
        outbox.to_str().unwrap(),
        "--outbox-key-file",
        key,
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_of_the_previous_release_is_sealed_on_first_open_and_delivered() {
    let dir = temp_dir("sealing-v3");
    let fixture = workspace().join("host-harness/cli/tests/fixtures/outbox-v3/outbox.sql");
    let outbox: PathBuf = dir.join("outbox.sqlite");
    rusqlite::Connection::open(&outbox)
        .unwrap()
        .execute_batch(&std::fs::read_to_string(&fixture).unwrap())
        .unwrap();
    std::fs::set_permissions(&outbox, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    {
        // Recorded with the previous release: its events would expire a week later.
        let db = rusqlite::Connection::open(&outbox).unwrap();
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
        db.execute(
            "UPDATE events SET expires_at = strftime('%s', 'now') + 86400",
            [],
        )
        .unwrap();
    }
    let outbox = outbox.to_str().unwrap();
    assert!(
        contains(&sqlite_bytes(outbox), PASSWORD),
        "the fixture is plaintext"
    );
    // The fixture's serverUrl: http://127.0.0.1:47311/hooks/ci.
    let receiver = Receiver::start(47311).await.unwrap();
    let (code, out, err) = run(&["deliver", "--outbox", outbox, "--budget-seconds", "10"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("delivered: 2, dead letters: 0, pending: 0"),
        "{out}"
    );
    let got = receiver.requests();
    assert_eq!(got.len(), 2);
    for request in &got {
        assert_eq!(request.path, "/hooks/ci");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Basic {}", basic(PASSWORD)).as_str())
        );
        assert_eq!(
            request.header("x-auth-token"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(request.header("x-hub-signature-256").is_some());
    }
    assert_no_secret("the migrated outbox", &sqlite_bytes(outbox));
    assert_eq!(mode(Path::new(&format!("{outbox}.key"))), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_a_pg_dump_and_a_swapped_row_is_a_dead_letter() {
    let pg = Postgres::start("sealing");
    let url = pg.url();
    let dir = temp_dir("sealing-pg");
    let keyed = || {
        let mut command = cli();
        command.env(KEY_FILE_ENV, common::key_file());
        command
    };
    let build = |buildid: i64| {
        write(
            &dir,
            &format!("b{buildid}.json"),
            &documents("started", buildid),
        )
    };
    // A pending event (500) and a dead letter (400).
    let failing = answering(500).await;
    let refusing = answering(400).await;
    for (receiver, buildid) in [(&failing, 71), (&refusing, 72)] {
        let config = write(
            &dir,
            &format!("c{buildid}.json"),
            &with_secrets(&receiver.origin(), PASSWORD).to_string(),
        );
        let build = build(buildid);
        let (code, out, err) = run_with(
            keyed(),
            &[
                "push", "--config", &config, "--event", "started", "--build", &build, "--outbox",
                &url,
            ],
        )
        .await;
        assert_eq!(code, 1, "{out}{err}");
    }
    assert_eq!(pg.sql("SELECT count(*) FROM status_push_events"), "2");
    let dump = pg.dump();
    assert!(
        contains(&dump, "status_push_events"),
        "a dump of the outbox"
    );
    assert_no_secret("pg_dump", &dump);

    // Another key is refused at open.
    let other = dir.join("other.key");
    status_push_host::outbox::KeyRing::write_new(&other).unwrap();
    let mut command = cli();
    command.env(KEY_FILE_ENV, &other);
    let (code, _, err) = run_with(command, &["dead-letters", "--outbox", &url]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sealed with another key"), "{err}");

    // The dead letter's sealed values copied onto the pending event: it does not open.
    pg.sql(
        "UPDATE status_push_events SET (config, documents) =
             (SELECT config, documents FROM status_push_events WHERE dead)
         WHERE NOT dead",
    );
    let failing_calls = failing.requests().len();
    let (code, out, err) = run_with(
        keyed(),
        &["deliver", "--outbox", &url, "--budget-seconds", "5"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("delivered: 0, dead letters: 1, pending: 0"),
        "{out}"
    );
    assert_eq!(failing.requests().len(), failing_calls);
    assert_eq!(
        refusing.requests().len(),
        1,
        "the copy did not go to its origin"
    );
    let (_, listed, _) = run_with(keyed(), &["dead-letters", "--outbox", &url]).await;
    assert!(
        listed.contains("not sealed by this outbox's key"),
        "{listed}"
    );
}

/// The PostgreSQL layout of schema version 3 (the previous release), as its migrations
/// left it.
const PG_V3: &str = "
    CREATE TABLE status_push_schema (version INTEGER NOT NULL);
    INSERT INTO status_push_schema VALUES (3);
    CREATE TABLE status_push_seen_webhook_ids (id TEXT PRIMARY KEY, seen_at BIGINT NOT NULL);
    CREATE TABLE status_push_destinations (
        id BIGSERIAL PRIMARY KEY, target TEXT NOT NULL UNIQUE, shown TEXT NOT NULL,
        failures BIGINT NOT NULL DEFAULT 0, open_until_ms BIGINT NOT NULL DEFAULT 0,
        last_error TEXT, pending BIGINT NOT NULL DEFAULT 0, dead BIGINT NOT NULL DEFAULT 0);
    CREATE TABLE status_push_chains (
        destination_id BIGINT NOT NULL, build_key TEXT NOT NULL,
        pending BIGINT NOT NULL DEFAULT 0, next_attempt_ms BIGINT NOT NULL DEFAULT 0,
        calls BIGINT NOT NULL DEFAULT 0, claim_token BIGINT,
        delivered_seq BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (destination_id, build_key));
    CREATE TABLE status_push_events (
        seq BIGSERIAL PRIMARY KEY, build_key TEXT NOT NULL, event TEXT NOT NULL,
        config TEXT NOT NULL, documents TEXT NOT NULL, created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL, delivery_id TEXT NOT NULL DEFAULT '',
        attempts BIGINT NOT NULL DEFAULT 0, dead BOOLEAN NOT NULL DEFAULT false,
        last_error TEXT, budget_ms BIGINT NOT NULL DEFAULT 0,
        destination_id BIGINT NOT NULL, prune_at BIGINT,
        retention_s BIGINT NOT NULL DEFAULT 2592000);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outbox_of_the_previous_release_is_sealed_on_first_open_and_delivered() {
    let pg = Postgres::start("sealing-v3");
    let receiver = Receiver::start(0).await.unwrap();
    pg.sql(PG_V3);
    let config = with_secrets(&receiver.origin(), PASSWORD).to_string();
    let documents = documents("started", 81);
    let quote = |text: &str| text.replace('\'', "''");
    pg.sql(&format!(
        "INSERT INTO status_push_destinations (target, shown, pending)
             VALUES ('{origin}', '{origin}', 1);
         INSERT INTO status_push_chains (destination_id, build_key, pending)
             VALUES (1, 'http://localhost:8080/|81', 1);
         INSERT INTO status_push_events (build_key, event, config, documents, created_at,
                                         expires_at, destination_id, budget_ms)
             VALUES ('http://localhost:8080/|81', 'started', '{config}', '{documents}',
                     extract(epoch FROM now())::bigint, extract(epoch FROM now())::bigint + 86400,
                     1, 30000);",
        origin = receiver.origin(),
        config = quote(&config),
        documents = quote(&documents),
    ));
    assert!(
        contains(&pg.dump(), PASSWORD),
        "the old layout is plaintext"
    );
    let mut command = cli();
    command.env(KEY_FILE_ENV, common::key_file());
    let (code, out, err) = run_with(
        command,
        &["deliver", "--outbox", &pg.url(), "--budget-seconds", "10"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("delivered: 1, dead letters: 0, pending: 0"),
        "{out}"
    );
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Basic {}", basic(PASSWORD)).as_str())
    );
    assert_eq!(pg.sql("SELECT version FROM status_push_schema"), "4");
    assert_no_secret("pg_dump after the migration", &pg.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_on_top_then_reseal_lets_the_old_key_go() {
    let dir = temp_dir("sealing-rotate-key");
    let outbox = dir.join("outbox.sqlite");
    let outbox = outbox.to_str().unwrap();
    let (old, new) = (dir.join("old.key"), dir.join("new.key"));
    for key in [&old, &new] {
        let (code, _, err) = run(&["keygen", key.to_str().unwrap()]).await;
        assert_eq!(code, 0, "{err}");
    }
    let key_file = dir.join("outbox.key");
    let keyed = |file: &Path| {
        let mut command = cli();
        command.env(KEY_FILE_ENV, file);
        command
    };
    std::fs::copy(&old, &key_file).unwrap();
    let port = free_port();
    let config = write(
        &dir,
        "config.json",
        &with_secrets(&format!("http://127.0.0.1:{port}"), PASSWORD).to_string(),
    );
    let build = write(&dir, "build.json", &documents("started", 91));
    let (code, out, err) = run_with(
        keyed(&key_file),
        &[
            "push", "--config", &config, "--event", "started", "--build", &build, "--outbox",
            outbox,
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    // The new key on top: it seals, the old one still opens.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&new).unwrap(),
        std::fs::read_to_string(&old).unwrap()
    );
    std::fs::write(&key_file, both).unwrap();
    let (code, out, err) = run_with(keyed(&key_file), &["reseal", "--outbox", outbox]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("resealed: 1 event(s)"), "{out}");
    // The old key gone: the outbox and its event open with the new one alone.
    let receiver = Receiver::start(port).await.unwrap();
    let (code, out, err) = run_with(
        keyed(&new),
        &["deliver", "--outbox", outbox, "--budget-seconds", "10"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("delivered: 1, dead letters: 0, pending: 0"),
        "{out}"
    );
    assert_eq!(receiver.requests().len(), 1);
    let (code, _, err) = run_with(keyed(&old), &["dead-letters", "--outbox", outbox]).await;
    assert_eq!(code, 2, "the old key alone no longer opens it: {err}");
}
