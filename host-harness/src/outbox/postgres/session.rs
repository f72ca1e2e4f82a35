//! A pooled connection that prepares each statement of its transactions once.
//!
//! Given text, tokio-postgres prepares an unnamed statement at every call: a round trip
//! to parse and describe it, then one to run it, and the server plans it anew each time.
//! Queueing one event ran seven such statements (`pg_stat_statements`: 120 µs of
//! planning an event beside 140 µs of work). A [`Session`] keeps what it prepared, keyed
//! by the statement's text, for as long as its connection lives: each statement after
//! the first is one round trip, and the server may keep one plan for it. A connection
//! opened again starts with none, as the server does, and a statement the server refuses
//! is prepared again at its next call.
//!
//! [`Tx`] has the methods of tokio-postgres's `Transaction` that the outbox uses, under
//! the same names, so a transaction's code reads the same either way.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, Row, Statement, Transaction};

/// How many statements a session keeps prepared.
const MAX_PREPARED: usize = 128;

/// A connection and the statements prepared on it.
pub(super) struct Session {
    client: Client,
    prepared: Mutex<HashMap<String, Statement>>,
}

impl Session {
    pub(super) fn new(client: Client) -> Session {
        Session {
            client,
            prepared: Mutex::default(),
        }
    }

    /// A transaction whose statements are prepared once per connection.
    pub(super) async fn transaction(&mut self) -> Result<Tx<'_>, Error> {
        Ok(Tx {
            tx: self.client.transaction().await?,
            prepared: &self.prepared,
        })
    }
}

/// Statements outside a transaction (`counts`, `entries`, …) are run as text: each is
/// rare, and one round trip saved there is not worth a second way of calling.
impl std::ops::Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A transaction on a [`Session`].
pub(super) struct Tx<'a> {
    tx: Transaction<'a>,
    prepared: &'a Mutex<HashMap<String, Statement>>,
}

impl Tx<'_> {
    /// `sql` as prepared on this connection, preparing it the first time.
    async fn statement(&self, sql: &str) -> Result<Statement, Error> {
        // A poisoned map is still a map of valid statements.
        let known = (self.prepared.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .get(sql)
            .cloned();
        if let Some(statement) = known {
            return Ok(statement);
        }
        let statement = self.tx.prepare(sql).await?;
        let mut prepared = self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
        // The outbox's statements are fixed texts, about forty; one built from values
        // would be a mistake, and the bound keeps it from growing the map (and the
        // server's session) without end.
        if prepared.len() < MAX_PREPARED {
            prepared.insert(sql.to_owned(), statement.clone());
        }
        Ok(statement)
    }

    pub(super) async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        let statement = self.statement(sql).await?;
        let ran = self.tx.execute(&statement, params).await;
        self.forget_if_refused(sql, ran)
    }

    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let statement = self.statement(sql).await?;
        let ran = self.tx.query(&statement, params).await;
        self.forget_if_refused(sql, ran)
    }

    pub(super) async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        let statement = self.statement(sql).await?;
        let ran = self.tx.query_one(&statement, params).await;
        self.forget_if_refused(sql, ran)
    }

    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let statement = self.statement(sql).await?;
        let ran = self.tx.query_opt(&statement, params).await;
        self.forget_if_refused(sql, ran)
    }

    /// `ran`, having forgotten `sql`'s statement if the server refused it: prepared
    /// again at its next call, a statement the schema has changed under does not fail
    /// for the rest of the connection's life. Any refusal will do (a lock timeout too):
    /// preparing again costs one round trip. One refused as prepared ("cached plan must
    /// not change result type": another host's migration changed a column's type) says
    /// the others may be stale too, so all are forgotten.
    fn forget_if_refused<T>(&self, sql: &str, ran: Result<T, Error>) -> Result<T, Error> {
        if let Some(refused) = ran.as_ref().err().and_then(Error::as_db_error) {
            let mut prepared = self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
            if *refused.code() == SqlState::FEATURE_NOT_SUPPORTED {
                prepared.clear();
            } else {
                prepared.remove(sql);
            }
        }
        ran
    }

    /// Statements without parameters (`SET LOCAL`, `NOTIFY`), sent as they are.
    pub(super) async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.tx.batch_execute(sql).await
    }

    pub(super) async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await
    }

    pub(super) async fn rollback(self) -> Result<(), Error> {
        self.tx.rollback().await
    }
}
