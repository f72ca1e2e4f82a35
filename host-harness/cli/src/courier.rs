//! `serve --outbox`'s background delivery: the host library's one courier
//! (`status_push_host::outbox::Courier`, the same rules as `deliver` and the Buildbot
//! plugin), told of every settled call so that `serve` counts it in `/metrics` and
//! forgets the acceptance time of what settled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use status_push_host::outbox::{self, Observer, Outbox, Report, Reported, Settled};
use status_push_host::relay::Relay;
use status_push_host::{HostError, Outcome};
use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;

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
    /// what is not delivered by then stays pending in the outbox (its claims run out
    /// within one lease, and another host may take them).
    pub async fn run(self, mut stop: watch::Receiver<bool>, grace: Duration) {
        let counted = Counted {
            metrics: self.metrics.clone(),
            accepted: self.accepted.clone(),
        };
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        outbox::Courier::new(&self.outbox, self.relay.runtime())
            .with_observer(&counted)
            .run(&self.wake, stopped, grace)
            .await;
    }
}

/// Counts settled calls into the metrics.
struct Counted {
    metrics: Arc<Metrics>,
    accepted: Arc<Mutex<HashMap<i64, Instant>>>,
}

impl Observer for Counted {
    fn reported(&self, report: &Report<'_>) {
        let head = report.claimed;
        match &report.reported {
            Reported::Delivered(outcome) => {
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
            Reported::Failed(error) => {
                if let HostError::Push(failure) = error {
                    self.metrics.attempts.inc_by(u64::from(failure.attempts));
                }
                tracing::warn!(
                    "serve: delivery of event {} ({:?} of {}) to {} failed: {error}",
                    head.seq,
                    head.event,
                    head.build_key,
                    head.destination
                );
                self.metrics.failed(failure_kind(error));
            }
            Reported::Expired => self.metrics.failed("expired"),
            Reported::Unsealed(why) => {
                tracing::warn!(
                    "serve: event {} ({:?} of {}) to {}: {why}",
                    head.seq,
                    head.event,
                    head.build_key,
                    head.destination
                );
                self.metrics.failed("unsealed");
            }
            Reported::LeaseLost => {}
        }
        if report.settled != Settled::Pending {
            if let Ok(mut accepted) = self.accepted.lock() {
                accepted.remove(&head.seq);
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
