//! The PostgreSQL store: sessions and leases shared by several replicas.
//!
//! Ids are `uuid`, timestamps `timestamptz`. Leases are judged by the database's clock
//! (`now()`), never by the replicas' clocks, so that replicas whose clocks disagree still agree
//! on who holds a lease.

use std::sync::Arc;

use async_trait::async_trait;
use sandkeeper_domain::{ChatId, SandboxSession, SandboxStatus, SessionId, Timestamp};
use sandkeeper_ports::{
    Cause, LeaseRequest, MaintenanceLeases, SaveError, SessionRepository, StoreError,
};
use sqlx::postgres::PgRow;
use sqlx::postgres::types::PgInterval;
use sqlx::{PgPool, Row};

use crate::error::{ErrorContext, is_running_per_chat_violation};
use crate::rows::{
    RawSession, SESSION_COLUMNS, distinct_statuses, duration_micros, list_by_status_sql, sql_limit,
};

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
    }
    .into_session()
}

fn sessions_from_rows(rows: &[PgRow]) -> Result<Vec<SandboxSession>, StoreError> {
    rows.iter().map(session_from_row).collect()
}

fn interval(duration: std::time::Duration) -> PgInterval {
    PgInterval { months: 0, days: 0, microseconds: duration_micros(duration) }
}

const UPSERT_TAIL: &str = " ON CONFLICT (session_id) DO UPDATE SET \
     chat_id = excluded.chat_id, container_id = excluded.container_id, status = excluded.status, \
     created_at = excluded.created_at, expires_at = excluded.expires_at";

pub(crate) struct PgSessions {
    pub(crate) pool: PgPool,
    pub(crate) ctx: Arc<ErrorContext>,
}

impl PgSessions {
    /// Saves many sessions in one transaction, with multi-row inserts.
    pub(crate) async fn save_many(&self, sessions: &[SandboxSession]) -> Result<(), SaveError> {
        let store = |error| SaveError::Store(self.ctx.store_error(error));
        let mut tx = self.pool.begin().await.map_err(store)?;
        // 6 parameters a row; PostgreSQL allows 65535 parameters in a statement.
        for chunk in sessions.chunks(1000) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO sandbox_sessions \
                 (session_id, chat_id, container_id, status, created_at, expires_at) ",
            );
            insert.push_values(chunk, |mut row, session| {
                row.push_bind(*session.session_id.as_uuid())
                    .push_bind(*session.chat_id.as_uuid())
                    .push_bind(session.container_id.as_str().to_owned())
                    .push_bind(session.status.as_str())
                    .push_bind(session.created_at)
                    .push_bind(session.expires_at);
            });
            insert.push(UPSERT_TAIL);
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
impl SessionRepository for PgSessions {
    async fn get_running_by_chat(
        &self,
        chat_id: ChatId,
    ) -> Result<Option<SandboxSession>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sandbox_sessions \
             WHERE chat_id = $1 AND status = 'running'"
        ))
        .bind(chat_id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn get(&self, session_id: SessionId) -> Result<Option<SandboxSession>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sandbox_sessions WHERE session_id = $1"
        ))
        .bind(session_id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn save(&self, session: &SandboxSession) -> Result<(), SaveError> {
        let result = sqlx::query(&format!(
            "INSERT INTO sandbox_sessions \
             (session_id, chat_id, container_id, status, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6){UPSERT_TAIL}"
        ))
        .bind(session.session_id.as_uuid())
        .bind(session.chat_id.as_uuid())
        .bind(session.container_id.as_str())
        .bind(session.status.as_str())
        .bind(session.created_at)
        .bind(session.expires_at)
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
             WHERE status = 'running' AND expires_at <= $1 \
             ORDER BY expires_at, session_id LIMIT $2"
        ))
        .bind(now)
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
        let sql = list_by_status_sql(&statuses, '$', after.is_some());
        let mut query = sqlx::query(&sql).bind(sql_limit(limit));
        if let Some((created_at, session_id)) = after {
            query = query.bind(created_at).bind(*session_id.as_uuid());
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
        let done = sqlx::query("DELETE FROM sandbox_sessions WHERE session_id = $1")
            .bind(session_id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(|error| self.ctx.store_error(error))?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_terminal(&self, session_id: SessionId) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM sandbox_sessions \
             WHERE session_id = $1 AND status IN ('stopped', 'crashed')",
        )
        .bind(session_id.as_uuid())
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
            "UPDATE sandbox_sessions SET expires_at = $2 \
             WHERE session_id = $1 AND status = 'running' AND expires_at < $2",
        )
        .bind(session_id.as_uuid())
        .bind(expires_at)
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
            "UPDATE sandbox_sessions SET status = $3 WHERE session_id = $1 AND status = $2",
        )
        .bind(session_id.as_uuid())
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

pub(crate) struct PgLeases {
    pub(crate) pool: PgPool,
    pub(crate) ctx: Arc<ErrorContext>,
}

#[async_trait]
impl MaintenanceLeases for PgLeases {
    async fn try_acquire(&self, request: &LeaseRequest<'_>) -> Result<bool, StoreError> {
        let failed = |error| self.ctx.store_error(error);
        // Read first: while the lease is held or was completed recently, nobody writes.
        let gate: Option<(bool, bool)> = sqlx::query_as(
            "SELECT lease_expires_at > now(), \
             coalesce(last_completed_at > now() - $2, false) \
             FROM maintenance_leases WHERE name = $1",
        )
        .bind(request.name)
        .bind(interval(request.min_interval))
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        match gate {
            Some((held, recently_done)) => {
                if held || recently_done {
                    return Ok(false);
                }
            }
            None => {
                sqlx::query(
                    "INSERT INTO maintenance_leases (name, holder, lease_expires_at, last_completed_at) \
                     VALUES ($1, NULL, now(), NULL) ON CONFLICT (name) DO NOTHING",
                )
                .bind(request.name)
                .execute(&self.pool)
                .await
                .map_err(failed)?;
            }
        }
        // Under READ COMMITTED a concurrent winner's update is waited for and the condition
        // re-checked against its row, so exactly one of many racing updates changes the row.
        let won = sqlx::query(
            "UPDATE maintenance_leases SET holder = $2, lease_expires_at = now() + $3 \
             WHERE name = $1 AND lease_expires_at <= now() \
             AND (last_completed_at IS NULL OR last_completed_at <= now() - $4)",
        )
        .bind(request.name)
        .bind(request.holder)
        .bind(interval(request.duration))
        .bind(interval(request.min_interval))
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(won.rows_affected() == 1)
    }

    async fn complete(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE maintenance_leases \
             SET holder = NULL, lease_expires_at = now(), last_completed_at = now() \
             WHERE name = $1 AND holder = $2",
        )
        .bind(name)
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        Ok(())
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE maintenance_leases SET holder = NULL, lease_expires_at = now() \
             WHERE name = $1 AND holder = $2",
        )
        .bind(name)
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(|error| self.ctx.store_error(error))?;
        Ok(())
    }
}
