//! `serve --outbox`'s background delivery: the oldest pending event of each build is
//! claimed from the outbox and handed to the component (its own attempts and backoff
//! inside the call), up to [`MAX_IN_FLIGHT`] builds at once, so a build whose receiver
//! call is stuck never delays another. Within a build, events go one at a time in the
//! order they were accepted; after a failed call the outbox holds the event back for a
//! backoff (doubling from 250 ms to 30 s), across every host sharing it. Results are
//! recorded as `deliver` records them: delivered events are removed, permanent failures
//! and expired events become dead letters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use status_push_host::outbox::{attempt_queued, Outbox, Queued, Settled};
use status_push_host::relay::Relay;
use status_push_host::{HostError, Outcome};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// Builds delivered concurrently.
pub const MAX_IN_FLIGHT: usize = 16;

/// How often the outbox is looked at when nothing wakes the courier.
const POLL: Duration = Duration::from_millis(250);

/// The background deliverer of one outbox.
#[derive(Clone)]
pub struct Courier {
    /// The outbox, shared with the request handlers.
    pub outbox: Arc<Outbox>,
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
    /// what is not delivered by then stays pending in the outbox (with PostgreSQL, its
    /// claim runs out and another host may take it).
    pub async fn run(self, mut stop: watch::Receiver<bool>, grace: Duration) {
        let mut tasks: JoinSet<()> = JoinSet::new();
        while !*stop.borrow() {
            let room = MAX_IN_FLIGHT - tasks.len();
            if room > 0 {
                match self.outbox.claim(room).await {
                    Ok(claimed) => {
                        for queued in claimed {
                            tasks.spawn(self.clone().deliver(queued));
                        }
                    }
                    Err(e) => tracing::warn!("serve: cannot read the outbox: {e}"),
                }
            }
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        tracing::warn!("serve: a delivery task failed: {e}");
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

    /// One delivery call for a claimed head of a build.
    async fn deliver(self, head: Queued) {
        match self.outbox.settle(&head, None).await {
            Ok(Settled::Dead) => {
                self.metrics.failed("expired");
                self.forget(head.seq);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("serve: cannot read the outbox: {e}");
                let _ = self.outbox.release(&head).await;
                return;
            }
        }
        let result = attempt_queued(self.relay.runtime(), &head).await;
        self.count(&head, &result);
        match self.outbox.settle(&head, Some(&result)).await {
            Ok(Settled::Pending) => {}
            Ok(_) => self.forget(head.seq),
            Err(e) => {
                tracing::warn!("serve: cannot record a delivery in the outbox: {e}");
                let _ = self.outbox.release(&head).await;
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
        HostError::Push(failure) => failure.error.kind(),
        HostError::Config(_) => "invalid-config",
        HostError::Load { .. } | HostError::Instantiate(_) => "instantiate",
        HostError::Trap(_) => "trap",
        HostError::OutOfMemory { .. } => "out-of-memory",
        HostError::TimeBudget { .. } => "time-budget",
        HostError::Event(_) => "invalid-event",
    }
}
