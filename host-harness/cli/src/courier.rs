//! `serve --outbox`'s background delivery: the oldest pending event of each build is
//! handed to the component (its own attempts and backoff inside the call), up to
//! [`MAX_IN_FLIGHT`] builds at once, so a build whose receiver call is stuck never delays
//! another. Within a build, events go one at a time in the order they were accepted; a
//! build whose event stays pending waits (doubling from 250 ms to 30 s) before the next
//! try. Results are recorded as `deliver` records them: delivered events are removed,
//! permanent failures and expired events become dead letters.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use status_push_host::bindings::PushError;
use status_push_host::outbox::{attempt_queued, Outbox, OutboxError, Queued, Settled};
use status_push_host::relay::Relay;
use status_push_host::{HostError, Outcome};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// Builds delivered concurrently.
pub const MAX_IN_FLIGHT: usize = 16;

/// How often the outbox is looked at when nothing wakes the courier.
const POLL: Duration = Duration::from_millis(250);

/// A pending build waits this long after its first retryable failure, doubling.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An outbox shared by the request handlers and the courier; its calls run on tokio's
/// blocking pool, since a commit waits for the disk.
pub type SharedOutbox = Arc<Mutex<Outbox>>;

/// Why an outbox call made through [`with_outbox`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The outbox refused or failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The blocking task did not finish (the runtime is shutting down).
    #[error("the outbox task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs `f` on the outbox on the blocking pool.
pub async fn with_outbox<T, F>(outbox: &SharedOutbox, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Outbox) -> Result<T, OutboxError> + Send + 'static,
{
    let outbox = outbox.clone();
    let result = tokio::task::spawn_blocking(move || {
        // A panic while holding the lock leaves the connection usable: take it anyway.
        let mut guard = outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    })
    .await?;
    Ok(result?)
}

/// The background deliverer of one outbox.
#[derive(Clone)]
pub struct Courier {
    /// The outbox (a connection of its own).
    pub outbox: SharedOutbox,
    /// The relay component, whose reporter interfaces deliver.
    pub relay: Arc<Relay>,
    /// What it counts.
    pub metrics: Arc<Metrics>,
    /// Notified when an event is accepted.
    pub wake: Arc<Notify>,
    /// When each event this process accepted was accepted, for the latency histogram.
    pub accepted: Arc<Mutex<HashMap<i64, Instant>>>,
}

impl Courier {
    /// Delivers until `stop` turns true, then waits up to `grace` for calls in flight;
    /// what is not delivered by then stays pending in the outbox.
    pub async fn run(self, mut stop: watch::Receiver<bool>, grace: Duration) {
        let mut tasks: JoinSet<(String, Option<Settled>)> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut waiting: HashMap<String, (Instant, u32)> = HashMap::new();
        while !*stop.borrow() {
            match with_outbox(&self.outbox, |o| o.heads()).await {
                Ok(heads) => {
                    let now = Instant::now();
                    for head in heads {
                        if tasks.len() >= MAX_IN_FLIGHT {
                            break;
                        }
                        if busy.contains(&head.build_key)
                            || waiting
                                .get(&head.build_key)
                                .is_some_and(|(until, _)| *until > now)
                        {
                            continue;
                        }
                        busy.insert(head.build_key.clone());
                        let key = head.build_key.clone();
                        let handle = tasks.spawn(self.clone().deliver(head));
                        in_flight.insert(handle.id(), key);
                    }
                }
                Err(e) => tracing::warn!("serve: cannot read the outbox: {e}"),
            }
            tokio::select! {
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let (id, result) = match done {
                        Ok((id, (key, settled))) => (id, Some((key, settled))),
                        Err(e) => {
                            tracing::warn!("serve: a delivery task failed: {e}");
                            (e.id(), None)
                        }
                    };
                    if let Some(key) = in_flight.remove(&id) {
                        busy.remove(&key);
                        match result.and_then(|(_, settled)| settled) {
                            Some(Settled::Pending) | None => {
                                let failures = waiting.get(&key).map_or(0, |(_, n)| *n) + 1;
                                let backoff = FIRST_BACKOFF
                                    .saturating_mul(1 << (failures - 1).min(10))
                                    .min(MAX_BACKOFF);
                                waiting.insert(key, (Instant::now() + backoff, failures));
                            }
                            Some(Settled::Done | Settled::Dead) => {
                                waiting.remove(&key);
                            }
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
        if !tasks.is_empty() {
            let drained =
                tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                    .await;
            if drained.is_err() {
                tracing::warn!(
                    "serve: {} delivery call(s) still running after {grace:?}: left pending in the outbox",
                    tasks.len()
                );
                tasks.abort_all();
            }
        }
    }

    /// One delivery call for the head of a build; `None` when the outbox failed.
    async fn deliver(self, head: Queued) -> (String, Option<Settled>) {
        let key = head.build_key.clone();
        let expired = {
            let head = head.clone();
            with_outbox(&self.outbox, move |o| o.settle(&head, None)).await
        };
        match expired {
            Ok(Settled::Dead) => {
                self.metrics.failed("expired");
                self.forget(head.seq);
                return (key, Some(Settled::Dead));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("serve: cannot read the outbox: {e}");
                return (key, None);
            }
        }
        let result = attempt_queued(self.relay.runtime(), &head).await;
        self.count(&head, &result);
        let seq = head.seq;
        let settled = with_outbox(&self.outbox, move |o| o.settle(&head, Some(&result))).await;
        match settled {
            Ok(settled) => {
                if settled != Settled::Pending {
                    self.forget(seq);
                }
                (key, Some(settled))
            }
            Err(e) => {
                tracing::warn!("serve: cannot record a delivery in the outbox: {e}");
                (key, None)
            }
        }
    }

    fn forget(&self, seq: i64) {
        if let Ok(mut accepted) = self.accepted.lock() {
            accepted.remove(&seq);
        }
    }

    fn count(&self, head: &Queued, result: &Result<Outcome, HostError>) {
        match result {
            Ok(outcome) => {
                self.metrics.delivered.inc();
                if let Outcome::Delivered(d) = outcome {
                    self.metrics.attempts.inc_by(u64::from(d.attempts));
                }
                let since = self
                    .accepted
                    .lock()
                    .ok()
                    .and_then(|a| a.get(&head.seq).map(Instant::elapsed))
                    .unwrap_or_else(|| {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64);
                        Duration::from_secs(now.saturating_sub(head.created_at).max(0) as u64)
                    });
                self.metrics.latency.observe(since.as_secs_f64());
            }
            Err(error) => {
                if let HostError::Push(failure) = error {
                    self.metrics.attempts.inc_by(u64::from(failure.attempts));
                }
                tracing::warn!(
                    "serve: delivery of event {} ({:?} of {}) failed: {error}",
                    head.seq,
                    head.event,
                    head.build_key
                );
                self.metrics.failed(failure_kind(error));
            }
        }
    }
}

/// The WIT name of a failure's `push-error` case, or what failed instead.
pub fn failure_kind(error: &HostError) -> &'static str {
    match error {
        HostError::Push(failure) => match &failure.error {
            PushError::NotConfigured => "not-configured",
            PushError::InvalidInput(_) => "invalid-input",
            PushError::Unreachable(_) => "unreachable",
            PushError::ConnectionLost(_) => "connection-lost",
            PushError::Timeout => "timeout",
            PushError::HttpStatus(_) => "http-status",
            PushError::Tls(_) => "tls",
            PushError::Denied(_) => "denied",
            PushError::Protocol(_) => "protocol",
            PushError::Format(_) => "format",
        },
        HostError::Config(_) => "invalid-config",
        HostError::Load { .. } | HostError::Instantiate(_) => "instantiate",
        HostError::Trap(_) => "trap",
        HostError::OutOfMemory { .. } => "out-of-memory",
        HostError::TimeBudget { .. } => "time-budget",
        HostError::Event(_) => "invalid-event",
    }
}
