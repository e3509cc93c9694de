//! Shared fixtures of the use-case tests: the fixed ids and time, small wrappers of the ports
//! that record or fail on demand, and readers of the captured telemetry.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeDelta, TimeZone, Utc};
use sandkeeper_adapters_observability::capture::{Capture, FieldValue};
use sandkeeper_domain::{ChatId, ContainerId, SandboxSession, SandboxStatus, SessionId, Timestamp};
use sandkeeper_ports::inprocess::{InMemorySessionRepository, ProcessLocalLocker};
use sandkeeper_ports::testkit::{FakeRuntime, ManualClock};
use sandkeeper_ports::{
    ChatLockGuard, ContainerState, LifecycleLocker, RuntimeError, SaveError, SessionRepository,
    StoreError,
};
use sandkeeper_usecase::{
    CleanupExpiredSandboxes, CreateSandbox, DeleteSandbox, ExecCommand, ExecInSandbox,
    ExecInSandboxError, ExecOutcome, SandboxAccess, SandboxSlots,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Level;
use uuid::Uuid;

pub(crate) mod in_flight;

pub(crate) const CHAT_ID: ChatId = chat(0x11111111_1111_1111_1111_111111111111);
pub(crate) const NON_CANONICAL_CHAT_ID: &str = "11111111111111111111111111111111";
pub(crate) const EXPIRED_CHAT_ID: ChatId = chat(0x22222222_2222_2222_2222_222222222222);
pub(crate) const BOUNDARY_CHAT_ID: ChatId = chat(0x33333333_3333_3333_3333_333333333333);
pub(crate) const ACTIVE_CHAT_ID: ChatId = chat(0x44444444_4444_4444_4444_444444444444);
pub(crate) const FAIL_CHAT_ID: ChatId = chat(0x55555555_5555_5555_5555_555555555555);
pub(crate) const CLEAN_CHAT_ID: ChatId = chat(0x66666666_6666_6666_6666_666666666666);

pub(crate) const SESSION_REUSED_ID: SessionId = session(1);
pub(crate) const SESSION_OLD_ID: SessionId = session(2);
pub(crate) const SESSION_NEW_ID: SessionId = session(3);
pub(crate) const SESSION_EXPIRED_ID: SessionId = session(4);
pub(crate) const SESSION_BOUNDARY_ID: SessionId = session(5);
pub(crate) const SESSION_ACTIVE_ID: SessionId = session(6);
pub(crate) const SESSION_FAIL_ID: SessionId = session(7);
pub(crate) const SESSION_CLEAN_ID: SessionId = session(8);
pub(crate) const SESSION_REPLACEMENT_ID: SessionId = session(9);

pub(crate) const TTL: Duration = Duration::from_secs(5 * 60);

const fn chat(value: u128) -> ChatId {
    ChatId::from_uuid(Uuid::from_u128(value))
}

const fn session(value: u128) -> SessionId {
    SessionId::from_uuid(Uuid::from_u128(value))
}

/// 2026-04-02 12:00 UTC, the time of every test.
pub(crate) fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap()
}

pub(crate) fn minutes(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

pub(crate) fn seconds(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

pub(crate) fn container(id: &str) -> ContainerId {
    ContainerId::new(id).unwrap()
}

/// The id the fake runtime gives the container of `session_id`: `container-<session id>`.
pub(crate) fn container_of(session_id: SessionId) -> ContainerId {
    FakeRuntime::container_id_for(session_id)
}

/// A running sandbox of the default engine, by whose it is:
/// `running(session_id, chat_id, container_id).between(created_at, expires_at)`.
pub(crate) fn running(session_id: SessionId, chat_id: ChatId, container_id: &str) -> Running {
    Running { session_id, chat_id, container_id: container(container_id) }
}

/// A running sandbox that still needs its times ([`Running::between`]).
pub(crate) struct Running {
    session_id: SessionId,
    chat_id: ChatId,
    container_id: ContainerId,
}

impl Running {
    /// The sandbox, created at `created_at` and expiring at `expires_at`.
    pub(crate) fn between(self, created_at: Timestamp, expires_at: Timestamp) -> SandboxSession {
        SandboxSession {
            session_id: self.session_id,
            chat_id: self.chat_id,
            container_id: self.container_id,
            status: SandboxStatus::Running,
            created_at,
            expires_at,
            engine: sandkeeper_domain::EngineName::default(),
        }
    }
}

pub(crate) async fn repository_with(
    sessions: &[&SandboxSession],
) -> Arc<InMemorySessionRepository> {
    let repository = Arc::new(InMemorySessionRepository::new());
    for session in sessions {
        repository.save(session).await.unwrap();
    }
    repository
}

/// A running sandbox of [`CHAT_ID`] created a minute ago, expiring in four.
pub(crate) fn active() -> SandboxSession {
    running(SESSION_ACTIVE_ID, CHAT_ID, "container-active")
        .between(now() - minutes(1), now() + minutes(4))
}

/// A running sandbox of [`EXPIRED_CHAT_ID`] that expires exactly now (the boundary counts as
/// expired) and was not cleaned up yet.
pub(crate) fn expired_now() -> SandboxSession {
    running(SESSION_EXPIRED_ID, EXPIRED_CHAT_ID, "container-expired")
        .between(now() - minutes(5), now())
}

/// A clock that stands at [`now`] until a test moves it.
pub(crate) fn at_now() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(now()))
}

/// The store and the runtime of [`CHAT_ID`] with its [`active`] sandbox running.
pub(crate) async fn active_sandbox() -> (Arc<InMemorySessionRepository>, FakeRuntime) {
    (repository_with(&[&active()]).await, runtime_with(&[&active()]))
}

/// A fake runtime in which the containers of `sessions` run.
pub(crate) fn runtime_with(sessions: &[&SandboxSession]) -> FakeRuntime {
    let runtime = FakeRuntime::new();
    for session in sessions {
        runtime.insert_container(
            session.container_id.clone(),
            ContainerState::Running,
            Some(session.session_id),
            session.created_at,
        );
    }
    runtime
}

/// Where a test of a lifecycle use case starts: a store holding `sessions`, a locker that
/// records, and the use case `build` (e.g. [`create_sandbox`]) makes of them and `runtime`.
pub(crate) async fn lifecycle<U>(
    sessions: &[&SandboxSession],
    runtime: &FakeRuntime,
    build: impl FnOnce(Arc<dyn SessionRepository>, Arc<dyn LifecycleLocker>, &FakeRuntime) -> U,
) -> (Arc<InMemorySessionRepository>, Arc<RecordingLocker>, U) {
    let repository = repository_with(sessions).await;
    let locker = RecordingLocker::new();
    let usecase = build(repository.clone(), locker.clone(), runtime);
    (repository, locker, usecase)
}

/// A fake runtime whose stop of the container `container_id` fails with `stop_failed`.
pub(crate) fn failing_stop(container_id: &str) -> FakeRuntime {
    let runtime = FakeRuntime::new();
    runtime.fail_stop(container(container_id), RuntimeError::Failed("stop_failed".into()));
    runtime
}

/// The way into the sandboxes of `repository` and `runtime`, in fixed mode (no sliding expiry).
pub(crate) fn sandbox_access(
    repository: Arc<dyn SessionRepository>,
    runtime: &FakeRuntime,
    clock: Arc<ManualClock>,
    slots: SandboxSlots,
) -> SandboxAccess {
    SandboxAccess::new(repository, Arc::new(runtime.clone()), clock, slots)
}

/// A command of [`CHAT_ID`] with the defaults.
pub(crate) fn command(parts: &[&str]) -> ExecCommand {
    ExecCommand::new(CHAT_ID, parts.iter().map(|part| (*part).to_owned()).collect())
}

/// Runs `command` in a task of its own (to be held by the fake runtime, and awaited later).
pub(crate) fn spawn_exec(
    usecase: &ExecInSandbox,
    command: ExecCommand,
) -> JoinHandle<Result<ExecOutcome, ExecInSandboxError>> {
    let usecase = usecase.clone();
    tokio::spawn(async move { usecase.execute(command).await })
}

/// Starts `command` with the runtime holding every exec, and returns once the runtime holds it
/// (the first exec held): it stays in flight until the runtime releases it.
pub(crate) async fn exec_in_flight(
    usecase: &ExecInSandbox,
    runtime: &FakeRuntime,
    command: ExecCommand,
) -> JoinHandle<Result<ExecOutcome, ExecInSandboxError>> {
    runtime.hold_execs();
    let in_flight = spawn_exec(usecase, command);
    tokio::time::timeout(Duration::from_secs(5), runtime.execs_held(1)).await.unwrap();
    in_flight
}

/// `CreateSandbox` with the clock at [`now`] and a TTL of 5 minutes.
pub(crate) fn create_sandbox(
    repository: Arc<dyn SessionRepository>,
    locker: Arc<dyn LifecycleLocker>,
    runtime: &FakeRuntime,
) -> CreateSandbox {
    CreateSandbox::new(repository, locker, Arc::new(runtime.clone()), at_now(), TTL)
}

/// `DeleteSandbox` of the sandboxes of `repository` and `runtime`.
pub(crate) fn delete_sandbox(
    repository: Arc<dyn SessionRepository>,
    locker: Arc<dyn LifecycleLocker>,
    runtime: &FakeRuntime,
) -> DeleteSandbox {
    DeleteSandbox::new(repository, locker, Arc::new(runtime.clone()))
}

/// `CleanupExpiredSandboxes` with the clock at [`now`], one session at a time so that every
/// call happens in snapshot order.
pub(crate) fn cleanup_expired_sandboxes(
    repository: Arc<dyn SessionRepository>,
    locker: Arc<dyn LifecycleLocker>,
    runtime: &FakeRuntime,
) -> CleanupExpiredSandboxes {
    CleanupExpiredSandboxes::new(repository, locker, Arc::new(runtime.clone()), at_now())
        .with_concurrency(1)
}

/// A real per-chat lock that records every chat it is asked for, in order, when asked (before
/// waiting), and signals the second request.
#[derive(Debug, Default)]
pub(crate) struct RecordingLocker {
    inner: ProcessLocalLocker,
    chat_ids: Mutex<Vec<ChatId>>,
    second_attempt: Notify,
}

impl RecordingLocker {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn chat_ids(&self) -> Vec<ChatId> {
        self.chat_ids.lock().unwrap().clone()
    }

    /// Resolves once a second lock was asked for (at once if it already was).
    pub(crate) async fn second_attempted(&self) {
        self.second_attempt.notified().await;
    }
}

#[async_trait]
impl LifecycleLocker for RecordingLocker {
    async fn lock(&self, chat_id: ChatId) -> Result<ChatLockGuard, StoreError> {
        let attempts = {
            let mut chat_ids = self.chat_ids.lock().unwrap();
            chat_ids.push(chat_id);
            chat_ids.len()
        };
        if attempts == 2 {
            self.second_attempt.notify_one();
        }
        self.inner.lock(chat_id).await
    }
}

/// An in-memory repository whose failures and snapshots can be scripted. It plays the seed's
/// `FailingSaveRepository` (`fail_next_save`) and `StaleSnapshotRepository`
/// (`serve_expired_snapshot`).
#[derive(Debug, Default)]
pub(crate) struct ScriptedRepository {
    inner: InMemorySessionRepository,
    next_save_error: Mutex<Option<SaveError>>,
    expired_snapshot: Mutex<Option<Vec<SandboxSession>>>,
    list_expired_error: Mutex<Option<StoreError>>,
    count_error: Mutex<Option<StoreError>>,
    running_by_chat_error: Mutex<Option<StoreError>>,
}

impl ScriptedRepository {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The next `save` fails with `error` and changes nothing.
    pub(crate) fn fail_next_save(&self, error: SaveError) {
        *self.next_save_error.lock().unwrap() = Some(error);
    }

    /// `list_expired` answers `snapshot` whatever the store holds.
    pub(crate) fn serve_expired_snapshot(&self, snapshot: Vec<SandboxSession>) {
        *self.expired_snapshot.lock().unwrap() = Some(snapshot);
    }

    pub(crate) fn fail_list_expired(&self, error: StoreError) {
        *self.list_expired_error.lock().unwrap() = Some(error);
    }

    pub(crate) fn fail_count(&self, error: StoreError) {
        *self.count_error.lock().unwrap() = Some(error);
    }

    /// Every read of a chat's running session fails with `error`, as if the store were down.
    pub(crate) fn fail_running_by_chat(&self, error: StoreError) {
        *self.running_by_chat_error.lock().unwrap() = Some(error);
    }
}

#[async_trait]
impl sandkeeper_ports::testkit::DelegatingRepository for ScriptedRepository {
    fn inner(&self) -> &dyn SessionRepository {
        &self.inner
    }

    async fn save(&self, session: &SandboxSession) -> Result<(), SaveError> {
        if let Some(error) = self.next_save_error.lock().unwrap().take() {
            return Err(error);
        }
        self.inner.save(session).await
    }

    async fn list_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        if let Some(error) = self.list_expired_error.lock().unwrap().clone() {
            return Err(error);
        }
        if let Some(snapshot) = self.expired_snapshot.lock().unwrap().clone() {
            return Ok(snapshot);
        }
        self.inner.list_expired(now, limit).await
    }

    async fn get_running_by_chat(
        &self,
        chat_id: ChatId,
    ) -> Result<Option<SandboxSession>, StoreError> {
        if let Some(error) = self.running_by_chat_error.lock().unwrap().clone() {
            return Err(error);
        }
        self.inner.get_running_by_chat(chat_id).await
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        if let Some(error) = self.count_error.lock().unwrap().clone() {
            return Err(error);
        }
        self.inner.count_running().await
    }
}

/// An event as the seed's logger saw it: level, message and fields (as text).
pub(crate) type Logged = (Level, String, BTreeMap<String, String>);

/// The events at level info or above, in order.
pub(crate) fn logged(capture: &Capture) -> Vec<Logged> {
    capture
        .events()
        .into_iter()
        .filter(|event| event.level <= Level::INFO)
        .map(|event| {
            let fields = event.fields.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            (event.level, event.message, fields)
        })
        .collect()
}

/// The event the use cases log about one session, e.g. `sandbox_created`.
pub(crate) fn session_event(level: Level, message: &str, session: &SandboxSession) -> Logged {
    let mut fields = vec![
        ("chat_id", session.chat_id.to_string()),
        ("session_id", session.session_id.to_string()),
        ("container_id", session.container_id.to_string()),
    ];
    // A new sandbox's event also names the engine it was placed on.
    if message == "sandbox_created" {
        fields.push(("engine", session.engine.to_string()));
    }
    (level, message.to_owned(), fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A span field value given as text (ids, results).
pub(crate) fn text(value: impl ToString) -> FieldValue {
    FieldValue::Str(value.to_string())
}

/// The last value `sandbox.active.count` was set to; fails if it never was.
pub(crate) fn last_active_count(capture: &Capture) -> f64 {
    let values = capture.gauge_values("sandbox.active.count");
    *values.last().expect("sandbox.active.count was never set")
}
