//! The outbox's promises when reporters, destinations and hosts share it (issue 22):
//! a down destination delays no other, a superseded dead letter is not resent, claims
//! are the database's and fenced, a failing destination gets one probe per backoff step
//! (one at a time, however long it hangs), a killed host's claims come free within one
//! lease, a row this release cannot read holds back its own chain only, a
//! destination that hangs leaves room for the others, and pruning removes the chains
//! delivered builds leave, looks at a chain kept for its dead letters only once they
//! may go, and counts again a chain whose count fell behind its events.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{assert_superseded, documents, ended, free_port, temp_dir, timed_out, wasm};
use serde_json::{json, Value};
use status_push_cli::receiver::{Receiver, Recorded, Reply};
use status_push_host::outbox::{
    Courier, Location, Observer, Outbox, OutboxError, Redeliver, Report, Settled,
};
use status_push_host::{Event, Runtime};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::load(&wasm()).expect("the component loads"))
}

async fn sqlite(dir: &std::path::Path) -> Outbox {
    Outbox::open(&Location::Sqlite(dir.join("outbox.sqlite")))
        .await
        .unwrap()
}

fn config(url: &str) -> String {
    json!({"serverUrl": url, "maxAttempts": 1}).to_string()
}

/// `(path, event)` of each request, in arrival order.
fn arrivals(receiver: &Receiver) -> Vec<(String, String)> {
    receiver
        .requests()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let event = if body["complete"] == json!(true) {
                "finished"
            } else {
                "started"
            };
            (r.path.clone(), event.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_destination_never_delays_another() {
    let dir = temp_dir("courier-two-destinations");
    let outbox = sqlite(&dir).await;
    let up = Receiver::start(0).await.unwrap();
    let down = format!("http://127.0.0.1:{}/a", free_port());
    let b = format!("{}/b", up.origin());
    // Two reporters, one build, one outbox: A refuses connections.
    for (event, name) in [(Event::Started, "started"), (Event::Finished, "finished")] {
        for url in [&down, &b] {
            outbox
                .enqueue(runtime(), &config(url), event, &documents(name, 7))
                .await
                .unwrap();
        }
    }
    let summary = outbox
        .deliver(runtime(), Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(
        arrivals(&up),
        [
            ("/b".to_string(), "started".to_string()),
            ("/b".to_string(), "finished".to_string())
        ]
    );
    assert_eq!((summary.delivered, summary.pending), (2, 2), "{summary:?}");
    assert_eq!(summary.open_circuits, 1);
    let circuits = outbox.circuits().await.unwrap();
    assert_eq!(circuits.len(), 1);
    assert_eq!(circuits[0].pending, 2);
    assert!(circuits[0].destination.starts_with("http://127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_dead_letter_is_not_resent_unless_forced() {
    let dir = temp_dir("courier-superseded");
    let outbox = sqlite(&dir).await;
    // One destination (one origin): `started` goes to a path that answers 400.
    let receiver = Receiver::start_with(
        0,
        Arc::new(|r: &Recorded| Reply::from(if r.path == "/refuse" { 400 } else { 200 })),
    )
    .await
    .unwrap();
    let (started, _) = outbox
        .enqueue(
            runtime(),
            &config(&format!("{}/refuse", receiver.origin())),
            Event::Started,
            &documents("started", 9),
        )
        .await
        .unwrap();
    outbox
        .enqueue(
            runtime(),
            &config(&format!("{}/ok", receiver.origin())),
            Event::Finished,
            &documents("finished", 9),
        )
        .await
        .unwrap();
    let summary = outbox
        .deliver(runtime(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((summary.delivered, summary.dead), (1, 1), "{summary:?}");
    assert_eq!(
        arrivals(&receiver),
        [
            ("/refuse".to_string(), "started".to_string()),
            ("/ok".to_string(), "finished".to_string())
        ]
    );
    // Sent again now, `started` would arrive after `finished`: a finished build shown
    // as running.
    assert_superseded(&outbox, started).await;
    let all = outbox.redeliver(&Redeliver::All, false).await.unwrap();
    assert_eq!((all.revived, all.superseded.clone()), (0, vec![started]));
    outbox
        .deliver(runtime(), Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(receiver.requests().len(), 2, "nothing was resent");
    // Asked for, it goes.
    let forced = outbox
        .redeliver(&Redeliver::Seq(started), true)
        .await
        .unwrap();
    assert_eq!(forced.revived, 1);
    outbox
        .deliver(runtime(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(receiver.requests().len(), 3);
}

/// Counts settled calls.
#[derive(Default)]
struct Tally(std::sync::Mutex<HashMap<i64, usize>>);

impl Observer for Tally {
    fn reported(&self, report: &Report<'_>) {
        if report.settled == Settled::Done {
            *self
                .0
                .lock()
                .unwrap()
                .entry(report.claimed.seq)
                .or_default() += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_couriers_on_one_sqlite_file_never_claim_the_same_event() {
    let dir = temp_dir("courier-two-on-one-file");
    let writer = sqlite(&dir).await;
    let receiver = Receiver::start(0).await.unwrap();
    let url = format!("{}/hook", receiver.origin());
    const BUILDS: i64 = 60;
    for buildid in 0..BUILDS {
        for (event, name) in [(Event::Started, "started"), (Event::Finished, "finished")] {
            writer
                .enqueue(runtime(), &config(&url), event, &documents(name, buildid))
                .await
                .unwrap();
        }
    }
    // Two handles, two connections: their claims meet only in the file's transactions,
    // as two processes' would.
    let (one, two) = (sqlite(&dir).await, sqlite(&dir).await);
    let tally = Tally::default();
    let courier_one = Courier::new(&one, runtime()).with_observer(&tally);
    let courier_two = Courier::new(&two, runtime()).with_observer(&tally);
    let (a, b) = tokio::join!(
        courier_one.deliver_for(Duration::from_secs(30)),
        courier_two.deliver_for(Duration::from_secs(30)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.delivered + b.delivered,
        2 * BUILDS as usize,
        "{a:?} {b:?}"
    );
    assert!(tally.0.lock().unwrap().values().all(|n| *n == 1));
    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        2 * BUILDS as usize,
        "each event exactly once"
    );
    let mut ids: Vec<&str> = requests
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2 * BUILDS as usize);
    // Per build, `started` before `finished`.
    let mut seen: HashMap<i64, &str> = HashMap::new();
    for r in &requests {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let buildid = body["buildid"].as_i64().unwrap();
        let event = if body["complete"] == json!(true) {
            "finished"
        } else {
            "started"
        };
        if event == "finished" {
            assert_eq!(seen.get(&buildid), Some(&"started"), "build {buildid}");
        }
        seen.insert(buildid, event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_lease_ran_out_records_nothing_but_a_delivery() {
    let dir = temp_dir("courier-lease");
    let (one, two) = (sqlite(&dir).await, sqlite(&dir).await);
    let receiver = Receiver::start(0).await.unwrap();
    one.enqueue(
        runtime(),
        &config(&format!("{}/hook", receiver.origin())),
        Event::Started,
        &documents("started", 1),
    )
    .await
    .unwrap();
    let first = one.claim(4).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(two.claim(4).await.unwrap().is_empty(), "held");
    // The holder stalls past its lease without renewing it.
    tokio::time::sleep(status_push_host::outbox::schedule::LEASE + Duration::from_millis(300))
        .await;
    let second = two.claim(4).await.unwrap();
    assert_eq!(second.len(), 1, "free again after one lease");
    assert_eq!(second[0].seq, first[0].seq);
    assert!(
        !one.renew(&first[0]).await.unwrap(),
        "the old holder lost it"
    );
    let failed = timed_out();
    assert_eq!(
        one.settle(&first[0], Some(&failed)).await.unwrap(),
        Settled::Lost
    );
    assert!(two.renew(&second[0]).await.unwrap());
    let outcome =
        status_push_host::Outcome::Skipped(status_push_host::bindings::SkipReason::Builder);
    assert_eq!(
        two.settle(&second[0], Some(&Ok(outcome))).await.unwrap(),
        Settled::Done
    );
    assert_eq!(two.counts().await.unwrap().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_destination_with_ten_thousand_pending_gets_one_probe_per_backoff_step() {
    let dir = temp_dir("courier-probes");
    let outbox = sqlite(&dir).await;
    let receiver = Receiver::start_with(0, Arc::new(|_: &Recorded| Reply::from(503)))
        .await
        .unwrap();
    let url = format!("{}/hook", receiver.origin());
    let config = config(&url);
    let started = documents("started", 1);
    for i in 0..10_000i64 {
        let build_key = format!("http://localhost:8080/|{i}");
        outbox
            .accept(&status_push_host::outbox::Accepted {
                config_json: &config,
                destination: &url,
                event: Event::Started,
                documents_json: &started,
                build_key: &build_key,
                dead_after: Duration::from_secs(3600),
                retention: Duration::from_secs(86_400),
                max_pending: u64::MAX,
                report_budget: Duration::from_secs(5),
                webhook_id: None,
            })
            .await
            .unwrap();
    }
    let ran = Instant::now();
    let summary = outbox
        .deliver(runtime(), Duration::from_secs(4))
        .await
        .unwrap();
    let elapsed = ran.elapsed();
    assert_eq!(summary.pending, 10_000);
    assert_eq!(summary.open_circuits, 1);
    let requests = receiver.requests().len();
    // The first calls go out together (at most a destination's share of one courier's
    // places) before the circuit opens; after that one probe per step of 250 ms, 500 ms,
    // 1 s, 2 s, ...
    let steps = {
        let (mut at, mut step, mut n) = (Duration::ZERO, Duration::from_millis(250), 0);
        while at + step <= elapsed {
            at += step;
            step = (step * 2).min(Duration::from_secs(30));
            n += 1;
        }
        n
    };
    let in_flight = status_push_host::outbox::schedule::MAX_IN_FLIGHT_PER_DESTINATION;
    assert!(
        requests <= in_flight + steps + 1,
        "{requests} requests in {elapsed:?} ({steps} backoff steps)"
    );
    assert!(requests > in_flight, "probes went out: {requests}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_claims_are_delivered_by_another_within_fifteen_seconds() {
    let dir = temp_dir("courier-killed");
    let location = dir.join("outbox.sqlite");
    let outbox = sqlite(&dir).await;
    // A receiver that takes each request and never answers.
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = taken.clone();
    let hanging = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            held.push(stream);
        }
    });
    let url = format!("http://127.0.0.1:{port}/hook");
    let patient = json!({"serverUrl": url, "timeoutSeconds": 120, "retryDeadlineSeconds": 120});
    for buildid in 0..3 {
        outbox
            .enqueue(
                runtime(),
                &patient.to_string(),
                Event::Started,
                &documents("started", buildid),
            )
            .await
            .unwrap();
    }
    drop(outbox);
    let mut first = common::cli("courier-killed")
        .args(["deliver", "--outbox", location.to_str().unwrap()])
        .args(["--budget-seconds", "60"])
        .spawn()
        .unwrap();
    // It holds all three claims, its calls hanging.
    let deadline = Instant::now() + Duration::from_secs(30);
    while taken.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "the first host never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    // The receiver is back.
    hanging.abort();
    let _ = hanging.await;
    let receiver = Receiver::start(port).await.unwrap();
    let back = Instant::now();
    let second = common::cli("courier-killed")
        .args(["deliver", "--outbox", location.to_str().unwrap()])
        .args(["--budget-seconds", "30"])
        .output()
        .await
        .unwrap();
    let took = back.elapsed();
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        stdout.starts_with("delivered: 3, dead letters: 0, pending: 0"),
        "{stdout}"
    );
    assert!(took <= Duration::from_secs(15), "took {took:?}");
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_beside_a_running_courier_leaves_its_event_to_it() {
    let dir = temp_dir("courier-push-beside");
    let location = dir.join("outbox.sqlite");
    let outbox = sqlite(&dir).await;
    let _held = outbox.courier_lock().unwrap();
    let receiver = Receiver::start(0).await.unwrap();
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        self::config(&format!("{}/hook", receiver.origin())),
    )
    .unwrap();
    let build = dir.join("started.json");
    std::fs::write(&build, documents("started", 3)).unwrap();
    let started = Instant::now();
    let out = common::cli("courier-push-beside")
        .args(["push", "--outbox", location.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap(), "--event", "started"])
        .args(["--build", build.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "queued: the running courier delivers it"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(outbox.counts().await.unwrap().pending, 1);
    assert!(
        receiver.requests().is_empty(),
        "the courier, not push, sends it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_pending_events_an_event_is_refused_with_one_line() {
    let dir = temp_dir("courier-cap");
    let location = dir.join("outbox.sqlite");
    let url = format!("http://127.0.0.1:{}/down", free_port());
    let capped = json!({"serverUrl": url, "maxAttempts": 1, "maxPendingEvents": 2}).to_string();
    let outbox = sqlite(&dir).await;
    for buildid in 0..2 {
        outbox
            .enqueue(
                runtime(),
                &capped,
                Event::Started,
                &documents("started", buildid),
            )
            .await
            .unwrap();
    }
    match outbox
        .enqueue(runtime(), &capped, Event::Started, &documents("started", 2))
        .await
    {
        Err(OutboxError::Full { pending, cap, .. }) => assert_eq!((pending, cap), (2, 2)),
        other => panic!("{other:?}"),
    }
    let config = dir.join("capped.json");
    std::fs::write(&config, &capped).unwrap();
    let build = dir.join("started.json");
    std::fs::write(&build, documents("started", 3)).unwrap();
    let out = common::cli("courier-cap")
        .args(["push", "--outbox", location.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap(), "--event", "started"])
        .args(["--build", build.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("maxPendingEvents of 2") && lines[0].contains("not queued"),
        "{stderr}"
    );
    assert_eq!(outbox.counts().await.unwrap().pending, 2);
}

/// The courier keeps configured reporters between calls, each under its whole
/// configuration: events of four configurations, two of them for one URL with different
/// tokens, interleaved in one outbox, each arrive with their own build's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_reporters_never_carry_one_configurations_credentials_to_another() {
    let dir = temp_dir("courier-kept-reporters");
    let outbox = sqlite(&dir).await;
    let receiver = Receiver::start(0).await.unwrap();
    let configs = [
        ("/a", "token-a"),
        ("/a", "token-a2"),
        ("/b", "token-b"),
        ("/c", "token-c"),
    ];
    const BUILDS: i64 = 24;
    for buildid in 0..BUILDS {
        let (path, token) = configs[buildid as usize % configs.len()];
        let config = json!({
            "serverUrl": format!("{}{path}", receiver.origin()),
            "auth": {"bearer": token},
            "maxAttempts": 1,
        })
        .to_string();
        for (event, name) in [(Event::Started, "started"), (Event::Finished, "finished")] {
            outbox
                .enqueue(runtime(), &config, event, &documents(name, buildid))
                .await
                .unwrap();
        }
    }
    let summary = outbox
        .deliver(runtime(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(summary.delivered, 2 * BUILDS as usize, "{summary:?}");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2 * BUILDS as usize);
    for request in requests.iter() {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let buildid = body["buildid"].as_i64().unwrap();
        let (path, token) = configs[buildid as usize % configs.len()];
        assert_eq!(request.path, path, "build {buildid}");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {token}").as_str()),
            "build {buildid}"
        );
    }
}

/// A chain's lease run out under the first holder, as when it stalls: the next claim
/// takes the same head.
fn lease_runs_out(dir: &std::path::Path) {
    rusqlite::Connection::open(dir.join("outbox.sqlite"))
        .unwrap()
        .execute("UPDATE chains SET next_attempt_ms = 0", [])
        .unwrap();
}

/// An outbox in `dir` holding build 1's `started` and `finished`, for a destination
/// nothing answers at.
async fn one_build(dir: &std::path::Path) -> Outbox {
    let outbox = sqlite(dir).await;
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    for (event, name) in [(Event::Started, "started"), (Event::Finished, "finished")] {
        outbox
            .enqueue(runtime(), &config(&url), event, &documents(name, 1))
            .await
            .unwrap();
    }
    outbox
}

/// The first holder of `started` outlives its lease and delivers it; the second holder's
/// call of the same head then ends in a dead letter (here: expired), or fails in a way
/// that would be retried. The event is gone: nothing is counted or recorded, and the
/// chain goes on at once with `finished` (not after a backoff `started` earned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_or_failure_of_an_event_another_holder_delivered_counts_nothing() {
    for (case, ending) in [("dead", None), ("failed", Some(timed_out()))] {
        let dir = temp_dir(&format!("courier-{case}-after-delivered"));
        let outbox = one_build(&dir).await;
        let first = outbox.claim(4).await.unwrap().remove(0);
        lease_runs_out(&dir);
        let second = outbox.claim(4).await.unwrap().remove(0);
        assert_eq!(second.seq, first.seq, "the same head, claimed again");
        let done = outbox.settle(&first, Some(&ended())).await.unwrap();
        assert_eq!(done, Settled::Done);
        let settled = outbox.settle(&second, ending.as_ref()).await.unwrap();
        assert_eq!(settled, Settled::Lost, "{case}: delivered already");
        let counts = outbox.counts().await.unwrap();
        assert_eq!((counts.pending, counts.dead), (1, 0), "{case}");
        let next = outbox.claim(4).await.unwrap();
        assert_eq!(next.len(), 1, "{case}: the chain goes on at once");
        assert_eq!(next[0].event, Event::Finished);
    }
}

/// `started` is a dead letter and `finished` is in flight: sent now, `started` could
/// arrive after `finished`, so it is superseded until `finished` has gone or failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_superseded_while_a_later_event_of_its_build_is_in_flight() {
    let dir = temp_dir("courier-superseded-in-flight");
    let outbox = one_build(&dir).await;
    let started = outbox.claim(4).await.unwrap().remove(0);
    assert_eq!(outbox.settle(&started, None).await.unwrap(), Settled::Dead);
    let finished = outbox.claim(4).await.unwrap().remove(0);
    assert_eq!(finished.event, Event::Finished, "in flight");
    assert_superseded(&outbox, started.seq).await;
    let all = outbox.redeliver(&Redeliver::All, false).await.unwrap();
    assert_eq!((all.revived, all.superseded), (0, vec![started.seq]));
    // `finished` fails and stays pending: nothing later was delivered, so `started` may
    // go again, ahead of it.
    let failed = timed_out();
    assert_eq!(
        outbox.settle(&finished, Some(&failed)).await.unwrap(),
        Settled::Pending
    );
    let again = outbox
        .redeliver(&Redeliver::Seq(started.seq), false)
        .await
        .unwrap();
    assert_eq!(again.revived, 1);
}

/// A row naming an event this release does not know (a newer release's) is left for one
/// lease; the claim goes on with the other chains instead of failing as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_event_name_holds_back_its_own_chain_only() {
    let dir = temp_dir("courier-unknown-event");
    let outbox = sqlite(&dir).await;
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let (unknown, _) = outbox
        .enqueue(
            runtime(),
            &config(&url),
            Event::Started,
            &documents("started", 1),
        )
        .await
        .unwrap();
    outbox
        .enqueue(
            runtime(),
            &config(&url),
            Event::Started,
            &documents("started", 2),
        )
        .await
        .unwrap();
    rusqlite::Connection::open(dir.join("outbox.sqlite"))
        .unwrap()
        .execute(
            "UPDATE events SET event = 'a-newer-event' WHERE seq = ?1",
            [unknown],
        )
        .unwrap();
    let claimed = outbox.claim(4).await.expect("the claim goes on");
    let seqs: Vec<i64> = claimed.iter().map(|c| c.seq).collect();
    assert_eq!(seqs.len(), 1, "{seqs:?}");
    assert_ne!(seqs[0], unknown);
    assert!(
        outbox.claim(4).await.unwrap().is_empty(),
        "held for its lease"
    );
}

/// A probe that hangs (the destination takes the connection and never answers) keeps its
/// destination reserved while it runs: no second probe goes out when the first one's
/// reservation would have run out, one lease after it was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_probe_keeps_its_destination_to_itself() {
    use status_push_host::outbox::schedule;
    let dir = temp_dir("courier-hanging-probe");
    let outbox = sqlite(&dir).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    for build in 1..=3 {
        outbox
            .enqueue(
                runtime(),
                &config(&url),
                Event::Started,
                &documents("started", build),
            )
            .await
            .unwrap();
    }
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let scenario = async {
        // Refused first, so the destination's circuit opens; then it hangs.
        while outbox.counts().await.unwrap().open_circuits == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        hold_every_connection(listener, connections.clone());
        while connections.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Past the first probe's reservation, had it not been renewed.
        tokio::time::sleep(schedule::LEASE + schedule::RENEW_EVERY).await;
    };
    let wake = tokio::sync::Notify::new();
    Courier::new(&outbox, runtime())
        .run(&wake, scenario, Duration::ZERO)
        .await;
    assert_eq!(connections.load(Ordering::SeqCst), 1, "one probe at a time");
}

/// A destination that takes its calls and hangs holds at most its share of the courier's
/// places while its circuit is still closed: an event for another destination queued
/// meanwhile goes out at once, not after the hanging calls' timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_destination_leaves_room_for_the_others() {
    use status_push_host::outbox::schedule;
    let dir = temp_dir("courier-hanging-destination");
    let outbox = sqlite(&dir).await;
    let (hanging_url, taken) = hanging().await;
    for build in 1..=schedule::MAX_IN_FLIGHT as i64 + 4 {
        outbox
            .enqueue(
                runtime(),
                &config(&hanging_url),
                Event::Started,
                &documents("started", build),
            )
            .await
            .unwrap();
    }
    let share = schedule::MAX_IN_FLIGHT_PER_DESTINATION;
    let arrived = arrival_beside(&outbox, || taken.load(Ordering::SeqCst) >= share).await;
    let arrived = arrived.expect("the other destination's event arrived");
    assert!(arrived < Duration::from_secs(2), "after {arrived:?}");
    assert_eq!(
        taken.load(Ordering::SeqCst),
        share,
        "the hanging destination's share"
    );
}

/// Runs a courier on `outbox` until `ready` (or for 10 s), then queues an event for a
/// receiver that answers at once: how long it took to arrive, if it did within 5 s.
async fn arrival_beside(outbox: &Outbox, ready: impl Fn() -> bool) -> Option<Duration> {
    let receiver = Receiver::start(0).await.unwrap();
    let wake = tokio::sync::Notify::new();
    let mut arrived = None;
    let scenario = async {
        let started = Instant::now();
        while !ready() && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let queued = Instant::now();
        outbox
            .enqueue(
                runtime(),
                &config(&format!("{}/hook", receiver.origin())),
                Event::Started,
                &documents("started", 1_000),
            )
            .await
            .unwrap();
        wake.notify_one();
        while receiver.requests().is_empty() && queued.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !receiver.requests().is_empty() {
            arrived = Some(queued.elapsed());
        }
    };
    Courier::new(outbox, runtime())
        .run(&wake, scenario, Duration::ZERO)
        .await;
    arrived
}

/// A receiver that takes every connection and never answers: its URL, and the
/// connections it took.
async fn hanging() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    hold_every_connection(listener, taken.clone());
    (url, taken)
}

/// Takes every connection `listener` gets, counting it in `taken`, and never answers or
/// closes one.
fn hold_every_connection(
    listener: tokio::net::TcpListener,
    taken: Arc<std::sync::atomic::AtomicUsize>,
) {
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            taken.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
}

/// Several destinations that take their calls and hang hold no place that another
/// destination needs: their calls stall, give their places back, and each fills its own
/// share; an event for a destination that answers, queued then, goes out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_hanging_destinations_leave_room_for_the_others() {
    use status_push_host::outbox::schedule;
    let dir = temp_dir("courier-hanging-destinations");
    let outbox = sqlite(&dir).await;
    let share = schedule::MAX_IN_FLIGHT_PER_DESTINATION;
    let mut hangers = Vec::new();
    for destination in 0..3 {
        let (url, taken) = hanging().await;
        for build in 1..=share as i64 + 4 {
            outbox
                .enqueue(
                    runtime(),
                    &config(&url),
                    Event::Started,
                    &documents("started", destination * 100 + build),
                )
                .await
                .unwrap();
        }
        hangers.push(taken);
    }
    let taken = || -> Vec<usize> { hangers.iter().map(|t| t.load(Ordering::SeqCst)).collect() };
    let arrived = arrival_beside(&outbox, || taken().iter().sum::<usize>() >= 3 * share).await;
    assert_eq!(taken(), [share; 3], "each hanging destination's share");
    let arrived = arrived.expect("the answering destination's event arrived");
    assert!(arrived < Duration::from_secs(2), "after {arrived:?}");
}

/// More than a batch of delivered builds: one prune removes every chain they left and
/// keeps the chains with a dead letter or a pending event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_every_empty_chain_and_keeps_the_others() {
    let dir = temp_dir("courier-prune");
    let outbox = sqlite(&dir).await;
    let origin = format!("http://127.0.0.1:{}", free_port());
    let config = config(&format!("{origin}/hook"));
    let batch = status_push_host::outbox::schedule::PRUNE_BATCH as usize;
    common::delivered_dead_and_pending(&outbox, &config, &origin, 2 * batch + 100).await;
    assert_eq!(
        outbox.prune().await.unwrap(),
        0,
        "no dead letter is old enough"
    );
    let db = rusqlite::Connection::open(dir.join("outbox.sqlite")).unwrap();
    let chains: String = db
        .query_row(
            "SELECT (SELECT count(*) FROM chains WHERE build_key LIKE 'delivered|%') || ' '
                 || (SELECT group_concat(build_key, ' ') FROM (
                         SELECT build_key FROM chains WHERE build_key NOT LIKE 'delivered|%'
                         ORDER BY 1))",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        chains, "0 dead|1 pending|1",
        "delivered builds' chains, others"
    );
}

/// A chain kept for its dead letter is looked at again only once the letter may go, then
/// deleted with it; a chain whose count missed its pending event (set to 0 by hand, its
/// destination's count lowered with it) is counted again by pruning, destination and
/// all, so that its event is claimed and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_chains_are_looked_at_when_due_and_counted_again_when_behind() {
    let dir = temp_dir("courier-settled");
    let outbox = sqlite(&dir).await;
    let origin = format!("http://127.0.0.1:{}", free_port());
    let config = config(&format!("{origin}/hook"));
    common::delivered_dead_and_pending(&outbox, &config, &origin, 10).await;
    let db = rusqlite::Connection::open(dir.join("outbox.sqlite")).unwrap();
    let query = |sql: &str| -> String { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    // Both counts miss the pending event, as a lost decrement of both would.
    db.execute_batch(
        "UPDATE chains SET pending = 0 WHERE build_key = 'pending|1';
         UPDATE destinations SET pending = pending - 1;",
    )
    .unwrap();
    assert!(outbox.claim(4).await.unwrap().is_empty(), "a count of 0");
    assert_eq!(outbox.counts().await.unwrap().pending, 0);

    outbox.prune().await.unwrap();
    let counts = outbox.counts().await.unwrap();
    assert_eq!(
        counts.pending, 1,
        "the destination counted again: {counts:?}"
    );
    let kept = "SELECT ((SELECT c.next_attempt_ms FROM chains c WHERE build_key = 'dead|1')
                      - (SELECT (e.prune_at + 1) * 1000 FROM events e WHERE e.dead = 1))
                     || ' ' || (SELECT count(*) FROM chains)";
    assert_eq!(
        query(kept),
        "0 2",
        "looked at again once its dead letter may go"
    );
    let claimed = outbox.claim(4).await.unwrap();
    assert_eq!(claimed.len(), 1, "counted again: {claimed:?}");
    assert_eq!(claimed[0].build_key, "pending|1");
    outbox.release(&claimed[0]).await.unwrap();

    // The dead letter's retention runs out (as if time passed): both go.
    db.execute_batch(
        "UPDATE events SET prune_at = unixepoch() - 10 WHERE dead = 1;
         UPDATE chains SET next_attempt_ms = (unixepoch() - 9) * 1000
             WHERE build_key = 'dead|1';",
    )
    .unwrap();
    assert_eq!(outbox.prune().await.unwrap(), 1);
    let left = "SELECT group_concat(build_key, ' ') FROM chains";
    assert_eq!(query(left), "pending|1");
}

/// A chain whose count ran ahead of its events (its event deleted by hand) is set right
/// by the claim that finds no head, and its destination's count with it, so that
/// `counts`, `/metrics` and `maxPendingEvents` read the events there are.
#[tokio::test]
async fn a_chain_ahead_of_its_events_is_set_right_with_its_destination() {
    let dir = temp_dir("courier-ahead");
    let outbox = sqlite(&dir).await;
    let origin = format!("http://127.0.0.1:{}", free_port());
    let config = config(&format!("{origin}/hook"));
    common::delivered_dead_and_pending(&outbox, &config, &origin, 0).await;
    let db = rusqlite::Connection::open(dir.join("outbox.sqlite")).unwrap();
    db.execute_batch("DELETE FROM events WHERE build_key = 'pending|1'")
        .unwrap();
    assert_eq!(outbox.counts().await.unwrap().pending, 1, "ahead by one");

    assert!(
        outbox.claim(4).await.unwrap().is_empty(),
        "no head to claim"
    );
    let counts = outbox.counts().await.unwrap();
    assert_eq!(counts.pending, 0, "the destination set right: {counts:?}");
    let chain: i64 = db
        .query_row(
            "SELECT pending FROM chains WHERE build_key = 'pending|1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(chain, 0);
}
