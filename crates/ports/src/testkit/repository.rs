//! A session repository that a test scripts call by call.

use async_trait::async_trait;
use sandkeeper_domain::{ChatId, SandboxSession, SandboxStatus, SessionId, Timestamp};

use crate::{SaveError, SessionRepository, StoreError};

/// A repository that hands every call to [`DelegatingRepository::inner`] (usually the in-memory
/// one) except the calls a test overrides: implement `inner` and the methods to script (fail,
/// pause, answer a stale snapshot), and the type is a [`SessionRepository`].
///
/// The use-case test suites script stale snapshots, failing saves and reads, and a cleanup
/// paused between its snapshot and its re-check this way.
#[async_trait]
pub trait DelegatingRepository: Send + Sync {
    /// Where every call that is not overridden goes.
    fn inner(&self) -> &dyn SessionRepository;

    async fn get_running_by_chat(
        &self,
        chat_id: ChatId,
    ) -> Result<Option<SandboxSession>, StoreError> {
        self.inner().get_running_by_chat(chat_id).await
    }

    async fn get(&self, session_id: SessionId) -> Result<Option<SandboxSession>, StoreError> {
        self.inner().get(session_id).await
    }

    async fn save(&self, session: &SandboxSession) -> Result<(), SaveError> {
        self.inner().save(session).await
    }

    async fn save_within(
        &self,
        session: &SandboxSession,
        max_running: u64,
    ) -> Result<bool, SaveError> {
        self.inner().save_within(session, max_running).await
    }

    async fn list_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        self.inner().list_expired(now, limit).await
    }

    async fn list_after(
        &self,
        statuses: &[SandboxStatus],
        after: Option<(Timestamp, SessionId)>,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        self.inner().list_after(statuses, after, limit).await
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        self.inner().count_running().await
    }

    async fn delete(&self, session_id: SessionId) -> Result<bool, StoreError> {
        self.inner().delete(session_id).await
    }

    async fn delete_terminal(&self, session_id: SessionId) -> Result<bool, StoreError> {
        self.inner().delete_terminal(session_id).await
    }

    async fn extend_expiry(
        &self,
        session_id: SessionId,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner().extend_expiry(session_id, expires_at).await
    }

    async fn transition(
        &self,
        session_id: SessionId,
        from: SandboxStatus,
        to: SandboxStatus,
    ) -> Result<bool, StoreError> {
        self.inner().transition(session_id, from, to).await
    }
}

#[async_trait]
impl<T: DelegatingRepository> SessionRepository for T {
    async fn get_running_by_chat(
        &self,
        chat_id: ChatId,
    ) -> Result<Option<SandboxSession>, StoreError> {
        DelegatingRepository::get_running_by_chat(self, chat_id).await
    }

    async fn get(&self, session_id: SessionId) -> Result<Option<SandboxSession>, StoreError> {
        DelegatingRepository::get(self, session_id).await
    }

    async fn save(&self, session: &SandboxSession) -> Result<(), SaveError> {
        DelegatingRepository::save(self, session).await
    }

    async fn save_within(
        &self,
        session: &SandboxSession,
        max_running: u64,
    ) -> Result<bool, SaveError> {
        DelegatingRepository::save_within(self, session, max_running).await
    }

    async fn list_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        DelegatingRepository::list_expired(self, now, limit).await
    }

    async fn list_after(
        &self,
        statuses: &[SandboxStatus],
        after: Option<(Timestamp, SessionId)>,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        DelegatingRepository::list_after(self, statuses, after, limit).await
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        DelegatingRepository::count_running(self).await
    }

    async fn delete(&self, session_id: SessionId) -> Result<bool, StoreError> {
        DelegatingRepository::delete(self, session_id).await
    }

    async fn delete_terminal(&self, session_id: SessionId) -> Result<bool, StoreError> {
        DelegatingRepository::delete_terminal(self, session_id).await
    }

    async fn extend_expiry(
        &self,
        session_id: SessionId,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        DelegatingRepository::extend_expiry(self, session_id, expires_at).await
    }

    async fn transition(
        &self,
        session_id: SessionId,
        from: SandboxStatus,
        to: SandboxStatus,
    ) -> Result<bool, StoreError> {
        DelegatingRepository::transition(self, session_id, from, to).await
    }
}
