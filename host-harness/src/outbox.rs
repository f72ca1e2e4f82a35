//! A durable outbox: events are written to SQLite before the first attempt and removed
//! only after a 2xx or a permanent failure (then kept as a dead letter). Events of one
//! build are delivered in the order they were written; a `finished` never overtakes its
//! `started`.
//!
//! SQLite (through rusqlite, bundled) rather than redb: one file an operator can inspect
//! with the `sqlite3` shell, transactions that survive `kill -9` and power loss in WAL
//! mode, and ordering and listing in plain SQL. Delivery is serialised across processes
//! by an exclusive lock on `PATH.lock`, which the OS releases when a process dies.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::policy::DEFAULT_DEAD_LETTER_AFTER;
use crate::{Event, HostError, Outcome, Runtime};

/// What can go wrong with the outbox itself.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database could not be opened, read or written.
    #[error("outbox {path}: {source}")]
    Store {
        /// The outbox file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The delivery lock could not be taken.
    #[error("outbox lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The event or its configuration was refused before it could be queued.
    #[error(transparent)]
    Host(#[from] HostError),
    /// [`Outbox::accept`]: this `webhook-id` was accepted before, within
    /// [`REPLAY_WINDOW`]; nothing was queued.
    #[error("webhook-id {0} was already accepted")]
    Replayed(String),
    /// [`Outbox::redeliver`]: no dead letter has this sequence number or delivery id.
    #[error("no dead letter {0} in the outbox")]
    NoSuchDeadLetter(String),
}

/// How long [`Outbox::accept`] remembers a `webhook-id`: longer than the ±5 minutes a
/// signature's timestamp may be off, so a replay inside that window is always caught.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(10 * 60);

/// An event a host validated itself (e.g. `status-push serve --outbox`), to queue with
/// [`Outbox::accept`].
#[derive(Debug, Clone)]
pub struct Accepted<'a> {
    /// The configuration, JSON with the seed's option names.
    pub config_json: &'a str,
    /// Which event.
    pub event: Event,
    /// The data-API documents, JSON.
    pub documents_json: &'a str,
    /// `buildbotURL|buildid`: events with the same key are delivered in order.
    pub build_key: &'a str,
    /// Age after which it becomes a dead letter.
    pub dead_after: Duration,
    /// The caller's `webhook-id`, refused if seen within [`REPLAY_WINDOW`].
    pub webhook_id: Option<&'a str>,
}

/// Which dead letters [`Outbox::redeliver`] makes pending again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeliver {
    /// Every dead letter.
    All,
    /// The one with this sequence number (`dead-letters` lists it).
    Seq(i64),
    /// Those with this delivery id.
    DeliveryId(String),
}

/// The oldest pending event of one build, as [`Outbox::heads`] lists it: what to
/// deliver next for that build.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Position in the outbox.
    pub seq: i64,
    /// `buildbotURL|buildid`.
    pub build_key: String,
    /// Which event.
    pub event: Event,
    /// When it was queued, UNIX seconds.
    pub created_at: i64,
    row: Row,
}

/// What [`Outbox::settle`] did with an attempt's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Delivered or skipped: removed.
    Done,
    /// A retryable failure: still pending.
    Pending,
    /// A permanent failure or an expired event: kept as a dead letter.
    Dead,
}

/// Counts of an outbox's events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Waiting to be delivered.
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
}

/// One queued event.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the outbox; delivery follows it within a build.
    pub seq: i64,
    /// `buildbotURL` and buildid: events with the same key are delivered in order.
    pub build_key: String,
    /// Which event.
    pub event: Event,
    /// The delivery id of the last attempt (empty before the first).
    pub delivery_id: String,
    /// When it was queued, UNIX seconds.
    pub created_at: i64,
    /// Attempts made so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// What happened to the event a [`Outbox::push`] queued.
#[derive(Debug)]
pub enum PushResult {
    /// Delivered, or deliberately skipped by the filters.
    Done(Outcome),
    /// Still queued: a retryable failure, or an earlier event of the build is pending.
    Pending(String),
    /// Failed permanently; kept as a dead letter.
    Dead(String),
}

/// A summary of a [`Outbox::deliver`] run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliverySummary {
    /// Events delivered or skipped (and removed).
    pub delivered: usize,
    /// Events that became dead letters in this run.
    pub dead: usize,
    /// Events still pending.
    pub pending: usize,
}

/// The outbox file and its lock.
pub struct Outbox {
    path: PathBuf,
    db: Connection,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn event_name(event: Event) -> &'static str {
    match event {
        Event::Started => "started",
        Event::Finished => "finished",
    }
}

impl Outbox {
    /// Opens (creating if needed) the outbox at `path`. The file holds configurations,
    /// secrets included, so it is created readable by its owner only.
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        let store = |source| OutboxError::Store {
            path: path.to_path_buf(),
            source,
        };
        let created = !path.exists();
        let db = Connection::open(path).map_err(store)?;
        #[cfg(unix)]
        if created {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        db.busy_timeout(Duration::from_secs(30)).map_err(store)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS events (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 build_key TEXT NOT NULL,
                 event TEXT NOT NULL,
                 config TEXT NOT NULL,
                 documents TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL,
                 delivery_id TEXT NOT NULL DEFAULT '',
                 attempts INTEGER NOT NULL DEFAULT 0,
                 dead INTEGER NOT NULL DEFAULT 0,
                 last_error TEXT
             );
             CREATE INDEX IF NOT EXISTS events_pending ON events (dead, seq);
             CREATE INDEX IF NOT EXISTS events_build ON events (dead, build_key, seq);
             CREATE TABLE IF NOT EXISTS seen_webhook_ids (
                 id TEXT PRIMARY KEY,
                 seen_at INTEGER NOT NULL
             );",
        )
        .map_err(store)?;
        Ok(Outbox {
            path: path.to_path_buf(),
            db,
        })
    }

    fn store_error(&self, source: rusqlite::Error) -> OutboxError {
        OutboxError::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// Validates and queues one event; returns its sequence number and build key.
    pub async fn enqueue(
        &self,
        runtime: &Runtime,
        config_json: &str,
        event: Event,
        documents_json: &str,
    ) -> Result<(i64, String), OutboxError> {
        // Refuse what could never be delivered now, not at every later retry.
        let mut reporter = runtime.reporter().await?;
        let config = reporter.parse_config(config_json).await?;
        let buildbot_url = config.buildbot_url.clone();
        reporter.configure(config).await?;
        let dead_after = reporter
            .policy()
            .map_or(DEFAULT_DEAD_LETTER_AFTER, |policy| policy.dead_letter_after);
        let build = reporter.parse_event(documents_json).await?;
        let build_key = format!("{buildbot_url}|{}", build.build.buildid);
        let created = now();
        self.db
            .execute(
                "INSERT INTO events (build_key, event, config, documents, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    build_key,
                    event_name(event),
                    config_json,
                    documents_json,
                    created,
                    created.saturating_add(i64::try_from(dead_after.as_secs()).unwrap_or(i64::MAX))
                ],
            )
            .map_err(|e| self.store_error(e))?;
        Ok((self.db.last_insert_rowid(), build_key))
    }

    /// Queues an event and delivers the pending events of its build, in order.
    pub async fn push(
        &self,
        runtime: &Runtime,
        config_json: &str,
        event: Event,
        documents_json: &str,
    ) -> Result<PushResult, OutboxError> {
        let (seq, build_key) = self
            .enqueue(runtime, config_json, event, documents_json)
            .await?;
        let _lock = self.lock()?;
        let mut summary = DeliverySummary::default();
        let done = self
            .deliver_pass(runtime, Some(&build_key), &mut summary)
            .await?;
        if let Some((_, outcome)) = done.into_iter().find(|(s, _)| *s == seq) {
            return Ok(PushResult::Done(outcome));
        }
        let row: Option<(i64, Option<String>)> = self
            .db
            .query_row(
                "SELECT dead, last_error FROM events WHERE seq = ?1",
                params![seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.store_error(e))?;
        Ok(match row {
            // Delivered by a concurrent `deliver` in the meantime.
            None => PushResult::Pending("delivered by another process".into()),
            Some((1, error)) => PushResult::Dead(error.unwrap_or_default()),
            Some((_, error)) => PushResult::Pending(
                error.unwrap_or_else(|| "an earlier event of this build is still pending".into()),
            ),
        })
    }

    /// Delivers everything pending, in per-build order, pass after pass, until nothing
    /// is pending or `budget` is spent.
    pub async fn deliver(
        &self,
        runtime: &Runtime,
        budget: Duration,
    ) -> Result<DeliverySummary, OutboxError> {
        let _lock = self.lock()?;
        let started = Instant::now();
        let mut summary = DeliverySummary::default();
        let mut pause = Duration::from_millis(250);
        loop {
            self.deliver_pass(runtime, None, &mut summary).await?;
            if summary.pending == 0 || started.elapsed() + pause >= budget {
                return Ok(summary);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// One pass over the pending events of one build (`build_key` as [`Outbox::enqueue`]
    /// returned it), in order; returns the summary and the dead letters this pass made.
    /// It takes the delivery lock shared, so several builds are delivered at once, each by
    /// one caller, while a whole-outbox [`Outbox::deliver`] (exclusive) waits for them.
    pub async fn deliver_build(
        &self,
        runtime: &Runtime,
        build_key: &str,
    ) -> Result<(DeliverySummary, Vec<Entry>), OutboxError> {
        let _lock = self.lock_with(File::lock_shared)?;
        // Dead letters of the build at or after its oldest pending event can only come
        // from this pass: a pending event blocks every later one of its build.
        let first: Option<i64> = self
            .db
            .query_row(
                "SELECT MIN(seq) FROM events WHERE dead = 0 AND build_key = ?1",
                params![build_key],
                |r| r.get(0),
            )
            .map_err(|e| self.store_error(e))?;
        let mut summary = DeliverySummary::default();
        self.deliver_pass(runtime, Some(build_key), &mut summary)
            .await?;
        let mut dead = Vec::new();
        if let (Some(first), true) = (first, summary.dead > 0) {
            dead = self.dead_letters()?;
            dead.retain(|e| e.build_key == build_key && e.seq >= first);
        }
        Ok((summary, dead))
    }

    /// Queues an event the caller validated itself, with no component call, in one
    /// transaction with its `webhook-id` (refused with [`OutboxError::Replayed`] if seen
    /// within [`REPLAY_WINDOW`]; older ids are forgotten). Returns its sequence number.
    pub fn accept(&mut self, event: &Accepted<'_>) -> Result<i64, OutboxError> {
        let created = now();
        let path = self.path.clone();
        let store = move |source| OutboxError::Store {
            path: path.clone(),
            source,
        };
        let tx = self.db.transaction().map_err(&store)?;
        if let Some(id) = event.webhook_id {
            let window = REPLAY_WINDOW.as_secs() as i64;
            tx.execute(
                "DELETE FROM seen_webhook_ids WHERE seen_at < ?1",
                params![created - window],
            )
            .map_err(&store)?;
            let fresh = tx
                .execute(
                    "INSERT OR IGNORE INTO seen_webhook_ids (id, seen_at) VALUES (?1, ?2)",
                    params![id, created],
                )
                .map_err(&store)?;
            if fresh == 0 {
                return Err(OutboxError::Replayed(id.to_string()));
            }
        }
        tx.execute(
            "INSERT INTO events (build_key, event, config, documents, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                event.build_key,
                event_name(event.event),
                event.config_json,
                event.documents_json,
                created,
                created
                    .saturating_add(i64::try_from(event.dead_after.as_secs()).unwrap_or(i64::MAX))
            ],
        )
        .map_err(&store)?;
        let seq = tx.last_insert_rowid();
        tx.commit().map_err(&store)?;
        Ok(seq)
    }

    /// Makes dead letters pending again (GitHub's "redeliver"), with a fresh
    /// `deadLetterAfterSeconds` window; returns how many.
    pub fn redeliver(&self, which: &Redeliver) -> Result<usize, OutboxError> {
        let now = now();
        let revive = "UPDATE events SET dead = 0, last_error = NULL,
                          expires_at = ?1 + (expires_at - created_at)
                      WHERE dead = 1";
        let changed = match which {
            Redeliver::All => self.db.execute(revive, params![now]),
            Redeliver::Seq(seq) => self
                .db
                .execute(&format!("{revive} AND seq = ?2"), params![now, seq]),
            Redeliver::DeliveryId(id) => self
                .db
                .execute(&format!("{revive} AND delivery_id = ?2"), params![now, id]),
        }
        .map_err(|e| self.store_error(e))?;
        match which {
            Redeliver::Seq(seq) if changed == 0 => {
                Err(OutboxError::NoSuchDeadLetter(seq.to_string()))
            }
            Redeliver::DeliveryId(id) if changed == 0 => {
                Err(OutboxError::NoSuchDeadLetter(id.clone()))
            }
            _ => Ok(changed),
        }
    }

    /// How many events are pending and dead.
    pub fn counts(&self) -> Result<Counts, OutboxError> {
        self.db
            .query_row(
                "SELECT COALESCE(SUM(dead = 0), 0), COALESCE(SUM(dead = 1), 0) FROM events",
                [],
                |r| {
                    Ok(Counts {
                        pending: r.get::<_, i64>(0)? as u64,
                        dead: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .map_err(|e| self.store_error(e))
    }

    /// The oldest pending event of each build, oldest first: what a deliverer that
    /// works on builds concurrently may attempt next (one at a time per build).
    pub fn heads(&self) -> Result<Vec<Queued>, OutboxError> {
        let mut statement = self
            .db
            .prepare(
                // SQLite takes the bare columns from the row that holds the MIN.
                "SELECT MIN(seq), build_key, event, config, documents, expires_at, created_at
                 FROM events WHERE dead = 0 GROUP BY build_key ORDER BY 1",
            )
            .map_err(|e| self.store_error(e))?;
        let rows = statement
            .query_map([], |r| {
                let row = Row {
                    seq: r.get(0)?,
                    build_key: r.get(1)?,
                    event: r.get(2)?,
                    config: r.get(3)?,
                    documents: r.get(4)?,
                    expires_at: r.get(5)?,
                };
                Ok(Queued {
                    seq: row.seq,
                    build_key: row.build_key.clone(),
                    event: parse_event_name(&row.event),
                    created_at: r.get(6)?,
                    row,
                })
            })
            .map_err(|e| self.store_error(e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.store_error(e))
    }

    /// Records the result of [`attempt_queued`] for `queued`: removes it when delivered,
    /// keeps it pending after a retryable failure, makes it a dead letter otherwise, or
    /// when it is past its `deadLetterAfterSeconds` (pass `None` to check only that).
    pub fn settle(
        &self,
        queued: &Queued,
        result: Option<&Result<Outcome, HostError>>,
    ) -> Result<Settled, OutboxError> {
        let Some(result) = result else {
            if now() >= queued.row.expires_at {
                self.mark_dead(
                    queued.seq,
                    "expired: undelivered for longer than deadLetterAfterSeconds",
                )?;
                return Ok(Settled::Dead);
            }
            return Ok(Settled::Pending);
        };
        match result {
            Ok(_) => {
                self.db
                    .execute("DELETE FROM events WHERE seq = ?1", params![queued.seq])
                    .map_err(|e| self.store_error(e))?;
                Ok(Settled::Done)
            }
            Err(error) => {
                let failed = Failed::from(error);
                self.record_failure(queued.seq, &failed)?;
                Ok(if failed.retryable {
                    Settled::Pending
                } else {
                    Settled::Dead
                })
            }
        }
    }

    /// Takes the outbox's delivery lock (`PATH.lock`), waiting for it: while it is
    /// held, `deliver` and `push` in other processes wait. Released when dropped, or by
    /// the OS when the process dies.
    pub fn delivery_lock(&self) -> Result<DeliveryLock, OutboxError> {
        self.lock().map(DeliveryLock)
    }

    /// Lists the dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<Entry>, OutboxError> {
        self.entries(true)
    }

    /// Lists the pending events, in delivery order.
    pub fn pending(&self) -> Result<Vec<Entry>, OutboxError> {
        self.entries(false)
    }

    fn entries(&self, dead: bool) -> Result<Vec<Entry>, OutboxError> {
        let mut statement = self
            .db
            .prepare(
                "SELECT seq, build_key, event, delivery_id, created_at, attempts, last_error
                 FROM events WHERE dead = ?1 ORDER BY seq",
            )
            .map_err(|e| self.store_error(e))?;
        let rows = statement
            .query_map(params![dead as i64], |r| {
                Ok(Entry {
                    seq: r.get(0)?,
                    build_key: r.get(1)?,
                    event: parse_event_name(&r.get::<_, String>(2)?),
                    delivery_id: r.get(3)?,
                    created_at: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                })
            })
            .map_err(|e| self.store_error(e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.store_error(e))
    }

    /// One pass over the pending events (of one build, or all) in order. A build whose
    /// event stays pending blocks its later events until the next pass. Returns the
    /// outcomes of what was delivered; `summary.pending` is what is left.
    async fn deliver_pass(
        &self,
        runtime: &Runtime,
        only_build: Option<&str>,
        summary: &mut DeliverySummary,
    ) -> Result<Vec<(i64, Outcome)>, OutboxError> {
        let rows = self.pending_rows(only_build)?;
        let mut blocked = HashSet::new();
        let mut done = Vec::new();
        summary.pending = 0;
        for row in rows {
            if blocked.contains(&row.build_key) {
                summary.pending += 1;
                continue;
            }
            if now() >= row.expires_at {
                self.mark_dead(
                    row.seq,
                    "expired: undelivered for longer than deadLetterAfterSeconds",
                )?;
                summary.dead += 1;
                continue;
            }
            match attempt(runtime, &row).await {
                Ok(outcome) => {
                    self.db
                        .execute("DELETE FROM events WHERE seq = ?1", params![row.seq])
                        .map_err(|e| self.store_error(e))?;
                    summary.delivered += 1;
                    done.push((row.seq, outcome));
                }
                Err(failed) => {
                    self.record_failure(row.seq, &failed)?;
                    if failed.retryable {
                        blocked.insert(row.build_key);
                        summary.pending += 1;
                    } else {
                        summary.dead += 1;
                    }
                }
            }
        }
        Ok(done)
    }

    fn pending_rows(&self, only_build: Option<&str>) -> Result<Vec<Row>, OutboxError> {
        let mut statement = self
            .db
            .prepare(
                "SELECT seq, build_key, event, config, documents, expires_at FROM events
                 WHERE dead = 0 AND (?1 IS NULL OR build_key = ?1) ORDER BY seq",
            )
            .map_err(|e| self.store_error(e))?;
        let rows = statement
            .query_map(params![only_build], |r| {
                Ok(Row {
                    seq: r.get(0)?,
                    build_key: r.get(1)?,
                    event: r.get(2)?,
                    config: r.get(3)?,
                    documents: r.get(4)?,
                    expires_at: r.get(5)?,
                })
            })
            .map_err(|e| self.store_error(e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.store_error(e))
    }

    fn record_failure(&self, seq: i64, failed: &Failed) -> Result<(), OutboxError> {
        self.db
            .execute(
                "UPDATE events SET attempts = attempts + ?2, delivery_id = ?3,
                     last_error = ?4, dead = ?5 WHERE seq = ?1",
                params![
                    seq,
                    failed.attempts,
                    failed.delivery_id,
                    failed.reason,
                    !failed.retryable
                ],
            )
            .map(|_| ())
            .map_err(|e| self.store_error(e))
    }

    fn mark_dead(&self, seq: i64, reason: &str) -> Result<(), OutboxError> {
        self.db
            .execute(
                "UPDATE events SET dead = 1, last_error = ?2 WHERE seq = ?1",
                params![seq, reason],
            )
            .map(|_| ())
            .map_err(|e| self.store_error(e))
    }

    fn lock(&self) -> Result<File, OutboxError> {
        self.lock_with(File::lock)
    }

    fn lock_with(&self, lock: fn(&File) -> std::io::Result<()>) -> Result<File, OutboxError> {
        let mut path = self.path.clone().into_os_string();
        path.push(".lock");
        let path = PathBuf::from(path);
        let lock_error = |source| OutboxError::Lock {
            path: path.clone(),
            source,
        };
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_error)?;
        lock(&file).map_err(lock_error)?;
        Ok(file)
    }
}

/// The outbox's delivery lock; see [`Outbox::delivery_lock`].
#[derive(Debug)]
pub struct DeliveryLock(#[allow(dead_code)] File);

fn parse_event_name(name: &str) -> Event {
    if name == "started" {
        Event::Started
    } else {
        Event::Finished
    }
}

/// A pending event as stored.
#[derive(Debug, Clone)]
struct Row {
    seq: i64,
    build_key: String,
    event: String,
    config: String,
    documents: String,
    expires_at: i64,
}

/// Why an attempt did not deliver.
struct Failed {
    reason: String,
    attempts: u32,
    delivery_id: String,
    retryable: bool,
}

impl From<&HostError> for Failed {
    fn from(error: &HostError) -> Failed {
        let (attempts, delivery_id) = match error {
            HostError::Push(f) => (f.attempts, f.delivery_id.clone()),
            _ => (0, String::new()),
        };
        Failed {
            reason: error.to_string(),
            attempts,
            delivery_id,
            // A failed instantiation is the host's state, not the event's fault.
            retryable: error.is_retryable() || matches!(error, HostError::Instantiate(_)),
        }
    }
}

/// One delivery call of the component for a queued event, in a fresh instance (its own
/// attempts and backoff inside the call); record the result with [`Outbox::settle`].
pub async fn attempt_queued(runtime: &Runtime, queued: &Queued) -> Result<Outcome, HostError> {
    call(runtime, &queued.row).await
}

async fn call(runtime: &Runtime, row: &Row) -> Result<Outcome, HostError> {
    let event = parse_event_name(&row.event);
    let mut reporter = runtime.reporter().await?;
    let config = reporter.parse_config(&row.config).await?;
    reporter.configure(config).await?;
    let build = reporter.parse_event(&row.documents).await?;
    reporter.report(event, &build).await
}

/// One call of the component for a stored event, in a fresh instance.
async fn attempt(runtime: &Runtime, row: &Row) -> Result<Outcome, Failed> {
    call(runtime, row)
        .await
        .map_err(|error| Failed::from(&error))
}
