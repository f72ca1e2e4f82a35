//! The PostgreSQL outbox, shared by several hosts, against a real server each test starts
//! itself (`common::postgres`): three `deliver` workers through an outage, a flapping
//! receiver and a `kill -9`; `push`, `dead-letters`, `redeliver` and `serve` on one
//! database; what a bad URL, bad credentials or a newer schema say; a wake-up by
//! `LISTEN`; a claim's look-ahead against a circuit another host opened; sealed rows kept
//! out of TOAST; claims on one plan beside a backlog; and deliveries recorded in groups
//! (a head counted once when twice in a group, a refused group recorded call by call);
//! dead letters and redelivery against another holder's work; a call stopped when its
//! renewals fail; pruning of the chains delivered builds leave; a chain's count set
//! right without counting out an event written meanwhile.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::{assert_superseded, documents, ended, free_port, temp_dir, timed_out, wasm};
use serde_json::{json, Value};
use status_push_cli::receiver::{Receiver, Recorded, Reply};
use status_push_host::outbox::{Accepted, Location, Outbox, OutboxError};
use status_push_host::{Event, Runtime};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn cli() -> Command {
    let mut command = common::cli("postgres-tests-cache");
    command.env(status_push_host::outbox::KEY_FILE_ENV, common::key_file());
    command
}

/// What the receiver answered, in arrival order: (path, delivery id, status, when).
type Log = Arc<Mutex<Vec<(String, String, u16, Instant)>>>;

/// A receiver that answers 503 for the first 400 ms of every 1.2 s and 200 otherwise,
/// logging each answer.
async fn flapping_receiver(port: u16, log: Log, epoch: Instant) -> Receiver {
    Receiver::start_with(
        port,
        Arc::new(move |r: &Recorded| {
            let status = if epoch.elapsed().as_millis() % 1_200 < 400 {
                503
            } else {
                200
            };
            let id = r.header("idempotency-key").unwrap_or_default().to_string();
            log.lock()
                .unwrap()
                .push((r.path.clone(), id, status, Instant::now()));
            Reply::from(status)
        }),
    )
    .await
    .unwrap()
}

fn delivered(log: &Log) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(_, _, status, _)| *status == 200)
        .count()
}

const BUILDS: i64 = 20;
const PER_BUILD: i64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_deliver_everything_once_in_order_through_outage_flapping_and_a_kill() {
    let pg = Postgres::start("workers");
    let url = pg.url();
    let port = free_port();
    // 200 events over 20 builds, queued while the receiver is down. Each goes to its own
    // path, so each has its own delivery id (server URL, master, build, kind); within a
    // build, event i must arrive after event i - 1.
    let runtime = Runtime::load(&wasm()).unwrap();
    let outbox = Outbox::open_with(
        &Location::parse(url.as_ref()).unwrap(),
        Some(common::test_keys()),
    )
    .await
    .unwrap();
    for i in 0..PER_BUILD {
        for build in 0..BUILDS {
            let (event, name) = if i % 2 == 0 {
                (Event::Started, "started")
            } else {
                (Event::Finished, "finished")
            };
            let config = json!({"serverUrl": format!("http://127.0.0.1:{port}/build/{build}/{i}")});
            outbox
                .enqueue(
                    &runtime,
                    &config.to_string(),
                    event,
                    &documents(name, 1000 + build),
                )
                .await
                .unwrap();
        }
    }
    assert_eq!(outbox.counts().await.unwrap().pending, 200);

    let dir = temp_dir("pg-workers");
    let mut workers = Vec::new();
    for n in 0..3 {
        let log = std::fs::File::create(dir.join(format!("worker-{n}.log"))).unwrap();
        workers.push(
            cli()
                .args(["deliver", "--outbox", &url, "--budget-seconds", "240"])
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    // Down for 2 s, then flapping: 503 windows, and the listener gone for 1.5 s once a
    // quarter of the events are in.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log: Log = Arc::default();
    let epoch = Instant::now();
    let mut receiver = flapping_receiver(port, log.clone(), epoch).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    while delivered(&log) < 50 {
        assert!(Instant::now() < deadline, "stuck at {}", delivered(&log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped = Instant::now();
    drop(receiver);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    receiver = flapping_receiver(port, log.clone(), epoch).await;
    while delivered(&log) < 100 {
        assert!(Instant::now() < deadline, "stuck at {}", delivered(&log));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Mid-run: whatever worker 0 holds now is in flight, and its claims outlive it.
    let killed = Instant::now();
    workers[0].start_kill().unwrap();
    workers[0].wait().await.unwrap();
    for (n, worker) in workers.iter_mut().enumerate().skip(1) {
        let status = tokio::time::timeout(Duration::from_secs(200), worker.wait())
            .await
            .unwrap_or_else(|_| panic!("worker {n} finishes"))
            .unwrap();
        let mut out = String::new();
        let mut lines = BufReader::new(worker.stdout.take().unwrap()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            out.push_str(&line);
        }
        assert!(status.success(), "worker {n}: {status:?} {out}");
        assert!(out.contains("pending: 0"), "worker {n}: {out}");
    }
    drop(receiver);

    let log = log.lock().unwrap().clone();
    let mut first_ok: HashMap<String, Instant> = HashMap::new();
    let mut oks: HashMap<String, usize> = HashMap::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    for (path, id, status, at) in &log {
        let known = ids.entry(path.clone()).or_insert_with(|| id.clone());
        assert_eq!(
            known, id,
            "{path}: the delivery id changed between attempts"
        );
        if *status == 200 {
            first_ok.entry(path.clone()).or_insert(*at);
            *oks.entry(path.clone()).or_default() += 1;
        }
    }
    assert_eq!(first_ok.len(), 200, "every event delivered");
    let distinct: std::collections::HashSet<&String> = ids.values().collect();
    assert_eq!(distinct.len(), 200, "one delivery id per event");
    // A build's event i is never attempted before its event i - 1 was delivered.
    for (path, _, _, at) in &log {
        let mut parts = path.trim_start_matches("/build/").split('/');
        let (build, i): (i64, i64) = (
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
        );
        if i > 0 {
            let before = first_ok[&format!("/build/{build}/{}", i - 1)];
            assert!(
                before <= *at,
                "{path} was attempted before /build/{build}/{} was delivered",
                i - 1
            );
        }
    }
    // Duplicates only from calls answered 200 whose answer or record was lost: those in
    // flight when the receiver went away, and worker 0's when it was killed (at most one
    // courier's calls to one destination). Each duplicated event is put down to the first
    // of the two after its first 200, within 5 s; one answered at any other time and sent
    // again would be a claim that was not fenced.
    let (mut at_drop, mut at_kill, mut elsewhere) = (0, 0, Vec::new());
    for (path, count) in oks.iter().filter(|(_, count)| **count > 1) {
        let first = first_ok[path];
        let near = |at: Instant| first <= at && at - first < Duration::from_secs(5);
        if near(dropped) {
            at_drop += count - 1;
        } else if near(killed) {
            at_kill += count - 1;
        } else {
            elsewhere.push(path);
        }
    }
    let duplicates: usize = oks.values().map(|n| n - 1).sum();
    println!(
        "requests: {}, delivered: 200, duplicates by delivery id: {duplicates} \
         ({at_drop} from the receiver's going away, {at_kill} from the kill)",
        log.len()
    );
    assert!(
        elsewhere.is_empty(),
        "answered away from both disruptions, yet sent again: {elsewhere:?}"
    );
    assert!(
        at_kill <= status_push_host::outbox::schedule::MAX_IN_FLIGHT_PER_DESTINATION,
        "{at_kill} duplicates from one courier's kill"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM status_push_events"),
        "0",
        "nothing pending or dead"
    );
}

/// A `push` configuration for `receiver`'s `/hook` and build `buildid`'s started
/// documents, written into `dir`: (config, build).
fn push_inputs(dir: &Path, receiver: &Receiver, buildid: i64) -> (PathBuf, PathBuf) {
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        json!({"serverUrl": format!("{}/hook", receiver.origin())}).to_string(),
    )
    .unwrap();
    let build = dir.join("started.json");
    std::fs::write(&build, documents("started", buildid)).unwrap();
    (config, build)
}

/// Runs the CLI; returns (exit code, stdout, stderr).
async fn run(args: &[&str]) -> (i32, String, String) {
    let out = cli().args(args).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_dead_letters_redeliver_and_serve_share_one_database() {
    let pg = Postgres::start("cli");
    let url = pg.url();
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let receiver = {
        let refuse = refuse.clone();
        Receiver::start_with(
            0,
            Arc::new(move |_: &Recorded| {
                Reply::from(if refuse.load(std::sync::atomic::Ordering::Relaxed) {
                    400
                } else {
                    200
                })
            }),
        )
        .await
        .unwrap()
    };
    let dir = temp_dir("pg-cli");
    let (config, build) = push_inputs(&dir, &receiver, 77);
    let push = [
        "push",
        "--outbox",
        &url,
        "--config",
        config.to_str().unwrap(),
        "--event",
        "started",
        "--build",
        build.to_str().unwrap(),
    ];
    let (code, out, _) = run(&push).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("dead letter: "), "{out}");
    let (code, out, err) = run(&["dead-letters", "--outbox", &url]).await;
    assert_eq!(code, 0, "{err}");
    let line = out.lines().nth(1).unwrap_or_else(|| panic!("{out}"));
    let delivery_id = receiver.requests()[0]
        .header("idempotency-key")
        .unwrap()
        .to_string();
    assert!(line.contains(&delivery_id), "{line}");
    assert!(line.contains("HTTP 400"), "{line}");

    let (code, out, err) = run(&["redeliver", "--outbox", &url, "--id", &delivery_id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("pending again: 1"), "{out}");
    assert!(!out.contains(common::postgres::PASSWORD), "{out}");
    refuse.store(false, std::sync::atomic::Ordering::Relaxed);

    // `serve` on the same database delivers the redelivered event, and what it accepts.
    let mut serve = cli()
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--outbox", &url])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let (line, addr) = common::serve_address(&mut serve, &dir.join("serve.log")).await;
    assert!(!line.contains(common::postgres::PASSWORD), "{line}");
    let body = documents("finished", 77);
    let request = format!(
        "POST /finished HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let requests = receiver.wait_for(3, Duration::from_secs(60)).await;
    assert_eq!(
        requests.len(),
        3,
        "400, then started and finished delivered"
    );
    let events: Vec<String> = requests[1..]
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            body["complete"].to_string()
        })
        .collect();
    assert_eq!(events, ["false", "true"], "started, then finished");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.sql("SELECT count(*) FROM status_push_events") != "0" {
        assert!(Instant::now() < deadline, "the outbox empties");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_database_url_credentials_or_schema_is_one_line_and_queues_nothing() {
    let pg = Postgres::start("bad");
    let receiver = Receiver::start(0).await.unwrap();
    let dir = temp_dir("pg-bad");
    let (config, build) = push_inputs(&dir, &receiver, 5);
    let push = |outbox: String| {
        let config = config.to_str().unwrap().to_string();
        let build = build.to_str().unwrap().to_string();
        async move {
            run(&[
                "push", "--outbox", &outbox, "--config", &config, "--event", "started", "--build",
                &build,
            ])
            .await
        }
    };
    let one_line = |err: &str, wanted: &str| {
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(wanted), "wanted {wanted:?} in {err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(!err.contains(common::postgres::PASSWORD), "{err}");
    };

    // Nothing listens there.
    let nobody = format!(
        "postgresql://postgres:s3cret@127.0.0.1:{}/postgres",
        free_port()
    );
    let (code, _, err) = push(nobody.clone()).await;
    assert_eq!(code, 3, "{err}");
    one_line(&err, "error connecting to server: Connection refused");
    let (code, _, err) = run(&["deliver", "--outbox", &nobody]).await;
    assert_eq!(code, 3, "{err}");
    one_line(&err, "postgres:<redacted>@127.0.0.1");

    // Wrong password.
    let wrong = format!(
        "postgresql://postgres:s3cret@127.0.0.1:{}/postgres",
        pg.port
    );
    let (code, _, err) = push(wrong.clone()).await;
    assert_eq!(code, 3, "{err}");
    one_line(&err, "password authentication failed");

    // Not a URL that parses.
    let (code, _, err) = run(&[
        "dead-letters",
        "--outbox",
        "postgresql://postgres:s3cret@127.0.0.1:notaport/postgres",
    ])
    .await;
    // An unusable --outbox is a usage error, like any other invalid argument.
    assert_eq!(code, 2, "{err}");
    one_line(&err, "invalid connection string");

    // A schema from a newer status-push: refused before anything is written.
    let (code, _, err) = run(&["dead-letters", "--outbox", &pg.url()]).await;
    assert_eq!(code, 0, "{err}");
    pg.sql("UPDATE status_push_schema SET version = 99");
    let (code, _, err) = push(pg.url()).await;
    assert_eq!(code, 3, "{err}");
    one_line(
        &err,
        "schema is version 99, newer than this status-push's 4",
    );
    assert_eq!(pg.sql("SELECT count(*) FROM status_push_events"), "0");
    assert_eq!(pg.sql("SELECT version FROM status_push_schema"), "99");

    assert!(
        receiver.requests().is_empty(),
        "no event is sent unless it was queued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_is_tls_verified_against_sslrootcert_alone() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pg = Postgres::start_tls("tls", &cert.cert.pem(), &cert.signing_key.serialize_pem());
    let dir = temp_dir("pg-tls");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();

    let verified = format!("{}?sslmode=require&sslrootcert={}", pg.url(), ca.display());
    let (code, _, err) = run(&["dead-letters", "--outbox", &verified]).await;
    assert_eq!(code, 0, "{err}");
    // The connection really is TLS, as the server sees it.
    let outbox = Outbox::open_with(
        &Location::parse(verified.as_ref()).unwrap(),
        Some(common::test_keys()),
    )
    .await
    .unwrap();
    assert_eq!(outbox.counts().await.unwrap().pending, 0);
    // A `webhook-id` is taken once within the replay window: the id and the event are
    // one statement.
    let documents = documents("started", 5);
    let accepted = Accepted {
        config_json: r#"{"serverUrl": "http://127.0.0.1:9/"}"#,
        destination: "http://127.0.0.1:9/",
        event: Event::Started,
        documents_json: &documents,
        build_key: "http://localhost:8080/|5",
        dead_after: Duration::from_secs(60),
        retention: Duration::from_secs(86_400),
        max_pending: u64::MAX,
        report_budget: Duration::from_secs(5),
        webhook_id: Some("msg_once"),
    };
    outbox.accept(&accepted).await.unwrap();
    assert!(matches!(
        outbox.accept(&accepted).await,
        Err(OutboxError::Replayed(id)) if id == "msg_once"
    ));
    assert_eq!(outbox.counts().await.unwrap().pending, 1);
    assert_eq!(
        pg.sql(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'status-push'"
        ),
        "t"
    );

    // A server certificate no configured root vouches for: refused, one line.
    let unverified = format!("{}?sslmode=require", pg.url());
    let (code, _, err) = run(&["dead-letters", "--outbox", &unverified]).await;
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(!err.contains(common::postgres::PASSWORD), "{err}");

    // An sslrootcert is trusted alone, as libpq trusts it: here the system's roots (the
    // host's, from SSL_CERT_FILE) vouch for the server, and another CA's certificate is
    // the sslrootcert.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let other_ca = dir.join("other.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let system = |url: &str| {
        let mut cli = cli();
        cli.args(["dead-letters", "--outbox", url])
            .env("SSL_CERT_FILE", &ca);
        cli
    };
    let out = system(&unverified).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the system's roots vouch for it"
    );
    let elsewhere = format!("{unverified}&sslrootcert={}", other_ca.display());
    let out = system(&elsewhere).output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    // (Both certificates carry rcgen's default name, so the other one is tried as the
    // issuer and its signature does not match.)
    assert!(err.contains("invalid peer certificate"), "{err}");

    // An sslrootcert that is not a certificate file.
    let bad = format!("{}?sslmode=require&sslrootcert={}", pg.url(), dir.display());
    let (code, _, err) = run(&["dead-letters", "--outbox", &bad]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sslrootcert"), "{err}");
}

/// An idle courier on PostgreSQL `LISTEN`s: an event queued by another host wakes it at
/// once. Its idle poll is set to a minute here, so only the notification can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_event_wakes_an_idle_courier_through_listen_notify() {
    use status_push_host::outbox::Courier;

    let pg = Postgres::start("listen");
    let location = Location::parse(pg.url().as_ref()).unwrap();
    let runtime = Runtime::load(&wasm()).unwrap();
    let receiver = Receiver::start(0).await.unwrap();
    let courier_side = Outbox::open_with(&location, Some(common::test_keys()))
        .await
        .unwrap();
    let writer = Outbox::open_with(&location, Some(common::test_keys()))
        .await
        .unwrap();
    // The listener itself hears a queued event.
    let mut listener = courier_side
        .listen()
        .await
        .unwrap()
        .expect("PostgreSQL listens");
    writer
        .enqueue(
            &runtime,
            &json!({"serverUrl": "http://127.0.0.1:9/x"}).to_string(),
            Event::Started,
            &documents("started", 76),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), listener.next())
        .await
        .expect("notified")
        .expect("the listening connection is up");
    let wake = tokio::sync::Notify::new();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let courier = Courier::new(&courier_side, &runtime).with_poll(Duration::from_secs(60));
    let config = json!({"serverUrl": format!("{}/hook", receiver.origin())}).to_string();
    let timing = async {
        // Idle long enough for the courier to be listening and asleep.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let queued = Instant::now();
        writer
            .enqueue(&runtime, &config, Event::Started, &documents("started", 77))
            .await
            .unwrap();
        let got = receiver.wait_for(1, Duration::from_secs(10)).await;
        let took = queued.elapsed();
        let _ = stop.send(true);
        (got.len(), took)
    };
    let run = courier.run(
        &wake,
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
        Duration::from_secs(1),
    );
    let ((arrived, took), ()) = tokio::join!(timing, run);
    assert_eq!(arrived, 1);
    assert!(took < Duration::from_secs(5), "woken after {took:?}");
}

/// A claim takes the chains of the destination the last claim found due alone in the
/// same round trip as its look at the due destinations, but only if that destination's
/// circuit is still closed: here another host opens it right after a claim, and nothing
/// more goes to it, while a destination that comes due meanwhile is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_ahead_of_its_look_respects_a_circuit_opened_meanwhile() {
    use status_push_host::outbox::{Courier, Observer, Report};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Opens A's circuit for a minute, as another host's failed call would, right after
    /// the first claim that took chains: the next claim's look-ahead is then stale.
    struct OpenAfterFirstClaim<'a> {
        pg: &'a Postgres,
        /// A's port, in the destination as shown.
        a: u16,
        first: AtomicUsize,
        claimed: tokio::sync::Notify,
    }
    impl Observer for OpenAfterFirstClaim<'_> {
        fn reported(&self, _: &Report<'_>) {}
        fn claimed(&self, _: Duration, claimed: usize) {
            if claimed > 0
                && self
                    .first
                    .compare_exchange(0, claimed, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                let opened = self.pg.sql(&format!(
                    "UPDATE status_push_destinations SET failures = 1,
                         open_until_ms = floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + 60000
                     WHERE shown LIKE '%:{}%' RETURNING id",
                    self.a
                ));
                assert!(!opened.is_empty(), "no destination {}", self.a);
                self.claimed.notify_one();
            }
        }
    }

    let pg = Postgres::start("lookahead");
    let location = Location::parse(pg.url().as_ref()).unwrap();
    let runtime = Runtime::load(&wasm()).unwrap();
    let a = Receiver::start_with(0, Arc::new(|_: &Recorded| Reply::from(503)))
        .await
        .unwrap();
    let b = Receiver::start(0).await.unwrap();
    let outbox = Outbox::open_with(&location, Some(common::test_keys()))
        .await
        .unwrap();
    let config = |receiver: &Receiver| {
        json!({"serverUrl": format!("{}/hook", receiver.origin()), "maxAttempts": 1}).to_string()
    };
    let (config_a, config_b) = (config(&a), config(&b));
    let queue = |config: &str, builds: std::ops::Range<i64>| {
        let (outbox, runtime, config) = (&outbox, &runtime, config.to_owned());
        async move {
            for build in builds {
                let documents = documents("started", build);
                let queued = outbox.enqueue(runtime, &config, Event::Started, &documents);
                queued.await.unwrap();
            }
        }
    };
    queue(&config_a, 0..40).await;
    let observer = OpenAfterFirstClaim {
        pg: &pg,
        a: a.addr().port(),
        first: AtomicUsize::new(0),
        claimed: tokio::sync::Notify::new(),
    };
    let wake = tokio::sync::Notify::new();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let courier = Courier::new(&outbox, &runtime).with_observer(&observer);
    let scenario = async {
        observer.claimed.notified().await;
        queue(&config_b, 100..105).await;
        let got_b = b.wait_for(5, Duration::from_secs(10)).await.len();
        // Long enough for claims that ignored A's open circuit to call it again.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let _ = stop.send(true);
        got_b
    };
    let run = courier.run(
        &wake,
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
        Duration::from_secs(1),
    );
    let (got_b, ()) = tokio::join!(scenario, run);
    assert_eq!(got_b, 5, "B waited behind A's open circuit");
    let first = observer.first.load(Ordering::SeqCst);
    assert!(first > 0);
    assert_eq!(
        a.requests().len(),
        first,
        "A was called after its circuit opened"
    );
}

/// Sealed rows are stored whole, uncompressed: an event of a few kilobytes stays in its
/// page (no TOAST write, read and delete per event), and one larger than a page goes out
/// of line and arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_events_stay_in_their_page_and_larger_ones_arrive_whole() {
    let pg = Postgres::start("storage");
    let location = Location::parse(pg.url().as_ref()).unwrap();
    let runtime = Runtime::load(&wasm()).unwrap();
    let receiver = Receiver::start(0).await.unwrap();
    let outbox = Outbox::open_with(&location, Some(common::test_keys()))
        .await
        .unwrap();
    let config = json!({"serverUrl": format!("{}/hook", receiver.origin())}).to_string();
    let toast = || {
        pg.sql(
            "SELECT pg_relation_size(reltoastrelid) FROM pg_class
             WHERE oid = 'status_push_events'::regclass",
        )
    };
    for build in 0..20 {
        outbox
            .enqueue(
                &runtime,
                &config,
                Event::Started,
                &documents("started", build),
            )
            .await
            .unwrap();
    }
    assert_eq!(toast(), "0", "2 KB events were moved out of their page");
    assert_eq!(
        pg.sql(
            "SELECT string_agg(attname || '=' || attstorage::text, ',' ORDER BY attname)
             FROM pg_attribute WHERE attrelid = 'status_push_events'::regclass
             AND attname IN ('config', 'documents')"
        ),
        "config=e,documents=e"
    );
    let mut large: Value = serde_json::from_str(&documents("started", 99)).unwrap();
    let marker = "x".repeat(20_000);
    large["build"]["state_string"] = json!(marker);
    outbox
        .enqueue(&runtime, &config, Event::Started, &large.to_string())
        .await
        .unwrap();
    assert_ne!(toast(), "0", "a 20 KB event stayed in an 8 KB page");
    let summary = outbox
        .deliver(&runtime, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!((summary.delivered, summary.pending), (21, 0));
    let got = receiver.requests();
    assert_eq!(got.len(), 21);
    assert!(
        got.iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains(&marker)),
        "the large event's documents did not arrive whole"
    );
}

/// An event for `destination` in chain `build_key`, due now, kept an hour.
fn due<'a>(
    config_json: &'a str,
    destination: &'a str,
    event: Event,
    documents_json: &'a str,
    build_key: &'a str,
) -> Accepted<'a> {
    Accepted {
        config_json,
        destination,
        event,
        documents_json,
        build_key,
        dead_after: Duration::from_secs(3_600),
        retention: Duration::from_secs(3_600),
        max_pending: u64::MAX,
        report_budget: Duration::from_secs(30),
        webhook_id: None,
    }
}

/// Beside a backlog behind one destination's open circuit (most chains under one
/// destination: the skew that made the server plan every claim anew; 38 plans for 37
/// claims here before), the courier's claims keep the plan made when first run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_beside_a_backlog_keep_one_plan() {
    use status_push_host::outbox::Courier;
    const BACKLOG: usize = 20_000;
    const DUE: usize = 200;

    let pg = Postgres::start("plans");
    pg.sql("CREATE EXTENSION pg_stat_statements");
    let location = Location::parse(pg.url().as_ref()).unwrap();
    let runtime = Runtime::load(&wasm()).unwrap();
    let live = Receiver::start(0).await.unwrap();
    let outbox = Outbox::open_with(&location, Some(common::test_keys()))
        .await
        .unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let documents = documents("started", 1);
    let queue = |origin: &str, n: usize, tag: &str| {
        let config = json!({"serverUrl": format!("{origin}/hook")}).to_string();
        let keys: Vec<String> = (0..n).map(|i| format!("{tag}|{i}")).collect();
        let (outbox, origin, documents) = (&outbox, origin.to_owned(), documents.clone());
        async move {
            let events: Vec<Accepted<'_>> = keys
                .iter()
                .map(|key| due(&config, &origin, Event::Started, &documents, key))
                .collect();
            outbox.accept_batch(&events).await.unwrap();
        }
    };
    queue(&dead, BACKLOG, "backlog").await;
    // Open for ten minutes, as after failed probes: the backlog is never due here.
    pg.sql(
        "UPDATE status_push_destinations SET failures = 5,
             open_until_ms = floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + 600000
         WHERE pending > 0",
    );
    queue(&live.origin(), DUE, "due").await;
    pg.sql("ANALYZE");
    pg.sql("SELECT pg_stat_statements_reset()");

    let wake = tokio::sync::Notify::new();
    let arrived = async {
        live.wait_for(DUE, Duration::from_secs(60)).await;
    };
    Courier::new(&outbox, &runtime)
        .run(&wake, arrived, Duration::from_secs(1))
        .await;
    let got = live.requests().len();
    assert_eq!(got, DUE);
    let counted = pg.sql(
        "SELECT sum(calls) || ' ' || sum(plans) FROM pg_stat_statements
         WHERE query LIKE 'WITH taken AS%'",
    );
    let (claims, plans) = counted.split_once(' ').expect("claims were counted");
    let (claims, plans): (u64, u64) = (claims.parse().unwrap(), plans.parse().unwrap());
    assert!(claims >= 10, "only {claims} claims: nothing to compare");
    // One plan per prepared claim statement, at most two of them.
    assert!(plans <= 2, "{plans} plans for {claims} claims");
}

/// A transaction's statements are prepared once per connection (`postgres/session.rs`),
/// not at each call: queueing twenty events one at a time plans the event's insert only
/// as often as the server chooses to (its first five custom plans, then one generic
/// plan), where text statements were planned, and prepared in a round trip of their own,
/// twenty times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactions_statements_are_prepared_once_per_connection() {
    let pg = Postgres::start("prepared");
    pg.sql("CREATE EXTENSION pg_stat_statements");
    let location = Location::parse(pg.url().as_ref()).unwrap();
    let runtime = Runtime::load(&wasm()).unwrap();
    let outbox = Outbox::open_with(&location, Some(common::test_keys()))
        .await
        .unwrap();
    let config = json!({"serverUrl": format!("http://127.0.0.1:{}/hook", free_port())});
    pg.sql("SELECT pg_stat_statements_reset()");
    for build in 0..20 {
        outbox
            .enqueue(
                &runtime,
                &config.to_string(),
                Event::Started,
                &documents("started", 1000 + build),
            )
            .await
            .unwrap();
    }
    let counted = pg.sql(
        "SELECT sum(calls) || ' ' || sum(plans) FROM pg_stat_statements
         WHERE query LIKE 'INSERT INTO status_push_events%'",
    );
    let (calls, plans) = counted.split_once(' ').expect("the inserts were counted");
    assert_eq!(calls, "20");
    let plans: u64 = plans.parse().unwrap();
    assert!(plans <= 6, "{plans} plans for 20 inserts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_ending_together_are_recorded_together_in_order() {
    use status_push_host::outbox::Courier;
    const BUILDS: i64 = 60;

    let pg = Postgres::start("together");
    pg.sql("CREATE EXTENSION pg_stat_statements");
    let location = Location::parse(pg.url().as_ref()).unwrap();
    let runtime = Runtime::load(&wasm()).unwrap();
    let receivers = [
        Receiver::start(0).await.unwrap(),
        Receiver::start(0).await.unwrap(),
    ];
    let outbox = Outbox::open_with(&location, Some(common::test_keys()))
        .await
        .unwrap();
    let mut queued = Vec::new();
    for receiver in &receivers {
        let config = json!({"serverUrl": format!("{}/hook", receiver.origin())}).to_string();
        for buildid in 1..=BUILDS {
            for (event, name) in [(Event::Started, "started"), (Event::Finished, "finished")] {
                queued.push((
                    config.clone(),
                    receiver.origin(),
                    event,
                    documents(name, buildid),
                    format!("b|{buildid}"),
                ));
            }
        }
    }
    let events: Vec<Accepted<'_>> = queued
        .iter()
        .map(|(config, origin, event, documents, key)| due(config, origin, *event, documents, key))
        .collect();
    outbox.accept_batch(&events).await.unwrap();
    pg.sql("SELECT pg_stat_statements_reset()");

    let each = 2 * BUILDS as usize;
    let wake = tokio::sync::Notify::new();
    let arrived = async {
        for receiver in &receivers {
            receiver.wait_for(each, Duration::from_secs(60)).await;
        }
    };
    Courier::new(&outbox, &runtime)
        .run(&wake, arrived, Duration::from_secs(5))
        .await;

    for receiver in &receivers {
        let mut seen: HashMap<i64, Vec<bool>> = HashMap::new();
        let requests = receiver.requests();
        assert_eq!(requests.len(), each, "each event once");
        for request in requests {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let complete = body["complete"].as_bool().expect("a build");
            seen.entry(body["buildid"].as_i64().unwrap())
                .or_default()
                .push(complete);
        }
        assert_eq!(seen.len(), BUILDS as usize);
        assert!(
            seen.values().all(|order| order == &[false, true]),
            "started before finished in every build"
        );
    }
    // Everything recorded: no event, chain or destination still counting one.
    let left = pg.sql(
        "SELECT (SELECT count(*) FROM status_push_events) || ' '
             || (SELECT coalesce(sum(pending), 0) FROM status_push_chains) || ' '
             || (SELECT coalesce(sum(pending), 0) FROM status_push_destinations) || ' '
             || (SELECT count(*) FROM status_push_chains WHERE claim_token IS NOT NULL)",
    );
    assert_eq!(
        left, "0 0 0 0",
        "events, chain and destination counts, claims"
    );
    // Fewer statements than deliveries: some were recorded together.
    let statements: u64 = pg
        .sql(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
             WHERE query LIKE 'WITH settled AS%'",
        )
        .parse()
        .unwrap();
    let deliveries = 2 * each as u64;
    assert!(
        statements > 0 && statements < deliveries,
        "{statements} statements recorded {deliveries} deliveries"
    );
}

/// For tests that claim and settle by hand, no courier: a server that counts statements,
/// an outbox on it, and the origin and configuration of a destination nothing answers at.
async fn settled_by_hand(name: &str) -> (Postgres, Outbox, String, String) {
    let pg = Postgres::start(name);
    pg.sql("CREATE EXTENSION pg_stat_statements");
    let location = Location::parse(pg.url().as_ref()).unwrap();
    let outbox = Outbox::open_with(&location, Some(common::test_keys()))
        .await
        .unwrap();
    let origin = format!("http://127.0.0.1:{}", free_port());
    let config = json!({"serverUrl": format!("{origin}/hook")}).to_string();
    (pg, outbox, origin, config)
}

/// One thread, so both calls are queued before the group is recorded.
#[tokio::test(flavor = "current_thread")]
async fn a_head_delivered_twice_in_one_group_is_counted_once() {
    let (pg, outbox, origin, config) = settled_by_hand("twice").await;
    let (started, finished) = (documents("started", 1), documents("finished", 1));
    let events: Vec<Accepted<'_>> = [(Event::Started, &started), (Event::Finished, &finished)]
        .into_iter()
        .map(|(event, documents)| due(&config, &origin, event, documents, "b|1"))
        .collect();
    outbox.accept_batch(&events).await.unwrap();
    let first = outbox.claim(4).await.unwrap();
    assert_eq!(first.len(), 1);
    // Its lease runs out while its call is in flight; the head is claimed again.
    pg.sql("UPDATE status_push_chains SET next_attempt_ms = 0");
    let second = outbox.claim(4).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].seq, first[0].seq);
    assert!(outbox.renew(&second[0]).await.unwrap(), "the new holder");
    pg.sql("SELECT pg_stat_statements_reset()");

    // Both calls end together: both deliveries go in one group.
    let (one, two) = (ended(), ended());
    let (a, b) = tokio::join!(
        outbox.settle(&first[0], Some(&one)),
        outbox.settle(&second[0], Some(&two))
    );
    use status_push_host::outbox::Settled;
    assert_eq!((a.unwrap(), b.unwrap()), (Settled::Done, Settled::Done));
    let statements = pg.sql(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
         WHERE query LIKE 'WITH settled AS%'",
    );
    assert_eq!(statements, "1", "one group");
    // `started` removed once; `finished` still counted, by its chain and destination.
    let left = pg.sql(
        "SELECT (SELECT count(*) FROM status_push_events) || ' '
             || (SELECT sum(pending) FROM status_push_chains) || ' '
             || (SELECT sum(pending) FROM status_push_destinations) || ' '
             || (SELECT count(*) FROM status_push_chains WHERE claim_token IS NOT NULL)",
    );
    assert_eq!(
        left, "1 1 1 0",
        "events, chain and destination counts, claims"
    );
    let next = outbox.claim(4).await.unwrap();
    assert_eq!(next.len(), 1, "the chain is free");
    assert_eq!(next[0].event, Event::Finished);
}

/// A group the server refuses (here a trigger that refuses any statement removing more
/// than one event, or `b|2`'s): each of its deliveries is recorded alone, so `b|1`'s is
/// recorded and `b|2`'s call hears its own error, its event left pending.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_group_records_each_delivery_alone_with_its_own_error() {
    let (pg, outbox, origin, config) = settled_by_hand("refused").await;
    let (one, two) = (documents("started", 1), documents("started", 2));
    outbox
        .accept_batch(&[
            due(&config, &origin, Event::Started, &one, "b|1"),
            due(&config, &origin, Event::Started, &two, "b|2"),
        ])
        .await
        .unwrap();
    let claimed = outbox.claim(4).await.unwrap();
    assert_eq!(claimed.len(), 2);
    pg.sql(
        "CREATE SEQUENCE refusals;
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF (SELECT count(*) FROM removed) > 1
                OR EXISTS (SELECT 1 FROM removed WHERE build_key = 'b|2') THEN
                 PERFORM nextval('refusals');
                 RAISE EXCEPTION 'refused by the test';
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER refuse AFTER DELETE ON status_push_events
             REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION refuse();
         SELECT pg_stat_statements_reset();",
    );

    // Both calls end together: one group, which the server refuses.
    let (first, second) = (ended(), ended());
    let (a, b) = tokio::join!(
        outbox.settle(&claimed[0], Some(&first)),
        outbox.settle(&claimed[1], Some(&second))
    );
    let by_build = |c: &status_push_host::outbox::Claimed| c.build_key.clone();
    let (ok, refused) = if by_build(&claimed[0]) == "b|1" {
        (a, b)
    } else {
        (b, a)
    };
    use status_push_host::outbox::Settled;
    assert_eq!(ok.unwrap(), Settled::Done, "b|1 recorded alone");
    let error = refused.expect_err("b|2's own error");
    assert!(
        format!("{error:?}").contains("refused by the test"),
        "{error:?}"
    );
    assert_eq!(
        pg.sql("SELECT last_value FROM refusals"),
        "2",
        "the group, then b|2 alone"
    );
    let recorded = pg.sql(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
         WHERE query LIKE 'WITH settled AS%'",
    );
    assert_eq!(recorded, "1", "b|1 alone");
    let left = pg.sql(
        "SELECT (SELECT string_agg(build_key, ' ') FROM status_push_events) || ' '
             || (SELECT sum(pending) FROM status_push_chains) || ' '
             || (SELECT sum(pending) FROM status_push_destinations)",
    );
    assert_eq!(left, "b|2 1 1", "b|2 pending, counted once");
}

/// A group that outlasts the statement timeout (here a trigger sleeps on any statement
/// removing more than one event): the server cancels it, and each of its deliveries is
/// recorded alone, after it, so neither is lost nor counted twice. Takes the 30 s timeout.
#[tokio::test(flavor = "current_thread")]
async fn a_group_that_times_out_records_each_delivery_alone() {
    use status_push_host::outbox::Settled;
    let (pg, outbox, origin, config) = settled_by_hand("timed-out").await;
    let documents: Vec<String> = (0..3).map(|i| documents("started", i)).collect();
    let keys = ["b|0", "b|1", "b|2"];
    let events: Vec<Accepted<'_>> = keys
        .iter()
        .zip(&documents)
        .map(|(key, d)| due(&config, &origin, Event::Started, d, key))
        .collect();
    outbox.accept_batch(&events).await.unwrap();
    let mut claimed = outbox.claim(4).await.unwrap();
    assert_eq!(claimed.len(), 3);
    claimed.sort_by(|a, b| a.build_key.cmp(&b.build_key));
    pg.sql(
        "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF (SELECT count(*) FROM removed) > 1 THEN PERFORM pg_sleep(60); END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER stall AFTER DELETE ON status_push_events
             REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION stall();",
    );
    // The first alone: its recording connection is then open, so the next two calls
    // queue their deliveries at once, before the group is recorded (one thread).
    let ok = ended();
    assert_eq!(
        outbox.settle(&claimed[0], Some(&ok)).await.unwrap(),
        Settled::Done
    );

    // Both calls end together: one group, which stalls.
    let started = Instant::now();
    let (a, b) = tokio::join!(
        outbox.settle(&claimed[1], Some(&ok)),
        outbox.settle(&claimed[2], Some(&ok))
    );
    assert_eq!((a.unwrap(), b.unwrap()), (Settled::Done, Settled::Done));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(29) && took < Duration::from_secs(60),
        "the stalled group was cut off at the statement timeout: {took:?}"
    );
    let left = pg.sql(
        "SELECT (SELECT count(*) FROM status_push_events) || ' '
             || (SELECT sum(pending) FROM status_push_chains) || ' '
             || (SELECT sum(pending) FROM status_push_destinations)",
    );
    assert_eq!(left, "0 0 0", "all delivered, each counted once");
}

/// The claim's fences against a head delivered under a lost lease, on PostgreSQL (the
/// SQLite twins are in `courier.rs`): a dead letter, or a failure, of an event the first
/// holder delivered counts nothing; a dead letter is superseded while a later event of
/// its build is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_and_redelivery_respect_what_another_holder_did() {
    use status_push_host::outbox::{Redeliver, Settled};
    let (pg, outbox, origin, config) = settled_by_hand("fences").await;
    let (started, finished) = (documents("started", 1), documents("finished", 1));
    let build = |key| {
        [
            due(&config, &origin, Event::Started, &started, key),
            due(&config, &origin, Event::Finished, &finished, key),
        ]
    };

    outbox.accept_batch(&build("b|1")).await.unwrap();
    let first = outbox.claim(4).await.unwrap().remove(0);
    pg.sql("UPDATE status_push_chains SET next_attempt_ms = 0");
    let second = outbox.claim(4).await.unwrap().remove(0);
    assert_eq!(second.seq, first.seq, "the same head, claimed again");
    let done = outbox.settle(&first, Some(&ended())).await.unwrap();
    assert_eq!(done, Settled::Done);
    let dead = outbox.settle(&second, None).await.unwrap();
    assert_eq!(dead, Settled::Lost, "delivered already: not a dead letter");
    let counts = outbox.counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (1, 0));
    let next = outbox.claim(4).await.unwrap().remove(0);
    assert_eq!(next.event, Event::Finished, "the chain goes on");
    let done = outbox.settle(&next, Some(&ended())).await.unwrap();
    assert_eq!(done, Settled::Done);

    // The same, the second holder's call failing in a way that would be retried.
    outbox.accept_batch(&build("b|3")).await.unwrap();
    let first = outbox.claim(4).await.unwrap().remove(0);
    pg.sql("UPDATE status_push_chains SET next_attempt_ms = 0");
    let second = outbox.claim(4).await.unwrap().remove(0);
    let done = outbox.settle(&first, Some(&ended())).await.unwrap();
    assert_eq!(done, Settled::Done);
    let failed = outbox.settle(&second, Some(&timed_out())).await.unwrap();
    assert_eq!(failed, Settled::Lost, "delivered already: nothing to retry");
    let next = outbox.claim(4).await.unwrap().remove(0);
    assert_eq!(next.event, Event::Finished, "at once, no backoff");
    let done = outbox.settle(&next, Some(&ended())).await.unwrap();
    assert_eq!(done, Settled::Done);

    outbox.accept_batch(&build("b|2")).await.unwrap();
    let started = outbox.claim(4).await.unwrap().remove(0);
    assert_eq!(outbox.settle(&started, None).await.unwrap(), Settled::Dead);
    let finished = outbox.claim(4).await.unwrap().remove(0);
    assert_eq!(finished.event, Event::Finished, "in flight");
    assert_superseded(&outbox, started.seq).await;
    let failed = timed_out();
    let settled = outbox.settle(&finished, Some(&failed)).await.unwrap();
    assert_eq!(settled, Settled::Pending);
    let again = outbox
        .redeliver(&Redeliver::Seq(started.seq), false)
        .await
        .unwrap();
    assert_eq!(again.revived, 1, "nothing later delivered or in flight");
    let counts = outbox.counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (2, 0));
}

/// A statement a connection prepared is prepared again once the server refuses it: here
/// another host's migration changed two columns' types under `redeliver`'s query and the
/// courier's claim, which the server then refuses as prepared ("cached plan must not
/// change result type"). The call that meets it fails; the next one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_the_server_refuses_is_prepared_again() {
    use status_push_host::outbox::{Redeliver, Settled};
    let (pg, outbox, origin, config) = settled_by_hand("reprepare").await;
    let started = documents("started", 1);
    let events: Vec<Accepted<'_>> = ["b|1", "b|2"]
        .into_iter()
        .map(|key| due(&config, &origin, Event::Started, &started, key))
        .collect();
    outbox.accept_batch(&events).await.unwrap();
    let claimed = outbox.claim(4).await.unwrap();
    assert_eq!(claimed.len(), 2);
    for one in &claimed {
        assert_eq!(outbox.settle(one, None).await.unwrap(), Settled::Dead);
    }
    let (first, second) = (
        Redeliver::Seq(claimed[0].seq),
        Redeliver::Seq(claimed[1].seq),
    );
    assert_eq!(outbox.redeliver(&first, false).await.unwrap().revived, 1);

    pg.sql(
        "ALTER TABLE status_push_events ALTER COLUMN build_key TYPE varchar,
             ALTER COLUMN event TYPE varchar",
    );
    let again = match outbox.redeliver(&second, false).await {
        Ok(again) => again,
        Err(refused) => {
            println!("refused once: {refused}");
            outbox.redeliver(&second, false).await.unwrap()
        }
    };
    assert_eq!(again.revived, 1);
    let claimed = match outbox.claim(4).await {
        Ok(claimed) => claimed,
        Err(refused) => {
            println!("claim refused once: {refused}");
            outbox.claim(4).await.unwrap()
        }
    };
    assert_eq!(claimed.len(), 2, "both redelivered heads");
}

/// More than a batch of delivered builds: one prune removes every chain they left, through
/// the indexes it needs (made at open), and keeps the chains with a dead letter or a
/// pending event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_every_empty_chain_and_keeps_the_others() {
    let (pg, outbox, origin, config) = settled_by_hand("prune").await;
    let indexes = pg.sql(
        "SELECT string_agg(indexname, ' ' ORDER BY indexname) FROM pg_indexes
         WHERE indexname LIKE 'status_push_chains_settled%'
            OR indexname = 'status_push_events_dead_chain'",
    );
    assert_eq!(
        indexes,
        "status_push_chains_settled_at status_push_events_dead_chain"
    );
    let batch = status_push_host::outbox::schedule::PRUNE_BATCH as usize;
    common::delivered_dead_and_pending(&outbox, &config, &origin, 2 * batch + 100).await;
    assert_eq!(
        outbox.prune().await.unwrap(),
        0,
        "no dead letter is old enough"
    );
    let chains = pg.sql(
        "SELECT (SELECT count(*) FROM status_push_chains WHERE build_key LIKE 'delivered|%')
             || ' ' || (SELECT string_agg(build_key, ' ' ORDER BY build_key)
                        FROM status_push_chains WHERE build_key NOT LIKE 'delivered|%')",
    );
    assert_eq!(
        chains, "0 dead|1 pending|1",
        "delivered builds' chains, others"
    );
}

/// The SQLite twin is in `courier.rs`: a chain kept for its dead letter is looked at again
/// only once the letter may go, then deleted with it; a chain whose count missed its
/// pending event is counted again, so that its event is claimed, and its destination
/// too (here its count ran ahead), but only once no other transaction holds the
/// destination; a delivered build's chain with a token left from a lease run out goes
/// like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_chains_are_looked_at_when_due_and_counted_again_when_behind() {
    let (pg, outbox, origin, config) = settled_by_hand("settled").await;
    common::delivered_dead_and_pending(&outbox, &config, &origin, 10).await;
    pg.sql(
        "UPDATE status_push_chains SET pending = 0 WHERE build_key = 'pending|1';
         UPDATE status_push_destinations SET pending = pending + 5;
         UPDATE status_push_chains SET claim_token = 7 WHERE build_key = 'delivered|0';",
    );
    assert!(outbox.claim(4).await.unwrap().is_empty(), "a count of 0");

    // Another transaction holds the destination: the chain waits for a later pass.
    let holder = pg.hold("SELECT 1 FROM status_push_destinations FOR UPDATE");
    outbox.prune().await.unwrap();
    let behind = "SELECT pending FROM status_push_chains WHERE build_key = 'pending|1'";
    assert_eq!(pg.sql(behind), "0", "left for a later pass");
    drop(holder);
    outbox.prune().await.unwrap();
    let counts = outbox.counts().await.unwrap();
    assert_eq!(
        counts.pending, 1,
        "the destination counted again: {counts:?}"
    );
    let kept = pg.sql(
        "SELECT ((SELECT c.next_attempt_ms FROM status_push_chains c WHERE build_key = 'dead|1')
              - (SELECT (e.prune_at + 1) * 1000 FROM status_push_events e WHERE e.dead))
             || ' ' || (SELECT count(*) FROM status_push_chains)",
    );
    assert_eq!(kept, "0 2", "looked at again once its dead letter may go");
    let claimed = outbox.claim(4).await.unwrap();
    assert_eq!(claimed.len(), 1, "counted again: {claimed:?}");
    assert_eq!(claimed[0].build_key, "pending|1");
    outbox.release(&claimed[0]).await.unwrap();

    // The dead letter's retention runs out (as if time passed): both go.
    pg.sql(
        "UPDATE status_push_events SET prune_at = extract(epoch FROM now())::bigint - 10
             WHERE dead;
         UPDATE status_push_chains
             SET next_attempt_ms = (extract(epoch FROM now())::bigint - 9) * 1000
             WHERE build_key = 'dead|1';",
    );
    assert_eq!(outbox.prune().await.unwrap(), 1);
    let left = pg.sql("SELECT string_agg(build_key, ' ') FROM status_push_chains");
    assert_eq!(left, "pending|1");
}

/// Two writers of one build at once, the first slowed after numbering its event (a
/// trigger sleeps on `started`): the second commits only after the first, so a claim in
/// between never sees `finished` as the chain's head while `started` is uncommitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_build_written_at_once_commit_in_their_order() {
    let (pg, outbox, origin, config) = settled_by_hand("numbered").await;
    pg.sql(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.event = 'started' THEN PERFORM pg_sleep(2); END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER slow BEFORE INSERT ON status_push_events
             FOR EACH ROW EXECUTE FUNCTION slow();",
    );
    let (started, finished) = (documents("started", 1), documents("finished", 1));
    // Another build's event first, so the destination's row is committed: a writer of a
    // new destination would otherwise wait on the first writer's row anyway.
    let other = due(&config, &origin, Event::Finished, &finished, "b|0");
    outbox.accept(&other).await.unwrap();
    let first = due(&config, &origin, Event::Started, &started, "b|1");
    let second = due(&config, &origin, Event::Finished, &finished, "b|1");
    let (written, claimed) = tokio::join!(outbox.accept(&first), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        outbox.accept(&second).await.unwrap();
        outbox.claim(4).await.unwrap()
    });
    written.unwrap();
    let head: Vec<_> = claimed.iter().filter(|c| c.build_key == "b|1").collect();
    assert_eq!(head.len(), 1, "{claimed:?}");
    assert_eq!(head[0].event, Event::Started, "first event first");
}

/// The PostgreSQL twin of `courier.rs`'s: a chain whose count ran ahead of its events
/// (its event deleted by hand) is set right by the claim that finds no head, and its
/// destination's count with it, but only once no other transaction holds the
/// destination (a wait could close a cycle with a writer); until then the chain stays
/// the claim's, and a claim after its lease sets it right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_ahead_of_its_events_is_set_right_with_its_destination() {
    let (pg, outbox, origin, config) = settled_by_hand("ahead").await;
    common::delivered_dead_and_pending(&outbox, &config, &origin, 0).await;
    pg.sql("DELETE FROM status_push_events WHERE build_key = 'pending|1'");
    assert_eq!(outbox.counts().await.unwrap().pending, 1, "ahead by one");
    let chain = "SELECT pending FROM status_push_chains WHERE build_key = 'pending|1'";

    let holder = pg.hold("SELECT 1 FROM status_push_destinations FOR UPDATE");
    assert!(
        outbox.claim(4).await.unwrap().is_empty(),
        "no head to claim"
    );
    assert_eq!(pg.sql(chain), "1", "left while the destination is held");
    assert_eq!(outbox.counts().await.unwrap().pending, 1);
    drop(holder);

    pg.sql("UPDATE status_push_chains SET next_attempt_ms = 0");
    assert!(
        outbox.claim(4).await.unwrap().is_empty(),
        "no head to claim"
    );
    assert_eq!(pg.sql(chain), "0");
    let counts = outbox.counts().await.unwrap();
    assert_eq!(counts.pending, 0, "the destination set right: {counts:?}");
}

/// A chain whose count ran ahead of its events (its only event deleted by hand) is set
/// right by the claim that finds no head, but not over an event written meanwhile: here
/// the claim is slowed (a trigger sleeps once it has taken the chain) and the event is
/// written while it runs, so the claim's correction comes after the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_set_right_by_a_claim_keeps_an_event_written_meanwhile() {
    let (pg, outbox, origin, config) = settled_by_hand("ran-ahead").await;
    let started = documents("started", 1);
    outbox
        .accept(&due(&config, &origin, Event::Started, &started, "b|1"))
        .await
        .unwrap();
    pg.sql("DELETE FROM status_push_events");
    pg.sql(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF OLD.claim_token IS NULL AND NEW.claim_token IS NOT NULL THEN
                 PERFORM pg_sleep(1);
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER slow AFTER UPDATE ON status_push_chains
             FOR EACH ROW EXECUTE FUNCTION slow();",
    );
    let finished = documents("finished", 1);
    let (claimed, written) = tokio::join!(outbox.claim(4), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let finished = due(&config, &origin, Event::Finished, &finished, "b|1");
        outbox.accept(&finished).await
    });
    assert!(claimed.unwrap().is_empty(), "no head to claim");
    written.unwrap();
    // Past the lease of that claim, the event written meanwhile is claimed.
    pg.sql("DROP TRIGGER slow ON status_push_chains; UPDATE status_push_chains SET next_attempt_ms = 0");
    let next = outbox.claim(4).await.unwrap();
    assert_eq!(
        next.len(),
        1,
        "the event written meanwhile is still counted"
    );
    assert_eq!(next[0].event, Event::Finished);
}

/// Calls the courier stopped because their chain could be another's, and what else it
/// reported.
#[derive(Default)]
struct Stops(Mutex<Vec<(bool, Duration)>>);

impl status_push_host::outbox::Observer for Stops {
    fn reported(&self, report: &status_push_host::outbox::Report<'_>) {
        let lost = matches!(
            report.reported,
            status_push_host::outbox::Reported::LeaseLost
        );
        self.0.lock().unwrap().push((lost, report.took));
    }
}

/// A call whose renewals fail (the server refuses every update of a chain, as an
/// unreachable database would fail them) is stopped one renewal short of its lease, not
/// left running past it while another host may take the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_renewals_fail_stops_before_its_lease_runs_out() {
    use status_push_host::outbox::{schedule, Courier};
    let (pg, outbox, _, _) = settled_by_hand("renewals").await;
    // A receiver that takes the request and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            holder.lock().unwrap().push(socket);
        }
    });
    let config = json!({"serverUrl": format!("{origin}/hook"), "maxAttempts": 1}).to_string();
    let started = documents("started", 1);
    outbox
        .accept_batch(&[due(&config, &origin, Event::Started, &started, "b|1")])
        .await
        .unwrap();
    let runtime = Runtime::load(&wasm()).unwrap();
    let stops = Stops::default();
    let courier = Courier::new(&outbox, &runtime).with_observer(&stops);
    let wake = tokio::sync::Notify::new();
    let refuse_renewals = async {
        while held.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pg.sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
             CREATE TRIGGER refuse BEFORE UPDATE ON status_push_chains
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        );
        // Long enough for the call to outlive its lease had it gone on.
        tokio::time::sleep(schedule::LEASE + schedule::RENEW_EVERY).await;
    };
    courier.run(&wake, refuse_renewals, Duration::ZERO).await;
    let stops = stops.0.lock().unwrap().clone();
    assert_eq!(stops.len(), 1, "{stops:?}");
    let (lost, took) = stops[0];
    assert!(lost, "stopped as a lost lease");
    assert!(
        took >= schedule::LEASE - schedule::RENEW_EVERY && took < schedule::LEASE,
        "stopped after {took:?}"
    );
}

/// A probe's renewal renews its destination's reservation too (the SQLite twin, with a
/// hanging receiver, is in `courier.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probes_renewal_keeps_its_destination_reserved() {
    let (pg, outbox, origin, config) = settled_by_hand("probe-renewal").await;
    let started = documents("started", 1);
    outbox
        .accept_batch(&[due(&config, &origin, Event::Started, &started, "b|1")])
        .await
        .unwrap();
    // The destination failed: its circuit is open and due for a probe.
    pg.sql("UPDATE status_push_destinations SET failures = 1, open_until_ms = 0");
    let probe = outbox.claim(4).await.unwrap().remove(0);
    assert!(probe.probe);
    let reserved = || {
        pg.sql("SELECT open_until_ms FROM status_push_destinations")
            .parse::<i64>()
            .unwrap()
    };
    let before = reserved();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(outbox.renew(&probe).await.unwrap());
    assert!(
        reserved() > before,
        "the reservation moved on with the lease"
    );
}
