//! The seam between the SQL written once for both backends and what differs between them.
//!
//! The repositories (`sessions.rs`, `leases.rs`) write their SQL once, with `$n`
//! parameters (both SQLite and PostgreSQL read them) and [`Dialect::NOW`] for the database's
//! clock, and pass their parameters as backend-neutral [`Value`]s. A [`Dialect`] runs such a
//! [`Statement`] on its own pool: it encodes the values in its column types (UUID text and
//! integer microseconds on SQLite, `uuid`, `timestamptz` and `interval` on PostgreSQL), decodes
//! its rows and keeps sqlx's errors as they are, for the caller to judge.

use std::time::Duration;

use sandkeeper_domain::{ChatId, SandboxSession, Timestamp};
use sandkeeper_ports::StoreError;
use uuid::Uuid;

use crate::error::ErrorContext;

/// A parameter of a [`Statement`], in the domain's terms; each dialect encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// A session or chat id.
    Id(Uuid),
    /// An instant, stored as the timestamp columns store it.
    Time(Timestamp),
    /// A length of time, to add to or subtract from an instant in SQL.
    Span(Duration),
    Text(String),
    Int(i64),
}

/// One SQL statement with its parameters, `$1` being the first of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    pub(crate) sql: String,
    pub(crate) values: Vec<Value>,
}

impl Statement {
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), values: Vec::new() }
    }

    pub(crate) fn bind(mut self, value: Value) -> Self {
        self.values.push(value);
        self
    }
}

/// What one backend does differently: encoding, decoding, its clock in SQL, and running a
/// statement on its pool. The methods whose text is the same on every backend are written once,
/// by [`same_in_every_dialect`].
pub(crate) trait Dialect: Send + Sync + 'static {
    /// The database's current instant, in the type of the timestamp columns, for SQL text.
    const NOW: &'static str;

    /// A statement that, run first in a transaction, makes every other transaction that runs
    /// it wait until this one ends: what makes a count and a save one step for every writer.
    /// `None` where writes already run one at a time (SQLite).
    const WRITERS_LOCK: Option<&'static str>;

    /// What ends a `SELECT ... LIMIT n` whose rows an `UPDATE` then takes, so that racing
    /// takers pass over each other's rows instead of waiting for them; empty where writes
    /// already run one at a time (SQLite).
    const SKIP_LOCKED: &'static str;

    /// Where the store is, for error messages.
    fn ctx(&self) -> &ErrorContext;

    /// A failure of sqlx as the port's error, naming the store.
    fn store_error(&self, error: sqlx::Error) -> StoreError {
        self.ctx().store_error(error)
    }

    /// The sessions a `SELECT` of `SESSION_COLUMNS` returns, in order.
    fn sessions(
        &self,
        statement: Statement,
    ) -> impl Future<Output = Result<Vec<SandboxSession>, StoreError>> + Send;

    /// The first row's columns read as booleans, `None` without a row.
    fn flags(
        &self,
        statement: Statement,
    ) -> impl Future<Output = Result<Option<Vec<bool>>, sqlx::Error>> + Send;

    /// The first row's columns read as text (NULL as `None`), `None` without a row.
    fn texts(
        &self,
        statement: Statement,
    ) -> impl Future<Output = Result<Option<Vec<Option<String>>>, sqlx::Error>> + Send;

    /// Every row's columns read as text (NULL as `None`), in order.
    fn text_rows(
        &self,
        statement: Statement,
    ) -> impl Future<Output = Result<Vec<Vec<Option<String>>>, sqlx::Error>> + Send;

    /// The first column of the one row a statement returns, as an integer.
    fn integer(
        &self,
        statement: Statement,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;

    /// Every row's first column as text and second as an integer (`GROUP BY` counts).
    fn counts(
        &self,
        statement: Statement,
    ) -> impl Future<Output = Result<Vec<(String, i64)>, sqlx::Error>> + Send;

    /// Runs the statements in order in one transaction (a single statement runs on its own,
    /// in autocommit mode) and returns how many rows the last one changed.
    fn execute(
        &self,
        statements: Vec<Statement>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// The chat's running session read without the pool, when the backend can answer so at
    /// once; `None` sends the caller to the pool.
    fn running_by_chat_inline(
        &self,
        _chat_id: ChatId,
    ) -> Option<Result<Option<SandboxSession>, StoreError>> {
        None
    }
}

/// Inside `impl Dialect for ...`, the methods whose text is the same on every backend: only the
/// types differ. The dialect has a `pool` and a `ctx`, and its module a `query` that binds a
/// [`Statement`]'s values and a `session_from_row`.
macro_rules! same_in_every_dialect {
    () => {
        fn ctx(&self) -> &$crate::error::ErrorContext {
            &self.ctx
        }

        async fn sessions(
            &self,
            statement: $crate::dialect::Statement,
        ) -> Result<Vec<sandkeeper_domain::SandboxSession>, sandkeeper_ports::StoreError> {
            let rows = query(&statement)
                .fetch_all(&self.pool)
                .await
                .map_err(|error| self.ctx.store_error(error))?;
            rows.iter().map(session_from_row).collect()
        }

        async fn texts(
            &self,
            statement: $crate::dialect::Statement,
        ) -> Result<Option<Vec<Option<String>>>, sqlx::Error> {
            $crate::dialect::columns(query(&statement).fetch_optional(&self.pool).await?)
        }

        async fn text_rows(
            &self,
            statement: $crate::dialect::Statement,
        ) -> Result<Vec<Vec<Option<String>>>, sqlx::Error> {
            let rows = query(&statement).fetch_all(&self.pool).await?;
            rows.into_iter()
                .map(|row| Ok($crate::dialect::columns(Some(row))?.unwrap_or_default()))
                .collect()
        }

        async fn integer(&self, statement: $crate::dialect::Statement) -> Result<i64, sqlx::Error> {
            sqlx::Row::try_get::<i64, _>(&query(&statement).fetch_one(&self.pool).await?, 0)
        }

        async fn counts(
            &self,
            statement: $crate::dialect::Statement,
        ) -> Result<Vec<(String, i64)>, sqlx::Error> {
            query(&statement)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|row| Ok((sqlx::Row::try_get(row, 0)?, sqlx::Row::try_get(row, 1)?)))
                .collect()
        }
    };
}
pub(crate) use same_in_every_dialect;

/// Runs `statements` on `pool` as [`Dialect::execute`] says: a single one on its own, several
/// in one transaction; how many rows the last one changed.
macro_rules! execute_in_one_transaction {
    ($pool:expr, $statements:expr) => {{
        let pool = $pool;
        let statements: &[$crate::dialect::Statement] = $statements;
        if let [statement] = statements {
            Ok(query(statement).execute(pool).await?.rows_affected())
        } else {
            let mut tx = pool.begin().await?;
            let mut changed = 0;
            for statement in statements {
                changed = query(statement).execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(changed)
        }
    }};
}
pub(crate) use execute_in_one_transaction;

/// Every column of `row` (the first row of a statement, if any) read as `T`.
pub(crate) fn columns<R, T>(row: Option<R>) -> Result<Option<Vec<T>>, sqlx::Error>
where
    R: sqlx::Row,
    T: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    row.map(|row| (0..row.len()).map(|n| row.try_get::<T, _>(n)).collect()).transpose()
}
