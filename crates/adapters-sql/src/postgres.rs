//! The PostgreSQL dialect: sessions and leases shared by several replicas.
//!
//! Ids are `uuid`, timestamps `timestamptz`, lengths of time `interval`. Leases are judged by
//! the database's clock (`now()`), never by the replicas' clocks, so that replicas whose clocks
//! disagree still agree on who holds a lease.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sandkeeper_domain::SandboxSession;
use sandkeeper_ports::inprocess::ProcessLocalLocker;
use sandkeeper_ports::{Cause, StoreError};
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow, PgSslMode};
use sqlx::query::Query;
use sqlx::{ConnectOptions, Connection, PgPool, Postgres, Row};

use crate::advisory::PgAdvisoryLocker;
use crate::dialect::{
    Dialect, Statement, Value, columns, execute_in_one_transaction, same_in_every_dialect,
};
use crate::error::{ConnectError, ErrorContext};
use crate::rows::{RawSession, duration_micros};

fn session_from_row(row: &PgRow) -> Result<SandboxSession, StoreError> {
    let unreadable = |error: sqlx::Error| {
        StoreError::Failed(Cause::new(error).context("a sandbox_sessions row could not be read"))
    };
    RawSession {
        session_id: row.try_get("session_id").map_err(unreadable)?,
        chat_id: row.try_get("chat_id").map_err(unreadable)?,
        container_id: row.try_get("container_id").map_err(unreadable)?,
        status: row.try_get("status").map_err(unreadable)?,
        created_at: row.try_get("created_at").map_err(unreadable)?,
        expires_at: row.try_get("expires_at").map_err(unreadable)?,
        engine: row.try_get("engine").map_err(unreadable)?,
    }
    .into_session()
}

fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    value: Value,
) -> Query<'q, Postgres, PgArguments> {
    match value {
        Value::Id(uuid) => query.bind(uuid),
        Value::Time(at) => query.bind(at),
        Value::Span(span) => {
            query.bind(PgInterval { months: 0, days: 0, microseconds: duration_micros(span) })
        }
        Value::Text(text) => query.bind(text),
        Value::Int(int) => query.bind(int),
    }
}

fn query(statement: &Statement) -> Query<'_, Postgres, PgArguments> {
    statement.values.iter().cloned().fold(sqlx::query(&statement.sql), bind)
}

/// The PostgreSQL store's query pool.
pub(crate) struct PgDialect {
    pub(crate) pool: PgPool,
    pub(crate) ctx: Arc<ErrorContext>,
}

impl Dialect for PgDialect {
    const NOW: &'static str = "now()";

    /// A transaction-level advisory lock, released at commit or rollback. The two-key form
    /// lives apart from the one-key chat locks of `advisory.rs`; the keys spell "sandkeeper
    /// capacity" (0x73616e64 = "sand"), and must stay the same across versions.
    const WRITERS_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(1935765092, 1)");

    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    same_in_every_dialect!();

    async fn flags(&self, statement: Statement) -> Result<Option<Vec<bool>>, sqlx::Error> {
        columns(query(&statement).fetch_optional(&self.pool).await?)
    }

    async fn execute(&self, statements: Vec<Statement>) -> Result<u64, sqlx::Error> {
        execute_in_one_transaction!(&self.pool, &statements)
    }
}

/// How [`connect`] sizes its pools.
pub(crate) struct PgPools {
    pub(crate) max_connections: u32,
    pub(crate) max_lock_connections: u32,
    pub(crate) acquire_timeout: Duration,
    /// The schema the tables live in, set as the connections' `search_path`.
    pub(crate) schema: Option<String>,
}

/// Opens the query pool and the chat lock's pool of a `postgres://` URL, after one direct
/// connection has shown that the server answers.
pub(crate) async fn connect(
    url: &str,
    pools: &PgPools,
    ctx: Arc<ErrorContext>,
) -> Result<(PgDialect, PgAdvisoryLocker), ConnectError> {
    let mut connect =
        PgConnectOptions::from_str(url).map_err(|error| ConnectError::InvalidUrl {
            url: ctx.url.clone(),
            reason: ctx.scrub(error.to_string()),
            accepted: crate::url::ACCEPTED_URLS,
        })?;
    // The TLS files are read only in the middle of a handshake, where a missing one would be
    // reported as a bare "No such file or directory": check them first, by name.
    if !matches!(connect.get_ssl_mode(), PgSslMode::Disable) {
        for (parameter, path) in tls_files(url) {
            if let Err(error) = std::fs::File::open(path) {
                return Err(ConnectError::InvalidUrl {
                    url: ctx.url.clone(),
                    reason: format!("its {parameter} `{path}` cannot be read: {error}"),
                    accepted: crate::url::ACCEPTED_URLS,
                });
            }
        }
    }
    if connect.get_application_name().is_none() {
        connect = connect.application_name("sandkeeper");
    }
    if let Some(schema) = &pools.schema {
        if !is_plain_identifier(schema) {
            return Err(ConnectError::InvalidOptions {
                url: ctx.url.clone(),
                reason: format!(
                    "postgres_schema `{schema}` must be 1 to 63 lower-case letters, digits or `_`, \
                     not starting with a digit"
                ),
            });
        }
        connect = connect.options([("search_path", schema.as_str())]);
    }
    // One direct connection first: the pool would retry a refused connection until its timeout
    // and then report only "timed out", while this reports why (refused, unknown database,
    // authentication failed).
    match tokio::time::timeout(pools.acquire_timeout, connect.connect()).await {
        Err(_) => {
            return Err(ConnectError::Unreachable {
                url: ctx.url.clone(),
                reason: format!(
                    "no answer within {:?}; is the server running and reachable?",
                    pools.acquire_timeout
                ),
            });
        }
        Ok(Err(error)) => {
            return Err(ConnectError::Unreachable {
                url: ctx.url.clone(),
                reason: ctx.connect_reason(&error),
            });
        }
        Ok(Ok(probe)) => {
            let _ = probe.close().await;
        }
    }
    let queries = PgPoolOptions::new()
        .max_connections(pools.max_connections.max(1))
        .acquire_timeout(pools.acquire_timeout)
        .connect_lazy_with(connect.clone());
    // min_connections stays 0: a lock's connection may be detached and dropped outside a
    // runtime, where a pool refilling itself could not spawn its task.
    let locks = PgPoolOptions::new()
        .max_connections(pools.max_lock_connections.max(1))
        .min_connections(0)
        .acquire_timeout(pools.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_lazy_with(connect);
    let locker = PgAdvisoryLocker {
        locks,
        control: queries.clone(),
        local: ProcessLocalLocker::new(),
        ctx: Arc::clone(&ctx),
    };
    Ok((PgDialect { pool: queries, ctx }, locker))
}

/// The files a URL's `sslrootcert`, `sslcert` and `sslkey` name (those written plainly; a
/// percent-encoded path is left to sqlx).
fn tls_files(url: &str) -> Vec<(&str, &str)> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, path)| {
            ["sslrootcert", "sslcert", "sslkey"].contains(key)
                && !path.is_empty()
                && !path.contains('%')
        })
        .collect()
}

fn is_plain_identifier(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}
