use async_trait::async_trait;
use sandkeeper_domain::{
    ChatId, ContainerId, EngineName, SandboxSession, SandboxStatus, SessionId, Timestamp,
};

use crate::{SaveError, StoreError};

/// Where sessions are kept. The store is the truth about which sandboxes exist.
///
/// Every method returns [`StoreError::Unavailable`] when the store cannot be reached and
/// [`StoreError::Failed`] for any other failure of the store; nothing is half-written then.
#[async_trait]
pub trait SessionRepository: Send + Sync {
    /// The chat's `Running` session, if there is one (there is never more than one).
    async fn get_running_by_chat(
        &self,
        chat_id: ChatId,
    ) -> Result<Option<SandboxSession>, StoreError>;

    /// The session with this id, in any status.
    async fn get(&self, session_id: SessionId) -> Result<Option<SandboxSession>, StoreError>;

    /// Inserts the session, or replaces the row with the same session id.
    ///
    /// MUST return [`SaveError::Conflict`] (and change nothing) if the session is `Running` and
    /// another session with a different id is already `Running` for the same chat.
    async fn save(&self, session: &SandboxSession) -> Result<(), SaveError>;

    /// Saves the session like [`SessionRepository::save`], but only while fewer than
    /// `max_running` sessions other than this one are `Running`. Returns whether it saved;
    /// `Ok(false)` (and nothing changed) at the limit.
    ///
    /// The count and the save are one step for every writer of the store (other replicas
    /// included), so that racing saves never go past the limit together. This default counts
    /// and then saves, exact only with one writer at a time: a store that several may write
    /// must override it.
    async fn save_within(
        &self,
        session: &SandboxSession,
        max_running: u64,
    ) -> Result<bool, SaveError> {
        let others = self.count_running().await?;
        let itself = self.get(session.session_id).await?;
        let counted = itself.is_some_and(|s| s.status == SandboxStatus::Running);
        if others.saturating_sub(u64::from(counted)) >= max_running {
            return Ok(false);
        }
        self.save(session).await.map(|()| true)
    }

    /// `Running` sessions with `expires_at <= now`, ordered by `expires_at` then `session_id`,
    /// at most `limit` of them.
    async fn list_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError>;

    /// Sessions whose status is one of `statuses`, ordered by `created_at` then `session_id`,
    /// at most `limit` of them. An empty `statuses` matches nothing.
    ///
    /// The first page of [`SessionRepository::list_after`].
    async fn list(
        &self,
        statuses: &[SandboxStatus],
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        self.list_after(statuses, None, limit).await
    }

    /// Like [`SessionRepository::list`], but only the sessions strictly after `after` in
    /// `(created_at, session_id)` order: pass the `created_at` and `session_id` of the last
    /// session of one page to read the next. `None` starts at the first session.
    ///
    /// Paging this way visits every session that is in the listing all along exactly once, in
    /// order, whatever is added, changed or removed meanwhile; the position need not be a row
    /// that still exists. A position past the last session gives an empty page. A store should
    /// start its read at the position (an index range), not skip the sessions before it, so that
    /// a page deep into the listing costs what the first one costs.
    async fn list_after(
        &self,
        statuses: &[SandboxStatus],
        after: Option<(Timestamp, SessionId)>,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError>;

    /// How many sessions are `Running`.
    async fn count_running(&self) -> Result<u64, StoreError>;

    /// Deletes the session's row. Returns whether a row was deleted (`false` when it was gone).
    async fn delete(&self, session_id: SessionId) -> Result<bool, StoreError>;

    /// Deletes the session's row only if its status is terminal (`Stopped` or `Crashed`).
    /// Returns whether a row was deleted: `false` when it was gone, claimed by someone else
    /// or not terminal.
    async fn delete_terminal(&self, session_id: SessionId) -> Result<bool, StoreError>;

    /// Moves the expiry of a `Running` session later: sets `expires_at` to `expires_at` only if
    /// the session exists, is `Running`, and currently expires earlier than that. Returns
    /// whether it changed; `false` (and nothing changed) when the row is gone, no longer
    /// running, or already expires at or after `expires_at`.
    ///
    /// Conditional in the store itself, so that concurrent extensions never move an expiry
    /// back and never revive a session that stopped or was removed meanwhile.
    async fn extend_expiry(
        &self,
        session_id: SessionId,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Sets the status to `to` only if it is currently `from`. Returns whether it changed.
    async fn transition(
        &self,
        session_id: SessionId,
        from: SandboxStatus,
        to: SandboxStatus,
    ) -> Result<bool, StoreError>;

    /// Records that an operation that may change the workspace (a command, an upload, a
    /// background process, a terminal) entered the session's sandbox. Idempotent; a session
    /// that is gone is no error, and no row is made for it.
    async fn mark_workspace_used(&self, session_id: SessionId) -> Result<(), StoreError>;

    /// Whether [`SessionRepository::mark_workspace_used`] was ever called for the session: a
    /// sandbox never used has the workspace it was created with (empty, or the chat's archive
    /// restored into it). `true` for a session the store does not know, and for the sessions
    /// the store held before it recorded use, since nothing can be promised about those.
    async fn workspace_used(&self, session_id: SessionId) -> Result<bool, StoreError>;

    /// The session whose container is `container_id`, in whatever status; the newest if
    /// several. How a container without a session label (a claimed pooled one) is traced back
    /// to its chat.
    async fn get_by_container(
        &self,
        container_id: &ContainerId,
    ) -> Result<Option<SandboxSession>, StoreError>;
    /// How many sessions are `Running` on each engine, in one read: the engines without a
    /// running session are left out; ordered by engine name.
    async fn count_running_by_engine(&self) -> Result<Vec<(EngineName, u64)>, StoreError>;
}
