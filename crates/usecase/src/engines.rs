//! What the use cases share about the engines: when a failed call means its engine is down,
//! and how the use cases that remove a chat's sandbox do it.

use std::sync::Arc;

use sandkeeper_domain::{SandboxSession, Timestamp};
use sandkeeper_ports::{
    Clock, Engine, Engines, LifecycleLocker, Report, RuntimeError, SessionRepository, StoreError,
    error_kind,
};

use crate::workspace::{SaveReason, WorkspaceError, Workspaces};

/// Whether the error says the engine did not answer (as opposed to refusing the call).
pub(crate) fn unreachable(error: &RuntimeError) -> bool {
    matches!(error, RuntimeError::Unavailable(_) | RuntimeError::Timeout { .. })
}

/// Marks the engine down when `error` says it did not answer; the engine probe marks it up
/// again once it answers a ping.
pub(crate) fn note_unreachable(engine: &Engine, error: &RuntimeError, now: Timestamp) {
    if unreachable(error) && engine.mark_down(now) {
        tracing::warn!(
            engine = %engine.name(),
            error = error.kind(),
            error.message = %Report(error),
            "engine_down"
        );
    }
}

/// Why removing a sandbox (saving its workspace, stopping its container, deleting its row)
/// failed: [`crate::DeleteSandboxError`] and [`crate::CleanupError`]. The message is the
/// underlying error's own. Whatever failed, the session is kept, so that a retry (or the
/// cleanup's next pass) can finish the job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemovalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The container could not be stopped.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The workspace could not be saved.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

error_kind!(RemovalError {} wraps Store, Runtime, Workspace);

/// What the use cases that remove a chat's sandbox under its lock hold (create's replacement,
/// delete, cleanup): the store, the chat locks, the engines, the clock that dates an engine
/// found down and, with durable workspaces, where a sandbox's workspace is saved before it goes.
#[derive(Clone)]
pub(crate) struct Lifecycle {
    pub(crate) repository: Arc<dyn SessionRepository>,
    pub(crate) locker: Arc<dyn LifecycleLocker>,
    pub(crate) engines: Engines,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) workspaces: Option<Workspaces>,
}

impl Lifecycle {
    /// Without durable workspaces.
    pub(crate) fn new(
        repository: Arc<dyn SessionRepository>,
        locker: Arc<dyn LifecycleLocker>,
        engines: impl Into<Engines>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { repository, locker, engines: engines.into(), clock, workspaces: None }
    }

    /// Removes a session's sandbox, under the chat's lock (the caller holds it): saves its
    /// workspace, stops its container and deletes its row. On an engine that is down neither
    /// the save nor the stop is tried, so that the removal never waits on it: the container,
    /// left without a row, is reaped as an orphan once the engine answers again. A stop that
    /// finds the engine unreachable marks it down. Whatever fails keeps the row.
    pub(crate) async fn remove<E>(
        &self,
        session: &SandboxSession,
        reason: SaveReason,
        now: Timestamp,
    ) -> Result<(), E>
    where
        E: From<RuntimeError> + From<WorkspaceError> + From<StoreError>,
    {
        let engine = self.engines.engine_of(session)?;
        if engine.is_avoided() {
            tracing::warn!(
                chat_id = %session.chat_id,
                session_id = %session.session_id,
                container_id = %session.container_id,
                engine = %session.engine,
                reason = reason.as_str(),
                "sandbox_removed_on_down_engine"
            );
        } else {
            if let Some(workspaces) = &self.workspaces {
                workspaces.save_before_removal(session, reason).await?;
            }
            if let Err(error) = engine.runtime().stop(&session.container_id).await {
                note_unreachable(engine, &error, now);
                return Err(error.into());
            }
        }
        self.repository.delete(session.session_id).await?;
        Ok(())
    }
}
