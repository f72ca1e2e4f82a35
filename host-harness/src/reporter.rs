//! One configured component instance and the calls an embedder makes on it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;

use crate::bindings::{self, BuildEvent, Config, EventKind, InputError, Outcome, WitConfig};
use crate::client::Client;
use crate::error::HostError;
use crate::limits::Limits;
use crate::policy::Policy;
use crate::store::{set_budget, Host};

/// Which report an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The build started (`on-build-started`).
    Started,
    /// The build finished (`on-build-finished`).
    Finished,
}

impl Event {
    /// The event's name as the CLI, the outbox and the relay's routes spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Finished => "finished",
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not `started` or `finished`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event {0:?}: expected started or finished")]
pub struct UnknownEvent(pub String);

impl std::str::FromStr for Event {
    type Err = UnknownEvent;

    /// `started` or `finished`; any other name is refused, never taken for one of them.
    fn from_str(name: &str) -> Result<Event, UnknownEvent> {
        match name {
            "started" => Ok(Event::Started),
            "finished" => Ok(Event::Finished),
            other => Err(UnknownEvent(other.to_string())),
        }
    }
}

/// The component crate's own event kind (its pure modules, used natively by the CLI).
impl From<status_push::EventKind> for Event {
    fn from(kind: status_push::EventKind) -> Event {
        match kind {
            status_push::EventKind::Started => Event::Started,
            status_push::EventKind::Finished => Event::Finished,
        }
    }
}

impl From<Event> for status_push::EventKind {
    fn from(event: Event) -> status_push::EventKind {
        match event {
            Event::Started => status_push::EventKind::Started,
            Event::Finished => status_push::EventKind::Finished,
        }
    }
}

impl From<Event> for EventKind {
    fn from(event: Event) -> EventKind {
        match event {
            Event::Started => EventKind::Started,
            Event::Finished => EventKind::Finished,
        }
    }
}

/// One component instance with its own configuration. Made by
/// [`crate::Runtime::reporter`]; a call that traps leaves it unusable, so make a new one.
pub struct Reporter {
    store: Store<Host>,
    instance: bindings::ReporterExports,
    limits: Limits,
    client: Arc<Client>,
    /// What `configure` opened the sandbox to; `None` before.
    policy: Option<Policy>,
    /// The wall-time budget of the call in progress (or the last one).
    budget: Duration,
}

impl Reporter {
    pub(crate) fn new(
        store: Store<Host>,
        instance: bindings::ReporterExports,
        limits: Limits,
        client: Arc<Client>,
    ) -> Reporter {
        Reporter {
            store,
            instance,
            limits,
            client,
            policy: None,
            budget: limits.parse_budget,
        }
    }

    /// The policy the last successful [`Reporter::configure`] applied.
    #[cfg(feature = "outbox")]
    pub(crate) fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Parses a configuration object with the seed's option names (`serverUrl`, …), in
    /// the component. An unknown key or a wrong type is [`HostError::Config`] naming it.
    pub async fn parse_config(&mut self, json: &str) -> Result<Config, HostError> {
        self.begin(self.limits.parse_budget);
        let documents = self.instance.status_push_reporter_documents();
        let result = documents.call_parse_config(&mut self.store, json).await;
        result
            .map_err(|e| self.trapped(e, "parsing the configuration"))?
            .map(Config::from)
            .map_err(HostError::Config)
    }

    /// Parses an event's data-API documents, in the component. A log may give
    /// `content_file: PATH` instead of `content`: its text is then streamed from that
    /// file while the request is written, never held whole in memory. Only a regular
    /// file is accepted (a FIFO, device or directory is refused before it is opened). A
    /// refused document is [`HostError::Event`] naming its JSON path.
    pub async fn parse_event(&mut self, json: &str) -> Result<BuildEvent, HostError> {
        let files = content_files(json);
        for (step, log, path) in &files {
            // Checked before the call, so a FIFO or device is refused before any attempt.
            crate::files::check_regular(path, None).map_err(|e| {
                HostError::Event(InputError {
                    key: format!("steps[{step}].logs[{log}].content_file"),
                    message: format!("{}: {e}", path.display()),
                })
            })?;
        }
        self.begin(self.limits.parse_budget);
        let documents = self.instance.status_push_reporter_documents();
        let result = documents.call_parse_event(&mut self.store, json).await;
        let mut event = result
            .map_err(|e| self.trapped(e, "parsing the build documents"))?
            .map_err(HostError::Event)?;
        for (step, log, path) in files {
            let file = std::fs::File::open(&path).map_err(|e| {
                HostError::Event(InputError {
                    key: format!("steps[{step}].logs[{log}].content_file"),
                    message: format!("cannot open {}: {e}", path.display()),
                })
            })?;
            let stream: wasmtime_wasi::p2::DynInputStream = Box::new(
                wasmtime_wasi::p2::pipe::AsyncReadStream::new(tokio::fs::File::from_std(file)),
            );
            let handle = self
                .store
                .data_mut()
                .table
                .push(stream)
                .map_err(|e| HostError::Instantiate(e.into()))?;
            if let Some(entry) = event.steps.get_mut(step).and_then(|s| s.logs.get_mut(log)) {
                entry.content = Some(bindings::LogContent::Stream(handle));
            }
        }
        Ok(event)
    }

    /// The instance's store, for the host's own tests.
    #[cfg(test)]
    pub(crate) fn store_mut(&mut self) -> &mut Store<Host> {
        &mut self.store
    }

    /// The most linear memory this instance has used so far, in bytes.
    pub fn peak_memory(&self) -> usize {
        self.store.data().meter.peak()
    }

    /// [`Reporter::parse_config`] then [`Reporter::configure`]: a configuration in the
    /// seed's JSON, applied.
    pub async fn configure_json(&mut self, json: &str) -> Result<(), HostError> {
        let config = self.parse_config(json).await?;
        self.configure(config).await
    }

    /// Configures the instance and opens the sandbox to the origin of `server_url` only,
    /// with the TLS policy of `verify` and `ca_file`; report calls may then run for the
    /// configuration's retry deadline plus [`Limits::report_margin`]. An invalid
    /// configuration (a bad CA file included) is [`HostError::Config`]; the instance then
    /// keeps its previous configuration.
    pub async fn configure(&mut self, config: Config) -> Result<(), HostError> {
        let policy = Policy::from_config(&config, &self.limits, &self.client)?;
        self.begin(self.limits.parse_budget);
        let reporter = self.instance.status_push_reporter_reporter();
        let result = reporter
            .call_configure(&mut self.store, &WitConfig::from(config))
            .await;
        result
            .map_err(|e| self.trapped(e, "configuring"))?
            .map_err(HostError::Config)?;
        self.store.data_mut().open(&policy.opening);
        self.policy = Some(policy);
        Ok(())
    }

    /// Reports one event; `Ok` is delivered or deliberately skipped.
    pub async fn report(&mut self, event: Event, build: &BuildEvent) -> Result<Outcome, HostError> {
        self.set_report_budget();
        let reporter = self.instance.status_push_reporter_reporter();
        let result = match event {
            Event::Started => reporter.call_on_build_started(&mut self.store, build).await,
            Event::Finished => {
                reporter
                    .call_on_build_finished(&mut self.store, build)
                    .await
            }
        };
        result
            .map_err(|e| self.trapped(e, "handling the event"))?
            .map_err(HostError::Push)
    }

    /// Reports one event given as its data-API documents in JSON (the form
    /// [`Reporter::parse_event`] reads), handed to the component once, as one string.
    /// Log texts must be inline (`content`). A document that does not parse is a
    /// [`HostError::Push`] whose error is `invalid-input`, with nothing sent.
    pub async fn report_json(
        &mut self,
        event: Event,
        documents: &str,
    ) -> Result<Outcome, HostError> {
        self.set_report_budget();
        let reporter = self.instance.status_push_reporter_reporter();
        let result = reporter
            .call_report_json(&mut self.store, event.into(), documents)
            .await;
        result
            .map_err(|e| self.trapped(e, "handling the event"))?
            .map_err(HostError::Push)
    }

    /// Reports one event given as its data-API documents in JSON, the way a host that
    /// holds JSON should: handed over once ([`Reporter::report_json`]) when every log text
    /// is inline, and parsed first ([`Reporter::parse_event`], then [`Reporter::report`])
    /// only when a log names a `content_file` to stream. Parsing first costs one more call,
    /// lifting the records out of the component and lowering them back in.
    pub async fn report_documents(
        &mut self,
        event: Event,
        documents: &str,
    ) -> Result<Outcome, HostError> {
        // Any mention goes the parsing way, so a misused `content_file` is refused as the
        // event's error (`HostError::Event`, naming its JSON path) either way.
        if !documents.contains("\"content_file\"") {
            return self.report_json(event, documents).await;
        }
        let build = self.parse_event(documents).await?;
        self.report(event, &build).await
    }

    fn set_report_budget(&mut self) {
        let budget = self
            .policy
            .as_ref()
            .map_or(self.limits.parse_budget, |p| p.report_budget);
        self.begin(budget);
    }

    /// Starts a call: its deadline, and a fresh memory-refusal flag.
    fn begin(&mut self, budget: Duration) {
        self.budget = budget;
        self.store.data_mut().meter.clear_refusal();
        set_budget(&mut self.store, budget);
    }

    /// What a trap during `doing` was: the memory limit (the meter refused growth during
    /// this call), the deadline (an epoch interrupt), or something else. The backtrace
    /// goes to the log at `debug` only.
    fn trapped(&self, error: wasmtime::Error, doing: &'static str) -> HostError {
        tracing::debug!("the component trapped while {doing}: {error:?}");
        if self.store.data().meter.refused() {
            HostError::OutOfMemory {
                limit_bytes: self.limits.memory_bytes,
                doing,
            }
        } else if matches!(
            error.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            HostError::TimeBudget {
                budget: self.budget,
                doing,
            }
        } else {
            HostError::Trap(error)
        }
    }
}

/// `(step, log, path)` of every log that names a `content_file` and has no `content`.
fn content_files(json: &str) -> Vec<(usize, usize, PathBuf)> {
    // Most events stream nothing: no parse for them.
    if !json.contains("\"content_file\"") {
        return vec![];
    }
    let Ok(doc) = status_push::documents::parse_json(json) else {
        return vec![];
    };
    status_push::documents::content_files(&doc)
        .into_iter()
        .map(|f| (f.step, f.log, PathBuf::from(f.path)))
        .collect()
}
