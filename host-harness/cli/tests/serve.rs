//! `status-push serve` as an operator runs it: inbound authentication and replays, a
//! corpus of bad requests, load against a flapping receiver, `kill -9` and SIGTERM with
//! an outbox, `/healthz` and `/metrics`, `redeliver`, and `receive`'s signature checks.
//! Every server here listens on 127.0.0.1:0 and is stopped by the test.

mod common;

use common::{documents, temp_dir};
use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use status_push::signature::Signer;
use status_push::SigningScheme;
use status_push_cli::receiver::{Receiver, Recorded, Reply};
use status_push_host::outbox::{Location, Outbox};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const TOKEN: &str = "t0ken-of-sixteen-chars";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==";

fn cli() -> Command {
    common::cli("serve-tests-cache")
}

/// A running `status-push serve`; killed when dropped.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    async fn start(dir: &Path, config: &Value, args: &[&str]) -> Serve {
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .unwrap();
        let mut child = cli()
            .args(["serve", "--config", config_path.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let (_, addr) = common::serve_address(&mut child, &dir.join("serve.log")).await;
        Serve { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }
}

/// Sends `request` as is on a new connection and reads the answer until the server
/// closes it: (status, body). Status 0: no answer (the connection was refused, or closed
/// before an answer, as when `serve` is killed mid-request).
async fn raw(addr: &str, request: Vec<u8>) -> (u16, String) {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let (mut read, mut write) = stream.into_split();
    // Written concurrently: the server may answer before the body is all sent.
    let writer = tokio::spawn(async move {
        for chunk in request.chunks(64 * 1024) {
            if write.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = write.flush().await;
        write
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut answer)).await;
    drop(writer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A POST with `Connection: close`, `Content-Length` and the given extra header lines.
fn post(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(secret: &str, id: &str, at: u64, body: &[u8]) -> Vec<(String, String)> {
    Signer::new(SigningScheme::StandardWebhooks, secret)
        .unwrap()
        .headers(id, at, body)
}

fn refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

const BEARER: &str = "Bearer t0ken-of-sixteen-chars";

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_listen_beyond_loopback_without_authentication() {
    let dir = temp_dir("serve-open");
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        json!({"serverUrl": "http://127.0.0.1:9/"}).to_string(),
    )
    .unwrap();
    let out = cli()
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("without inbound authentication") && lines[0].contains("inboundToken"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_or_replayed_requests_get_401_and_push_nothing() {
    let receiver = Receiver::start(0).await.unwrap();
    let dir = temp_dir("serve-auth");
    let config = json!({"serverUrl": format!("{}/hook", receiver.origin()),
                        "inboundToken": TOKEN, "inboundSecret": SECRET});
    let outbox = dir.join("outbox.sqlite");
    let serve = Serve::start(&dir, &config, &["--outbox", outbox.to_str().unwrap()]).await;
    let addr = &serve.addr;
    let body = documents("started", 7001);
    let body = body.as_bytes();
    let now = now_s();
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("no credentials", vec![]),
        (
            "a wrong token",
            vec![(
                "Authorization".into(),
                "Bearer t0ken-of-sixteen-charX".into(),
            )],
        ),
        (
            "a bad signature",
            signed(OTHER_SECRET, "msg_bad", now, body),
        ),
        (
            "a timestamp outside tolerance",
            signed(SECRET, "msg_stale", now - 301, body),
        ),
        (
            "a signature of another body",
            signed(SECRET, "msg_other", now, b"{}"),
        ),
    ];
    for (what, headers) in &cases {
        let (status, answer) = raw(addr, post("/started", &refs(headers), body)).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert_eq!(json_of(&answer)["error"], "unauthorized", "{what}");
    }
    // A good signature is accepted once; the same webhook-id again is a replay.
    let good = signed(SECRET, "msg_once", now, body);
    let (status, answer) = raw(addr, post("/started", &refs(&good), body)).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = raw(addr, post("/started", &refs(&good), body)).await;
    assert_eq!(status, 401, "replay: {answer}");
    assert!(
        json_of(&answer)["reason"]
            .as_str()
            .unwrap()
            .contains("replayed"),
        "{answer}"
    );
    // The token works too.
    let finished = documents("finished", 7001);
    let (status, answer) = raw(
        addr,
        post(
            "/finished",
            &[("Authorization", BEARER)],
            finished.as_bytes(),
        ),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 2, "{got:?}");

    // Without an outbox, the relay component refuses the same callers.
    drop(serve);
    let before = receiver.requests().len();
    let dir = temp_dir("serve-auth-relay");
    let serve = Serve::start(&dir, &config, &[]).await;
    for (what, headers) in &cases {
        let (status, answer) = raw(&serve.addr, post("/started", &refs(headers), body)).await;
        assert_eq!(status, 401, "relay, {what}: {answer}");
    }
    let (status, answer) = raw(
        &serve.addr,
        post("/started", &[("Authorization", BEARER)], body),
    )
    .await;
    assert_eq!(
        (status, &json_of(&answer)["outcome"]),
        (200, &json!("delivered"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), before + 1);
}

/// At least 30 requests that must each get a 4xx, the service staying up.
fn bad_requests() -> Vec<(&'static str, Vec<u8>)> {
    let auth = [("Authorization", BEARER)];
    let json_post = |body: &[u8]| post("/started", &auth, body);
    let mut deep = "[".repeat(100_000);
    deep.push_str(&"]".repeat(100_000));
    let deep_props = format!(
        r#"{{"build": {{"buildid": 1, "number": 1, "builderid": 1, "buildrequestid": 1, "workerid": 1, "masterid": 1, "started_at": 1, "complete": false, "state_string": "x", "properties": {{"p": [{}1{}, "src"]}}}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let huge = {
        let body = vec![b' '; 40 << 20];
        post("/started", &auth, &body)
    };
    let chunked_huge = {
        let mut request = format!(
            "POST /started HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nAuthorization: {BEARER}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..40 {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(&chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        request
    };
    let mut non_utf8 = documents("started", 1).into_bytes();
    non_utf8.splice(10..10, [0xff, 0xfe, 0xc3]);
    let mut with_file = json_of(&documents("started", 1));
    with_file["steps"] = json!([{"stepid": 1, "number": 0, "name": "s", "buildid": 1,
        "results": 0, "started_at": 1, "complete": true, "state_string": "done",
        "logs": [{"logid": 1, "name": "stdio", "slug": "stdio", "stepid": 1, "complete": true,
                  "num_lines": 1, "type": "s", "content_file": "/etc/passwd"}]}]);
    let truncated = documents("started", 1);
    let truncated = &truncated.as_bytes()[..truncated.len() / 2];
    let head = |lines: &str| {
        format!("POST /started HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n{lines}\r\n")
            .into_bytes()
    };
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    vec![
        ("truncated JSON", json_post(truncated)),
        ("empty body", json_post(b"")),
        ("null", json_post(b"null")),
        ("an array", json_post(b"[]")),
        ("a string", json_post(b"\"build\"")),
        ("an empty object", json_post(b"{}")),
        ("build is a string", json_post(br#"{"build": "1"}"#)),
        (
            "buildid is a string",
            json_post(br#"{"build": {"buildid": "one"}}"#),
        ),
        (
            "buildid is huge",
            json_post(br#"{"build": {"buildid": 1e400}}"#),
        ),
        ("steps is an object", {
            let mut doc = json_of(&documents("started", 1));
            doc["steps"] = json!({"a": 1});
            json_post(doc.to_string().as_bytes())
        }),
        ("properties is a list", {
            let mut doc = json_of(&documents("started", 1));
            doc["properties"] = json!([1, 2]);
            json_post(doc.to_string().as_bytes())
        }),
        ("not UTF-8", json_post(&non_utf8)),
        ("only invalid bytes", json_post(&[0xff, 0xfe, 0xfd])),
        ("deeply nested arrays", json_post(deep.as_bytes())),
        ("deeply nested property", json_post(deep_props.as_bytes())),
        ("trailing garbage", {
            let mut body = documents("started", 1).into_bytes();
            body.extend_from_slice(b"}}");
            json_post(&body)
        }),
        (
            "a content_file path",
            json_post(with_file.to_string().as_bytes()),
        ),
        ("40 MiB with Content-Length", huge),
        ("40 MiB chunked", chunked_huge),
        (
            "GET /started",
            b"GET /started HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        ("PUT /finished", {
            let mut r = post("/finished", &auth, b"{}");
            r.splice(0..4, b"PUT ".iter().copied());
            r
        }),
        ("wrong path", post("/start", &auth, b"{}")),
        ("dot segments", post("/x/../started", &auth, b"{}")),
        (
            "encoded CRLF in the path",
            post("/started%0d%0aX-Injected:%20yes", &auth, b"{}"),
        ),
        (
            "text/plain",
            post(
                "/started",
                &[("Authorization", BEARER), ("Content-Type", "text/plain")],
                b"{}",
            ),
        ),
        (
            "a form",
            post(
                "/started",
                &[
                    ("Authorization", BEARER),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                b"a=1",
            ),
        ),
        (
            "bare CR in a header",
            head("Authorization: Bearer x\rX-Injected: yes\r\nContent-Length: 2\r\n\r\n{}"),
        ),
        (
            "folded header",
            head(&format!(
                "Authorization: {BEARER}\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\n{{}}"
            )),
        ),
        (
            "space in a header name",
            head("Bad Name: x\r\nContent-Length: 2\r\n\r\n{}"),
        ),
        (
            "conflicting Content-Length",
            head("Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
        ),
        (
            "Content-Length and chunked",
            head("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "negative Content-Length",
            head("Content-Length: -1\r\n\r\n"),
        ),
        (
            "200 headers",
            head(&format!("{many_headers}Content-Length: 2\r\n\r\n{{}}")),
        ),
        ("a non-UTF-8 token", {
            let mut r = post("/started", &[], documents("started", 1).as_bytes());
            let at = r.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
            r.splice(
                at..at,
                b"Authorization: Bearer \xff\xfe\xfd-not-the-token\r\n"
                    .iter()
                    .copied(),
            );
            r
        }),
        (
            "a token with a CRLF injection",
            post(
                "/started",
                &[("Authorization", "Bearer t0ken-of-sixteen-chars%0d%0a")],
                documents("started", 1).as_bytes(),
            ),
        ),
    ]
}

/// Headers, `Content-Length: 100`, ten bytes of body, then nothing.
async fn slow_body(addr: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /started HTTP/1.1\r\nHost: relay\r\nAuthorization: {BEARER}\r\nContent-Length: 100\r\n\r\n{{\"build\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_4xx_and_nothing_is_pushed() {
    let receiver = Receiver::start(0).await.unwrap();
    let config = json!({"serverUrl": format!("{}/hook", receiver.origin()),
                        "inboundToken": TOKEN, "maxBodyBytes": 1 << 20});
    let corpus = bad_requests();
    assert!(corpus.len() >= 30, "{} requests", corpus.len());
    // The one good request of each round is all the receiver may get.
    let mut pushed = 0;
    for durable in [true, false] {
        let dir = temp_dir(&format!("serve-corpus-{durable}"));
        let outbox = dir.join("outbox.sqlite");
        let mut args = vec![
            "--body-timeout-seconds",
            "1",
            "--header-timeout-seconds",
            "1",
        ];
        if durable {
            args.extend(["--outbox", outbox.to_str().unwrap()]);
        }
        let serve = Serve::start(&dir, &config, &args).await;
        for (what, request) in &corpus {
            // Only a host that queues hands documents to `parse_event` on the host, where
            // a `content_file` would be opened; the relay component ignores the key.
            if !durable && *what == "a content_file path" {
                continue;
            }
            let (status, answer) = raw(&serve.addr, request.clone()).await;
            assert!(
                (400..500).contains(&status),
                "durable={durable}, {what}: got {status} {}",
                answer.chars().take(300).collect::<String>()
            );
        }
        let (status, answer) = slow_body(&serve.addr).await;
        assert_eq!(status, 408, "durable={durable}, a stalled body: {answer}");
        // A client that never finishes its headers is cut off after the header timeout.
        let mut stalled = TcpStream::connect(&serve.addr).await.unwrap();
        stalled
            .write_all(b"POST /started HTTP/1.1\r\nHost: re")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "durable={durable}: stalled headers were not cut off"
        );

        // Still up, and a good request goes through.
        let (status, answer) = raw(
            &serve.addr,
            post(
                "/started",
                &[("Authorization", BEARER)],
                documents("started", 9).as_bytes(),
            ),
        )
        .await;
        assert!(
            status == 202 || status == 200,
            "durable={durable}: {status} {answer}"
        );
        let got = receiver.wait_for(pushed + 1, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            receiver.requests().len(),
            pushed + 1,
            "durable={durable}: {got:?}"
        );
        drop(serve);
        let _ = std::fs::remove_dir_all(&dir);
        pushed += 1;
    }
}

/// The process's resident memory (KiB) and open file descriptors.
fn usage(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// What one 202 promised.
#[derive(Debug, Clone)]
struct Promise {
    delivery_id: String,
    buildid: i64,
    event: &'static str,
}

/// 4 clients POST started/finished pairs of fresh builds for `duration`; returns every
/// 202's promise. Connection errors (a killed server) end a client's run.
async fn load(addr: String, duration: Duration) -> Vec<Promise> {
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..4i64 {
        let addr = addr.clone();
        clients.spawn(async move {
            let mut promised = Vec::new();
            let until = Instant::now() + duration;
            let mut n = 0;
            'run: while Instant::now() < until {
                n += 1;
                let buildid = 1_000_000 + client * 100_000 + n;
                for event in ["started", "finished"] {
                    let Ok(stream) = TcpStream::connect(&addr).await else {
                        break 'run;
                    };
                    drop(stream);
                    let (status, answer) = raw(
                        &addr,
                        post(
                            &format!("/{event}"),
                            &[("Authorization", BEARER)],
                            documents(event, buildid).as_bytes(),
                        ),
                    )
                    .await;
                    match status {
                        202 => promised.push(Promise {
                            delivery_id: json_of(&answer)["delivery_id"]
                                .as_str()
                                .unwrap()
                                .to_string(),
                            buildid,
                            event,
                        }),
                        // Busy, or killed mid-request: this build's later event is not sent.
                        _ => continue 'run,
                    }
                }
            }
            promised
        });
    }
    let mut promised = Vec::new();
    while let Some(done) = clients.join_next().await {
        promised.extend(done.unwrap());
    }
    promised
}

/// A receiver that answers 503 every other 400 ms window, and records which delivery ids
/// it accepted (2xx), in order.
fn flapping_receiver() -> (
    Arc<Mutex<Vec<String>>>,
    status_push_cli::receiver::Responder,
) {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let log = accepted.clone();
    let respond = Arc::new(move |request: &Recorded| {
        if (started.elapsed().as_millis() / 400) % 2 == 1 {
            return Reply::from(503);
        }
        if let Some(id) = request.header("idempotency-key") {
            log.lock().unwrap().push(id.to_string());
        }
        Reply::from(200)
    });
    (accepted, respond)
}

async fn wait_delivered(accepted: &Arc<Mutex<Vec<String>>>, promised: &[Promise], limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let seen: std::collections::HashSet<String> =
            accepted.lock().unwrap().iter().cloned().collect();
        let missing = promised
            .iter()
            .filter(|p| !seen.contains(&p.delivery_id))
            .count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < until,
            "{missing} of {} accepted events not delivered",
            promised.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_with_a_flapping_receiver_every_accepted_event_arrives_once_in_order() {
    let (accepted, respond) = flapping_receiver();
    let receiver = Receiver::start_with(0, respond).await.unwrap();
    let dir = temp_dir("serve-load");
    let outbox = dir.join("outbox.sqlite");
    let config = json!({"serverUrl": format!("{}/hook", receiver.origin()),
                        "inboundToken": TOKEN, "maxAttempts": 2, "retryDeadlineSeconds": 2});
    let serve = Serve::start(&dir, &config, &["--outbox", outbox.to_str().unwrap()]).await;
    let pid = serve.pid();
    let before = usage(pid);
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(Mutex::new((0u64, 0usize)));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let (rss, fds) = usage(pid);
                {
                    let mut peak = peak.lock().unwrap();
                    *peak = (peak.0.max(rss), peak.1.max(fds));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let promised = load(serve.addr.clone(), Duration::from_secs(4)).await;
    let accepted_for = started.elapsed();
    wait_delivered(&accepted, &promised, Duration::from_secs(120)).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let after = usage(pid);
    let (peak_rss, peak_fds) = *peak.lock().unwrap();
    println!(
        "load: {} events accepted in {accepted_for:.1?}, all delivered after {:.1?}; \
         RSS {} KiB before, {peak_rss} KiB peak, {} KiB after; open fds {} before, {peak_fds} peak, {} after",
        promised.len(),
        started.elapsed(),
        before.0,
        after.0,
        before.1,
        after.1
    );
    assert!(
        promised.len() >= 20,
        "only {} events accepted",
        promised.len()
    );
    let delivered = accepted.lock().unwrap().clone();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for id in &delivered {
        *count.entry(id.as_str()).or_default() += 1;
    }
    for p in &promised {
        assert_eq!(count.get(p.delivery_id.as_str()), Some(&1), "{p:?}");
    }
    let position: HashMap<&str, usize> = delivered
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut builds: HashMap<i64, Vec<&Promise>> = HashMap::new();
    for p in &promised {
        builds.entry(p.buildid).or_default().push(p);
    }
    for (build, events) in builds {
        if let [started, finished] = events.as_slice() {
            assert_eq!((started.event, finished.event), ("started", "finished"));
            assert!(
                position[started.delivery_id.as_str()] < position[finished.delivery_id.as_str()],
                "build {build}: finished arrived before started"
            );
        }
    }
    assert!(peak_fds < 512, "open fds grew to {peak_fds}");
    assert!(peak_rss < 1 << 20, "RSS grew to {peak_rss} KiB");
    assert!(open(&outbox).await.pending().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_serve_delivers_every_accepted_event_after_restart() {
    let (accepted, respond) = flapping_receiver();
    let receiver = Receiver::start_with(0, respond).await.unwrap();
    let dir = temp_dir("serve-kill");
    let outbox = dir.join("outbox.sqlite");
    let config = json!({"serverUrl": format!("{}/hook", receiver.origin()),
                        "inboundToken": TOKEN, "maxAttempts": 2, "retryDeadlineSeconds": 2});
    let args = ["--outbox", outbox.to_str().unwrap()];
    let mut serve = Serve::start(&dir, &config, &args).await;
    let loading = tokio::spawn(load(serve.addr.clone(), Duration::from_secs(4)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    serve.child.start_kill().unwrap(); // SIGKILL: no cleanup runs
    let _ = serve.child.wait().await;
    let promised = loading.await.unwrap();
    let pending = open(&outbox).await.pending().await.unwrap().len();
    println!(
        "kill -9: {} events accepted before the kill, {pending} still pending",
        promised.len()
    );
    assert!(!promised.is_empty());
    let _serve = Serve::start(&dir, &config, &args).await;
    wait_delivered(&accepted, &promised, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_sigterm_leave_pending_events_in_the_outbox() {
    // Nothing listens on the receiver's port: every event stays pending.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = temp_dir("serve-term");
    let outbox = dir.join("outbox.sqlite");
    let config = json!({"serverUrl": format!("http://127.0.0.1:{port}/hook"),
                        "inboundToken": TOKEN, "maxAttempts": 1});
    let mut serve = Serve::start(&dir, &config, &["--outbox", outbox.to_str().unwrap()]).await;
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let (status, _) = raw(&serve.addr, get("/healthz")).await;
    assert_eq!(status, 200);
    for buildid in [1, 2, 3] {
        let (status, answer) = raw(
            &serve.addr,
            post(
                "/started",
                &[("Authorization", BEARER)],
                documents("started", buildid).as_bytes(),
            ),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        assert!(json_of(&answer)["delivery_id"]
            .as_str()
            .unwrap()
            .starts_with("sp_"));
    }
    let (status, _) = raw(&serve.addr, post("/started", &[], b"{}")).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, metrics) = raw(&serve.addr, get("/metrics")).await;
    assert_eq!(status, 200, "{metrics}");
    for line in [
        "status_push_events_received_total 4",
        "status_push_responses_total{status=\"202\"} 3",
        "status_push_responses_total{status=\"401\"} 1",
        "status_push_events_pending 3",
        "status_push_dead_letters 0",
        "status_push_events_failed_total{kind=\"unreachable\"}",
        "status_push_delivery_attempts_total",
        "status_push_delivery_latency_seconds_bucket",
        "# EOF",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    let stopping = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &serve.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(20), serve.child.wait())
        .await
        .expect("serve stops within the shutdown bound")
        .unwrap();
    assert!(status.success(), "{status:?}");
    println!("SIGTERM: stopped in {:.1?}", stopping.elapsed());
    assert_eq!(open(&outbox).await.pending().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliver_makes_dead_letters_pending_again() {
    let refuse = Arc::new(AtomicBool::new(true));
    let delivered = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let (refuse, delivered) = (refuse.clone(), delivered.clone());
        Receiver::start_with(
            0,
            Arc::new(move |_: &Recorded| {
                if refuse.load(Ordering::Relaxed) {
                    Reply::from(400)
                } else {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    Reply::from(200)
                }
            }),
        )
        .await
        .unwrap()
    };
    let dir = temp_dir("serve-redeliver");
    let outbox = dir.join("outbox.sqlite");
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        json!({"serverUrl": format!("{}/hook", receiver.origin())}).to_string(),
    )
    .unwrap();
    for buildid in [31, 32] {
        let build = dir.join(format!("{buildid}.json"));
        std::fs::write(&build, documents("started", buildid)).unwrap();
        let out = cli()
            .args(["push", "--outbox", outbox.to_str().unwrap()])
            .args(["--config", config.to_str().unwrap(), "--event", "started"])
            .args(["--build", build.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("dead letter"),
            "{out:?}"
        );
    }
    let letters = open(&outbox).await.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 2);
    let redeliver = |args: &[&str]| {
        let mut command = cli();
        command
            .args(["redeliver", "--outbox", outbox.to_str().unwrap()])
            .args(args);
        command
    };
    let out = redeliver(&["--id", "999"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = redeliver(&[]).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "neither --id nor --all: {out:?}"
    );
    let out = redeliver(&["--id", &letters[0].delivery_id])
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("pending again: 1"),
        "{out:?}"
    );
    let out = redeliver(&["--all"]).output().await.unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("pending again: 1"),
        "{out:?}"
    );
    refuse.store(false, Ordering::Relaxed);
    let out = cli()
        .args(["deliver", "--outbox", outbox.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "delivered: 2, dead letters: 0, pending: 0"
    );
    assert_eq!(delivered.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_says_whether_each_signature_verifies() {
    let github = "It's a Secret to Everybody";
    let mut child = cli()
        .args(["receive", "--port", "0", "--verify-secret", SECRET])
        .args(["--github-secret", github])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_string();
    let body = br#"{"test": 2432232314}"#;
    let mut headers = signed(SECRET, "msg_1", now_s(), body);
    headers.extend(
        Signer::new(SigningScheme::Github, github)
            .unwrap()
            .headers("gh-1", 0, body),
    );
    raw(&addr, post("/hook", &refs(&headers), body)).await;
    raw(&addr, post("/hook", &refs(&headers), b"{\"test\": 1}")).await;
    let mut verdicts = Vec::new();
    while verdicts.len() < 4 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("receive prints a verdict")
            .unwrap()
            .unwrap();
        if line.starts_with("signature: ") {
            verdicts.push(line);
        }
    }
    assert_eq!(verdicts[0], "signature: verified (Standard Webhooks)");
    assert_eq!(verdicts[1], "signature: verified (GitHub)");
    assert!(
        verdicts[2].starts_with("signature: does not verify (Standard Webhooks)"),
        "{verdicts:?}"
    );
    assert!(
        verdicts[3].starts_with("signature: does not verify (GitHub)"),
        "{verdicts:?}"
    );
    let _ = child.kill().await;
}

async fn open(path: &std::path::Path) -> Outbox {
    Outbox::open(&Location::Sqlite(path.to_path_buf()))
        .await
        .unwrap()
}

/// The WASI 0.3 builds run where the 0.2 ones do: `serve` hosts the 0.3 relay (which
/// writes its answer's body after returning the response) with and without an outbox,
/// and `push` and `deliver` run the 0.3 reporter (`--wasm`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_p3_builds_serve_push_and_deliver() {
    let target = common::workspace().join("target");
    let (reporter, relay) = (
        target.join("status-push-p3.wasm"),
        target.join("status-push-relay-p3.wasm"),
    );
    // The first request of each connection-less run fails retryably, every later one is
    // accepted.
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let receiver = Receiver::start_with(
        0,
        Arc::new(move |_: &Recorded| {
            if counter.fetch_add(1, Ordering::SeqCst) == 3 {
                Reply::from(503)
            } else {
                Reply::from(200)
            }
        }),
    )
    .await
    .unwrap();
    let dir = temp_dir("serve-p3");
    let server_url = format!("{}/hook", receiver.origin());
    let config = json!({"serverUrl": server_url, "inboundToken": TOKEN, "maxAttempts": 1});
    let relay_args = ["--relay", relay.to_str().unwrap()];

    let serve = Serve::start(&dir, &config, &relay_args).await;
    let started = documents("started", 7301);
    let (status, answer) = raw(
        &serve.addr,
        post("/started", &[("Authorization", BEARER)], started.as_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(json_of(&answer)["outcome"], "delivered", "{answer}");
    let (status, answer) = raw(
        &serve.addr,
        post("/started", &[("Authorization", BEARER)], b"{"),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    drop(serve);

    let outbox = dir.join("outbox.sqlite");
    let queued = dir.join("queued");
    std::fs::create_dir_all(&queued).unwrap();
    let outbox_args = [&relay_args[..], &["--outbox", outbox.to_str().unwrap()]].concat();
    let serve = Serve::start(&queued, &config, &outbox_args).await;
    let finished = documents("finished", 7301);
    let (status, answer) = raw(
        &serve.addr,
        post(
            "/finished",
            &[("Authorization", BEARER)],
            finished.as_bytes(),
        ),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(receiver.wait_for(2, Duration::from_secs(30)).await.len(), 2);
    drop(serve);

    // `push` through an outbox of its own (serve's, killed, may still hold its event):
    // its one attempt gets the 503 and the event stays pending, then `deliver` sends it.
    let outbox = dir.join("push-outbox.sqlite");
    let push_config = dir.join("push.json");
    std::fs::write(
        &push_config,
        json!({"serverUrl": server_url, "maxAttempts": 1}).to_string(),
    )
    .unwrap();
    let build = dir.join("finished.json");
    std::fs::write(&build, documents("finished", 7302)).unwrap();
    let out = cli()
        .args(["push", "--wasm", reporter.to_str().unwrap()])
        .args([
            "--config",
            push_config.to_str().unwrap(),
            "--event",
            "finished",
        ])
        .args(["--build", build.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pushed = cli()
        .args(["push", "--wasm", reporter.to_str().unwrap()])
        .args(["--outbox", outbox.to_str().unwrap()])
        .args([
            "--config",
            push_config.to_str().unwrap(),
            "--event",
            "finished",
        ])
        .args(["--build", build.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(pushed.status.code(), Some(1), "{pushed:?}");
    assert!(
        String::from_utf8_lossy(&pushed.stdout).starts_with("pending: "),
        "{pushed:?}"
    );
    let delivered = cli()
        .args(["deliver", "--wasm", reporter.to_str().unwrap()])
        .args([
            "--outbox",
            outbox.to_str().unwrap(),
            "--budget-seconds",
            "30",
        ])
        .output()
        .await
        .unwrap();
    assert!(delivered.status.success(), "{delivered:?}");
    assert_eq!(
        String::from_utf8_lossy(&delivered.stdout).trim(),
        "delivered: 1, dead letters: 0, pending: 0"
    );
    assert_eq!(receiver.requests().len(), 5);
}
