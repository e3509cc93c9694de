//! The session repository, written once for both backends over a [`Dialect`].

use std::sync::Arc;

use async_trait::async_trait;
use sandkeeper_domain::{
    ChatId, ContainerId, EngineName, SandboxSession, SandboxStatus, SessionId, Timestamp,
};
use sandkeeper_ports::Cause;
use sandkeeper_ports::{SaveError, SessionRepository, StoreError};

use crate::dialect::{Dialect, Statement, Value};
use crate::error::is_running_per_chat_violation;
use crate::rows::{SESSION_COLUMNS, distinct_statuses, list_by_status_sql, sql_limit};

const INSERT_INTO: &str = "INSERT INTO sandbox_sessions \
     (session_id, chat_id, container_id, status, created_at, expires_at, engine) VALUES ";

const UPSERT_TAIL: &str = " ON CONFLICT (session_id) DO UPDATE SET \
     chat_id = excluded.chat_id, container_id = excluded.container_id, status = excluded.status, \
     created_at = excluded.created_at, expires_at = excluded.expires_at, engine = excluded.engine";

/// Rows of one multi-row insert: 7 parameters a row, well under both backends' limits
/// (32766 on SQLite, 65535 on PostgreSQL).
/// The parameters of one row.
const COLUMNS: usize = 7;

const ROWS_PER_INSERT: usize = 1000;

/// `INSERT ... VALUES (...), (...) ON CONFLICT ... DO UPDATE` for `sessions`.
fn upsert(sessions: &[SandboxSession]) -> Statement {
    let mut sql = String::from(INSERT_INTO);
    let mut values = Vec::with_capacity(sessions.len() * COLUMNS);
    for (n, session) in sessions.iter().enumerate() {
        let first = n * COLUMNS;
        if n > 0 {
            sql.push_str(", ");
        }
        let placeholders: Vec<String> = (1..=COLUMNS).map(|k| format!("${}", first + k)).collect();
        sql.push_str(&format!("({})", placeholders.join(", ")));
        values.extend([
            Value::Id(*session.session_id.as_uuid()),
            Value::Id(*session.chat_id.as_uuid()),
            Value::Text(session.container_id.as_str().to_owned()),
            Value::Text(session.status.as_str().to_owned()),
            Value::Time(session.created_at),
            Value::Time(session.expires_at),
            Value::Text(session.engine.as_str().to_owned()),
        ]);
    }
    sql.push_str(UPSERT_TAIL);
    Statement { sql, values }
}

fn by_session(sql: &str, session_id: SessionId) -> Statement {
    Statement::new(sql).bind(Value::Id(*session_id.as_uuid()))
}

/// Sessions in the store of dialect `D`.
pub(crate) struct SqlSessions<D> {
    pub(crate) db: Arc<D>,
}

impl<D: Dialect> SqlSessions<D> {
    pub(crate) fn new(db: Arc<D>) -> Self {
        Self { db }
    }

    /// Saves many sessions in one transaction (all or none), with multi-row inserts.
    pub(crate) async fn save_many(&self, sessions: &[SandboxSession]) -> Result<(), SaveError> {
        let statements = sessions.chunks(ROWS_PER_INSERT).map(upsert).collect();
        match self.db.execute(statements).await {
            Ok(_) => Ok(()),
            Err(error) if is_running_per_chat_violation(&error) => {
                Err(self.conflict_in_batch(sessions).await)
            }
            Err(error) => Err(SaveError::Store(self.db.store_error(error))),
        }
    }

    /// Which chat made a batch conflict: a running session whose chat already has another
    /// running session, in the store or earlier in the batch.
    async fn conflict_in_batch(&self, sessions: &[SandboxSession]) -> SaveError {
        let running = || sessions.iter().filter(|s| s.status == SandboxStatus::Running);
        for (n, session) in running().enumerate() {
            let twice_in_batch = running().take(n).any(|earlier| {
                earlier.chat_id == session.chat_id && earlier.session_id != session.session_id
            });
            let in_store = match self.get_running_by_chat(session.chat_id).await {
                Ok(found) => found.is_some_and(|other| other.session_id != session.session_id),
                Err(error) => return SaveError::Store(error),
            };
            if twice_in_batch || in_store {
                return SaveError::Conflict { chat_id: session.chat_id };
            }
        }
        SaveError::Store(StoreError::Failed(
            "a batch of sessions conflicted with a running session saved concurrently"
                .to_owned()
                .into(),
        ))
    }

    async fn changed(&self, statement: Statement) -> Result<bool, StoreError> {
        let changed = self.db.execute(vec![statement]).await;
        Ok(changed.map_err(|error| self.db.store_error(error))? == 1)
    }

    async fn one(&self, statement: Statement) -> Result<Option<SandboxSession>, StoreError> {
        Ok(self.db.sessions(statement).await?.into_iter().next())
    }
}

#[async_trait]
impl<D: Dialect> SessionRepository for SqlSessions<D> {
    async fn get_running_by_chat(
        &self,
        chat_id: ChatId,
    ) -> Result<Option<SandboxSession>, StoreError> {
        if let Some(found) = self.db.running_by_chat_inline(chat_id) {
            return found;
        }
        self.one(
            Statement::new(format!(
                "SELECT {SESSION_COLUMNS} FROM sandbox_sessions \
                 WHERE chat_id = $1 AND status = 'running'"
            ))
            .bind(Value::Id(*chat_id.as_uuid())),
        )
        .await
    }

    async fn get(&self, session_id: SessionId) -> Result<Option<SandboxSession>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sandbox_sessions WHERE session_id = $1");
        self.one(by_session(&sql, session_id)).await
    }

    async fn save(&self, session: &SandboxSession) -> Result<(), SaveError> {
        match self.db.execute(vec![upsert(std::slice::from_ref(session))]).await {
            Ok(_) => Ok(()),
            Err(error) if is_running_per_chat_violation(&error) => {
                Err(SaveError::Conflict { chat_id: session.chat_id })
            }
            Err(error) => Err(SaveError::Store(self.db.store_error(error))),
        }
    }

    async fn save_within(
        &self,
        session: &SandboxSession,
        max_running: u64,
    ) -> Result<bool, SaveError> {
        // One statement counts and inserts; under the writers' lock (PostgreSQL) no other
        // replica's count runs between them, and a statement that starts after the lock was
        // granted sees every row committed before.
        let mut insert = upsert(std::slice::from_ref(session));
        let row = (1..=COLUMNS).map(|k| format!("${k}")).collect::<Vec<_>>().join(", ");
        let values = format!("VALUES ({row})");
        debug_assert!(insert.sql.contains(&values), "{}", insert.sql);
        insert.sql = insert.sql.replacen(
            &values,
            &format!(
                "SELECT {row} WHERE (SELECT COUNT(*) FROM sandbox_sessions \
                 WHERE status = 'running' AND session_id <> $1) < ${}",
                COLUMNS + 1
            ),
            1,
        );
        insert.values.push(Value::Int(i64::try_from(max_running).unwrap_or(i64::MAX)));
        let mut statements: Vec<Statement> =
            D::WRITERS_LOCK.map(Statement::new).into_iter().collect();
        statements.push(insert);
        match self.db.execute(statements).await {
            Ok(saved) => Ok(saved == 1),
            Err(error) if is_running_per_chat_violation(&error) => {
                Err(SaveError::Conflict { chat_id: session.chat_id })
            }
            Err(error) => Err(SaveError::Store(self.db.store_error(error))),
        }
    }

    async fn list_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        let statement = Statement::new(format!(
            "SELECT {SESSION_COLUMNS} FROM sandbox_sessions \
             WHERE status = 'running' AND expires_at <= $1 \
             ORDER BY expires_at, session_id LIMIT $2"
        ))
        .bind(Value::Time(now))
        .bind(Value::Int(sql_limit(limit)));
        self.db.sessions(statement).await
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
        let mut statement = Statement::new(list_by_status_sql(&statuses, after.is_some()))
            .bind(Value::Int(sql_limit(limit)));
        if let Some((created_at, session_id)) = after {
            statement =
                statement.bind(Value::Time(created_at)).bind(Value::Id(*session_id.as_uuid()));
        }
        self.db.sessions(statement).await
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        let count = self
            .db
            .integer(Statement::new(
                "SELECT COUNT(*) FROM sandbox_sessions WHERE status = 'running'",
            ))
            .await
            .map_err(|error| self.db.store_error(error))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn delete(&self, session_id: SessionId) -> Result<bool, StoreError> {
        self.changed(by_session("DELETE FROM sandbox_sessions WHERE session_id = $1", session_id))
            .await
    }

    async fn delete_terminal(&self, session_id: SessionId) -> Result<bool, StoreError> {
        self.changed(by_session(
            "DELETE FROM sandbox_sessions \
             WHERE session_id = $1 AND status IN ('stopped', 'crashed')",
            session_id,
        ))
        .await
    }

    async fn extend_expiry(
        &self,
        session_id: SessionId,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.changed(
            by_session(
                "UPDATE sandbox_sessions SET expires_at = $2 \
                 WHERE session_id = $1 AND status = 'running' AND expires_at < $2",
                session_id,
            )
            .bind(Value::Time(expires_at)),
        )
        .await
    }

    async fn transition(
        &self,
        session_id: SessionId,
        from: SandboxStatus,
        to: SandboxStatus,
    ) -> Result<bool, StoreError> {
        let statement = by_session(
            "UPDATE sandbox_sessions SET status = $3 WHERE session_id = $1 AND status = $2",
            session_id,
        )
        .bind(Value::Text(from.as_str().to_owned()))
        .bind(Value::Text(to.as_str().to_owned()));
        match self.db.execute(vec![statement]).await {
            Ok(changed) => Ok(changed == 1),
            Err(error) if is_running_per_chat_violation(&error) => {
                Err(StoreError::Failed(format!(
                    "session {session_id} cannot become running: its chat already has another running session"
                ).into()))
            }
            Err(error) => Err(self.db.store_error(error)),
        }
    }

    async fn mark_workspace_used(&self, session_id: SessionId) -> Result<(), StoreError> {
        // Written once per sandbox: a row already marked is left alone.
        self.changed(by_session(
            "UPDATE sandbox_sessions SET workspace_used = TRUE \
             WHERE session_id = $1 AND NOT workspace_used",
            session_id,
        ))
        .await
        .map(drop)
    }

    async fn workspace_used(&self, session_id: SessionId) -> Result<bool, StoreError> {
        let statement = by_session(
            "SELECT workspace_used FROM sandbox_sessions WHERE session_id = $1",
            session_id,
        );
        match self.db.flags(statement).await.map_err(|error| self.db.store_error(error))? {
            Some(flags) => Ok(flags.first().copied().unwrap_or(true)),
            None => Ok(true),
        }
    }

    async fn get_by_container(
        &self,
        container_id: &ContainerId,
    ) -> Result<Option<SandboxSession>, StoreError> {
        self.one(
            Statement::new(format!(
                "SELECT {SESSION_COLUMNS} FROM sandbox_sessions WHERE container_id = $1 \
                 ORDER BY created_at DESC, session_id DESC LIMIT 1"
            ))
            .bind(Value::Text(container_id.as_str().to_owned())),
        )
        .await
    }

    async fn count_running_by_engine(&self) -> Result<Vec<(EngineName, u64)>, StoreError> {
        let counts = self
            .db
            .counts(Statement::new(
                "SELECT engine, COUNT(*) FROM sandbox_sessions WHERE status = 'running' \
                 GROUP BY engine ORDER BY engine",
            ))
            .await
            .map_err(|error| self.db.store_error(error))?;
        counts
            .into_iter()
            .map(|(engine, count)| {
                let engine = EngineName::parse(&engine).map_err(|error| {
                    StoreError::Failed(Cause::new(error).context("a sandbox_sessions row"))
                })?;
                Ok((engine, u64::try_from(count).unwrap_or(0)))
            })
            .collect()
    }
}
