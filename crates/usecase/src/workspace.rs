//! Durable workspaces: a chat's `/workspace` saved into the [`WorkspaceStore`] before its
//! sandbox's container is removed (and at checkpoints), and restored into the next sandbox of
//! the chat. See `docs/workspaces.md`.
//!
//! [`Workspaces`] is shared by the use cases that remove containers (they call
//! [`Workspaces::save_before_removal`] while the container still exists), by `CreateSandbox`
//! (which calls [`Workspaces::restore`] before it hands a new sandbox out), by the checkpoint
//! loop ([`Workspaces::checkpoint`]), the maintenance sweep's retention
//! ([`Workspaces::reap`]) and the workspace routes ([`Workspaces::meta`],
//! [`Workspaces::download`], [`Workspaces::upload`], [`Workspaces::delete`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandkeeper_domain::spelling;
use sandkeeper_domain::{ChatId, SandboxSession, SessionId, Timestamp};
use sandkeeper_ports::debug_fields;
use sandkeeper_ports::error_kind;
use sandkeeper_ports::inprocess::{Locked, lock};
use sandkeeper_ports::{
    ArchiveError, ArchiveFile, Cause, Clock, Engines, InvalidArchive, LifecycleLocker, Report,
    SessionRepository, StoreError, WorkspaceMeta, WorkspaceStore, check_archive_file,
};
use tracing::Span;

use crate::access::live_session;

/// Counter `workspace.archive.total{reason, result}`.
const ARCHIVE_TOTAL: &str = "workspace.archive.total";
/// Histogram `workspace.archive.duration.seconds{result}`.
const ARCHIVE_DURATION: &str = "workspace.archive.duration.seconds";
/// Histogram `workspace.archive.size.bytes`: the size of each archive stored.
const ARCHIVE_SIZE: &str = "workspace.archive.size.bytes";
/// Counter `workspace.restore.total{result=restored|none|corrupt|error}`.
const RESTORE_TOTAL: &str = "workspace.restore.total";
/// Histogram `workspace.restore.duration.seconds{result}`.
const RESTORE_DURATION: &str = "workspace.restore.duration.seconds";
/// Histogram `workspace.restore.size.bytes`: the size of each archive restored.
const RESTORE_SIZE: &str = "workspace.restore.size.bytes";
/// Counter `workspace.reaped.total`: archives deleted by retention.
const REAPED_TOTAL: &str = "workspace.reaped.total";

/// The default bound on a workspace (the tmpfs size of `/workspace`) and on its archive.
pub const DEFAULT_WORKSPACE_SIZE: u64 = 256 * 1024 * 1024;
/// The default interval of checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// The default retention of archives neither saved nor restored.
pub const DEFAULT_WORKSPACE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most archives retention deletes per batch.
pub const REAP_BATCH: usize = 100;
/// The most batches retention deletes per sweep.
const REAP_BATCHES: usize = 10;

/// How workspaces are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceSettings {
    /// The largest archive kept or accepted, in bytes (`--workspace-size`).
    pub size_limit: u64,
    /// Where archives in transit are written (temporary files, removed after use).
    pub scratch_dir: PathBuf,
    /// Archives neither saved nor restored for this long are deleted by the sweep.
    pub retention: Duration,
}

/// Why an archive is taken: the `reason` label of `workspace.archive.total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveReason {
    /// The cleanup of expired sandboxes.
    Expiry,
    /// A get-or-create that replaces an expired sandbox.
    Replacement,
    /// `DELETE /v1/chats/{chat_id}/sandbox`.
    Delete,
    /// The maintenance sweep.
    Sweep,
    /// A checkpoint of a sandbox that changed.
    Checkpoint,
}

spelling! {
    SaveReason {
        Expiry => "expiry",
        Replacement => "replacement",
        Delete => "delete",
        Sweep => "sweep",
        Checkpoint => "checkpoint",
    }
}

/// What a create restored: the `workspace` of the `PUT /v1/chats/{chat_id}/sandbox` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkspaceRestore {
    pub restored: bool,
    pub size_bytes: u64,
    pub saved_at: Option<Timestamp>,
}

/// A failure to save, restore or serve a chat's workspace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceError {
    /// Archiving the sandbox's workspace failed; the previous archive is kept.
    #[error("archiving the workspace of chat {chat_id} failed")]
    Archive {
        chat_id: ChatId,
        #[source]
        error: ArchiveError,
    },
    /// Restoring the chat's archive failed for a reason that may pass (the engine, the store);
    /// the archive is kept.
    #[error("restoring the workspace of chat {chat_id} failed; the archive is kept, retry")]
    Restore {
        chat_id: ChatId,
        #[source]
        error: ArchiveError,
    },
    /// The chat's stored archive cannot be restored (refused, or does not fit); it is kept.
    #[error(
        "the stored workspace of chat {chat_id} cannot be restored ({reason}); delete it with \
         DELETE /v1/chats/{chat_id}/workspace, or replace it with PUT \
         /v1/chats/{chat_id}/workspace/archive"
    )]
    Corrupt { chat_id: ChatId, reason: String },
    /// A body offered as an archive is not one that may be extracted into a workspace.
    #[error("{0}")]
    InvalidArchive(InvalidArchive),
    /// The chat has no stored archive (and, where it matters, no running sandbox).
    #[error("chat {chat_id} has no stored workspace")]
    NoWorkspace { chat_id: ChatId },
    /// The workspace store, or the session store, failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

error_kind! {
    WorkspaceError {
        Archive => "workspace_archive_failed",
        Restore => "workspace_restore_failed",
        Corrupt => "workspace_corrupt",
        InvalidArchive => "invalid_archive",
        NoWorkspace => "no_workspace",
    }
    wraps Store
}

fn local(error: std::io::Error) -> StoreError {
    StoreError::Failed(Cause::new(error).context("a temporary workspace archive failed"))
}

/// The sandboxes whose workspace changed (a command ran, a file arrived) since their last
/// archive, in this process: what a checkpoint archives. And the sandboxes this process has
/// already recorded as used in the store (`SessionRepository::mark_workspace_used`), so that
/// the store is written once per sandbox, not once per operation.
#[derive(Clone, Default)]
pub struct WorkspaceChanges {
    changed: Arc<Locked<HashMap<SessionId, (ChatId, u64)>>>,
    used: Arc<Mutex<HashSet<SessionId>>>,
}

/// The most sandboxes [`WorkspaceChanges`] remembers as recorded used; beyond it the memory
/// starts again (a sandbox then records its use once more, which changes nothing).
const USED_REMEMBERED: usize = 100_000;

impl fmt::Debug for WorkspaceChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkspaceChanges").field("pending", &self.pending().len()).finish()
    }
}

impl WorkspaceChanges {
    /// The sandbox of `session` may have changed its workspace.
    pub fn mark(&self, session: &SandboxSession) {
        self.changed.with(|changed| {
            let entry = changed.entry(session.session_id).or_insert((session.chat_id, 0));
            entry.1 += 1;
        });
    }

    /// The sandboxes changed since their last archive, with the change count seen now.
    pub fn pending(&self) -> Vec<(SessionId, ChatId, u64)> {
        self.changed.with(|changed| {
            changed.iter().map(|(session, (chat, count))| (*session, *chat, *count)).collect()
        })
    }

    /// The archive taken after change `seen` is stored: forget the session unless it changed
    /// again meanwhile.
    fn archived(&self, session_id: SessionId, seen: u64) {
        self.changed.with(|changed| {
            if changed.get(&session_id).is_some_and(|(_, count)| *count == seen) {
                changed.remove(&session_id);
            }
        });
    }

    /// Whether this is the first operation of this process in the sandbox of `session_id`
    /// since it was last forgotten: its use must then be recorded in the store.
    pub(crate) fn first_use(&self, session_id: SessionId) -> bool {
        let mut used = lock(&self.used);
        if used.len() >= USED_REMEMBERED {
            used.clear();
        }
        used.insert(session_id)
    }

    /// The sandbox is removed (or its use could not be recorded): nothing of it is kept.
    pub(crate) fn forget(&self, session_id: SessionId) {
        self.changed.with(|changed| changed.remove(&session_id));
        lock(&self.used).remove(&session_id);
    }
}

/// What a checkpoint pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    pub archived: usize,
    pub failed: usize,
}

/// Durable workspaces: saving, restoring, checkpoints, retention and the archive routes.
#[derive(Clone)]
pub struct Workspaces {
    store: Arc<dyn WorkspaceStore>,
    engines: Engines,
    repository: Arc<dyn SessionRepository>,
    locker: Arc<dyn LifecycleLocker>,
    clock: Arc<dyn Clock>,
    settings: WorkspaceSettings,
    changes: WorkspaceChanges,
}

debug_fields!(Workspaces { settings });

impl Workspaces {
    pub fn new(
        store: Arc<dyn WorkspaceStore>,
        engines: impl Into<Engines>,
        repository: Arc<dyn SessionRepository>,
        locker: Arc<dyn LifecycleLocker>,
        clock: Arc<dyn Clock>,
        settings: WorkspaceSettings,
    ) -> Self {
        Self {
            store,
            engines: engines.into(),
            repository,
            locker,
            clock,
            settings,
            changes: WorkspaceChanges::default(),
        }
    }

    pub fn settings(&self) -> &WorkspaceSettings {
        &self.settings
    }

    /// The sandboxes changed since their last archive; the operations inside sandboxes mark
    /// them (see `SandboxAccess::with_workspace_changes`).
    pub fn changes(&self) -> &WorkspaceChanges {
        &self.changes
    }

    /// Archives the workspace of `session`'s sandbox and stores it as the chat's archive.
    /// The caller holds the chat's lock (so that archives of one chat are stored in order).
    pub async fn save(
        &self,
        session: &SandboxSession,
        reason: SaveReason,
    ) -> Result<WorkspaceMeta, WorkspaceError> {
        let started = Instant::now();
        let seen = self.changes.pending().into_iter().find(|(id, ..)| *id == session.session_id);
        let saved = self.archive_and_store(session).await;
        let result = match &saved {
            Ok(meta) => {
                metrics::histogram!(ARCHIVE_SIZE).record(meta.size_bytes as f64);
                if let Some((_, _, seen)) = seen {
                    self.changes.archived(session.session_id, seen);
                }
                "saved"
            }
            Err(WorkspaceError::Archive { error, .. }) => error.kind(),
            Err(error) => error.kind(),
        };
        metrics::counter!(ARCHIVE_TOTAL, "reason" => reason.as_str(), "result" => result)
            .increment(1);
        metrics::histogram!(ARCHIVE_DURATION, "result" => result)
            .record(started.elapsed().as_secs_f64());
        match &saved {
            Ok(meta) => tracing::info!(
                chat_id = %session.chat_id,
                session_id = %session.session_id,
                size_bytes = meta.size_bytes,
                reason = reason.as_str(),
                "workspace_saved"
            ),
            Err(error) => tracing::warn!(
                chat_id = %session.chat_id,
                session_id = %session.session_id,
                reason = reason.as_str(),
                error = %Report(error),
                "workspace_save_failed"
            ),
        }
        saved
    }

    /// The sandbox's `/workspace`, archived into the scratch directory within the size limit.
    async fn archive_of(&self, session: &SandboxSession) -> Result<ArchiveFile, ArchiveError> {
        let settings = &self.settings;
        self.engines
            .runtime_of(session)?
            .archive_workspace(&session.container_id, settings.size_limit, &settings.scratch_dir)
            .await
    }

    async fn archive_and_store(
        &self,
        session: &SandboxSession,
    ) -> Result<WorkspaceMeta, WorkspaceError> {
        let archive = self
            .archive_of(session)
            .await
            .map_err(|error| WorkspaceError::Archive { chat_id: session.chat_id, error })?;
        let meta = WorkspaceMeta {
            chat_id: session.chat_id,
            size_bytes: archive.size(),
            saved_at: self.clock.now(),
            session_id: Some(session.session_id),
        };
        self.store.put(&meta, archive).await?;
        Ok(meta)
    }

    /// Saves the workspace of a sandbox about to be removed. `Ok` means the removal may go on:
    /// the archive is stored, or the container can no longer be read (it stopped), or the
    /// workspace can never be archived (too large, refused by tar: the previous archive is
    /// kept and the failure counted). An error means the sandbox must stay, so that a later
    /// pass tries again.
    pub async fn save_before_removal(
        &self,
        session: &SandboxSession,
        reason: SaveReason,
    ) -> Result<(), WorkspaceError> {
        if !self.repository.workspace_used(session.session_id).await? {
            // Nothing entered the sandbox that could change its workspace: it holds what it
            // was created with (empty, or the chat's archive, which stays as it is).
            metrics::counter!(ARCHIVE_TOTAL, "reason" => reason.as_str(), "result" => "unused")
                .increment(1);
            Span::current().record("workspace.result", "unused");
            self.changes.forget(session.session_id);
            return Ok(());
        }
        let outcome = match self.save(session, reason).await {
            Ok(_) => "saved",
            Err(WorkspaceError::Archive {
                error: ArchiveError::ContainerNotRunning { .. },
                ..
            }) => "container_gone",
            Err(WorkspaceError::Archive { error, .. }) if error.is_permanent() => "not_archivable",
            Err(error) => {
                Span::current().record("workspace.result", "error");
                return Err(error);
            }
        };
        Span::current().record("workspace.result", outcome);
        self.changes.forget(session.session_id);
        Ok(())
    }

    /// Restores the chat's archive, if it has one, into the new sandbox of `session`.
    pub async fn restore(
        &self,
        session: &SandboxSession,
    ) -> Result<WorkspaceRestore, WorkspaceError> {
        let started = Instant::now();
        let restored = self.restore_stored(session).await;
        let result = match &restored {
            Ok(restore) if restore.restored => "restored",
            Ok(_) => "none",
            Err(WorkspaceError::Corrupt { .. }) => "corrupt",
            Err(_) => "error",
        };
        metrics::counter!(RESTORE_TOTAL, "result" => result).increment(1);
        metrics::histogram!(RESTORE_DURATION, "result" => result)
            .record(started.elapsed().as_secs_f64());
        Span::current().record("workspace.result", result);
        if let Ok(restore) = &restored
            && restore.restored
        {
            metrics::histogram!(RESTORE_SIZE).record(restore.size_bytes as f64);
            tracing::info!(
                chat_id = %session.chat_id,
                session_id = %session.session_id,
                size_bytes = restore.size_bytes,
                "workspace_restored"
            );
        }
        restored
    }

    async fn restore_stored(
        &self,
        session: &SandboxSession,
    ) -> Result<WorkspaceRestore, WorkspaceError> {
        let chat_id = session.chat_id;
        let Some((meta, archive)) = self.store.get(chat_id, &self.settings.scratch_dir).await?
        else {
            return Ok(WorkspaceRestore::default());
        };
        let restored = match self.engines.runtime_of(session) {
            Ok(runtime) => runtime.restore_workspace(&session.container_id, &archive).await,
            Err(error) => Err(error.into()),
        };
        match restored {
            Ok(()) => {}
            Err(ArchiveError::Invalid(invalid)) => {
                return Err(WorkspaceError::Corrupt { chat_id, reason: invalid.to_string() });
            }
            Err(error @ (ArchiveError::WorkspaceFull | ArchiveError::Tar { .. })) => {
                return Err(WorkspaceError::Corrupt {
                    chat_id,
                    reason: Report(&error).to_string(),
                });
            }
            Err(error) => return Err(WorkspaceError::Restore { chat_id, error }),
        }
        if let Err(error) = self.store.mark_restored(chat_id, self.clock.now()).await {
            // The workspace is in place; retention may only come a little early.
            tracing::warn!(chat_id = %chat_id, error = %Report(&error), "workspace_mark_restored_failed");
        }
        Ok(WorkspaceRestore {
            restored: true,
            size_bytes: meta.size_bytes,
            saved_at: Some(meta.saved_at),
        })
    }

    /// Archives every sandbox of this process that changed since its last archive, under its
    /// chat's lock and only while it is still the chat's running sandbox.
    pub async fn checkpoint(&self) -> CheckpointReport {
        let mut report = CheckpointReport::default();
        for (session_id, chat_id, _) in self.changes.pending() {
            match self.checkpoint_one(session_id, chat_id).await {
                Ok(true) => report.archived += 1,
                Ok(false) => {}
                Err(_) => report.failed += 1,
            }
        }
        report
    }

    async fn checkpoint_one(
        &self,
        session_id: SessionId,
        chat_id: ChatId,
    ) -> Result<bool, WorkspaceError> {
        let _lock = self.locker.lock(chat_id).await?;
        let current = self.repository.get_running_by_chat(chat_id).await?;
        let Some(session) = current.filter(|session| session.session_id == session_id) else {
            self.changes.forget(session_id);
            return Ok(false);
        };
        match self.save(&session, SaveReason::Checkpoint).await {
            Ok(_) => Ok(true),
            Err(WorkspaceError::Archive { error, .. })
                if error.is_permanent()
                    || matches!(error, ArchiveError::ContainerNotRunning { .. }) =>
            {
                self.changes.forget(session_id);
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Deletes archives neither saved nor restored within the retention, in bounded batches.
    /// Returns how many were deleted.
    pub async fn reap(&self) -> Result<usize, StoreError> {
        let retention =
            chrono::TimeDelta::from_std(self.settings.retention).unwrap_or(chrono::TimeDelta::MAX);
        let Some(before) = self.clock.now().checked_sub_signed(retention) else { return Ok(0) };
        let mut deleted = 0;
        for _ in 0..REAP_BATCHES {
            let batch = self.store.delete_stale(before, REAP_BATCH).await?;
            deleted += batch.len();
            for chat_id in &batch {
                tracing::info!(chat_id = %chat_id, "workspace_reaped");
            }
            if batch.len() < REAP_BATCH {
                break;
            }
        }
        metrics::counter!(REAPED_TOTAL).increment(deleted as u64);
        Ok(deleted)
    }

    /// The chat's stored archive's metadata.
    pub async fn meta(&self, chat_id: ChatId) -> Result<WorkspaceMeta, WorkspaceError> {
        self.store.meta(chat_id).await?.ok_or(WorkspaceError::NoWorkspace { chat_id })
    }

    /// The chat's running sandbox's current `/workspace` if one runs, else its stored archive.
    pub async fn download(&self, chat_id: ChatId) -> Result<ArchiveFile, WorkspaceError> {
        let now = self.clock.now();
        if let Some(session) = live_session(self.repository.as_ref(), chat_id, now).await? {
            match self.archive_of(&session).await {
                Ok(archive) => return Ok(archive),
                // It went away meanwhile: the stored archive is what is left.
                Err(ArchiveError::ContainerNotRunning { .. }) => {}
                Err(error) => return Err(WorkspaceError::Archive { chat_id, error }),
            }
        }
        match self.store.get(chat_id, &self.settings.scratch_dir).await? {
            Some((_, archive)) => Ok(archive),
            None => Err(WorkspaceError::NoWorkspace { chat_id }),
        }
    }

    /// Replaces the chat's stored archive with `archive` (a client's upload) and, if a sandbox
    /// runs, the content of its `/workspace`. A refused archive changes nothing.
    pub async fn upload(
        &self,
        chat_id: ChatId,
        archive: ArchiveFile,
    ) -> Result<WorkspaceMeta, WorkspaceError> {
        check_archive_file(archive.path()).await.map_err(WorkspaceError::InvalidArchive)?;
        let _lock = self.locker.lock(chat_id).await?;
        let now = self.clock.now();
        let session = live_session(self.repository.as_ref(), chat_id, now).await?;
        if let Some(session) = &session {
            // The sandbox's files are about to change: its next removal must archive them.
            self.repository.mark_workspace_used(session.session_id).await?;
            let runtime = self
                .engines
                .runtime_of(session)
                .map_err(|error| WorkspaceError::Restore { chat_id, error: error.into() })?;
            runtime.restore_workspace(&session.container_id, &archive).await.map_err(|error| {
                match error {
                    ArchiveError::Invalid(invalid) => WorkspaceError::InvalidArchive(invalid),
                    error => WorkspaceError::Restore { chat_id, error },
                }
            })?;
        }
        let meta = WorkspaceMeta {
            chat_id,
            size_bytes: archive.size(),
            saved_at: now,
            session_id: session.as_ref().map(|session| session.session_id),
        };
        self.store.put(&meta, archive).await?;
        if let Some(session) = &session {
            self.changes.forget(session.session_id);
        }
        Ok(meta)
    }

    /// A new temporary file for an upload's body.
    pub async fn scratch_file(&self) -> Result<(ArchiveFile, tokio::fs::File), WorkspaceError> {
        ArchiveFile::create_in(&self.settings.scratch_dir)
            .await
            .map_err(|error| local(error).into())
    }

    /// Removes the chat's stored archive; a running sandbox keeps its files.
    pub async fn delete(&self, chat_id: ChatId) -> Result<(), WorkspaceError> {
        let _lock = self.locker.lock(chat_id).await?;
        if self.store.delete(chat_id).await? {
            Ok(())
        } else {
            Err(WorkspaceError::NoWorkspace { chat_id })
        }
    }
}
