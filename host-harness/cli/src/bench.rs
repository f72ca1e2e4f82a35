//! `status-push bench`: the component against a native client, in one run, against one
//! loopback receiver. The native client replays the exact requests the component sends
//! (captured first), over keep-alive connections, as the baseline.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use status_push_cli::receiver::{Receiver, Recorded};
use status_push_host::{BuildEvent, Event, Outcome, Reporter, Runtime, RuntimeOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::Loader;

/// Options of `bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Events per measurement.
    #[arg(long, default_value_t = 4000)]
    events: usize,
    /// Events in flight at once (instances, and native connections).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

const SAMPLES: [(Event, &str); 2] = [
    (Event::Started, include_str!("../demo/started.json")),
    (Event::Finished, include_str!("../demo/finished.json")),
];

/// This process's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs every measurement and prints a report.
pub async fn run(loader: &Loader, args: &Args) -> Result<ExitCode> {
    if args.events == 0 || args.concurrency == 0 {
        bail!("--events and --concurrency must be at least 1");
    }
    let counter = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let (origin, server) = counting_receiver(counter.clone(), connections.clone()).await?;
    let wasm_size = std::fs::metadata(&loader.wasm)
        .with_context(|| format!("cannot read {}", loader.wasm.display()))?
        .len();
    println!(
        "status-push bench: {} events per run, {} in flight, receiver {origin}",
        args.events, args.concurrency
    );
    println!(
        "component: {} ({} KiB)",
        loader.wasm.display(),
        wasm_size / 1024
    );

    // Cold start: a fresh runtime to the first delivered event, compiling, then from a
    // warm compile cache.
    let cache =
        std::env::temp_dir().join(format!("status-push-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let cold = |cache_dir| RuntimeOptions {
        cache_dir,
        ..loader.options.clone()
    };
    let uncached = first_event(&loader.wasm, &cold(None), &origin).await?;
    first_event(&loader.wasm, &cold(Some(cache.clone())), &origin).await?; // fills the cache
    let cached = first_event(&loader.wasm, &cold(Some(cache.clone())), &origin).await?;
    let _ = std::fs::remove_dir_all(&cache);
    println!(
        "cold start to first event: {:.1} ms compiling, {:.1} ms from the compile cache",
        ms(uncached),
        ms(cached)
    );

    let runtime = Arc::new(loader.load()?);
    let overhead = instantiate_overhead(&runtime, &origin, 200).await?;
    println!(
        "per-event instantiate + configure: {:.0} µs (fresh instance, no request)",
        overhead.as_secs_f64() * 1e6
    );

    let mut ratio = None;
    for (label, options) in [
        ("default options", r#""wantProperties": false"#),
        (
            "wantSteps+wantProperties",
            r#""wantProperties": true, "wantSteps": true"#,
        ),
    ] {
        let config = format!(r#"{{"serverUrl": "{origin}/hook", {options}}}"#);
        let requests = capture(&runtime, &config).await?;
        let component = component_run(&runtime, &config, args).await?;
        let native = native_run(&origin, requests.clone(), args).await?;
        println!(
            "\n{label}: request bodies {} and {} bytes",
            requests[0].body.len(),
            requests[1].body.len()
        );
        println!(
            "  component (reused instances):  {:>8.0} events/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
            component.rate, component.p50, component.p99
        );
        println!(
            "  native hyper client, keep-alive:{:>8.0} events/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
            native.rate, native.p50, native.p99
        );
        println!(
            "  ratio component/native: {:.2}",
            component.rate / native.rate
        );
        ratio.get_or_insert(component.rate / native.rate);
    }
    let fresh = fresh_instance_run(&runtime, &origin, args).await?;
    println!("\nfresh instance per event (default options): {:>8.0} events/s  p50 {:>6.0} µs  p99 {:>6.0} µs", fresh.rate, fresh.p50, fresh.p99);
    println!(
        "requests received: {} over {} connections",
        counter.load(Ordering::Relaxed),
        connections.load(Ordering::Relaxed)
    );
    println!("peak RSS: {} MiB", peak_rss_kib().unwrap_or(0) / 1024);
    println!("release .wasm size: {wasm_size} bytes");
    server.abort();
    println!(
        "throughput ratio component/native: {:.2}",
        ratio.unwrap_or(0.0)
    );
    Ok(ExitCode::SUCCESS)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A receiver that only counts and answers 200, so it costs both clients the same.
async fn counting_receiver(
    counter: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let _ = request.into_body().collect().await;
                        counter.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"{}",
                        ))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((origin, task))
}

async fn configured(runtime: &Runtime, config: &str) -> Result<Reporter> {
    let mut reporter = runtime.reporter().await?;
    let config = reporter.parse_config(config).await?;
    reporter.configure(config).await?;
    Ok(reporter)
}

async fn events(reporter: &mut Reporter) -> Result<Vec<(Event, BuildEvent)>> {
    let mut parsed = Vec::new();
    for (event, documents) in SAMPLES {
        parsed.push((event, reporter.parse_event(documents).await?));
    }
    Ok(parsed)
}

async fn first_event(
    wasm: &std::path::Path,
    options: &RuntimeOptions,
    origin: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let runtime = Runtime::load_with(wasm, options)?;
    let mut reporter =
        configured(&runtime, &format!(r#"{{"serverUrl": "{origin}/hook"}}"#)).await?;
    let (event, build) = events(&mut reporter).await?.remove(0);
    expect_delivered(reporter.report(event, &build).await?)?;
    Ok(started.elapsed())
}

fn expect_delivered(outcome: Outcome) -> Result<()> {
    match outcome {
        Outcome::Delivered(_) => Ok(()),
        other => bail!("expected a delivery, got {other}"),
    }
}

async fn instantiate_overhead(runtime: &Runtime, origin: &str, rounds: u32) -> Result<Duration> {
    let config = format!(r#"{{"serverUrl": "{origin}/hook"}}"#);
    let mut parser = runtime.reporter().await?;
    let config = parser.parse_config(&config).await?;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut reporter = runtime.reporter().await?;
        reporter.configure(config.clone()).await?;
    }
    Ok(started.elapsed() / rounds)
}

/// The exact requests the component sends for the two sample events.
async fn capture(runtime: &Runtime, config: &str) -> Result<Vec<Recorded>> {
    let receiver = Receiver::start(0).await?;
    let config = config.replace(&origin_of(config), &receiver.origin());
    let mut reporter = configured(runtime, &config).await?;
    for (event, build) in events(&mut reporter).await? {
        expect_delivered(reporter.report(event, &build).await?)?;
    }
    let requests = receiver.wait_for(2, Duration::from_secs(5)).await;
    if requests.len() != 2 {
        bail!("capturing the component's requests failed");
    }
    Ok(requests)
}

fn origin_of(config: &str) -> String {
    let start = config.find("http://").unwrap_or(0);
    let rest = &config[start + 7..];
    format!("http://{}", &rest[..rest.find('/').unwrap_or(rest.len())])
}

struct Measured {
    rate: f64,
    p50: f64,
    p99: f64,
}

fn measured(latencies: &mut [Duration], elapsed: Duration) -> Measured {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    Measured {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// `concurrency` tasks, each with its own configured instance, reporting the sample
/// events in turn.
async fn component_run(runtime: &Runtime, config: &str, args: &Args) -> Result<Measured> {
    let per_task = args.events.div_ceil(args.concurrency);
    let mut ready = Vec::new();
    for _ in 0..args.concurrency {
        let mut reporter = configured(runtime, config).await?;
        let parsed = events(&mut reporter).await?;
        ready.push((reporter, parsed));
    }
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for (mut reporter, parsed) in ready {
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let (event, build) = &parsed[i % parsed.len()];
                let t = Instant::now();
                expect_delivered(reporter.report(*event, build).await?)?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    collect(tasks, started).await
}

/// Like `component_run`, but every event gets a fresh instance (instantiate, configure,
/// report).
async fn fresh_instance_run(runtime: &Arc<Runtime>, origin: &str, args: &Args) -> Result<Measured> {
    let config = format!(r#"{{"serverUrl": "{origin}/hook"}}"#);
    let mut parser = configured(runtime, &config).await?;
    let config = parser.parse_config(&config).await?;
    let parsed = Arc::new(events(&mut parser).await?);
    let per_task = args.events.div_ceil(args.concurrency);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..args.concurrency {
        let (config, parsed, runtime) = (config.clone(), parsed.clone(), runtime.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let (event, build) = &parsed[i % parsed.len()];
                let t = Instant::now();
                let mut reporter = runtime.reporter().await?;
                reporter.configure(config.clone()).await?;
                expect_delivered(reporter.report(*event, build).await?)?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    collect(tasks, started).await
}

/// `concurrency` keep-alive connections replaying the captured requests.
async fn native_run(origin: &str, requests: Vec<Recorded>, args: &Args) -> Result<Measured> {
    let addr = origin.trim_start_matches("http://").to_string();
    let per_task = args.events.div_ceil(args.concurrency);
    let requests = Arc::new(requests);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..args.concurrency {
        let (addr, requests) = (addr.clone(), requests.clone());
        tasks.spawn(async move {
            let stream = TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut latencies = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let captured = &requests[i % requests.len()];
                let mut request = hyper::Request::post(&captured.path);
                for (name, value) in &captured.headers {
                    request = request.header(name, value);
                }
                let request = request.body(Full::new(captured.body.clone()))?;
                let t = Instant::now();
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                if !status.is_success() {
                    bail!("native request answered {status}");
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    collect(tasks, started).await
}

/// Waits for every spawned measurement task and pools their latencies.
async fn collect(mut tasks: JoinSet<Result<Vec<Duration>>>, started: Instant) -> Result<Measured> {
    let mut all = Vec::new();
    while let Some(result) = tasks.join_next().await {
        all.extend(result.context("a measurement task panicked")??);
    }
    Ok(measured(&mut all, started.elapsed()))
}
