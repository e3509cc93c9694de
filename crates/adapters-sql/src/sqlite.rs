//! The SQLite store: sessions and leases in one file (or in memory).
//!
//! Timestamps are INTEGER microseconds since the Unix epoch (UTC); ids are lower-case hyphenated
//! UUID text. Every write is a single statement in autocommit mode, so that SQLite takes the
//! write lock when the statement starts and waits for it with the busy timeout, instead of
//! failing an upgrade from a read transaction.

use std::sync::Arc;

use async_trait::async_trait;
use sandkeeper_domain::{ChatId, SandboxSession, SandboxStatus, SessionId, Timestamp};
use sandkeeper_ports::{
    Cause, LeaseRequest, MaintenanceLeases, SaveError, SessionRepository, StoreError,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use crate::error::{ErrorContext, is_running_per_chat_violation, is_sqlite_busy};
use crate::rows::{
    RawSession, SESSION_COLUMNS, distinct_statuses, duration_micros, list_by_status_sql, sql_limit,
};
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
pub(crate) async fn refuse_read_only(
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

pub(crate) fn to_micros(at: Timestamp) -> i64 {
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
        }
        .into_session()
    }
}

fn sessions_from_rows(rows: &[SqliteRow]) -> Result<Vec<SandboxSession>, StoreError> {
    rows.iter().map(session_from_row).collect()
}

const UPSERT: &str = "INSERT INTO sandbox_sessions \
     (session_id, chat_id, container_id, status, created_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (session_id) DO UPDATE SET \
     chat_id = excluded.chat_id, container_id = excluded.container_id, status = excluded.status, \
     created_at = excluded.created_at, expires_at = excluded.expires_at";

pub(crate) struct SqliteSessions {
    pub(crate) pool: SqlitePool,
    /// Reads the chat lookup on the calling thread; `None` for an in-memory database, which
    /// only the pool's one connection can see.
    pub(crate) reader: Option<Arc<InlineReader>>,
    pub(crate) ctx: Arc<ErrorContext>,
}

impl SqliteSessions {
    /// Saves many sessions in one transaction, with multi-row inserts.
    pub(crate) async fn save_many(&self, sessions: &[SandboxSession]) -> Result<(), SaveError> {
        let store = |error| SaveError::Store(self.ctx.store_error(error));
        let mut tx = self.pool.begin().await.map_err(store)?;
        // 6 parameters a row; SQLite allows 32766 parameters in a statement.
        for chunk in sessions.chunks(1000) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO sandbox_sessions \
                 (session_id, chat_id, container_id, status, created_at, expires_at) ",
            );
            insert.push_values(chunk, |mut row, session| {
                row.push_bind(id_text(session.session_id.as_uuid()))
                    .push_bind(id_text(session.chat_id.as_uuid()))
                    .push_bind(session.container_id.as_str().to_owned())
                    .push_bind(session.status.as_str())
                    .push_bind(to_micros(session.created_at))
                    .push_bind(to_micros(session.expires_at));
            });
            insert.push(
                " ON CONFLICT (session_id) DO UPDATE SET \
                 chat_id = excluded.chat_id, container_id = excluded.container_id, \
                 status = excluded.status, created_at = excluded.created_at, \
                 expires_at = excluded.expires_at",
            );
            if let Err(error) = insert.build().execute(&mut *tx).await {
                if is_running_per_chat_violation(&error) {
                    drop(tx);
                    return Err(crate::store::conflict_in_batch(self, sessions).await);
                }
                return Err(store(error));
            }
        }
        tx.commit().await.map_err(store)
    }
}

#[async_trait]
impl SessionRepository for SqliteSessions {
    async fn get_running_by_chat(
        &self,
        chat_id: ChatId,
    ) -> Result<Option<SandboxSession>, StoreError> {
        let chat = id_text(chat_id.as_uuid());
        if let Some(found) = self.reader.as_ref().and_then(|reader| reader.running_by_chat(&chat)) {
            return found.map(SessionRow::into_session).transpose();
        }
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sandbox_sessions \
             WHERE chat_id = ?1 AND status = 'running'"
        ))
        .bind(chat)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn get(&self, session_id: SessionId) -> Result<Option<SandboxSession>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sandbox_sessions WHERE session_id = ?1"
        ))
        .bind(id_text(session_id.as_uuid()))
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn save(&self, session: &SandboxSession) -> Result<(), SaveError> {
        let result = sqlx::query(UPSERT)
            .bind(id_text(session.session_id.as_uuid()))
            .bind(id_text(session.chat_id.as_uuid()))
            .bind(session.container_id.as_str())
            .bind(session.status.as_str())
            .bind(to_micros(session.created_at))
            .bind(to_micros(session.expires_at))
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_running_per_chat_violation(&error) => {
                Err(SaveError::Conflict { chat_id: session.chat_id })
            }
            Err(error) => Err(SaveError::Store(self.ctx.store_error(error))),
        }
    }

    async fn list_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sandbox_sessions \
             WHERE status = 'running' AND expires_at <= ?1 \
             ORDER BY expires_at, session_id LIMIT ?2"
        ))
        .bind(to_micros(now))
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        sessions_from_rows(&rows)
    }

    async fn list_after(
        &self,
        statuses: &[SandboxStatus],
        after: Option<(Timestamp, SessionId)>,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        let statuses = distinct_statuses(statuses);
        if statuses.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let sql = list_by_status_sql(&statuses, '?', after.is_some());
        let mut query = sqlx::query(&sql).bind(sql_limit(limit));
        if let Some((created_at, session_id)) = after {
            query = query.bind(to_micros(created_at)).bind(id_text(session_id.as_uuid()));
        }
        let rows =
            query.fetch_all(&self.pool).await.map_err(|error| self.ctx.store_error(error))?;
        sessions_from_rows(&rows)
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sandbox_sessions WHERE status = 'running'")
                .fetch_one(&self.pool)
                .await
                .map_err(|error| self.ctx.store_error(error))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn delete(&self, session_id: SessionId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sandbox_sessions WHERE session_id = ?1")
            .bind(id_text(session_id.as_uuid()))
            .execute(&self.pool)
            .await
            .map_err(|error| self.ctx.store_error(error))?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_terminal(&self, session_id: SessionId) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM sandbox_sessions \
             WHERE session_id = ?1 AND status IN ('stopped', 'crashed')",
        )
        .bind(id_text(session_id.as_uuid()))
        .execute(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        Ok(done.rows_affected() == 1)
    }

    async fn extend_expiry(
        &self,
        session_id: SessionId,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sandbox_sessions SET expires_at = ?2 \
             WHERE session_id = ?1 AND status = 'running' AND expires_at < ?2",
        )
        .bind(id_text(session_id.as_uuid()))
        .bind(to_micros(expires_at))
        .execute(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        Ok(done.rows_affected() == 1)
    }

    async fn transition(
        &self,
        session_id: SessionId,
        from: SandboxStatus,
        to: SandboxStatus,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sandbox_sessions SET status = ?3 WHERE session_id = ?1 AND status = ?2",
        )
        .bind(id_text(session_id.as_uuid()))
        .bind(from.as_str())
        .bind(to.as_str())
        .execute(&self.pool)
        .await;
        match done {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(error) if is_running_per_chat_violation(&error) => {
                Err(StoreError::Failed(format!(
                    "session {session_id} cannot become running: its chat already has another running session"
                ).into()))
            }
            Err(error) => Err(self.ctx.store_error(error)),
        }
    }
}

/// Leases judged by this process's clock: SQLite serves one host, so there is no other clock
/// to disagree with.
pub(crate) struct SqliteLeases {
    pub(crate) pool: SqlitePool,
    pub(crate) ctx: Arc<ErrorContext>,
}

impl SqliteLeases {
    fn now() -> i64 {
        to_micros(chrono::Utc::now())
    }
}

#[async_trait]
impl MaintenanceLeases for SqliteLeases {
    async fn try_acquire(&self, request: &LeaseRequest<'_>) -> Result<bool, StoreError> {
        let failed = |error| self.ctx.store_error(error);
        // One reading of the clock for all three statements, so that they judge the same instant.
        let now = Self::now();
        let recent_cutoff = now.saturating_sub(duration_micros(request.min_interval));
        let existing: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT lease_expires_at, last_completed_at FROM maintenance_leases WHERE name = ?1",
        )
        .bind(request.name)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        match existing {
            Some((lease_expires_at, last_completed_at)) => {
                let held = lease_expires_at > now;
                let recently_done = last_completed_at.is_some_and(|done| done > recent_cutoff);
                if held || recently_done {
                    return Ok(false);
                }
            }
            None => {
                sqlx::query(
                    "INSERT INTO maintenance_leases (name, holder, lease_expires_at, last_completed_at) \
                     VALUES (?1, NULL, ?2, NULL) ON CONFLICT (name) DO NOTHING",
                )
                .bind(request.name)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(failed)?;
            }
        }
        let won = sqlx::query(
            "UPDATE maintenance_leases SET holder = ?2, lease_expires_at = ?3 \
             WHERE name = ?1 AND lease_expires_at <= ?4 \
             AND (last_completed_at IS NULL OR last_completed_at <= ?5)",
        )
        .bind(request.name)
        .bind(request.holder)
        .bind(now.saturating_add(duration_micros(request.duration)))
        .bind(now)
        .bind(recent_cutoff)
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(won.rows_affected() == 1)
    }

    async fn complete(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let now = Self::now();
        sqlx::query(
            "UPDATE maintenance_leases \
             SET holder = NULL, lease_expires_at = ?3, last_completed_at = ?3 \
             WHERE name = ?1 AND holder = ?2",
        )
        .bind(name)
        .bind(holder)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        Ok(())
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let now = Self::now();
        sqlx::query(
            "UPDATE maintenance_leases SET holder = NULL, lease_expires_at = ?3 \
             WHERE name = ?1 AND holder = ?2",
        )
        .bind(name)
        .bind(holder)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        Ok(())
    }
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
        sqlx::raw_sql(include_str!("../migrations/sqlite/20260401000001_sessions_and_leases.sql"))
            .execute(&pool)
            .await
            .unwrap();
        let sql = list_by_status_sql(&distinct_statuses(statuses), '?', after);
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
