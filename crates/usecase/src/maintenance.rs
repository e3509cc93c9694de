//! The maintenance sweep: brings the store and the container runtime back into agreement.
//!
//! One pass, gated by a named lease so that one replica at a time sweeps:
//! 1. reconcile: a `Running` session whose container exited or is missing becomes `Crashed`
//!    (most are marked within moments by [`crate::RecordContainerExit`], told by the runtime;
//!    this phase is the safety net for exits it missed, e.g. while the runtime was unreachable);
//! 2. terminal cleanup: `Stopped`/`Crashed` sessions lose their container, then their row;
//! 3. orphans: managed containers of this instance with no session row, older than a grace
//!    period, are force-removed.
//!
//! The phases work engine by engine: each session is judged on the engine its row names, and
//! each engine's containers are listed on their own. An engine that is down (or cannot be
//! listed) is skipped for the pass, never read as empty. A `Running` session of an engine that
//! has been down for [`MaintenanceSettings::engine_loss_grace`] (as this process saw it) is
//! marked `Crashed`, so that the chat's next get-or-create makes a sandbox on another engine;
//! its container is removed once the engine answers again.
//!
//! Every phase is bounded in rows and the whole pass in time; each phase resumes after the last
//! row (or container) the previous pass handled, so that what lies beyond one pass's bound is
//! still reached. Those positions are kept with the lease in the store, so that a restarted
//! process, or another replica, goes on where the last pass stopped. Nothing is ever deleted on
//! the strength of a failed read: an unreachable runtime or store leaves rows and containers
//! alone.
//!
//! The lease is short and renewed while the pass works, so that a sweeper that dies (SIGKILL)
//! frees it within [`MaintenanceSettings::lease_duration`]. Each acquisition has a token of its
//! own (the holder plus a pass number), and before each step that changes something (marking a
//! session crashed, removing a container) the pass makes sure that its token still holds the
//! lease, renewing it when a third of its duration has passed: once the lease is lost (it ran
//! out, and another sweeper may hold it), the pass stops at once, so that two passes never
//! overlap.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use sandkeeper_domain::{ContainerId, SandboxSession, SandboxStatus, SessionId, Timestamp};
use sandkeeper_ports::debug_fields;
use sandkeeper_ports::inprocess::lock;
use sandkeeper_ports::{
    Clock, ContainerState, Engine, Engines, LeaseRequest, MaintenanceLeases, ManagedContainer,
    SessionRepository, StoreError,
};
use sandkeeper_ports::{ErrorKind, Report};
use tracing::Instrument;

use crate::workspace::{SaveReason, Workspaces};

use crate::engines::note_unreachable;
use crate::exits::{DetectedBy, mark_crashed};
use crate::pool::WarmPools;
use crate::telemetry::{record_error, refresh_active_count};

/// The lease name used unless configured otherwise.
pub const DEFAULT_MAINTENANCE_LEASE_NAME: &str = "sandbox_lifecycle_maintenance";

/// How a sweep behaves. [`MaintenanceSettings::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceSettings {
    /// The lease that lets one sweep run at a time. Default `sandbox_lifecycle_maintenance`.
    pub lease_name: String,
    /// Who holds the lease while sweeping: unique per process (e.g. instance id plus a suffix).
    pub holder: String,
    /// How long a won lease is held unless completed, released or renewed. The pass renews it
    /// while it works; a sweeper that dies frees it within this. Default 3 s.
    pub lease_duration: Duration,
    /// A non-forced sweep is skipped when the last successful one is more recent. Default 30 s.
    pub min_interval: Duration,
    /// At most this many rows (or containers) per phase. Default 250. With more, each pass
    /// goes on after the last one the previous pass of this process handled.
    pub max_rows_per_phase: usize,
    /// No new row or container is started once the pass has run this long. Default 250 ms.
    pub max_duration: Duration,
    /// A container without a session row is reaped only once it is older than this, so that a
    /// create between container start and row save is never taken for an orphan. Default 60 s.
    pub orphan_grace: Duration,
    /// How many runtime and store calls of one phase run at a time. Default 8; 0 counts as 1.
    pub concurrency: usize,
    /// How long the `Running` sessions of an engine that stopped answering keep their rows
    /// before they are marked `Crashed`. Default [`DEFAULT_ENGINE_LOSS_GRACE`].
    pub engine_loss_grace: Duration,
}

/// The default of [`MaintenanceSettings::engine_loss_grace`]: two minutes.
pub const DEFAULT_ENGINE_LOSS_GRACE: Duration = Duration::from_secs(120);

impl MaintenanceSettings {
    /// The defaults, with `holder` naming this process.
    pub fn new(holder: impl Into<String>) -> Self {
        Self {
            lease_name: DEFAULT_MAINTENANCE_LEASE_NAME.to_owned(),
            holder: holder.into(),
            lease_duration: Duration::from_secs(3),
            min_interval: Duration::from_secs(30),
            max_rows_per_phase: 250,
            max_duration: Duration::from_millis(250),
            orphan_grace: Duration::from_secs(60),
            concurrency: 8,
            engine_loss_grace: DEFAULT_ENGINE_LOSS_GRACE,
        }
    }
}

/// What one completed pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// `Running` sessions turned `Crashed` because their container was not running.
    pub reconciled: u64,
    /// Terminal sessions whose container and row were removed.
    pub removed: u64,
    /// Containers without a session row that were removed.
    pub orphans_removed: u64,
    /// Rows or containers that could not be handled (left in place for the next pass), plus one
    /// for a skipped orphan phase.
    pub errors: u64,
    /// The pass was cut short by `max_duration`; what is left is handled by the next one.
    pub timed_out: bool,
}

/// The result of [`MaintenanceSweep::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepOutcome {
    /// The lease was held by another sweep, or (unless forced) one completed too recently.
    Skipped,
    Completed(MaintenanceReport),
}

/// What happened to one terminal session in [`MaintenanceSweep::cleanup_terminal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupOutcome {
    /// Its container was removed (or already missing) and its row deleted.
    Removed,
    /// There was no row.
    AlreadyGone,
    /// The row went between the re-read and the delete: someone else cleaned it.
    AlreadyClaimed,
    /// The row is not terminal (it is `Running`); nothing was touched.
    SkippedActive,
    /// The runtime failed to remove the container; the row is kept so a later pass retries.
    RuntimeError,
    /// The session's engine is down; the row is kept until it answers again.
    EngineDown,
}

/// A sweep that could not run or had to stop. The lease has been released (or was never won).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaintenanceError {
    /// The lease could not be read or taken.
    #[error("the maintenance sweep could not take its lease `{lease}`")]
    Lease {
        lease: String,
        #[source]
        error: StoreError,
    },
    /// A phase could not list the sessions it works on.
    #[error("the maintenance sweep could not list {phase} sessions")]
    Store {
        phase: &'static str,
        #[source]
        error: StoreError,
    },
}

impl MaintenanceError {
    /// The kind of the store error behind it (`store_unavailable` or `store_error`), used as the
    /// `error.type` of logs and spans.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Lease { error, .. } | Self::Store { error, .. } => error.kind(),
        }
    }
}

impl ErrorKind for MaintenanceError {
    fn kind(&self) -> &'static str {
        MaintenanceError::kind(self)
    }
}

/// The lease-gated maintenance sweep over the session store and the container runtime.
pub struct MaintenanceSweep {
    repository: Arc<dyn SessionRepository>,
    engines: Engines,
    leases: Arc<dyn MaintenanceLeases>,
    clock: Arc<dyn Clock>,
    settings: MaintenanceSettings,
    /// The last running session the reconcile phase handled, so that the next pass continues
    /// after it.
    running_cursor: Mutex<Option<SessionKey>>,
    /// The last terminal session the cleanup phase handled, so that the next pass continues
    /// after it.
    terminal_cursor: Mutex<Option<SessionKey>>,
    /// The last container the orphan phase examined, so that the next pass continues after it.
    orphan_cursor: Mutex<Option<ContainerKey>>,
    /// Numbers the passes of this sweep, for the lease tokens.
    passes: AtomicU64,
    workspaces: Option<Workspaces>,
    pool: Option<WarmPools>,
}

/// One pass's hold on the lease.
struct Pass {
    /// The lease's holder for this pass: the settings' holder and a pass number.
    token: String,
    /// When the lease was last won or renewed, by the sweep's clock.
    renewed_at: Mutex<Timestamp>,
    /// Set once the lease is lost: no step starts after that.
    lost: AtomicBool,
}

/// Sessions are listed in this order: oldest first, the order of
/// [`SessionRepository::list_after`].
type SessionKey = (Timestamp, SessionId);

fn session_key(session: &SandboxSession) -> SessionKey {
    (session.created_at, session.session_id)
}

fn read<T: Clone>(cursor: &Mutex<Option<T>>) -> Option<T> {
    // A cursor is only ever replaced whole, so a poisoned one is still a valid position.
    lock(cursor).clone()
}

fn write<T>(cursor: &Mutex<Option<T>>, position: Option<T>) {
    *lock(cursor) = position;
}

/// Moves a session cursor past the rows of `page` that were handled (the first `handled`).
/// When the page was the last one (shorter than the `requested` rows) and all of it was
/// handled, the next pass starts from the oldest row again; when nothing was handled, it starts
/// where this one did.
fn advance(
    cursor: &Mutex<Option<SessionKey>>,
    page: &[SandboxSession],
    handled: usize,
    requested: usize,
) {
    if handled == page.len() && page.len() < requested {
        write(cursor, None);
    } else if let Some(last) = handled.checked_sub(1).map(|i| session_key(&page[i])) {
        write(cursor, Some(last));
    }
}

/// Orphan candidates are examined in this order: oldest first.
type ContainerKey = (Timestamp, ContainerId);

fn container_key(container: &ManagedContainer) -> ContainerKey {
    (container.created_at, container.container_id.clone())
}

debug_fields!(MaintenanceSweep { settings });

/// What the reconcile phase decided about one running session.
enum Reconciled {
    Crashed,
    Unchanged,
    Failed,
}

impl MaintenanceSweep {
    pub fn new(
        repository: Arc<dyn SessionRepository>,
        engines: impl Into<Engines>,
        leases: Arc<dyn MaintenanceLeases>,
        clock: Arc<dyn Clock>,
        settings: MaintenanceSettings,
    ) -> Self {
        // Tokens differ from those of an earlier process with the same holder.
        let first_pass = clock.now().timestamp_micros().unsigned_abs();
        Self {
            repository,
            engines: engines.into(),
            leases,
            clock,
            settings,
            running_cursor: Mutex::default(),
            terminal_cursor: Mutex::default(),
            orphan_cursor: Mutex::default(),
            passes: AtomicU64::new(first_pass),
            workspaces: None,
            pool: None,
        }
    }

    /// Durable workspaces: a terminal session's workspace is saved before its container is
    /// removed while the container can still be read, and each pass ends by deleting the
    /// archives past their retention.
    pub fn with_workspaces(mut self, workspaces: Option<Workspaces>) -> Self {
        self.workspaces = workspaces;
        self
    }

    /// The warm pools' slots: a pooled container is never an orphan while its slot exists.
    pub fn with_pool(mut self, pool: Option<WarmPools>) -> Self {
        self.pool = pool;
        self
    }

    pub fn settings(&self) -> &MaintenanceSettings {
        &self.settings
    }

    /// Runs one pass if the lease is won.
    ///
    /// `force` (an explicit request) ignores the minimum interval since the last pass, but a pass
    /// never runs beside another one: a held lease gives [`SweepOutcome::Skipped`] either way.
    /// Completion is recorded only for a pass that succeeded; a failed one releases the lease.
    pub async fn run(&self, force: bool) -> Result<SweepOutcome, MaintenanceError> {
        let span = tracing::info_span!(
            "usecase.maintenance_sweep",
            sandbox.maintenance.forced = force,
            sandbox.result = tracing::field::Empty,
            sandbox.maintenance.reconciled = tracing::field::Empty,
            sandbox.maintenance.removed = tracing::field::Empty,
            sandbox.maintenance.orphans_removed = tracing::field::Empty,
            sandbox.maintenance.errors = tracing::field::Empty,
            sandbox.maintenance.timed_out = tracing::field::Empty,
            error = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let result = self.run_gated(force).instrument(span.clone()).await;
        let _entered = span.enter();
        match &result {
            Ok(SweepOutcome::Skipped) => {
                span.record("sandbox.result", "skipped");
                count_run("skipped");
                tracing::debug!(lease = %self.settings.lease_name, "maintenance_sweep_skipped");
            }
            Ok(SweepOutcome::Completed(report)) => {
                span.record("sandbox.result", "completed");
                span.record("sandbox.maintenance.reconciled", report.reconciled);
                span.record("sandbox.maintenance.removed", report.removed);
                span.record("sandbox.maintenance.orphans_removed", report.orphans_removed);
                span.record("sandbox.maintenance.errors", report.errors);
                span.record("sandbox.maintenance.timed_out", report.timed_out);
                count_run("completed");
                count_report(report);
                tracing::info!(
                    reconciled = report.reconciled,
                    removed = report.removed,
                    orphans_removed = report.orphans_removed,
                    errors = report.errors,
                    timed_out = report.timed_out,
                    "maintenance_sweep_completed"
                );
            }
            Err(error) => {
                span.record("sandbox.result", "failed");
                record_error(&span, error);
                count_run("failed");
                tracing::error!(
                    error = error.kind(),
                    error.message = %Report(&error),
                    "maintenance_sweep_failed"
                );
            }
        }
        result
    }

    async fn run_gated(&self, force: bool) -> Result<SweepOutcome, MaintenanceError> {
        let settings = &self.settings;
        let pass = Pass {
            token: format!(
                "{}#{}",
                settings.holder,
                self.passes.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
            ),
            // Read before asking: the lease runs from the store's now, which is no earlier.
            renewed_at: Mutex::new(self.clock.now()),
            lost: AtomicBool::new(false),
        };
        let request = LeaseRequest {
            name: &settings.lease_name,
            holder: &pass.token,
            duration: settings.lease_duration,
            min_interval: if force { Duration::ZERO } else { settings.min_interval },
        };
        let lease_error =
            |error| MaintenanceError::Lease { lease: settings.lease_name.clone(), error };
        let won = self.leases.try_acquire(&request).await.map_err(lease_error)?;
        if !won {
            return Ok(SweepOutcome::Skipped);
        }

        self.load_positions().await;
        let mut result = self.sweep(&pass).await;
        if result.is_ok() && pass.lost.load(Ordering::SeqCst) {
            result = Err(lease_error(StoreError::Failed(
                format!(
                    "the pass lost the lease `{}` (it ran out) and stopped before its next step",
                    settings.lease_name
                )
                .into(),
            )));
        }
        refresh_active_count(self.repository.as_ref()).await;
        match result {
            Ok(report) => {
                self.save_positions(&pass).await;
                // The pass did its work; if recording that fails, the lease simply expires and
                // the next pass comes a little earlier than the minimum interval.
                if let Err(error) = self.leases.complete(&settings.lease_name, &pass.token).await {
                    tracing::warn!(
                        error = error.kind(),
                        error.message = %Report(&error),
                        "maintenance_lease_complete_failed"
                    );
                }
                Ok(SweepOutcome::Completed(report))
            }
            Err(error) => {
                if let Err(release) = self.leases.release(&settings.lease_name, &pass.token).await {
                    tracing::warn!(
                        error = release.kind(),
                        error.message = %release,
                        "maintenance_lease_release_failed"
                    );
                }
                Err(error)
            }
        }
    }

    /// Whether the pass still holds its lease, renewing it once a third of its duration has
    /// passed since it was won or last renewed. A lease that could not be renewed (lost, or the
    /// store failed) counts as lost for good: the pass starts no step after that.
    async fn hold(&self, pass: &Pass) -> bool {
        if pass.lost.load(Ordering::SeqCst) {
            return false;
        }
        let now = self.clock.now();
        let renewed_at = *lock(&pass.renewed_at);
        if now < add(renewed_at, self.settings.lease_duration / 3) {
            return true;
        }
        let settings = &self.settings;
        match self.leases.renew(&settings.lease_name, &pass.token, settings.lease_duration).await {
            Ok(true) => {
                let mut renewed_at = lock(&pass.renewed_at);
                *renewed_at = (*renewed_at).max(now);
                true
            }
            Ok(false) => {
                pass.lost.store(true, Ordering::SeqCst);
                tracing::warn!(lease = %settings.lease_name, "maintenance_lease_lost");
                false
            }
            Err(error) => {
                pass.lost.store(true, Ordering::SeqCst);
                tracing::warn!(
                    lease = %settings.lease_name,
                    error = error.kind(),
                    error.message = %Report(&error),
                    "maintenance_lease_renew_failed"
                );
                false
            }
        }
    }

    /// Takes the positions the last pass (of any process) saved with the lease, if any; keeps
    /// this process's own when the store has none or cannot be read.
    async fn load_positions(&self) {
        match self.leases.load_state(&self.settings.lease_name).await {
            Ok(Some(state)) => {
                let positions = Positions::decode(&state);
                write(&self.running_cursor, positions.running);
                write(&self.terminal_cursor, positions.terminal);
                write(&self.orphan_cursor, positions.orphan);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(
                error = error.kind(),
                error.message = %Report(&error),
                "maintenance_positions_load_failed"
            ),
        }
    }

    /// Saves where the next pass resumes with the lease, while this pass still holds it.
    async fn save_positions(&self, pass: &Pass) {
        let positions = Positions {
            running: read(&self.running_cursor),
            terminal: read(&self.terminal_cursor),
            orphan: read(&self.orphan_cursor),
        };
        let state = positions.encode();
        match self.leases.save_state(&self.settings.lease_name, &pass.token, &state).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("maintenance_positions_not_saved_lease_lost"),
            Err(error) => tracing::warn!(
                error = error.kind(),
                error.message = %Report(&error),
                "maintenance_positions_save_failed"
            ),
        }
    }

    /// One pass of the three phases, without the lease.
    async fn sweep(&self, pass: &Pass) -> Result<MaintenanceReport, MaintenanceError> {
        let started_at = self.clock.now();
        let deadline = add(started_at, self.settings.max_duration);
        let mut report = MaintenanceReport::default();

        let crashed = self.reconcile(pass, deadline, &mut report).await?;
        if !report.timed_out && self.clock.now() < deadline {
            self.cleanup_terminal_sessions(pass, deadline, &crashed, &mut report).await?;
        } else {
            report.timed_out = true;
        }
        if !report.timed_out && self.clock.now() < deadline {
            self.remove_orphans(pass, started_at, deadline, &mut report).await;
        } else {
            report.timed_out = true;
        }
        if let Some(workspaces) = &self.workspaces
            && !report.timed_out
            && self.hold(pass).await
        {
            // Retention: the store deletes in bounded batches; what is left waits for the next
            // pass.
            if let Err(error) = workspaces.reap().await {
                report.errors += 1;
                tracing::warn!(
                    error = error.kind(),
                    error.message = %Report(&error),
                    "maintenance_workspace_reap_failed"
                );
            }
        }
        Ok(report)
    }

    /// Phase 1. Returns the sessions it turned `Crashed`.
    async fn reconcile(
        &self,
        pass: &Pass,
        deadline: Timestamp,
        report: &mut MaintenanceReport,
    ) -> Result<HashSet<SessionId>, MaintenanceError> {
        let limit = self.settings.max_rows_per_phase;
        let running = self
            .page(&[SandboxStatus::Running], &self.running_cursor, limit)
            .await
            .map_err(|error| MaintenanceError::Store { phase: "running", error })?;

        let results =
            self.bounded(pass, running.iter().map(|s| self.reconcile_one(pass, s)), deadline).await;
        // An inspect that failed counts as handled: that row waits for the next round instead
        // of holding back the rows behind it.
        let handled = results.iter().take_while(|result| result.is_some()).count();
        advance(&self.running_cursor, &running, handled, limit);
        let mut crashed = HashSet::new();
        for (session, result) in running.iter().zip(results) {
            match result {
                None => report.timed_out = true,
                Some(Reconciled::Crashed) => {
                    report.reconciled += 1;
                    crashed.insert(session.session_id);
                }
                Some(Reconciled::Unchanged) => {}
                Some(Reconciled::Failed) => report.errors += 1,
            }
        }
        Ok(crashed)
    }

    /// The engine the session's row names; `None`, said in the log, when this replica was not
    /// given it.
    fn known_engine(&self, session: &SandboxSession) -> Option<&Engine> {
        match self.engines.engine_of(session) {
            Ok(engine) => Some(engine),
            Err(error) => {
                tracing::warn!(
                    session_id = %session.session_id,
                    engine = %session.engine,
                    error.message = %Report(&error),
                    "maintenance_unknown_engine"
                );
                None
            }
        }
    }

    async fn reconcile_one(&self, pass: &Pass, session: &SandboxSession) -> Reconciled {
        let Some(engine) = self.known_engine(session) else {
            return Reconciled::Failed;
        };
        if let Some(down_since) = engine.avoided_since() {
            return self.reconcile_on_lost_engine(pass, session, down_since).await;
        }
        // A row is saved only after its container exists, so `Missing` really means gone. An
        // error (Docker unreachable, timeout) says nothing about the container: leave the row.
        let state = match engine.runtime().inspect(&session.container_id).await {
            Ok(ContainerState::Running) => return Reconciled::Unchanged,
            Ok(state) => state,
            Err(error) => {
                note_unreachable(engine, &error, self.clock.now());
                tracing::warn!(
                    session_id = %session.session_id,
                    container_id = %session.container_id,
                    error = error.kind(),
                    error.message = %Report(&error),
                    "maintenance_inspect_failed"
                );
                return Reconciled::Failed;
            }
        };
        // The inspect may have taken long: is the lease still ours?
        if !self.hold(pass).await {
            return Reconciled::Unchanged;
        }
        self.crash(session, state, DetectedBy::Maintenance).await
    }

    /// Marks the running session crashed, as `detected_by` found it.
    async fn crash(
        &self,
        session: &SandboxSession,
        state: ContainerState,
        detected_by: DetectedBy,
    ) -> Reconciled {
        match mark_crashed(self.repository.as_ref(), session, state, detected_by).await {
            Ok(true) => Reconciled::Crashed,
            // Someone else changed or removed the row since the listing: not ours to judge.
            Ok(false) => Reconciled::Unchanged,
            Err(error) => {
                tracing::warn!(
                    session_id = %session.session_id,
                    error = error.kind(),
                    error.message = %Report(&error),
                    "maintenance_reconcile_failed"
                );
                Reconciled::Failed
            }
        }
    }

    /// A running session of an engine that is down: kept until the engine has been down for
    /// the grace, then `Crashed`.
    async fn reconcile_on_lost_engine(
        &self,
        pass: &Pass,
        session: &SandboxSession,
        down_since: Timestamp,
    ) -> Reconciled {
        let grace_ends = add(down_since, self.settings.engine_loss_grace);
        if self.clock.now() < grace_ends || !self.hold(pass).await {
            return Reconciled::Unchanged;
        }
        self.crash(session, ContainerState::Missing, DetectedBy::EngineLoss).await
    }

    /// Phase 2. Sessions crashed by this pass are left for the next one, so that a crash stays
    /// visible (row and exited container) for at least one sweep interval.
    async fn cleanup_terminal_sessions(
        &self,
        pass: &Pass,
        deadline: Timestamp,
        crashed_now: &HashSet<SessionId>,
        report: &mut MaintenanceReport,
    ) -> Result<(), MaintenanceError> {
        let limit = self.settings.max_rows_per_phase;
        let requested = limit.saturating_add(crashed_now.len());
        let statuses = [SandboxStatus::Stopped, SandboxStatus::Crashed];
        let terminal = self
            .page(&statuses, &self.terminal_cursor, requested)
            .await
            .map_err(|error| MaintenanceError::Store { phase: "terminal", error })?;
        let ids: Vec<SessionId> = terminal
            .iter()
            .map(|session| session.session_id)
            .filter(|id| !crashed_now.contains(id))
            .take(limit)
            .collect();

        let cleanups = ids.iter().map(|&id| self.cleanup_terminal_in(Some(pass), id));
        let results = self.bounded(pass, cleanups, deadline).await;
        // The cursor passes over the rows this pass crashed (left for a later round) as well as
        // those it cleaned or failed to clean: a container that cannot be removed must not
        // hold back the rows behind it.
        let started = results.iter().take_while(|result| result.is_some()).count();
        let mut passed = ids[..started].iter().copied().collect::<HashSet<_>>();
        passed.extend(crashed_now.iter().copied());
        let handled = terminal.iter().take_while(|s| passed.contains(&s.session_id)).count();
        advance(&self.terminal_cursor, &terminal, handled, requested);
        for (id, result) in ids.iter().zip(results) {
            match result {
                None => report.timed_out = true,
                Some(Ok(CleanupOutcome::Removed)) => report.removed += 1,
                Some(Ok(CleanupOutcome::RuntimeError)) => report.errors += 1,
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    report.errors += 1;
                    tracing::warn!(
                        session_id = %id,
                        error = error.kind(),
                        error.message = %Report(&error),
                        "maintenance_cleanup_failed"
                    );
                }
            }
        }
        Ok(())
    }

    /// Up to `limit` sessions of `statuses` after `cursor`, or from the oldest again when none
    /// is left after it, so that a pass that starts at the end of the listing still has work.
    async fn page(
        &self,
        statuses: &[SandboxStatus],
        cursor: &Mutex<Option<SessionKey>>,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        let after = read(cursor);
        let page = self.repository.list_after(statuses, after, limit).await?;
        if page.is_empty() && after.is_some() {
            return self.repository.list_after(statuses, None, limit).await;
        }
        Ok(page)
    }

    /// Removes one terminal session: re-reads its row, force-removes its container (a missing
    /// one is fine), then deletes the row only if it is still terminal.
    ///
    /// A runtime failure is [`CleanupOutcome::RuntimeError`] and keeps the row so that a later
    /// pass retries; a store failure is returned as is.
    pub async fn cleanup_terminal(
        &self,
        session_id: SessionId,
    ) -> Result<CleanupOutcome, StoreError> {
        self.cleanup_terminal_in(None, session_id).await
    }

    /// [`MaintenanceSweep::cleanup_terminal`], within a pass when there is one: the container is
    /// removed only while the pass holds its lease (else the row is left for a later pass).
    async fn cleanup_terminal_in(
        &self,
        pass: Option<&Pass>,
        session_id: SessionId,
    ) -> Result<CleanupOutcome, StoreError> {
        let Some(session) = self.repository.get(session_id).await? else {
            return Ok(CleanupOutcome::AlreadyGone);
        };
        if !session.status.is_terminal() {
            return Ok(CleanupOutcome::SkippedActive);
        }
        if let Some(pass) = pass
            && !self.hold(pass).await
        {
            return Ok(CleanupOutcome::AlreadyClaimed);
        }
        let engine = match self.known_engine(&session) {
            Some(engine) if !engine.is_avoided() => engine,
            Some(_) => return Ok(CleanupOutcome::EngineDown),
            None => return Ok(CleanupOutcome::RuntimeError),
        };
        // A crashed sandbox's container stopped by itself or its engine was lost: there is
        // nothing to save, and the chat's archive may already be a newer sandbox's.
        if let Some(workspaces) = &self.workspaces
            && session.status != SandboxStatus::Crashed
            && workspaces.save_before_removal(&session, SaveReason::Sweep).await.is_err()
        {
            // Logged by the save; the row stays for a later pass.
            return Ok(CleanupOutcome::RuntimeError);
        }
        if let Err(error) = engine.runtime().stop(&session.container_id).await {
            note_unreachable(engine, &error, self.clock.now());
            tracing::warn!(
                chat_id = %session.chat_id,
                session_id = %session.session_id,
                container_id = %session.container_id,
                error = error.kind(),
                error.message = %Report(&error),
                "maintenance_container_remove_failed"
            );
            return Ok(CleanupOutcome::RuntimeError);
        }
        if !self.repository.delete_terminal(session_id).await? {
            return Ok(CleanupOutcome::AlreadyClaimed);
        }
        tracing::debug!(
            chat_id = %session.chat_id,
            session_id = %session.session_id,
            container_id = %session.container_id,
            status = %session.status,
            "sandbox_removed"
        );
        Ok(CleanupOutcome::Removed)
    }

    /// Phase 3. Reads every candidate's row first and removes nothing unless all reads
    /// succeeded: a failing store must never look like a store without rows.
    async fn remove_orphans(
        &self,
        pass: &Pass,
        started_at: Timestamp,
        deadline: Timestamp,
        report: &mut MaintenanceReport,
    ) {
        // Engine by engine: one that is down or cannot be listed is left out of this pass
        // (never read as empty); the others go on.
        let mut containers: Vec<(ManagedContainer, &Engine)> = Vec::new();
        for engine in self.engines.iter().filter(|engine| !engine.is_avoided()) {
            match engine.runtime().list_managed().await {
                Ok(listed) => containers.extend(listed.into_iter().map(|c| (c, engine))),
                Err(error) => {
                    note_unreachable(engine, &error, self.clock.now());
                    report.errors += 1;
                    tracing::warn!(
                        engine = %engine.name(),
                        error = error.kind(),
                        error.message = %Report(&error),
                        "maintenance_orphan_phase_skipped"
                    );
                }
            }
        }
        // Strictly older than the grace period before the pass began; this also excludes any
        // container created after the pass began.
        let old_enough = subtract(started_at, self.settings.orphan_grace);
        let mut candidates: Vec<(ManagedContainer, &Engine)> =
            containers.into_iter().filter(|(c, _)| c.created_at < old_enough).collect();
        candidates.sort_by_key(|(c, _)| container_key(c));
        let newest = candidates.last().map(|(c, _)| container_key(c));
        // Continue after the container the previous pass stopped at: with more live containers
        // than one pass examines, an orphan behind them is still reached a few passes later.
        if let Some(cursor) = read(&self.orphan_cursor) {
            let start = candidates.iter().position(|(c, _)| container_key(c) > cursor).unwrap_or(0);
            candidates.rotate_left(start);
        }
        candidates.truncate(self.settings.max_rows_per_phase);

        let lookups =
            self.bounded(pass, candidates.iter().map(|(c, _)| self.has_row(c)), deadline).await;
        let mut orphans: Vec<(ContainerId, &Engine)> = Vec::new();
        for ((container, engine), lookup) in candidates.iter().zip(&lookups) {
            match lookup {
                None => report.timed_out = true,
                Some(Ok(true)) => {}
                Some(Ok(false)) => orphans.push((container.container_id.clone(), *engine)),
                Some(Err(error)) => {
                    report.errors += 1;
                    tracing::warn!(
                        error = error.kind(),
                        error.message = %Report(&error),
                        "maintenance_orphan_phase_skipped"
                    );
                    return;
                }
            }
        }

        let removals =
            self.bounded(pass, orphans.iter().map(|(id, e)| e.runtime().stop(id)), deadline).await;
        let mut not_started: HashSet<&ContainerId> = HashSet::new();
        for ((container_id, _), removal) in orphans.iter().zip(removals) {
            match removal {
                None => {
                    report.timed_out = true;
                    not_started.insert(container_id);
                }
                Some(Ok(())) => {
                    report.orphans_removed += 1;
                    tracing::info!(container_id = %container_id, "orphan_container_removed");
                }
                Some(Err(error)) => {
                    report.errors += 1;
                    tracing::warn!(
                        container_id = %container_id,
                        error = error.kind(),
                        error.message = %Report(&error),
                        "maintenance_orphan_remove_failed"
                    );
                }
            }
        }

        // The next pass starts after the last container this one fully handled, or from the
        // oldest again once the newest was reached.
        let handled = candidates
            .iter()
            .zip(&lookups)
            .take_while(|((c, _), lookup)| {
                lookup.is_some() && !not_started.contains(&c.container_id)
            })
            .count();
        if let Some(last) = handled.checked_sub(1).map(|i| container_key(&candidates[i].0)) {
            let next = if Some(&last) == newest.as_ref() { None } else { Some(last) };
            write(&self.orphan_cursor, next);
        }
    }

    /// Whether the store records the container. One with a session label is recorded by its
    /// session's row if that row names this container (one whose session's row names another
    /// container is left over from a create that went on to another engine when its own
    /// stopped answering). One without (a pooled container, or one a chat claimed from a pool)
    /// is recorded by a pool slot or by a session row naming it: the slot is read first, since
    /// a claim saves the session before it frees the slot, so that a claim finishing between
    /// the two reads is never missed.
    async fn has_row(&self, container: &ManagedContainer) -> Result<bool, StoreError> {
        if let Some(session_id) = container.session_id {
            return Ok(self
                .repository
                .get(session_id)
                .await?
                .is_some_and(|row| row.container_id == container.container_id));
        }
        if let Some(pools) = &self.pool {
            if pools.holds(&container.container_id).await? {
                return Ok(true);
            }
        }
        Ok(self.repository.get_by_container(&container.container_id).await?.is_some())
    }

    /// Runs the tasks with at most `concurrency` at a time and returns their results in order.
    /// A task whose turn comes at or after the deadline, or once the pass no longer holds its
    /// lease, is not started: its result is `None`.
    ///
    /// The tasks are boxed as `dyn Future + Send`: buffering closure-made futures otherwise
    /// defeats the compiler's proof that the sweep's future is `Send`, and the app must be able
    /// to spawn it.
    async fn bounded<'a, T: Send + 'a>(
        &'a self,
        pass: &'a Pass,
        tasks: impl Iterator<Item = impl Future<Output = T> + Send + 'a>,
        deadline: Timestamp,
    ) -> Vec<Option<T>> {
        let gated: Vec<Task<'a, Option<T>>> = tasks
            .map(|task| {
                Box::pin(async move {
                    if self.clock.now() >= deadline || !self.hold(pass).await {
                        return None;
                    }
                    Some(task.await)
                }) as Task<'a, Option<T>>
            })
            .collect();
        stream::iter(gated).buffered(self.settings.concurrency.max(1)).collect().await
    }
}

/// Where each phase resumes, as kept with the lease: one line per phase, `-` for "from the
/// oldest", else the instant in microseconds and the id. Anything unreadable starts that phase
/// from the oldest.
#[derive(Debug, Default, PartialEq, Eq)]
struct Positions {
    running: Option<SessionKey>,
    terminal: Option<SessionKey>,
    orphan: Option<ContainerKey>,
}

impl Positions {
    fn encode(&self) -> String {
        let line = |phase: &str, at: Option<(Timestamp, String)>| match at {
            Some((at, id)) => format!("{phase} {} {id}\n", at.timestamp_micros()),
            None => format!("{phase} -\n"),
        };
        let session = |key: Option<SessionKey>| key.map(|(at, id)| (at, id.to_string()));
        let container = |key: Option<ContainerKey>| key.map(|(at, id)| (at, id.to_string()));
        [
            line("running", session(self.running)),
            line("terminal", session(self.terminal)),
            line("orphan", container(self.orphan.clone())),
        ]
        .concat()
    }

    fn decode(state: &str) -> Self {
        let mut positions = Self::default();
        for line in state.lines() {
            let mut fields = line.splitn(3, ' ');
            let (Some(phase), Some(micros), Some(id)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Some(at) = micros.parse().ok().and_then(Timestamp::from_timestamp_micros) else {
                continue;
            };
            match phase {
                "running" => positions.running = SessionId::parse(id).ok().map(|id| (at, id)),
                "terminal" => positions.terminal = SessionId::parse(id).ok().map(|id| (at, id)),
                "orphan" => positions.orphan = ContainerId::new(id).ok().map(|id| (at, id)),
                _ => {}
            }
        }
        positions
    }
}

type Task<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

fn count_run(result: &'static str) {
    metrics::counter!("sandbox.maintenance.runs.total", "result" => result).increment(1);
}

fn count_report(report: &MaintenanceReport) {
    metrics::counter!("sandbox.maintenance.reconciled.total").increment(report.reconciled);
    metrics::counter!("sandbox.maintenance.removed.total").increment(report.removed);
    metrics::counter!("sandbox.maintenance.orphans_removed.total")
        .increment(report.orphans_removed);
    metrics::counter!("sandbox.maintenance.errors.total").increment(report.errors);
    if report.timed_out {
        metrics::counter!("sandbox.maintenance.timed_out.total").increment(1);
    }
}

fn add(at: Timestamp, duration: Duration) -> Timestamp {
    chrono::TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| at.checked_add_signed(delta))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

fn subtract(at: Timestamp, duration: Duration) -> Timestamp {
    chrono::TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| at.checked_sub_signed(delta))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}
