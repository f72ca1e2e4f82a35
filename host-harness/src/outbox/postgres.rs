//! The PostgreSQL backend: one database shared by any number of hosts (CLI `deliver`
//! workers, `serve`, Buildbot masters). Claims take chains with `FOR UPDATE SKIP LOCKED`,
//! so concurrent hosts skip each other's rows instead of waiting, and hold them by a
//! lease on the server's clock ([`schedule::LEASE`], renewed while a call runs) rather
//! than by a row lock held for the call: a call can take minutes, a lease needs no
//! connection kept open meanwhile, and a host that dies frees its chains within one
//! lease. Every session has server-side `statement_timeout` and `lock_timeout`, so a
//! statement that takes too long is cancelled on the server, not just abandoned.
//!
//! Tables are prefixed `status_push_` so the outbox can live in a database shared with
//! other software (Buildbot's own, say).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{
    AsyncMessage, Client, Connection, GenericClient, NoTls, Socket, Statement, Transaction,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::group_commit::lock;
use super::seal::{self, KeyRing, RowId};
use super::{
    schedule, ChainKey, Circuit, Claim, Claimed, Counts, Entry, Failure, NewEvent, OutboxError,
    Pruned, Redeliver, Redelivered, Row, SealedRow, SCHEMA_VERSION,
};
use crate::{Event, Secret};

mod delivered;
mod session;

use session::{Session, Tx};

/// The longest a statement may run on the server (`statement_timeout`), and a host
/// waits for one (or for a connection).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a statement waits for a row lock (`lock_timeout`).
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections a host keeps for transactions (queued events, failures, dead letters,
/// redelivery), each taken for one; claims, renewals and deliveries go on the two
/// [`Pipeline`]s instead.
const CONNECTIONS: usize = 4;

/// Sent in every transaction that makes events pending (at its commit): idle couriers
/// `LISTEN` and wake at once instead of polling.
const CHANNEL: &str = "status_push_events";
const NOTIFY: &str = "NOTIFY status_push_events";
/// A transaction whose commit is flushed before it returns: an event written, a dead
/// letter made pending again.
const DURABLE: &str = "SET LOCAL synchronous_commit = on";

/// The server's clock, in seconds and milliseconds: every host compares against one clock.
const NOW_S: &str = "floor(extract(epoch FROM clock_timestamp()))::bigint";
const NOW_MS: &str = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
/// The same clock at the statement's start: stable within it, so an index condition can
/// use it (`clock_timestamp()` is volatile, so a comparison with it is a filter on every
/// row the index yields).
const DUE_BY_MS: &str = "floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint";

/// The [`Pipeline`]'s statements keep the plan made when first run. Left to the default
/// (`auto`), the server planned the claim anew at every call once its statistics showed
/// one destination holding most chains (a backlog behind an open circuit): against that
/// skew a plan for the given destination looked cheaper than the one plan for any, so
/// each claim paid 170 µs of planning beside 150 µs of work, a million events pending
/// (`pg_stat_statements`). The statements are written to stay O(log n) in their one plan
/// (see [`TAKE_DUE`]), so a plan per call bought nothing.
const GENERIC_PLANS: &str = "SET plan_cache_mode = force_generic_plan";

/// The courier's statements, prepared once on the [`Pipeline`] connection (all but the
/// probe's reservation, which runs once per backoff step at most).
static DUE_DESTINATIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, failures, shown FROM status_push_destinations
         WHERE open_until_ms <= {NOW_MS} AND pending > 0 ORDER BY id"
    )
});
/// A failing destination's probe, reserved for one lease by the host whose update finds
/// it still due.
static RESERVE_PROBE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE status_push_destinations SET open_until_ms = {NOW_MS} + $2
         WHERE id = $1 AND open_until_ms <= {NOW_MS}"
    )
});
/// Ends an insert of `(destination_id, build_key, pending, next_attempt_ms)` rows into
/// `status_push_chains AS c`: a chain's new events are added to its count, and it is due
/// now if it had none, or stays as it was (in backoff, or claimed).
const ADD_TO_CHAIN: &str = "ON CONFLICT (destination_id, build_key) DO UPDATE SET
    pending = c.pending + EXCLUDED.pending,
    next_attempt_ms = CASE WHEN c.pending = 0 THEN EXCLUDED.next_attempt_ms
                           ELSE c.next_attempt_ms END";
/// One more pending event in chain `($1, $2)` ([`ADD_TO_CHAIN`]).
static ONE_MORE_PENDING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO status_push_chains AS c (destination_id, build_key, pending, next_attempt_ms)
         VALUES ($1, $2, 1, {NOW_MS}) {ADD_TO_CHAIN}"
    )
});
/// A probe that told nothing of destination `$1`: the next may go at once.
static REOPEN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE status_push_destinations SET open_until_ms = {NOW_MS}
         WHERE id = $1 AND failures > 0"
    )
});
/// A running probe's reservation of destination `$1` renewed for `$2` ms.
static RENEW_PROBE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE status_push_destinations SET open_until_ms = GREATEST(open_until_ms, {NOW_MS} + $2)
         WHERE id = $1 AND failures > 0"
    )
});
/// Up to `$2` due chains of destination `$1` taken under token `$3` for `$4` ms, with
/// their heads: a round trip per destination, not per chain. It must stay O(log n) in
/// its one plan, made for any `$1` and `$2` ([`GENERIC_PLANS`]): the due chains are
/// compared with [`DUE_BY_MS`], which an index can use, and the taken chains are updated
/// by the row address of the locked ones (`ctid`, stable while this statement holds their
/// lock), so no estimate can turn the update into a scan. Joined on the chain's key, the
/// server once hashed every chain (480 ms a claim beside a million-chain backlog) and
/// once walked every chain of the live destination (5–14 ms), against 0.4–0.6 ms.
static TAKE_DUE: LazyLock<String> = LazyLock::new(|| take_due_sql(""));
/// [`TAKE_DUE`] for a destination whose circuit is closed, nothing otherwise: sent
/// alongside [`DUE_DESTINATIONS`] for the destination the last claim found due alone, so
/// that a courier with one live destination claims in one round trip, not two.
static TAKE_DUE_IF_CLOSED: LazyLock<String> = LazyLock::new(|| {
    take_due_sql(&format!(
        "AND EXISTS (SELECT 1 FROM status_push_destinations
                     WHERE id = $1 AND failures = 0 AND open_until_ms <= {NOW_MS})"
    ))
});

/// [`TAKE_DUE`]'s text, its chains also meeting `condition`.
fn take_due_sql(condition: &str) -> String {
    format!(
        "WITH taken AS (
             UPDATE status_push_chains c
             SET claim_token = $3, next_attempt_ms = {NOW_MS} + $4
             WHERE c.ctid = ANY(ARRAY(
                 SELECT ctid FROM status_push_chains
                 WHERE destination_id = $1 AND pending > 0 AND next_attempt_ms <= {DUE_BY_MS}
                     {condition}
                 ORDER BY next_attempt_ms LIMIT $2
                 FOR UPDATE SKIP LOCKED))
             RETURNING c.build_key, c.pending)
         SELECT t.build_key, e.seq, e.event, e.config, e.documents,
                e.expires_at <= {NOW_S}, e.created_at, e.budget_ms,
                (SELECT target FROM status_push_destinations WHERE id = $1), t.pending
         FROM taken t LEFT JOIN LATERAL (
             SELECT * FROM status_push_events h
             WHERE h.destination_id = $1 AND h.build_key = t.build_key AND NOT h.dead
             ORDER BY h.seq LIMIT 1) e ON true"
    )
}

/// Whether dead letter `e` (its chain `c`) is superseded: a later event of its chain
/// was delivered since, or is being delivered now (the chain's live claim holds a head
/// past it), so that sent now it would arrive after a later event.
static SUPERSEDED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "(COALESCE(c.delivered_seq, 0) > e.seq
          OR (c.claim_token IS NOT NULL AND c.next_attempt_ms > {NOW_MS}
              AND NOT EXISTS (SELECT 1 FROM status_push_events l
                              WHERE l.destination_id = e.destination_id
                                AND l.build_key = e.build_key AND NOT l.dead
                                AND l.seq < e.seq)))"
    )
});
/// A lease of chain `($1, $2)` renewed for `$4` ms if token `$3` still holds it.
static RENEW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE status_push_chains SET next_attempt_ms = {NOW_MS} + $4
         WHERE destination_id = $1 AND build_key = $2 AND claim_token = $3"
    )
});
/// Events `$3` of destination `$1` delivered, each in chain `$2[i]` under token `$4[i]`
/// (several at once: see [`delivered`]), in one statement: each event removed whoever
/// holds its chain now (it was delivered), the counters moved only by what was still
/// there, each chain freed only if this claim still holds it, the destination's circuit
/// closed. Like [`TAKE_DUE`] it stays O(log n) per event in its one plan: events by their
/// key, chains by theirs (`= ANY`, which the index takes), never a join an estimate could
/// turn into a scan. A chain or an event named twice (a lease lost, the head taken again
/// in this process and both calls ending together) is counted once.
static DELIVERED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH settled AS (
             SELECT * FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS s(build_key, seq, token)),
         removed AS (
             DELETE FROM status_push_events WHERE seq = ANY($3) AND NOT dead RETURNING seq),
         per_chain AS (
             SELECT s.build_key, count(DISTINCT r.seq) AS removed, max(s.seq) AS seq,
                    array_agg(s.token) AS tokens
             FROM settled s LEFT JOIN removed r ON r.seq = s.seq GROUP BY s.build_key),
         chain AS (
             UPDATE status_push_chains c SET
                 pending = c.pending - k.removed,
                 delivered_seq = GREATEST(c.delivered_seq, k.seq),
                 claim_token = CASE WHEN c.claim_token = ANY(k.tokens) THEN NULL
                                    ELSE c.claim_token END,
                 calls = CASE WHEN c.claim_token = ANY(k.tokens) THEN 0 ELSE c.calls END,
                 next_attempt_ms = CASE WHEN c.claim_token = ANY(k.tokens) THEN {NOW_MS}
                                        ELSE c.next_attempt_ms END
             FROM per_chain k
             WHERE c.destination_id = $1 AND c.build_key = ANY($2) AND c.build_key = k.build_key
             RETURNING 1)
         UPDATE status_push_destinations SET
             pending = pending - (SELECT count(*) FROM removed),
             failures = 0, open_until_ms = 0, last_error = NULL
         WHERE id = $1 AND (failures > 0 OR EXISTS (SELECT 1 FROM removed))
           AND EXISTS (SELECT 1 FROM chain)"
    )
});

/// Version 2's layout (version 1 is the SQLite-only layout, never created here); version
/// 3 is reached from it by [`V3_TABLES`], the events moved under their destination (in
/// Rust, by the function that names new events' destinations), then [`V3_FINISH`].
const V2: &[&str] = &["
    CREATE TABLE status_push_events (
        seq BIGSERIAL PRIMARY KEY,
        build_key TEXT NOT NULL,
        event TEXT NOT NULL,
        config TEXT NOT NULL,
        documents TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        delivery_id TEXT NOT NULL DEFAULT '',
        attempts BIGINT NOT NULL DEFAULT 0,
        dead BOOLEAN NOT NULL DEFAULT false,
        last_error TEXT,
        calls BIGINT NOT NULL DEFAULT 0,
        next_attempt_ms BIGINT NOT NULL DEFAULT 0,
        budget_ms BIGINT NOT NULL DEFAULT 0,
        claimed_by TEXT,
        claimed_until_ms BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX status_push_events_pending ON status_push_events (build_key, seq) WHERE NOT dead;
    CREATE INDEX status_push_events_order ON status_push_events (seq) WHERE NOT dead;
    CREATE INDEX status_push_events_dead ON status_push_events (seq) WHERE dead;
    CREATE TABLE status_push_seen_webhook_ids (
        id TEXT PRIMARY KEY,
        seen_at BIGINT NOT NULL
    );
    CREATE INDEX status_push_seen_webhook_ids_at ON status_push_seen_webhook_ids (seen_at);"];

/// Destinations (circuits, counters) and chains (claims, order).
const V3_TABLES: &str = "
    CREATE TABLE status_push_destinations (
        id BIGSERIAL PRIMARY KEY,
        target TEXT NOT NULL UNIQUE,
        shown TEXT NOT NULL,
        failures BIGINT NOT NULL DEFAULT 0,
        open_until_ms BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        pending BIGINT NOT NULL DEFAULT 0,
        dead BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE status_push_chains (
        destination_id BIGINT NOT NULL,
        build_key TEXT NOT NULL,
        pending BIGINT NOT NULL DEFAULT 0,
        next_attempt_ms BIGINT NOT NULL DEFAULT 0,
        calls BIGINT NOT NULL DEFAULT 0,
        claim_token BIGINT,
        delivered_seq BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (destination_id, build_key)
    );
    CREATE INDEX status_push_chains_due ON status_push_chains (destination_id, next_attempt_ms)
        WHERE pending > 0;
    ALTER TABLE status_push_events ADD COLUMN destination_id BIGINT, ADD COLUMN prune_at BIGINT,
        ADD COLUMN retention_s BIGINT NOT NULL DEFAULT 2592000;";

const V3_FINISH: &str = "
    UPDATE status_push_events SET prune_at = created_at + retention_s WHERE dead;
    ALTER TABLE status_push_events ALTER COLUMN destination_id SET NOT NULL,
        DROP COLUMN calls, DROP COLUMN next_attempt_ms, DROP COLUMN claimed_by,
        DROP COLUMN claimed_until_ms;
    DROP INDEX status_push_events_pending;
    DROP INDEX status_push_events_order;
    DROP INDEX status_push_events_dead;
    CREATE INDEX status_push_events_chain ON status_push_events (destination_id, build_key, seq)
        WHERE NOT dead;
    CREATE INDEX status_push_events_oldest ON status_push_events (created_at) WHERE NOT dead;
    CREATE INDEX status_push_events_dead ON status_push_events (prune_at) WHERE dead;
    INSERT INTO status_push_chains (destination_id, build_key, pending)
        SELECT destination_id, build_key, COUNT(*) FILTER (WHERE NOT dead)
        FROM status_push_events GROUP BY destination_id, build_key;
    UPDATE status_push_destinations d SET
        pending = (SELECT COUNT(*) FROM status_push_events e
                   WHERE e.destination_id = d.id AND NOT e.dead),
        dead = (SELECT COUNT(*) FROM status_push_events e
                WHERE e.destination_id = d.id AND e.dead);";

/// Version 4: the key check (one value sealed under the outbox key, opened at every open).
const V4: &str = "CREATE TABLE IF NOT EXISTS status_push_key_check (sealed TEXT NOT NULL);";

/// How events are stored. Their configuration and documents are sealed: random bytes in
/// base64, which no compression shrinks. Left to PostgreSQL's defaults, a row of a few
/// kilobytes (a build's documents) was compressed in vain and moved to the TOAST table:
/// a TOAST write when queued, a TOAST read at each claim and a TOAST delete when
/// delivered (29 MB of TOAST for 10,000 events of 2 KB). Rows now stay whole in their
/// page up to 8 KB (`toast_tuple_target`), and larger values go out of line without a
/// compression attempt (`EXTERNAL`). A storage setting, not a layout: older builds read
/// the table as before, so it needs no schema version; it is set once, by the first
/// host that finds it missing ([`STORAGE_SET`]), and applies to rows written from then
/// on.
const STORAGE: &str = "ALTER TABLE status_push_events SET (toast_tuple_target = 8160),
    ALTER COLUMN config SET STORAGE EXTERNAL, ALTER COLUMN documents SET STORAGE EXTERNAL";
/// The indexes pruning finds its rows by ([`Postgres::prune`]): settled chains (nothing
/// pending) by when to look at them next, and dead letters by chain. Without them each prune read every event (3.4 s,
/// 4 GB read, beside a backlog of a million; once a minute per host). Like [`STORAGE`],
/// not a layout: made once, by the first host that finds them missing
/// ([`PRUNE_INDEXES_SET`]).
/// `status_push_chains_settled`, the earlier index of settled chains by key, made pruning
/// walk every chain kept for its dead letters at every pass, so it goes.
const PRUNE_INDEXES: &str = "
    DROP INDEX IF EXISTS status_push_chains_settled;
    CREATE INDEX IF NOT EXISTS status_push_chains_settled_at
        ON status_push_chains (next_attempt_ms) WHERE pending = 0;
    CREATE INDEX IF NOT EXISTS status_push_events_dead_chain
        ON status_push_events (destination_id, build_key) WHERE dead";
/// Whether [`PRUNE_INDEXES`] are in place.
const PRUNE_INDEXES_SET: &str = "SELECT to_regclass('status_push_chains_settled_at') IS NOT NULL
    AND to_regclass('status_push_events_dead_chain') IS NOT NULL
    AND to_regclass('status_push_chains_settled') IS NULL";
/// Up to `$2` settled chains due for a look by `$1` (ms), locked; what is done with each
/// is [`super::Settling`]'s answer to [`LOOK_AT_CHAINS`]. A claim's token left on one is
/// not a holder: its lease (`next_attempt_ms`) has run out, and its holder's call with it.
const SETTLED_CHAINS: &str = "
    SELECT destination_id, build_key FROM status_push_chains
    WHERE pending = 0 AND next_attempt_ms <= $1
    ORDER BY next_attempt_ms LIMIT $2 FOR UPDATE SKIP LOCKED";
/// Chains `($1[i], $2[i])`, locked by [`SETTLED_CHAINS`], with their pending events, dead
/// letters and first dead letter's `prune_at`. A statement of its own: its snapshot,
/// taken under their locks, sees every event written to them (a writer locks the chain
/// before its event), which the locking statement's, taken before, may not; and while
/// the locks are held, no event is added to them.
const LOOK_AT_CHAINS: &str = "
    SELECT c.destination_id, c.build_key,
           (SELECT count(*) FROM status_push_events e WHERE NOT e.dead
            AND e.destination_id = c.destination_id AND e.build_key = c.build_key),
           (SELECT count(*) FROM status_push_events e WHERE e.dead
            AND e.destination_id = c.destination_id AND e.build_key = c.build_key),
           (SELECT min(e.prune_at) FROM status_push_events e WHERE e.dead
            AND e.destination_id = c.destination_id AND e.build_key = c.build_key)
    FROM status_push_chains c JOIN unnest($1::bigint[], $2::text[]) AS k(d, b)
      ON c.destination_id = k.d AND c.build_key = k.b";
/// Deletes the locked chains `($1[i], $2[i])` that [`LOOK_AT_CHAINS`] found empty.
const DELETE_CHAINS: &str = "
    DELETE FROM status_push_chains c USING unnest($1::bigint[], $2::text[]) AS k(d, b)
    WHERE c.destination_id = k.d AND c.build_key = k.b AND c.pending = 0";
/// Sets the locked chains `($1[i], $2[i])` to `$3[i]` pending, next looked at (or due)
/// at `$4[i]` ms.
const SET_CHAINS: &str = "
    UPDATE status_push_chains c SET pending = k.p, next_attempt_ms = k.n
    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS k(d, b, p, n)
    WHERE c.destination_id = k.d AND c.build_key = k.b AND c.pending = 0";
/// Destinations `$1` locked, but for those another transaction holds: those whose
/// counts [`RECOUNT_DESTINATIONS`] may set. Not waited for: a `redeliver` of several dead
/// letters holds a destination while it waits for the next letter's chain, which pruning
/// may hold, so waiting here could close a cycle.
const LOCK_DESTINATIONS: &str = "SELECT id FROM status_push_destinations
    WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED";
/// Destinations `$1`'s pending events counted again, from their events. A statement after
/// [`LOCK_DESTINATIONS`]: its snapshot, taken under their locks, sees every event whose
/// writer counted it (a writer's count and its event commit together, under the lock);
/// an event written but not yet counted is counted by its writer, after this commits.
const RECOUNT_DESTINATIONS: &str = "UPDATE status_push_destinations d
    SET pending = (SELECT count(*) FROM status_push_events e
                   WHERE NOT e.dead AND e.destination_id = d.id)
    WHERE d.id = ANY($1)";
/// Chains' keys as two arrays, for `unnest`.
#[derive(Default)]
struct Keys<'a> {
    destinations: Vec<i64>,
    build_keys: Vec<&'a str>,
}

impl<'a> Keys<'a> {
    fn push(&mut self, (destination, build_key): (i64, &'a str)) {
        self.destinations.push(destination);
        self.build_keys.push(build_key);
    }
}

/// Whether [`STORAGE`] is in place.
const STORAGE_SET: &str = "SELECT coalesce('toast_tuple_target=8160' = ANY(reloptions), false)
    FROM pg_class WHERE oid = 'status_push_events'::regclass";

/// The next sequence numbers of events, taken before their rows are written: each row's
/// seal is bound to its own.
const NEXT_SEQS: &str =
    "SELECT nextval(pg_get_serial_sequence('status_push_events', 'seq')) FROM generate_series(1, $1)";

/// A PostgreSQL connection URL (`postgresql://` or `postgres://`). Prints with its
/// password (in the authority or the query) redacted. `sslmode=require` connects over
/// TLS and verifies the server's certificate against `sslrootcert=PATH`'s certificates
/// alone if given (as libpq does), or else the system's roots (stricter than libpq's
/// `require` without a root file, which checks nothing); otherwise the connection is
/// plain.
#[derive(Clone)]
pub struct PostgresUrl {
    /// The URL as tokio-postgres reads it (without `sslrootcert`, which it does not know).
    url: Secret,
    shown: String,
    root_cert: Option<std::path::PathBuf>,
}

impl PostgresUrl {
    /// Whether `text` names a PostgreSQL outbox rather than a file.
    pub fn is_url(text: &str) -> bool {
        text.starts_with("postgresql://") || text.starts_with("postgres://")
    }

    /// Parses `url`; the error names what is wrong without repeating the password.
    pub fn parse(url: &str) -> Result<PostgresUrl> {
        let shown = status_push::secret::redact_url(url);
        let (url, root_cert) = take_root_cert(url);
        let config: tokio_postgres::Config =
            url.parse()
                .map_err(|error: tokio_postgres::Error| OutboxError::Postgres {
                    location: shown.clone(),
                    error,
                })?;
        if config.get_hosts().is_empty() {
            return Err(OutboxError::Location {
                location: shown,
                message: "no host: write postgresql://user@host:port/database".into(),
            });
        }
        Ok(PostgresUrl {
            url: Secret::new(url),
            shown,
            root_cert,
        })
    }

    /// The rustls configuration for `sslmode=require`; `None` for a plain connection.
    fn tls(&self) -> Result<Option<MakeRustlsConnect>> {
        if self.config().get_ssl_mode() != SslMode::Require {
            return Ok(None);
        }
        let unusable = |message: String| OutboxError::Location {
            location: self.shown.clone(),
            message,
        };
        if let Some(path) = &self.root_cert {
            crate::policy::check_ca_file(path)
                .map_err(|why| unusable(format!("sslrootcert: {why}")))?;
        }
        // As libpq does: a root certificate file is trusted alone.
        let policy = match &self.root_cert {
            Some(path) => crate::client::TlsPolicy::rooted_in(path.clone()),
            None => crate::client::TlsPolicy::verified(None),
        };
        let config = crate::client::Client::default()
            .tls_config(&policy)
            .map_err(|e| unusable(format!("sslrootcert: {e}")))?;
        Ok(Some(MakeRustlsConnect::new((*config).clone())))
    }

    fn config(&self) -> tokio_postgres::Config {
        let mut config: tokio_postgres::Config = self
            .url
            .expose()
            .parse()
            .expect("the URL parsed when the PostgresUrl was made");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // As libpq does: a password kept out of the URL (and so out of `ps`).
        if config.get_password().is_none() {
            if let Some(password) = std::env::var_os("PGPASSWORD") {
                config.password(password.as_encoded_bytes());
            }
        }
        config
            .application_name("status-push")
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        config
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

/// `url` without its `sslrootcert=PATH` parameter, and that path.
fn take_root_cert(url: &str) -> (String, Option<std::path::PathBuf>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut root_cert = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("sslrootcert", path)) => {
                root_cert = Some(std::path::PathBuf::from(path));
                false
            }
            _ => true,
        })
        .collect();
    if kept.is_empty() {
        (base.to_string(), root_cert)
    } else {
        (format!("{base}?{}", kept.join("&")), root_cert)
    }
}

/// An outbox database.
pub(super) struct Postgres {
    url: PostgresUrl,
    keys: std::sync::Arc<KeyRing>,
    /// Connections, each opened when first needed and again when the server closed it
    /// (a restart, a failover). One transaction at a time on each.
    slots: Vec<Mutex<Option<Session>>>,
    next: AtomicUsize,
    /// Two [`Pipeline`]s, each opened when first needed and again when the server closed
    /// it: [`Lane::Claims`] and [`Lane::Results`].
    pipelines: [Mutex<Option<Arc<Pipeline>>>; 2],
    /// The destination (id, as shown) the last claim found due alone with its circuit
    /// closed: the next claim takes its chains without waiting for the look.
    due_alone: std::sync::Mutex<Option<(i64, String)>>,
    /// Deliveries waiting to be recorded together.
    delivering: delivered::Delivering,
}

type Result<T> = std::result::Result<T, OutboxError>;
/// A chain taken by a claim: the chain, whether it probes, its destination as shown, its
/// head.
type Taken = (ChainKey, bool, String, Row);
type Connected<'a> = tokio::sync::MappedMutexGuard<'a, Session>;

/// Which [`Pipeline`] a statement goes on. A courier claims one batch at a time while up
/// to 16 results arrive; on one connection a claim would wait behind every result sent
/// before it (the server answers a pipeline in order), so claims have a lane of their own.
#[derive(Clone, Copy)]
enum Lane {
    Claims = 0,
    Results = 1,
}

/// A connection the courier's single statements share, with those statements prepared
/// on it. They need no transaction, so concurrent ones are pipelined on it (sent without
/// waiting for each other's answers) instead of each waiting for a connection of the
/// pool; prepared, each is one round trip and is parsed and planned once.
struct Pipeline {
    client: Client,
    due_destinations: Statement,
    take_due: Statement,
    take_due_if_closed: Statement,
    renew: Statement,
    delivered: Statement,
}

impl Postgres {
    /// Connects, then creates or migrates the schema (one host at a time: an advisory
    /// lock), or refuses a schema newer than this build's without touching anything.
    pub(super) async fn open(url: &PostgresUrl, keys: std::sync::Arc<KeyRing>) -> Result<Postgres> {
        let postgres = Postgres {
            url: url.clone(),
            keys,
            slots: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            pipelines: [Mutex::new(None), Mutex::new(None)],
            due_alone: std::sync::Mutex::new(None),
            delivering: delivered::Delivering::default(),
        };
        let mut client = postgres.connect().await?;
        match postgres
            .bounded(migrate(&mut client, &postgres.keys, &url.shown))
            .await?
            .map_err(|e| postgres.error(e))??
        {
            Schema::Current => {}
            Schema::Newer(found) => {
                return Err(OutboxError::NewerSchema {
                    location: url.shown.clone(),
                    found,
                })
            }
        }
        *postgres.slots[0].lock().await = Some(Session::new(client));
        Ok(postgres)
    }

    fn error(&self, error: tokio_postgres::Error) -> OutboxError {
        // The courier's statements are prepared once per pipeline; one the server refuses
        // as prepared (a column's type changed under it by another host's migration:
        // "cached plan must not change result type") would fail until the connection
        // closed. The pipelines are opened again instead, their statements prepared anew.
        if error.code() == Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED) {
            for pipeline in &self.pipelines {
                if let Ok(mut pipeline) = pipeline.try_lock() {
                    pipeline.take();
                }
            }
        }
        OutboxError::Postgres {
            location: self.url.shown.clone(),
            error,
        }
    }

    async fn bounded<T>(&self, work: impl std::future::Future<Output = T>) -> Result<T> {
        tokio::time::timeout(STATEMENT_TIMEOUT, work)
            .await
            .map_err(|_| OutboxError::Timeout {
                location: self.url.shown.clone(),
                after: STATEMENT_TIMEOUT,
            })
    }

    /// `work` bounded in time, its database error named after this outbox.
    async fn run<T>(
        &self,
        work: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        self.bounded(work).await?.map_err(|e| self.error(e))
    }

    async fn connect(&self) -> Result<Client> {
        let client = match self.url.tls()? {
            Some(tls) => self.connect_with(tls).await?,
            None => self.connect_with(NoTls).await?,
        };
        // Server-side bounds: a statement that runs too long is cancelled by the server,
        // not only abandoned by this host.
        // `synchronous_commit = off`: claims, renewals and results return before their
        // commit is flushed; a server crash may undo the last of them, which costs at most
        // an event delivered again under its delivery id. Events themselves are written
        // with `SET LOCAL synchronous_commit = on` (`DURABLE`). `jit = off`: every
        // statement here touches a few rows, and compiling one cost 17 ms (seen in a
        // claim whose estimate was high).
        let limits = format!(
            "SET statement_timeout = {}; SET lock_timeout = {}; SET synchronous_commit = off;
             SET jit = off;",
            STATEMENT_TIMEOUT.as_millis(),
            LOCK_TIMEOUT.as_millis()
        );
        self.run(client.batch_execute(&limits)).await?;
        Ok(client)
    }

    async fn connect_with<T>(&self, tls: T) -> Result<Client>
    where
        T: MakeTlsConnect<Socket>,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let (client, connection) = self.run(self.url.config().connect(tls)).await?;
        tokio::spawn(drive(connection, self.url.shown.clone()));
        Ok(client)
    }

    /// A connection of its own that `LISTEN`s for queued events: each notification is a
    /// message on the returned channel. Closed when the listener is dropped.
    pub(super) async fn listen(&self) -> Result<super::Listener> {
        match self.url.tls()? {
            Some(tls) => self.listen_with(tls).await,
            None => self.listen_with(NoTls).await,
        }
    }

    async fn listen_with<T>(&self, tls: T) -> Result<super::Listener>
    where
        T: MakeTlsConnect<Socket>,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let (client, mut connection) = self.run(self.url.config().connect(tls)).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let shown = self.url.shown.clone();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = futures::StreamExt::next(&mut messages).await {
                match message {
                    // A full channel already says "look": nothing is lost by dropping.
                    Ok(AsyncMessage::Notification(_)) => drop(sender.try_send(())),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("outbox {shown}: listener lost: {}", super::one_line(&e));
                        break;
                    }
                }
            }
        });
        self.run(client.batch_execute(&format!("LISTEN {CHANNEL}")))
            .await?;
        Ok(super::Listener::new(receiver, client))
    }

    /// A connection of this host's, free for a transaction.
    async fn conn(&self) -> Result<Connected<'_>> {
        let free = self.slots.iter().find_map(|slot| slot.try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
                self.bounded(self.slots[i].lock()).await?
            }
        };
        if slot.as_ref().is_none_or(|session| session.is_closed()) {
            *slot = Some(Session::new(self.connect().await?));
        }
        MutexGuard::try_map(slot, Option::as_mut)
            .map_err(|_| OutboxError::Stopped("no connection to the outbox database".into()))
    }

    /// The [`Pipeline`] of `lane`.
    async fn pipeline(&self, lane: Lane) -> Result<Arc<Pipeline>> {
        let mut pipeline = self.bounded(self.pipelines[lane as usize].lock()).await?;
        if let Some(open) = pipeline.as_ref().filter(|p| !p.client.is_closed()) {
            return Ok(open.clone());
        }
        let client = self.connect().await?;
        let prepared = self
            .run(async {
                client.batch_execute(GENERIC_PLANS).await?;
                Ok(Pipeline {
                    due_destinations: client.prepare(&DUE_DESTINATIONS).await?,
                    take_due: client.prepare(&TAKE_DUE).await?,
                    take_due_if_closed: client.prepare(&TAKE_DUE_IF_CLOSED).await?,
                    renew: client.prepare(&RENEW).await?,
                    delivered: client.prepare(&DELIVERED).await?,
                    client,
                })
            })
            .await?;
        let open = Arc::new(prepared);
        *pipeline = Some(open.clone());
        Ok(open)
    }

    pub(super) async fn insert(
        &self,
        event: NewEvent,
        webhook_id: Option<String>,
        replay_window_s: i64,
    ) -> Result<Option<(i64, i64)>> {
        let cap = event.max_pending;
        let mut conn = self.conn().await?;
        let stored = self
            .run(async {
                let tx = conn.transaction().await?;
                tx.batch_execute(DURABLE).await?;
                if let Some(pending) = over_cap(&tx, cap, 1).await? {
                    return Ok(Err(Refused::Full(pending)));
                }
                if let Some(id) = &webhook_id {
                    tx.execute(
                        &format!(
                            "DELETE FROM status_push_seen_webhook_ids WHERE seen_at < {NOW_S} - $1"
                        ),
                        &[&replay_window_s],
                    )
                    .await?;
                    let fresh = tx
                        .execute(
                            &format!(
                                "INSERT INTO status_push_seen_webhook_ids (id, seen_at)
                             VALUES ($1, {NOW_S}) ON CONFLICT (id) DO NOTHING"
                            ),
                            &[id],
                        )
                        .await?;
                    if fresh == 0 {
                        tx.rollback().await?;
                        return Ok(Ok(None));
                    }
                }
                // Looked up first: an insert that finds the row waits for whichever
                // writer holds it (its counter, below) and draws an id for nothing.
                let id = "SELECT id FROM status_push_destinations WHERE target = $1";
                let destination: i64 = match tx.query_opt(id, &[&event.destination]).await? {
                    Some(known) => known.get(0),
                    None => {
                        tx.execute(
                            "INSERT INTO status_push_destinations (target, shown) VALUES ($1, $2)
                             ON CONFLICT (target) DO NOTHING",
                            &[&event.destination, &event.shown],
                        )
                        .await?;
                        tx.query_one(id, &[&event.destination]).await?.get(0)
                    }
                };
                // The chain's row is locked before the event is numbered, so two writers of
                // one build commit in the order of their numbers: a claim never sees a later
                // event of a chain while an earlier one is still uncommitted.
                tx.execute(&ONE_MORE_PENDING, &[&destination, &event.build_key])
                    .await?;
                let seq: i64 = tx.query_one(NEXT_SEQS, &[&1i32]).await?.get(0);
                let (config, documents) = match event.sealed(&self.keys, seq) {
                    Ok(sealed) => sealed,
                    Err(e) => return Ok(Err(Refused::Key(e))),
                };
                tx.execute(
                    &format!(
                        "INSERT INTO status_push_events (seq, destination_id, build_key, event,
                             config, documents, created_at, expires_at, budget_ms, retention_s)
                         VALUES ($1, $2, $3, $4, $5, $6, {NOW_S}, {NOW_S} + $7, $8, $9)"
                    ),
                    &[
                        &seq,
                        &destination,
                        &event.build_key,
                        &event.event,
                        &config,
                        &documents,
                        &event.dead_after_s,
                        &event.budget_ms,
                        &event.retention_s,
                    ],
                )
                .await?;
                tx.execute(
                    "UPDATE status_push_destinations SET pending = pending + 1 WHERE id = $1",
                    &[&destination],
                )
                .await?;
                tx.batch_execute(NOTIFY).await?;
                tx.commit().await?;
                Ok(Ok(Some((seq, destination))))
            })
            .await?;
        stored.map_err(|refused| self.refused(refused, cap))
    }

    fn refused(&self, refused: Refused, cap: u64) -> OutboxError {
        match refused {
            Refused::Full(pending) => OutboxError::Full {
                location: self.url.shown.clone(),
                pending,
                cap,
            },
            Refused::Key(e) => e.into(),
        }
    }

    /// Many events in one transaction: each table written by one statement over arrays.
    pub(super) async fn insert_batch(&self, events: Vec<NewEvent>) -> Result<()> {
        let column = |f: fn(&NewEvent) -> String| events.iter().map(f).collect::<Vec<String>>();
        let targets = column(|e| e.destination.clone());
        let shown = column(|e| e.shown.clone());
        let keys = column(|e| e.build_key.clone());
        let names = column(|e| e.event.clone());
        let dead_after: Vec<i64> = events.iter().map(|e| e.dead_after_s).collect();
        let budgets: Vec<i64> = events.iter().map(|e| e.budget_ms).collect();
        let retention: Vec<i64> = events.iter().map(|e| e.retention_s).collect();
        let cap = events
            .iter()
            .map(|e| e.max_pending)
            .min()
            .unwrap_or(u64::MAX);
        let mut conn = self.conn().await?;
        let stored = self
            .run(async {
                let tx = conn.transaction().await?;
                tx.batch_execute(DURABLE).await?;
                if let Some(pending) = over_cap(&tx, cap, events.len() as u64).await? {
                    return Ok(Err(Refused::Full(pending)));
                }
                tx.execute(
                    "INSERT INTO status_push_destinations (target, shown)
                 SELECT DISTINCT * FROM UNNEST($1::text[], $2::text[])
                 ON CONFLICT (target) DO NOTHING",
                    &[&targets, &shown],
                )
                .await?;
                // Chains locked before their events are numbered (see `insert`), in one
                // order, so two batches sharing chains wait for each other, not deadlock.
                tx.execute(
                    &format!(
                        "INSERT INTO status_push_chains AS c
                         (destination_id, build_key, pending, next_attempt_ms)
                     SELECT d.id, u.k, count(*), {NOW_MS}
                     FROM UNNEST($1::text[], $2::text[]) AS u(t, k)
                     JOIN status_push_destinations d ON d.target = u.t
                     GROUP BY d.id, u.k ORDER BY d.id, u.k {ADD_TO_CHAIN}"
                    ),
                    &[&targets, &keys],
                )
                .await?;
                let seqs: Vec<i64> = tx
                    .query(NEXT_SEQS, &[&(events.len() as i32)])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut configs = Vec::with_capacity(events.len());
                let mut documents = Vec::with_capacity(events.len());
                for (event, &seq) in events.iter().zip(&seqs) {
                    let row = RowId {
                        destination: &event.destination,
                        build_key: &event.build_key,
                        seq,
                        event: &event.event,
                    };
                    match seal::seal_row(&self.keys, row, &event.config, &event.documents) {
                        Ok((config, docs)) => {
                            configs.push(config);
                            documents.push(docs);
                        }
                        Err(e) => return Ok(Err(Refused::Key(e))),
                    }
                }
                tx.execute(
                    &format!(
                        "INSERT INTO status_push_events (seq, destination_id, build_key, event,
                         config, documents, created_at, expires_at, budget_ms, retention_s)
                     SELECT u.s, d.id, u.k, u.e, u.c, u.docs, {NOW_S}, {NOW_S} + u.a, u.b, u.r
                     FROM UNNEST($9::bigint[], $1::text[], $2::text[], $3::text[], $4::text[],
                                 $5::text[], $6::bigint[], $7::bigint[], $8::bigint[])
                          WITH ORDINALITY AS u(s, t, k, e, c, docs, a, b, r, n)
                     JOIN status_push_destinations d ON d.target = u.t
                     ORDER BY u.n"
                    ),
                    &[
                        &targets,
                        &keys,
                        &names,
                        &configs,
                        &documents,
                        &dead_after,
                        &budgets,
                        &retention,
                        &seqs,
                    ],
                )
                .await?;
                tx.execute(
                    "UPDATE status_push_destinations d SET pending = d.pending + u.n
                 FROM (SELECT t, count(*) AS n FROM UNNEST($1::text[]) AS t GROUP BY t) u
                 WHERE d.target = u.t",
                    &[&targets],
                )
                .await?;
                tx.batch_execute(NOTIFY).await?;
                tx.commit().await?;
                Ok(Ok(()))
            })
            .await?;
        stored.map_err(|refused| self.refused(refused, cap))
    }

    pub(super) async fn claim(&self, claim: Claim) -> Result<Vec<Claimed>> {
        let lease = schedule::ms(schedule::LEASE);
        let taken = match &claim.only {
            Some(chain) => self.claim_chain(chain, claim.token, lease).await?,
            None => self.claim_due(&claim, lease).await?,
        };
        Ok(taken
            .into_iter()
            .map(|(chain, probe, destination, row)| Claimed {
                seq: row.seq,
                build_key: chain.build_key.clone(),
                event: row.event,
                created_at: row.created_at,
                destination,
                probe,
                chain,
                token: claim.token,
                row,
            })
            .collect())
    }

    /// The one chain asked for, if no one else holds it.
    async fn claim_chain(&self, chain: &ChainKey, token: i64, lease: i64) -> Result<Vec<Taken>> {
        let mut conn = self.conn().await?;
        self.run(async {
            let mut taken = Vec::new();
            let tx = conn.transaction().await?;
            let free = tx
                .query_opt(
                    &format!(
                        "SELECT 1 FROM status_push_chains
                         WHERE destination_id = $1 AND build_key = $2 AND pending > 0
                           AND (claim_token IS NULL OR next_attempt_ms <= {NOW_MS})
                         FOR UPDATE SKIP LOCKED"
                    ),
                    &[&chain.destination, &chain.build_key],
                )
                .await?;
            if free.is_some() {
                let shown: String = tx
                    .query_one(
                        "SELECT shown FROM status_push_destinations WHERE id = $1",
                        &[&chain.destination],
                    )
                    .await?
                    .get(0);
                if let Some(row) = take(&tx, chain, token, lease).await? {
                    taken.push((chain.clone(), false, shown, row));
                }
            }
            tx.commit().await?;
            Ok(taken)
        })
        .await
    }

    /// Due chains of closed (or probe-ready) destinations. Each statement is atomic on
    /// its own (the chains are taken by one `FOR UPDATE SKIP LOCKED` statement), so the
    /// claim needs no transaction and runs on the [`Pipeline`]. When the last claim found
    /// one destination due, and its circuit closed, its chains are taken in the same round
    /// trip as the look at which destinations are due ([`TAKE_DUE_IF_CLOSED`], pipelined);
    /// otherwise a claim takes a round trip per due destination after that look. A
    /// destination that comes due meanwhile is taken in the same claim if room is left,
    /// and takes its turn from the next claim on (the look shows it, so that claim sends
    /// nothing ahead). A host that dies between a probe's reservation and its take holds
    /// that destination's next probe back by one lease at most.
    async fn claim_due(&self, claim: &Claim, lease: i64) -> Result<Vec<Taken>> {
        let p = self.pipeline(Lane::Claims).await?;
        let alone = lock(&self.due_alone).clone();
        // Chains taken without a head, their counts ahead of their events.
        let mut ran_ahead = Vec::new();
        let taken = self
            .run(async {
                let mut taken = Vec::new();
                let look = p.client.query(&p.due_destinations, &[]);
                let want_ahead = alone
                    .as_ref()
                    .map_or(0, |(d, _)| claim.want(*d, claim.limit));
                let ahead = async {
                    match &alone {
                        Some((destination, _)) if want_ahead > 0 => {
                            let want = want_ahead as i64;
                            let statement = &p.take_due_if_closed;
                            let (client, token) = (&p.client, claim.token);
                            let out = &mut ran_ahead;
                            take_due(client, statement, *destination, want, token, lease, out).await
                        }
                        _ => Ok(Vec::new()),
                    }
                };
                // Polled together, both are sent before either answer is awaited.
                let (destinations, ahead) = futures::future::try_join(look, ahead).await?;
                let mut destinations: Vec<(i64, i64, String)> = destinations
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect();
                *lock(&self.due_alone) = match &destinations[..] {
                    [(id, 0, shown)] => Some((*id, shown.clone())),
                    _ => None,
                };
                if let Some((destination, shown)) = &alone {
                    for (build_key, row) in ahead {
                        let chain = ChainKey {
                            destination: *destination,
                            build_key,
                        };
                        taken.push((chain, false, shown.clone(), row));
                    }
                }
                schedule::take_turns(&mut destinations, super::now_ms());
                for (destination, failures, shown) in destinations {
                    let room = claim.limit.saturating_sub(taken.len());
                    if room == 0 {
                        break;
                    }
                    let probe = failures > 0;
                    // Already taken above, unless its circuit is now open and it probes.
                    if !probe && alone.as_ref().is_some_and(|(id, _)| *id == destination) {
                        continue;
                    }
                    if probe {
                        // Only one host probes: the one whose update finds it still due.
                        let mine = p
                            .client
                            .execute(&*RESERVE_PROBE, &[&destination, &lease])
                            .await?;
                        if mine == 0 {
                            continue;
                        }
                    }
                    let want = if probe {
                        1
                    } else {
                        claim.want(destination, room) as i64
                    };
                    if want == 0 {
                        continue;
                    }
                    let before = taken.len();
                    let heads = take_due(
                        &p.client,
                        &p.take_due,
                        destination,
                        want,
                        claim.token,
                        lease,
                        &mut ran_ahead,
                    );
                    for (build_key, row) in heads.await? {
                        let chain = ChainKey {
                            destination,
                            build_key,
                        };
                        taken.push((chain, probe, shown.clone(), row));
                    }
                    if probe && taken.len() == before {
                        p.client.execute(&*REOPEN, &[&destination]).await?;
                    }
                }
                Ok(taken)
            })
            .await?;
        self.set_right(claim.token, ran_ahead).await?;
        Ok(taken)
    }

    /// Chains a claim took under `token` and found no head for, their counts having run
    /// ahead of their events, set right with their destinations' counts (which counted
    /// the same events), each only at the count the claim saw: an event written since
    /// was counted by its writer and must not be counted out. Nothing here waits for a
    /// lock (a writer takes a chain, then its destination; `redeliver` the other way): a
    /// destination or chain another transaction holds is left as it is, the chain
    /// staying this claim's until its lease runs out, for a later claim to set right.
    async fn set_right(&self, token: i64, ahead: Vec<Ahead>) -> Result<()> {
        if ahead.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        self.run(async {
            let tx = conn.transaction().await?;
            let mut destinations: Vec<i64> = ahead.iter().map(|(d, ..)| *d).collect();
            destinations.sort_unstable();
            destinations.dedup();
            let locked = tx.query(LOCK_DESTINATIONS, &[&destinations]).await?;
            let locked: Vec<i64> = locked.iter().map(|r| r.get(0)).collect();
            let mut recount = Vec::new();
            for (destination, build_key, seen) in &ahead {
                if !locked.contains(destination) {
                    continue;
                }
                let held = tx
                    .query_opt(
                        "SELECT 1 FROM status_push_chains
                         WHERE destination_id = $1 AND build_key = $2
                           AND claim_token = $3 AND pending = $4
                         FOR UPDATE SKIP LOCKED",
                        &[destination, build_key, &token, seen],
                    )
                    .await?;
                if held.is_some() {
                    tx.execute(
                        "UPDATE status_push_chains SET pending = 0, claim_token = NULL
                         WHERE destination_id = $1 AND build_key = $2",
                        &[destination, build_key],
                    )
                    .await?;
                    recount.push(*destination);
                }
            }
            if !recount.is_empty() {
                recount.sort_unstable();
                recount.dedup();
                tx.execute(RECOUNT_DESTINATIONS, &[&recount]).await?;
            }
            tx.commit().await
        })
        .await
    }

    /// Renews the chain's lease if `token` still holds it; a probe's, its destination's
    /// reservation too, so that no second probe starts while a slow one runs.
    pub(super) async fn renew(&self, chain: &ChainKey, token: i64, probe: bool) -> Result<bool> {
        let p = self.pipeline(Lane::Results).await?;
        let lease = schedule::ms(schedule::LEASE);
        let n = self
            .run(p.client.execute(
                &p.renew,
                &[&chain.destination, &chain.build_key, &token, &lease],
            ))
            .await?;
        if n == 1 && probe {
            self.run(
                p.client
                    .execute(&*RENEW_PROBE, &[&chain.destination, &lease]),
            )
            .await?;
        }
        Ok(n == 1)
    }

    /// Removes a delivered event whoever holds its chain now (it was delivered), closes
    /// its destination's circuit, and frees the chain if this claim still holds it; with
    /// the other deliveries recorded meanwhile, in one statement ([`delivered`]).
    pub(super) async fn delivered(&self, chain: &ChainKey, token: i64, seq: i64) -> Result<()> {
        let p = self.pipeline(Lane::Results).await?;
        if self.delivering.record(&p, chain, token, seq).await {
            return Ok(());
        }
        // Its group failed (or was stopped): alone, so this call hears its own error.
        let one = delivered::Group::of(chain, token, seq);
        self.run(one.execute(&p)).await.map(drop)
    }

    pub(super) async fn retry(
        &self,
        chain: &ChainKey,
        token: i64,
        seq: i64,
        failure: &Failure,
        destination_failed: bool,
        probe: bool,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        self.run(async {
            let tx = conn.transaction().await?;
            let Some(calls) = held_calls(&tx, chain, token).await? else {
                return Ok(false);
            };
            if !record(&tx, seq, failure).await? {
                // Gone: delivered by the holder whose lease this claim outlasted. The
                // chain goes on at once, and nothing is counted.
                tx.execute(
                    &format!(
                        "UPDATE status_push_chains SET calls = 0, next_attempt_ms = {NOW_MS},
                             claim_token = NULL
                         WHERE destination_id = $1 AND build_key = $2"
                    ),
                    &[&chain.destination, &chain.build_key],
                )
                .await?;
                tx.commit().await?;
                return Ok(false);
            }
            // A failing destination is spaced by its circuit, and its chains are due again
            // the moment it closes; a failure of this host's own spaces this chain alone.
            let (calls, wait) = if destination_failed {
                (calls, 0)
            } else {
                (calls + 1, schedule::backoff_ms(calls + 1))
            };
            tx.execute(
                &format!(
                    "UPDATE status_push_chains SET calls = $3, next_attempt_ms = {NOW_MS} + $4,
                         claim_token = NULL
                     WHERE destination_id = $1 AND build_key = $2"
                ),
                &[&chain.destination, &chain.build_key, &calls, &wait],
            )
            .await?;
            if destination_failed {
                let row = tx
                    .query_one(
                        &format!(
                            "SELECT failures, open_until_ms <= {NOW_MS}
                             FROM status_push_destinations WHERE id = $1 FOR UPDATE"
                        ),
                        &[&chain.destination],
                    )
                    .await?;
                let (failures, closed): (i64, bool) = (row.get(0), row.get(1));
                // Calls in flight together fail together: one step of the circuit.
                if probe || closed {
                    tx.execute(
                        &format!(
                            "UPDATE status_push_destinations SET failures = $2,
                                 open_until_ms = {NOW_MS} + $3, last_error = $4
                             WHERE id = $1"
                        ),
                        &[
                            &chain.destination,
                            &(failures + 1),
                            &schedule::probe_backoff_ms(failures + 1),
                            &failure.reason,
                        ],
                    )
                    .await?;
                }
            } else if probe {
                tx.execute(&REOPEN, &[&chain.destination]).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn dead(
        &self,
        chain: &ChainKey,
        token: i64,
        seq: i64,
        failure: &Failure,
        reachable: bool,
        probe: bool,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        self.run(async {
            let tx = conn.transaction().await?;
            if held_calls(&tx, chain, token).await?.is_none() {
                return Ok(false);
            }
            let marked = tx
                .execute(
                    &format!(
                        "UPDATE status_push_events SET dead = true,
                             prune_at = {NOW_S} + retention_s
                         WHERE seq = $1 AND NOT dead"
                    ),
                    &[&seq],
                )
                .await?;
            // Gone: delivered by the holder whose lease this claim outlasted. Nothing to
            // count; the chain goes on.
            let removed = i64::from(marked == 1);
            tx.execute(
                &format!(
                    "UPDATE status_push_chains SET pending = pending - $3, calls = 0,
                         next_attempt_ms = {NOW_MS}, claim_token = NULL
                     WHERE destination_id = $1 AND build_key = $2"
                ),
                &[&chain.destination, &chain.build_key, &removed],
            )
            .await?;
            if removed == 0 {
                tx.commit().await?;
                return Ok(false);
            }
            record(&tx, seq, failure).await?;
            tx.execute(
                "UPDATE status_push_destinations SET pending = pending - 1, dead = dead + 1
                 WHERE id = $1",
                &[&chain.destination],
            )
            .await?;
            if reachable {
                tx.execute(
                    "UPDATE status_push_destinations SET failures = 0, open_until_ms = 0,
                         last_error = NULL
                     WHERE id = $1 AND failures > 0",
                    &[&chain.destination],
                )
                .await?;
            } else if probe {
                tx.execute(&REOPEN, &[&chain.destination]).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn release(&self, chain: &ChainKey, token: i64) -> Result<()> {
        let conn = self.conn().await?;
        self.run(conn.execute(
            &format!(
                "UPDATE status_push_chains SET claim_token = NULL, next_attempt_ms = {NOW_MS}
                 WHERE destination_id = $1 AND build_key = $2 AND claim_token = $3"
            ),
            &[&chain.destination, &chain.build_key, &token],
        ))
        .await
        .map(drop)
    }

    pub(super) async fn status(&self, seq: i64) -> Result<Option<(bool, Option<String>)>> {
        let conn = self.conn().await?;
        let row = self
            .run(conn.query_opt(
                "SELECT dead, last_error FROM status_push_events WHERE seq = $1",
                &[&seq],
            ))
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    pub(super) async fn redeliver(&self, which: Redeliver, force: bool) -> Result<Redelivered> {
        let mut conn = self.conn().await?;
        self.run(async {
            let tx = conn.transaction().await?;
            tx.batch_execute(DURABLE).await?;
            let select = format!(
                "SELECT e.seq, e.destination_id, e.build_key, {}
                          FROM status_push_events e LEFT JOIN status_push_chains c
                            ON c.destination_id = e.destination_id AND c.build_key = e.build_key
                          WHERE e.dead",
                *SUPERSEDED
            );
            let rows = match &which {
                Redeliver::All => tx.query(&format!("{select} ORDER BY e.seq"), &[]).await?,
                Redeliver::Seq(seq) => {
                    tx.query(&format!("{select} AND e.seq = $1 ORDER BY e.seq"), &[seq])
                        .await?
                }
                Redeliver::DeliveryId(id) => {
                    tx.query(
                        &format!("{select} AND e.delivery_id = $1 ORDER BY e.seq"),
                        &[id],
                    )
                    .await?
                }
            };
            let mut done = Redelivered::default();
            for row in rows {
                let (seq, destination, build_key, superseded): (i64, i64, String, bool) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                if superseded && !force {
                    done.superseded.push(seq);
                    continue;
                }
                let revived = tx
                    .execute(
                        &format!(
                            "UPDATE status_push_events SET dead = false, prune_at = NULL,
                                 last_error = NULL,
                                 expires_at = {NOW_S} + (expires_at - created_at)
                             WHERE seq = $1 AND dead"
                        ),
                        &[&seq],
                    )
                    .await?;
                if revived == 0 {
                    // Pruned, or revived by another `redeliver`, since the look.
                    continue;
                }
                tx.execute(&ONE_MORE_PENDING, &[&destination, &build_key])
                    .await?;
                tx.execute(
                    "UPDATE status_push_destinations SET pending = pending + 1, dead = dead - 1
                     WHERE id = $1",
                    &[&destination],
                )
                .await?;
                done.revived += 1;
            }
            if done.revived > 0 {
                tx.batch_execute(NOTIFY).await?;
            }
            tx.commit().await?;
            Ok(done)
        })
        .await
    }

    pub(super) async fn counts(&self) -> Result<Counts> {
        let conn = self.conn().await?;
        let row = self
            .run(conn.query_one(
                "SELECT COALESCE(SUM(pending), 0)::bigint, COALESCE(SUM(dead), 0)::bigint,
                        COUNT(*) FILTER (WHERE failures > 0),
                        (SELECT MIN(created_at) FROM status_push_events WHERE NOT dead)
                 FROM status_push_destinations",
                &[],
            ))
            .await?;
        Ok(Counts {
            pending: row.get::<_, i64>(0).max(0) as u64,
            dead: row.get::<_, i64>(1).max(0) as u64,
            open_circuits: row.get::<_, i64>(2).max(0) as u64,
            oldest_pending_at: row.get(3),
        })
    }

    #[cfg(feature = "bench")]
    pub(super) async fn checkpoint(&self) -> Result<()> {
        let conn = self.conn().await?;
        self.run(conn.batch_execute("CHECKPOINT")).await
    }

    pub(super) async fn circuits(&self) -> Result<Vec<Circuit>> {
        let conn = self.conn().await?;
        let rows = self
            .run(conn.query(
                "SELECT shown, failures, pending, last_error FROM status_push_destinations
                 WHERE failures > 0 ORDER BY failures DESC, id",
                &[],
            ))
            .await?;
        Ok(rows
            .iter()
            .map(|r| Circuit {
                destination: r.get(0),
                failures: r.get(1),
                pending: r.get::<_, i64>(2).max(0) as u64,
                last_error: r.get(3),
            })
            .collect())
    }

    /// Deletes up to `batch` dead letters whose retention ran out by `now_ms`, and looks at
    /// up to `batch` settled chains due for it ([`SETTLED_CHAINS`], [`super::Settling`]).
    pub(super) async fn prune(&self, now_ms: i64, batch: i64) -> Result<Pruned> {
        let mut conn = self.conn().await?;
        self.run(async {
            let tx = conn.transaction().await?;
            let gone = tx
                .query(
                    "DELETE FROM status_push_events WHERE seq IN (
                         SELECT seq FROM status_push_events WHERE dead AND prune_at < $1
                         ORDER BY prune_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                     RETURNING destination_id",
                    &[&(now_ms / 1000), &batch],
                )
                .await?;
            for row in &gone {
                let destination: i64 = row.get(0);
                tx.execute(
                    "UPDATE status_push_destinations SET dead = dead - 1 WHERE id = $1",
                    &[&destination],
                )
                .await?;
            }
            let locked = tx.query(SETTLED_CHAINS, &[&now_ms, &batch]).await?;
            let destinations: Vec<i64> = locked.iter().map(|r| r.get(0)).collect();
            let build_keys: Vec<&str> = locked.iter().map(|r| r.get(1)).collect();
            let looked = tx
                .query(LOOK_AT_CHAINS, &[&destinations, &build_keys])
                .await?;
            let settling: Vec<_> = looked
                .iter()
                .map(|row| super::Settling::of(row.get(2), row.get(3), row.get(4), now_ms))
                .collect();
            let mut behind: Vec<i64> = looked
                .iter()
                .zip(&settling)
                .filter(|(_, s)| **s == super::Settling::Behind)
                .map(|(row, _)| row.get(0))
                .collect();
            behind.sort_unstable();
            behind.dedup();
            // Their destinations are counted again too, under their locks; a chain whose
            // destination another transaction holds is left as it is, for a later pass.
            let mut recounting: Vec<i64> = Vec::new();
            if !behind.is_empty() {
                let locked = tx.query(LOCK_DESTINATIONS, &[&behind]).await?;
                recounting = locked.iter().map(|r| r.get(0)).collect();
            }
            let (mut empty, mut set) = (Keys::default(), Keys::default());
            let (mut pending, mut next) = (Vec::new(), Vec::new());
            let mut recounted = 0;
            for (row, settling) in looked.iter().zip(settling) {
                let key = (row.get::<_, i64>(0), row.get::<_, &str>(1));
                match settling {
                    super::Settling::Empty => empty.push(key),
                    super::Settling::Behind if !recounting.contains(&key.0) => {}
                    super::Settling::Behind => {
                        recounted += 1;
                        set.push(key);
                        pending.push(row.get::<_, i64>(2));
                        next.push(now_ms);
                    }
                    super::Settling::KeptUntil(at) => {
                        set.push(key);
                        pending.push(0);
                        next.push(at);
                    }
                }
            }
            tx.execute(DELETE_CHAINS, &[&empty.destinations, &empty.build_keys])
                .await?;
            tx.execute(
                SET_CHAINS,
                &[&set.destinations, &set.build_keys, &pending, &next],
            )
            .await?;
            if !recounting.is_empty() {
                tx.execute(RECOUNT_DESTINATIONS, &[&recounting]).await?;
            }
            tx.commit().await?;
            Ok(Pruned {
                dead_letters: gone.len(),
                chains: locked.len(),
                recounted,
            })
        })
        .await
    }

    pub(super) async fn entries(&self, dead: bool) -> Result<Vec<Entry>> {
        let conn = self.conn().await?;
        let rows = self
            .run(conn.query(
                "SELECT e.seq, e.build_key, e.event, e.delivery_id, e.created_at, e.attempts,
                        e.last_error, d.shown
                 FROM status_push_events e JOIN status_push_destinations d
                   ON d.id = e.destination_id
                 WHERE e.dead = $1 ORDER BY e.seq",
                &[&dead],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Entry {
                    seq: r.get(0),
                    build_key: r.get(1),
                    event: self.stored_event(r.get(2))?,
                    delivery_id: r.get(3),
                    created_at: r.get(4),
                    attempts: r.get(5),
                    last_error: r.get(6),
                    destination: r.get(7),
                })
            })
            .collect()
    }

    /// An event name as stored; another name is a corrupt row, not an event.
    fn stored_event(&self, name: &str) -> Result<Event> {
        name.parse()
            .map_err(|e: crate::UnknownEvent| OutboxError::Corrupt {
                location: self.url.shown.clone(),
                message: e.to_string(),
            })
    }

    pub(super) fn url(&self) -> &PostgresUrl {
        &self.url
    }

    /// Up to `limit` rows after `after` (of `target` only, if given), as stored.
    pub(super) async fn sealed_rows(
        &self,
        target: Option<String>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<SealedRow>> {
        let conn = self.conn().await?;
        let rows = self
            .run(conn.query(
                "SELECT e.seq, d.target, e.build_key, e.event, e.config, e.documents
                 FROM status_push_events e JOIN status_push_destinations d
                   ON d.id = e.destination_id
                 WHERE e.seq > $1 AND ($2::text IS NULL OR d.target = $2)
                 ORDER BY e.seq LIMIT $3",
                &[&after, &target, &limit],
            ))
            .await?;
        Ok(rows.iter().map(sealed_row).collect())
    }

    /// Replaces the sealed values of rows still there; returns how many.
    pub(super) async fn replace_sealed(&self, rows: Vec<(i64, String, String)>) -> Result<usize> {
        let mut conn = self.conn().await?;
        self.run(async {
            let tx = conn.transaction().await?;
            tx.batch_execute(DURABLE).await?;
            let mut n = 0;
            for (seq, config, documents) in &rows {
                n += tx
                    .execute(
                        "UPDATE status_push_events SET config = $2, documents = $3 WHERE seq = $1",
                        &[seq, config, documents],
                    )
                    .await?;
            }
            tx.commit().await?;
            Ok(n as usize)
        })
        .await
    }

    /// Replaces the key check (a rotation seals it under the new key).
    pub(super) async fn replace_key_check(&self, sealed: String) -> Result<()> {
        let mut conn = self.conn().await?;
        self.run(async {
            let tx = conn.transaction().await?;
            tx.execute("DELETE FROM status_push_key_check", &[]).await?;
            tx.execute(
                "INSERT INTO status_push_key_check (sealed) VALUES ($1)",
                &[&sealed],
            )
            .await?;
            tx.commit().await
        })
        .await
    }
}

/// Why an insert wrote nothing.
enum Refused {
    /// The outbox holds its cap: this many are pending.
    Full(u64),
    /// The event could not be sealed.
    Key(super::KeyError),
}

fn sealed_row(r: &tokio_postgres::Row) -> SealedRow {
    SealedRow {
        seq: r.get(0),
        target: r.get(1),
        build_key: r.get(2),
        event: r.get(3),
        config: r.get(4),
        documents: r.get(5),
    }
}

/// A chain a claim took and found no head for, its count having run ahead of its events
/// (a hand-edited table): its destination, build key and the count the claim saw.
type Ahead = (i64, String, i64);

/// Takes up to `want` due chains of `destination` under `token` for one lease, with their
/// heads, in one statement: a round trip per destination, not per chain. Chains taken
/// without a head are added to `ahead`, for [`Postgres::set_right`].
async fn take_due(
    db: &impl GenericClient,
    statement: &Statement,
    destination: i64,
    want: i64,
    token: i64,
    lease: i64,
    ahead: &mut Vec<Ahead>,
) -> std::result::Result<Vec<(String, Row)>, tokio_postgres::Error> {
    let rows = db
        .query(statement, &[&destination, &want, &token, &lease])
        .await?;
    let mut taken = Vec::with_capacity(rows.len());
    for row in rows {
        let build_key: String = row.get(0);
        let head = row
            .get::<_, Option<&str>>(2)
            .and_then(|name| name.parse::<Event>().ok());
        match (row.get::<_, Option<i64>>(1), head) {
            (Some(seq), Some(event)) => taken.push((
                build_key,
                Row {
                    seq,
                    event,
                    config: row.get(3),
                    documents: row.get(4),
                    expired: row.get(5),
                    created_at: row.get(6),
                    budget_ms: row.get(7),
                    target: row.get(8),
                },
            )),
            // The counter ran ahead of the events: set right after the claim. A head that
            // names no event this build knows is left be.
            (None, _) => ahead.push((destination, build_key, row.get(9))),
            (Some(_), None) => {}
        }
    }
    Ok(taken)
}

/// Takes `chain` under `token` for one lease; its head, if it has one.
async fn take(
    tx: &Tx<'_>,
    chain: &ChainKey,
    token: i64,
    lease: i64,
) -> std::result::Result<Option<Row>, tokio_postgres::Error> {
    let head = tx
        .query_opt(
            &format!(
                "SELECT seq, event, config, documents, expires_at <= {NOW_S}, created_at,
                        budget_ms, (SELECT target FROM status_push_destinations WHERE id = $1)
                 FROM status_push_events
                 WHERE destination_id = $1 AND build_key = $2 AND NOT dead
                 ORDER BY seq LIMIT 1"
            ),
            &[&chain.destination, &chain.build_key],
        )
        .await?;
    let Some(head) = head else {
        // The counter ran ahead of the events (a hand-edited table): set right with its
        // destination's, unless another transaction holds that (see `set_right`; this
        // one holds the chain), then by a later claim.
        let destination = [chain.destination];
        if !tx
            .query(LOCK_DESTINATIONS, &[&&destination[..]])
            .await?
            .is_empty()
        {
            tx.execute(
                "UPDATE status_push_chains SET pending = 0
                 WHERE destination_id = $1 AND build_key = $2",
                &[&chain.destination, &chain.build_key],
            )
            .await?;
            tx.execute(RECOUNT_DESTINATIONS, &[&&destination[..]])
                .await?;
        }
        return Ok(None);
    };
    let Ok(event) = head.get::<_, &str>(1).parse::<Event>() else {
        // Not an event this build knows: left for `dead-letters`-style inspection.
        return Ok(None);
    };
    tx.execute(
        &format!(
            "UPDATE status_push_chains SET claim_token = $3, next_attempt_ms = {NOW_MS} + $4
             WHERE destination_id = $1 AND build_key = $2"
        ),
        &[&chain.destination, &chain.build_key, &token, &lease],
    )
    .await?;
    Ok(Some(Row {
        seq: head.get(0),
        event,
        config: head.get(2),
        documents: head.get(3),
        expired: head.get(4),
        created_at: head.get(5),
        budget_ms: head.get(6),
        target: head.get(7),
    }))
}

/// `Some(pending)` when adding `adding` events would take the outbox past `cap`.
async fn over_cap(
    tx: &Tx<'_>,
    cap: u64,
    adding: u64,
) -> std::result::Result<Option<u64>, tokio_postgres::Error> {
    let pending: i64 = tx
        .query_one(
            "SELECT COALESCE(SUM(pending), 0)::bigint FROM status_push_destinations",
            &[],
        )
        .await?
        .get(0);
    let pending = pending.max(0) as u64;
    Ok((pending.saturating_add(adding) > cap).then_some(pending))
}

/// The chain's failed calls if `token` still holds it (locking its row).
async fn held_calls(
    tx: &Tx<'_>,
    chain: &ChainKey,
    token: i64,
) -> std::result::Result<Option<i64>, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT calls FROM status_push_chains
             WHERE destination_id = $1 AND build_key = $2 AND claim_token = $3 FOR UPDATE",
            &[&chain.destination, &chain.build_key, &token],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Records a failed call on its event.
async fn record(
    tx: &Tx<'_>,
    seq: i64,
    failure: &Failure,
) -> std::result::Result<bool, tokio_postgres::Error> {
    tx.execute(
        "UPDATE status_push_events SET attempts = attempts + $2,
             delivery_id = CASE WHEN $3 = '' THEN delivery_id ELSE $3 END, last_error = $4
         WHERE seq = $1",
        &[
            &seq,
            &failure.attempts,
            &failure.delivery_id,
            &failure.reason,
        ],
    )
    .await
    .map(|n| n == 1)
}

/// Runs a connection until it closes (the client is dropped, or the server goes away).
async fn drive<S, T>(connection: Connection<S, T>, shown: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::warn!("outbox {shown}: connection lost: {}", super::one_line(&e));
    }
}

/// What [`migrate`] found.
#[derive(Debug)]
enum Schema {
    /// At [`SCHEMA_VERSION`] (now).
    Current,
    /// Newer than this build knows: nothing was changed.
    Newer(i64),
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction under an advisory lock, so
/// hosts starting together migrate once; a newer schema is refused before any write.
async fn migrate(
    client: &mut Client,
    keys: &KeyRing,
    location: &str,
) -> std::result::Result<Result<Schema>, tokio_postgres::Error> {
    let mut tx = client.transaction().await?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtext('status_push_schema'));
         CREATE TABLE IF NOT EXISTS status_push_schema (version INTEGER NOT NULL);",
    )
    .await?;
    let found: Option<i32> = tx
        .query_one("SELECT MAX(version) FROM status_push_schema", &[])
        .await?
        .get(0);
    // A fresh database starts where SQLite's first layout did: version 1.
    let found = i64::from(found.unwrap_or(1));
    if found > SCHEMA_VERSION {
        tx.rollback().await?;
        return Ok(Ok(Schema::Newer(found)));
    }
    if found < 2 {
        for step in V2 {
            tx.batch_execute(step).await?;
        }
    }
    if found < 3 {
        tx.batch_execute(V3_TABLES).await?;
        for row in tx
            .query("SELECT seq, config FROM status_push_events", &[])
            .await?
        {
            let (seq, config): (i64, String) = (row.get(0), row.get(1));
            let url = serde_json::from_str::<serde_json::Value>(&config)
                .ok()
                .and_then(|c| c.get("serverUrl")?.as_str().map(str::to_string))
                .unwrap_or_default();
            let target = super::destination_of(&url);
            tx.execute(
                "INSERT INTO status_push_destinations (target, shown) VALUES ($1, $2)
                 ON CONFLICT (target) DO NOTHING",
                &[&target, &status_push::secret::redact_url(&target)],
            )
            .await?;
            tx.execute(
                "UPDATE status_push_events SET destination_id = d.id
                 FROM status_push_destinations d WHERE seq = $1 AND d.target = $2",
                &[&seq, &target],
            )
            .await?;
        }
        tx.batch_execute(V3_FINISH).await?;
    }
    if found < 4 {
        tx.batch_execute(V4).await?;
        if let Err(e) = seal_plaintext(&tx, keys).await? {
            tx.rollback().await?;
            return Ok(Err(e.into()));
        }
    }
    set_once(&mut tx, STORAGE_SET, STORAGE).await?;
    set_once(&mut tx, PRUNE_INDEXES_SET, PRUNE_INDEXES).await?;
    let check: Option<String> = tx
        .query_opt("SELECT sealed FROM status_push_key_check LIMIT 1", &[])
        .await?
        .map(|r| r.get(0));
    match super::check_key(keys, check.as_deref(), location) {
        Ok(None) => {}
        Ok(Some(sealed)) => {
            tx.execute(
                "INSERT INTO status_push_key_check (sealed) VALUES ($1)",
                &[&sealed],
            )
            .await?;
        }
        Err(e) => {
            tx.rollback().await?;
            return Ok(Err(e));
        }
    }
    if found < SCHEMA_VERSION {
        tx.execute("DELETE FROM status_push_schema", &[]).await?;
        tx.execute(
            "INSERT INTO status_push_schema (version) VALUES ($1)",
            &[&(SCHEMA_VERSION as i32)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Ok(Schema::Current))
}

/// Applies `statements` (a storage setting, indexes: what is not a layout) unless
/// `check` says they are in place. They need the tables to themselves for a moment:
/// behind other hosts' work for more than a second, they are left to the next host that
/// opens the outbox rather than holding those hosts' statements behind them.
async fn set_once(
    tx: &mut Transaction<'_>,
    check: &str,
    statements: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    let set: bool = tx.query_one(check, &[]).await?.get(0);
    if set {
        return Ok(());
    }
    let savepoint = tx.savepoint("set_once").await?;
    let applied = savepoint
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = 1000; {statements}; SET LOCAL lock_timeout = {}",
            LOCK_TIMEOUT.as_millis()
        ))
        .await;
    match applied {
        Ok(()) => savepoint.commit().await,
        Err(_) => savepoint.rollback().await,
    }
}

/// Seals the configuration and documents of every row still in plaintext (written by a
/// release before version 4), leaving out what delivery never reads.
async fn seal_plaintext(
    tx: &Transaction<'_>,
    keys: &KeyRing,
) -> std::result::Result<std::result::Result<(), super::KeyError>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT e.seq, d.target, e.build_key, e.event, e.config, e.documents
             FROM status_push_events e JOIN status_push_destinations d
               ON d.id = e.destination_id
             WHERE e.config NOT LIKE 'sealed1:%' ORDER BY e.seq",
            &[],
        )
        .await?;
    for row in rows.iter().map(sealed_row) {
        let config = super::for_delivery(&row.config);
        let (config, documents) = match seal::seal_row(keys, row.id(), &config, &row.documents) {
            Ok(sealed) => sealed,
            Err(e) => return Ok(Err(e)),
        };
        tx.execute(
            "UPDATE status_push_events SET config = $2, documents = $3 WHERE seq = $1",
            &[&row.seq, &config, &documents],
        )
        .await?;
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_their_password() {
        for (url, shown) in [
            (
                "postgresql://ci:s3cret@db.example:5433/status?sslmode=disable",
                "postgresql://ci:<redacted>@db.example:5433/status?sslmode=disable",
            ),
            (
                "postgres://ci@db.example/status?password=s3cret&connect_timeout=5",
                "postgres://ci@db.example/status?password=<redacted>&connect_timeout=5",
            ),
            ("postgresql://db.example", "postgresql://db.example"),
        ] {
            let parsed = PostgresUrl::parse(url).unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert!(!format!("{parsed:?}").contains("s3cret"));
        }
    }

    #[test]
    fn sslrootcert_is_ours_and_the_rest_goes_to_tokio_postgres() {
        let parsed =
            PostgresUrl::parse("postgresql://ci@db/x?sslmode=require&sslrootcert=/etc/ca.pem")
                .unwrap();
        assert_eq!(parsed.root_cert.as_deref(), Some("/etc/ca.pem".as_ref()));
        assert_eq!(parsed.url.expose(), "postgresql://ci@db/x?sslmode=require");
        assert_eq!(parsed.config().get_ssl_mode(), SslMode::Require);
        let plain = PostgresUrl::parse("postgresql://ci@db/x?sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(plain.url.expose(), "postgresql://ci@db/x");
        assert!(
            plain.tls().unwrap().is_none(),
            "TLS only with sslmode=require"
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_its_password() {
        let error = PostgresUrl::parse("postgresql://ci:s3cret@db.example:notaport/x")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("invalid connection string"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let error = PostgresUrl::parse("postgresql:///status")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("no host"), "{error}");
    }
}
