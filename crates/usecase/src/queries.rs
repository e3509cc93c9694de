use std::sync::Arc;

use sandkeeper_domain::{ChatId, EngineName, SandboxSession, SandboxStatus};
use sandkeeper_ports::debug_fields;
use sandkeeper_ports::{SessionRepository, StoreError};

/// Read-only questions the API asks about sessions. No lock is taken: a read may be a moment
/// old by the time it is answered, which is fine for display.
#[derive(Clone)]
pub struct SandboxQueries {
    repository: Arc<dyn SessionRepository>,
}

debug_fields!(SandboxQueries {});

impl SandboxQueries {
    pub fn new(repository: Arc<dyn SessionRepository>) -> Self {
        Self { repository }
    }

    /// The chat's running session, expired or not (an expired one is removed by the next
    /// cleanup or replaced by the next get-or-create).
    pub async fn running_for_chat(
        &self,
        chat_id: ChatId,
    ) -> Result<Option<SandboxSession>, StoreError> {
        self.repository.get_running_by_chat(chat_id).await
    }

    /// Sessions with one of `statuses`, oldest first, at most `limit`.
    pub async fn list(
        &self,
        statuses: &[SandboxStatus],
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        self.repository.list(statuses, limit).await
    }

    /// How many sessions run on each engine (engines without one are left out).
    pub async fn running_by_engine(&self) -> Result<Vec<(EngineName, u64)>, StoreError> {
        self.repository.count_running_by_engine().await
    }
}
