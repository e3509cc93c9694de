//! The SQLite dialect: sessions and leases in one file (or in memory), one host.
//!
//! Timestamps are INTEGER microseconds since the Unix epoch (UTC); ids are lower-case hyphenated
//! UUID text. A single write statement runs in autocommit mode, so that SQLite takes the write
//! lock when the statement starts and waits for it with the busy timeout, instead of failing an
//! upgrade from a read transaction.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sandkeeper_domain::{ChatId, SandboxSession, Timestamp};
use sandkeeper_ports::{Cause, StoreError};
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool};
use uuid::Uuid;

use crate::dialect::{
    Dialect, Statement, Value, execute_in_one_transaction, same_in_every_dialect,
};
use crate::error::{ConnectError, ErrorContext, is_sqlite_busy};
use crate::rows::{RawSession, duration_micros};
use crate::sqlite_inline::{InlineReader, SessionRow};

/// Refuses a connection that cannot write.
///
/// SQLite opens a file it may not write (read-only permissions, an immutable file, a read-only
/// mount) read-only without saying so, and such a connection goes on refusing writes after the
/// file is writable again: kept in the pool, it would fail writes until a restart. So a new
/// connection proves that it may write before it joins the pool; a refused one makes the pool
/// try again until its acquire timeout, and the caller gets `Unavailable`.
///
/// The proof is a write statement that changes nothing (`BEGIN IMMEDIATE` does not do: in WAL
/// mode it succeeds on a read-only connection). It never waits for another writer: a database
/// that is busy is a database that is writable. A file without the schema yet (a first start)
/// has nothing to prove; its migrations write first.
async fn refuse_read_only(
    connection: &mut sqlx::SqliteConnection,
    busy_timeout: std::time::Duration,
) -> Result<(), sqlx::Error> {
    let has_schema: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sandbox_sessions'",
    )
    .fetch_optional(&mut *connection)
    .await?;
    if has_schema.is_none() {
        return Ok(());
    }
    sqlx::query("PRAGMA busy_timeout = 0").execute(&mut *connection).await?;
    let checked =
        match sqlx::query("DELETE FROM sandbox_sessions WHERE 0").execute(&mut *connection).await {
            Ok(_) => Ok(()),
            Err(error) if is_sqlite_busy(&error) => Ok(()),
            Err(error) => Err(error),
        };
    let busy_timeout_ms = busy_timeout.as_millis().min(i32::MAX as u128);
    sqlx::query(&format!("PRAGMA busy_timeout = {busy_timeout_ms}"))
        .execute(&mut *connection)
        .await?;
    checked
}

fn to_micros(at: Timestamp) -> i64 {
    at.timestamp_micros()
}

fn from_micros(micros: i64, column: &str) -> Result<Timestamp, StoreError> {
    Timestamp::from_timestamp_micros(micros).ok_or_else(|| {
        StoreError::Failed(
            format!("{column} = {micros} in the store is not a valid instant").into(),
        )
    })
}

fn id_text(uuid: &Uuid) -> String {
    uuid.hyphenated().to_string()
}

fn session_from_row(row: &SqliteRow) -> Result<SandboxSession, StoreError> {
    let unreadable = |error: sqlx::Error| {
        StoreError::Failed(Cause::new(error).context("a sandbox_sessions row could not be read"))
    };
    let column =
        |name: &str| -> Result<String, StoreError> { row.try_get(name).map_err(unreadable) };
    let micros = |name: &str| -> Result<i64, StoreError> { row.try_get(name).map_err(unreadable) };
    SessionRow {
        session_id: column("session_id")?,
        chat_id: column("chat_id")?,
        container_id: column("container_id")?,
        status: column("status")?,
        created_at: micros("created_at")?,
        expires_at: micros("expires_at")?,
        engine: column("engine")?,
    }
    .into_session()
}

impl SessionRow {
    fn into_session(self) -> Result<SandboxSession, StoreError> {
        let uuid = |column: &str, text: &str| -> Result<Uuid, StoreError> {
            Uuid::parse_str(text).map_err(|_| {
                StoreError::Failed(format!("{column} `{text}` in the store is not a UUID").into())
            })
        };
        RawSession {
            session_id: uuid("session_id", &self.session_id)?,
            chat_id: uuid("chat_id", &self.chat_id)?,
            container_id: self.container_id,
            status: self.status,
            created_at: from_micros(self.created_at, "created_at")?,
            expires_at: from_micros(self.expires_at, "expires_at")?,
            engine: self.engine,
        }
        .into_session()
    }
}

fn bind<'q>(
    query: Query<'q, Sqlite, SqliteArguments<'q>>,
    value: Value,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    match value {
        Value::Id(uuid) => query.bind(id_text(&uuid)),
        Value::Time(at) => query.bind(to_micros(at)),
        Value::Span(span) => query.bind(duration_micros(span)),
        Value::Text(text) => query.bind(text),
        Value::Int(int) => query.bind(int),
    }
}

fn query(statement: &Statement) -> Query<'_, Sqlite, SqliteArguments<'_>> {
    statement.values.iter().cloned().fold(sqlx::query(&statement.sql), bind)
}

/// The SQLite store's pool, and its inline reader of the chat lookup.
pub(crate) struct SqliteDialect {
    pub(crate) pool: SqlitePool,
    /// Reads the chat lookup on the calling thread; `None` for an in-memory database, which
    /// only the pool's one connection can see.
    pub(crate) reader: Option<Arc<InlineReader>>,
    pub(crate) ctx: Arc<ErrorContext>,
    /// Whether the file takes writes, as the last write found; `None` for a store opened
    /// read-only on purpose (`mode=ro`).
    pub(crate) writes: Option<WriteHealth>,
}

/// How long a write probe may wait for the write lock before it counts as refused: well within
/// a readiness check's own timeout.
const PROBE_PATIENCE: Duration = Duration::from_secs(1);

/// What the store knows of its own writes: whether the last one went through, and when a
/// write was last tried, so that readiness can say "refuses writes" without writing on every
/// probe.
///
/// Every write through the pool records its outcome: refused (the file, its directory or its
/// disk does not take writes, or no connection could be had) or taken (also a write that broke a
/// constraint: the file took the attempt). [`WriteHealth::check`] writes a probe row only when
/// no write has been tried for `probe_interval` (nor probed), so that a file that went
/// read-only while idle is found, and one that is writable again is seen within an interval.
pub(crate) struct WriteHealth {
    probe_interval: Duration,
    state: std::sync::Mutex<WriteState>,
}

#[derive(Default)]
struct WriteState {
    /// Why the last write was refused; `None` after one that went through.
    refused: Option<String>,
    /// When a write (or a probe) last started.
    last_try: Option<std::time::Instant>,
}

impl WriteHealth {
    pub(crate) fn new(probe_interval: Duration) -> Self {
        Self { probe_interval, state: std::sync::Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record<T>(&self, outcome: &Result<T, sqlx::Error>) {
        let refused = match outcome {
            Err(error) if refuses_writes(error) => Some(error.to_string()),
            _ => None,
        };
        let mut state = self.state();
        state.refused = refused;
        state.last_try.get_or_insert_with(std::time::Instant::now);
    }

    /// Whether a probe is due, claiming it: at most one per `probe_interval`.
    fn claim_probe(&self) -> bool {
        let now = std::time::Instant::now();
        let mut state = self.state();
        let due = state.last_try.is_none_or(|at| now.duration_since(at) >= self.probe_interval);
        if due {
            state.last_try = Some(now);
        }
        due
    }

    fn refuse(&self, why: String) {
        self.state().refused = Some(why);
    }

    fn refused(&self) -> Option<String> {
        self.state().refused.clone()
    }
}

/// Whether a failed write means the file does not take writes now (rather than that the write
/// itself was wrong): no connection within the timeout, an I/O failure, or SQLite's BUSY,
/// LOCKED, READONLY, IOERR, FULL or CANTOPEN.
fn refuses_writes(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6 | 8 | 10 | 13 | 14)),
        _ => false,
    }
}

impl SqliteDialect {
    /// Whether the store serves: it answers a read, and takes writes as far as the last write
    /// (or a probe, when none was tried for a while) found.
    pub(crate) async fn check(&self) -> Result<(), StoreError> {
        if let Err(error) = sqlx::query("SELECT 1").execute(&self.pool).await {
            // A file that refuses writes may not open new connections either; say what the
            // writes found, with the read's own failure under it.
            let refused = self.writes.as_ref().and_then(WriteHealth::refused);
            return Err(match (refused, self.ctx.store_error(error)) {
                (Some(why), StoreError::Unavailable(cause) | StoreError::Failed(cause)) => {
                    StoreError::Unavailable(cause.context(format!(
                        "the database at `{}` refuses writes ({why}) and answers no read",
                        self.ctx.url
                    )))
                }
                (None, error) => error,
            });
        }
        let Some(health) = &self.writes else {
            return Ok(());
        };
        if health.claim_probe() {
            let probe = Statement::new(format!(
                "INSERT INTO store_write_probe (id, written_at) VALUES (1, {now}) \
                 ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
                now = Self::NOW
            ));
            // The outcome is recorded like any write's; a refusal is reported below. A probe
            // that waits (another process holds the write lock) is given up on before a caller's
            // own timeout could drop it unrecorded, and counts as refused.
            let probed = tokio::time::timeout(PROBE_PATIENCE, self.execute(vec![probe])).await;
            if probed.is_err() {
                health
                    .refuse(format!("a probe write did not go through within {PROBE_PATIENCE:?}"));
            }
        }
        match health.refused() {
            None => Ok(()),
            Some(why) => Err(StoreError::Unavailable(
                format!("the database at `{}` refuses writes: {why}", self.ctx.url).into(),
            )),
        }
    }

    async fn write(&self, statements: &[Statement]) -> Result<u64, sqlx::Error> {
        execute_in_one_transaction!(&self.pool, statements)
    }
}

impl Dialect for SqliteDialect {
    /// Microseconds since the epoch by the host's clock (`julianday` counts days, to the
    /// millisecond), the same instant for every use within one statement.
    const NOW: &'static str = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

    /// One writer at a time, whatever the process: a single statement is already one step.
    const WRITERS_LOCK: Option<&'static str> = None;

    const SKIP_LOCKED: &'static str = "";

    same_in_every_dialect!();

    async fn flags(&self, statement: Statement) -> Result<Option<Vec<bool>>, sqlx::Error> {
        let row = query(&statement).fetch_optional(&self.pool).await?;
        // An expression's column has no declared type: read the integer SQLite gives.
        let Some(row) = row else { return Ok(None) };
        (0..row.len())
            .map(|n| Ok(row.try_get_unchecked::<i64, _>(n)? != 0))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    async fn execute(&self, statements: Vec<Statement>) -> Result<u64, sqlx::Error> {
        if let Some(health) = &self.writes {
            health.state().last_try = Some(std::time::Instant::now());
        }
        let outcome = self.write(&statements).await;
        if let Some(health) = &self.writes {
            health.record(&outcome);
        }
        outcome
    }

    fn running_by_chat_inline(
        &self,
        chat_id: ChatId,
    ) -> Option<Result<Option<SandboxSession>, StoreError>> {
        let found = self.reader.as_ref()?.running_by_chat(&id_text(chat_id.as_uuid()))?;
        Some(found.map(SessionRow::into_session).transpose())
    }
}

/// Opens the pool of `sqlite://PATH` (created if missing unless the URL says `mode=...`; WAL,
/// busy timeout and foreign keys on) or of an in-memory database.
pub(crate) async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    busy_timeout: Duration,
    write_probe_interval: Duration,
    ctx: Arc<ErrorContext>,
) -> Result<SqliteDialect, ConnectError> {
    let invalid = |reason: String| ConnectError::InvalidUrl {
        url: ctx.url.clone(),
        reason,
        accepted: crate::url::ACCEPTED_URLS,
    };
    let mut connect = SqliteConnectOptions::from_str(url)
        .map_err(|error| invalid(ctx.scrub(error.to_string())))?;
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let in_memory = url.contains(":memory:") || query.split('&').any(|p| p == "mode=memory");
    let read_only = query.split('&').any(|pair| pair == "mode=ro");
    if !query.split('&').any(|pair| pair.starts_with("mode=")) {
        connect = connect.create_if_missing(true);
    }
    connect = connect.busy_timeout(busy_timeout).foreign_keys(true);
    // A connection to a local file does not go stale, so it is not pinged when taken from the
    // pool: each ping is a round trip to the connection's worker thread, as costly as a short
    // query itself.
    let mut pool =
        SqlitePoolOptions::new().acquire_timeout(acquire_timeout).test_before_acquire(false);
    if in_memory {
        // Each connection to an in-memory database that closes for good loses it; and a shared
        // cache locks whole tables without waiting for the busy timeout. One connection, kept.
        pool = pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
    } else {
        // WAL lets readers run beside the one writer; NORMAL sync is durable against a crash of
        // the process (not of the machine's power), at a fraction of FULL's cost.
        connect =
            connect.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal);
        pool = pool.max_connections(max_connections.max(1));
        if !read_only {
            pool = pool.after_connect(move |connection, _| {
                Box::pin(refuse_read_only(connection, busy_timeout))
            });
        }
    }
    let reader = (!in_memory).then(|| Arc::new(InlineReader::new(connect.get_filename())));
    let file = connect.get_filename().display().to_string();
    let pool = pool.connect_with(connect).await.map_err(|error| {
        let mut reason = ctx.scrub(error.to_string());
        if !in_memory {
            reason.push_str(&format!(
                " (file `{file}`: does its directory exist and is it writable? \
                 Add ?mode=rwc to create a missing file)"
            ));
        }
        ConnectError::Unreachable { url: ctx.url.clone(), reason }
    })?;
    let writes = (!read_only).then(|| WriteHealth::new(write_probe_interval));
    Ok(SqliteDialect { pool, reader, ctx, writes })
}

#[cfg(test)]
mod tests {
    use sandkeeper_domain::SandboxStatus;
    use sqlx::Row;
    use sqlx::sqlite::SqlitePoolOptions;

    use crate::rows::{distinct_statuses, list_by_status_sql};

    /// What SQLite plans for the listing this adapter sends, on a fresh database without
    /// statistics, the state every new file starts in.
    async fn plan(statuses: &[SandboxStatus], after: bool) -> String {
        let pool =
            SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        for migration in [
            include_str!("../migrations/sqlite/20260401000001_sessions_and_leases.sql"),
            include_str!("../migrations/sqlite/20261206000002_session_engine.sql"),
        ] {
            sqlx::raw_sql(migration).execute(&pool).await.unwrap();
        }
        let sql = list_by_status_sql(&distinct_statuses(statuses), after);
        let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
            .bind(250_i64)
            .bind(0_i64)
            .bind("00000000-0000-0000-0000-000000000000")
            .fetch_all(&pool)
            .await
            .unwrap();
        rows.iter().map(|row| row.get::<String, _>("detail")).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn each_status_of_a_listing_is_a_range_of_its_own_index_also_after_a_position() {
        let terminal = [SandboxStatus::Stopped, SandboxStatus::Crashed];
        for statuses in [&[SandboxStatus::Running][..], &terminal, &SandboxStatus::ALL] {
            let first_page = plan(statuses, false).await;
            let next_page = plan(statuses, true).await;
            for status in statuses {
                let index =
                    format!("sandbox_sessions USING INDEX sandbox_sessions_{status}_by_created");
                assert!(first_page.contains(&index), "{first_page}");
                // The position is where the index range starts, not a filter over the range.
                let range = format!("SEARCH {index} ((created_at,session_id)>(?,?))");
                assert!(next_page.contains(&range), "{next_page}");
            }
            for plan in [&first_page, &next_page] {
                assert!(!plan.lines().any(|step| step == "SCAN sandbox_sessions"), "{plan}");
            }
        }
    }
}
