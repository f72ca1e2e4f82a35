//! The SQLite backend: one file on one machine. Every call runs on tokio's blocking pool
//! (a commit waits for the disk) over one connection behind a mutex. Delivery from one
//! file is serialised across processes by the file lock (`PATH.lock`), so which events
//! are in flight is known in this process alone: claims are kept in memory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::Event;

use super::{
    now_ms, now_s, Claim, Counts, Entry, Failed, NewEvent, OutboxError, Redeliver, Row,
    SCHEMA_VERSION,
};

/// An outbox file.
pub(super) struct Sqlite {
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

struct State {
    db: Connection,
    /// Events handed out by [`Sqlite::claim`] and not settled yet.
    claimed: HashSet<i64>,
}

/// Locks `mutex`, taking it even if a panicking call poisoned it: the connection is
/// still usable (every statement is its own transaction).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Version 1 (status-push before the PostgreSQL backend) had no `calls`/`next_attempt_ms`
/// and kept its version at 0.
const CREATE: &str = "
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
    );";

const MIGRATE_TO_2: &str = "
    ALTER TABLE events ADD COLUMN calls INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN next_attempt_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN budget_ms INTEGER NOT NULL DEFAULT 0;";

impl Sqlite {
    /// Opens (creating if needed, readable by its owner only: it holds configurations,
    /// secrets included) and migrates the outbox at `path`.
    pub(super) fn open(path: &Path) -> Result<Sqlite, OutboxError> {
        let store = |source| OutboxError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let created = !path.exists();
        let mut db = Connection::open(path).map_err(store)?;
        #[cfg(unix)]
        if created {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        db.busy_timeout(Duration::from_secs(30)).map_err(store)?;
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(store)?;
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(store)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(store)?;
        if version > SCHEMA_VERSION {
            return Err(OutboxError::NewerSchema {
                location: path.display().to_string(),
                found: version,
            });
        }
        if version < SCHEMA_VERSION {
            tx.execute_batch(CREATE).map_err(store)?;
            tx.execute_batch(MIGRATE_TO_2).map_err(store)?;
            tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
                .map_err(store)?;
        }
        tx.commit().map_err(store)?;
        Ok(Sqlite {
            path: path.to_path_buf(),
            state: Arc::new(Mutex::new(State {
                db,
                claimed: HashSet::new(),
            })),
        })
    }

    /// Runs `work` on the connection on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut State) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let state = self.state.clone();
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || work(&mut lock(&state))).await {
            Ok(result) => result.map_err(|source| OutboxError::Sqlite { path, source }),
            Err(e) => Err(OutboxError::Stopped(e.to_string())),
        }
    }

    pub(super) async fn insert(
        &self,
        event: NewEvent,
        webhook_id: Option<String>,
        replay_window_s: i64,
    ) -> Result<Option<i64>, OutboxError> {
        self.run(move |state| {
            let created = now_s();
            let tx = state.db.transaction()?;
            if let Some(id) = &webhook_id {
                tx.execute(
                    "DELETE FROM seen_webhook_ids WHERE seen_at < ?1",
                    params![created - replay_window_s],
                )?;
                let fresh = tx.execute(
                    "INSERT OR IGNORE INTO seen_webhook_ids (id, seen_at) VALUES (?1, ?2)",
                    params![id, created],
                )?;
                if fresh == 0 {
                    return Ok(None);
                }
            }
            tx.execute(
                "INSERT INTO events
                     (build_key, event, config, documents, created_at, expires_at, budget_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    event.build_key,
                    event.event,
                    event.config,
                    event.documents,
                    created,
                    created.saturating_add(event.dead_after_s),
                    event.budget_ms,
                ],
            )?;
            let seq = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Some(seq))
        })
        .await
    }

    /// The oldest pending event of each build, oldest first, that is not claimed, not
    /// waiting out its backoff (unless `due_or_not`) and not of a build in `skip`.
    pub(super) async fn claim(&self, claim: Claim) -> Result<Vec<Row>, OutboxError> {
        self.run(move |state| {
            let now_ms = now_ms();
            let now_s = now_s();
            // The oldest heads first, through the indexes: enough of them to fill the
            // claim after leaving out those this process holds or this pass skips.
            let wanted = claim.limit + state.claimed.len() + claim.skip.len();
            let rows = {
                let mut statement = state.db.prepare_cached(
                    "SELECT seq, build_key, event, config, documents, expires_at, created_at
                     FROM events e
                     WHERE dead = 0 AND (?1 IS NULL OR build_key = ?1)
                       AND (?2 OR next_attempt_ms <= ?3)
                       AND NOT EXISTS (SELECT 1 FROM events p WHERE p.dead = 0
                                       AND p.build_key = e.build_key AND p.seq < e.seq)
                     ORDER BY seq LIMIT ?4",
                )?;
                let rows = statement.query_map(
                    params![
                        claim.only_build,
                        claim.due_or_not,
                        now_ms,
                        i64::try_from(wanted).unwrap_or(i64::MAX)
                    ],
                    |r| {
                        Ok(Row {
                            seq: r.get(0)?,
                            build_key: r.get(1)?,
                            event: stored_event(r, 2)?,
                            config: r.get(3)?,
                            documents: r.get(4)?,
                            expired: now_s >= r.get::<_, i64>(5)?,
                            created_at: r.get(6)?,
                        })
                    },
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let mut taken = Vec::new();
            for row in rows {
                if taken.len() >= claim.limit {
                    break;
                }
                if state.claimed.contains(&row.seq) || claim.skip.contains(&row.build_key) {
                    continue;
                }
                state.claimed.insert(row.seq);
                taken.push(row);
            }
            Ok(taken)
        })
        .await
    }

    /// Removes a delivered event. Its commit is not flushed to the disk (WAL,
    /// `synchronous = NORMAL`): a power cut may undo it, and the event is then delivered
    /// again under the same delivery id; a crash of the process cannot.
    pub(super) async fn delivered(&self, seq: i64) -> Result<(), OutboxError> {
        self.run(move |state| {
            state.claimed.remove(&seq);
            relaxed(&state.db, |db| {
                db.execute("DELETE FROM events WHERE seq = ?1", params![seq])
            })
        })
        .await
    }

    pub(super) async fn failed(
        &self,
        seq: i64,
        failed: Failed,
        backoff: fn(i64) -> i64,
    ) -> Result<(), OutboxError> {
        self.run(move |state| {
            state.claimed.remove(&seq);
            let calls: i64 = state
                .db
                .query_row(
                    "SELECT calls FROM events WHERE seq = ?1",
                    params![seq],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0)
                + 1;
            state.db.execute(
                "UPDATE events SET attempts = attempts + ?2, delivery_id = ?3,
                     last_error = ?4, dead = ?5, calls = ?6, next_attempt_ms = ?7
                 WHERE seq = ?1",
                params![
                    seq,
                    failed.attempts,
                    failed.delivery_id,
                    failed.reason,
                    !failed.retryable,
                    calls,
                    now_ms().saturating_add(backoff(calls)),
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn dead(&self, seq: i64, reason: &'static str) -> Result<(), OutboxError> {
        self.run(move |state| {
            state.claimed.remove(&seq);
            state.db.execute(
                "UPDATE events SET dead = 1, last_error = ?2 WHERE seq = ?1",
                params![seq, reason],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn release(&self, seq: i64) -> Result<(), OutboxError> {
        self.run(move |state| {
            state.claimed.remove(&seq);
            Ok(())
        })
        .await
    }

    /// `(dead, last_error)` of one event, `None` once removed.
    pub(super) async fn status(
        &self,
        seq: i64,
    ) -> Result<Option<(bool, Option<String>)>, OutboxError> {
        self.run(move |state| {
            state
                .db
                .query_row(
                    "SELECT dead, last_error FROM events WHERE seq = ?1",
                    params![seq],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
        })
        .await
    }

    pub(super) async fn redeliver(&self, which: Redeliver) -> Result<usize, OutboxError> {
        self.run(move |state| {
            let revive = "UPDATE events SET dead = 0, last_error = NULL, calls = 0,
                              next_attempt_ms = 0,
                              expires_at = ?1 + (expires_at - created_at)
                          WHERE dead = 1";
            let now = now_s();
            match which {
                Redeliver::All => state.db.execute(revive, params![now]),
                Redeliver::Seq(seq) => state
                    .db
                    .execute(&format!("{revive} AND seq = ?2"), params![now, seq]),
                Redeliver::DeliveryId(id) => state
                    .db
                    .execute(&format!("{revive} AND delivery_id = ?2"), params![now, id]),
            }
        })
        .await
    }

    pub(super) async fn counts(&self, only_build: Option<String>) -> Result<Counts, OutboxError> {
        self.run(move |state| {
            state.db.query_row(
                "SELECT COALESCE(SUM(dead = 0), 0), COALESCE(SUM(dead = 1), 0) FROM events
                 WHERE ?1 IS NULL OR build_key = ?1",
                params![only_build],
                |r| {
                    Ok(Counts {
                        pending: r.get::<_, i64>(0)? as u64,
                        dead: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
        })
        .await
    }

    pub(super) async fn entries(&self, dead: bool) -> Result<Vec<Entry>, OutboxError> {
        self.run(move |state| {
            let mut statement = state.db.prepare(
                "SELECT seq, build_key, event, delivery_id, created_at, attempts, last_error
                 FROM events WHERE dead = ?1 ORDER BY seq",
            )?;
            let rows = statement.query_map(params![dead as i64], |r| {
                Ok(Entry {
                    seq: r.get(0)?,
                    build_key: r.get(1)?,
                    event: stored_event(r, 2)?,
                    delivery_id: r.get(3)?,
                    created_at: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// Runs `work` with `synchronous = NORMAL`: committed, not flushed.
fn relaxed<T>(
    db: &Connection,
    work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<()> {
    db.execute_batch("PRAGMA synchronous = NORMAL")?;
    let result = work(db);
    db.execute_batch("PRAGMA synchronous = FULL")?;
    result.map(|_| ())
}

/// The event name in column `index`; another name is a conversion error, not an event.
fn stored_event(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Event> {
    row.get::<_, String>(index)?.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("status-push-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("outbox.sqlite")
    }

    #[test]
    fn an_outbox_of_the_first_layout_is_migrated_with_its_events() {
        let path = temp("v1");
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(CREATE).unwrap();
            db.execute(
                "INSERT INTO events (build_key, event, config, documents, created_at, expires_at)
                 VALUES ('m|1', 'started', '{}', '{}', 1, 2)",
                [],
            )
            .unwrap();
        }
        let sqlite = Sqlite::open(&path).unwrap();
        let state = lock(&sqlite.state);
        let version: i64 = state
            .db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let kept: (String, i64, i64) = state
            .db
            .query_row(
                "SELECT build_key, calls, next_attempt_ms FROM events",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(kept, ("m|1".to_string(), 0, 0));
        drop(state);
        drop(sqlite);
        // Opening again changes nothing.
        Sqlite::open(&path).unwrap();
    }

    #[test]
    fn a_newer_outbox_is_refused_and_left_as_it_was() {
        let path = temp("newer");
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
                .unwrap();
        }
        let error = Sqlite::open(&path).err().unwrap().to_string();
        assert!(
            error.contains("schema is version 99, newer than this status-push's 2"),
            "{error}"
        );
        let db = Connection::open(&path).unwrap();
        let tables: i64 = db
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "nothing was created");
    }
}
