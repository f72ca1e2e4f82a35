//! Group commit for the SQLite outbox: writes that arrive while another is committing are
//! run together, each in its own savepoint, and committed once.
//!
//! Every call queues its work; the first to find no combiner running starts one on the
//! blocking pool, which runs everything queued by then in one `BEGIN IMMEDIATE`
//! transaction, then the next group, until the queue is empty (flat combining). Each
//! caller hears its own result only after its group's commit. So a result, a claim or a
//! queued event is exactly as durable as with a transaction of its own (a queued event is
//! committed with `synchronous = FULL`, flushed before its caller hears of it), and
//! atomic on its own (a failing call rolls back to its savepoint, not the others'), but a
//! busy courier pays one commit, one WAL header and one write of the shared pages (its
//! destination's counters, the chain index) for many calls instead of one each: most of
//! what a settled event cost.

use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

/// What a queued call does once its work ran: told how the commit went, it answers its
/// caller.
type Finish = Box<dyn FnOnce(Result<(), &rusqlite::Error>) + Send>;

/// A queued call: its work, run in the group's transaction (`None`: the transaction could
/// not begin, so the work does not run).
type Work = Box<dyn FnOnce(Option<&Transaction<'_>>) -> Finish + Send>;

#[derive(Default)]
struct Queue {
    work: Vec<Work>,
    /// Whether any of it must be flushed before its caller hears of it.
    durable: bool,
    /// A combiner is on its way or running: it takes this work too, so a call that
    /// finds one needs no blocking task of its own (each costs two thread wake-ups).
    combining: bool,
}

/// One connection's group commits.
#[derive(Clone, Default)]
pub(super) struct GroupCommit {
    queue: Arc<Mutex<Queue>>,
}

/// Locks `mutex`, taking it even if a panicking call poisoned it: what it guards (the
/// connection, the queue) is still usable.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl GroupCommit {
    /// Runs `work` in a transaction on `db`, possibly with other calls' work, and returns
    /// its result once that transaction is committed (`durable`: flushed to the disk).
    /// `Err(None)`: the blocking task did not run (the runtime is stopping).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        db: &Arc<Mutex<Connection>>,
        durable: bool,
        work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Option<rusqlite::Error>> {
        let (answer, answered) = oneshot::channel::<rusqlite::Result<T>>();
        let queued: Work = Box::new(move |tx| {
            let result = tx.map(|tx| in_savepoint(tx, work));
            Box::new(move |committed| {
                let result = match (committed, result) {
                    (Ok(()), Some(result)) => result,
                    (Err(e), _) => Err(copy(e)),
                    // Not reached: the work runs whenever the transaction began.
                    (Ok(()), None) => Err(rusqlite::Error::InvalidQuery),
                };
                let _ = answer.send(result);
            })
        });
        let start = {
            let mut queue = lock(&self.queue);
            queue.work.push(queued);
            queue.durable |= durable;
            !std::mem::replace(&mut queue.combining, true)
        };
        if start {
            let combiner = Combiner {
                db: db.clone(),
                queue: self.queue.clone(),
                done: false,
            };
            // Not awaited: this call's answer may come from the combiner's first group,
            // while it goes on with later ones.
            drop(tokio::task::spawn_blocking(move || combiner.run()));
        }
        match answered.await {
            Ok(result) => result.map_err(Some),
            Err(_) => Err(None),
        }
    }
}

/// The blocking task that commits group after group until no work is left. Whoever
/// queues work while it runs is answered by it: its last look at the queue and the end of
/// `combining` happen under one lock, so no work is ever left without a combiner.
struct Combiner {
    db: Arc<Mutex<Connection>>,
    queue: Arc<Mutex<Queue>>,
    done: bool,
}

impl Combiner {
    fn run(mut self) {
        let mut db = lock(&self.db);
        loop {
            let batch = {
                let mut queue = lock(&self.queue);
                if queue.work.is_empty() {
                    queue.combining = false;
                    break;
                }
                Queue {
                    work: std::mem::take(&mut queue.work),
                    durable: std::mem::take(&mut queue.durable),
                    combining: true,
                }
            };
            commit(&mut db, batch);
        }
        drop(db);
        self.done = true;
    }
}

impl Drop for Combiner {
    /// Dropped without finishing (the runtime stopped before the task ran, or a call's
    /// work panicked): the queued calls are answered `Err(None)` through their dropped
    /// channels, and the next call starts a combiner of its own.
    fn drop(&mut self) {
        if !self.done {
            let mut queue = lock(&self.queue);
            queue.work.clear();
            queue.durable = false;
            queue.combining = false;
        }
    }
}

/// Runs a group: every call's work in its savepoint, one commit, then every answer.
fn commit(db: &mut Connection, batch: Queue) {
    let synchronous =
        |db: &Connection, level: &str| db.execute_batch(&format!("PRAGMA synchronous = {level}"));
    if batch.durable {
        if let Err(e) = synchronous(db, "FULL") {
            fail(batch.work, &e);
            return;
        }
    }
    match db.transaction_with_behavior(TransactionBehavior::Immediate) {
        Err(e) => fail(batch.work, &e),
        Ok(tx) => {
            let finishes: Vec<Finish> =
                batch.work.into_iter().map(|work| work(Some(&tx))).collect();
            let committed = tx.commit();
            for finish in finishes {
                finish(committed.as_ref().map(|_| ()));
            }
        }
    }
    if batch.durable {
        // Back to the default; should it fail, later commits are flushed too: safe.
        let _ = synchronous(db, "NORMAL");
    }
}

/// Answers every call of a group whose transaction could not begin.
fn fail(work: Vec<Work>, e: &rusqlite::Error) {
    for work in work {
        work(None)(Err(e));
    }
}

/// Runs `work` so that its failure undoes only its own writes.
fn in_savepoint<T>(
    tx: &Transaction<'_>,
    work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.execute_batch("SAVEPOINT call")?;
    match work(tx) {
        Ok(value) => {
            tx.execute_batch("RELEASE call")?;
            Ok(value)
        }
        Err(e) => {
            // Undo this call's writes; the group's transaction goes on.
            let _ = tx.execute_batch("ROLLBACK TO call; RELEASE call");
            Err(e)
        }
    }
}

/// An error for each caller of a group that failed as a whole (`rusqlite::Error` is not
/// `Clone`): the same SQLite code and message.
fn copy(e: &rusqlite::Error) -> rusqlite::Error {
    let code = e
        .sqlite_error()
        .map(|f| f.extended_code)
        .unwrap_or(rusqlite::ffi::SQLITE_ERROR);
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Arc<Mutex<Connection>> {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t (x INTEGER UNIQUE)")
            .unwrap();
        Arc::new(Mutex::new(db))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_call_undoes_only_its_own_writes() {
        let db = db();
        let group = GroupCommit::default();
        let calls = (0..20).map(|i| {
            let (db, group) = (db.clone(), group.clone());
            async move {
                group
                    .run(&db, i % 2 == 0, move |tx| {
                        tx.execute("INSERT INTO t VALUES (?1)", [i])?;
                        // Every fifth call inserts a duplicate and fails.
                        if i % 5 == 0 {
                            tx.execute("INSERT INTO t VALUES (?1)", [i])?;
                        }
                        Ok(i)
                    })
                    .await
            }
        });
        let results = futures::future::join_all(calls).await;
        for (i, result) in results.iter().enumerate() {
            match result {
                Ok(value) => assert!(i % 5 != 0 && *value == i as i32),
                Err(Some(_)) => assert_eq!(i % 5, 0),
                Err(None) => panic!("call {i} was not run"),
            }
        }
        let rows: i64 = lock(&db)
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 16);
    }

    /// A combiner that never ran (the runtime stopped first) answers its queued calls
    /// with `Err(None)` and lets the next call start a combiner of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_combiner_that_never_ran_strands_no_later_call() {
        let db = db();
        let group = GroupCommit::default();
        let (answer, answered) = oneshot::channel::<rusqlite::Result<()>>();
        {
            let mut queue = lock(&group.queue);
            queue.work.push(Box::new(move |_| {
                Box::new(move |_| drop(answer.send(Ok(()))))
            }));
            queue.combining = true;
        }
        drop(Combiner {
            db: db.clone(),
            queue: group.queue.clone(),
            done: false,
        });
        assert!(answered.await.is_err(), "the stranded call was answered");
        let later = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            group.run(&db, false, |tx| tx.execute("INSERT INTO t VALUES (1)", [])),
        )
        .await
        .expect("a later call was left without a combiner");
        assert_eq!(later.ok(), Some(1));
    }
}
