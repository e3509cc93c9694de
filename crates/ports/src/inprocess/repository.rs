use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use sandkeeper_domain::{
    ChatId, ContainerId, EngineName, SandboxSession, SandboxStatus, SessionId, Timestamp,
};

use super::{Locked, lock};
use crate::{SaveError, SessionRepository, StoreError};

/// Sessions kept in a map in this process.
#[derive(Debug, Default)]
pub struct InMemorySessionRepository {
    sessions: Locked<HashMap<SessionId, SandboxSession>>,
    /// The sessions whose workspace an operation used (see `mark_workspace_used`).
    used: Mutex<HashSet<SessionId>>,
}

impl InMemorySessionRepository {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces the session unless a running one would be the chat's second.
    fn save_in(
        sessions: &mut HashMap<SessionId, SandboxSession>,
        session: &SandboxSession,
    ) -> Result<(), SaveError> {
        let conflict = session.status == SandboxStatus::Running
            && sessions.values().any(|other| {
                other.chat_id == session.chat_id
                    && other.status == SandboxStatus::Running
                    && other.session_id != session.session_id
            });
        if conflict {
            return Err(SaveError::Conflict { chat_id: session.chat_id });
        }
        sessions.insert(session.session_id, session.clone());
        Ok(())
    }

    fn sorted(
        sessions: &HashMap<SessionId, SandboxSession>,
        keep: impl Fn(&SandboxSession) -> bool,
        key: impl Fn(&SandboxSession) -> (Timestamp, SessionId),
        limit: usize,
    ) -> Vec<SandboxSession> {
        let mut found: Vec<_> = sessions.values().filter(|s| keep(s)).cloned().collect();
        found.sort_by_key(|s| key(s));
        found.truncate(limit);
        found
    }
}

#[async_trait]
impl SessionRepository for InMemorySessionRepository {
    async fn get_running_by_chat(
        &self,
        chat_id: ChatId,
    ) -> Result<Option<SandboxSession>, StoreError> {
        Ok(self.sessions.with(|sessions| {
            sessions
                .values()
                .find(|s| s.chat_id == chat_id && s.status == SandboxStatus::Running)
                .cloned()
        }))
    }

    async fn get(&self, session_id: SessionId) -> Result<Option<SandboxSession>, StoreError> {
        Ok(self.sessions.with(|sessions| sessions.get(&session_id).cloned()))
    }

    async fn save(&self, session: &SandboxSession) -> Result<(), SaveError> {
        self.sessions.with(|sessions| Self::save_in(sessions, session))
    }

    async fn save_within(
        &self,
        session: &SandboxSession,
        max_running: u64,
    ) -> Result<bool, SaveError> {
        self.sessions.with(|sessions| {
            let others = sessions
                .values()
                .filter(|s| {
                    s.status == SandboxStatus::Running && s.session_id != session.session_id
                })
                .count();
            if u64::try_from(others).unwrap_or(u64::MAX) >= max_running {
                return Ok(false);
            }
            Self::save_in(sessions, session).map(|()| true)
        })
    }

    async fn list_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        Ok(self.sessions.with(|sessions| {
            Self::sorted(
                sessions,
                |s| s.status == SandboxStatus::Running && s.is_expired(now),
                |s| (s.expires_at, s.session_id),
                limit,
            )
        }))
    }

    async fn list_after(
        &self,
        statuses: &[SandboxStatus],
        after: Option<(Timestamp, SessionId)>,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        Ok(self.sessions.with(|sessions| {
            Self::sorted(
                sessions,
                |s| {
                    statuses.contains(&s.status)
                        && after.is_none_or(|after| (s.created_at, s.session_id) > after)
                },
                |s| (s.created_at, s.session_id),
                limit,
            )
        }))
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        Ok(self.sessions.with(|sessions| {
            sessions.values().filter(|s| s.status == SandboxStatus::Running).count() as u64
        }))
    }

    async fn count_running_by_engine(&self) -> Result<Vec<(EngineName, u64)>, StoreError> {
        Ok(self.sessions.with(|sessions| {
            let mut counts = std::collections::BTreeMap::<EngineName, u64>::new();
            for session in sessions.values().filter(|s| s.status == SandboxStatus::Running) {
                *counts.entry(session.engine.clone()).or_default() += 1;
            }
            counts.into_iter().collect()
        }))
    }

    async fn delete(&self, session_id: SessionId) -> Result<bool, StoreError> {
        Ok(self.sessions.with(|sessions| sessions.remove(&session_id).is_some()))
    }

    async fn delete_terminal(&self, session_id: SessionId) -> Result<bool, StoreError> {
        Ok(self.sessions.with(|sessions| {
            let terminal = sessions.get(&session_id).is_some_and(|s| s.status.is_terminal());
            terminal && sessions.remove(&session_id).is_some()
        }))
    }

    async fn extend_expiry(
        &self,
        session_id: SessionId,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        Ok(self.sessions.with(|sessions| match sessions.get_mut(&session_id) {
            Some(session)
                if session.status == SandboxStatus::Running && session.expires_at < expires_at =>
            {
                session.expires_at = expires_at;
                true
            }
            _ => false,
        }))
    }

    async fn transition(
        &self,
        session_id: SessionId,
        from: SandboxStatus,
        to: SandboxStatus,
    ) -> Result<bool, StoreError> {
        self.sessions.with(|sessions| {
            let Some(current) = sessions.get(&session_id) else {
                return Ok(false);
            };
            if current.status != from {
                return Ok(false);
            }
            let changed = SandboxSession { status: to, ..current.clone() };
            let conflict = to == SandboxStatus::Running
                && sessions.values().any(|other| {
                    other.chat_id == changed.chat_id
                        && other.status == SandboxStatus::Running
                        && other.session_id != session_id
                });
            if conflict {
                return Err(StoreError::Failed(
                    format!("chat {} already has another running session", changed.chat_id).into(),
                ));
            }
            sessions.insert(session_id, changed);
            Ok(true)
        })
    }

    async fn mark_workspace_used(&self, session_id: SessionId) -> Result<(), StoreError> {
        if self.sessions.with(|sessions| sessions.contains_key(&session_id)) {
            lock(&self.used).insert(session_id);
        }
        Ok(())
    }

    async fn workspace_used(&self, session_id: SessionId) -> Result<bool, StoreError> {
        let known = self.sessions.with(|sessions| sessions.contains_key(&session_id));
        let used = lock(&self.used);
        Ok(!known || used.contains(&session_id))
    }

    async fn get_by_container(
        &self,
        container_id: &ContainerId,
    ) -> Result<Option<SandboxSession>, StoreError> {
        Ok(self.sessions.with(|sessions| {
            sessions
                .values()
                .filter(|s| &s.container_id == container_id)
                .max_by_key(|s| (s.created_at, s.session_id))
                .cloned()
        }))
    }
}
