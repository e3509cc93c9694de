//! Test doubles for the maintenance sweep: wrappers around the in-process repository and the
//! fake runtime that script the failures and races the sweep must survive, and a harness that
//! wires them to a sweep.

// Shared by several test binaries, each of which uses only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{TimeDelta, TimeZone, Utc};
use in_flight::InFlight;
use sandkeeper_domain::{ChatId, ContainerId, SandboxSession, SandboxStatus, SessionId, Timestamp};
use sandkeeper_ports::inprocess::{InMemoryLeases, InMemorySessionRepository};
use sandkeeper_ports::testkit::{FakeRuntime, ManualClock};
use sandkeeper_ports::{
    ContainerSpec, ContainerState, ManagedContainer, RuntimeError, SandboxRuntime,
    SessionRepository, StoreError,
};
use sandkeeper_usecase::{
    CleanupOutcome, MaintenanceReport, MaintenanceSettings, MaintenanceSweep, SweepOutcome,
};

// The same counter as the use-case tests' support module has.
#[path = "../support/in_flight.rs"]
mod in_flight;

/// The in-memory repository, with scripted failures and a race.
#[derive(Debug, Default)]
pub(crate) struct ScriptedRepository {
    pub(crate) inner: InMemorySessionRepository,
    /// `get` fails with `Unavailable`.
    pub(crate) fail_get: AtomicBool,
    /// Listing by status (`list`, `list_after`) fails with `Unavailable`.
    pub(crate) fail_list: AtomicBool,
    /// `get` returns the row but deletes it right after, as if another sweeper claimed it.
    pub(crate) delete_after_get: AtomicBool,
}

fn store_unavailable() -> StoreError {
    StoreError::Unavailable("connection refused (scripted)".into())
}

#[async_trait]
impl sandkeeper_ports::testkit::DelegatingRepository for ScriptedRepository {
    fn inner(&self) -> &dyn SessionRepository {
        &self.inner
    }

    async fn get(&self, session_id: SessionId) -> Result<Option<SandboxSession>, StoreError> {
        if self.fail_get.load(Ordering::SeqCst) {
            return Err(store_unavailable());
        }
        let found = self.inner.get(session_id).await?;
        if self.delete_after_get.load(Ordering::SeqCst) {
            self.inner.delete(session_id).await?;
        }
        Ok(found)
    }

    async fn list_after(
        &self,
        statuses: &[SandboxStatus],
        after: Option<(Timestamp, SessionId)>,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        if self.fail_list.load(Ordering::SeqCst) {
            return Err(store_unavailable());
        }
        self.inner.list_after(statuses, after, limit).await
    }
}

/// The fake runtime, with scripted inspect failures, a clock that moves on every inspect, and a
/// record of how many removals ran at once.
#[derive(Debug)]
pub(crate) struct ScriptedRuntime {
    pub(crate) fake: FakeRuntime,
    clock: Arc<ManualClock>,
    inspect_errors: Mutex<HashMap<ContainerId, RuntimeError>>,
    advance_per_inspect: Mutex<TimeDelta>,
    stops: InFlight,
}

impl ScriptedRuntime {
    pub(crate) fn new(clock: Arc<ManualClock>) -> Self {
        Self {
            fake: FakeRuntime::new(),
            clock,
            inspect_errors: Mutex::default(),
            advance_per_inspect: Mutex::new(TimeDelta::zero()),
            stops: InFlight::default(),
        }
    }

    /// `inspect` of `container_id` fails with `error`.
    pub(crate) fn fail_inspect(&self, container_id: ContainerId, error: RuntimeError) {
        self.inspect_errors.lock().unwrap().insert(container_id, error);
    }

    /// Every `inspect` moves the clock on by `by`, as if it took that long.
    pub(crate) fn advance_clock_per_inspect(&self, by: TimeDelta) {
        *self.advance_per_inspect.lock().unwrap() = by;
    }

    /// The most `stop` calls that were in progress at the same time.
    pub(crate) fn max_stops_in_flight(&self) -> usize {
        self.stops.most()
    }
}

#[async_trait]
impl SandboxRuntime for ScriptedRuntime {
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        self.fake.create(spec).await
    }

    async fn stop(&self, container_id: &ContainerId) -> Result<(), RuntimeError> {
        let stop = async {
            // Give the other removals a chance to start, as a real engine call would.
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            self.fake.stop(container_id).await
        };
        self.stops.run(stop).await
    }

    async fn inspect(&self, container_id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        let advance = *self.advance_per_inspect.lock().unwrap();
        self.clock.advance(advance);
        if let Some(error) = self.inspect_errors.lock().unwrap().get(container_id) {
            return Err(error.clone());
        }
        self.fake.inspect(container_id).await
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        self.fake.list_managed().await
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.fake.ping().await
    }
}

// ---- the harness ----

pub(crate) const HOLDER: &str = "instance-a:1";

pub(crate) fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap()
}

pub(crate) struct Harness {
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) repository: Arc<ScriptedRepository>,
    pub(crate) runtime: Arc<ScriptedRuntime>,
    pub(crate) leases: Arc<InMemoryLeases>,
}

impl Harness {
    pub(crate) fn new() -> Self {
        let clock = Arc::new(ManualClock::new(t0()));
        Self {
            repository: Arc::new(ScriptedRepository::default()),
            runtime: Arc::new(ScriptedRuntime::new(Arc::clone(&clock))),
            leases: Arc::new(InMemoryLeases::new(clock.clone())),
            clock,
        }
    }

    pub(crate) fn sweep(&self) -> MaintenanceSweep {
        self.sweep_with(|_| {})
    }

    pub(crate) fn sweep_with(
        &self,
        configure: impl FnOnce(&mut MaintenanceSettings),
    ) -> MaintenanceSweep {
        let mut settings = MaintenanceSettings::new(HOLDER);
        configure(&mut settings);
        MaintenanceSweep::new(
            self.repository.clone(),
            self.runtime.clone(),
            self.leases.clone(),
            self.clock.clone(),
            settings,
        )
    }

    /// Saves session `n` (created `n` seconds after ten minutes ago) and, unless `container` is
    /// `Missing`, puts its container in place in that state.
    pub(crate) async fn add_session(
        &self,
        n: u32,
        status: SandboxStatus,
        container: ContainerState,
    ) -> SandboxSession {
        let created_at = t0() - TimeDelta::minutes(10) + TimeDelta::seconds(n.into());
        let session = SandboxSession {
            session_id: session_id(n),
            chat_id: ChatId::parse(&format!("11111111-1111-1111-1111-{n:012}")).unwrap(),
            container_id: container_id(n),
            status,
            created_at,
            expires_at: created_at + TimeDelta::minutes(5),
            engine: sandkeeper_domain::EngineName::default(),
        };
        self.repository.inner.save(&session).await.unwrap();
        if container != ContainerState::Missing {
            self.runtime.fake.insert_container(
                session.container_id.clone(),
                container,
                Some(session.session_id),
                created_at,
            );
        }
        session
    }

    /// [`add_session`](Self::add_session) for each of the sessions `ns`.
    pub(crate) async fn add_sessions(
        &self,
        ns: RangeInclusive<u32>,
        status: SandboxStatus,
        container: ContainerState,
    ) -> Vec<SandboxSession> {
        let mut sessions = Vec::new();
        for n in ns {
            sessions.push(self.add_session(n, status, container).await);
        }
        sessions
    }

    /// A managed container without a session row, labelled with session `n` or unlabelled.
    pub(crate) fn add_orphan(
        &self,
        name: &str,
        label: Option<u32>,
        created_at: Timestamp,
    ) -> ContainerId {
        let id = ContainerId::new(name).unwrap();
        self.runtime.fake.insert_container(
            id.clone(),
            ContainerState::Running,
            label.map(session_id),
            created_at,
        );
        id
    }

    /// What a new sweep's `cleanup_terminal` of `session` comes to (a store failure panics).
    pub(crate) async fn cleanup_terminal(&self, session: &SandboxSession) -> CleanupOutcome {
        self.sweep().cleanup_terminal(session.session_id).await.unwrap()
    }

    pub(crate) async fn status(&self, n: u32) -> Option<SandboxStatus> {
        self.repository.inner.get(session_id(n)).await.unwrap().map(|session| session.status)
    }

    pub(crate) fn has_container(&self, id: &ContainerId) -> bool {
        self.runtime.fake.container_ids().contains(id)
    }
}

pub(crate) fn session_id(n: u32) -> SessionId {
    SessionId::parse(&format!("00000000-0000-0000-0000-{n:012}")).unwrap()
}

pub(crate) fn container_id(n: u32) -> ContainerId {
    ContainerId::new(format!("container-{n}")).unwrap()
}

pub(crate) fn unavailable() -> RuntimeError {
    RuntimeError::Unavailable("cannot connect to the Docker daemon (scripted)".into())
}

pub(crate) async fn completed(sweep: &MaintenanceSweep, force: bool) -> MaintenanceReport {
    match sweep.run(force).await.unwrap() {
        SweepOutcome::Completed(report) => report,
        SweepOutcome::Skipped => panic!("the sweep was skipped; expected it to run"),
    }
}
