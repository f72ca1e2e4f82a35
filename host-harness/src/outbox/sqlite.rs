//! The SQLite backend: one file, WAL mode, every write a transaction. A claim is one
//! `BEGIN IMMEDIATE` transaction, so two processes on one file never claim the same
//! chain; nothing about claims lives in memory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::Event;

use super::group_commit::{lock, GroupCommit};
use super::seal::{self, KeyRing};
use super::{
    now_ms, now_s, schedule, ChainKey, Circuit, Claim, Claimed, Counts, Entry, Failure, NewEvent,
    OutboxError, Pruned, Redeliver, Redelivered, Row, SealedRow, SCHEMA_VERSION,
};

/// An outbox file.
pub(super) struct Sqlite {
    path: PathBuf,
    /// A connection of its own for what only reads (counts, circuits, an event's state,
    /// listings): in WAL mode it waits for no writer, nor for the group committer, which
    /// holds `db` for as long as writes keep arriving. Declared before `db`, so closed
    /// before it: the last connection to close checkpoints the WAL and removes it, which
    /// a read-only one cannot do, and the frames it holds may be rows since rewritten (a
    /// secret sealed when an outbox of an earlier release was opened).
    reader: Arc<Mutex<Connection>>,
    db: Arc<Mutex<Connection>>,
    keys: Arc<KeyRing>,
    /// Writes committed together when they arrive together.
    group: GroupCommit,
}

/// The layout of version 3: destinations (their circuit and counters), chains (one per
/// build and destination with pending events: claims and order) and events.
const CREATE: &str = "
    CREATE TABLE destinations (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL UNIQUE,
        shown TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        open_until_ms INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        pending INTEGER NOT NULL DEFAULT 0,
        dead INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE chains (
        destination_id INTEGER NOT NULL,
        build_key TEXT NOT NULL,
        pending INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        calls INTEGER NOT NULL DEFAULT 0,
        claim_token INTEGER,
        delivered_seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (destination_id, build_key)
    ) WITHOUT ROWID;
    CREATE INDEX chains_due ON chains (destination_id, next_attempt_ms) WHERE pending > 0;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        destination_id INTEGER NOT NULL,
        build_key TEXT NOT NULL,
        event TEXT NOT NULL,
        config TEXT NOT NULL,
        documents TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        budget_ms INTEGER NOT NULL DEFAULT 0,
        delivery_id TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        dead INTEGER NOT NULL DEFAULT 0,
        retention_s INTEGER NOT NULL DEFAULT 2592000,
        prune_at INTEGER,
        last_error TEXT
    );
    CREATE INDEX events_chain ON events (destination_id, build_key, seq) WHERE dead = 0;
    CREATE INDEX events_oldest ON events (created_at) WHERE dead = 0;
    CREATE INDEX events_dead ON events (prune_at) WHERE dead = 1;
    CREATE TABLE IF NOT EXISTS seen_webhook_ids (
        id TEXT PRIMARY KEY,
        seen_at INTEGER NOT NULL
    );";

/// Version 1 (status-push before the PostgreSQL backend) had no `calls`,
/// `next_attempt_ms` or `budget_ms`, and kept its version at 0.
const V1_TO_V2: &str = "
    ALTER TABLE events ADD COLUMN calls INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN next_attempt_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN budget_ms INTEGER NOT NULL DEFAULT 0;";

/// Version 2 kept one table of events; version 3 moves them under their destination
/// (the origin of their configuration's `serverUrl`, worked out in Rust by the same
/// function as for new events) and builds the chains and counters.
const V2_TO_V3: &str = "
    ALTER TABLE events RENAME TO events_v2;
    DROP INDEX IF EXISTS events_pending;
    DROP INDEX IF EXISTS events_build;";

const V3_COUNTERS: &str = "
    DROP TABLE events_v2;
    INSERT INTO chains (destination_id, build_key, pending)
        SELECT destination_id, build_key, SUM(dead = 0) FROM events
        GROUP BY destination_id, build_key;
    UPDATE destinations SET
        pending = (SELECT COUNT(*) FROM events e WHERE e.destination_id = id AND e.dead = 0),
        dead = (SELECT COUNT(*) FROM events e WHERE e.destination_id = id AND e.dead = 1);";

/// Version 4: the key check (one value sealed under the outbox key, opened at every open).
const V4: &str = "CREATE TABLE IF NOT EXISTS key_check (sealed TEXT NOT NULL);";

/// The indexes pruning finds its rows by ([`Sqlite::prune`]): settled chains (nothing
/// pending) by when to look at them next, and dead letters by chain. Without them each
/// prune walked every chain and, for each settled one, every event: hours, holding the
/// write lock, beside a backlog of a million. Indexes, not a layout (older builds read
/// the tables as before), so they need no schema version: made at open where missing.
/// `chains_settled`, the earlier index of settled chains by key, made pruning walk every
/// chain kept for its dead letters at every pass (0.9 s under the write lock with a
/// million), so it goes.
const PRUNE_INDEXES: &str = "
    DROP INDEX IF EXISTS chains_settled;
    CREATE INDEX IF NOT EXISTS chains_settled_at ON chains (next_attempt_ms)
        WHERE pending = 0;
    CREATE INDEX IF NOT EXISTS events_dead_chain ON events (destination_id, build_key)
        WHERE dead = 1;";

/// Up to `?2` settled chains due for a look by `?1` (ms), each with its events: how many
/// pending, how many dead letters, and when the first dead letter may go. Each
/// subquery names its partial index's condition, so that the index answers it.
const SETTLED_CHAINS: &str = "
    SELECT c.destination_id, c.build_key,
           (SELECT count(*) FROM events e WHERE e.dead = 0
            AND e.destination_id = c.destination_id AND e.build_key = c.build_key),
           (SELECT count(*) FROM events e WHERE e.dead = 1
            AND e.destination_id = c.destination_id AND e.build_key = c.build_key),
           (SELECT min(e.prune_at) FROM events e WHERE e.dead = 1
            AND e.destination_id = c.destination_id AND e.build_key = c.build_key)
    FROM chains c WHERE c.pending = 0 AND c.next_attempt_ms <= ?1
    ORDER BY c.next_attempt_ms LIMIT ?2";
/// Destination `?1`'s pending events counted again, from its events (through
/// `events_chain`), for pruning's chains that were behind ([`super::Settling::Behind`])
/// and a claim's chain that ran ahead.
const RECOUNT_DESTINATION: &str = "UPDATE destinations
    SET pending = (SELECT count(*) FROM events WHERE destination_id = ?1 AND dead = 0)
    WHERE id = ?1";

type Result<T> = std::result::Result<T, OutboxError>;

impl Sqlite {
    /// Opens (creating if needed, readable by its owner only: it holds configurations,
    /// secrets included) and migrates the outbox at `path`.
    pub(super) fn open(path: &Path, keys: Arc<KeyRing>) -> Result<Sqlite> {
        let store = |source| OutboxError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let unusable = |message: String| OutboxError::Location {
            location: path.display().to_string(),
            message,
        };
        refuse_shared(path).map_err(&unusable)?;
        let mut db = Connection::open(path).map_err(store)?;
        db.busy_handler(Some(busy)).map_err(store)?;
        // Room for every statement the courier and enqueue run (see `exec`).
        db.set_prepared_statement_cache_capacity(64);
        // A deleted row (a delivered event, its configuration's secrets) is overwritten,
        // not left in free pages.
        db.execute_batch("PRAGMA secure_delete = ON;")
            .map_err(store)?;
        // A damaged file is named at open, not at the first delivery that reads a bad page.
        let check: rusqlite::Result<String> = db.query_row("PRAGMA quick_check", [], |r| r.get(0));
        match check {
            Ok(verdict) if verdict == "ok" => {}
            Ok(verdict) => {
                return Err(unusable(format!(
                    "is damaged (quick_check: {verdict}); move it aside and restore a backup"
                )))
            }
            Err(e) => {
                return Err(unusable(format!(
                    "is not a readable outbox ({e}); move it aside and restore a backup"
                )))
            }
        }
        // NORMAL: commits reach the WAL but are flushed only by a FULL one (`durable`) or
        // a checkpoint. Claims, renewals and results may be undone by a power cut, which
        // costs at most an event delivered again under its delivery id; an event itself
        // is written by `durable`, flushed before its caller hears of it.
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(store)?;
        super::checkpointer::install(&mut db, path).map_err(store)?;
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
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
            migrate(&tx, version, &keys).map_err(store)?;
            tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
                .map_err(store)?;
        }
        tx.execute_batch(PRUNE_INDEXES).map_err(store)?;
        let check: Option<String> = tx
            .query_row("SELECT sealed FROM key_check LIMIT 1", [], |r| r.get(0))
            .optional()
            .map_err(store)?;
        if let Some(sealed) =
            super::check_key(&keys, check.as_deref(), &path.display().to_string())?
        {
            exec(
                &tx,
                "INSERT INTO key_check (sealed) VALUES (?1)",
                params![sealed],
            )
            .map_err(store)?;
        }
        tx.commit().map_err(store)?;
        owner_only(path);
        let mut reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(store)?;
        reader.busy_handler(Some(busy)).map_err(store)?;
        Ok(Sqlite {
            path: path.to_path_buf(),
            db: Arc::new(Mutex::new(db)),
            reader: Arc::new(Mutex::new(reader)),
            keys,
            group: GroupCommit::default(),
        })
    }

    /// Runs `work` on the writing connection itself, on the blocking pool, once the group
    /// committer lets go of it (it holds it for as long as writes keep arriving): only for
    /// what cannot run in a transaction (a checkpoint) and `reseal`'s reading of every
    /// row. What the courier, `serve` or the plugin waits on is a write in a group
    /// ([`Sqlite::transaction`]) or a read ([`Sqlite::read`]).
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.on(&self.db, work).await
    }

    /// Runs `work` on the reading connection, on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.on(&self.reader, work).await
    }

    async fn on<T: Send + 'static>(
        &self,
        db: &Arc<Mutex<Connection>>,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = db.clone();
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || work(&mut lock(&db))).await {
            Ok(result) => result.map_err(|source| OutboxError::Sqlite { path, source }),
            Err(e) => Err(OutboxError::Stopped(e.to_string())),
        }
    }

    /// Runs `work` in a `BEGIN IMMEDIATE` transaction flushed to the disk before it
    /// returns (`synchronous = FULL`): what must survive a power cut (a queued event, a
    /// dead letter made pending again). Committed with whatever else arrives meanwhile
    /// ([`GroupCommit`]).
    async fn durable<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.grouped(true, work).await
    }

    /// Runs `work` in a `BEGIN IMMEDIATE` transaction: it holds the file's write lock
    /// from its first statement, so no other process interleaves. Committed with whatever
    /// else arrives meanwhile ([`GroupCommit`]).
    async fn transaction<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.grouped(false, work).await
    }

    async fn grouped<T: Send + 'static>(
        &self,
        durable: bool,
        work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.group
            .run(&self.db, durable, work)
            .await
            .map_err(|e| match e {
                Some(source) => OutboxError::Sqlite {
                    path: self.path.clone(),
                    source,
                },
                None => OutboxError::Stopped("the outbox's writer task did not run".into()),
            })
    }

    pub(super) async fn insert(
        &self,
        event: NewEvent,
        webhook_id: Option<String>,
        replay_window_s: i64,
    ) -> Result<Option<(i64, i64)>> {
        let cap = event.max_pending;
        let keys = self.keys.clone();
        let stored = self
            .durable(move |tx| {
                if let Some(pending) = over_cap(tx, cap, 1)? {
                    return Ok(Err(pending));
                }
                let created = now_s();
                if let Some(id) = &webhook_id {
                    exec(
                        tx,
                        "DELETE FROM seen_webhook_ids WHERE seen_at < ?1",
                        params![created - replay_window_s],
                    )?;
                    let fresh = exec(
                        tx,
                        "INSERT OR IGNORE INTO seen_webhook_ids (id, seen_at) VALUES (?1, ?2)",
                        params![id, created],
                    )?;
                    if fresh == 0 {
                        return Ok(Ok(None));
                    }
                }
                insert_one(tx, &event, created, &keys).map(|ids| Ok(Some(ids)))
            })
            .await?;
        stored.map_err(|pending| self.full(pending, cap))
    }

    pub(super) async fn insert_batch(&self, events: Vec<NewEvent>) -> Result<()> {
        let cap = events
            .iter()
            .map(|e| e.max_pending)
            .min()
            .unwrap_or(u64::MAX);
        let keys = self.keys.clone();
        let stored = self
            .durable(move |tx| {
                if let Some(pending) = over_cap(tx, cap, events.len() as u64)? {
                    return Ok(Err(pending));
                }
                let created = now_s();
                for event in &events {
                    insert_one(tx, event, created, &keys)?;
                }
                Ok(Ok(()))
            })
            .await?;
        stored.map_err(|pending| self.full(pending, cap))
    }

    fn full(&self, pending: u64, cap: u64) -> OutboxError {
        OutboxError::Full {
            location: self.path.display().to_string(),
            pending,
            cap,
        }
    }

    /// Due chains of closed (or probe-ready) destinations, through `chains_due`; or the
    /// one chain asked for, if no one else holds it.
    pub(super) async fn claim(&self, claim: Claim) -> Result<Vec<Claimed>> {
        self.transaction(move |tx| {
            let now = now_ms();
            let until = now.saturating_add(schedule::ms(schedule::LEASE));
            let mut claimed = Vec::new();
            if let Some(chain) = &claim.only {
                let free: Option<bool> = tx
                    .query_row(
                        "SELECT pending > 0 AND (claim_token IS NULL OR next_attempt_ms <= ?3)
                         FROM chains WHERE destination_id = ?1 AND build_key = ?2",
                        params![chain.destination, chain.build_key, now],
                        |r| r.get(0),
                    )
                    .optional()?;
                if free == Some(true) {
                    let shown = shown(tx, chain.destination)?;
                    take(tx, chain, claim.token, until, false, shown, &mut claimed)?;
                }
                return Ok(claimed);
            }
            let mut destinations: Vec<(i64, i64, String)> = tx
                .prepare_cached(
                    "SELECT id, failures, shown FROM destinations
                     WHERE open_until_ms <= ?1 AND pending > 0 ORDER BY id",
                )?
                .query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            schedule::take_turns(&mut destinations, now);
            for (destination, failures, shown) in destinations {
                let room = claim.limit.saturating_sub(claimed.len());
                if room == 0 {
                    break;
                }
                // A failing destination gets one probe per backoff step.
                let probe = failures > 0;
                let want = if probe {
                    1
                } else {
                    claim.want(destination, room)
                };
                if want == 0 {
                    continue;
                }
                let keys: Vec<String> = tx
                    .prepare_cached(
                        "SELECT build_key FROM chains
                         WHERE destination_id = ?1 AND pending > 0 AND next_attempt_ms <= ?2
                         ORDER BY next_attempt_ms LIMIT ?3",
                    )?
                    .query_map(params![destination, now, want as i64], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                for build_key in keys {
                    let chain = ChainKey {
                        destination,
                        build_key,
                    };
                    take(
                        tx,
                        &chain,
                        claim.token,
                        until,
                        probe,
                        shown.clone(),
                        &mut claimed,
                    )?;
                }
                if probe && claimed.iter().any(|c| c.chain.destination == destination) {
                    // No other chain of it until the probe settles (or its lease runs out).
                    exec(
                        tx,
                        "UPDATE destinations SET open_until_ms = ?2 WHERE id = ?1",
                        params![destination, until],
                    )?;
                }
            }
            Ok(claimed)
        })
        .await
    }

    /// Renews the chain's lease if `token` still holds it; a probe's, its destination's
    /// reservation too, so that no second probe starts while a slow one runs. Queued with
    /// the other writes, so it goes in the next group: the combiner holds the connection
    /// for as long as writes keep arriving, which a renewal waiting for the connection
    /// itself could outlast.
    pub(super) async fn renew(&self, chain: &ChainKey, token: i64, probe: bool) -> Result<bool> {
        let chain = chain.clone();
        self.transaction(move |tx| {
            let until = now_ms().saturating_add(schedule::ms(schedule::LEASE));
            let n = exec(
                tx,
                "UPDATE chains SET next_attempt_ms = ?4
                 WHERE destination_id = ?1 AND build_key = ?2 AND claim_token = ?3",
                params![chain.destination, chain.build_key, token, until],
            )?;
            if n == 1 && probe {
                exec(
                    tx,
                    "UPDATE destinations SET open_until_ms = max(open_until_ms, ?2)
                     WHERE id = ?1 AND failures > 0",
                    params![chain.destination, until],
                )?;
            }
            Ok(n == 1)
        })
        .await
    }

    /// Removes a delivered event whoever holds its chain now (it was delivered), closes
    /// its destination's circuit, and frees the chain if this claim still holds it. A power
    /// cut may undo it (see `open`): the event is then delivered again under its id.
    pub(super) async fn delivered(&self, chain: &ChainKey, token: i64, seq: i64) -> Result<()> {
        let chain = chain.clone();
        self.transaction(move |tx| {
            let removed = exec(
                tx,
                "DELETE FROM events WHERE seq = ?1 AND dead = 0",
                params![seq],
            )?;
            if removed == 1 {
                exec(
                    tx,
                    "UPDATE chains SET pending = pending - 1,
                             delivered_seq = MAX(delivered_seq, ?3)
                         WHERE destination_id = ?1 AND build_key = ?2",
                    params![chain.destination, chain.build_key, seq],
                )?;
                exec(
                    tx,
                    "UPDATE destinations SET pending = pending - 1 WHERE id = ?1",
                    params![chain.destination],
                )?;
            }
            exec(
                tx,
                "UPDATE chains SET claim_token = NULL, calls = 0, next_attempt_ms = ?4
                     WHERE destination_id = ?1 AND build_key = ?2 AND claim_token = ?3",
                params![chain.destination, chain.build_key, token, now_ms()],
            )?;
            exec(
                tx,
                "UPDATE destinations SET failures = 0, open_until_ms = 0, last_error = NULL
                     WHERE id = ?1 AND failures > 0",
                params![chain.destination],
            )?;
            Ok(())
        })
        .await
    }

    /// A failure to try again after a backoff; `destination_failed` counts it against the
    /// destination's circuit (once per backoff step, or always for its probe). `false`
    /// when the claim was lost, or its event delivered meanwhile: nothing is recorded.
    pub(super) async fn retry(
        &self,
        chain: &ChainKey,
        token: i64,
        seq: i64,
        failure: &Failure,
        destination_failed: bool,
        probe: bool,
    ) -> Result<bool> {
        let (chain, failure) = (chain.clone(), failure.clone());
        self.transaction(move |tx| {
            let now = now_ms();
            let Some(calls) = held_calls(tx, &chain, token)? else {
                return Ok(false);
            };
            if !record(tx, seq, &failure)? {
                // Gone: delivered by the holder whose lease this claim outlasted. The
                // chain goes on at once, and nothing is counted.
                exec(
                    tx,
                    "UPDATE chains SET calls = 0, next_attempt_ms = ?3, claim_token = NULL
                     WHERE destination_id = ?1 AND build_key = ?2",
                    params![chain.destination, chain.build_key, now],
                )?;
                return Ok(false);
            }
            // A failing destination is spaced by its circuit, and its chains are due again
            // the moment it closes; a failure of this host's own (a CA file, a budget)
            // spaces this chain alone.
            let (calls, next) = if destination_failed {
                (calls, now)
            } else {
                (
                    calls + 1,
                    now.saturating_add(schedule::backoff_ms(calls + 1)),
                )
            };
            exec(
                tx,
                "UPDATE chains SET calls = ?3, next_attempt_ms = ?4, claim_token = NULL
                 WHERE destination_id = ?1 AND build_key = ?2",
                params![chain.destination, chain.build_key, calls, next],
            )?;
            if destination_failed {
                let (failures, open_until): (i64, i64) = tx.query_row(
                    "SELECT failures, open_until_ms FROM destinations WHERE id = ?1",
                    params![chain.destination],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                // Calls in flight together fail together: one step of the circuit.
                if probe || open_until <= now {
                    exec(
                        tx,
                        "UPDATE destinations SET failures = ?2, open_until_ms = ?3,
                             last_error = ?4
                         WHERE id = ?1",
                        params![
                            chain.destination,
                            failures + 1,
                            now.saturating_add(schedule::probe_backoff_ms(failures + 1)),
                            failure.reason
                        ],
                    )?;
                }
            } else if probe {
                reopen(tx, chain.destination, now)?;
            }
            Ok(true)
        })
        .await
    }

    /// A deterministic failure (or an expired event): a dead letter; the chain goes on
    /// with its next event. `reachable`: the destination answered, so its circuit closes.
    pub(super) async fn dead(
        &self,
        chain: &ChainKey,
        token: i64,
        seq: i64,
        failure: &Failure,
        reachable: bool,
        probe: bool,
    ) -> Result<bool> {
        let (chain, failure) = (chain.clone(), failure.clone());
        self.transaction(move |tx| {
            let now = now_ms();
            if held_calls(tx, &chain, token)?.is_none() {
                return Ok(false);
            }
            let marked = exec(
                tx,
                "UPDATE events SET dead = 1, prune_at = ?2 + retention_s
                 WHERE seq = ?1 AND dead = 0",
                params![seq, now_s()],
            )?;
            // Gone: delivered by the holder whose lease this claim outlasted. Nothing to
            // count; the chain goes on.
            let removed = i64::from(marked == 1);
            exec(
                tx,
                "UPDATE chains SET pending = pending - ?4, calls = 0, next_attempt_ms = ?3,
                     claim_token = NULL
                 WHERE destination_id = ?1 AND build_key = ?2",
                params![chain.destination, chain.build_key, now, removed],
            )?;
            if removed == 0 {
                return Ok(false);
            }
            record(tx, seq, &failure)?;
            exec(
                tx,
                "UPDATE destinations SET pending = pending - 1, dead = dead + 1 WHERE id = ?1",
                params![chain.destination],
            )?;
            if reachable {
                exec(
                    tx,
                    "UPDATE destinations SET failures = 0, open_until_ms = 0, last_error = NULL
                     WHERE id = ?1",
                    params![chain.destination],
                )?;
            } else if probe {
                reopen(tx, chain.destination, now)?;
            }
            Ok(true)
        })
        .await
    }

    pub(super) async fn release(&self, chain: &ChainKey, token: i64) -> Result<()> {
        let chain = chain.clone();
        self.transaction(move |db| {
            exec(
                db,
                "UPDATE chains SET claim_token = NULL, next_attempt_ms = ?4
                 WHERE destination_id = ?1 AND build_key = ?2 AND claim_token = ?3",
                params![chain.destination, chain.build_key, token, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// `(dead, last_error)` of one event, `None` once removed.
    pub(super) async fn status(&self, seq: i64) -> Result<Option<(bool, Option<String>)>> {
        self.read(move |db| {
            db.query_row(
                "SELECT dead, last_error FROM events WHERE seq = ?1",
                params![seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .await
    }

    pub(super) async fn redeliver(&self, which: Redeliver, force: bool) -> Result<Redelivered> {
        self.durable(move |tx| {
            let (filter, arg): (&str, rusqlite::types::Value) = match &which {
                Redeliver::All => ("1", rusqlite::types::Value::Null),
                Redeliver::Seq(seq) => ("e.seq = ?1", (*seq).into()),
                Redeliver::DeliveryId(id) => ("e.delivery_id = ?1", id.clone().into()),
            };
            // Superseded: a later event of its chain was delivered since, or is being
            // delivered now (the chain's live claim holds a head past it), so that sent
            // now it would arrive after a later event.
            let sql = format!(
                "SELECT e.seq, e.destination_id, e.build_key,
                        COALESCE(c.delivered_seq, 0) > e.seq
                        OR (c.claim_token IS NOT NULL AND c.next_attempt_ms > ?2
                            AND NOT EXISTS (SELECT 1 FROM events l
                                            WHERE l.destination_id = e.destination_id
                                              AND l.build_key = e.build_key AND l.dead = 0
                                              AND l.seq < e.seq))
                 FROM events e LEFT JOIN chains c
                   ON c.destination_id = e.destination_id AND c.build_key = e.build_key
                 WHERE e.dead = 1 AND ({filter}) AND (?1 IS NULL OR 1)
                 ORDER BY e.seq"
            );
            let (now, now_ms) = (now_s(), now_ms());
            let rows: Vec<(i64, i64, String, bool)> = tx
                .prepare(&sql)?
                .query_map(params![arg, now_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut done = Redelivered::default();
            for (seq, destination, build_key, superseded) in rows {
                if superseded && !force {
                    done.superseded.push(seq);
                    continue;
                }
                exec(
                    tx,
                    "UPDATE events SET dead = 0, prune_at = NULL, last_error = NULL,
                         expires_at = ?2 + (expires_at - created_at)
                     WHERE seq = ?1",
                    params![seq, now],
                )?;
                chain_gains_one(tx, destination, &build_key, now_ms)?;
                exec(
                    tx,
                    "UPDATE destinations SET pending = pending + 1, dead = dead - 1
                     WHERE id = ?1",
                    params![destination],
                )?;
                done.revived += 1;
            }
            Ok(done)
        })
        .await
    }

    pub(super) async fn counts(&self) -> Result<Counts> {
        self.read(move |db| {
            let (pending, dead, open): (i64, i64, i64) = db.query_row(
                "SELECT COALESCE(SUM(pending), 0), COALESCE(SUM(dead), 0),
                        COALESCE(SUM(failures > 0), 0)
                 FROM destinations",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let oldest: Option<i64> = db.query_row(
                "SELECT MIN(created_at) FROM events WHERE dead = 0",
                [],
                |r| r.get(0),
            )?;
            Ok(Counts {
                pending: pending.max(0) as u64,
                dead: dead.max(0) as u64,
                oldest_pending_at: oldest,
                open_circuits: open.max(0) as u64,
            })
        })
        .await
    }

    #[cfg(feature = "bench")]
    pub(super) async fn checkpoint(&self) -> Result<()> {
        self.run(|db| db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)"))
            .await
    }

    pub(super) async fn circuits(&self) -> Result<Vec<Circuit>> {
        self.read(move |db| {
            db.prepare(
                "SELECT shown, failures, pending, last_error FROM destinations
                 WHERE failures > 0 ORDER BY failures DESC, id",
            )?
            .query_map([], |r| {
                Ok(Circuit {
                    destination: r.get(0)?,
                    failures: r.get(1)?,
                    pending: r.get::<_, i64>(2)?.max(0) as u64,
                    last_error: r.get(3)?,
                })
            })?
            .collect()
        })
        .await
    }

    /// Deletes up to `batch` dead letters whose retention ran out by `now_ms`, and looks at
    /// up to `batch` settled chains due for it ([`SETTLED_CHAINS`], [`super::Settling`]).
    pub(super) async fn prune(&self, now_ms: i64, batch: i64) -> Result<Pruned> {
        self.transaction(move |tx| {
            let gone: Vec<i64> = tx
                .prepare(
                    "DELETE FROM events WHERE seq IN (
                         SELECT seq FROM events WHERE dead = 1 AND prune_at < ?1
                         ORDER BY prune_at LIMIT ?2)
                     RETURNING destination_id",
                )?
                .query_map(params![now_ms / 1000, batch], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for destination in &gone {
                exec(
                    tx,
                    "UPDATE destinations SET dead = dead - 1 WHERE id = ?1",
                    params![destination],
                )?;
            }
            let settled: Vec<(i64, String, i64, i64, Option<i64>)> = tx
                .prepare_cached(SETTLED_CHAINS)?
                .query_map(params![now_ms, batch], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut recounted = 0;
            let mut behind = std::collections::BTreeSet::new();
            for (destination, build_key, pending, dead, first_prune_at) in &settled {
                let key = params![destination, build_key];
                match super::Settling::of(*pending, *dead, *first_prune_at, now_ms) {
                    super::Settling::Empty => exec(
                        tx,
                        "DELETE FROM chains WHERE destination_id = ?1 AND build_key = ?2",
                        key,
                    )?,
                    super::Settling::Behind => {
                        recounted += 1;
                        behind.insert(*destination);
                        exec(
                            tx,
                            "UPDATE chains SET pending = ?3, next_attempt_ms = ?4
                             WHERE destination_id = ?1 AND build_key = ?2",
                            params![destination, build_key, pending, now_ms],
                        )?
                    }
                    super::Settling::KeptUntil(at) => exec(
                        tx,
                        "UPDATE chains SET next_attempt_ms = ?3
                         WHERE destination_id = ?1 AND build_key = ?2",
                        params![destination, build_key, at],
                    )?,
                };
            }
            // The destination's count missed them too, or did not: counted from its
            // events, whichever it was (the write lock is this transaction's).
            for destination in &behind {
                exec(tx, RECOUNT_DESTINATION, params![destination])?;
            }
            Ok(Pruned {
                dead_letters: gone.len(),
                chains: settled.len(),
                recounted,
            })
        })
        .await
    }

    pub(super) async fn entries(&self, dead: bool) -> Result<Vec<Entry>> {
        self.read(move |db| {
            db.prepare(
                "SELECT e.seq, e.build_key, e.event, e.delivery_id, e.created_at, e.attempts,
                        e.last_error, d.shown
                 FROM events e JOIN destinations d ON d.id = e.destination_id
                 WHERE e.dead = ?1 ORDER BY e.seq",
            )?
            .query_map(params![dead as i64], |r| {
                Ok(Entry {
                    seq: r.get(0)?,
                    build_key: r.get(1)?,
                    event: stored_event(r, 2)?,
                    delivery_id: r.get(3)?,
                    created_at: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                    destination: r.get(7)?,
                })
            })?
            .collect()
        })
        .await
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Up to `limit` rows after `after` (of `target` only, if given), as stored.
    pub(super) async fn sealed_rows(
        &self,
        target: Option<String>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<SealedRow>> {
        self.run(move |db| {
            db.prepare_cached(
                "SELECT e.seq, d.target, e.build_key, e.event, e.config, e.documents
                 FROM events e JOIN destinations d ON d.id = e.destination_id
                 WHERE e.seq > ?1 AND (?2 IS NULL OR d.target = ?2)
                 ORDER BY e.seq LIMIT ?3",
            )?
            .query_map(params![after, target, limit], sealed_row)?
            .collect()
        })
        .await
    }

    /// Replaces the sealed values of rows still there; returns how many.
    pub(super) async fn replace_sealed(&self, rows: Vec<(i64, String, String)>) -> Result<usize> {
        self.durable(move |tx| {
            let mut n = 0;
            for (seq, config, documents) in &rows {
                n += exec(
                    tx,
                    "UPDATE events SET config = ?2, documents = ?3 WHERE seq = ?1",
                    params![seq, config, documents],
                )?;
            }
            Ok(n)
        })
        .await
    }

    /// Replaces the key check (a rotation seals it under the new key).
    pub(super) async fn replace_key_check(&self, sealed: String) -> Result<()> {
        self.durable(move |tx| {
            exec(tx, "DELETE FROM key_check", [])?;
            exec(
                tx,
                "INSERT INTO key_check (sealed) VALUES (?1)",
                params![sealed],
            )?;
            Ok(())
        })
        .await
    }
}

/// Writes one event under its destination and chain, sealed for its row; returns
/// `(seq, destination id)`.
fn insert_one(
    tx: &Transaction<'_>,
    event: &NewEvent,
    created: i64,
    keys: &KeyRing,
) -> rusqlite::Result<(i64, i64)> {
    exec(
        tx,
        "INSERT INTO destinations (target, shown) VALUES (?1, ?2)
         ON CONFLICT (target) DO NOTHING",
        params![event.destination, event.shown],
    )?;
    let destination: i64 = tx.query_row(
        "SELECT id FROM destinations WHERE target = ?1",
        params![event.destination],
        |r| r.get(0),
    )?;
    // The sequence number is known before the row is written: the seal is bound to it.
    let seq: i64 = tx.query_row(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                    COALESCE((SELECT MAX(seq) FROM events), 0)) + 1",
        [],
        |r| r.get(0),
    )?;
    let (config, documents) = event.sealed(keys, seq).map_err(sealing)?;
    exec(
        tx,
        "INSERT INTO events (seq, destination_id, build_key, event, config, documents,
                             created_at, expires_at, budget_ms, retention_s)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            seq,
            destination,
            event.build_key,
            event.event,
            config,
            documents,
            created,
            created.saturating_add(event.dead_after_s),
            event.budget_ms,
            event.retention_s,
        ],
    )?;
    chain_gains_one(tx, destination, &event.build_key, now_ms())?;
    exec(
        tx,
        "UPDATE destinations SET pending = pending + 1 WHERE id = ?1",
        params![destination],
    )?;
    Ok((seq, destination))
}

/// Waits for another connection's lock (another courier, process or host on the file):
/// retries every 100 µs for the first 5 ms, then every millisecond, for 30 s in all.
/// SQLite's own `busy_timeout` sleeps 1, 2, 5, 10 … 100 ms between tries, so a claim
/// behind a commit of a millisecond waited up to tens of them.
fn busy(tries: i32) -> bool {
    const QUICK: i32 = 50;
    const PATIENT: i32 = 29_995;
    let pause = if tries < QUICK { 100 } else { 1_000 };
    std::thread::sleep(Duration::from_micros(pause));
    tries < QUICK + PATIENT
}

/// `execute` through the connection's statement cache: the courier runs the same few
/// statements for every event, and parsing them again each time cost more than running them.
fn exec(db: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    db.prepare_cached(sql)?.execute(params)
}

/// One more pending event in its chain (made if new); a chain that had none is due at
/// `now_ms`, one that had some keeps its schedule.
fn chain_gains_one(
    tx: &Transaction<'_>,
    destination: i64,
    build_key: &str,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    exec(
        tx,
        "INSERT INTO chains (destination_id, build_key, pending, next_attempt_ms)
         VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (destination_id, build_key) DO UPDATE SET
             pending = pending + 1,
             next_attempt_ms = CASE WHEN pending = 0 THEN excluded.next_attempt_ms
                                    ELSE next_attempt_ms END",
        params![destination, build_key, now_ms],
    )
}

/// A sealing failure (the system's randomness), as the database call's error.
fn sealing(error: super::KeyError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(error))
}

/// `Some(pending)` when adding `adding` events would take the outbox past `cap`.
fn over_cap(tx: &Transaction<'_>, cap: u64, adding: u64) -> rusqlite::Result<Option<u64>> {
    let pending: i64 = tx.query_row(
        "SELECT COALESCE(SUM(pending), 0) FROM destinations",
        [],
        |r| r.get(0),
    )?;
    let pending = pending.max(0) as u64;
    Ok((pending.saturating_add(adding) > cap).then_some(pending))
}

/// Refuses an outbox file that its group or others may read: it holds configurations,
/// credentials included. Refused rather than fixed, so that whoever made it so decides.
fn refuse_shared(path: &Path) -> std::result::Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "is readable by its group or others (mode {mode:o}) and holds credentials: \
                     chmod 600 {}",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// The file and its WAL and shared-memory files readable by their owner only (SQLite
/// creates the latter two with the process's umask).
fn owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// Brings a file from `version` to [`SCHEMA_VERSION`] inside the opening transaction;
/// the rows of an earlier release are sealed under `keys`.
fn migrate(tx: &Transaction<'_>, version: i64, keys: &KeyRing) -> rusqlite::Result<()> {
    let has_events: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
        [],
        |r| r.get(0),
    )?;
    if !has_events {
        tx.execute_batch(CREATE)?;
    } else if version < 3 {
        to_v3(tx, version)?;
    }
    tx.execute_batch(V4)?;
    seal_plaintext(tx, keys)
}

/// Seals the configuration and documents of every row still in plaintext (written by a
/// release before version 4), leaving out what delivery never reads.
fn seal_plaintext(tx: &Transaction<'_>, keys: &KeyRing) -> rusqlite::Result<()> {
    let rows: Vec<SealedRow> = tx
        .prepare(
            "SELECT e.seq, d.target, e.build_key, e.event, e.config, e.documents
             FROM events e JOIN destinations d ON d.id = e.destination_id
             WHERE e.config NOT LIKE 'sealed1:%' ORDER BY e.seq",
        )?
        .query_map([], sealed_row)?
        .collect::<rusqlite::Result<_>>()?;
    for row in rows {
        let config = super::for_delivery(&row.config);
        let (config, documents) =
            seal::seal_row(keys, row.id(), &config, &row.documents).map_err(sealing)?;
        exec(
            tx,
            "UPDATE events SET config = ?2, documents = ?3 WHERE seq = ?1",
            params![row.seq, config, documents],
        )?;
    }
    Ok(())
}

fn sealed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SealedRow> {
    Ok(SealedRow {
        seq: r.get(0)?,
        target: r.get(1)?,
        build_key: r.get(2)?,
        event: r.get(3)?,
        config: r.get(4)?,
        documents: r.get(5)?,
    })
}

/// Versions 1 and 2 to version 3.
fn to_v3(tx: &Transaction<'_>, version: i64) -> rusqlite::Result<()> {
    if version < 2 {
        tx.execute_batch(V1_TO_V2)?;
    }
    tx.execute_batch(V2_TO_V3)?;
    tx.execute_batch(CREATE)?;
    let old: Vec<(i64, String)> = tx
        .prepare("SELECT seq, config FROM events_v2 ORDER BY seq")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (seq, config) in old {
        let target = super::destination_of(&server_url(&config));
        exec(
            tx,
            "INSERT INTO destinations (target, shown) VALUES (?1, ?2)
             ON CONFLICT (target) DO NOTHING",
            params![target, status_push::secret::redact_url(&target)],
        )?;
        exec(
            tx,
            "INSERT INTO events (seq, destination_id, build_key, event, config, documents,
                                 created_at, expires_at, budget_ms, delivery_id, attempts,
                                 dead, prune_at, last_error)
             SELECT e.seq, d.id, e.build_key, e.event, e.config, e.documents, e.created_at,
                    e.expires_at, e.budget_ms, e.delivery_id, e.attempts, e.dead,
                    CASE WHEN e.dead THEN e.created_at + 2592000 END, e.last_error
             FROM events_v2 e, destinations d WHERE e.seq = ?1 AND d.target = ?2",
            params![seq, target],
        )?;
    }
    tx.execute_batch(V3_COUNTERS)?;
    Ok(())
}

/// The `serverUrl` of a stored configuration (empty if it has none).
fn server_url(config: &str) -> String {
    serde_json::from_str::<serde_json::Value>(config.trim_start_matches('\u{feff}'))
        .ok()
        .and_then(|c| c.get("serverUrl")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Takes `chain` under `token` until `until` and adds its head to `claimed`.
fn take(
    tx: &Transaction<'_>,
    chain: &ChainKey,
    token: i64,
    until: i64,
    probe: bool,
    shown: String,
    claimed: &mut Vec<Claimed>,
) -> rusqlite::Result<()> {
    let now = now_s();
    let head = tx
        .prepare_cached(
            "SELECT seq, event, config, documents, expires_at <= ?3, created_at, budget_ms,
                    (SELECT target FROM destinations WHERE id = ?1)
             FROM events WHERE destination_id = ?1 AND build_key = ?2 AND dead = 0
             ORDER BY seq LIMIT 1",
        )?
        .query_row(params![chain.destination, chain.build_key, now], |r| {
            // A name this build does not know (a newer release's event): not an error
            // that would fail the whole claim, every destination's with it.
            let Ok(event) = stored_event(r, 1) else {
                return Ok(None);
            };
            Ok(Some(Row {
                seq: r.get(0)?,
                event,
                config: r.get(2)?,
                documents: r.get(3)?,
                expired: r.get(4)?,
                created_at: r.get(5)?,
                budget_ms: r.get(6)?,
                target: r.get(7)?,
            }))
        })
        .optional()?;
    let Some(head) = head else {
        // The counter ran ahead of the events (a hand-edited file): set it right, and its
        // destination's, which counted the same events (the write lock is this
        // transaction's).
        exec(
            tx,
            "UPDATE chains SET pending = 0 WHERE destination_id = ?1 AND build_key = ?2",
            params![chain.destination, chain.build_key],
        )?;
        exec(tx, RECOUNT_DESTINATION, params![chain.destination])?;
        return Ok(());
    };
    exec(
        tx,
        "UPDATE chains SET claim_token = ?3, next_attempt_ms = ?4
         WHERE destination_id = ?1 AND build_key = ?2",
        params![chain.destination, chain.build_key, token, until],
    )?;
    // An event this build does not know is left claimed for one lease, as on
    // PostgreSQL: a release that knows it may deliver it meanwhile, and this one comes
    // back to it after the lease.
    let Some(row) = head else {
        return Ok(());
    };
    claimed.push(Claimed {
        seq: row.seq,
        build_key: chain.build_key.clone(),
        event: row.event,
        created_at: row.created_at,
        destination: shown,
        probe,
        chain: chain.clone(),
        token,
        row,
    });
    Ok(())
}

fn shown(tx: &Transaction<'_>, destination: i64) -> rusqlite::Result<String> {
    tx.query_row(
        "SELECT shown FROM destinations WHERE id = ?1",
        params![destination],
        |r| r.get(0),
    )
}

/// The chain's failed calls if `token` still holds it.
fn held_calls(tx: &Transaction<'_>, chain: &ChainKey, token: i64) -> rusqlite::Result<Option<i64>> {
    tx.query_row(
        "SELECT calls FROM chains
         WHERE destination_id = ?1 AND build_key = ?2 AND claim_token = ?3",
        params![chain.destination, chain.build_key, token],
        |r| r.get(0),
    )
    .optional()
}

/// Records a failed call on its event.
fn record(tx: &Transaction<'_>, seq: i64, failure: &Failure) -> rusqlite::Result<bool> {
    let n = exec(
        tx,
        "UPDATE events SET attempts = attempts + ?2,
             delivery_id = CASE WHEN ?3 = '' THEN delivery_id ELSE ?3 END, last_error = ?4
         WHERE seq = ?1",
        params![seq, failure.attempts, failure.delivery_id, failure.reason],
    )?;
    Ok(n == 1)
}

/// A probe that told nothing of its destination: the next may go at once.
fn reopen(tx: &Transaction<'_>, destination: i64, now: i64) -> rusqlite::Result<()> {
    exec(
        tx,
        "UPDATE destinations SET open_until_ms = ?2 WHERE id = ?1 AND failures > 0",
        params![destination, now],
    )?;
    Ok(())
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

    /// A fixed key, for tests only.
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn keys() -> Arc<KeyRing> {
        Arc::new(KeyRing::parse(KEY).unwrap())
    }

    fn temp(name: &str) -> Temp {
        let dir =
            std::env::temp_dir().join(format!("status-push-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Temp(dir.join("outbox.sqlite"))
    }

    /// A test's outbox file, alone in its directory, which is removed when the test ends
    /// unless it fails (the file is then left to look at).
    struct Temp(PathBuf);

    impl std::ops::Deref for Temp {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for Temp {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            if let (false, Some(dir)) = (std::thread::panicking(), self.0.parent()) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    /// The layout of versions 1 and 2, for migration tests.
    const V1: &str = "
        CREATE TABLE events (
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
        CREATE INDEX events_pending ON events (dead, seq);
        CREATE INDEX events_build ON events (dead, build_key, seq);";

    /// Pruning finds settled chains through indexes, whatever the backlog: before them
    /// it scanned every chain and, for each settled one, every event; and only those due
    /// for a look: by key, it walked every chain kept for its dead letters at every pass.
    #[test]
    fn pruning_reads_only_through_indexes() {
        let path = temp("prune-plan");
        drop(Sqlite::open(&path, keys()).unwrap());
        let db = Connection::open(&path).unwrap();
        let plan: Vec<String> = db
            .prepare(&format!("EXPLAIN QUERY PLAN {SETTLED_CHAINS}"))
            .unwrap()
            .query_map([0, 1000], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // The chains are a range of `chains_settled_at`, in its order; each one's events
        // are looked up by key, in each partial index.
        let walked: Vec<&String> = plan
            .iter()
            .filter(|step| step.starts_with("SCAN") || step.contains("TEMP B-TREE"))
            .collect();
        assert!(walked.is_empty(), "{plan:?}");
        assert!(
            plan.iter().any(|step| step.starts_with("SEARCH c")
                && step.contains("INDEX chains_settled_at (next_attempt_ms<?)")),
            "{plan:?}"
        );
        for index in ["INDEX events_chain (", "INDEX events_dead_chain ("] {
            let found = plan
                .iter()
                .any(|step| step.starts_with("SEARCH e") && step.contains(index));
            assert!(found, "{index}: {plan:?}");
        }
        // A destination counted again reads only its own pending events' index entries.
        let recount: Vec<String> = db
            .prepare(&format!("EXPLAIN QUERY PLAN {RECOUNT_DESTINATION}"))
            .unwrap()
            .query_map([1], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            recount.iter().any(|step| step.starts_with("SEARCH events")
                && step.contains("COVERING INDEX events_chain (destination_id=?)")),
            "{recount:?}"
        );
        assert!(
            !recount.iter().any(|s| s.starts_with("SCAN")),
            "{recount:?}"
        );
    }

    #[test]
    fn an_outbox_of_an_earlier_layout_is_migrated_with_its_events() {
        for (version, extra) in [(0, ""), (2, V1_TO_V2)] {
            let path = temp(&format!("v{version}"));
            {
                let db = Connection::open(&path).unwrap();
                db.execute_batch(V1).unwrap();
                db.execute_batch(extra).unwrap();
                db.execute_batch(&format!("PRAGMA user_version = {version}"))
                    .unwrap();
                for (key, url, dead) in [
                    ("m|1", "https://a.example/ci?token=s3cret", 0),
                    ("m|1", "https://a.example/ci?token=s3cret", 0),
                    ("m|2", "https://b.example/", 1),
                ] {
                    db.execute(
                        "INSERT INTO events (build_key, event, config, documents, created_at,
                                             expires_at, dead)
                         VALUES (?1, 'started', json_object('serverUrl', ?2), '{}', 1, 2, ?3)",
                        params![key, url, dead],
                    )
                    .unwrap();
                }
            }
            owner_only(&path);
            let sqlite = Sqlite::open(&path, keys()).unwrap();
            let db = lock(&sqlite.db);
            let v: i64 = db
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
            let destinations: Vec<(String, i64, i64)> = db
                .prepare("SELECT shown, pending, dead FROM destinations ORDER BY target")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(
                destinations,
                [
                    ("https://a.example:443".to_string(), 2, 0),
                    ("https://b.example:443".to_string(), 0, 1),
                ]
            );
            let chain: i64 = db
                .query_row(
                    "SELECT pending FROM chains WHERE build_key = 'm|1'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(chain, 2);
            drop(db);
            drop(sqlite);
            // Opening again changes nothing.
            Sqlite::open(&path, keys()).unwrap();
        }
    }

    #[test]
    fn an_outbox_others_may_read_or_a_damaged_one_is_refused_with_one_line() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp("hygiene");
        drop(Sqlite::open(&path, keys()).unwrap());
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            if let Ok(meta) = std::fs::metadata(&file) {
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{suffix}");
            }
        }
        let db = Connection::open(&path).unwrap();
        let secure: i64 = Sqlite::open(&path, keys())
            .map(|s| {
                lock(&s.db)
                    .query_row("PRAGMA secure_delete", [], |r| r.get(0))
                    .unwrap()
            })
            .unwrap();
        assert_eq!(secure, 1);
        drop(db);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = Sqlite::open(&path, keys()).err().unwrap().to_string();
        assert!(
            refused.contains("mode 644") && refused.contains("chmod 600"),
            "{refused}"
        );
        let damaged = temp("damaged");
        std::fs::write(&damaged, vec![0x5a; 8192]).unwrap();
        std::fs::set_permissions(&damaged, std::fs::Permissions::from_mode(0o600)).unwrap();
        let refused = Sqlite::open(&damaged, keys()).err().unwrap().to_string();
        assert!(refused.contains("restore a backup"), "{refused}");
        assert_eq!(refused.lines().count(), 1, "{refused}");
    }

    #[test]
    fn a_newer_outbox_is_refused_and_left_as_it_was() {
        let path = temp("newer");
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
                .unwrap();
        }
        owner_only(&path);
        let error = Sqlite::open(&path, keys()).err().unwrap().to_string();
        assert!(
            error.contains("schema is version 99, newer than this status-push's 4"),
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

    #[test]
    fn an_outbox_of_version_3_is_sealed_on_its_first_open_with_a_key() {
        let path = temp("v3");
        let config = r#"{"serverUrl": "http://127.0.0.1:9/ci", "password": "pw-S3CRET",
                         "inboundToken": "in-S3CRET-0123456789"}"#;
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(CREATE).unwrap();
            db.execute_batch("PRAGMA user_version = 3").unwrap();
            db.execute(
                "INSERT INTO destinations (target, shown, pending) VALUES ('http://127.0.0.1:9', 'x', 1)",
                [],
            )
            .unwrap();
            db.execute(
                "INSERT INTO events (destination_id, build_key, event, config, documents,
                                     created_at, expires_at)
                 VALUES (1, 'm|1', 'started', ?1, '{\"build\": \"doc-S3CRET\"}', 1, 9999999999)",
                params![config],
            )
            .unwrap();
            db.execute(
                "INSERT INTO chains (destination_id, build_key, pending) VALUES (1, 'm|1', 1)",
                [],
            )
            .unwrap();
        }
        owner_only(&path);
        let sqlite = Sqlite::open(&path, keys()).unwrap();
        let (v, stored): (i64, String) = {
            let db = lock(&sqlite.db);
            let v = db
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            let stored = db
                .query_row("SELECT config || documents FROM events", [], |r| r.get(0))
                .unwrap();
            db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
            (v, stored)
        };
        assert_eq!(v, SCHEMA_VERSION);
        assert!(!stored.contains("S3CRET"), "{stored}");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let claimed = runtime
            .block_on(sqlite.claim(Claim {
                limit: 4,
                busy: Vec::new(),
                token: 7,
                only: None,
            }))
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let head = &claimed[0];
        let opened = seal::open_row(
            &keys(),
            seal::RowId {
                destination: &head.row.target,
                build_key: &head.build_key,
                seq: head.seq,
                event: head.event.as_str(),
            },
            &head.row.config,
            &head.row.documents,
        )
        .unwrap();
        let config: serde_json::Value = serde_json::from_str(opened.config.expose()).unwrap();
        assert_eq!(config["password"], "pw-S3CRET");
        assert!(config.get("inboundToken").is_none(), "{config}");
        assert_eq!(opened.documents.expose(), r#"{"build": "doc-S3CRET"}"#);
        drop(sqlite);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(
                    !bytes.windows(6).any(|w| w == b"S3CRET"),
                    "plaintext left in {suffix}"
                );
            }
        }
        // Another key is refused at open, before anything is read or written.
        let other =
            Arc::new(KeyRing::parse("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").unwrap());
        let refused = Sqlite::open(&path, other).err().unwrap().to_string();
        assert!(refused.contains("sealed with another key"), "{refused}");
    }

    /// While writes keep arriving (sixteen writers, staggered, so that one group mostly
    /// runs while the next is queued and the committer seldom lets go of the connection),
    /// a lease renewal goes in the next group (here about 30 ms), and the counts are read
    /// on a connection of their own, not whenever the committer next finds nothing
    /// queued (0.9–2.8 s for a renewal that waited for its connection).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renewal_or_a_count_is_answered_while_writes_keep_arriving() {
        let path = temp("renewal-under-load");
        let sqlite = Arc::new(Sqlite::open(&path, keys()).unwrap());
        let load = Duration::from_secs(3);
        let started = std::time::Instant::now();
        let mut writers = Vec::new();
        for _ in 0..16 {
            let sqlite = sqlite.clone();
            writers.push(tokio::spawn(async move {
                while started.elapsed() < load {
                    sqlite
                        .transaction(|_| {
                            std::thread::sleep(Duration::from_millis(2));
                            Ok(())
                        })
                        .await
                        .unwrap();
                }
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = std::time::Instant::now();
        let chain = ChainKey {
            destination: 1,
            build_key: "b|1".into(),
        };
        assert!(
            !sqlite.renew(&chain, 7, false).await.unwrap(),
            "no such claim"
        );
        let renewed = asked.elapsed();
        let asked = std::time::Instant::now();
        assert_eq!(sqlite.counts().await.unwrap().pending, 0);
        let counted = asked.elapsed();
        for writer in writers {
            writer.await.unwrap();
        }
        assert!(
            renewed < Duration::from_millis(500),
            "renewed after {renewed:?}"
        );
        assert!(
            counted < Duration::from_millis(500),
            "counted after {counted:?}"
        );
    }
}
