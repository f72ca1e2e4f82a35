//! The PostgreSQL backend: one database shared by any number of hosts (CLI `deliver`
//! workers, `serve`, Buildbot masters). A worker claims the oldest pending event of a
//! build with a lease (`claimed_until_ms`, the server's clock): `FOR UPDATE SKIP LOCKED`
//! makes concurrent claims skip each other's rows instead of waiting, and a worker that
//! dies mid-delivery holds its claim only until the lease runs out (the event's report
//! budget plus [`LEASE_MARGIN`]). Leases rather than row locks held for the call: a call
//! can take minutes, and a lease needs no connection (or transaction) kept open meanwhile.
//!
//! Tables are prefixed `status_push_` so the outbox can live in a database shared with
//! other software (Buildbot's own, say).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Connection, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    Claim, Counts, Entry, Failed, NewEvent, OutboxError, Redeliver, Row, FIRST_BACKOFF_MS,
    MAX_BACKOFF_MS, SCHEMA_VERSION,
};
use crate::{Event, Secret};

/// Added to an event's report budget to make its lease: covers recording the result and
/// the gap between a host's clock and the server's.
pub(super) const LEASE_MARGIN: Duration = Duration::from_secs(15);

/// The longest a statement (or a connection attempt) may take before the call fails.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's clock, in seconds and milliseconds: every host compares against one clock.
const NOW_S: &str = "floor(extract(epoch FROM clock_timestamp()))::bigint";
const NOW_MS: &str = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Schema migrations, in order: `MIGRATIONS[n]` takes the schema from version `n + 1` to
/// `n + 2` (version 1 is the SQLite-only layout, never created here).
const MIGRATIONS: &[&str] = &["
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

/// A PostgreSQL connection URL (`postgresql://` or `postgres://`). Prints with its
/// password (in the authority or the query) redacted. `sslmode=require` connects over
/// TLS and verifies the server's certificate against the system's roots and, if given,
/// `sslrootcert=PATH` (stricter than libpq's `require`, which checks nothing); otherwise
/// the connection is plain.
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
    pub fn parse(url: &str) -> Result<PostgresUrl, OutboxError> {
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
    fn tls(&self) -> Result<Option<MakeRustlsConnect>, OutboxError> {
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
        let policy = crate::client::TlsPolicy::Verify {
            ca_file: self.root_cert.clone(),
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
    /// This host's name in `claimed_by`: host name, process id and a random part.
    worker: String,
    /// Reconnected when the server closed it (a restart, a failover).
    client: Mutex<Option<Arc<Client>>>,
}

impl Postgres {
    /// Connects, then creates or migrates the schema (one host at a time: an advisory
    /// lock), or refuses a schema newer than this build's without touching anything.
    pub(super) async fn open(url: &PostgresUrl) -> Result<Postgres, OutboxError> {
        let postgres = Postgres {
            url: url.clone(),
            worker: worker_name(),
            client: Mutex::new(None),
        };
        let mut client = postgres.connect().await?;
        match postgres
            .bounded(migrate(&mut client))
            .await?
            .map_err(|e| postgres.error(e))?
        {
            Schema::Current => {}
            Schema::Newer(found) => {
                return Err(OutboxError::NewerSchema {
                    location: url.shown.clone(),
                    found,
                })
            }
        }
        *postgres.client.lock().await = Some(Arc::new(client));
        Ok(postgres)
    }

    fn error(&self, error: tokio_postgres::Error) -> OutboxError {
        OutboxError::Postgres {
            location: self.url.shown.clone(),
            error,
        }
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, OutboxError> {
        tokio::time::timeout(STATEMENT_TIMEOUT, work)
            .await
            .map_err(|_| OutboxError::Timeout {
                location: self.url.shown.clone(),
                after: STATEMENT_TIMEOUT,
            })
    }

    async fn connect(&self) -> Result<Client, OutboxError> {
        match self.url.tls()? {
            Some(tls) => self.connect_with(tls).await,
            None => self.connect_with(NoTls).await,
        }
    }

    async fn connect_with<T>(&self, tls: T) -> Result<Client, OutboxError>
    where
        T: MakeTlsConnect<Socket>,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let (client, connection) = self
            .bounded(self.url.config().connect(tls))
            .await?
            .map_err(|e| self.error(e))?;
        tokio::spawn(drive(connection, self.url.shown.clone()));
        Ok(client)
    }

    async fn client(&self) -> Result<Arc<Client>, OutboxError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(self.connect().await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs one statement returning rows, bounded in time.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, OutboxError> {
        let client = self.client().await?;
        self.bounded(client.query(sql, params))
            .await?
            .map_err(|e| self.error(e))
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, OutboxError> {
        let client = self.client().await?;
        self.bounded(client.execute(sql, params))
            .await?
            .map_err(|e| self.error(e))
    }

    pub(super) async fn insert(
        &self,
        event: NewEvent,
        webhook_id: Option<String>,
        replay_window_s: i64,
    ) -> Result<Option<i64>, OutboxError> {
        let columns = "INSERT INTO status_push_events
                           (build_key, event, config, documents, created_at, expires_at, budget_ms)";
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &event.build_key,
            &event.event,
            &event.config,
            &event.documents,
            &event.dead_after_s,
            &event.budget_ms,
        ];
        let rows = match &webhook_id {
            None => {
                let sql = format!(
                    "{columns} VALUES ($1, $2, $3, $4, {NOW_S}, {NOW_S} + $5, $6) RETURNING seq"
                );
                self.query(&sql, &params).await?
            }
            Some(id) => {
                self.execute(
                    &format!(
                        "DELETE FROM status_push_seen_webhook_ids WHERE seen_at < {NOW_S} - $1"
                    ),
                    &[&replay_window_s],
                )
                .await?;
                // One statement, so the id and the event are committed together or not at
                // all; an id older than the window counts as new.
                let sql = format!(
                    "WITH fresh AS (
                         INSERT INTO status_push_seen_webhook_ids (id, seen_at) VALUES ($7, {NOW_S})
                         ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at
                             WHERE status_push_seen_webhook_ids.seen_at < EXCLUDED.seen_at - $8
                         RETURNING 1)
                     {columns} SELECT $1, $2, $3, $4, {NOW_S}, {NOW_S} + $5, $6
                     WHERE EXISTS (SELECT 1 FROM fresh) RETURNING seq"
                );
                params.extend([
                    id as &(dyn tokio_postgres::types::ToSql + Sync),
                    &replay_window_s,
                ]);
                self.query(&sql, &params).await?
            }
        };
        Ok(rows.first().map(|r| r.get(0)))
    }

    pub(super) async fn claim(&self, claim: Claim) -> Result<Vec<Row>, OutboxError> {
        let sql = format!(
            "WITH heads AS (
                 SELECT e.seq FROM status_push_events e
                 WHERE NOT e.dead
                   AND ($1::text IS NULL OR e.build_key = $1)
                   AND NOT (e.build_key = ANY($2::text[]))
                   AND ($3 OR e.next_attempt_ms <= {NOW_MS})
                   AND e.claimed_until_ms <= {NOW_MS}
                   AND NOT EXISTS (
                       SELECT 1 FROM status_push_events p
                       WHERE NOT p.dead AND p.build_key = e.build_key AND p.seq < e.seq)
                 ORDER BY e.seq
                 LIMIT $4
                 FOR UPDATE OF e SKIP LOCKED)
             UPDATE status_push_events u
             SET claimed_by = $5, claimed_until_ms = {NOW_MS} + u.budget_ms + $6
             FROM heads WHERE u.seq = heads.seq
             RETURNING u.seq, u.build_key, u.event, u.config, u.documents,
                       u.expires_at <= {NOW_S}, u.created_at"
        );
        let skip: Vec<String> = claim.skip.into_iter().collect();
        let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
        let margin = LEASE_MARGIN.as_millis() as i64;
        let rows = self
            .query(
                &sql,
                &[
                    &claim.only_build,
                    &skip,
                    &claim.due_or_not,
                    &limit,
                    &self.worker,
                    &margin,
                ],
            )
            .await?;
        let mut rows: Vec<Row> = rows
            .iter()
            .map(|r| {
                Ok(Row {
                    seq: r.get(0),
                    build_key: r.get(1),
                    event: self.stored_event(r.get(2))?,
                    config: r.get(3),
                    documents: r.get(4),
                    expired: r.get(5),
                    created_at: r.get(6),
                })
            })
            .collect::<Result<_, OutboxError>>()?;
        rows.sort_by_key(|r| r.seq);
        Ok(rows)
    }

    /// Removes a delivered event, whoever holds it now: it was delivered.
    pub(super) async fn delivered(&self, seq: i64) -> Result<(), OutboxError> {
        self.execute("DELETE FROM status_push_events WHERE seq = $1", &[&seq])
            .await
            .map(|_| ())
    }

    /// Records a failed call, unless the claim ran out and another worker holds the
    /// event now (its result will count).
    pub(super) async fn failed(&self, seq: i64, failed: Failed) -> Result<(), OutboxError> {
        let sql = format!(
            "UPDATE status_push_events SET attempts = attempts + $2, delivery_id = $3,
                 last_error = $4, dead = $5, calls = calls + 1,
                 next_attempt_ms = {NOW_MS} + LEAST($7, $8 * (1::bigint << LEAST(calls, 16)::int)),
                 claimed_by = NULL, claimed_until_ms = 0
             WHERE seq = $1 AND claimed_by = $6"
        );
        self.execute(
            &sql,
            &[
                &seq,
                &i64::from(failed.attempts),
                &failed.delivery_id,
                &failed.reason,
                &!failed.retryable,
                &self.worker,
                &MAX_BACKOFF_MS,
                &FIRST_BACKOFF_MS,
            ],
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn dead(&self, seq: i64, reason: &'static str) -> Result<(), OutboxError> {
        self.execute(
            "UPDATE status_push_events SET dead = true, last_error = $2,
                 claimed_by = NULL, claimed_until_ms = 0
             WHERE seq = $1 AND claimed_by = $3",
            &[&seq, &reason, &self.worker],
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn release(&self, seq: i64) -> Result<(), OutboxError> {
        self.execute(
            "UPDATE status_push_events SET claimed_by = NULL, claimed_until_ms = 0
             WHERE seq = $1 AND claimed_by = $2",
            &[&seq, &self.worker],
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn status(
        &self,
        seq: i64,
    ) -> Result<Option<(bool, Option<String>)>, OutboxError> {
        let rows = self
            .query(
                "SELECT dead, last_error FROM status_push_events WHERE seq = $1",
                &[&seq],
            )
            .await?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }

    pub(super) async fn redeliver(&self, which: Redeliver) -> Result<usize, OutboxError> {
        let revive = format!(
            "UPDATE status_push_events SET dead = false, last_error = NULL, calls = 0,
                 next_attempt_ms = 0, expires_at = {NOW_S} + (expires_at - created_at)
             WHERE dead"
        );
        let changed = match which {
            Redeliver::All => self.execute(&revive, &[]).await?,
            Redeliver::Seq(seq) => {
                self.execute(&format!("{revive} AND seq = $1"), &[&seq])
                    .await?
            }
            Redeliver::DeliveryId(id) => {
                self.execute(&format!("{revive} AND delivery_id = $1"), &[&id])
                    .await?
            }
        };
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    pub(super) async fn counts(&self, only_build: Option<String>) -> Result<Counts, OutboxError> {
        let rows = self
            .query(
                "SELECT COUNT(*) FILTER (WHERE NOT dead), COUNT(*) FILTER (WHERE dead)
                 FROM status_push_events WHERE $1::text IS NULL OR build_key = $1",
                &[&only_build],
            )
            .await?;
        let row = &rows[0];
        Ok(Counts {
            pending: row.get::<_, i64>(0) as u64,
            dead: row.get::<_, i64>(1) as u64,
        })
    }

    /// An event name as stored; another name is a corrupt row, not an event.
    fn stored_event(&self, name: &str) -> Result<Event, OutboxError> {
        name.parse()
            .map_err(|e: crate::UnknownEvent| OutboxError::Corrupt {
                location: self.url.shown.clone(),
                message: e.to_string(),
            })
    }

    pub(super) async fn entries(&self, dead: bool) -> Result<Vec<Entry>, OutboxError> {
        let rows = self
            .query(
                "SELECT seq, build_key, event, delivery_id, created_at, attempts, last_error
                 FROM status_push_events WHERE dead = $1 ORDER BY seq",
                &[&dead],
            )
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
                })
            })
            .collect()
    }

    pub(super) fn url(&self) -> &PostgresUrl {
        &self.url
    }
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
enum Schema {
    /// At [`SCHEMA_VERSION`] (now).
    Current,
    /// Newer than this build knows: nothing was changed.
    Newer(i64),
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction under an advisory lock, so
/// hosts starting together migrate once; a newer schema is refused before any write.
async fn migrate(client: &mut Client) -> Result<Schema, tokio_postgres::Error> {
    let tx = client.transaction().await?;
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
        return Ok(Schema::Newer(found));
    }
    for migration in MIGRATIONS
        .iter()
        .skip(usize::try_from(found - 1).unwrap_or(0))
    {
        tx.batch_execute(migration).await?;
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
    Ok(Schema::Current)
}

fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "host".into());
    let random = {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.finish() as u32
    };
    format!("{host}:{}:{random:08x}", std::process::id())
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
