//! The workspace store: one archive of `/workspace` per chat, kept while its sandboxes come
//! and go, so that a chat's files outlive them (see `docs/workspaces.md`).

use std::path::Path;

use async_trait::async_trait;
use sandkeeper_domain::{ChatId, SessionId, Timestamp};

use crate::{ArchiveFile, StoreError};

/// What is known of a chat's stored archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceMeta {
    pub chat_id: ChatId,
    pub size_bytes: u64,
    /// When the archive was taken (or uploaded).
    pub saved_at: Timestamp,
    /// The sandbox session it was taken from; `None` for an archive uploaded by a client.
    pub session_id: Option<SessionId>,
}

/// Where workspace archives are kept.
///
/// Every method returns [`StoreError::Unavailable`] when the store cannot be reached, and
/// [`StoreError::Failed`] for anything else that went wrong.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Stores `archive` as the chat's archive (`meta.chat_id`), with `meta` as its metadata.
    /// The previous archive is replaced only once the new one is complete and durable: a crash
    /// or a failure at any point leaves the previous one (or none) in place, never a part.
    /// `meta.size_bytes` is the archive's size.
    async fn put(&self, meta: &WorkspaceMeta, archive: ArchiveFile) -> Result<(), StoreError>;

    /// The chat's archive, copied (or linked) into a temporary file in `scratch`, with its
    /// metadata; `None` when the chat has none. A `put` or `delete` running meanwhile never
    /// leaves a mix of two archives in the file.
    async fn get(
        &self,
        chat_id: ChatId,
        scratch: &Path,
    ) -> Result<Option<(WorkspaceMeta, ArchiveFile)>, StoreError>;

    /// The chat's archive's metadata, or `None`.
    async fn meta(&self, chat_id: ChatId) -> Result<Option<WorkspaceMeta>, StoreError>;

    /// Removes the chat's archive; `false` when there was none.
    async fn delete(&self, chat_id: ChatId) -> Result<bool, StoreError>;

    /// Records that the chat's archive was restored at `at`, which keeps it from retention
    /// for another period. Nothing happens when the chat has none.
    async fn mark_restored(&self, chat_id: ChatId, at: Timestamp) -> Result<(), StoreError>;

    /// Deletes at most `limit` archives neither saved nor restored since `before`, and returns
    /// the chats whose archives were deleted. An archive saved or restored meanwhile is kept.
    async fn delete_stale(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ChatId>, StoreError>;
}

/// The failure of [`crate::SandboxRuntime::archive_workspace`] and
/// [`crate::SandboxRuntime::restore_workspace`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// The container does not exist or is not running.
    #[error(
        "container {container_id} is not running: the sandbox was removed, replaced or has stopped"
    )]
    ContainerNotRunning { container_id: sandkeeper_domain::ContainerId },
    /// The workspace's archive would be larger than the limit; nothing was kept.
    #[error("the workspace's archive is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The archive may not be extracted into a workspace; nothing was extracted.
    #[error("the archive cannot be restored: {0}")]
    Invalid(#[from] crate::InvalidArchive),
    /// The archive did not fit into the sandbox's workspace; the workspace was left empty.
    #[error("the archive does not fit into the sandbox's /workspace")]
    WorkspaceFull,
    /// The tar inside the sandbox failed (`said` is what it printed).
    #[error("tar in the sandbox failed: {said}")]
    Tar { said: String },
    /// A temporary file on the host could not be written or read.
    #[error("a temporary archive file could not be written or read")]
    Local(#[source] crate::Cause),
    #[error(transparent)]
    Runtime(#[from] crate::RuntimeError),
}

crate::error_kind! {
    ArchiveError {
        ContainerNotRunning => "container_not_running",
        TooLarge => "workspace_too_large",
        Invalid => "invalid_archive",
        WorkspaceFull => "workspace_full",
        Tar => "tar_failed",
        Local => "local_io",
    }
    wraps Runtime
}

impl ArchiveError {
    /// Whether trying again later cannot help: the archive or the workspace itself is the
    /// problem, not the engine, the store or the disk.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::TooLarge { .. } | Self::Invalid(_) | Self::WorkspaceFull)
    }
}
