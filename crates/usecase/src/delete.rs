use std::sync::Arc;

use sandkeeper_domain::{ChatId, SandboxSession};
use sandkeeper_ports::debug_fields;
use sandkeeper_ports::{Clock, Engines, LifecycleLocker, SessionRepository, SystemClock};
use tracing::field::{Empty, display};
use tracing::{Instrument, Span};

use crate::engines::{Lifecycle, RemovalError};
use crate::telemetry::{record_result, refresh_active_count, usecase_span};
use crate::workspace::{SaveReason, Workspaces};

/// Counter `sandbox.delete.total{result=deleted|not_found|error}`.
const DELETE_TOTAL: &str = "sandbox.delete.total";

/// Why [`DeleteSandbox`] failed. The sandbox is kept so that a retry can finish the job.
pub type DeleteSandboxError = RemovalError;

/// Stops and forgets a chat's running sandbox, under the chat's lock.
#[derive(Clone)]
pub struct DeleteSandbox {
    lifecycle: Lifecycle,
}

debug_fields!(DeleteSandbox {});

impl DeleteSandbox {
    pub fn new(
        repository: Arc<dyn SessionRepository>,
        locker: Arc<dyn LifecycleLocker>,
        engines: impl Into<Engines>,
    ) -> Self {
        Self { lifecycle: Lifecycle::new(repository, locker, engines, Arc::new(SystemClock)) }
    }

    /// The clock that dates an engine found down (the system's by default).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.lifecycle.clock = clock;
        self
    }

    /// Durable workspaces: the sandbox's workspace is saved before its container is removed.
    pub fn with_workspaces(mut self, workspaces: Option<Workspaces>) -> Self {
        self.lifecycle.workspaces = workspaces;
        self
    }

    /// The deleted session, or `None` when the chat had no running sandbox.
    pub async fn execute(
        &self,
        chat_id: ChatId,
    ) -> Result<Option<SandboxSession>, DeleteSandboxError> {
        let span = usecase_span!(
            chat: chat_id,
            "usecase.delete_sandbox",
            workspace.result = Empty,
        );
        let outcome = self.delete(chat_id, &span).instrument(span.clone()).await;
        let result = record_result(&span, outcome.as_ref(), |deleted| match deleted {
            Some(_) => "deleted",
            None => "not_found",
        });
        metrics::counter!(DELETE_TOTAL, "result" => result).increment(1);
        outcome
    }

    async fn delete(
        &self,
        chat_id: ChatId,
        span: &Span,
    ) -> Result<Option<SandboxSession>, DeleteSandboxError> {
        let _lock = self.lifecycle.locker.lock(chat_id).await?;
        let Some(session) = self.lifecycle.repository.get_running_by_chat(chat_id).await? else {
            return Ok(None);
        };
        span.record("session.id", display(session.session_id));
        span.record("container.id", display(&session.container_id));
        let now = self.lifecycle.clock.now();
        self.lifecycle.remove::<DeleteSandboxError>(&session, SaveReason::Delete, now).await?;
        refresh_active_count(self.lifecycle.repository.as_ref()).await;
        tracing::info!(
            chat_id = %session.chat_id,
            session_id = %session.session_id,
            container_id = %session.container_id,
            "sandbox_deleted"
        );
        Ok(Some(session))
    }
}
