//! A durable outbox: an event is written before its first attempt and removed only after
//! a 2xx, or kept as a dead letter after a permanent failure. One [`Courier`] delivers it;
//! `deliver`, `push --outbox`, `serve --outbox` and the Buildbot plugin all run that
//! courier, under the rules of [`schedule`].
//!
//! Its promises hold when reporters, destinations and hosts share it:
//! - **Order per destination and build.** The events of one build bound for one
//!   destination form a *chain*, delivered in the order they were written; a chain is
//!   claimed whole, so no event overtakes an earlier one. Chains of other builds and other
//!   destinations never wait for it.
//! - **A circuit per destination.** While a destination fails (refused, reset, timeout,
//!   5xx, 429), its chains wait together and one probe per backoff step decides whether
//!   it is back; the first success closes the circuit. Other destinations go on.
//! - **Fenced claims, short leases.** A claim is the database's own transaction (SQLite:
//!   `BEGIN IMMEDIATE`; PostgreSQL: `FOR UPDATE SKIP LOCKED`) and carries a token; a
//!   failure or a dead letter is recorded only under the current token, and a lease
//!   ([`schedule::LEASE`]) is renewed while its call runs, so a host that dies frees its
//!   chains within one lease. A delivery always removes its event: at least once.
//! - **O(log n) claims.** A claim walks the open destinations (few) and, through an index
//!   on `(destination, next attempt)`, only their due chains: a backlog behind a dead
//!   destination costs nothing.
//!
//! Two backends, chosen by [`Location`]: a SQLite file (`sqlite.rs`) or a PostgreSQL
//! database shared by hosts (`postgres.rs`).

mod checkpointer;
mod courier;
mod group_commit;
mod postgres;
mod reporters;
pub mod schedule;
pub mod seal;
mod sqlite;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use courier::{Courier, Observer, Report, Reported};
pub use postgres::PostgresUrl;
pub use seal::{KeyError, KeyRing, Unsealed, KEY_FILE_ENV};

use crate::{Event, HostError, Outcome, Runtime};

/// The schema version this build writes; an older outbox is migrated when opened, a
/// newer one refused ([`OutboxError::NewerSchema`]). 1: SQLite only; 2: per-event
/// backoff, PostgreSQL; 3: destinations (circuits) and chains (claims, order); 4: rows
/// sealed under the outbox key ([`seal`]), and the key check.
pub const SCHEMA_VERSION: i64 = 4;

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
    /// The outbox holds its `maxPendingEvents`: the event was not queued (nor dropped:
    /// the caller still has it).
    #[error(
        "outbox {location}: {pending} events pending, at its maxPendingEvents of {cap}; this event was not queued"
    )]
    Full {
        /// The file or URL (password redacted).
        location: String,
        /// Events pending.
        pending: u64,
        /// The cap.
        cap: u64,
    },
    /// [`Outbox::redeliver`]: the named dead letter is superseded (see [`Redelivered`]);
    /// nothing was sent. `--force` sends it anyway.
    #[error(
        "dead letter {0} is superseded: a later event of its build was delivered to its destination since, or is being delivered now, so it would arrive out of order; nothing was sent (--force sends it anyway)"
    )]
    Superseded(i64),
    /// [`Outbox::redeliver`]: no dead letter has this sequence number or delivery id.
    #[error("no dead letter {0} in the outbox")]
    NoSuchDeadLetter(String),
    /// The outbox key could not be read, made or used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A PostgreSQL outbox was opened without a key: hosts sharing it must share one.
    #[error(
        "outbox {location}: a PostgreSQL outbox needs the outbox key its hosts share: make one with `status-push keygen PATH`, give every host that file (--outbox-key-file PATH or STATUS_PUSH_OUTBOX_KEY_FILE; the Buildbot plugin's outboxKey)"
    )]
    NoKey {
        /// The URL, its password redacted.
        location: String,
    },
    /// The key given does not open this outbox's rows: another outbox's key, or a
    /// rotation that dropped the key still in use. Nothing was read or written.
    #[error(
        "outbox {location}: sealed with another key than the one given (key id {sealing}); give the outbox's own key file (nothing was read or written)"
    )]
    WrongKey {
        /// The file or URL (password redacted).
        location: String,
        /// The id of the key given.
        sealing: String,
    },
}

impl OutboxError {
    /// Whether the same call may succeed later with nothing changed: the database is
    /// unreachable, restarting, busy or slow. A host keeps what it holds and tries again;
    /// anything else (a wrong password, a bad location, a newer schema, the wrong key)
    /// needs someone to change something.
    pub fn is_transient(&self) -> bool {
        match self {
            OutboxError::Timeout { .. } | OutboxError::Stopped(_) | OutboxError::Lock { .. } => {
                true
            }
            OutboxError::Postgres { error, .. } => match error.code() {
                // No SQLSTATE: the connection itself failed (refused, reset, closed).
                None => true,
                Some(code) => {
                    let code = code.code();
                    // 08: connection exception; 57P01-03: the server is shutting down,
                    // crashed, or cannot take connections yet; 40001/40P01: retry the
                    // transaction; 53: out of resources.
                    code.starts_with("08")
                        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
                        || code.starts_with("53")
                }
            },
            OutboxError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
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
    /// Where it goes: `serverUrl` as the component reads it. Events are ordered, and
    /// circuits kept, per destination.
    pub destination: &'a str,
    /// Which event.
    pub event: Event,
    /// The data-API documents, JSON.
    pub documents_json: &'a str,
    /// `buildbotURL|buildid`: events with the same key and destination go in order.
    pub build_key: &'a str,
    /// Age after which it becomes a dead letter.
    pub dead_after: Duration,
    /// How long it is kept once dead (`deadLetterRetentionDays`).
    pub retention: Duration,
    /// The most events the outbox may hold pending (`maxPendingEvents`).
    pub max_pending: u64,
    /// The longest one delivery call of it may take (the configuration's report budget).
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

/// What [`Outbox::redeliver`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Redelivered {
    /// Dead letters made pending again.
    pub revived: usize,
    /// Dead letters left dead because a later event of their build was delivered to
    /// their destination since, or is being delivered now: sent now, they would arrive
    /// after it (a finished build shown as running again). `force` sends them anyway.
    pub superseded: Vec<i64>,
}

/// One chain: the events of a build bound for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChainKey {
    destination: i64,
    build_key: String,
}

/// The head of a chain, claimed by [`Outbox::claim`] for one call; record the result
/// with [`Outbox::settle`], renew a long call with [`Outbox::renew`].
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Position in the outbox.
    pub seq: i64,
    /// `buildbotURL|buildid`.
    pub build_key: String,
    /// Which event.
    pub event: Event,
    /// When it was queued, UNIX seconds.
    pub created_at: i64,
    /// Its destination, as logs may show it.
    pub destination: String,
    /// Whether this call probes a destination whose circuit is open: one attempt.
    pub probe: bool,
    chain: ChainKey,
    token: i64,
    row: Row,
}

impl Claimed {
    /// The longest the call may take: the event's report budget (its configuration's
    /// retry deadline plus the host's margin).
    pub fn budget(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.row.budget_ms).unwrap_or(0))
    }

    /// Whether it is past its `deadLetterAfterSeconds`: settle it without a call.
    pub fn expired(&self) -> bool {
        self.row.expired
    }
}

/// What [`Outbox::settle`] did with a call's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Delivered or skipped: removed.
    Done,
    /// An environmental failure, or the destination is failing: still pending, after a
    /// backoff.
    Pending,
    /// A deterministic failure or an expired event: kept as a dead letter; the chain
    /// goes on with the next event.
    Dead,
    /// The claim's lease ran out and another holder has the chain: nothing recorded but
    /// a delivery.
    Lost,
}

/// What an outbox holds, for operators to alert on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Events waiting to be delivered.
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
    /// When the oldest pending event was queued, UNIX seconds.
    pub oldest_pending_at: Option<i64>,
    /// Destinations whose circuit is open (failing).
    pub open_circuits: u64,
}

/// What one batch of pruning did: dead letters past their retention deleted, settled
/// chains looked at (each leaves the look's range: see [`Settling`]), and of those, how
/// many were counted again.
#[derive(Debug, Clone, Copy)]
struct Pruned {
    dead_letters: usize,
    chains: usize,
    recounted: usize,
}

impl Pruned {
    /// Whether the batch was full, so that more may be left.
    fn full(&self, batch: i64) -> bool {
        let batch = usize::try_from(batch).unwrap_or(usize::MAX);
        self.dead_letters >= batch || self.chains >= batch
    }
}

/// What pruning does with a settled chain (nothing counted pending) that it looks at.
/// A settled chain is looked at once its `next_attempt_ms` has passed; each outcome takes
/// it out of that range, so a pass never looks at a chain twice, and a chain kept for
/// its dead letters is not looked at again until the first of them may go (walked at
/// every pass, a million such chains held SQLite's write lock for 0.9 s a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settling {
    /// No event left (its build delivered): deleted.
    Empty,
    /// Events pending that its count missed (only a hand edit or a bug puts a chain
    /// there): counted again and due now, rather than never claimed; its destination's
    /// count is counted again from its events with it.
    Behind,
    /// Only dead letters, kept for `redeliver` to tell whether one is superseded: looked
    /// at again at this time (ms), once the first of them may have gone.
    KeptUntil(i64),
}

impl Settling {
    /// The chain's `pending` events, `dead` letters and its first dead letter's
    /// `prune_at` (s), seen at `now_ms`.
    fn of(pending: i64, dead: i64, first_prune_at: Option<i64>, now_ms: i64) -> Settling {
        if pending > 0 {
            Settling::Behind
        } else if dead > 0 {
            // Pruned once `prune_at < now`, so a second later; never before the next pass.
            let at = first_prune_at.map_or(i64::MAX, |s| s.saturating_add(1).saturating_mul(1000));
            Settling::KeptUntil(at.max(now_ms.saturating_add(1)))
        } else {
            Settling::Empty
        }
    }
}

/// A destination whose circuit is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circuit {
    /// The destination, as logs may show it.
    pub destination: String,
    /// Failed calls in a row.
    pub failures: i64,
    /// Events waiting for it.
    pub pending: u64,
    /// Why the last call failed.
    pub last_error: Option<String>,
}

/// One queued event.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the outbox; delivery follows it within a chain.
    pub seq: i64,
    /// `buildbotURL` and buildid.
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
    /// Its destination, as logs may show it.
    pub destination: String,
}

/// What happened to the event a [`Outbox::push`] queued.
#[derive(Debug)]
pub enum PushResult {
    /// Delivered, or deliberately skipped by the filters.
    Done(Outcome),
    /// Still queued: a retryable failure, or an earlier event of its chain is pending.
    Pending(String),
    /// Failed permanently; kept as a dead letter.
    Dead(String),
    /// Queued for the courier that runs on this outbox (`serve --outbox`), which
    /// delivers it; nothing was attempted here.
    Queued,
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
    /// Destinations whose circuit is open at the end.
    pub open_circuits: usize,
}

/// An outbox: a SQLite file or a PostgreSQL database. Cheap to share between tasks and
/// threads (`&Outbox` is enough for every call).
pub struct Outbox {
    store: Store,
    keys: Arc<KeyRing>,
}

enum Store {
    Sqlite(sqlite::Sqlite),
    /// Boxed: over 250 bytes (its URL, pools, pipelines), five times the SQLite handle.
    Postgres(Box<postgres::Postgres>),
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
    destination: String,
    shown: String,
    build_key: String,
    event: String,
    config: String,
    documents: String,
    dead_after_s: i64,
    budget_ms: i64,
    /// How long it is kept once dead.
    retention_s: i64,
    /// The outbox's cap on pending events, as the event's configuration says.
    max_pending: u64,
}

impl NewEvent {
    fn new(accepted: &Accepted<'_>) -> NewEvent {
        let Accepted {
            destination,
            build_key,
            event,
            config_json: config,
            documents_json: documents,
            dead_after,
            retention,
            max_pending,
            report_budget: budget,
            webhook_id: _,
        } = accepted;
        let destination = destination_of(destination);
        NewEvent {
            shown: status_push::secret::redact_url(&destination),
            destination,
            build_key: build_key.to_string(),
            event: event.as_str().to_string(),
            config: for_delivery(config),
            documents: documents.to_string(),
            // About 35,000 years: far enough, and no overflow when added to a timestamp.
            dead_after_s: i64::try_from(dead_after.as_secs()).map_or(1 << 40, |s| s.min(1 << 40)),
            budget_ms: i64::try_from(budget.as_millis()).map_or(1 << 40, |s| s.min(1 << 40)),
            retention_s: i64::try_from(retention.as_secs()).map_or(1 << 40, |s| s.min(1 << 40)),
            max_pending: *max_pending,
        }
    }

    /// Its configuration and documents sealed for row `seq` (the seal binds them to it).
    fn sealed(&self, keys: &seal::KeyRing, seq: i64) -> Result<(String, String), seal::KeyError> {
        let row = seal::RowId {
            destination: &self.destination,
            build_key: &self.build_key,
            seq,
            event: &self.event,
        };
        seal::seal_row(keys, row, &self.config, &self.documents)
    }
}

/// `documents` with the text of every log given as `content_file` read in as its
/// `content`, at most `limit` bytes in all (`maxBodyBytes`: the body could hold no more);
/// a file that cannot be read, or too much, is refused naming the log.
fn inline_logs(documents: &str, limit: u64) -> Result<std::borrow::Cow<'_, str>, HostError> {
    if !documents.contains("\"content_file\"") {
        return Ok(std::borrow::Cow::Borrowed(documents));
    }
    // The component refuses documents that do not parse, naming why.
    let Ok(mut doc) = status_push::documents::parse_json(documents) else {
        return Ok(std::borrow::Cow::Borrowed(documents));
    };
    let files: Vec<(usize, usize, String, String)> = status_push::documents::content_files(&doc)
        .into_iter()
        .map(|f| (f.step, f.log, f.path.to_string(), f.key()))
        .collect();
    let mut left = limit;
    for (step, log, path, key) in files {
        let refused = |message: String| {
            HostError::Event(crate::InputError {
                key: key.clone(),
                message,
            })
        };
        let text = crate::files::read_text(Path::new(&path), left).map_err(|e| match e {
            crate::files::FileError::TooLarge { .. } => refused(format!(
                "{path}: the logs of this event are larger than maxBodyBytes ({limit} bytes); an outbox keeps them in the event"
            )),
            e => refused(format!("{path}: {e}")),
        })?;
        left -= text.len() as u64;
        let entry = doc
            .get_mut("steps")
            .and_then(|s| s.get_mut(step))
            .and_then(|s| s.get_mut("logs"))
            .and_then(|l| l.get_mut(log))
            .and_then(serde_json::Value::as_object_mut);
        if let Some(entry) = entry {
            entry.remove("content_file");
            entry.insert("content".into(), serde_json::Value::String(text));
        }
    }
    Ok(std::borrow::Cow::Owned(doc.to_string()))
}

/// `config` without what delivery never reads (`inboundToken`, `inboundSecret`: how the
/// relay's callers authenticate), so the outbox does not keep them.
fn for_delivery(config: &str) -> String {
    if !status_push::documents::RELAY_ONLY_KEYS
        .iter()
        .any(|key| config.contains(key))
    {
        return config.to_string();
    }
    let Ok(serde_json::Value::Object(mut map)) = status_push::documents::parse_json(config) else {
        // Not an object: the component refuses it at delivery, and it holds no key to strip.
        return config.to_string();
    };
    for key in status_push::documents::RELAY_ONLY_KEYS {
        map.remove(key);
    }
    serde_json::Value::Object(map).to_string()
}

/// The destination of a `serverUrl`: its origin (`scheme://host:port`), without
/// credentials. Receivers at one origin go down together, so they share a circuit and
/// keep one order per build; a URL that does not parse is its own destination.
fn destination_of(server_url: &str) -> String {
    let Ok(uri) = server_url.parse::<http::Uri>() else {
        return server_url.to_string();
    };
    match (uri.scheme_str(), uri.host()) {
        (Some(scheme), Some(host)) => {
            let scheme = scheme.to_ascii_lowercase();
            let port = uri.port_u16().or(match scheme.as_str() {
                "http" => Some(80),
                "https" => Some(443),
                _ => None,
            });
            let host = host.to_ascii_lowercase();
            match port {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            }
        }
        _ => server_url.to_string(),
    }
}

/// What a claim asks for.
struct Claim {
    /// At most this many chains.
    limit: usize,
    /// Calls the claimer runs per destination: each destination gets at most
    /// [`schedule::MAX_IN_FLIGHT_PER_DESTINATION`] less its own.
    busy: Vec<(i64, usize)>,
    /// The token the claimed chains carry.
    token: i64,
    /// Only this chain, due or not and whatever its destination's circuit (`push`).
    only: Option<ChainKey>,
}

impl Claim {
    /// How many chains of closed destination `destination` this claim may take, `room`
    /// left in it.
    fn want(&self, destination: i64, room: usize) -> usize {
        let busy = self
            .busy
            .iter()
            .find(|(d, _)| *d == destination)
            .map_or(0, |(_, n)| *n);
        room.min(schedule::MAX_IN_FLIGHT_PER_DESTINATION.saturating_sub(busy))
    }
}

/// Why a call failed, as recorded.
#[derive(Debug, Clone)]
struct Failure {
    reason: String,
    attempts: i64,
    delivery_id: String,
}

/// What a call's result means for its event, its chain and its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Delivered,
    /// Try again after a backoff; `destination`: the destination itself failed
    /// (refused, reset, timeout, 5xx, 429), so its circuit counts it.
    Retry {
        destination: bool,
    },
    /// Deterministic: trying again would fail the same way. `reachable`: the
    /// destination answered (a 4xx), so its circuit closes.
    Dead {
        reachable: bool,
    },
}

/// The one classification of a call's result. Deterministic failures (4xx but 408 and
/// 429, a trap, invalid input or configuration) are dead letters; environmental ones (a
/// missing or unreadable CA file, a time budget overrun, the component not loading) stay
/// pending with backoff, and do not count against the destination.
fn verdict(result: &Result<Outcome, HostError>) -> Verdict {
    use crate::PushError;
    match result {
        Ok(_) => Verdict::Delivered,
        Err(HostError::Push(failure)) => match &failure.error {
            PushError::HttpStatus(h) if h.status == 408 || h.status == 429 || h.status >= 500 => {
                Verdict::Retry { destination: true }
            }
            PushError::HttpStatus(_) => Verdict::Dead { reachable: true },
            PushError::Unreachable(_) | PushError::ConnectionLost(_) | PushError::Timeout => {
                Verdict::Retry { destination: true }
            }
            // A certificate that does not verify stays so until someone changes the
            // receiver or `caFile`.
            PushError::Tls(_) => Verdict::Dead { reachable: false },
            PushError::NotConfigured
            | PushError::InvalidInput(_)
            | PushError::Denied(_)
            | PushError::Protocol(_)
            | PushError::Format(_) => Verdict::Dead { reachable: false },
        },
        // A CA file is read from the host's disk: it may be back (or readable) later.
        Err(HostError::Config(e)) if e.key == "caFile" => Verdict::Retry { destination: false },
        Err(HostError::Config(_) | HostError::Event(_) | HostError::Trap(_)) => {
            Verdict::Dead { reachable: false }
        }
        Err(HostError::OutOfMemory { .. }) => Verdict::Dead { reachable: false },
        Err(HostError::TimeBudget { .. } | HostError::Load { .. } | HostError::Instantiate(_)) => {
            Verdict::Retry { destination: false }
        }
    }
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

/// A claim token no other claim of this or another process carries.
fn new_token() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_i64(now_ms());
    // Positive, so it never reads as "no claim".
    (hasher.finish() >> 1) as i64
}

const EXPIRED: &str = "expired: undelivered for longer than deadLetterAfterSeconds";

/// The key file beside a SQLite outbox given no key: `PATH.key`.
pub fn default_key_path(outbox: &Path) -> PathBuf {
    let mut path = outbox.as_os_str().to_owned();
    path.push(".key");
    PathBuf::from(path)
}

/// The key ring for `location` when none was given: the file `STATUS_PUSH_OUTBOX_KEY_FILE`
/// names, else for SQLite `PATH.key` beside it (made on first use); a PostgreSQL outbox
/// without one is refused, since its hosts must share one key.
fn default_keys(location: &Location) -> Result<KeyRing, OutboxError> {
    if let Some(path) = std::env::var_os(KEY_FILE_ENV).filter(|p| !p.is_empty()) {
        return Ok(KeyRing::read(Path::new(&path))?);
    }
    match location {
        Location::Sqlite(path) => Ok(KeyRing::read_or_create(&default_key_path(path))?),
        Location::Postgres(url) => Err(OutboxError::NoKey {
            location: url.to_string(),
        }),
    }
}

impl Outbox {
    /// Opens the outbox at `location` with the key `STATUS_PUSH_OUTBOX_KEY_FILE` names,
    /// or for SQLite with `PATH.key` beside it (made on first use); see
    /// [`Outbox::open_with`]. A PostgreSQL outbox needs a key ([`OutboxError::NoKey`]).
    pub async fn open(location: &Location) -> Result<Outbox, OutboxError> {
        Outbox::open_with(location, None).await
    }

    /// Opens the outbox at `location`, creating it (a SQLite file readable by its owner
    /// only; or the tables of a PostgreSQL database) or migrating its schema as needed,
    /// with `keys` (`None`: as [`Outbox::open`] finds them). Rows are sealed under the
    /// first key; rows of an earlier release are sealed on this first open. A key that
    /// does not open the outbox's key check is refused ([`OutboxError::WrongKey`]).
    pub async fn open_with(
        location: &Location,
        keys: Option<KeyRing>,
    ) -> Result<Outbox, OutboxError> {
        let (store, keys) = match location {
            Location::Sqlite(path) => {
                let path = path.clone();
                let location = location.clone();
                let opened = tokio::task::spawn_blocking(move || {
                    let keys = Arc::new(match keys {
                        Some(keys) => keys,
                        None => default_keys(&location)?,
                    });
                    sqlite::Sqlite::open(&path, keys.clone()).map(|s| (Store::Sqlite(s), keys))
                })
                .await
                .map_err(|e| OutboxError::Stopped(e.to_string()))?;
                opened?
            }
            Location::Postgres(url) => {
                let keys = Arc::new(match keys {
                    Some(keys) => keys,
                    None => default_keys(location)?,
                });
                let store = postgres::Postgres::open(url, keys.clone()).await?;
                (Store::Postgres(Box::new(store)), keys)
            }
        };
        Ok(Outbox { store, keys })
    }

    /// Opens a claimed event's configuration and documents; a row not sealed by this
    /// outbox's key for this very row is never used: settle it with
    /// [`Outbox::settle_unsealed`].
    pub(crate) fn open_row(&self, claimed: &Claimed) -> Result<seal::Contents, Unsealed> {
        let row = &claimed.row;
        seal::open_row(
            &self.keys,
            seal::RowId {
                destination: &row.target,
                build_key: &claimed.build_key,
                seq: row.seq,
                event: row.event.as_str(),
            },
            &row.config,
            &row.documents,
        )
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
        let (seq, chain) = self
            .enqueue_chain(runtime, config_json, event, documents_json)
            .await?;
        Ok((seq, chain.build_key))
    }

    async fn enqueue_chain(
        &self,
        runtime: &Runtime,
        config_json: &str,
        event: Event,
        documents_json: &str,
    ) -> Result<(i64, ChainKey), OutboxError> {
        // Refuse what could never be delivered now, not at every later retry.
        let mut reporter = runtime.reporter().await?;
        let config = reporter.parse_config(config_json).await?;
        let buildbot_url = config.buildbot_url.clone();
        let destination = config.server_url.clone();
        let max_body = config
            .max_body_bytes
            .unwrap_or(status_push::config::DEFAULT_MAX_BODY_BYTES);
        reporter.configure(config).await?;
        let policy = reporter.policy().cloned().unwrap_or_default();
        // A row never names a file for a host to open: logs are read in now.
        let documents = inline_logs(documents_json, max_body)?;
        let documents_json: &str = &documents;
        let build = reporter.parse_event(documents_json).await?;
        let build_key = format!("{buildbot_url}|{}", build.build.buildid);
        let new = NewEvent::new(&Accepted {
            config_json,
            destination: &destination,
            event,
            documents_json,
            build_key: &build_key,
            dead_after: policy.dead_letter_after,
            retention: policy.retention,
            max_pending: policy.max_pending,
            report_budget: policy.report_budget,
            webhook_id: None,
        });
        match store!(self.insert(new, None, 0))? {
            Some((seq, destination)) => Ok((
                seq,
                ChainKey {
                    destination,
                    build_key,
                },
            )),
            None => Err(OutboxError::Stopped(
                "an insert without an id was refused".into(),
            )),
        }
    }

    /// Queues an event the caller validated itself, with no component call, in one
    /// transaction with its `webhook-id` (refused with [`OutboxError::Replayed`] if seen
    /// within [`REPLAY_WINDOW`]; older ids are forgotten). Returns its sequence number.
    pub async fn accept(&self, event: &Accepted<'_>) -> Result<i64, OutboxError> {
        let new = NewEvent::new(event);
        let id = event.webhook_id.map(str::to_string);
        let window = REPLAY_WINDOW.as_secs() as i64;
        match store!(self.insert(new, id, window))? {
            Some((seq, _)) => Ok(seq),
            None => Err(OutboxError::Replayed(
                event.webhook_id.unwrap_or_default().to_string(),
            )),
        }
    }

    /// Queues events the caller validated itself, all in one transaction (no `webhook-id`
    /// check): a bulk load, e.g. a benchmark's backlog. Returns how many.
    pub async fn accept_batch(&self, events: &[Accepted<'_>]) -> Result<usize, OutboxError> {
        let new: Vec<NewEvent> = events.iter().map(|e| NewEvent::new(e)).collect();
        let n = new.len();
        store!(self.insert_batch(new))?;
        Ok(n)
    }

    /// Queues an event, then delivers its chain now (earlier events of its build and
    /// destination first, backoff and circuit notwithstanding), unless a courier already
    /// runs on this outbox ([`PushResult::Queued`]: it delivers it).
    pub async fn push(
        &self,
        runtime: &Runtime,
        config_json: &str,
        event: Event,
        documents_json: &str,
    ) -> Result<PushResult, OutboxError> {
        let (seq, chain) = self
            .enqueue_chain(runtime, config_json, event, documents_json)
            .await?;
        let Some(_lock) = self.try_courier_lock()? else {
            return Ok(PushResult::Queued);
        };
        let courier = Courier::new(self, runtime);
        let outcome = courier.deliver_chain(&chain, seq).await?;
        if let Some(outcome) = outcome {
            return Ok(PushResult::Done(outcome));
        }
        Ok(match store!(self.status(seq))? {
            // Delivered by another process in the meantime.
            None => PushResult::Pending("delivered by another process".into()),
            Some((true, error)) => PushResult::Dead(error.unwrap_or_default()),
            Some((false, error)) => PushResult::Pending(
                error.unwrap_or_else(|| "an earlier event of this build is still pending".into()),
            ),
        })
    }

    /// Delivers everything pending until nothing is left (here or in another host's
    /// hands) or `budget` is spent, with the courier's rules (one call per chain at a
    /// time, backoff, circuits). Waits for any courier running on this SQLite outbox.
    pub async fn deliver(
        &self,
        runtime: &Runtime,
        budget: Duration,
    ) -> Result<DeliverySummary, OutboxError> {
        let _lock = self.courier_lock()?;
        Courier::new(self, runtime).deliver_for(budget).await
    }

    /// Claims the heads of up to `limit` due chains for the caller to call and hand back
    /// ([`Outbox::settle`]).
    pub async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, OutboxError> {
        self.claim_beside(limit, Vec::new()).await
    }

    /// [`Outbox::claim`] for a claimer already running `busy` calls per destination id.
    pub(crate) async fn claim_beside(
        &self,
        limit: usize,
        busy: Vec<(i64, usize)>,
    ) -> Result<Vec<Claimed>, OutboxError> {
        let claim = Claim {
            limit,
            busy,
            token: new_token(),
            only: None,
        };
        store!(self.claim(claim))
    }

    async fn claim_chain(&self, chain: &ChainKey) -> Result<Option<Claimed>, OutboxError> {
        let claim = Claim {
            limit: 1,
            busy: Vec::new(),
            token: new_token(),
            only: Some(chain.clone()),
        };
        Ok(store!(self.claim(claim))?.into_iter().next())
    }

    /// Keeps a claim while its call runs; `false` when its lease already ran out and
    /// another holder may have the chain (the call should stop).
    pub async fn renew(&self, claimed: &Claimed) -> Result<bool, OutboxError> {
        store!(self.renew(&claimed.chain, claimed.token, claimed.probe))
    }

    /// Records a call's result for `claimed` (`None`: it expired, no call was made).
    pub async fn settle(
        &self,
        claimed: &Claimed,
        result: Option<&Result<Outcome, HostError>>,
    ) -> Result<Settled, OutboxError> {
        let (verdict, failure) = match result {
            None => (
                Verdict::Dead { reachable: false },
                Failure {
                    reason: EXPIRED.into(),
                    attempts: 0,
                    delivery_id: String::new(),
                },
            ),
            Some(result) => {
                let (attempts, delivery_id) = match result {
                    Err(HostError::Push(f)) => (i64::from(f.attempts), f.delivery_id.clone()),
                    _ => (0, String::new()),
                };
                let reason = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => String::new(),
                };
                (
                    verdict(result),
                    Failure {
                        reason,
                        attempts,
                        delivery_id,
                    },
                )
            }
        };
        let (chain, token, seq, probe) =
            (&claimed.chain, claimed.token, claimed.seq, claimed.probe);
        Ok(match verdict {
            Verdict::Delivered => {
                store!(self.delivered(chain, token, seq))?;
                Settled::Done
            }
            Verdict::Retry { destination } => {
                if store!(self.retry(chain, token, seq, &failure, destination, probe))? {
                    Settled::Pending
                } else {
                    Settled::Lost
                }
            }
            Verdict::Dead { reachable } => {
                if store!(self.dead(chain, token, seq, &failure, reachable, probe))? {
                    Settled::Dead
                } else {
                    Settled::Lost
                }
            }
        })
    }

    /// Records a claimed event whose row did not open ([`Outbox::open_row`]) as a dead
    /// letter saying why; nothing of it was sent or opened.
    pub(crate) async fn settle_unsealed(
        &self,
        claimed: &Claimed,
        why: &Unsealed,
    ) -> Result<Settled, OutboxError> {
        let failure = Failure {
            reason: why.to_string(),
            attempts: 0,
            delivery_id: String::new(),
        };
        let (chain, token, seq, probe) =
            (&claimed.chain, claimed.token, claimed.seq, claimed.probe);
        Ok(
            if store!(self.dead(chain, token, seq, &failure, false, probe))? {
                Settled::Dead
            } else {
                Settled::Lost
            },
        )
    }

    /// Re-seals the pending events and dead letters of `config_json`'s reporter (those
    /// bound for the origin and path of its `serverUrl`) with that configuration,
    /// checked by the component first: a credential rotated in a reporter's
    /// configuration so reaches the events it already queued. Dead letters stay dead
    /// until redelivered.
    pub async fn reseal(
        &self,
        runtime: &Runtime,
        config_json: &str,
    ) -> Result<Resealed, OutboxError> {
        let mut reporter = runtime.reporter().await?;
        let config = reporter.parse_config(config_json).await?;
        let server_url = config.server_url.clone();
        reporter.configure(config).await?;
        let path = url_path(&server_url);
        let stored = for_delivery(config_json);
        self.reseal_rows(Some(destination_of(&server_url)), |_, contents| {
            let old = status_push::documents::parse_json(contents.config.expose()).ok()?;
            let old_url = old.get("serverUrl")?.as_str()?;
            (url_path(old_url) == path).then(|| stored.clone())
        })
        .await
    }

    /// Re-seals under the key file's first key every event sealed by another, and the
    /// outbox's key check: after it (on every outbox that key file serves), the older
    /// keys may leave the file.
    pub async fn reseal_keys(&self) -> Result<Resealed, OutboxError> {
        let keys = self.keys.clone();
        let done = self
            .reseal_rows(None, |row, contents| {
                let current =
                    keys.sealed_by_first(&row.config) && keys.sealed_by_first(&row.documents);
                (!current).then(|| contents.config.expose().to_string())
            })
            .await?;
        let check = self.keys.seal(b"ok", seal::KEY_CHECK)?;
        store!(self.replace_key_check(check))?;
        Ok(done)
    }

    /// Re-seals the rows (of `target`, if given) for which `change` gives a
    /// configuration, with it and their documents, under the first key.
    async fn reseal_rows(
        &self,
        target: Option<String>,
        change: impl Fn(&SealedRow, &seal::Contents) -> Option<String>,
    ) -> Result<Resealed, OutboxError> {
        const PAGE: i64 = 500;
        let mut done = Resealed::default();
        let mut after = 0;
        loop {
            let rows = store!(self.sealed_rows(target.clone(), after, PAGE))?;
            let Some(last) = rows.last() else {
                return Ok(done);
            };
            after = last.seq;
            let mut sealed = Vec::new();
            for row in &rows {
                let Ok(contents) =
                    seal::open_row(&self.keys, row.id(), &row.config, &row.documents)
                else {
                    done.unopened += 1;
                    continue;
                };
                if let Some(config) = change(row, &contents) {
                    let (config, documents) =
                        seal::seal_row(&self.keys, row.id(), &config, contents.documents.expose())?;
                    sealed.push((row.seq, config, documents));
                }
            }
            done.resealed += store!(self.replace_sealed(sealed))?;
        }
    }

    /// Gives a claim back uncalled: the chain is due again at once.
    pub async fn release(&self, claimed: &Claimed) -> Result<(), OutboxError> {
        store!(self.release(&claimed.chain, claimed.token))
    }

    /// Makes dead letters pending again (GitHub's "redeliver"), with a fresh
    /// `deadLetterAfterSeconds` window. One whose build has had a later event delivered
    /// to its destination since, or has one being delivered now, is *superseded* and
    /// stays dead unless `force`: sent now, it would arrive after that later event.
    pub async fn redeliver(
        &self,
        which: &Redeliver,
        force: bool,
    ) -> Result<Redelivered, OutboxError> {
        let done = store!(self.redeliver(which.clone(), force))?;
        let named = match which {
            Redeliver::All => None,
            Redeliver::Seq(seq) => Some(seq.to_string()),
            Redeliver::DeliveryId(id) => Some(id.clone()),
        };
        match (named, done.superseded.first()) {
            (Some(name), None) if done.revived == 0 => Err(OutboxError::NoSuchDeadLetter(name)),
            (Some(_), Some(&seq)) if done.revived == 0 => Err(OutboxError::Superseded(seq)),
            _ => Ok(done),
        }
    }

    /// Pending events, dead letters, the oldest pending event and open circuits: what an
    /// operator alerts on. Read from per-destination counters and an index, never a scan.
    pub async fn counts(&self) -> Result<Counts, OutboxError> {
        store!(self.counts())
    }

    /// Writes everything the store holds in its log into its files and waits for it
    /// (SQLite `wal_checkpoint(TRUNCATE)`, PostgreSQL `CHECKPOINT`, which needs a superuser
    /// or `pg_checkpoint`): a benchmark that has just queued a backlog measures the
    /// backlog, not the flushing of what queueing it wrote.
    #[cfg(feature = "bench")]
    pub async fn checkpoint(&self) -> Result<(), OutboxError> {
        store!(self.checkpoint())
    }

    /// The destinations whose circuit is open, worst first.
    pub async fn circuits(&self) -> Result<Vec<Circuit>, OutboxError> {
        store!(self.circuits())
    }

    /// Deletes dead letters whose `deadLetterRetentionDays` ran out and the chains left
    /// with no event at all (delivered builds), in small batches, until none is left;
    /// returns how many dead letters. A settled chain with pending events its count
    /// missed is counted again (and logged), so that they are claimed. Each batch finds
    /// its rows through an index, so neither a backlog of pending events nor one of dead
    /// letters costs it anything.
    pub async fn prune(&self) -> Result<usize, OutboxError> {
        // In ms: a chain settled within this second is due for a look already.
        let now = now_ms();
        let mut dead_letters = 0;
        loop {
            let pruned = store!(self.prune(now, schedule::PRUNE_BATCH))?;
            dead_letters += pruned.dead_letters;
            if pruned.recounted > 0 {
                tracing::warn!(
                    "outbox: {} chain(s) had events their count missed: counted again",
                    pruned.recounted
                );
            }
            if !pruned.full(schedule::PRUNE_BATCH) {
                return Ok(dead_letters);
            }
        }
    }

    /// Takes the courier lock (SQLite: `PATH.lock`, waiting for it): while it is held,
    /// `deliver` in another process waits and `push` leaves its event to the holder.
    /// Released when dropped, or by the OS when the process dies. PostgreSQL needs none:
    /// fenced claims keep hosts apart.
    pub fn courier_lock(&self) -> Result<CourierLock, OutboxError> {
        self.lock(File::lock).map(CourierLock)
    }

    /// The courier lock if no courier holds it, else `None`.
    fn try_courier_lock(&self) -> Result<Option<CourierLock>, OutboxError> {
        let Store::Sqlite(sqlite) = &self.store else {
            return Ok(Some(CourierLock(None)));
        };
        let path = lock_path(sqlite.path());
        let file = open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(CourierLock(Some(file)))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(OutboxError::Lock { path, source }),
        }
    }

    /// A listener for queued events, where the backend has one (PostgreSQL); `None` for
    /// SQLite, whose couriers share a host and poll.
    pub async fn listen(&self) -> Result<Option<Listener>, OutboxError> {
        match &self.store {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(p) => p.listen().await.map(Some),
        }
    }

    /// Lists the dead letters, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<Entry>, OutboxError> {
        store!(self.entries(true))
    }

    /// Lists the pending events, oldest first.
    pub async fn pending(&self) -> Result<Vec<Entry>, OutboxError> {
        store!(self.entries(false))
    }

    /// SQLite's courier lock; `None` for PostgreSQL.
    fn lock(&self, lock: fn(&File) -> std::io::Result<()>) -> Result<Option<File>, OutboxError> {
        let Store::Sqlite(sqlite) = &self.store else {
            return Ok(None);
        };
        let path = lock_path(sqlite.path());
        let file = open_lock(&path)?;
        lock(&file).map_err(|source| OutboxError::Lock {
            path: path.clone(),
            source,
        })?;
        Ok(Some(file))
    }
}

fn lock_path(outbox: &Path) -> PathBuf {
    let mut path = outbox.to_path_buf().into_os_string();
    path.push(".lock");
    PathBuf::from(path)
}

fn open_lock(path: &Path) -> Result<File, OutboxError> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| OutboxError::Lock {
            path: path.to_path_buf(),
            source,
        })
}

/// Tells an idle courier that events were queued (PostgreSQL's `LISTEN`); keeps its
/// connection open while it lives.
pub struct Listener {
    notified: tokio::sync::mpsc::Receiver<()>,
    _connection: Box<dyn std::any::Any + Send + Sync>,
}

impl Listener {
    fn new(
        notified: tokio::sync::mpsc::Receiver<()>,
        connection: impl std::any::Any + Send + Sync,
    ) -> Listener {
        Listener {
            notified,
            _connection: Box::new(connection),
        }
    }

    /// Waits for the next notification; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<()> {
        self.notified.recv().await
    }
}

/// The courier lock of a SQLite outbox; see [`Outbox::courier_lock`].
#[derive(Debug)]
pub struct CourierLock(#[allow(dead_code)] Option<File>);

/// A chain's head as stored.
#[derive(Debug, Clone)]
struct Row {
    seq: i64,
    /// Parsed when read: a row naming another event is refused, never taken for one.
    event: Event,
    /// Its destination's target, which its sealed values are bound to.
    target: String,
    /// Sealed ([`seal::seal_row`]); opened by [`Outbox::open_row`] just before its call.
    config: String,
    documents: String,
    /// Past its `deadLetterAfterSeconds` when claimed.
    expired: bool,
    created_at: i64,
    budget_ms: i64,
}

/// A row as stored, for re-sealing.
#[derive(Debug, Clone)]
struct SealedRow {
    seq: i64,
    target: String,
    build_key: String,
    event: String,
    /// Sealed, or plaintext in a row of an earlier release being migrated.
    config: String,
    documents: String,
}

impl SealedRow {
    fn id(&self) -> seal::RowId<'_> {
        seal::RowId {
            destination: &self.target,
            build_key: &self.build_key,
            seq: self.seq,
            event: &self.event,
        }
    }
}

/// What [`Outbox::reseal`] and [`Outbox::reseal_keys`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Events (pending or dead) sealed anew.
    pub resealed: usize,
    /// Events of theirs that did not open under this outbox's key, left as they were
    /// (they become dead letters when claimed).
    pub unopened: usize,
}

/// The key check for a store holding `stored` (`None`: none yet): `Ok(Some)` is the
/// value to store; a check that `keys` do not open refuses the outbox.
fn check_key(
    keys: &KeyRing,
    stored: Option<&str>,
    location: &str,
) -> Result<Option<String>, OutboxError> {
    match stored {
        None => Ok(Some(keys.seal(b"ok", seal::KEY_CHECK)?)),
        Some(sealed) => match keys.open(sealed, seal::KEY_CHECK) {
            Ok(_) => Ok(None),
            Err(_) => Err(OutboxError::WrongKey {
                location: location.to_string(),
                sealing: keys.sealing_id(),
            }),
        },
    }
}

/// The path of a `serverUrl` (`/` when it has none): with its origin, which reporter an
/// event is for.
fn url_path(server_url: &str) -> String {
    match server_url.parse::<http::Uri>() {
        Ok(uri) => uri.path().to_string(),
        Err(_) => server_url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{HttpFailure, InputError, PushError, PushFailure};

    fn push_error(error: PushError) -> Result<Outcome, HostError> {
        Err(HostError::Push(PushFailure {
            retryable: false,
            error,
            attempts: 1,
            delivery_id: "sp_x".into(),
        }))
    }

    fn status(status: u16) -> Result<Outcome, HostError> {
        push_error(PushError::HttpStatus(HttpFailure {
            status,
            retry_after: None,
        }))
    }

    #[test]
    fn a_settled_chain_goes_is_counted_again_or_waits_for_its_first_dead_letter() {
        assert_eq!(Settling::of(0, 0, None, 5_000), Settling::Empty);
        assert_eq!(Settling::of(2, 1, Some(9), 5_000), Settling::Behind);
        assert_eq!(
            Settling::of(0, 3, Some(9), 5_000),
            Settling::KeptUntil(10_000)
        );
        // Its dead letter overdue (left to a later batch): not looked at again this pass.
        assert_eq!(
            Settling::of(0, 1, Some(2), 5_000),
            Settling::KeptUntil(5_001)
        );
        assert_eq!(
            Settling::of(0, 1, None, 5_000),
            Settling::KeptUntil(i64::MAX)
        );
    }

    #[test]
    fn deterministic_failures_die_and_environmental_ones_wait() {
        assert_eq!(verdict(&status(400)), Verdict::Dead { reachable: true });
        assert_eq!(verdict(&status(410)), Verdict::Dead { reachable: true });
        for retry in [408, 429, 500, 503] {
            assert_eq!(
                verdict(&status(retry)),
                Verdict::Retry { destination: true }
            );
        }
        assert_eq!(
            verdict(&push_error(PushError::Unreachable("refused".into()))),
            Verdict::Retry { destination: true }
        );
        let invalid = InputError {
            key: "steps".into(),
            message: "x".into(),
        };
        assert_eq!(
            verdict(&push_error(PushError::InvalidInput(invalid.clone()))),
            Verdict::Dead { reachable: false }
        );
        assert_eq!(
            verdict(&Err(HostError::Event(invalid))),
            Verdict::Dead { reachable: false }
        );
        let ca_file = InputError {
            key: "caFile".into(),
            message: "cannot use CA file".into(),
        };
        assert_eq!(
            verdict(&Err(HostError::Config(ca_file))),
            Verdict::Retry { destination: false }
        );
        let overrun = HostError::TimeBudget {
            budget: Duration::from_secs(1),
            doing: "handling the event",
        };
        assert_eq!(
            verdict(&Err(overrun)),
            Verdict::Retry { destination: false }
        );
    }

    #[test]
    fn a_destination_is_an_origin_without_credentials() {
        assert_eq!(
            destination_of("https://bot:s3cret@Hooks.Example.com/ci?token=x"),
            "https://hooks.example.com:443"
        );
        assert_eq!(
            destination_of("http://127.0.0.1:8010/build/1/2"),
            "http://127.0.0.1:8010"
        );
        assert_eq!(destination_of("not a url"), "not a url");
    }

    #[test]
    fn relay_only_keys_are_not_stored() {
        let stored = for_delivery(
            r#"{"serverUrl": "http://h/", "inboundToken": "t0123456789abcdef", "inboundSecret": "s"}"#,
        );
        assert_eq!(stored, r#"{"serverUrl":"http://h/"}"#);
        let plain = r#"{"serverUrl": "http://h/"}"#;
        assert_eq!(for_delivery(plain), plain);
    }

    #[test]
    fn logs_given_as_files_are_read_into_the_event_within_max_body_bytes() {
        let dir = std::env::temp_dir().join(format!("status-push-inline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("stdio");
        std::fs::write(&log, "line 1\nline 2\n").unwrap();
        let documents = serde_json::json!({"steps": [{"logs": [
            {"name": "stdio", "content_file": log.to_str().unwrap()}]}]})
        .to_string();
        let inlined = inline_logs(&documents, 1024).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&inlined).unwrap();
        assert_eq!(doc["steps"][0]["logs"][0]["content"], "line 1\nline 2\n");
        assert!(doc["steps"][0]["logs"][0].get("content_file").is_none());
        let refused = inline_logs(&documents, 4).err().unwrap().to_string();
        assert!(
            refused.contains("steps[0].logs[0].content_file") && refused.contains("maxBodyBytes"),
            "{refused}"
        );
        assert_eq!(refused.lines().count(), 1);
        let missing = documents.replace(log.to_str().unwrap(), dir.join("gone").to_str().unwrap());
        let refused = inline_logs(&missing, 1024).err().unwrap().to_string();
        assert!(refused.contains("cannot open"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tokens_differ() {
        let tokens: std::collections::HashSet<i64> = (0..1000).map(|_| new_token()).collect();
        assert_eq!(tokens.len(), 1000);
        assert!(tokens.iter().all(|t| *t > 0));
    }

    #[test]
    fn only_what_may_pass_on_its_own_is_transient() {
        let busy = OutboxError::Sqlite {
            path: "o.sqlite".into(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ),
        };
        assert!(busy.is_transient());
        let corrupt = OutboxError::Sqlite {
            path: "o.sqlite".into(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                None,
            ),
        };
        assert!(!corrupt.is_transient());
        let slow = OutboxError::Timeout {
            location: "postgresql://db/x".into(),
            after: Duration::from_secs(5),
        };
        assert!(slow.is_transient());
        let newer = OutboxError::NewerSchema {
            location: "o.sqlite".into(),
            found: 99,
        };
        assert!(!newer.is_transient());
        assert!(!OutboxError::NoSuchDeadLetter("7".into()).is_transient());
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
