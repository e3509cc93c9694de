//! Keeping a chat's sandbox alive: moving its expiry later, when asked (keep-alive) or because
//! the sandbox is in use (sliding expiry), never past its maximum lifetime.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use sandkeeper_domain::spelling;
use sandkeeper_domain::{ChatId, SandboxSession, SessionId, Timestamp};
use sandkeeper_ports::Report;
use sandkeeper_ports::debug_fields;
use sandkeeper_ports::error_kind;
use sandkeeper_ports::{Clock, LifecycleLocker, SessionRepository, StoreError};
use tracing::field::{Empty, display};
use tracing::{Instrument, Span};

use crate::access::{AccessError, live_session};
use crate::telemetry::{record_error, usecase_span};

/// Counter `sandbox.keepalive.total{trigger=request|activity, result=extended|unchanged|
/// not_found|error}`.
const KEEPALIVE_TOTAL: &str = "sandbox.keepalive.total";

/// How long a sandbox may live at most, counted from its creation, however often it is kept
/// alive.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The shortest interval between two pushes of a sandbox's expiry while an operation runs in it.
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);

/// The bounds of [`KeepAlive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAliveSettings {
    /// How far a keep-alive without a TTL, and every push of the sliding expiry, moves the
    /// expiry: to `now + default_ttl`.
    pub default_ttl: Duration,
    /// The longest TTL a keep-alive may ask for.
    pub max_ttl: Duration,
    /// No expiry is ever set past `created_at + max_lifetime`.
    pub max_lifetime: Duration,
}

/// Keep the chat's sandbox alive for `ttl` from now (`None`: the deployment's TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAliveCommand {
    pub chat_id: ChatId,
    pub ttl: Option<Duration>,
}

impl KeepAliveCommand {
    /// With the deployment's TTL.
    pub fn new(chat_id: ChatId) -> Self {
        Self { chat_id, ttl: None }
    }
}

/// What a keep-alive did to the expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepAliveResult {
    /// The expiry moved later.
    Extended,
    /// The sandbox already lived at least that long (an expiry is never moved back), or it has
    /// reached its maximum lifetime.
    Unchanged,
}

spelling!(KeepAliveResult { Extended => "extended", Unchanged => "unchanged" });

/// The chat's sandbox after the keep-alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAliveOutcome {
    /// As it is in the store now, with its new expiry.
    pub session: SandboxSession,
    pub result: KeepAliveResult,
    /// The latest expiry the sandbox can ever get: `created_at + max_lifetime`.
    pub lifetime_ends_at: Timestamp,
}

/// Why [`KeepAlive`] did not keep the sandbox alive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeepAliveError {
    /// The TTL asked for is zero or longer than the maximum TTL (nothing was touched).
    #[error(
        "a keep-alive ttl of {} is not allowed: ask for 1 second to {} (the maximum TTL)",
        seconds(*.ttl),
        seconds(*.max)
    )]
    InvalidTtl { ttl: Duration, max: Duration },
    /// [`AccessError::NoSandbox`]: the chat has no running sandbox, or only an expired one,
    /// which is not brought back; or [`AccessError::Store`]. A keep-alive takes no operation
    /// slot and runs nothing in the sandbox, so it is never `Busy`, `SandboxGone` or `Runtime`.
    #[error(transparent)]
    Access(#[from] AccessError),
}

impl From<StoreError> for KeepAliveError {
    fn from(error: StoreError) -> Self {
        Self::Access(error.into())
    }
}

error_kind!(KeepAliveError { InvalidTtl => "invalid_ttl" } wraps Access);

fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{:.3}s", duration.as_secs_f64())
    }
}

/// Why the expiry moves: a caller asked, or the sandbox is in use (sliding expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Request,
    Activity,
}

spelling!(Trigger { Request => "request", Activity => "activity" });

/// Moves a chat's running sandbox's expiry to `now + ttl`, bounded by its maximum lifetime
/// (`created_at + max_lifetime`), and never earlier than it already is.
///
/// Under the chat's lifecycle lock, the session is read again and checked (running, not
/// expired), the new expiry computed and written with the store's conditional
/// [`SessionRepository::extend_expiry`]. The cleanup re-reads the session under the same lock
/// before it removes anything, so a sandbox kept alive after the cleanup's snapshot is not
/// removed.
///
/// The same operation serves the sliding expiry: [`Self::while_active`] pushes the expiry of a
/// sandbox while an operation runs in it; [`crate::SandboxAccess::with_sliding_expiry`] does
/// that for every operation that enters a sandbox (see `docs/exec.md`).
#[derive(Clone)]
pub struct KeepAlive {
    repository: Arc<dyn SessionRepository>,
    locker: Arc<dyn LifecycleLocker>,
    clock: Arc<dyn Clock>,
    settings: KeepAliveSettings,
}

debug_fields!(KeepAlive { settings });

impl KeepAlive {
    pub fn new(
        repository: Arc<dyn SessionRepository>,
        locker: Arc<dyn LifecycleLocker>,
        clock: Arc<dyn Clock>,
        settings: KeepAliveSettings,
    ) -> Self {
        Self { repository, locker, clock, settings }
    }

    pub fn settings(&self) -> &KeepAliveSettings {
        &self.settings
    }

    /// The latest expiry `session` can ever get: `created_at + max_lifetime`.
    pub fn lifetime_ends_at(&self, session: &SandboxSession) -> Timestamp {
        TimeDelta::from_std(self.settings.max_lifetime)
            .ok()
            .and_then(|lifetime| session.created_at.checked_add_signed(lifetime))
            .unwrap_or(Timestamp::MAX_UTC)
    }

    /// Keeps the chat's sandbox alive for the command's TTL from now.
    pub async fn execute(
        &self,
        command: KeepAliveCommand,
    ) -> Result<KeepAliveOutcome, KeepAliveError> {
        let ttl = command.ttl.unwrap_or(self.settings.default_ttl);
        self.extend(command.chat_id, None, ttl, Trigger::Request).await
    }

    /// The sliding expiry's push: keeps `session` alive for the deployment's TTL from now, if
    /// it is still the chat's running, unexpired session.
    pub async fn record_activity(
        &self,
        session: &SandboxSession,
    ) -> Result<KeepAliveOutcome, KeepAliveError> {
        self.extend(
            session.chat_id,
            Some(session.session_id),
            self.settings.default_ttl,
            Trigger::Activity,
        )
        .await
    }

    /// Runs `operation` (an exec, a transfer... in `session`'s sandbox) while keeping the sandbox
    /// alive: its expiry is pushed when the operation starts, every third of the TTL while it
    /// runs (so that a command longer than the TTL is not removed under itself), and when it
    /// ends. A push that fails is logged and does not fail the operation.
    pub async fn while_active<F: Future>(
        &self,
        session: &SandboxSession,
        operation: F,
    ) -> F::Output {
        self.push(session).await;
        let period = (self.settings.default_ttl / 3).max(MIN_HEARTBEAT);
        let heartbeat = async {
            loop {
                tokio::time::sleep(period).await;
                self.push(session).await;
            }
        };
        let output = tokio::select! {
            output = operation => output,
            () = heartbeat => unreachable!("the heartbeat loops until the operation ends"),
        };
        self.push(session).await;
        output
    }

    /// One push of the sliding expiry; a failure is logged, not returned.
    pub(crate) async fn push(&self, session: &SandboxSession) {
        match self.record_activity(session).await {
            Ok(_) => {}
            // Deleted, replaced or expired meanwhile: the operation will tell its own story.
            Err(KeepAliveError::Access(AccessError::NoSandbox { .. })) => {}
            Err(error) => tracing::warn!(
                chat_id = %session.chat_id,
                session_id = %session.session_id,
                error = %Report(&error),
                "sandbox_keepalive_failed: the sliding expiry could not be pushed"
            ),
        }
    }

    async fn extend(
        &self,
        chat_id: ChatId,
        only_session: Option<SessionId>,
        ttl: Duration,
        trigger: Trigger,
    ) -> Result<KeepAliveOutcome, KeepAliveError> {
        let span = usecase_span!(
            chat: chat_id,
            "usecase.keep_alive",
            sandbox.trigger = trigger.as_str(),
            ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            sandbox.expires_at = Empty,
            sandbox.lifetime_ends_at = Empty,
        );
        let outcome =
            self.extend_locked(chat_id, only_session, ttl, &span).instrument(span.clone()).await;
        let result = match &outcome {
            Ok(outcome) => {
                span.record("sandbox.expires_at", display(outcome.session.expires_at));
                if trigger == Trigger::Request {
                    tracing::info!(
                        parent: &span,
                        chat_id = %outcome.session.chat_id,
                        session_id = %outcome.session.session_id,
                        container_id = %outcome.session.container_id,
                        expires_at = %outcome.session.expires_at,
                        result = outcome.result.as_str(),
                        "sandbox_kept_alive"
                    );
                }
                outcome.result.as_str()
            }
            Err(error @ KeepAliveError::Access(AccessError::NoSandbox { .. })) => {
                // For the sliding expiry a sandbox that went away is no error of the push.
                if trigger == Trigger::Request {
                    record_error(&span, error);
                }
                "not_found"
            }
            Err(error) => {
                record_error(&span, error);
                "error"
            }
        };
        span.record("sandbox.result", result);
        metrics::counter!(KEEPALIVE_TOTAL, "trigger" => trigger.as_str(), "result" => result)
            .increment(1);
        outcome
    }

    async fn extend_locked(
        &self,
        chat_id: ChatId,
        only_session: Option<SessionId>,
        ttl: Duration,
        span: &Span,
    ) -> Result<KeepAliveOutcome, KeepAliveError> {
        let invalid = KeepAliveError::InvalidTtl { ttl, max: self.settings.max_ttl };
        if ttl.is_zero() || ttl > self.settings.max_ttl {
            return Err(invalid);
        }
        let ttl = TimeDelta::from_std(ttl).map_err(|_| invalid)?;
        let _lock = self.locker.lock(chat_id).await?;
        let now = self.clock.now();
        let current = live_session(self.repository.as_ref(), chat_id, now)
            .await?
            .filter(|session| only_session.is_none_or(|id| id == session.session_id))
            .ok_or(AccessError::NoSandbox { chat_id })?;
        span.record("session.id", display(current.session_id));
        span.record("container.id", display(&current.container_id));

        let lifetime_ends_at = self.lifetime_ends_at(&current);
        span.record("sandbox.lifetime_ends_at", display(lifetime_ends_at));
        let wanted = now.checked_add_signed(ttl).unwrap_or(lifetime_ends_at).min(lifetime_ends_at);
        // The stores keep microseconds; the answer shows what a later read will show.
        let wanted = Timestamp::from_timestamp_micros(wanted.timestamp_micros()).unwrap_or(wanted);
        if wanted <= current.expires_at {
            return Ok(KeepAliveOutcome {
                session: current,
                result: KeepAliveResult::Unchanged,
                lifetime_ends_at,
            });
        }
        if self.repository.extend_expiry(current.session_id, wanted).await? {
            let session = SandboxSession { expires_at: wanted, ..current };
            return Ok(KeepAliveOutcome {
                session,
                result: KeepAliveResult::Extended,
                lifetime_ends_at,
            });
        }
        // Only a writer that bypassed the chat's lock gets here (it removed the session, or
        // extended it further): answer with what the store holds now.
        match self.repository.get(current.session_id).await? {
            Some(session) if session.status == current.status && !session.is_expired(now) => {
                Ok(KeepAliveOutcome {
                    session,
                    result: KeepAliveResult::Unchanged,
                    lifetime_ends_at,
                })
            }
            _ => Err(AccessError::NoSandbox { chat_id }.into()),
        }
    }
}
