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
             CREATE INDEX IF NOT EXISTS events_pending ON events (dead, seq);",
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
                    event: if r.get::<_, String>(2)? == "started" {
                        Event::Started
                    } else {
                        Event::Finished
                    },
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
                    self.db
                        .execute(
                            "UPDATE events SET attempts = attempts + ?2, delivery_id = ?3,
                                 last_error = ?4, dead = ?5 WHERE seq = ?1",
                            params![
                                row.seq,
                                failed.attempts,
                                failed.delivery_id,
                                failed.reason,
                                !failed.retryable
                            ],
                        )
                        .map_err(|e| self.store_error(e))?;
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
        file.lock().map_err(lock_error)?;
        Ok(file)
    }
}

/// A pending event as stored.
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

/// One call of the component for a stored event, in a fresh instance.
async fn attempt(runtime: &Runtime, row: &Row) -> Result<Outcome, Failed> {
    let event = if row.event == "started" {
        Event::Started
    } else {
        Event::Finished
    };
    let result = async {
        let mut reporter = runtime.reporter().await?;
        let config = reporter.parse_config(&row.config).await?;
        reporter.configure(config).await?;
        let build = reporter.parse_event(&row.documents).await?;
        reporter.report(event, &build).await
    }
    .await;
    result.map_err(|error| {
        let (attempts, delivery_id) = match &error {
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
    })
}
