//! `status-push-bench outbox`: the outbox's claims and deliveries with a backlog. It
//! queues `--pending` events for a destination that refuses connections and `--due` for
//! a loopback receiver that answers at once, checkpoints the store (none of it timed),
//! then runs `--workers` couriers, each a task of its own with its own connection, until
//! the due events are delivered. The backlog's destination has never been tried when
//! the clock starts: its circuit opens at its first failures, in the timed part, and
//! from then on claims should not notice the backlog. Ends with exactly two lines:
//! `claim p99: X ms at N pending` and `delivered per second: Y with K workers` (Y counts
//! the due events); before them, on Linux, the machine's CPU per delivered event.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use status_push_cli::loader::Loader;
use status_push_host::outbox::{Accepted, Courier, Location, Observer, Outbox, Report, Settled};
use status_push_host::Event;
use tokio::sync::Notify;

/// Options of `outbox`.
#[derive(clap::Args)]
pub struct Args {
    /// The outbox: a SQLite file or a postgresql:// URL. It must hold no pending event.
    #[arg(long, value_name = "FILE|URL")]
    outbox: String,
    /// Events queued for a destination that refuses connections: the backlog.
    #[arg(long, default_value_t = 0)]
    pending: usize,
    /// Events queued for a destination that answers at once; the run ends when they are
    /// delivered.
    #[arg(long, default_value_t = 2_000)]
    due: usize,
    /// Couriers delivering at once, each with its own connection to the outbox.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

/// Events written per transaction while queueing.
const CHUNK: usize = 10_000;

/// What the couriers did: claim times, and the due events delivered.
struct Tally {
    claims: Mutex<Vec<Duration>>,
    delivered: AtomicUsize,
    due: usize,
    live: String,
}

impl Observer for Tally {
    fn reported(&self, report: &Report<'_>) {
        if report.settled == Settled::Done && report.claimed.destination == self.live {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn claimed(&self, took: Duration, _claimed: usize) {
        if let Ok(mut claims) = self.claims.lock() {
            claims.push(took);
        }
    }
}

/// `outbox`'s measurement.
pub async fn run(loader: &Loader, args: &Args) -> Result<ExitCode> {
    if args.due == 0 || args.workers == 0 {
        bail!("--due and --workers must be at least 1");
    }
    let location = Location::parse(args.outbox.as_ref())?;
    let runtime = loader.load()?;
    let setup = Outbox::open(&location).await?;
    if setup.counts().await?.pending > 0 {
        bail!("{location} already holds pending events: give a fresh outbox");
    }
    let counter = Arc::new(AtomicU64::new(0));
    let (origin, _) =
        crate::component::counting_receiver(counter.clone(), Arc::new(AtomicU64::new(0)))?;
    let refused = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // Nothing listens there once the probe socket is gone.
    let dead = format!("http://{refused}/backlog");
    let live = format!("{origin}/due");
    let queued = Instant::now();
    queue(&setup, &dead, args.pending, "backlog").await?;
    queue(&setup, &live, args.due, "due").await?;
    // Queueing a million events leaves gigabytes for the store to flush; flushed now, the
    // timed part measures the backlog standing, not its writing.
    setup
        .checkpoint()
        .await
        .context("checkpointing after queueing")?;
    let counts = setup.counts().await?;
    println!(
        "status-push-bench outbox: {location}, {} pending for a refusing destination, {} due, {} worker(s), queued and checkpointed in {:.1} s, load {}",
        args.pending,
        args.due,
        args.workers,
        queued.elapsed().as_secs_f64(),
        load_average()
    );

    let tally = Arc::new(Tally {
        claims: Mutex::new(Vec::new()),
        delivered: AtomicUsize::new(0),
        due: args.due,
        live: live_destination(&origin),
    });
    let mut outboxes = Vec::new();
    for _ in 0..args.workers {
        outboxes.push(Outbox::open(&location).await?);
    }
    let runtime = Arc::new(runtime);
    let wake = Arc::new(Notify::new());
    let cpu_before = MachineCpu::now();
    let started = Instant::now();
    // Each courier a task of its own, as each worker would be a process of its own: the
    // runtime's threads run them side by side (in one task they would share one thread).
    let couriers: Vec<_> = outboxes
        .into_iter()
        .map(|outbox| {
            let (tally, runtime, wake) = (tally.clone(), runtime.clone(), wake.clone());
            tokio::spawn(async move {
                let stop = async {
                    while tally.delivered.load(Ordering::Relaxed) < tally.due {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                };
                Courier::new(&outbox, &runtime)
                    .with_observer(&*tally)
                    .run(&wake, stop, Duration::from_secs(5))
                    .await;
            })
        })
        .collect();
    let deadline = Duration::from_secs(600);
    for joined in tokio::time::timeout(deadline, futures::future::join_all(couriers))
        .await
        .context("the due events were not delivered within 10 minutes")?
    {
        joined.context("a courier panicked")?;
    }
    let elapsed = started.elapsed();
    let cpu = MachineCpu::now().zip(cpu_before);
    let delivered = tally.delivered.load(Ordering::Relaxed);
    let mut claims = tally.claims.lock().map(|c| c.clone()).unwrap_or_default();
    claims.sort();
    let pick = |q: f64| {
        claims
            .get(((claims.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "claims: {}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; receiver got {} request(s); outbox had {} pending, {} open circuit(s)",
        claims.len(),
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(claims.last().copied().unwrap_or_default()),
        counter.load(Ordering::Relaxed),
        counts.pending,
        setup.counts().await?.open_circuits,
    );
    if let Some((after, before)) = cpu {
        let (busy, total) = after.since(&before);
        println!(
            "machine cpu: {:.0}% of {} core(s) busy, {:.0} µs per delivered event (everything on the machine: couriers, receiver, a local database)",
            100.0 * busy / total.max(f64::MIN_POSITIVE),
            after.cores,
            busy / delivered.max(1) as f64 * 1e6,
        );
    }
    println!(
        "claim p99: {:.2} ms at {} pending",
        ms(pick(0.99)),
        args.pending
    );
    println!(
        "delivered per second: {:.0} with {} workers",
        delivered as f64 / elapsed.as_secs_f64(),
        args.workers
    );
    Ok(ExitCode::SUCCESS)
}

/// The destination as the outbox shows it (the receiver's origin, port included).
fn live_destination(origin: &str) -> String {
    let port = origin.rsplit(':').next().unwrap_or_default();
    format!("http://127.0.0.1:{port}")
}

/// Queues `n` events for `url`, each its own build (its own chain).
async fn queue(outbox: &Outbox, url: &str, n: usize, tag: &str) -> Result<()> {
    let config = serde_json::json!({"serverUrl": url, "maxAttempts": 1}).to_string();
    let documents = include_str!("../../../demo/started.json");
    let keys: Vec<String> = (0..n).map(|i| format!("bench-{tag}|{i}")).collect();
    for chunk in keys.chunks(CHUNK) {
        let events: Vec<Accepted<'_>> = chunk
            .iter()
            .map(|key| Accepted {
                config_json: &config,
                destination: url,
                event: Event::Started,
                documents_json: documents,
                build_key: key,
                dead_after: Duration::from_secs(86_400),
                retention: Duration::from_secs(86_400),
                max_pending: u64::MAX,
                report_budget: Duration::from_secs(30),
                webhook_id: None,
            })
            .collect();
        outbox.accept_batch(&events).await?;
    }
    Ok(())
}

/// The whole machine's CPU time so far (Linux's `/proc/stat`): what the timed part cost,
/// whoever spent it. With the database on the same machine, a worker's events per second
/// are bounded by the CPU an event takes; this says how much that is.
struct MachineCpu {
    /// Clock ticks busy and in all, summed over the cores.
    busy: u64,
    total: u64,
    cores: usize,
}

impl MachineCpu {
    /// `None` where there is no `/proc/stat`.
    fn now() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let mut lines = stat.lines();
        // user nice system idle iowait irq softirq steal (guest time is within user).
        let ticks: Vec<u64> = lines
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        let total: u64 = ticks.iter().sum();
        let idle = ticks.get(3)? + ticks.get(4)?;
        let cores = lines.filter(|l| l.starts_with("cpu")).count();
        Some(MachineCpu {
            busy: total - idle,
            total,
            cores,
        })
    }

    /// Busy and total CPU seconds between `earlier` and this.
    fn since(&self, earlier: &MachineCpu) -> (f64, f64) {
        // SAFETY: sysconf reads a constant of the system.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (
            self.busy.saturating_sub(earlier.busy) as f64 / hz,
            self.total.saturating_sub(earlier.total) as f64 / hz,
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
