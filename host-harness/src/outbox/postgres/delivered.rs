//! Deliveries recorded together: calls that end while another group of deliveries is
//! being recorded wait for it, then go in one statement per destination ([`DELIVERED`]).
//!
//! A delivery recorded alone cost a round trip, a server wake-up, a commit and an update
//! of its destination's row, which every delivery to that destination also updates: on a
//! busy outbox, deliveries queued on that one row's lock. Together they share all four
//! (`pg_stat_statements`: 35 µs of the server's a delivery in groups of about 3.5, 50 µs
//! alone); an idle courier still records each one at once (a group of one). A group is one statement, atomic: if it fails, each
//! of its calls records its delivery alone and hears its own error.
//!
//! [`DELIVERED`]: super::DELIVERED

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use tokio::sync::oneshot;

use super::{lock, ChainKey, Pipeline, STATEMENT_TIMEOUT};

/// Deliveries waiting to be recorded, and whether a task is recording them.
#[derive(Default)]
pub(super) struct Delivering {
    waiting: Arc<Mutex<Waiting>>,
}

#[derive(Default)]
struct Waiting {
    calls: Vec<Call>,
    /// A [`record_groups`] task is running: it takes these calls too.
    recording: bool,
}

/// One delivery to record; told once its group is committed.
struct Call {
    chain: ChainKey,
    token: i64,
    seq: i64,
    recorded: oneshot::Sender<()>,
}

impl Delivering {
    /// Records event `seq` of `chain` as delivered under `token`, with whatever else is
    /// waiting; `false` if its group failed, so the caller records it alone.
    pub(super) async fn record(
        &self,
        pipeline: &Arc<Pipeline>,
        chain: &ChainKey,
        token: i64,
        seq: i64,
    ) -> bool {
        let (recorded, answer) = oneshot::channel();
        let start = {
            let mut waiting = lock(&self.waiting);
            waiting.calls.push(Call {
                chain: chain.clone(),
                token,
                seq,
                recorded,
            });
            !std::mem::replace(&mut waiting.recording, true)
        };
        if start {
            // A task of its own, not this caller's: a caller can be dropped (a courier
            // stopping) and must not take the others' answers with it.
            let recording = Recording {
                waiting: self.waiting.clone(),
                done: false,
            };
            tokio::spawn(record_groups(recording, pipeline.clone()));
        }
        answer.await.is_ok()
    }
}

/// Whether a [`record_groups`] task runs. Dropped before it is done (it panicked, or the
/// runtime stopped before running it), it lets the waiting calls go, each to record
/// its delivery alone, so none waits for a task that is gone.
struct Recording {
    waiting: Arc<Mutex<Waiting>>,
    done: bool,
}

impl Drop for Recording {
    fn drop(&mut self) {
        if !self.done {
            let mut waiting = lock(&self.waiting);
            waiting.recording = false;
            waiting.calls.clear();
        }
    }
}

/// Records what is waiting, group after group, until nothing is.
async fn record_groups(mut recording: Recording, pipeline: Arc<Pipeline>) {
    loop {
        let calls = {
            let mut waiting = lock(&recording.waiting);
            if waiting.calls.is_empty() {
                waiting.recording = false;
                recording.done = true;
                return;
            }
            std::mem::take(&mut waiting.calls)
        };
        let mut groups: BTreeMap<i64, (Group, Vec<oneshot::Sender<()>>)> = BTreeMap::new();
        for call in calls {
            let (group, recorded) = groups
                .entry(call.chain.destination)
                .or_insert_with(|| (Group::new(call.chain.destination), Vec::new()));
            group.add(call.chain.build_key, call.token, call.seq);
            recorded.push(call.recorded);
        }
        // Pipelined: one round trip for all destinations.
        join_all(groups.into_values().map(|(group, recorded)| {
            let pipeline = &pipeline;
            async move {
                let done = tokio::time::timeout(STATEMENT_TIMEOUT, group.execute(pipeline)).await;
                if let Ok(Ok(_)) = done {
                    for call in recorded {
                        let _ = call.send(());
                    }
                }
                // Otherwise the calls' senders are dropped here: each records alone.
            }
        }))
        .await;
    }
}

/// Deliveries to one destination, as [`DELIVERED`](super::DELIVERED)'s arguments.
pub(super) struct Group {
    destination: i64,
    build_keys: Vec<String>,
    seqs: Vec<i64>,
    tokens: Vec<i64>,
}

impl Group {
    fn new(destination: i64) -> Group {
        Group {
            destination,
            build_keys: Vec::new(),
            seqs: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// One delivery, alone.
    pub(super) fn of(chain: &ChainKey, token: i64, seq: i64) -> Group {
        let mut group = Group::new(chain.destination);
        group.add(chain.build_key.clone(), token, seq);
        group
    }

    fn add(&mut self, build_key: String, token: i64, seq: i64) {
        self.build_keys.push(build_key);
        self.tokens.push(token);
        self.seqs.push(seq);
    }

    pub(super) async fn execute(&self, pipeline: &Pipeline) -> Result<u64, tokio_postgres::Error> {
        pipeline
            .client
            .execute(
                &pipeline.delivered,
                &[
                    &self.destination,
                    &self.build_keys,
                    &self.seqs,
                    &self.tokens,
                ],
            )
            .await
    }
}
