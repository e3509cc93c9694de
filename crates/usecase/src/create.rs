use std::sync::Arc;
use std::time::{Duration, Instant};

use sandkeeper_domain::ContainerId;
use sandkeeper_domain::spelling;
use sandkeeper_domain::{ChatId, SandboxSession, SandboxStatus, SessionId, Timestamp};
use sandkeeper_ports::Report;
use sandkeeper_ports::debug_fields;
use sandkeeper_ports::error_kind;
use sandkeeper_ports::{
    Clock, ContainerSpec, Engines, LifecycleLocker, Placement, PlacementError, RuntimeError,
    SaveError, SessionRepository, StoreError,
};
use tracing::field::{Empty, display};
use tracing::{Instrument, Span};

use crate::engines::{Lifecycle, note_unreachable, unreachable};
use crate::pool::{Claimed, WarmPool, WarmPools};
use crate::telemetry::{record_result, refresh_active_count};
use crate::workspace::{SaveReason, WorkspaceError, WorkspaceRestore, Workspaces};

/// Counter `sandbox.create.total{result=created|reused|replaced|error}`.
const CREATE_TOTAL: &str = "sandbox.create.total";
/// Histogram `sandbox.create.duration.seconds{result}`: how long a whole call took.
const CREATE_DURATION: &str = "sandbox.create.duration.seconds";

/// Get-or-create a chat's sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateSandboxCommand {
    pub chat_id: ChatId,
    /// The lifetime of a sandbox this call creates; `None` means the deployment's default.
    /// A reused sandbox keeps its own expiry.
    pub ttl: Option<Duration>,
}

impl CreateSandboxCommand {
    /// With the deployment's default TTL.
    pub fn new(chat_id: ChatId) -> Self {
        Self { chat_id, ttl: None }
    }
}

/// What [`CreateSandbox`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreateResult {
    /// The chat had no running sandbox; a new one was created.
    Created,
    /// The chat's running sandbox had not expired; it is returned unchanged.
    Reused,
    /// The chat's sandbox had expired; it was removed and a new one created.
    Replaced,
}

spelling!(CreateResult { Created => "created", Reused => "reused", Replaced => "replaced" });

/// The chat's running sandbox after the call, and how it came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOutcome {
    pub session: SandboxSession,
    pub result: CreateResult,
    /// What was restored into a new sandbox; `None` for a reused one, or without a
    /// workspace store.
    pub workspace: Option<WorkspaceRestore>,
}

/// Why [`CreateSandbox`] failed. The message is the underlying error's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateSandboxError {
    /// The store (or the store-backed lock) failed; nothing was created.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store refused the new session because another one runs for the chat (a writer that
    /// bypassed the chat's lock). The container created for it was stopped again.
    #[error("chat {chat_id} already has another running session")]
    Conflict { chat_id: ChatId },
    /// The container runtime failed. On a failed replace the expired session is kept, so the
    /// cleanup retries it.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// As many sandboxes as allowed are running; a new one is refused before touching Docker.
    #[error(
        "sandbox capacity reached: {limit} running is the maximum; retry once some expire or raise the limit"
    )]
    CapacityReached { limit: u64 },
    /// The requested TTL puts the expiry beyond what timestamps can hold.
    #[error("ttl of {ttl:?} is too long: the sandbox's expiry cannot be represented")]
    TtlOutOfRange { ttl: Duration },
    /// The expired sandbox's workspace could not be saved (it is kept, and the cleanup
    /// retries), or the chat's archive could not be restored into the new sandbox (which was
    /// removed again; the archive is kept).
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

impl From<SaveError> for CreateSandboxError {
    fn from(error: SaveError) -> Self {
        match error {
            SaveError::Conflict { chat_id } => Self::Conflict { chat_id },
            SaveError::Store(error) => Self::Store(error),
        }
    }
}

error_kind! {
    CreateSandboxError {
        Conflict => "conflict",
        CapacityReached => "capacity_reached",
        TtlOutOfRange => "invalid_ttl",
    }
    wraps Store, Runtime, Workspace
}

/// A new sandbox's session, and what was restored into it.
type Launched = (SandboxSession, Option<WorkspaceRestore>);

/// A container claimed from an engine's pool, with that pool.
type Taken = (WarmPool, Claimed);

type SessionIdGenerator = Arc<dyn Fn() -> SessionId + Send + Sync>;

/// Get-or-create of a chat's sandbox (`docs/architecture.md`, "How a request flows").
///
/// Under the chat's lifecycle lock: a running, unexpired session is reused; an expired one is
/// stopped, deleted and replaced; otherwise a new one is created. A container whose session
/// cannot be saved is stopped again, so nothing untracked survives.
#[derive(Clone)]
pub struct CreateSandbox {
    lifecycle: Lifecycle,
    default_ttl: Duration,
    max_sandboxes: Option<u64>,
    new_session_id: SessionIdGenerator,
    pool: Option<WarmPools>,
}

debug_fields!(CreateSandbox { default_ttl, max_sandboxes });

/// Which span fields name the new container: a fresh create names it `container.id` at once;
/// a replace names it `sandbox.new_container.id` and leaves `session.id`/`container.id` for
/// after the save, so that old and new identities are never mixed on a failed replace.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Fresh,
    Replacement,
}

impl CreateSandbox {
    /// No capacity limit; random (v4) session ids.
    pub fn new(
        repository: Arc<dyn SessionRepository>,
        locker: Arc<dyn LifecycleLocker>,
        engines: impl Into<Engines>,
        clock: Arc<dyn Clock>,
        default_ttl: Duration,
    ) -> Self {
        Self {
            lifecycle: Lifecycle::new(repository, locker, engines, clock),
            default_ttl,
            max_sandboxes: None,
            new_session_id: Arc::new(SessionId::new_v4),
            pool: None,
        }
    }

    /// Durable workspaces: an expired sandbox's workspace is saved before it is replaced, and
    /// a new sandbox gets the chat's archive restored before it is handed out.
    pub fn with_workspaces(mut self, workspaces: Option<Workspaces>) -> Self {
        self.lifecycle.workspaces = workspaces;
        self
    }

    /// The warm pools: a new sandbox is a container claimed from the pool of the engine it is
    /// placed on when one is ready there, and a container created now otherwise. Everything
    /// else (session, TTL, workspace restore, telemetry, capacity) is the same either way.
    pub fn with_pool(mut self, pool: Option<WarmPools>) -> Self {
        self.pool = pool;
        self
    }

    /// Refuse to create a sandbox for a chat without one while `max` or more are running.
    /// Exact across replicas: the store counts the running sandboxes and records the new one in
    /// one step ([`SessionRepository::save_within`]).
    pub fn with_max_sandboxes(mut self, max: Option<u64>) -> Self {
        self.max_sandboxes = max;
        self
    }

    /// Where new session ids come from (tests pin them).
    pub fn with_session_id_generator(
        mut self,
        generator: impl Fn() -> SessionId + Send + Sync + 'static,
    ) -> Self {
        self.new_session_id = Arc::new(generator);
        self
    }

    pub async fn execute(
        &self,
        command: CreateSandboxCommand,
    ) -> Result<CreateOutcome, CreateSandboxError> {
        let span = tracing::info_span!(
            "usecase.create_sandbox",
            chat.id = %command.chat_id,
            sandbox.result = Empty,
            session.id = Empty,
            container.id = Empty,
            sandbox.previous_session.id = Empty,
            sandbox.previous_container.id = Empty,
            sandbox.new_session.id = Empty,
            sandbox.new_container.id = Empty,
            error = Empty,
            "error.type" = Empty,
            otel.status_code = Empty,
            workspace.result = Empty,
        );
        let started = Instant::now();
        let outcome = self.get_or_create(command, &span).instrument(span.clone()).await;
        let result = record_result(&span, outcome.as_ref(), |outcome| outcome.result.as_str());
        metrics::counter!(CREATE_TOTAL, "result" => result).increment(1);
        metrics::histogram!(CREATE_DURATION, "result" => result)
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    async fn get_or_create(
        &self,
        command: CreateSandboxCommand,
        span: &Span,
    ) -> Result<CreateOutcome, CreateSandboxError> {
        let ttl = command.ttl.unwrap_or(self.default_ttl);
        let ttl_delta = chrono::TimeDelta::from_std(ttl)
            .map_err(|_| CreateSandboxError::TtlOutOfRange { ttl })?;
        let _lock = self.lifecycle.locker.lock(command.chat_id).await?;
        let now = self.lifecycle.clock.now();
        let expires_at =
            now.checked_add_signed(ttl_delta).ok_or(CreateSandboxError::TtlOutOfRange { ttl })?;

        match self.lifecycle.repository.get_running_by_chat(command.chat_id).await? {
            Some(current) if !current.is_expired(now) => {
                span.record("session.id", display(current.session_id));
                span.record("container.id", display(&current.container_id));
                tracing::info!(
                    chat_id = %current.chat_id,
                    session_id = %current.session_id,
                    container_id = %current.container_id,
                    "sandbox_reused"
                );
                Ok(CreateOutcome {
                    session: current,
                    result: CreateResult::Reused,
                    workspace: None,
                })
            }
            Some(expired) => {
                let (session, workspace) = self.replace(expired, now, expires_at, span).await?;
                Ok(CreateOutcome { session, result: CreateResult::Replaced, workspace })
            }
            None => {
                let (session, workspace) =
                    self.create_fresh(command.chat_id, now, expires_at, span).await?;
                Ok(CreateOutcome { session, result: CreateResult::Created, workspace })
            }
        }
    }

    async fn create_fresh(
        &self,
        chat_id: ChatId,
        now: Timestamp,
        expires_at: Timestamp,
        span: &Span,
    ) -> Result<Launched, CreateSandboxError> {
        // Refuses early, before a container is made, when the limit is plainly reached; the
        // save makes the limit exact.
        if let Some(limit) = self.max_sandboxes {
            if self.lifecycle.repository.count_running().await? >= limit {
                return Err(CreateSandboxError::CapacityReached { limit });
            }
        }
        let session_id = (self.new_session_id)();
        span.record("session.id", display(session_id));
        let spec = ContainerSpec { session_id, chat_id, created_at: now, expires_at };
        self.launch(spec, Stage::Fresh, span).await
    }

    async fn replace(
        &self,
        expired: SandboxSession,
        now: Timestamp,
        expires_at: Timestamp,
        span: &Span,
    ) -> Result<Launched, CreateSandboxError> {
        let session_id = (self.new_session_id)();
        span.record("sandbox.previous_session.id", display(expired.session_id));
        span.record("sandbox.previous_container.id", display(&expired.container_id));
        span.record("sandbox.new_session.id", display(session_id));

        // A failed save or stop keeps the old row, so the cleanup retries the container later.
        // On an engine that is down, neither is tried: the replacement must not wait on it;
        // its container, left without a row, is reaped as an orphan once the engine answers.
        self.lifecycle.remove::<CreateSandboxError>(&expired, SaveReason::Replacement, now).await?;
        tracing::info!(
            chat_id = %expired.chat_id,
            session_id = %expired.session_id,
            container_id = %expired.container_id,
            "sandbox_replaced"
        );

        let spec =
            ContainerSpec { session_id, chat_id: expired.chat_id, created_at: now, expires_at };
        let (session, workspace) = self.launch(spec, Stage::Replacement, span).await?;
        span.record("session.id", display(session.session_id));
        span.record("container.id", display(&session.container_id));
        Ok((session, workspace))
    }

    /// Creates the container and saves its session, then refreshes the active gauge whatever
    /// happened (a replace has already deleted the old row by now).
    async fn launch(
        &self,
        spec: ContainerSpec,
        stage: Stage,
        span: &Span,
    ) -> Result<Launched, CreateSandboxError> {
        let launched = self.create_and_save(spec, stage, span).await;
        refresh_active_count(self.lifecycle.repository.as_ref()).await;
        launched
    }

    async fn create_and_save(
        &self,
        spec: ContainerSpec,
        stage: Stage,
        span: &Span,
    ) -> Result<Launched, CreateSandboxError> {
        let (container_id, placement, claimed) = self.create_container(&spec).await?;
        let field = match stage {
            Stage::Fresh => "container.id",
            Stage::Replacement => "sandbox.new_container.id",
        };
        span.record(field, display(&container_id));

        let session = SandboxSession {
            session_id: spec.session_id,
            chat_id: spec.chat_id,
            container_id,
            status: SandboxStatus::Running,
            created_at: spec.created_at,
            expires_at: spec.expires_at,
            engine: placement.engine().name().clone(),
        };
        // The chat's archive goes in before anyone can see the sandbox; a sandbox whose restore
        // failed is removed, never handed out empty.
        let workspace = match &self.lifecycle.workspaces {
            Some(workspaces) => match workspaces.restore(&session).await {
                Ok(restore) => Some(restore),
                Err(error) => {
                    self.stop_untracked(&session, claimed.as_ref()).await;
                    return Err(error.into());
                }
            },
            None => None,
        };
        // A fresh sandbox counts against the limit in the same step as its save, so that
        // creates racing on several replicas never go past it together; a replacement takes
        // the place of the session it replaces.
        let limit = match stage {
            Stage::Fresh => self.max_sandboxes,
            Stage::Replacement => None,
        };
        let saved = match limit {
            Some(limit) => match self.lifecycle.repository.save_within(&session, limit).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(CreateSandboxError::CapacityReached { limit }),
                Err(error) => Err(error.into()),
            },
            None => {
                self.lifecycle.repository.save(&session).await.map_err(CreateSandboxError::from)
            }
        };
        if let Err(error) = saved {
            self.stop_untracked(&session, claimed.as_ref()).await;
            return Err(error);
        }
        if let Some((pool, claimed)) = &claimed {
            pool.settle(claimed).await;
        }
        tracing::info!(
            chat_id = %session.chat_id,
            session_id = %session.session_id,
            container_id = %session.container_id,
            engine = %session.engine,
            "sandbox_created"
        );
        drop(placement);
        Ok((session, workspace))
    }

    /// Places the sandbox on an engine and takes a container from that engine's pool, or
    /// creates one there; an engine that does not answer is marked down and the next one is
    /// tried at once.
    async fn create_container(
        &self,
        spec: &ContainerSpec,
    ) -> Result<(ContainerId, Placement<'_>, Option<Taken>), CreateSandboxError> {
        let running = if self.lifecycle.engines.needs_counts() {
            self.lifecycle.repository.count_running_by_engine().await?
        } else {
            Vec::new()
        };
        let mut excluded = Vec::new();
        let mut last_error = None;
        loop {
            let placement = match self.lifecycle.engines.place(&running, &excluded) {
                Ok(placement) => placement,
                Err(PlacementError::Full { limit }) => {
                    return Err(CreateSandboxError::CapacityReached { limit });
                }
                Err(PlacementError::NoneUp(error)) => {
                    return Err(last_error.unwrap_or(error).into());
                }
            };
            let engine = placement.engine();
            if let Some(pool) = self.pool.as_ref().and_then(|pools| pools.of(engine.name())) {
                if let Some(claimed) = pool.claim().await {
                    let container_id = claimed.container_id.clone();
                    return Ok((container_id, placement, Some((pool.clone(), claimed))));
                }
            }
            match engine.runtime().create(spec).await {
                Ok(container_id) => return Ok((container_id, placement, None)),
                Err(error) if unreachable(&error) => {
                    note_unreachable(engine, &error, self.lifecycle.clock.now());
                    excluded.push(engine.name().clone());
                    last_error = Some(error);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Stops a container that has no row. Nothing may run without a row: if this stop fails
    /// too, the container keeps its managed labels and the maintenance sweep reaps it as an
    /// orphan. A container claimed from a pool is removed and its place freed.
    async fn stop_untracked(&self, session: &SandboxSession, claimed: Option<&Taken>) {
        if let Some((pool, claimed)) = claimed {
            pool.discard(claimed).await;
            return;
        }
        let stopped = match self.lifecycle.engines.engine_of(session) {
            Ok(engine) => engine.runtime().stop(&session.container_id).await,
            Err(error) => Err(error),
        };
        if let Err(stop_error) = stopped {
            tracing::warn!(
                chat_id = %session.chat_id,
                session_id = %session.session_id,
                container_id = %session.container_id,
                error = %Report(&stop_error),
                "sandbox_untracked_stop_failed"
            );
        }
    }
}
