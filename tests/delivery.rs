//! Fault injection: receivers on 127.0.0.1 that fail, throttle, reset, hang or refuse,
//! and what the component does about it (retry with backoff, or give up and say why).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use status_push_cli::receiver::{Receiver, Recorded, Reply};
use status_push_host::bindings::{Outcome, PushError};
use status_push_host::{Event, HostError, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(5);

async fn push(config: serde_json::Value) -> Result<Outcome, HostError> {
    push_on(common::runtime(), config).await
}

async fn push_on(runtime: &Runtime, config: serde_json::Value) -> Result<Outcome, HostError> {
    let mut reporter = common::configured_on(runtime, &config).await;
    let build = reporter
        .parse_event(&common::sample_documents("started", 7))
        .await
        .unwrap();
    reporter.report(Event::Started, &build).await
}

/// A receiver that answers the first `failures` requests with `fail` and then 200.
async fn flaky(failures: usize, fail: Reply) -> Receiver {
    let seen = Arc::new(AtomicUsize::new(0));
    Receiver::start_with(
        0,
        Arc::new(move |_: &Recorded| {
            if seen.fetch_add(1, Ordering::SeqCst) < failures {
                fail.clone()
            } else {
                Reply::from(200)
            }
        }),
    )
    .await
    .unwrap()
}

fn delivered_after(outcome: &Result<Outcome, HostError>, attempts: u32) {
    match outcome {
        Ok(Outcome::Delivered(d)) => {
            assert_eq!((d.status, d.attempts), (200, attempts), "{outcome:?}")
        }
        other => panic!("expected delivery after {attempts} attempts, got {other:?}"),
    }
}

fn same_delivery_id(requests: &[Recorded]) {
    let first = requests[0].header("idempotency-key").expect("delivery id");
    assert!(requests
        .iter()
        .all(|r| r.header("idempotency-key") == Some(first)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_twice_then_accepted_is_delivered_on_the_third_attempt() {
    let receiver = flaky(2, Reply::from(503)).await;
    let outcome = push(json!({"serverUrl": receiver.origin(), "maxAttempts": 5})).await;
    delivered_after(&outcome, 3);
    let got = receiver.wait_for(3, WAIT).await;
    assert_eq!(got.len(), 3);
    same_delivery_id(&got);
    assert_eq!(
        got[0].body, got[2].body,
        "every attempt sends the same body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_p3_build_retries_and_delivers_the_same() {
    let receiver = flaky(2, Reply::from(503)).await;
    let config = json!({"serverUrl": receiver.origin(), "maxAttempts": 5});
    let outcome = push_on(common::runtime_p3(), config).await;
    delivered_after(&outcome, 3);
    let got = receiver.wait_for(3, WAIT).await;
    assert_eq!(got.len(), 3);
    same_delivery_id(&got);
    assert_eq!(got[0].body, got[2].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_p3_build_says_unreachable_for_a_closed_port() {
    let config = json!({
        "serverUrl": format!("http://127.0.0.1:{}/", common::closed_port()),
        "maxAttempts": 2,
        "retryDeadlineSeconds": 2,
    });
    let outcome = push_on(common::runtime_p3(), config).await;
    assert!(
        matches!(&outcome, Err(HostError::Push(f)) if matches!(f.error, PushError::Unreachable(_))),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_waits_that_long() {
    let throttle = Reply {
        status: 429,
        headers: vec![("Retry-After".into(), "1".into())],
    };
    let receiver = flaky(1, throttle).await;
    let outcome = push(json!({"serverUrl": receiver.origin()})).await;
    delivered_after(&outcome, 2);
    let got = receiver.wait_for(2, WAIT).await;
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(900), "waited only {gap:?}");
    assert!(gap < Duration::from_secs(4), "waited {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_permanent_and_not_retried() {
    let receiver = flaky(usize::MAX, Reply::from(400)).await;
    let outcome = push(json!({"serverUrl": receiver.origin(), "maxAttempts": 5})).await;
    match outcome {
        Err(HostError::Push(f)) => {
            assert!(matches!(f.error, PushError::HttpStatus(ref h) if h.status == 400));
            assert!(!f.retryable, "a 400 will not get better");
            assert_eq!(f.attempts, 1);
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 1, "no retry after a 400");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_times_out_within_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let hung = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // accept, read nothing, answer nothing
        }
    });
    let started = Instant::now();
    let config = json!({"serverUrl": origin, "timeoutSeconds": 1, "maxAttempts": 2,
                        "retryDeadlineSeconds": 10});
    match push(config).await {
        Err(HostError::Push(f)) => {
            assert!(matches!(f.error, PushError::Timeout), "{f:?}");
            assert!(f.retryable);
            assert_eq!(f.attempts, 2);
        }
        other => panic!("{other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "a hung receiver held the call for {took:?}"
    );
    hung.abort();
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body) from `socket`.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return data;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return data;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_mid_body_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut bodies = Vec::new();
        for connection in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else {
                break;
            };
            if connection == 0 {
                // Take the headers and part of the body, then reset the connection.
                let mut buf = [0u8; 256];
                let _ = socket.read(&mut buf).await;
                socket.set_zero_linger().unwrap();
                drop(socket);
                continue;
            }
            let request = read_request(&mut socket).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
            bodies.push(request);
            if bodies.len() == 1 {
                return bodies;
            }
        }
        bodies
    });
    let outcome = push(json!({"serverUrl": origin, "maxAttempts": 3})).await;
    delivered_after(&outcome, 2);
    let requests = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].starts_with(b"POST / HTTP/1.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_storm_loses_no_event() {
    // Every other request fails: 503, 429 with Retry-After: 0, 500, 502, in turn.
    let seen = Arc::new(AtomicUsize::new(0));
    let faults = Arc::new(AtomicUsize::new(0));
    let (seen_in, faults_in) = (seen.clone(), faults.clone());
    let receiver = Receiver::start_with(
        0,
        Arc::new(move |_: &Recorded| {
            let n = seen_in.fetch_add(1, Ordering::SeqCst);
            if n % 2 == 1 {
                return Reply::from(200);
            }
            faults_in.fetch_add(1, Ordering::SeqCst);
            match (n / 2) % 4 {
                0 => Reply::from(503),
                1 => Reply {
                    status: 429,
                    headers: vec![("Retry-After".into(), "0".into())],
                },
                2 => Reply::from(500),
                _ => Reply::from(502),
            }
        }),
    )
    .await
    .unwrap();
    let events = 20;
    let config = json!({"serverUrl": receiver.origin(), "maxAttempts": 4});
    let mut reporter = common::configured(&config).await;
    let mut delivered = 0;
    for buildid in 0..events {
        let build = reporter
            .parse_event(&common::sample_documents("started", 1000 + buildid))
            .await
            .unwrap();
        if let Ok(Outcome::Delivered(_)) = reporter.report(Event::Started, &build).await {
            delivered += 1;
        }
    }
    let got = receiver.wait_for(2 * events as usize, WAIT).await;
    let accepted: std::collections::BTreeSet<_> = got
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .filter_map(|(_, r)| r.header("idempotency-key").map(str::to_string))
        .collect();
    let lost = events as usize - accepted.len();
    eprintln!(
        "fault storm: faults injected: {}, events sent: {events}, events delivered: {delivered}, events lost: {lost}",
        faults.load(Ordering::SeqCst)
    );
    assert_eq!(delivered, events);
    assert_eq!(lost, 0);
    assert_eq!(faults.load(Ordering::SeqCst), events as usize);
}
