//! A durable outbox: events are written before the first attempt and removed only after
//! a 2xx or a permanent failure (then kept as a dead letter). Events of one build are
//! delivered in the order they were written; a `finished` is never attempted while its
//! build's `started` is pending.
//!
//! Two backends behind one API, chosen by [`Location`]:
//! - **SQLite** (a file path; the default): embedded, nothing to run; one file an operator
//!   can inspect with the `sqlite3` shell, transactions that survive `kill -9` and power
//!   loss in WAL mode. Delivery is serialised across processes by an exclusive lock on
//!   `PATH.lock` (shared for [`Outbox::deliver_build`]), which the OS releases when a
//!   process dies. See `sqlite.rs`.
//! - **PostgreSQL** (`postgresql://` or `postgres://`): one database several hosts share.
//!   Each pending event is attempted by one worker at a time under a lease that runs out
//!   if its worker dies; no lock file. See `postgres.rs`.
//!
//! Delivery is at least once: an event whose attempt's result was not recorded (a killed
//! worker) is attempted again, under the same delivery id, so receivers deduplicate.

mod postgres;
mod sqlite;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;

pub use postgres::PostgresUrl;

use crate::policy::DEFAULT_DEAD_LETTER_AFTER;
use crate::{Event, HostError, Outcome, Runtime};

/// The schema version this build writes; an older outbox is migrated when opened, a
/// newer one refused ([`OutboxError::NewerSchema`]). 1: SQLite only, before retries were
/// spaced in the outbox; 2: per-event backoff and report budget, PostgreSQL.
pub const SCHEMA_VERSION: i64 = 2;

/// A failed call of an event waits this long before the next, doubling per call.
const FIRST_BACKOFF_MS: i64 = 250;
const MAX_BACKOFF_MS: i64 = 30_000;

/// Events claimed at once by one pass of [`Outbox::deliver`], attempted concurrently.
const BATCH: usize = 8;

/// What can go wrong with the outbox itself.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The SQLite file could not be opened, read or written.
    #[error("outbox {}: {source}", path.display())]
    Sqlite {
        /// The outbox file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The PostgreSQL server refused, failed or could not be reached.
    #[error("outbox {location}: {}", one_line(error))]
    Postgres {
        /// The URL, its password redacted.
        location: String,
        /// Why. Printed with its causes (the server's message is one), so not a
        /// `source`: a caller walking the chain would print them twice.
        error: tokio_postgres::Error,
    },
    /// The server did not answer in time.
    #[error("outbox {location}: no answer from the database within {after:?}")]
    Timeout {
        /// The URL, its password redacted.
        location: String,
        /// How long it waited.
        after: Duration,
    },
    /// The outbox location is not usable as given.
    #[error("outbox {location}: {message}")]
    Location {
        /// What was given (password redacted).
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The outbox was written by a newer status-push; nothing was read or written.
    #[error(
        "outbox {location}: its schema is version {found}, newer than this status-push's \
         {SCHEMA_VERSION}; upgrade status-push (nothing was read or written)"
    )]
    NewerSchema {
        /// The file or URL.
        location: String,
        /// The version found.
        found: i64,
    },
    /// The delivery lock could not be taken.
    #[error("outbox lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The blocking task running a SQLite call did not finish (the runtime is stopping).
    #[error("the outbox task stopped: {0}")]
    Stopped(String),
    /// The event or its configuration was refused before it could be queued.
    #[error(transparent)]
    Host(#[from] HostError),
    /// [`Outbox::accept`]: this `webhook-id` was accepted before, within
    /// [`REPLAY_WINDOW`]; nothing was queued.
    #[error("webhook-id {0} was already accepted")]
    Replayed(String),
    /// A row holds what no status-push writes (an unknown event name); nothing of it
    /// was sent.
    #[error("outbox {location}: a row is unreadable: {message}")]
    Corrupt {
        /// The file or URL (password redacted).
        location: String,
        /// What is wrong with it.
        message: String,
    },
    /// [`Outbox::redeliver`]: no dead letter has this sequence number or delivery id.
    #[error("no dead letter {0} in the outbox")]
    NoSuchDeadLetter(String),
}

/// An error and its causes on one line: tokio-postgres keeps the server's message (a
/// wrong password, a refused connection) in the source, which may span lines.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace('\n', " ")
}

/// How long [`Outbox::accept`] remembers a `webhook-id`: longer than the ±5 minutes a
/// signature's timestamp may be off, so a replay inside that window is always caught.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Where an outbox lives: a SQLite file, or a PostgreSQL database given by URL.
#[derive(Debug, Clone)]
pub enum Location {
    /// A SQLite file (created when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database (the schema is created when missing).
    Postgres(PostgresUrl),
}

impl Location {
    /// `postgresql://…` or `postgres://…` is a database; anything else a file path.
    pub fn parse(text: &std::ffi::OsStr) -> Result<Location, OutboxError> {
        match text.to_str() {
            Some(url) if PostgresUrl::is_url(url) => {
                PostgresUrl::parse(url).map(Location::Postgres)
            }
            _ => Ok(Location::Sqlite(PathBuf::from(text))),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        Location::Sqlite(path.to_path_buf())
    }
}
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
    /// The longest one delivery call of it may take (the configuration's report budget):
    /// a worker's claim on it lasts that long plus a margin.
    pub report_budget: Duration,
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

/// The oldest pending event of one build, claimed by [`Outbox::claim`]: what to deliver
/// next for that build. Hand it back with [`Outbox::settle`].
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

/// An outbox: a SQLite file or a PostgreSQL database. Cheap to share between tasks and
/// threads (`&Outbox` is enough for every call).
pub struct Outbox {
    store: Store,
}

enum Store {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Dispatches one call to the backend.
macro_rules! store {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.store {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(p) => p.$method($($arg),*).await,
        }
    };
}

/// A new event as stored.
struct NewEvent {
    build_key: String,
    event: String,
    config: String,
    documents: String,
    dead_after_s: i64,
    budget_ms: i64,
}

impl NewEvent {
    fn new(
        build_key: &str,
        event: Event,
        config: &str,
        documents: &str,
        dead_after: Duration,
        budget: Duration,
    ) -> NewEvent {
        NewEvent {
            build_key: build_key.to_string(),
            event: event.as_str().to_string(),
            config: config.to_string(),
            documents: documents.to_string(),
            // About 35,000 years: far enough, and no overflow when added to a timestamp.
            dead_after_s: i64::try_from(dead_after.as_secs()).map_or(1 << 40, |s| s.min(1 << 40)),
            budget_ms: i64::try_from(budget.as_millis()).map_or(1 << 40, |s| s.min(1 << 40)),
        }
    }
}

/// What a claim asks for.
struct Claim {
    /// Only this build's head.
    only_build: Option<String>,
    /// Builds to leave alone (their event failed in this pass).
    skip: HashSet<String>,
    /// At most this many events, each of a different build.
    limit: usize,
    /// Also events still waiting out their backoff.
    due_or_not: bool,
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The wait after the `calls`-th failed call of an event.
fn backoff_ms(calls: i64) -> i64 {
    let doublings = u32::try_from((calls - 1).clamp(0, 16)).unwrap_or(16);
    FIRST_BACKOFF_MS
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF_MS)
}

const EXPIRED: &str = "expired: undelivered for longer than deadLetterAfterSeconds";

impl Outbox {
    /// Opens the outbox at `location`, creating it (a SQLite file readable by its owner
    /// only, since it holds configurations and their secrets; or the tables of a
    /// PostgreSQL database) or migrating its schema as needed.
    pub async fn open(location: &Location) -> Result<Outbox, OutboxError> {
        let store = match location {
            Location::Sqlite(path) => {
                let path = path.clone();
                let opened = tokio::task::spawn_blocking(move || sqlite::Sqlite::open(&path))
                    .await
                    .map_err(|e| OutboxError::Stopped(e.to_string()))?;
                Store::Sqlite(opened?)
            }
            Location::Postgres(url) => Store::Postgres(postgres::Postgres::open(url).await?),
        };
        Ok(Outbox { store })
    }

    /// Where it is (a PostgreSQL URL without its password).
    pub fn location(&self) -> Location {
        match &self.store {
            Store::Sqlite(s) => Location::Sqlite(s.path().to_path_buf()),
            Store::Postgres(p) => Location::Postgres(p.url().clone()),
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
        let (dead_after, budget) = reporter
            .policy()
            .map_or((DEFAULT_DEAD_LETTER_AFTER, Duration::ZERO), |policy| {
                (policy.dead_letter_after, policy.report_budget)
            });
        let build = reporter.parse_event(documents_json).await?;
        let build_key = format!("{buildbot_url}|{}", build.build.buildid);
        let new = NewEvent::new(
            &build_key,
            event,
            config_json,
            documents_json,
            dead_after,
            budget,
        );
        let seq = store!(self.insert(new, None, 0))?.expect("an insert without an id is fresh");
        Ok((seq, build_key))
    }

    /// Queues an event the caller validated itself, with no component call, in one
    /// transaction with its `webhook-id` (refused with [`OutboxError::Replayed`] if seen
    /// within [`REPLAY_WINDOW`]; older ids are forgotten). Returns its sequence number.
    pub async fn accept(&self, event: &Accepted<'_>) -> Result<i64, OutboxError> {
        let new = NewEvent::new(
            event.build_key,
            event.event,
            event.config_json,
            event.documents_json,
            event.dead_after,
            event.report_budget,
        );
        let id = event.webhook_id.map(str::to_string);
        let window = REPLAY_WINDOW.as_secs() as i64;
        match store!(self.insert(new, id, window))? {
            Some(seq) => Ok(seq),
            None => Err(OutboxError::Replayed(
                event.webhook_id.unwrap_or_default().to_string(),
            )),
        }
    }

    /// Queues an event and delivers the pending events of its build, in order, now
    /// (earlier events waiting out a backoff included).
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
        let _lock = self.lock(File::lock)?;
        let mut summary = DeliverySummary::default();
        let done = self
            .deliver_pass(runtime, Some(&build_key), true, &mut summary)
            .await?;
        if let Some((_, outcome)) = done.into_iter().find(|(s, _)| *s == seq) {
            return Ok(PushResult::Done(outcome));
        }
        Ok(match store!(self.status(seq))? {
            // Delivered by a concurrent `deliver` in the meantime.
            None => PushResult::Pending("delivered by another process".into()),
            Some((true, error)) => PushResult::Dead(error.unwrap_or_default()),
            Some((false, error)) => PushResult::Pending(
                error.unwrap_or_else(|| "an earlier event of this build is still pending".into()),
            ),
        })
    }

    /// Delivers everything pending, in per-build order, pass after pass, until nothing
    /// is pending (here or, with PostgreSQL, in another worker's hands) or `budget` is
    /// spent.
    pub async fn deliver(
        &self,
        runtime: &Runtime,
        budget: Duration,
    ) -> Result<DeliverySummary, OutboxError> {
        let _lock = self.lock(File::lock)?;
        let started = Instant::now();
        let mut summary = DeliverySummary::default();
        let mut pause = Duration::from_millis(250);
        loop {
            let done = self
                .deliver_pass(runtime, None, false, &mut summary)
                .await?;
            if summary.pending == 0 || started.elapsed() + pause >= budget {
                return Ok(summary);
            }
            if done.is_empty() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            } else {
                pause = Duration::from_millis(250);
            }
        }
    }

    /// One pass over the pending events of one build (`build_key` as [`Outbox::enqueue`]
    /// returned it), in order; returns the summary and the dead letters this pass made.
    /// With SQLite it takes the delivery lock shared, so several builds are delivered at
    /// once, each by one caller, while a whole-outbox [`Outbox::deliver`] (exclusive)
    /// waits for them.
    pub async fn deliver_build(
        &self,
        runtime: &Runtime,
        build_key: &str,
    ) -> Result<(DeliverySummary, Vec<Entry>), OutboxError> {
        let _lock = self.lock(File::lock_shared)?;
        let mut summary = DeliverySummary::default();
        let mut made_dead = Vec::new();
        self.pass(
            runtime,
            Some(build_key),
            false,
            &mut summary,
            &mut made_dead,
        )
        .await?;
        let mut dead = Vec::new();
        if !made_dead.is_empty() {
            dead = self.dead_letters().await?;
            dead.retain(|e| made_dead.contains(&e.seq));
        }
        Ok((summary, dead))
    }

    /// Claims up to `limit` events, the oldest pending one of as many builds, for the
    /// caller to attempt ([`attempt_queued`]) and hand back ([`Outbox::settle`]). Builds
    /// whose head is claimed elsewhere, or waiting out its backoff after a failed call,
    /// are left out. With PostgreSQL a claim is a lease that runs out if this process
    /// dies; with SQLite it lives in this process (whose delivery lock keeps others out).
    pub async fn claim(&self, limit: usize) -> Result<Vec<Queued>, OutboxError> {
        let claim = Claim {
            only_build: None,
            skip: HashSet::new(),
            limit,
            due_or_not: false,
        };
        let rows = store!(self.claim(claim))?;
        Ok(rows.into_iter().map(Queued::from).collect())
    }

    /// Records the result of [`attempt_queued`] for `queued`: removes it when delivered,
    /// keeps it pending after a retryable failure (the next call waits out a backoff),
    /// makes it a dead letter otherwise, or when it is past its `deadLetterAfterSeconds`
    /// (pass `None` to check only that, and to give up the claim if it is not).
    pub async fn settle(
        &self,
        queued: &Queued,
        result: Option<&Result<Outcome, HostError>>,
    ) -> Result<Settled, OutboxError> {
        let Some(result) = result else {
            if queued.row.expired {
                store!(self.dead(queued.seq, EXPIRED))?;
                return Ok(Settled::Dead);
            }
            return Ok(Settled::Pending);
        };
        match result {
            Ok(_) => {
                store!(self.delivered(queued.seq))?;
                Ok(Settled::Done)
            }
            Err(error) => {
                let failed = Failed::from(error);
                let retryable = failed.retryable;
                self.failed(queued.seq, failed).await?;
                Ok(if retryable {
                    Settled::Pending
                } else {
                    Settled::Dead
                })
            }
        }
    }

    /// Gives a claim back unattempted.
    pub async fn release(&self, queued: &Queued) -> Result<(), OutboxError> {
        store!(self.release(queued.seq))
    }

    /// Makes dead letters pending again (GitHub's "redeliver"), with a fresh
    /// `deadLetterAfterSeconds` window; returns how many.
    pub async fn redeliver(&self, which: &Redeliver) -> Result<usize, OutboxError> {
        let changed = store!(self.redeliver(which.clone()))?;
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
    pub async fn counts(&self) -> Result<Counts, OutboxError> {
        store!(self.counts(None))
    }

    /// Takes the delivery lock (SQLite: `PATH.lock`, waiting for it): while it is held,
    /// `deliver` and `push` in other processes wait. Released when dropped, or by the OS
    /// when the process dies. PostgreSQL needs none: claims keep workers apart.
    pub fn delivery_lock(&self) -> Result<DeliveryLock, OutboxError> {
        self.lock(File::lock).map(DeliveryLock)
    }

    /// Lists the dead letters, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<Entry>, OutboxError> {
        store!(self.entries(true))
    }

    /// Lists the pending events, in delivery order.
    pub async fn pending(&self) -> Result<Vec<Entry>, OutboxError> {
        store!(self.entries(false))
    }

    /// One pass (of one build, or all): claims heads and attempts them, again and again,
    /// until nothing is left to claim; a build whose event stays pending is left alone
    /// until the next pass. Returns the outcomes of what was delivered;
    /// `summary.pending` is what is left.
    async fn deliver_pass(
        &self,
        runtime: &Runtime,
        only_build: Option<&str>,
        due_or_not: bool,
        summary: &mut DeliverySummary,
    ) -> Result<Vec<(i64, Outcome)>, OutboxError> {
        let mut made_dead = Vec::new();
        self.pass(runtime, only_build, due_or_not, summary, &mut made_dead)
            .await
    }

    async fn pass(
        &self,
        runtime: &Runtime,
        only_build: Option<&str>,
        due_or_not: bool,
        summary: &mut DeliverySummary,
        made_dead: &mut Vec<i64>,
    ) -> Result<Vec<(i64, Outcome)>, OutboxError> {
        let mut skip = HashSet::new();
        let mut done = Vec::new();
        loop {
            let claim = Claim {
                only_build: only_build.map(str::to_string),
                skip: skip.clone(),
                limit: if only_build.is_some() { 1 } else { BATCH },
                due_or_not,
            };
            let rows = store!(self.claim(claim))?;
            if rows.is_empty() {
                break;
            }
            let mut due = Vec::new();
            for row in rows {
                if row.expired {
                    store!(self.dead(row.seq, EXPIRED))?;
                    summary.dead += 1;
                    made_dead.push(row.seq);
                } else {
                    due.push(row);
                }
            }
            // Concurrently, on this task: each call is mostly waiting for its receiver.
            let results = join_all(due.iter().map(|row| call(runtime, row))).await;
            for (row, result) in due.into_iter().zip(results) {
                match result {
                    Ok(outcome) => {
                        store!(self.delivered(row.seq))?;
                        summary.delivered += 1;
                        done.push((row.seq, outcome));
                    }
                    Err(error) => {
                        let failed = Failed::from(&error);
                        if failed.retryable {
                            skip.insert(row.build_key.clone());
                        } else {
                            summary.dead += 1;
                            made_dead.push(row.seq);
                        }
                        self.failed(row.seq, failed).await?;
                    }
                }
            }
        }
        summary.pending = store!(self.counts(only_build.map(str::to_string)))?.pending as usize;
        Ok(done)
    }

    async fn failed(&self, seq: i64, failed: Failed) -> Result<(), OutboxError> {
        match &self.store {
            Store::Sqlite(s) => s.failed(seq, failed, backoff_ms).await,
            Store::Postgres(p) => p.failed(seq, failed).await,
        }
    }

    /// SQLite's delivery lock; `None` for PostgreSQL.
    fn lock(&self, lock: fn(&File) -> std::io::Result<()>) -> Result<Option<File>, OutboxError> {
        let Store::Sqlite(sqlite) = &self.store else {
            return Ok(None);
        };
        let mut path = sqlite.path().to_path_buf().into_os_string();
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
        Ok(Some(file))
    }
}

/// The outbox's delivery lock; see [`Outbox::delivery_lock`].
#[derive(Debug)]
pub struct DeliveryLock(#[allow(dead_code)] Option<File>);

/// A pending event as stored.
#[derive(Debug, Clone)]
struct Row {
    seq: i64,
    build_key: String,
    /// Parsed when read: a row naming another event is refused, never taken for one.
    event: Event,
    config: String,
    documents: String,
    /// Past its `deadLetterAfterSeconds` when claimed.
    expired: bool,
    created_at: i64,
}

impl From<Row> for Queued {
    fn from(row: Row) -> Queued {
        Queued {
            seq: row.seq,
            build_key: row.build_key.clone(),
            event: row.event,
            created_at: row.created_at,
            row,
        }
    }
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
    let event = row.event;
    let mut reporter = runtime.configured_reporter(&row.config).await?;
    reporter.report_documents(event, &row.documents).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_event_waits_longer_after_each_call_up_to_thirty_seconds() {
        let waits: Vec<i64> = (1..=9).map(backoff_ms).collect();
        assert_eq!(
            waits,
            [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
        );
        assert_eq!(backoff_ms(i64::MAX), 30_000);
        assert_eq!(backoff_ms(0), 250);
    }

    #[test]
    fn a_location_is_a_database_only_by_its_scheme() {
        for url in ["postgresql://h/db", "postgres://u@h:5432/db"] {
            assert!(matches!(
                Location::parse(url.as_ref()).unwrap(),
                Location::Postgres(_)
            ));
        }
        for path in [
            "outbox.sqlite",
            "/var/lib/postgresql/outbox",
            "postgresql:x",
        ] {
            assert!(matches!(
                Location::parse(path.as_ref()).unwrap(),
                Location::Sqlite(_)
            ));
        }
    }
}
