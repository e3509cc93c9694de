//! CreateSandbox: the seed's tests, one for one, then what sandkeeper adds (capacity, TTL).

mod support;

use std::sync::Arc;
use std::time::Duration;

use sandkeeper_adapters_observability::capture::{Capture, CapturedSpan, FieldValue};
use sandkeeper_domain::{ChatId, SandboxSession, SandboxStatus};
use sandkeeper_ports::inprocess::InMemorySessionRepository;
use sandkeeper_ports::testkit::{FakeRuntime, RuntimeCall};
use sandkeeper_ports::{
    ContainerSpec, Report, RuntimeError, SaveError, SessionRepository, StoreError,
};
use sandkeeper_usecase::{CreateResult, CreateSandbox, CreateSandboxCommand, CreateSandboxError};
use support::*;
use tokio::time::timeout;
use tracing::Level;

const WAIT: Duration = Duration::from_secs(1);

/// The sandbox of [`CHAT_ID`] that a create reuses: created a minute ago, expiring in four.
fn live_session() -> SandboxSession {
    running(SESSION_REUSED_ID, CHAT_ID, "container-1")
        .between(now() - minutes(1), now() + minutes(4))
}

fn expired_session() -> SandboxSession {
    running(SESSION_OLD_ID, CHAT_ID, "container-old").between(now() - minutes(10), now())
}

fn new_session() -> SandboxSession {
    SandboxSession {
        session_id: SESSION_NEW_ID,
        chat_id: CHAT_ID,
        container_id: container_of(SESSION_NEW_ID),
        status: SandboxStatus::Running,
        created_at: now(),
        expires_at: now() + minutes(5),
        engine: sandkeeper_domain::EngineName::default(),
    }
}

/// A sandbox of [`ACTIVE_CHAT_ID`], created now: what takes up a place when the capacity is one.
fn other_chats_sandbox() -> SandboxSession {
    running(SESSION_ACTIVE_ID, ACTIVE_CHAT_ID, "container-active")
        .between(now(), now() + minutes(5))
}

fn new_spec() -> ContainerSpec {
    ContainerSpec {
        session_id: SESSION_NEW_ID,
        chat_id: CHAT_ID,
        created_at: now(),
        expires_at: now() + minutes(5),
    }
}

/// `CreateSandbox` (as [`create_sandbox`] makes it) whose new sandbox is [`SESSION_NEW_ID`].
fn create_new(repository: Arc<dyn SessionRepository>, runtime: &FakeRuntime) -> CreateSandbox {
    create_sandbox(repository, RecordingLocker::new(), runtime)
        .with_session_id_generator(|| SESSION_NEW_ID)
}

/// The span of a create for [`CHAT_ID`] that recorded at least `recorded`.
fn create_span(capture: &Capture, recorded: &[(&str, FieldValue)]) -> CapturedSpan {
    capture.find_span("usecase.create_sandbox", &[("chat.id", text(CHAT_ID))], recorded)
}

/// What a create that replaces [`expired_session`] records before anything can fail (the old
/// session and container, the new session's id), followed by `more`.
fn replacement_fields(more: &[(&'static str, FieldValue)]) -> Vec<(&'static str, FieldValue)> {
    let mut fields = vec![
        ("sandbox.previous_session.id", text(SESSION_OLD_ID)),
        ("sandbox.previous_container.id", text("container-old")),
        ("sandbox.new_session.id", text(SESSION_NEW_ID)),
    ];
    fields.extend_from_slice(more);
    fields
}

fn assert_span_error(span: &CapturedSpan, error: &CreateSandboxError) {
    assert_eq!(span.error(), Some(&text(Report(error))), "{span:?}");
    assert_eq!(span.field("error.type"), Some(&text(error.kind())), "{span:?}");
    assert_eq!(span.field("otel.status_code"), Some(&text("ERROR")), "{span:?}");
}

// --- the seed's tests ---

#[tokio::test]
async fn create_sandbox_reuses_active_session_when_not_expired() {
    let capture = Capture::install();
    let session = live_session();
    let runtime = FakeRuntime::new();
    let (repository, locker, usecase) = lifecycle(&[&session], &runtime, create_sandbox).await;

    let outcome = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();

    assert_eq!(outcome.session, session);
    assert_eq!(outcome.result, CreateResult::Reused);
    assert_eq!(runtime.create_calls(), vec![]);
    assert_eq!(runtime.stop_calls(), vec![]);
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), Some(session.clone()));
    assert_eq!(locker.chat_ids(), vec![CHAT_ID]);
    assert_eq!(logged(&capture), vec![session_event(Level::INFO, "sandbox_reused", &session)]);
}

#[tokio::test]
async fn create_sandbox_reuse_records_observability() {
    let capture = Capture::install();
    let session = live_session();
    let repository = repository_with(&[&session]).await;
    let usecase = create_sandbox(repository, RecordingLocker::new(), &FakeRuntime::new());

    let outcome = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();

    assert_eq!(outcome.session, session);
    capture.assert_counter_incremented("sandbox.create.total", 1, &[("result", "reused")]);
    let span = create_span(
        &capture,
        &[
            ("session.id", text(SESSION_REUSED_ID)),
            ("container.id", text("container-1")),
            ("sandbox.result", text("reused")),
        ],
    );
    assert_eq!(span.error(), None);
}

#[tokio::test]
async fn create_sandbox_replace_records_observability_and_final_active_count() {
    let capture = Capture::install();
    let repository = repository_with(&[&expired_session()]).await;
    let usecase = create_new(repository.clone(), &FakeRuntime::new());

    let outcome = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();

    assert_eq!(outcome.session.session_id, SESSION_NEW_ID);
    assert_eq!(repository.count_running().await.unwrap(), 1);
    capture.assert_counter_incremented("sandbox.create.total", 1, &[("result", "replaced")]);
    assert_eq!(last_active_count(&capture), 1.0);
    let span = create_span(
        &capture,
        &replacement_fields(&[
            ("sandbox.new_container.id", text(container_of(SESSION_NEW_ID))),
            ("session.id", text(SESSION_NEW_ID)),
            ("container.id", text(container_of(SESSION_NEW_ID))),
            ("sandbox.result", text("replaced")),
        ]),
    );
    assert_eq!(span.error(), None);
}

#[tokio::test]
async fn create_sandbox_replaces_expired_session_and_creates_new_one() {
    let capture = Capture::install();
    let expired = expired_session();
    let runtime = FakeRuntime::new();
    let (repository, locker, usecase) = lifecycle(&[&expired], &runtime, create_sandbox).await;
    let usecase = usecase.with_session_id_generator(|| SESSION_NEW_ID);

    let outcome = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();

    assert_eq!(runtime.stop_calls(), vec![container("container-old")]);
    assert_eq!(runtime.create_calls(), vec![new_spec()]);
    assert_eq!(outcome.session, new_session());
    assert_eq!(outcome.result, CreateResult::Replaced);
    assert_eq!(
        repository.get_running_by_chat(CHAT_ID).await.unwrap(),
        Some(outcome.session.clone())
    );
    assert_eq!(locker.chat_ids(), vec![CHAT_ID]);
    assert_eq!(
        logged(&capture),
        vec![
            session_event(Level::INFO, "sandbox_replaced", &expired),
            session_event(Level::INFO, "sandbox_created", &new_session()),
        ]
    );
}

#[tokio::test]
async fn create_sandbox_creates_new_session_when_none_exists() {
    let capture = Capture::install();
    let runtime = FakeRuntime::new();
    let (repository, locker, usecase) = lifecycle(&[], &runtime, create_sandbox).await;
    let chat_id = ChatId::parse(NON_CANONICAL_CHAT_ID).unwrap();

    let outcome = usecase.execute(CreateSandboxCommand::new(chat_id)).await.unwrap();

    let session = &outcome.session;
    assert_eq!(outcome.result, CreateResult::Created);
    assert_eq!(session.chat_id, CHAT_ID);
    assert_eq!(session.container_id, container_of(session.session_id));
    assert_eq!(session.status, SandboxStatus::Running);
    assert_eq!(session.created_at, now());
    assert_eq!(session.expires_at, now() + minutes(5));
    assert_eq!(
        runtime.create_calls(),
        vec![ContainerSpec {
            session_id: session.session_id,
            chat_id: CHAT_ID,
            created_at: now(),
            expires_at: now() + minutes(5),
        }]
    );
    assert_eq!(runtime.stop_calls(), vec![]);
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap().as_ref(), Some(session));
    assert_eq!(locker.chat_ids(), vec![CHAT_ID]);
    assert_eq!(logged(&capture), vec![session_event(Level::INFO, "sandbox_created", session)]);
}

#[tokio::test]
async fn create_sandbox_error_records_observability() {
    let capture = Capture::install();
    let runtime = FakeRuntime::new();
    runtime.fail_create(RuntimeError::Failed("create_failed".into()));
    let usecase = create_new(Arc::new(InMemorySessionRepository::new()), &runtime);

    let error = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap_err();

    assert_eq!(error, CreateSandboxError::Runtime(RuntimeError::Failed("create_failed".into())));
    assert_eq!(error.to_string(), "create_failed");
    capture.assert_counter_incremented("sandbox.create.total", 1, &[("result", "error")]);
    let span = create_span(
        &capture,
        &[("session.id", text(SESSION_NEW_ID)), ("sandbox.result", text("error"))],
    );
    assert_span_error(&span, &error);
    assert_eq!(span.field("error.type"), Some(&text("runtime_error")));
}

#[tokio::test]
async fn create_sandbox_save_failure_stops_untracked_container() {
    let capture = Capture::install();
    let repository = ScriptedRepository::new();
    repository.fail_next_save(SaveError::Store(StoreError::Failed("save_failed".into())));
    let runtime = FakeRuntime::new();
    let usecase = create_new(repository.clone(), &runtime);

    let error = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap_err();

    assert!(Report(&error).to_string().contains("save_failed"), "{error}");
    assert_eq!(runtime.create_calls().len(), 1);
    assert_eq!(runtime.stop_calls(), vec![container_of(SESSION_NEW_ID)]);
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), None);
    assert_eq!(last_active_count(&capture), 0.0);
    capture.assert_counter_incremented("sandbox.create.total", 1, &[("result", "error")]);
}

#[tokio::test]
async fn create_sandbox_replace_stop_failure_preserves_separate_identities() {
    let capture = Capture::install();
    let repository = repository_with(&[&expired_session()]).await;
    let runtime = failing_stop("container-old");
    let usecase = create_new(repository.clone(), &runtime);

    let error = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap_err();

    assert_eq!(error.to_string(), "stop_failed");
    capture.assert_counter_incremented("sandbox.create.total", 1, &[("result", "error")]);
    let span = create_span(&capture, &replacement_fields(&[("sandbox.result", text("error"))]));
    assert!(!span.has_field("sandbox.new_container.id"), "{span:?}");
    assert!(!span.has_field("session.id"), "{span:?}");
    assert!(!span.has_field("container.id"), "{span:?}");
    assert_span_error(&span, &error);
    // The expired session stays for the cleanup to retry.
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), Some(expired_session()));
}

#[tokio::test]
async fn create_sandbox_replace_save_failure_records_stage_safe_trace_ids() {
    let capture = Capture::install();
    let repository = ScriptedRepository::new();
    repository.save(&expired_session()).await.unwrap();
    repository.fail_next_save(SaveError::Store(StoreError::Failed("save_failed".into())));
    let runtime = FakeRuntime::new();
    let usecase = create_new(repository.clone(), &runtime);

    let error = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap_err();

    assert!(Report(&error).to_string().contains("save_failed"), "{error}");
    assert_eq!(
        runtime.stop_calls(),
        vec![container("container-old"), container_of(SESSION_NEW_ID)]
    );
    assert_eq!(runtime.create_calls().len(), 1);
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), None);
    assert_eq!(last_active_count(&capture), 0.0);
    capture.assert_counter_incremented("sandbox.create.total", 1, &[("result", "error")]);
    let span = create_span(
        &capture,
        &replacement_fields(&[
            ("sandbox.new_container.id", text(container_of(SESSION_NEW_ID))),
            ("sandbox.result", text("error")),
        ]),
    );
    assert!(!span.has_field("session.id"), "{span:?}");
    assert!(!span.has_field("container.id"), "{span:?}");
    assert_span_error(&span, &error);
}

#[tokio::test]
async fn create_sandbox_serializes_duplicate_concurrent_create_for_chat_id() {
    let capture = Capture::install();
    let repository = Arc::new(InMemorySessionRepository::new());
    let runtime = FakeRuntime::new();
    runtime.hold_creates();
    let locker = RecordingLocker::new();
    let usecase = Arc::new(
        create_sandbox(repository.clone(), locker.clone(), &runtime)
            .with_session_id_generator(|| SESSION_NEW_ID),
    );
    let spawn_create = || {
        let usecase = Arc::clone(&usecase);
        tokio::spawn(async move { usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await })
    };

    let first = spawn_create();
    timeout(WAIT, runtime.create_started()).await.expect("the first call reaches create");
    let second = spawn_create();
    timeout(WAIT, locker.second_attempted()).await.expect("the second call asks for the lock");
    // Give the second call every chance to run ahead: it must stay parked on the chat's lock.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished(), "the second call must wait for the first");
    assert_eq!(runtime.create_calls().len(), 1);
    runtime.allow_create();
    let first = timeout(WAIT, first).await.expect("first finishes").unwrap().unwrap();
    let second = timeout(WAIT, second).await.expect("second finishes").unwrap().unwrap();

    assert_eq!(first.session, second.session);
    assert_eq!(first.session, new_session());
    assert_eq!((first.result, second.result), (CreateResult::Created, CreateResult::Reused));
    assert_eq!(runtime.create_calls().len(), 1);
    assert_eq!(runtime.stop_calls(), vec![]);
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), Some(first.session));
    assert_eq!(locker.chat_ids(), vec![CHAT_ID, CHAT_ID]);
    assert_eq!(
        logged(&capture),
        vec![
            session_event(Level::INFO, "sandbox_created", &new_session()),
            session_event(Level::INFO, "sandbox_reused", &new_session()),
        ]
    );
}

// --- beyond the seed ---

#[tokio::test]
async fn create_sandbox_refuses_a_new_sandbox_at_capacity_before_touching_the_runtime() {
    let capture = Capture::install();
    let repository = repository_with(&[&other_chats_sandbox()]).await;
    let runtime = FakeRuntime::new();
    let usecase = create_new(repository.clone(), &runtime).with_max_sandboxes(Some(1));

    let error = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap_err();

    assert_eq!(error, CreateSandboxError::CapacityReached { limit: 1 });
    assert_eq!(error.kind(), "capacity_reached");
    assert!(error.to_string().contains("capacity reached: 1 running is the maximum"), "{error}");
    assert_eq!(runtime.calls(), vec![]);
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), None);
    capture.assert_counter_incremented("sandbox.create.total", 1, &[("result", "error")]);
    let span = create_span(&capture, &[]);
    assert!(!span.has_field("session.id"), "no id was chosen: {span:?}");
    assert_eq!(span.field("error.type"), Some(&text("capacity_reached")));
}

/// A store whose count is already stale when it answers: another replica's create saves its
/// row right after this one counted.
struct CountedBeforeAnotherReplicaSaved(InMemorySessionRepository);

#[async_trait::async_trait]
impl sandkeeper_ports::testkit::DelegatingRepository for CountedBeforeAnotherReplicaSaved {
    fn inner(&self) -> &dyn SessionRepository {
        &self.0
    }

    async fn count_running(&self) -> Result<u64, sandkeeper_ports::StoreError> {
        Ok(self.0.count_running().await?.saturating_sub(1))
    }
}

#[tokio::test]
async fn create_sandbox_at_capacity_is_refused_even_when_another_replica_saved_after_the_count() {
    let _capture = Capture::install();
    let inner = InMemorySessionRepository::new();
    inner.save(&other_chats_sandbox()).await.unwrap();
    let repository = Arc::new(CountedBeforeAnotherReplicaSaved(inner));
    let runtime = FakeRuntime::new();
    let usecase = create_new(repository.clone(), &runtime).with_max_sandboxes(Some(1));

    let error = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap_err();

    assert_eq!(error, CreateSandboxError::CapacityReached { limit: 1 });
    assert_eq!(repository.0.count_running().await.unwrap(), 1, "still one running");
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), None);
    let made = runtime.calls().iter().find_map(|call| match call {
        RuntimeCall::Create(spec) => Some(spec.session_id),
        _ => None,
    });
    assert_eq!(made, Some(SESSION_NEW_ID), "the container was made before the save");
    assert!(runtime.container_ids().is_empty(), "the refused create left a container behind");
}

#[tokio::test]
async fn create_sandbox_at_capacity_still_reuses_and_replaces() {
    let _capture = Capture::install();
    let active = live_session();
    let expired = running(SESSION_EXPIRED_ID, EXPIRED_CHAT_ID, "container-expired")
        .between(now() - minutes(10), now());
    let repository = repository_with(&[&active, &expired]).await;
    let runtime = FakeRuntime::new();
    let usecase = create_sandbox(repository.clone(), RecordingLocker::new(), &runtime)
        .with_max_sandboxes(Some(2));

    let reused = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();
    let replaced = usecase.execute(CreateSandboxCommand::new(EXPIRED_CHAT_ID)).await.unwrap();

    assert_eq!(reused.result, CreateResult::Reused);
    assert_eq!(replaced.result, CreateResult::Replaced);
    assert_eq!(repository.count_running().await.unwrap(), 2);
}

#[tokio::test]
async fn create_sandbox_below_capacity_creates() {
    let _capture = Capture::install();
    let repository = repository_with(&[&other_chats_sandbox()]).await;
    let usecase = create_sandbox(repository, RecordingLocker::new(), &FakeRuntime::new())
        .with_max_sandboxes(Some(2));

    let outcome = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();

    assert_eq!(outcome.result, CreateResult::Created);
}

#[tokio::test]
async fn create_sandbox_ttl_overrides_the_default_for_a_new_sandbox_only() {
    let _capture = Capture::install();
    let repository = Arc::new(InMemorySessionRepository::new());
    let runtime = FakeRuntime::new();
    let usecase = create_new(repository.clone(), &runtime);
    let command = CreateSandboxCommand { chat_id: CHAT_ID, ttl: Some(Duration::from_secs(90)) };

    let created = usecase.execute(command).await.unwrap();
    let reused = usecase
        .execute(CreateSandboxCommand { chat_id: CHAT_ID, ttl: Some(Duration::from_secs(3600)) })
        .await
        .unwrap();

    assert_eq!(created.session.expires_at, now() + seconds(90));
    assert_eq!(runtime.create_calls()[0].expires_at, now() + seconds(90));
    assert_eq!(reused.result, CreateResult::Reused);
    assert_eq!(reused.session.expires_at, now() + seconds(90), "reuse keeps its expiry");
}

#[tokio::test]
async fn create_sandbox_rejects_a_ttl_beyond_representable_time_without_side_effects() {
    let _capture = Capture::install();
    let repository = repository_with(&[&expired_session()]).await;
    let runtime = FakeRuntime::new();
    let usecase = create_sandbox(repository.clone(), RecordingLocker::new(), &runtime);
    let ttl = Duration::from_secs(u64::MAX / 4);

    let error = usecase.execute(CreateSandboxCommand { chat_id: CHAT_ID, ttl: Some(ttl) }).await;

    assert_eq!(error, Err(CreateSandboxError::TtlOutOfRange { ttl }));
    assert_eq!(runtime.calls(), vec![]);
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), Some(expired_session()));
}

#[tokio::test]
async fn create_sandbox_records_its_duration_labelled_with_the_result() {
    let capture = Capture::install();
    let usecase = create_sandbox(
        Arc::new(InMemorySessionRepository::new()),
        RecordingLocker::new(),
        &FakeRuntime::new(),
    );

    usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();
    usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();

    let created =
        capture.histogram_values("sandbox.create.duration.seconds", &[("result", "created")]);
    let reused =
        capture.histogram_values("sandbox.create.duration.seconds", &[("result", "reused")]);
    assert_eq!((created.len(), reused.len()), (1, 1));
    assert!(created[0] >= 0.0 && created[0] < 5.0, "{created:?}");
}

#[tokio::test]
async fn create_sandbox_save_conflict_is_its_own_error_and_stops_the_container() {
    let _capture = Capture::install();
    let repository = ScriptedRepository::new();
    repository.fail_next_save(SaveError::Conflict { chat_id: CHAT_ID });
    let runtime = FakeRuntime::new();
    let usecase = create_new(repository, &runtime);

    let error = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap_err();

    assert_eq!(error, CreateSandboxError::Conflict { chat_id: CHAT_ID });
    assert_eq!(error.to_string(), SaveError::Conflict { chat_id: CHAT_ID }.to_string());
    assert_eq!(runtime.stop_calls(), vec![container_of(SESSION_NEW_ID)]);
}

#[tokio::test]
async fn create_sandbox_leaves_the_active_gauge_alone_when_the_store_cannot_count() {
    let capture = Capture::install();
    let repository = ScriptedRepository::new();
    repository.fail_count(StoreError::Unavailable("connection refused".into()));
    let usecase = create_sandbox(repository, RecordingLocker::new(), &FakeRuntime::new());

    let outcome = usecase.execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();

    assert_eq!(outcome.result, CreateResult::Created);
    assert_eq!(capture.gauge_values("sandbox.active.count"), Vec::<f64>::new());
}

#[test]
fn use_case_futures_can_be_spawned_on_a_multi_threaded_runtime() {
    fn assert_send<T: Send>(_: &T) {}
    let usecase = create_sandbox(
        Arc::new(InMemorySessionRepository::new()),
        RecordingLocker::new(),
        &FakeRuntime::new(),
    );
    assert_send(&usecase.execute(CreateSandboxCommand::new(CHAT_ID)));
}
