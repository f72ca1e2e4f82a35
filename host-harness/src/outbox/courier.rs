//! The one courier: claims due chains, calls the component for each head, renews the
//! claim while the call runs, bounds the call by the event's report budget, and settles
//! the result; prunes old dead letters now and then. `deliver`, `push --outbox`,
//! `serve --outbox` and the Buildbot plugin all deliver through it, so its rules (in
//! [`super::schedule`]) are the outbox's rules wherever it runs.
//!
//! Calls run concurrently on the courier's own task (each is mostly a wait for its
//! receiver), at most [`schedule::MAX_IN_FLIGHT`] chains at once and
//! [`schedule::MAX_IN_FLIGHT_PER_DESTINATION`] of one destination, one call per chain;
//! a call that has [stalled](schedule::STALLED_AFTER) gives its place back to the others.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use super::reporters::Reporters;
use super::schedule;
use super::{ChainKey, Claimed, DeliverySummary, Outbox, OutboxError, Settled};
use crate::{HostError, Outcome, Runtime};

/// What a call came to, for an [`Observer`].
#[derive(Debug)]
pub enum Reported<'a> {
    /// Delivered, or skipped by the filters.
    Delivered(&'a Outcome),
    /// The call failed; [`Report::settled`] says whether it stays pending.
    Failed(&'a HostError),
    /// Past its `deadLetterAfterSeconds`: a dead letter without a call.
    Expired,
    /// Its row was not sealed by this outbox's key (altered, or written without the
    /// key): a dead letter, with nothing of it sent or opened.
    Unsealed(&'a super::Unsealed),
    /// The claim's lease ran out before the call ended, or could have (its renewals
    /// failing): the call was stopped, and the chain's holder calls it.
    LeaseLost,
}

/// One settled call.
#[derive(Debug)]
pub struct Report<'a> {
    /// The event.
    pub claimed: &'a Claimed,
    /// What the call came to.
    pub reported: Reported<'a>,
    /// What the outbox did with it.
    pub settled: Settled,
    /// How long the call took.
    pub took: Duration,
}

/// Told of every settled call: metrics, logs, the plugin's dead-letter lines.
pub trait Observer: Send + Sync {
    /// A call was settled.
    fn reported(&self, report: &Report<'_>);
    /// A claim took `took` and handed out `claimed` chains (for benchmarks and metrics).
    fn claimed(&self, took: Duration, claimed: usize) {
        let _ = (took, claimed);
    }
    /// The outbox could not be read or written; the courier goes on.
    fn trouble(&self, error: &OutboxError) {
        tracing::warn!("outbox: {error}");
    }
}

/// An observer that only logs failures.
struct LogOnly;

impl Observer for LogOnly {
    fn reported(&self, report: &Report<'_>) {
        match &report.reported {
            Reported::Failed(error) => tracing::info!(
                "outbox: event {} ({} of {}) to {}: {error} ({:?})",
                report.claimed.seq,
                report.claimed.event,
                report.claimed.build_key,
                report.claimed.destination,
                report.settled
            ),
            Reported::Unsealed(why) => tracing::warn!(
                "outbox: event {} ({} of {}) to {}: {why} ({:?})",
                report.claimed.seq,
                report.claimed.event,
                report.claimed.build_key,
                report.claimed.destination,
                report.settled
            ),
            _ => {}
        }
    }
}

/// Delivers one outbox's events through one runtime.
pub struct Courier<'a> {
    outbox: &'a Outbox,
    runtime: &'a Runtime,
    observer: &'a dyn Observer,
    /// How often an idle courier looks at the outbox; `None`: [`schedule::POLL`], or
    /// [`schedule::POLL_LISTENING`] with a listener.
    poll: Option<Duration>,
    /// Configured reporters between calls.
    reporters: Reporters,
    /// Calls running per destination id, for the claims' share of each.
    busy: Busy,
    /// Calls past [`schedule::STALLED_AFTER`], whose places the others may take.
    stalled: Stalled,
}

/// Calls running per destination id.
#[derive(Default)]
struct Busy(std::sync::Mutex<std::collections::BTreeMap<i64, usize>>);

impl Busy {
    fn snapshot(&self) -> Vec<(i64, usize)> {
        super::group_commit::lock(&self.0)
            .iter()
            .map(|(d, n)| (*d, *n))
            .collect()
    }

    /// Counts a call to `destination` until the returned guard is dropped (the call
    /// ended, or was dropped with the courier).
    fn call(&self, destination: i64) -> Calling<'_> {
        *super::group_commit::lock(&self.0)
            .entry(destination)
            .or_default() += 1;
        Calling(self, destination)
    }
}

struct Calling<'a>(&'a Busy, i64);

impl Drop for Calling<'_> {
    fn drop(&mut self) {
        let mut busy = super::group_commit::lock(&self.0 .0);
        if let Some(n) = busy.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                busy.remove(&self.1);
            }
        }
    }
}

/// Calls running past [`schedule::STALLED_AFTER`].
#[derive(Default)]
struct Stalled {
    count: AtomicUsize,
    /// Wakes the courier: a stalled call gave its place back.
    freed: Notify,
}

impl Stalled {
    /// Counts a stalled call until the returned guard is dropped.
    fn enter(&self) -> StalledCall<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.freed.notify_one();
        StalledCall(self)
    }

    /// Places free beside `in_flight` calls, of which the stalled give theirs back up to
    /// [`schedule::MAX_STALLED`].
    fn room(&self, in_flight: usize) -> usize {
        let stalled = self.count.load(Ordering::SeqCst).min(schedule::MAX_STALLED);
        (schedule::MAX_IN_FLIGHT + stalled).saturating_sub(in_flight)
    }
}

struct StalledCall<'a>(&'a Stalled);

impl Drop for StalledCall<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<'a> Courier<'a> {
    /// A courier that logs failed calls.
    pub fn new(outbox: &'a Outbox, runtime: &'a Runtime) -> Courier<'a> {
        Courier {
            outbox,
            runtime,
            observer: &LogOnly,
            poll: None,
            reporters: Reporters::default(),
            busy: Busy::default(),
            stalled: Stalled::default(),
        }
    }

    /// Looks at an idle outbox every `poll` instead of the schedule's interval (what comes
    /// due with time is then found that much later).
    pub fn with_poll(mut self, poll: Duration) -> Courier<'a> {
        self.poll = Some(poll);
        self
    }

    /// The same, telling `observer` of every settled call.
    pub fn with_observer(mut self, observer: &'a dyn Observer) -> Courier<'a> {
        self.observer = observer;
        self
    }

    /// Delivers until `stop` completes, woken early by `wake` (an event was queued), then
    /// waits up to `grace` for calls in flight; what is not settled by then stays
    /// pending, its claims running out within one lease.
    pub async fn run(&self, wake: &Notify, stop: impl Future<Output = ()>, grace: Duration) {
        let mut stop = pin!(stop);
        let mut in_flight = FuturesUnordered::new();
        let mut housekeeping = Instant::now();
        // With a listener (PostgreSQL), queued events wake the courier; polling then only
        // catches what comes due with time (backoffs, probes, leases of dead hosts).
        let mut listener = match self.outbox.listen().await {
            Ok(listener) => listener,
            Err(e) => {
                self.observer.trouble(&e);
                None
            }
        };
        loop {
            let room = in_flight.len();
            for head in alongside(self.claim_room(room), &mut in_flight).await {
                in_flight.push(self.deliver(head));
            }
            if housekeeping.elapsed() >= schedule::HOUSEKEEPING {
                housekeeping = Instant::now();
                alongside(self.housekeeping(), &mut in_flight).await;
            }
            let poll = self.poll.unwrap_or(if listener.is_some() {
                schedule::POLL_LISTENING
            } else {
                schedule::POLL
            });
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(_) = in_flight.next(), if !in_flight.is_empty() => {}
                () = wake.notified() => {}
                () = self.stalled.freed.notified() => {}
                woken = notified => if woken.is_none() {
                    // The listening connection is gone: poll as without one.
                    listener = None;
                },
                () = tokio::time::sleep(poll) => {}
                () = &mut stop => break,
            }
        }
        if in_flight.is_empty() {
            return;
        }
        let drained =
            tokio::time::timeout(grace, async { while in_flight.next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                "outbox: {} call(s) still running after {grace:?}: left pending",
                in_flight.len()
            );
        }
    }

    /// Delivers until nothing is pending or `budget` is spent; the summary counts what
    /// this run did and what is left.
    pub async fn deliver_for(&self, budget: Duration) -> Result<DeliverySummary, OutboxError> {
        let started = Instant::now();
        let counter = Counter::default();
        let courier = Courier {
            outbox: self.outbox,
            runtime: self.runtime,
            observer: &Tee(self.observer, &counter),
            poll: self.poll,
            reporters: Reporters::default(),
            busy: Busy::default(),
            stalled: Stalled::default(),
        };
        let mut in_flight = FuturesUnordered::new();
        loop {
            let room = in_flight.len();
            for head in alongside(courier.claim_room(room), &mut in_flight).await {
                in_flight.push(courier.deliver(head));
            }
            if in_flight.is_empty() {
                let counts = self.outbox.counts().await?;
                if counts.pending == 0 || started.elapsed() + schedule::POLL >= budget {
                    return Ok(counter.summary(counts));
                }
                tokio::time::sleep(schedule::POLL).await;
            } else {
                let left = budget.saturating_sub(started.elapsed());
                let freed = async {
                    tokio::select! {
                        _ = in_flight.next() => {}
                        () = courier.stalled.freed.notified() => {}
                    }
                };
                if tokio::time::timeout(left, freed).await.is_err() {
                    // Out of time with calls running: they stay pending.
                    drop(in_flight);
                    let counts = self.outbox.counts().await?;
                    return Ok(counter.summary(counts));
                }
            }
        }
    }

    /// Delivers `chain` now, head after head, until `seq` is settled or the chain stops
    /// (a failure leaves it pending); `Some` with the outcome when `seq` was delivered.
    pub(super) async fn deliver_chain(
        &self,
        chain: &ChainKey,
        seq: i64,
    ) -> Result<Option<Outcome>, OutboxError> {
        while let Some(claimed) = self.outbox.claim_chain(chain).await? {
            if claimed.seq > seq {
                self.outbox.release(&claimed).await?;
                return Ok(None);
            }
            let (settled, outcome) = self.deliver(claimed.clone()).await;
            match settled {
                Some(Settled::Done) if claimed.seq == seq => return Ok(outcome),
                Some(Settled::Done | Settled::Dead) if claimed.seq != seq => continue,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Claims as many chains as there is room for beside `in_flight` calls.
    async fn claim_room(&self, in_flight: usize) -> Vec<Claimed> {
        let room = self.stalled.room(in_flight);
        if room == 0 {
            return Vec::new();
        }
        let started = Instant::now();
        let busy = self.busy.snapshot();
        let claimed = self
            .outbox
            .claim_beside(room, busy)
            .await
            .unwrap_or_else(|e| {
                self.observer.trouble(&e);
                Vec::new()
            });
        self.observer.claimed(started.elapsed(), claimed.len());
        claimed
    }

    /// One call for a claimed head ([`Courier::call`]), counted against its
    /// destination's share from its claim on, not from its first poll, so that a claim
    /// made before then sees it; once stalled, counted among the stalled.
    fn deliver(
        &self,
        claimed: Claimed,
    ) -> impl Future<Output = (Option<Settled>, Option<Outcome>)> + '_ {
        let calling = self.busy.call(claimed.chain.destination);
        async move {
            let mut call = pin!(self.call(claimed));
            let settled = match tokio::time::timeout(schedule::STALLED_AFTER, &mut call).await {
                Ok(settled) => settled,
                Err(_) => {
                    let _stalled = self.stalled.enter();
                    call.await
                }
            };
            drop(calling);
            settled
        }
    }

    /// One call for a claimed head, bounded by its budget, its claim renewed meanwhile.
    async fn call(&self, claimed: Claimed) -> (Option<Settled>, Option<Outcome>) {
        let started = Instant::now();
        if claimed.expired() {
            let settled = self.settle(&claimed, None, started).await;
            return (settled, None);
        }
        let contents = match self.outbox.open_row(&claimed) {
            Ok(contents) => contents,
            Err(why) => return (self.settle_unsealed(&claimed, &why, started).await, None),
        };
        let budget = claimed.budget() + schedule::RENEW_EVERY;
        let mut attempt = pin!(tokio::time::timeout(
            budget,
            self.reporters.call(self.runtime, &claimed, &contents)
        ));
        // The first renewal one period from now. Not `interval`'s immediate first tick:
        // awaited, it waits for the timer wheel's next millisecond, which delayed every
        // call by about 1 ms (one SQLite courier delivered 3,478–3,958 events/s with it,
        // 4,980–5,894 without; docs/performance.md).
        let mut renew = tokio::time::interval_at(
            tokio::time::Instant::now() + schedule::RENEW_EVERY,
            schedule::RENEW_EVERY,
        );
        // The chain is surely this call's until one renewal before the lease last
        // confirmed could run out (counted from before the confirmation was asked for;
        // the claim's, from the call's start). Past that, with renewals failing or
        // unanswered (the database unreachable), another host may hold the chain: the
        // call stops, so that the event is never in flight twice.
        let sure_for = schedule::LEASE - schedule::RENEW_EVERY;
        let mut sure_until = started + sure_for;
        let result = loop {
            tokio::select! {
                result = &mut attempt => break result,
                _ = renew.tick() => {
                    let asked = Instant::now();
                    let until = tokio::time::Instant::from_std(sure_until);
                    match tokio::time::timeout_at(until, self.outbox.renew(&claimed)).await {
                        Ok(Ok(true)) => sure_until = asked + sure_for,
                        // Another holder has the chain.
                        Ok(Ok(false)) => return self.lease_lost(&claimed, started),
                        Ok(Err(e)) => self.observer.trouble(&e),
                        Err(_) => {}
                    }
                    if Instant::now() >= sure_until {
                        return self.lease_lost(&claimed, started);
                    }
                }
            }
        };
        let result = result.unwrap_or_else(|_| {
            Err(HostError::TimeBudget {
                budget,
                doing: "delivering from the outbox",
            })
        });
        let settled = self.settle(&claimed, Some(&result), started).await;
        (settled, result.ok())
    }

    /// A call stopped because its chain may be another's now: nothing is recorded (the
    /// chain's holder calls the event).
    fn lease_lost(
        &self,
        claimed: &Claimed,
        started: Instant,
    ) -> (Option<Settled>, Option<Outcome>) {
        self.observer.reported(&Report {
            claimed,
            reported: Reported::LeaseLost,
            settled: Settled::Lost,
            took: started.elapsed(),
        });
        (Some(Settled::Lost), None)
    }

    async fn settle(
        &self,
        claimed: &Claimed,
        result: Option<&Result<Outcome, HostError>>,
        started: Instant,
    ) -> Option<Settled> {
        let reported = match result {
            None => Reported::Expired,
            Some(Ok(outcome)) => Reported::Delivered(outcome),
            Some(Err(error)) => Reported::Failed(error),
        };
        let settled = self.outbox.settle(claimed, result).await;
        self.tell(claimed, reported, settled, started)
    }

    async fn settle_unsealed(
        &self,
        claimed: &Claimed,
        why: &super::Unsealed,
        started: Instant,
    ) -> Option<Settled> {
        let settled = self.outbox.settle_unsealed(claimed, why).await;
        self.tell(claimed, Reported::Unsealed(why), settled, started)
    }

    /// Tells the observer how a call was settled, or that the outbox could not record it.
    fn tell(
        &self,
        claimed: &Claimed,
        reported: Reported<'_>,
        settled: Result<Settled, OutboxError>,
        started: Instant,
    ) -> Option<Settled> {
        match settled {
            Ok(settled) => {
                self.observer.reported(&Report {
                    claimed,
                    reported,
                    settled: settled.clone(),
                    took: started.elapsed(),
                });
                Some(settled)
            }
            Err(e) => {
                self.observer.trouble(&e);
                None
            }
        }
    }

    async fn housekeeping(&self) {
        match self.outbox.prune().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("outbox: pruned {n} dead letter(s) past their retention"),
            Err(e) => self.observer.trouble(&e),
        }
    }
}

/// Awaits `work` while the calls in flight go on: they run on this same task, and one
/// may hold a database connection that `work` waits for.
async fn alongside<T, F: Future>(
    work: impl Future<Output = T>,
    in_flight: &mut FuturesUnordered<F>,
) -> T {
    let mut work = pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            Some(_) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
}

/// Counts what a [`Courier::deliver_for`] run settled.
#[derive(Default)]
struct Counter {
    delivered: std::sync::atomic::AtomicUsize,
    dead: std::sync::atomic::AtomicUsize,
}

impl Counter {
    fn summary(&self, counts: super::Counts) -> DeliverySummary {
        use std::sync::atomic::Ordering::Relaxed;
        DeliverySummary {
            delivered: self.delivered.load(Relaxed),
            dead: self.dead.load(Relaxed),
            pending: usize::try_from(counts.pending).unwrap_or(usize::MAX),
            open_circuits: usize::try_from(counts.open_circuits).unwrap_or(usize::MAX),
        }
    }
}

impl Observer for Counter {
    fn reported(&self, report: &Report<'_>) {
        use std::sync::atomic::Ordering::Relaxed;
        match report.settled {
            Settled::Done => self.delivered.fetch_add(1, Relaxed),
            Settled::Dead => self.dead.fetch_add(1, Relaxed),
            Settled::Pending | Settled::Lost => 0,
        };
    }
}

/// Two observers, told in turn.
struct Tee<'a>(&'a dyn Observer, &'a dyn Observer);

impl Observer for Tee<'_> {
    fn reported(&self, report: &Report<'_>) {
        self.0.reported(report);
        self.1.reported(report);
    }

    fn claimed(&self, took: Duration, claimed: usize) {
        self.0.claimed(took, claimed);
        self.1.claimed(took, claimed);
    }

    fn trouble(&self, error: &OutboxError) {
        self.0.trouble(error);
    }
}

#[cfg(test)]
mod tests {
    use super::schedule::{MAX_IN_FLIGHT, MAX_STALLED};
    use super::Stalled;

    #[test]
    fn stalled_calls_give_their_places_back_up_to_their_own_bound() {
        let stalled = Stalled::default();
        assert_eq!(stalled.room(0), MAX_IN_FLIGHT);
        assert_eq!(stalled.room(MAX_IN_FLIGHT), 0);
        let three: Vec<_> = (0..3).map(|_| stalled.enter()).collect();
        assert_eq!(stalled.room(MAX_IN_FLIGHT), 3);
        drop(three);
        assert_eq!(stalled.room(MAX_IN_FLIGHT), 0);
        // Past their bound, stalled calls take places of the others.
        let over: Vec<_> = (0..MAX_STALLED + 5).map(|_| stalled.enter()).collect();
        assert_eq!(stalled.room(over.len()), MAX_IN_FLIGHT - 5);
    }
}
