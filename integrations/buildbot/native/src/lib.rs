//! `buildbot_status_push._native`: the status-push host library (`status-push-host`) for
//! Python. A thin layer: the component is loaded once ([`Host`]), a configured instance
//! reports events given as JSON ([`Reporter`]), and the SQLite outbox keeps them until
//! they are delivered ([`Outbox`]). Every call that runs the component, touches the
//! network or the disk releases the GIL; its errors are the Python exceptions of
//! `buildbot_status_push.results`. The host's `tracing` log (the component's `debug`
//! lines, host warnings) goes to Python's `logging` (`buildbot_status_push.*`).

mod logging;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::call::PyCallArgs;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;
use status_push_host::bindings::PushError;
use status_push_host::outbox::{
    self, Entry, Observer, OutboxError, Redeliver, Report, Reported, Settled,
};
use status_push_host::{Event, HostError, Limits, Outcome, Runtime, RuntimeOptions};

/// One tokio runtime per process: the host's HTTP connection pool lives on it, so every
/// reporter and outbox call shares its keep-alive connections.
fn tokio() -> &'static tokio::runtime::Runtime {
    static TOKIO: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    TOKIO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("status-push-io")
            .enable_all()
            .build()
            .expect("a tokio runtime can be built")
    })
}

/// Runs host work to completion without the GIL. A panic in it becomes the plugin's
/// `ComponentError`: left to PyO3 it would be a `PanicException`, a `BaseException` that
/// Buildbot's reporter does not catch, and that build's later events would wait forever.
fn run<T: Send>(py: Python<'_>, work: impl std::future::Future<Output = T> + Send) -> PyResult<T> {
    let done = py.detach(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tokio().block_on(work)))
    });
    done.map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        exception(py, "ComponentError", (format!("the host failed: {why}"),))
    })
}

/// `buildbot_status_push.results`, where the Python-side types are defined.
fn results(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            py.import("buildbot_status_push.results").map(Bound::unbind)
        })
        .map(|m| m.bind(py))
}

fn exception<'py>(py: Python<'py>, class: &str, args: impl PyCallArgs<'py>) -> PyErr {
    let made = results(py)
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1(args));
    match made {
        Ok(value) => PyErr::from_value(value),
        Err(e) => e,
    }
}

fn push_error_detail(e: &PushError) -> String {
    match e {
        PushError::NotConfigured | PushError::Timeout => String::new(),
        PushError::InvalidInput(i) => format!("{}: {}", i.key, i.message),
        PushError::Unreachable(why)
        | PushError::ConnectionLost(why)
        | PushError::Tls(why)
        | PushError::Denied(why)
        | PushError::Protocol(why) => why.clone(),
        PushError::HttpStatus(h) => match &h.retry_after {
            Some(after) => format!("HTTP {}, Retry-After: {after}", h.status),
            None => format!("HTTP {}", h.status),
        },
        PushError::Format(f) => f.to_string(),
    }
}

/// A host error as the Python exception a caller would expect.
fn host_error(py: Python<'_>, e: HostError) -> PyErr {
    match e {
        HostError::Config(input) => exception(py, "ConfigError", (input.key, input.message)),
        HostError::Push(f) => exception(
            py,
            "PushFailure",
            (
                f.error.kind(),
                push_error_detail(&f.error),
                f.retryable,
                f.attempts,
                f.delivery_id,
            ),
        ),
        other => exception(py, "ComponentError", (other.to_string(),)),
    }
}

fn outbox_error(py: Python<'_>, e: OutboxError) -> PyErr {
    match e {
        OutboxError::Host(host) => host_error(py, host),
        OutboxError::Full { pending, cap, .. } => {
            // A distinct class: the plugin keeps the event and says so once a minute.
            let message = e.to_string();
            exception(py, "OutboxFull", (message, pending, cap))
        }
        // The database is down, restarting or busy: the plugin keeps events and retries.
        other if other.is_transient() => exception(py, "OutboxUnavailable", (other.to_string(),)),
        other => exception(py, "OutboxError", (other.to_string(),)),
    }
}

fn event(name: &str) -> PyResult<Event> {
    name.parse()
        .map_err(|e: status_push_host::UnknownEvent| PyValueError::new_err(e.to_string()))
}

fn outcome(py: Python<'_>, outcome: Outcome) -> PyResult<Py<PyAny>> {
    let module = results(py)?;
    let made = match outcome {
        Outcome::Delivered(d) => {
            module
                .getattr("Delivered")?
                .call1((d.status, d.attempts, d.delivery_id))?
        }
        Outcome::Skipped(reason) => {
            let reason = format!("{reason:?}").to_lowercase();
            module.getattr("Skipped")?.call1((reason,))?
        }
    };
    Ok(made.unbind())
}

/// The compiled component: load it once per process, then make reporters from it.
#[pyclass(frozen, module = "buildbot_status_push._native")]
struct Host {
    runtime: Arc<Runtime>,
}

#[pymethods]
impl Host {
    /// Compiles (or loads from `cache_dir`) the component at `wasm_path`. Each instance
    /// gets at most `memory_bytes` of linear memory (128 MiB by default).
    #[new]
    #[pyo3(signature = (wasm_path, *, memory_bytes=None, cache_dir=None))]
    fn new(
        py: Python<'_>,
        wasm_path: PathBuf,
        memory_bytes: Option<usize>,
        cache_dir: Option<PathBuf>,
    ) -> PyResult<Host> {
        let mut options = RuntimeOptions {
            cache_dir,
            ..RuntimeOptions::default()
        };
        if let Some(memory_bytes) = memory_bytes {
            options.limits = Limits {
                memory_bytes,
                ..Limits::default()
            };
        }
        let loaded = run(py, async { Runtime::load_with(&wasm_path, &options) })?;
        let runtime = loaded.map_err(|e| host_error(py, e))?;
        Ok(Host {
            runtime: Arc::new(runtime),
        })
    }

    /// Checks a configuration (seed option names, JSON) in a fresh instance, CA file
    /// included; raises `ConfigError` naming the option.
    fn check_config(&self, py: Python<'_>, config_json: String) -> PyResult<()> {
        let runtime = self.runtime.clone();
        run(py, async move {
            runtime.configured_reporter(&config_json).await.map(drop)
        })?
        .map_err(|e| host_error(py, e))
    }

    /// A configured instance; raises `ConfigError` naming the option.
    fn reporter(&self, py: Python<'_>, config_json: String) -> PyResult<Reporter> {
        let runtime = self.runtime.clone();
        let config = config_json.clone();
        let instance = run(
            py,
            async move { runtime.configured_reporter(&config).await },
        )?
        .map_err(|e| host_error(py, e))?;
        Ok(Reporter {
            runtime: self.runtime.clone(),
            config_json,
            instance: tokio::sync::Mutex::new(Some(instance)),
        })
    }
}

/// One configured instance. Calls from several threads take turns.
#[pyclass(frozen, module = "buildbot_status_push._native")]
struct Reporter {
    runtime: Arc<Runtime>,
    config_json: String,
    /// `None` after a trap: the next call makes a fresh instance.
    instance: tokio::sync::Mutex<Option<status_push_host::Reporter>>,
}

#[pymethods]
impl Reporter {
    /// Reports `event` ('started' or 'finished') of the build whose data-API documents
    /// are `documents_json`; returns `Delivered` or `Skipped`, raises `PushFailure`.
    fn report(
        &self,
        py: Python<'_>,
        event_name: &str,
        documents_json: String,
    ) -> PyResult<Py<PyAny>> {
        let event = event(event_name)?;
        let result = run(py, async {
            let mut slot = self.instance.lock().await;
            if slot.is_none() {
                *slot = Some(self.runtime.configured_reporter(&self.config_json).await?);
            }
            let Some(instance) = slot.as_mut() else {
                unreachable!("filled above")
            };
            let result = instance.report_json(event, &documents_json).await;
            if result.as_ref().is_err_and(HostError::is_trap) {
                *slot = None;
            }
            result
        })?;
        let delivered = result.map_err(|e| host_error(py, e))?;
        outcome(py, delivered)
    }
}

/// The durable outbox: a SQLite file (the same format as `status-push push --outbox`) or a
/// PostgreSQL database several masters share. Safe to use from several threads.
#[pyclass(frozen, module = "buildbot_status_push._native")]
struct Outbox {
    outbox: Arc<outbox::Outbox>,
}

impl Outbox {
    fn with<'a, T, F>(
        &'a self,
        py: Python<'_>,
        work: impl FnOnce(&'a outbox::Outbox) -> F,
    ) -> PyResult<T>
    where
        T: Send,
        F: std::future::Future<Output = Result<T, OutboxError>> + Send + 'a,
    {
        run(py, work(&self.outbox))?.map_err(|e| outbox_error(py, e))
    }
}

fn entries<'py>(py: Python<'py>, list: Vec<Entry>) -> PyResult<Bound<'py, PyList>> {
    let class = results(py)?.getattr("OutboxEntry")?;
    let made = list
        .into_iter()
        .map(|e| {
            let event = e.event.as_str();
            class.call1((
                e.seq,
                e.build_key,
                event,
                e.delivery_id,
                e.created_at,
                e.attempts,
                e.last_error,
            ))
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, made)
}

#[pymethods]
impl Outbox {
    /// Opens the outbox at `location`: a file path (created with mode 0600) or a
    /// `postgresql://` URL (its tables created or migrated). `key` is the outbox key's
    /// text (a key file's content: one base64 key per line, the first sealing); without
    /// it, `STATUS_PUSH_OUTBOX_KEY_FILE`, else for a file `FILE.key` beside it (made on
    /// first use), while a PostgreSQL outbox is refused.
    #[new]
    #[pyo3(signature = (location, key=None))]
    fn new(py: Python<'_>, location: &str, key: Option<&str>) -> PyResult<Outbox> {
        let location =
            outbox::Location::parse(location.as_ref()).map_err(|e| outbox_error(py, e))?;
        let keys = match key {
            Some(text) => Some(
                outbox::KeyRing::parse(text).map_err(|e| outbox_error(py, OutboxError::from(e)))?,
            ),
            None => None,
        };
        let outbox = run(py, outbox::Outbox::open_with(&location, keys))?
            .map_err(|e| outbox_error(py, e))?;
        Ok(Outbox {
            outbox: Arc::new(outbox),
        })
    }

    /// Where it is: the file, or the URL without its password.
    #[getter]
    fn location(&self) -> String {
        self.outbox.location().to_string()
    }

    /// Validates the event in the component and writes it durably; returns
    /// `(seq, build_key)`. Raises `ConfigError` for what could never be delivered.
    fn write(
        &self,
        py: Python<'_>,
        host: &Host,
        config_json: String,
        event_name: &str,
        documents_json: String,
    ) -> PyResult<(i64, String)> {
        let event = event(event_name)?;
        let runtime = host.runtime.clone();
        self.with(py, |db| async move {
            db.enqueue(&runtime, &config_json, event, &documents_json)
                .await
        })
    }

    /// Seals `config_json` (checked by the component first) into the pending events and
    /// dead letters of its reporter (same origin and path of `serverUrl`): a rotated
    /// credential reaches what was queued. Returns `(resealed, unopened)`; dead letters
    /// stay dead until redelivered.
    fn reseal(&self, py: Python<'_>, host: &Host, config_json: String) -> PyResult<(usize, usize)> {
        let runtime = host.runtime.clone();
        let done = self.with(
            py,
            |db| async move { db.reseal(&runtime, &config_json).await },
        )?;
        Ok((done.resealed, done.unopened))
    }

    /// `(pending, dead, oldest_pending_at or None, open_circuits)`: what an operator
    /// alerts on.
    fn counts(&self, py: Python<'_>) -> PyResult<(u64, u64, Option<i64>, u64)> {
        let c = self.with(py, |db| db.counts())?;
        Ok((c.pending, c.dead, c.oldest_pending_at, c.open_circuits))
    }

    /// `[(destination, failures, pending, last_error)]` of the destinations whose circuit
    /// is open, worst first.
    fn circuits(&self, py: Python<'_>) -> PyResult<Vec<OpenCircuit>> {
        let list = self.with(py, |db| db.circuits())?;
        Ok(list
            .into_iter()
            .map(|c| (c.destination, c.failures, c.pending, c.last_error))
            .collect())
    }

    /// Pending events, in delivery order.
    fn pending<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = self.with(py, |db| db.pending())?;
        entries(py, list)
    }

    /// Dead letters, oldest first.
    fn dead_letters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = self.with(py, |db| db.dead_letters())?;
        entries(py, list)
    }

    /// Makes dead letters pending again: the one numbered `seq`, those with
    /// `delivery_id`, or (neither given) all; returns how many. Raises `OutboxError` when
    /// the one asked for is not a dead letter, or is superseded (a later event of its
    /// build was delivered since) and `force` is not set; `all` leaves superseded ones.
    #[pyo3(signature = (seq=None, *, delivery_id=None, force=false))]
    fn redeliver(
        &self,
        py: Python<'_>,
        seq: Option<i64>,
        delivery_id: Option<String>,
        force: bool,
    ) -> PyResult<usize> {
        let which = match (seq, delivery_id) {
            (Some(seq), None) => Redeliver::Seq(seq),
            (None, Some(id)) => Redeliver::DeliveryId(id),
            (None, None) => Redeliver::All,
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err("give seq or delivery_id, not both"))
            }
        };
        self.with(py, |db| async move { db.redeliver(&which, force).await })
            .map(|done| done.revived)
    }
}

/// `(destination, failures, pending, last_error)`, as Python sees an open circuit.
type OpenCircuit = (String, i64, u64, Option<String>);

/// The outbox's one courier on this host, delivering on the host's own threads: the
/// plugin starts it, wakes it when it wrote an event, and stops it. Its rules (order per
/// destination and build, backoff, circuits, fenced claims) are `status-push deliver`'s.
#[pyclass(frozen, module = "buildbot_status_push._native")]
struct Courier {
    wake: Arc<tokio::sync::Notify>,
    stop: tokio::sync::watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    grace: Duration,
}

#[pymethods]
impl Courier {
    /// Starts delivering `outbox`'s events with `host`'s component. `on_dead_letter` is
    /// called with an `OutboxEntry` (from a host thread) for each event that becomes a
    /// dead letter. At `stop`, calls in flight get `grace_seconds` to finish.
    #[new]
    #[pyo3(signature = (host, outbox, on_dead_letter, grace_seconds=5.0))]
    fn new(
        host: &Host,
        outbox: &Outbox,
        on_dead_letter: Py<PyAny>,
        grace_seconds: f64,
    ) -> PyResult<Courier> {
        let grace = Duration::try_from_secs_f64(grace_seconds)
            .map_err(|e| PyValueError::new_err(format!("grace_seconds: {e}")))?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let wake = Arc::new(tokio::sync::Notify::new());
        let (runtime, db, woken) = (host.runtime.clone(), outbox.outbox.clone(), wake.clone());
        let observer = DeadLetters(on_dead_letter);
        let task = tokio().spawn(async move {
            let stopped = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            outbox::Courier::new(&db, &runtime)
                .with_observer(&observer)
                .run(&woken, stopped, grace)
                .await;
        });
        Ok(Courier {
            wake,
            stop,
            task: std::sync::Mutex::new(Some(task)),
            grace,
        })
    }

    /// Looks at the outbox now: an event was written.
    fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops delivering and returns once calls in flight ended or their grace ran out;
    /// what is not delivered stays pending. Returns whether the courier ended in time.
    fn stop(&self, py: Python<'_>) -> PyResult<bool> {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(task) = task else {
            return Ok(true);
        };
        let bound = self.grace + Duration::from_secs(1);
        run(py, async move {
            tokio::time::timeout(bound, task).await.is_ok()
        })
    }
}

/// Hands each new dead letter to Python.
struct DeadLetters(Py<PyAny>);

impl Observer for DeadLetters {
    fn reported(&self, report: &Report<'_>) {
        if report.settled != Settled::Dead {
            return;
        }
        let claimed = report.claimed;
        let (attempts, delivery_id, reason) = match &report.reported {
            Reported::Failed(HostError::Push(f)) => (
                i64::from(f.attempts),
                f.delivery_id.clone(),
                HostError::Push(f.clone()).to_string(),
            ),
            Reported::Failed(e) => (0, String::new(), e.to_string()),
            Reported::Unsealed(why) => (0, String::new(), why.to_string()),
            _ => (
                0,
                String::new(),
                "expired: undelivered for longer than deadLetterAfterSeconds".into(),
            ),
        };
        Python::attach(|py| {
            let made = results(py)
                .and_then(|m| m.getattr("OutboxEntry"))
                .and_then(|c| {
                    c.call1((
                        claimed.seq,
                        claimed.build_key.clone(),
                        claimed.event.as_str(),
                        delivery_id,
                        claimed.created_at,
                        attempts,
                        Some(reason),
                    ))
                });
            if let Err(e) = made.and_then(|entry| self.0.call1(py, (entry,))) {
                tracing::warn!("the plugin's dead-letter callback failed: {e}");
            }
        });
    }
}

/// Checks an outbox key's text (`outboxKey=`) at checkconfig; raises `OutboxError` with
/// one line that never repeats the key.
#[pyfunction]
fn check_outbox_key(py: Python<'_>, text: &str) -> PyResult<()> {
    outbox::KeyRing::parse(text)
        .map(drop)
        .map_err(|e| outbox_error(py, OutboxError::from(e)))
}

/// For the plugin's tests only: a host call that panics, to show it arrives as
/// `ComponentError` rather than hanging a build's events.
#[pyfunction]
fn _panic_in_host_for_tests(py: Python<'_>) -> PyResult<()> {
    run(py, async { panic!("a deliberate panic") })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    // The configuration's keys, from their one source: the plugin's options are held to
    // them (tests/test_component.py) and only these reach the component.
    m.add("CONFIG_KEYS", status_push_host::CONFIG_KEYS.to_vec())?;
    m.add(
        "RELAY_ONLY_KEYS",
        status_push_host::RELAY_ONLY_KEYS.to_vec(),
    )?;
    m.add_class::<Host>()?;
    m.add_class::<Reporter>()?;
    m.add_class::<Outbox>()?;
    m.add_class::<Courier>()?;
    m.add_function(wrap_pyfunction!(check_outbox_key, m)?)?;
    m.add("OUTBOX_KEY_FILE_ENV", outbox::KEY_FILE_ENV)?;
    m.add_function(wrap_pyfunction!(_panic_in_host_for_tests, m)?)?;
    Ok(())
}
