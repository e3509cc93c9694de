use std::sync::Arc;

use futures::StreamExt;
use sandkeeper_domain::{SandboxSession, Timestamp};
use sandkeeper_ports::debug_fields;
use sandkeeper_ports::{Clock, Engines, LifecycleLocker, SessionRepository};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::engines::{Lifecycle, RemovalError};
use crate::telemetry::{record_error, record_result, refresh_active_count, usecase_span};
use crate::workspace::{SaveReason, Workspaces};

/// Counter `sandbox.cleanup.total{result=cleaned}`: one per removed sandbox.
const CLEANUP_TOTAL: &str = "sandbox.cleanup.total";
/// Counter `sandbox.cleanup.error.total{error.type}`: one per sandbox that could not be removed.
const CLEANUP_ERROR_TOTAL: &str = "sandbox.cleanup.error.total";

/// How many expired sessions one pass takes from the store at most.
pub const DEFAULT_CLEANUP_BATCH_LIMIT: usize = 1000;
/// How many sessions one pass removes at the same time.
pub const DEFAULT_CLEANUP_CONCURRENCY: usize = 8;

/// Why a cleanup pass, or the removal of one session in it, failed. A session that could not
/// be removed is kept for the next pass.
pub type CleanupError = RemovalError;

/// A session that stayed because its removal failed; the next pass retries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupFailure {
    pub session: SandboxSession,
    pub error: CleanupError,
}

/// What one cleanup pass did. Sessions are listed in snapshot order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// How many expired sessions the snapshot held.
    pub expired: usize,
    /// The sessions whose container was stopped and whose row was deleted.
    pub cleaned: Vec<SandboxSession>,
    /// Sessions left alone because the snapshot was stale (replaced, gone or no longer expired).
    pub skipped: usize,
    pub errors: Vec<CleanupFailure>,
}

enum SessionOutcome {
    Cleaned(SandboxSession),
    Skipped,
    Failed(CleanupFailure),
}

/// Removes expired sandboxes (`docs/maintenance.md`).
///
/// A snapshot of expired running sessions is taken; each is then re-checked under its chat's
/// lock, its container stopped and its row deleted. A failure is logged, counted and recorded,
/// and the pass goes on. Sessions are worked on `concurrency` at a time; results keep snapshot
/// order, and with a concurrency of 1 every call happens in snapshot order too.
#[derive(Clone)]
pub struct CleanupExpiredSandboxes {
    lifecycle: Lifecycle,
    batch_limit: usize,
    concurrency: usize,
}

debug_fields!(CleanupExpiredSandboxes { batch_limit, concurrency });

impl CleanupExpiredSandboxes {
    /// With [`DEFAULT_CLEANUP_BATCH_LIMIT`] and [`DEFAULT_CLEANUP_CONCURRENCY`].
    pub fn new(
        repository: Arc<dyn SessionRepository>,
        locker: Arc<dyn LifecycleLocker>,
        engines: impl Into<Engines>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            lifecycle: Lifecycle::new(repository, locker, engines, clock),
            batch_limit: DEFAULT_CLEANUP_BATCH_LIMIT,
            concurrency: DEFAULT_CLEANUP_CONCURRENCY,
        }
    }

    /// Durable workspaces: each expired sandbox's workspace is saved before its container is
    /// removed; one that cannot be saved is kept for the next pass.
    pub fn with_workspaces(mut self, workspaces: Option<Workspaces>) -> Self {
        self.lifecycle.workspaces = workspaces;
        self
    }

    /// At most this many sessions per pass (at least 1).
    pub fn with_batch_limit(mut self, limit: usize) -> Self {
        self.batch_limit = limit.max(1);
        self
    }

    /// This many sessions at the same time (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// One pass. Fails only when the snapshot cannot be read; failures of single sessions are
    /// in the report.
    pub async fn execute(&self) -> Result<CleanupReport, CleanupError> {
        let span = usecase_span!(
            "usecase.cleanup_expired_sandboxes",
            sandbox.expired_count = Empty,
            sandbox.cleaned_count = Empty,
            sandbox.error_count = Empty,
        );
        let outcome = self.clean_expired(&span).instrument(span.clone()).await;
        record_result(&span, outcome.as_ref(), |report| {
            span.record("sandbox.cleaned_count", report.cleaned.len());
            span.record("sandbox.error_count", report.errors.len());
            if report.errors.is_empty() { "completed" } else { "completed_with_errors" }
        });
        outcome
    }

    async fn clean_expired(&self, span: &Span) -> Result<CleanupReport, CleanupError> {
        let now = self.lifecycle.clock.now();
        let snapshot = self.lifecycle.repository.list_expired(now, self.batch_limit).await?;
        span.record("sandbox.expired_count", snapshot.len());

        let mut report = CleanupReport { expired: snapshot.len(), ..CleanupReport::default() };
        let mut outcomes = futures::stream::iter(snapshot)
            .map(|session| self.clean_one(session, now, span))
            .buffered(self.concurrency);
        while let Some(outcome) = outcomes.next().await {
            match outcome {
                SessionOutcome::Cleaned(session) => report.cleaned.push(session),
                SessionOutcome::Skipped => report.skipped += 1,
                SessionOutcome::Failed(failure) => report.errors.push(failure),
            }
        }
        refresh_active_count(self.lifecycle.repository.as_ref()).await;
        Ok(report)
    }

    async fn clean_one(
        &self,
        snapshot: SandboxSession,
        now: Timestamp,
        parent: &Span,
    ) -> SessionOutcome {
        let span = usecase_span!(
            parent: parent,
            "usecase.cleanup_expired_sandbox",
            chat.id = %snapshot.chat_id,
            session.id = %snapshot.session_id,
            container.id = %snapshot.container_id,
            workspace.result = Empty,
        );
        let outcome = async {
            match self.remove_if_still_expired(&snapshot, now).await {
                Ok(Some(session)) => {
                    metrics::counter!(CLEANUP_TOTAL, "result" => "cleaned").increment(1);
                    tracing::info!(
                        chat_id = %session.chat_id,
                        session_id = %session.session_id,
                        container_id = %session.container_id,
                        "sandbox_cleaned"
                    );
                    SessionOutcome::Cleaned(session)
                }
                Ok(None) => SessionOutcome::Skipped,
                Err(error) => {
                    metrics::counter!(CLEANUP_ERROR_TOTAL, "error.type" => error.kind())
                        .increment(1);
                    tracing::error!(
                        chat_id = %snapshot.chat_id,
                        session_id = %snapshot.session_id,
                        container_id = %snapshot.container_id,
                        error = error.kind(),
                        "sandbox_clean_failed"
                    );
                    SessionOutcome::Failed(CleanupFailure { session: snapshot, error })
                }
            }
        }
        .instrument(span.clone())
        .await;

        let result = match &outcome {
            SessionOutcome::Cleaned(_) => "cleaned",
            SessionOutcome::Skipped => "skipped",
            SessionOutcome::Failed(failure) => {
                record_error(&span, &failure.error);
                "error"
            }
        };
        span.record("sandbox.result", result);
        outcome
    }

    /// Stops and deletes the session if, under its chat's lock, it is still the chat's running
    /// session and still expired. `None` when the snapshot was stale.
    async fn remove_if_still_expired(
        &self,
        snapshot: &SandboxSession,
        now: Timestamp,
    ) -> Result<Option<SandboxSession>, CleanupError> {
        let _lock = self.lifecycle.locker.lock(snapshot.chat_id).await?;
        let current = self.lifecycle.repository.get_running_by_chat(snapshot.chat_id).await?;
        let Some(current) = current
            .filter(|current| current.session_id == snapshot.session_id && current.is_expired(now))
        else {
            return Ok(None);
        };
        self.lifecycle.remove::<CleanupError>(&current, SaveReason::Expiry, now).await?;
        Ok(Some(current))
    }
}
