//! `status-push-bench component`: where an event's time goes, in one run against one
//! loopback receiver (on a thread of its own, so its CPU is not counted). At each
//! concurrency:
//!
//! - the component with reused instances, given records (`report`), JSON
//!   (`report-json`) or JSON parsed first (`parse-event`, then `report`), and with a fresh
//!   instance per event;
//! - its WASI 0.3 build (`--p3-wasm`) with reused instances, given records and JSON;
//! - **native same work**: the component's own crate compiled for the host filters,
//!   builds and encodes each payload from the same records and sends it through the
//!   host's own connection pool: the component's work without the sandbox;
//! - **byte replay**: the component's captured requests replayed by plain hyper
//!   connections: the HTTP path's limit.
//!
//! Then the attribution runs: a call the filter skips (the call, lifting and lowering,
//! filtering), a host that answers a canned 200 without a socket (everything but the
//! network), and the component and the native same work on a one-thread tokio runtime
//! (without the cost of waking other workers). `--only RUN` runs one of them alone, for
//! `valgrind --tool=callgrind`.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
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
use status_push::config::Settings;
use status_push::{documents, filter, payload, signature, EventKind};
use status_push_cli::receiver::{Receiver, Recorded};
use status_push_cli::usage::peak_rss_kib;
use status_push_host::{BuildEvent, Event, Outcome, Reporter, Runtime, RuntimeOptions, Wasi};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use status_push_cli::loader::Loader;

/// The WASI 0.3 build measured beside `--wasm` unless `--p3-wasm` says otherwise.
const DEFAULT_P3_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../target/status-push-p3.wasm"
);

/// Options of `component`.
#[derive(clap::Args)]
pub struct Args {
    /// The WASI 0.3 build of the component, measured beside `--wasm` (the WASI 0.2 one).
    #[arg(long, env = "STATUS_PUSH_P3_WASM", default_value = DEFAULT_P3_WASM)]
    p3_wasm: PathBuf,
    /// Events per measurement.
    #[arg(long, default_value_t = 4000)]
    events: usize,
    /// Events in flight at once (instances, and native connections); a list measures
    /// each level.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    concurrency: Vec<usize>,
    /// Run only this measurement (default options, the first concurrency) and print one
    /// line: for profilers such as `valgrind --tool=callgrind`.
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// With `--only`: no pooling allocator, whose address-space reservation valgrind
    /// cannot map.
    #[arg(long, requires = "only")]
    no_pooling: bool,
    /// With `--only`: name the guest's compiled functions in `/tmp/perf-PID.map`.
    #[arg(long, requires = "only")]
    perf_map: bool,
}

/// One measurement, for `--only`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    /// The component, reused instances, records.
    Record,
    /// The component, reused instances, report-json.
    Json,
    /// The component, reused instances, parse-event then report (JSON lifted out as
    /// records and lowered back in).
    Parsed,
    /// The component, a fresh instance per event.
    Fresh,
    /// The component's crate natively, through the host's connection pool.
    Native,
    /// The captured bytes over plain hyper connections.
    Replay,
    /// The component, records, with a configuration whose filter skips every event.
    Skip,
    /// The component, records, with the host answering a canned 200 without a socket.
    Canned,
    /// The component, records, on a tokio runtime of one thread.
    OneThread,
}

const SAMPLES: [(Event, &str); 2] = [
    (Event::Started, include_str!("../../../demo/started.json")),
    (Event::Finished, include_str!("../../../demo/finished.json")),
];

const OPTION_SETS: [(&str, &str); 2] = [
    ("default options", r#""wantProperties": false"#),
    (
        "wantSteps+wantProperties",
        r#""wantProperties": true, "wantSteps": true"#,
    ),
];

/// What the bench shares between runs.
struct Bench {
    origin: String,
    /// The receiver thread, whose CPU time is not the clients'.
    receiver_tid: i32,
    events: usize,
}

/// Runs every measurement and prints a report.
pub async fn run(loader: &Loader, args: &Args) -> Result<ExitCode> {
    if args.events == 0 || args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--events and --concurrency must be at least 1");
    }
    let counter = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let (origin, receiver_tid) = counting_receiver(counter.clone(), connections.clone())?;
    let bench = Bench {
        origin,
        receiver_tid,
        events: args.events,
    };
    if let Some(only) = args.only {
        let loader = Loader {
            wasm: loader.wasm.clone(),
            options: RuntimeOptions {
                pooling: !args.no_pooling,
                perf_map: args.perf_map,
                ..loader.options.clone()
            },
        };
        return run_only(&loader, &bench, only, args.concurrency[0]).await;
    }
    let size = |path: &std::path::Path| {
        std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map(|m| m.len())
    };
    let (wasm_size, p3_size) = (size(&loader.wasm)?, size(&args.p3_wasm)?);
    let levels: Vec<String> = args.concurrency.iter().map(|c| c.to_string()).collect();
    println!(
        "status-push-bench component: {} events per run, concurrency {}, receiver {} on its own thread",
        args.events,
        levels.join(","),
        bench.origin
    );
    println!("load average at start: {}", load_average());
    println!(
        "component: {} ({} KiB); WASI 0.3 build: {} ({} KiB)",
        loader.wasm.display(),
        wasm_size / 1024,
        args.p3_wasm.display(),
        p3_size / 1024
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
    let origin = bench.origin.clone();
    let uncached = first_event(&loader.wasm, &cold(None), &origin).await?;
    first_event(&loader.wasm, &cold(Some(cache.clone())), &origin).await?; // fills the cache
    let cached = first_event(&loader.wasm, &cold(Some(cache.clone())), &origin).await?;
    println!(
        "cold start to first event: {:.1} ms compiling, {:.1} ms from the compile cache",
        ms(uncached),
        ms(cached)
    );

    let runtime = Arc::new(Runtime::load_with(
        &loader.wasm,
        &cold(Some(cache.clone())),
    )?);
    let runtime_p3 = Runtime::load_with(&args.p3_wasm, &cold(Some(cache.clone())))?;
    for (flag, loaded, want) in [
        ("--wasm", &*runtime, Wasi::P2),
        ("--p3-wasm", &runtime_p3, Wasi::P3),
    ] {
        if loaded.wasi() != want {
            bail!(
                "{flag} is a WASI {} build: give the {} one",
                loaded.wasi(),
                want
            );
        }
    }
    let canned =
        Runtime::load_with(&loader.wasm, &cold(Some(cache.clone())))?.with_canned_responses();
    let load_cached = || {
        Ok(Runtime::load_with(
            &loader.wasm,
            &cold(Some(cache.clone())),
        )?)
    };
    let overhead = instantiate_overhead(&runtime, &origin, 200).await?;
    println!(
        "per-event instantiate + configure: {:.0} µs (fresh instance, no request)",
        overhead.as_secs_f64() * 1e6
    );

    let mut summary = None;
    for (label, options) in OPTION_SETS {
        let config = config_for(&origin, options);
        let requests = capture(&runtime, &config).await?;
        println!(
            "\n{label}: request bodies {} and {} bytes",
            requests[0].body.len(),
            requests[1].body.len()
        );
        for &concurrency in &args.concurrency {
            println!("concurrency {concurrency}:");
            println!(
                "  {:<36}{:>9} {:>8} {:>8} {:>10} {:>7} {:>7}",
                "run", "events/s", "p50 µs", "p99 µs", "cpu/ev µs", "polls", "parks"
            );
            let record = component_run(&bench, &runtime, &config, concurrency, Path::Records)
                .await?
                .print("component, reused, records");
            component_run(&bench, &runtime, &config, concurrency, Path::Json)
                .await?
                .print("component, reused, report-json");
            component_run(&bench, &runtime, &config, concurrency, Path::Parsed)
                .await?
                .print("component, reused, parse + report");
            let record_p3 = component_run(&bench, &runtime_p3, &config, concurrency, Path::Records)
                .await?
                .print("component p3, reused, records");
            component_run(&bench, &runtime_p3, &config, concurrency, Path::Json)
                .await?
                .print("component p3, reused, report-json");
            fresh_instance_run(&bench, &runtime, &config, concurrency)
                .await?
                .print("component, fresh instance per event");
            let native = native_run(&bench, &runtime, &config, concurrency)
                .await?
                .print("native same work (host's pool)");
            let replay = replay_run(&bench, requests.clone(), concurrency)
                .await?
                .print("byte replay (hyper, keep-alive)");
            println!(
                "  component/native-same-work: throughput {:.2}, cpu {:.2}, p50 {:.2}; component/byte-replay: throughput {:.2}",
                record.rate / native.rate,
                record.cpu_us / native.cpu_us,
                record.p50 / native.p50,
                record.rate / replay.rate
            );
            println!(
                "  p3/native-same-work: throughput {:.2}, cpu {:.2}, p50 {:.2}",
                record_p3.rate / native.rate,
                record_p3.cpu_us / native.cpu_us,
                record_p3.p50 / native.p50,
            );
            if label == OPTION_SETS[0].0 {
                summary = Some((record, record_p3, native, replay));
            }
        }
        let first = args.concurrency[0];
        println!("attribution, concurrency {first}:");
        let skipping = format!(
            r#"{{"serverUrl": "{origin}/hook", "builders": ["no-such-builder"], {options}}}"#
        );
        component_run(&bench, &runtime, &skipping, first, Path::Records)
            .await?
            .print("filter skips, records");
        component_run(&bench, &runtime, &skipping, first, Path::Json)
            .await?
            .print("filter skips, report-json");
        component_run(&bench, &canned, &config, first, Path::Records)
            .await?
            .print("canned 200, no socket, records");
        component_run(&bench, &canned, &config, first, Path::Json)
            .await?
            .print("canned 200, no socket, report-json");
        let (bench, config) = (&bench, &config);
        on_one_thread(load_cached, |runtime| async move {
            component_run(bench, &runtime, config, first, Path::Records).await
        })?
        .print("one-thread runtime, records");
        on_one_thread(load_cached, |runtime| async move {
            native_run(bench, &runtime, config, first).await
        })?
        .print("one-thread runtime, native same work");
    }
    let _ = std::fs::remove_dir_all(&cache);
    println!(
        "\nrequests received: {} over {} connections",
        counter.load(Ordering::Relaxed),
        connections.load(Ordering::Relaxed)
    );
    println!("load average at end: {}", load_average());
    println!("peak RSS: {} MiB", peak_rss_kib().unwrap_or(0) / 1024);
    println!("release .wasm size: {wasm_size} bytes, WASI 0.3 build {p3_size} bytes");
    let (component, component_p3, native, replay) = summary.context("no measurement ran")?;
    println!(
        "cpu per event: component {:.1} µs, native same work {:.1} µs, byte replay {:.1} µs",
        component.cpu_us, native.cpu_us, replay.cpu_us
    );
    println!(
        "ratio component/native-same-work: {:.2}",
        component.rate / native.rate
    );
    println!(
        "ratio component/byte-replay: {:.2}",
        component.rate / replay.rate
    );
    println!(
        "cpu per event by world: p2 {:.1} µs, p3 {:.1} µs, native same work {:.1} µs",
        component.cpu_us, component_p3.cpu_us, native.cpu_us
    );
    println!(
        "cpu ratio best-world/native-same-work: {:.2}",
        component.cpu_us.min(component_p3.cpu_us) / native.cpu_us
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_only(
    loader: &Loader,
    bench: &Bench,
    only: Only,
    concurrency: usize,
) -> Result<ExitCode> {
    let config = config_for(&bench.origin, OPTION_SETS[0].1);
    let runtime = Arc::new(if only == Only::Canned {
        loader.load()?.with_canned_responses()
    } else {
        loader.load()?
    });
    let measured = match only {
        Only::Record | Only::Canned => {
            component_run(bench, &runtime, &config, concurrency, Path::Records).await?
        }
        Only::Json => component_run(bench, &runtime, &config, concurrency, Path::Json).await?,
        Only::Parsed => component_run(bench, &runtime, &config, concurrency, Path::Parsed).await?,
        Only::Skip => {
            let skipping = format!(
                r#"{{"serverUrl": "{}/hook", "builders": ["no-such-builder"]}}"#,
                bench.origin
            );
            component_run(bench, &runtime, &skipping, concurrency, Path::Records).await?
        }
        Only::Fresh => fresh_instance_run(bench, &runtime, &config, concurrency).await?,
        Only::OneThread => on_one_thread(
            || Ok(loader.load()?),
            |runtime| async move {
                component_run(bench, &runtime, &config, concurrency, Path::Records).await
            },
        )?,
        Only::Native => native_run(bench, &runtime, &config, concurrency).await?,
        Only::Replay => {
            let requests = capture(&runtime, &config).await?;
            replay_run(bench, requests, concurrency).await?
        }
    };
    measured.print(&format!(
        "{} events, concurrency {concurrency}",
        bench.events
    ));
    Ok(ExitCode::SUCCESS)
}

fn config_for(origin: &str, options: &str) -> String {
    format!(r#"{{"serverUrl": "{origin}/hook", {options}}}"#)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A receiver that only counts and answers 200, on its own thread and single-threaded
/// tokio runtime; its origin and thread id.
pub(crate) fn counting_receiver(
    counter: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
) -> Result<(String, i32)> {
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-receiver".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(ready.send(Err(anyhow::Error::from(e)))),
            };
            rt.block_on(async move {
                let listener = match TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => l,
                    Err(e) => return drop(ready.send(Err(e.into()))),
                };
                let origin = listener
                    .local_addr()
                    .map(|a| format!("http://{a}"))
                    .map_err(anyhow::Error::from);
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                let _ = ready.send(origin.map(|o| (o, tid)));
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        let service =
                            service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                                let counter = counter.clone();
                                async move {
                                    let _ = request.into_body().collect().await;
                                    counter.fetch_add(1, Ordering::Relaxed);
                                    Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                        Bytes::from_static(b"{}"),
                                    )))
                                }
                            });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        })?;
    started
        .recv()
        .context("the receiver thread did not start")?
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
    expect_done(reporter.report(event, &build).await?)?;
    Ok(started.elapsed())
}

/// A delivery, or a skip (the attribution's filter runs skip every event).
fn expect_done(outcome: Outcome) -> Result<()> {
    match outcome {
        Outcome::Delivered(_) | Outcome::Skipped(_) => Ok(()),
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
        match reporter.report(event, &build).await? {
            Outcome::Delivered(_) => {}
            other => bail!("expected a delivery, got {other}"),
        }
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

/// One run's figures.
struct Measured {
    rate: f64,
    p50: f64,
    p99: f64,
    /// CPU time of the process, the receiver's thread excluded, per event.
    cpu_us: f64,
    /// Polls of a component call's future per event (each resumes the guest's fiber).
    polls: Option<f64>,
    /// Tokio worker parks (a worker running out of work and sleeping) per event.
    parks: f64,
}

impl Measured {
    fn print(self, label: &str) -> Measured {
        let polls = self.polls.map_or("-".into(), |p| format!("{p:.1}"));
        println!(
            "  {label:<36}{:>9.0} {:>8.0} {:>8.0} {:>10.1} {polls:>7} {:>7.2}",
            self.rate, self.p50, self.p99, self.cpu_us, self.parks
        );
        self
    }
}

/// The clocks at the start of a run.
struct Mark {
    wall: Instant,
    cpu: Duration,
    parks: u64,
}

fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A thread's CPU time, from `/proc/self/task/TID/schedstat` (nanoseconds on CPU).
fn thread_cpu(tid: i32) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn worker_parks() -> u64 {
    let metrics = tokio::runtime::Handle::current().metrics();
    (0..metrics.num_workers())
        .map(|w| metrics.worker_park_count(w))
        .sum()
}

impl Bench {
    fn client_cpu(&self) -> Duration {
        process_cpu().saturating_sub(thread_cpu(self.receiver_tid))
    }

    fn mark(&self) -> Mark {
        Mark {
            wall: Instant::now(),
            cpu: self.client_cpu(),
            parks: worker_parks(),
        }
    }

    /// Waits for every spawned measurement task and pools their latencies.
    async fn collect(
        &self,
        mut tasks: JoinSet<Result<Vec<Duration>>>,
        mark: Mark,
        polls: Option<&AtomicU64>,
    ) -> Result<Measured> {
        let mut all = Vec::new();
        while let Some(result) = tasks.join_next().await {
            all.extend(result.context("a measurement task panicked")??);
        }
        let elapsed = mark.wall.elapsed();
        let cpu = self.client_cpu().saturating_sub(mark.cpu);
        let parks = worker_parks().saturating_sub(mark.parks);
        let n = all.len() as f64;
        all.sort();
        let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        Ok(Measured {
            rate: n / elapsed.as_secs_f64(),
            p50: at(0.5),
            p99: at(0.99),
            cpu_us: cpu.as_secs_f64() * 1e6 / n,
            polls: polls.map(|p| p.load(Ordering::Relaxed) as f64 / n),
            parks: parks as f64 / n,
        })
    }
}

/// Runs a measurement on a tokio runtime of one thread, started for it, with a component
/// runtime (and so a connection pool) of its own. No other worker can be woken there, so
/// the difference from the same run on the shared multi-thread runtime is what waking
/// workers between tasks costs: the task hops callgrind does not see.
fn on_one_thread<F>(
    load: impl Fn() -> Result<Runtime> + Sync,
    measure: impl FnOnce(Arc<Runtime>) -> F + Send,
) -> Result<Measured>
where
    F: Future<Output = Result<Measured>>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let tokio = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let _entered = tokio.enter();
                let runtime = Arc::new(load()?);
                tokio.block_on(measure(runtime))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the one-thread measurement panicked"))?
    })
}

/// Awaits `future`, counting its polls into `polls`.
async fn counting_polls<T>(polls: &AtomicU64, future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        polls.fetch_add(1, Ordering::Relaxed);
        future.as_mut().poll(cx)
    })
    .await
}

/// How the component gets each event.
#[derive(Clone, Copy)]
enum Path {
    /// `report`: the records, lowered into the guest on every call.
    Records,
    /// `report-json`: the documents as one string, parsed by the guest.
    Json,
    /// `parse-event`, then `report`: the documents parsed by the guest, lifted out as
    /// records and lowered back in.
    Parsed,
}

/// `concurrency` tasks, each with its own configured instance, reporting the sample
/// events in turn.
async fn component_run(
    bench: &Bench,
    runtime: &Runtime,
    config: &str,
    concurrency: usize,
    path: Path,
) -> Result<Measured> {
    let per_task = bench.events.div_ceil(concurrency);
    let polls = Arc::new(AtomicU64::new(0));
    let mut ready = Vec::new();
    for _ in 0..concurrency {
        let mut reporter = configured(runtime, config).await?;
        let parsed = events(&mut reporter).await?;
        ready.push((reporter, parsed));
    }
    let mut tasks = JoinSet::new();
    let mark = bench.mark();
    for (mut reporter, parsed) in ready {
        let polls = polls.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let (event, build) = &parsed[i % parsed.len()];
                let t = Instant::now();
                let outcome = match path {
                    Path::Records => counting_polls(&polls, reporter.report(*event, build)).await,
                    Path::Json => {
                        let documents = SAMPLES[i % SAMPLES.len()].1;
                        counting_polls(&polls, reporter.report_json(*event, documents)).await
                    }
                    Path::Parsed => {
                        let documents = SAMPLES[i % SAMPLES.len()].1;
                        let records = reporter.parse_event(documents).await?;
                        counting_polls(&polls, reporter.report(*event, &records)).await
                    }
                };
                expect_done(outcome?)?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    bench.collect(tasks, mark, Some(&polls)).await
}

/// Like `component_run`, but every event gets a fresh instance (instantiate, configure,
/// report).
async fn fresh_instance_run(
    bench: &Bench,
    runtime: &Arc<Runtime>,
    config: &str,
    concurrency: usize,
) -> Result<Measured> {
    let mut parser = configured(runtime, config).await?;
    let config = parser.parse_config(config).await?;
    let parsed = Arc::new(events(&mut parser).await?);
    let per_task = bench.events.div_ceil(concurrency);
    let mark = bench.mark();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (config, parsed, runtime) = (config.clone(), parsed.clone(), runtime.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let (event, build) = &parsed[i % parsed.len()];
                let t = Instant::now();
                let mut reporter = runtime.reporter().await?;
                reporter.configure(config.clone()).await?;
                expect_done(reporter.report(*event, build).await?)?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    bench.collect(tasks, mark, None).await
}

/// The component's work done natively: the same crate filters, builds and encodes each
/// payload from the same records, with the same headers, and the host's connection pool
/// sends it.
async fn native_run(
    bench: &Bench,
    runtime: &Arc<Runtime>,
    config: &str,
    concurrency: usize,
) -> Result<Measured> {
    let config = documents::config_from_json(&serde_json::from_str(config)?)
        .map_err(|e| anyhow::anyhow!("config: {}: {}", e.key, e.message))?;
    let settings = Arc::new(
        Settings::from_config(config)
            .map_err(|e| anyhow::anyhow!("config: {}: {}", e.key, e.message))?,
    );
    let mut parsed = Vec::new();
    for (event, text) in SAMPLES {
        let kind = match event {
            Event::Started => EventKind::Started,
            Event::Finished => EventKind::Finished,
        };
        let event = documents::event_from_json(&serde_json::from_str(text)?)
            .map_err(|e| anyhow::anyhow!("event: {}: {}", e.key, e.message))?;
        parsed.push((kind, event));
    }
    let parsed = Arc::new(parsed);
    let per_task = bench.events.div_ceil(concurrency);
    let mark = bench.mark();
    let mut tasks = JoinSet::new();
    for task in 0..concurrency {
        let (settings, parsed, runtime) = (settings.clone(), parsed.clone(), runtime.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let (kind, event) = &parsed[i % parsed.len()];
                let t = Instant::now();
                if filter::skip_reason(&settings.selection, *kind, event).is_none() {
                    let nonce = (task * per_task + i) as u64;
                    let body = payload::render_body(&settings, *kind, event, nonce)
                        .map_err(|e| anyhow::anyhow!("payload: {e:?}"))?;
                    let url = settings.target.url();
                    let id = signature::delivery_id(
                        &url,
                        &settings.payload.buildbot_url,
                        event.build.buildid,
                        *kind,
                    );
                    let mut request = hyper::Request::post(url)
                        .header("Host", settings.target.authority.as_str());
                    for (name, value) in settings.request_headers() {
                        request = request.header(name, value);
                    }
                    let request = request
                        .header("Idempotency-Key", id)
                        .header("Content-Length", body.len())
                        .body(Bytes::from(body))?;
                    let status = runtime.send_natively(request).await?;
                    if !(200..300).contains(&status) {
                        bail!("native request answered {status}");
                    }
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    bench.collect(tasks, mark, None).await
}

/// `concurrency` plain hyper keep-alive connections replaying the captured requests.
async fn replay_run(
    bench: &Bench,
    requests: Vec<Recorded>,
    concurrency: usize,
) -> Result<Measured> {
    let addr = bench.origin.trim_start_matches("http://").to_string();
    let per_task = bench.events.div_ceil(concurrency);
    let requests = Arc::new(requests);
    let mark = bench.mark();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
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
    bench.collect(tasks, mark, None).await
}
