//! What happens when a sandbox's container stops by itself: its session becomes `Crashed`, so
//! that the next request for the chat gets a new sandbox instead of a dead one.
//!
//! Two paths find such containers and share [`mark_crashed`]: [`RecordContainerExit`], told by
//! the runtime within moments of the exit, and the maintenance sweep's reconcile phase, which
//! inspects every running session's container now and then and catches what the first missed.

use std::sync::Arc;

use sandkeeper_domain::spelling;
use sandkeeper_domain::{SandboxSession, SandboxStatus, SessionId};
use sandkeeper_ports::Report;
use sandkeeper_ports::debug_fields;
use sandkeeper_ports::{
    ContainerExit, ContainerState, LifecycleLocker, SessionRepository, StoreError,
};
use tracing::field::{Empty, display};
use tracing::{Instrument, Span};

use crate::pool::WarmPools;
use crate::telemetry::{record_error, refresh_active_count, usecase_span};

/// Counter `sandbox.crashed.total{detected_by=exit_event|maintenance}`: running sessions turned
/// `Crashed` because their container was no longer running, by the path that noticed.
pub(crate) const CRASHED_TOTAL: &str = "sandbox.crashed.total";
/// Counter `sandbox.container_exits.total{result=crashed|ignored|error}`: the exits the runtime
/// reported and what [`RecordContainerExit`] made of them.
const CONTAINER_EXITS_TOTAL: &str = "sandbox.container_exits.total";

/// Which path found a crash, the `detected_by` label of [`CRASHED_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DetectedBy {
    ExitEvent,
    Maintenance,
    /// The sweep, after the session's engine stayed down for the engine-loss grace.
    EngineLoss,
}

spelling! {
    DetectedBy {
        ExitEvent => "exit_event",
        Maintenance => "maintenance",
        EngineLoss => "engine_loss",
    }
}

/// Turns a session whose container is not running from `Running` into `Crashed`, if it still
/// is `Running` in the store. Returns whether it did; `false` when someone else changed or
/// removed the row meanwhile.
pub(crate) async fn mark_crashed(
    repository: &dyn SessionRepository,
    session: &SandboxSession,
    container_state: ContainerState,
    detected_by: DetectedBy,
) -> Result<bool, StoreError> {
    let changed = repository
        .transition(session.session_id, SandboxStatus::Running, SandboxStatus::Crashed)
        .await?;
    if changed {
        metrics::counter!(CRASHED_TOTAL, "detected_by" => detected_by.as_str()).increment(1);
        tracing::info!(
            chat_id = %session.chat_id,
            session_id = %session.session_id,
            container_id = %session.container_id,
            container_state = ?container_state,
            detected_by = detected_by.as_str(),
            "sandbox_crashed"
        );
    }
    Ok(changed)
}

/// What [`RecordContainerExit`] made of one exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitOutcome {
    /// The session was running on that container and is now `Crashed`.
    Crashed(SandboxSession),
    /// Nothing to do: why.
    Ignored(IgnoredExit),
}

/// Why an exit changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredExit {
    /// The container carries no valid session label and no session row names it.
    NoSession,
    /// The session has no row (sandkeeper removed it, e.g. on expiry, replacement or delete).
    SessionGone,
    /// The session is no longer running (stopped, or already found crashed).
    NotRunning,
    /// The session runs on another container than the one that exited.
    OtherContainer,
}

spelling! {
    IgnoredExit {
        NoSession => "no_session",
        SessionGone => "session_gone",
        NotRunning => "not_running",
        OtherContainer => "other_container",
    }
}

/// Marks the session of a container that stopped by itself `Crashed`, as soon as the runtime
/// reports the exit, so that the next `PUT` of its chat creates a new sandbox.
///
/// Works under the chat's lifecycle lock: sandkeeper's own removals (expiry, replacement,
/// delete) stop the container and delete the row under that lock, so by the time their exit is
/// looked at the row is gone, and they are never counted as crashes.
#[derive(Clone)]
pub struct RecordContainerExit {
    repository: Arc<dyn SessionRepository>,
    locker: Arc<dyn LifecycleLocker>,
    pool: Option<WarmPools>,
}

debug_fields!(RecordContainerExit {});

impl RecordContainerExit {
    pub fn new(repository: Arc<dyn SessionRepository>, locker: Arc<dyn LifecycleLocker>) -> Self {
        Self { repository, locker, pool: None }
    }

    /// The warm pools: the exit of a ready pooled container frees its place and removes it,
    /// and a claimed one's exit is traced to its session through the store.
    pub fn with_pool(mut self, pool: Option<WarmPools>) -> Self {
        self.pool = pool;
        self
    }

    /// The session of an exited container without a session label, found by its container;
    /// `None` when it has none (a ready pooled container's place is freed then).
    async fn unlabelled(&self, exit: &ContainerExit) -> Result<Option<SessionId>, StoreError> {
        if let Some(pool) = &self.pool {
            if pool.forget_exited(&exit.container_id).await? {
                return Ok(None);
            }
        }
        let session = self.repository.get_by_container(&exit.container_id).await?;
        Ok(session.map(|session| session.session_id))
    }

    /// Looks the exit up in the store and marks its session crashed if it was still running
    /// on that container. A store failure changes nothing (the maintenance sweep catches up).
    pub async fn execute(&self, exit: &ContainerExit) -> Result<ExitOutcome, StoreError> {
        let span = usecase_span!(
            "usecase.record_container_exit",
            container.id = %exit.container_id,
            session.id = Empty,
            chat.id = Empty,
        );
        let outcome = self.record(exit, &span).instrument(span.clone()).await;
        let result = match &outcome {
            Ok(ExitOutcome::Crashed(_)) => "crashed",
            Ok(ExitOutcome::Ignored(why)) => {
                tracing::debug!(parent: &span, container_id = %exit.container_id,
                    reason = why.as_str(), "container_exit_ignored");
                "ignored"
            }
            Err(error) => {
                record_error(&span, error);
                tracing::warn!(
                    parent: &span,
                    container_id = %exit.container_id,
                    error = error.kind(),
                    error.message = %Report(&error),
                    "container_exit_not_recorded"
                );
                "error"
            }
        };
        span.record("sandbox.result", result);
        metrics::counter!(CONTAINER_EXITS_TOTAL, "result" => result).increment(1);
        outcome
    }

    async fn record(&self, exit: &ContainerExit, span: &Span) -> Result<ExitOutcome, StoreError> {
        let session_id = match exit.session_id {
            Some(session_id) => session_id,
            // No session label: a pooled container, or one a chat claimed from the pool,
            // whose session the store names.
            None => match self.unlabelled(exit).await? {
                Some(session_id) => session_id,
                None => return Ok(ExitOutcome::Ignored(IgnoredExit::NoSession)),
            },
        };
        span.record("session.id", display(session_id));
        // A first look without the lock: most exits reported are sandkeeper's own removals,
        // whose rows are already gone, and they need not wait for the chat's lock.
        let Some(seen) = self.repository.get(session_id).await? else {
            return Ok(ExitOutcome::Ignored(IgnoredExit::SessionGone));
        };
        span.record("chat.id", display(seen.chat_id));
        let _lock = self.locker.lock(seen.chat_id).await?;
        let Some(session) = self.repository.get(session_id).await? else {
            return Ok(ExitOutcome::Ignored(IgnoredExit::SessionGone));
        };
        if session.status != SandboxStatus::Running {
            return Ok(ExitOutcome::Ignored(IgnoredExit::NotRunning));
        }
        if session.container_id != exit.container_id {
            return Ok(ExitOutcome::Ignored(IgnoredExit::OtherContainer));
        }
        let changed = mark_crashed(
            self.repository.as_ref(),
            &session,
            ContainerState::Exited,
            DetectedBy::ExitEvent,
        )
        .await?;
        if !changed {
            return Ok(ExitOutcome::Ignored(IgnoredExit::NotRunning));
        }
        refresh_active_count(self.repository.as_ref()).await;
        let mut crashed = session;
        crashed.status = SandboxStatus::Crashed;
        Ok(ExitOutcome::Crashed(crashed))
    }
}
