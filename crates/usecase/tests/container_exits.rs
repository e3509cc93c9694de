//! RecordContainerExit: a container that stopped by itself turns its session `Crashed` at once,
//! so that the next request gets a new sandbox; exits sandkeeper caused itself change nothing.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use sandkeeper_adapters_observability::capture::Capture;
use sandkeeper_domain::{SandboxSession, SandboxStatus, SessionId};
use sandkeeper_ports::inprocess::InMemorySessionRepository;
use sandkeeper_ports::testkit::{DelegatingRepository, FakeRuntime};
use sandkeeper_ports::{ContainerExit, LifecycleLocker, SessionRepository, StoreError};
use sandkeeper_usecase::{
    CreateResult, CreateSandboxCommand, ExitOutcome, IgnoredExit, RecordContainerExit,
};
use support::*;
use tracing::Level;

fn exit_of(session: &SandboxSession) -> ContainerExit {
    ContainerExit {
        container_id: session.container_id.clone(),
        session_id: Some(session.session_id),
    }
}

/// A chat with a sandbox created through `CreateSandbox` on the fake runtime.
async fn created(
    repository: Arc<dyn SessionRepository>,
    locker: Arc<dyn LifecycleLocker>,
    runtime: &FakeRuntime,
) -> SandboxSession {
    let outcome = create_sandbox(repository, locker, runtime)
        .execute(CreateSandboxCommand::new(CHAT_ID))
        .await
        .unwrap();
    assert_eq!(outcome.result, CreateResult::Created);
    outcome.session
}

/// A store, a fake runtime and a recording lock, with a sandbox of [`CHAT_ID`] [`created`]
/// through them.
async fn with_a_sandbox()
-> (Arc<InMemorySessionRepository>, FakeRuntime, Arc<RecordingLocker>, SandboxSession) {
    let repository = repository_with(&[]).await;
    let runtime = FakeRuntime::new();
    let locker = RecordingLocker::new();
    let session = created(repository.clone(), locker.clone(), &runtime).await;
    (repository, runtime, locker, session)
}

#[tokio::test]
async fn a_container_that_exits_crashes_its_session_and_the_next_request_gets_a_new_sandbox() {
    let capture = Capture::install();
    let (repository, runtime, locker, session) = with_a_sandbox().await;
    let record = RecordContainerExit::new(repository.clone(), locker.clone());

    runtime.exit(&session.container_id);
    let outcome = record.execute(&exit_of(&session)).await.unwrap();

    let crashed = SandboxSession { status: SandboxStatus::Crashed, ..session.clone() };
    assert_eq!(outcome, ExitOutcome::Crashed(crashed.clone()));
    assert_eq!(repository.get(session.session_id).await.unwrap(), Some(crashed));
    assert_eq!(locker.chat_ids(), vec![CHAT_ID, CHAT_ID]);
    // No engine call: the report is the evidence.
    assert_eq!(runtime.calls().len(), 1, "{:?}", runtime.calls());
    let mut event = session_event(Level::INFO, "sandbox_crashed", &session);
    event.2.insert("container_state".into(), "Exited".into());
    event.2.insert("detected_by".into(), "exit_event".into());
    assert!(logged(&capture).contains(&event), "{:#?}", logged(&capture));
    capture.assert_counter_incremented(
        "sandbox.crashed.total",
        1,
        &[("detected_by", "exit_event")],
    );
    capture.assert_counter_incremented(
        "sandbox.container_exits.total",
        1,
        &[("result", "crashed")],
    );
    assert_eq!(last_active_count(&capture), 0.0);
    capture.find_span(
        "usecase.record_container_exit",
        &[("container.id", text(&session.container_id))],
        &[
            ("session.id", text(session.session_id)),
            ("chat.id", text(CHAT_ID)),
            ("sandbox.result", text("crashed")),
        ],
    );

    let next = create_sandbox(repository.clone(), locker, &runtime)
        .execute(CreateSandboxCommand::new(CHAT_ID))
        .await
        .unwrap();
    assert_eq!(next.result, CreateResult::Created);
    assert_ne!(next.session.session_id, session.session_id);
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), Some(next.session));
}

#[tokio::test]
async fn the_exit_of_a_sandbox_sandkeeper_deleted_changes_nothing() {
    let capture = Capture::install();
    let (repository, runtime, locker, session) = with_a_sandbox().await;
    delete_sandbox(repository.clone(), locker.clone(), &runtime).execute(CHAT_ID).await.unwrap();

    let record = RecordContainerExit::new(repository.clone(), locker);
    let outcome = record.execute(&exit_of(&session)).await.unwrap();

    assert_eq!(outcome, ExitOutcome::Ignored(IgnoredExit::SessionGone));
    assert_eq!(repository.get(session.session_id).await.unwrap(), None);
    capture.assert_counter_incremented(
        "sandbox.container_exits.total",
        1,
        &[("result", "ignored")],
    );
    assert_eq!(capture.counter_total("sandbox.crashed.total", &[]), 0);
}

#[tokio::test]
async fn an_exit_seen_while_sandkeeper_removes_the_sandbox_waits_for_the_chat_lock() {
    let repository = repository_with(&[]).await;
    let runtime = FakeRuntime::new();
    let session = created(repository.clone(), RecordingLocker::new(), &runtime).await;
    let locker = RecordingLocker::new();
    let record = RecordContainerExit::new(repository.clone(), locker.clone());

    // A removal holds the chat's lock: container stopped, row not yet deleted.
    let guard = locker.lock(CHAT_ID).await.unwrap();
    let exit = exit_of(&session);
    let pending = tokio::spawn(async move { record.execute(&exit).await });
    locker.second_attempted().await;
    assert!(!pending.is_finished());
    repository.delete(session.session_id).await.unwrap();
    drop(guard);

    let outcome = pending.await.unwrap().unwrap();
    assert_eq!(outcome, ExitOutcome::Ignored(IgnoredExit::SessionGone));
}

#[tokio::test]
async fn exits_of_other_containers_and_of_ended_sessions_change_nothing() {
    let capture = Capture::install();
    let active = active();
    let stopped = SandboxSession {
        status: SandboxStatus::Stopped,
        ..running(SESSION_OLD_ID, CLEAN_CHAT_ID, "container-old").between(now(), now() + minutes(1))
    };
    let repository = repository_with(&[&active, &stopped]).await;
    let record = RecordContainerExit::new(repository.clone(), RecordingLocker::new());

    let cases = [
        (
            ContainerExit { container_id: container("container-x"), session_id: None },
            IgnoredExit::NoSession,
        ),
        (
            ContainerExit {
                container_id: container("container-other"),
                session_id: Some(SESSION_ACTIVE_ID),
            },
            IgnoredExit::OtherContainer,
        ),
        (exit_of(&stopped), IgnoredExit::NotRunning),
        (
            ContainerExit {
                container_id: container("container-new"),
                session_id: Some(SESSION_NEW_ID),
            },
            IgnoredExit::SessionGone,
        ),
    ];
    for (exit, why) in cases {
        assert_eq!(record.execute(&exit).await, Ok(ExitOutcome::Ignored(why)), "{exit:?}");
    }
    assert_eq!(repository.get(SESSION_ACTIVE_ID).await.unwrap(), Some(active.clone()));
    assert_eq!(repository.get(SESSION_OLD_ID).await.unwrap(), Some(stopped));
    assert_eq!(capture.counter_total("sandbox.container_exits.total", &[("result", "ignored")]), 4);

    // Reported twice: the second report finds it already crashed.
    let first = record.execute(&exit_of(&active)).await.unwrap();
    assert!(matches!(first, ExitOutcome::Crashed(_)), "{first:?}");
    let again = record.execute(&exit_of(&active)).await.unwrap();
    assert_eq!(again, ExitOutcome::Ignored(IgnoredExit::NotRunning));
    assert_eq!(capture.counter_total("sandbox.crashed.total", &[]), 1);
}

/// A store whose reads fail.
#[derive(Default)]
struct UnreadableStore {
    inner: InMemorySessionRepository,
}

#[async_trait]
impl DelegatingRepository for UnreadableStore {
    fn inner(&self) -> &dyn SessionRepository {
        &self.inner
    }

    async fn get(&self, _: SessionId) -> Result<Option<SandboxSession>, StoreError> {
        Err(StoreError::Unavailable("the store is down".into()))
    }
}

#[tokio::test]
async fn a_store_failure_is_returned_and_counted_and_changes_nothing() {
    let capture = Capture::install();
    let store = Arc::new(UnreadableStore::default());
    let active =
        running(SESSION_ACTIVE_ID, CHAT_ID, "container-active").between(now(), now() + minutes(4));
    store.inner.save(&active).await.unwrap();
    let record = RecordContainerExit::new(store.clone(), RecordingLocker::new());

    let error = record.execute(&exit_of(&active)).await.unwrap_err();

    assert_eq!(error, StoreError::Unavailable("the store is down".into()));
    assert_eq!(store.inner.get(SESSION_ACTIVE_ID).await.unwrap(), Some(active));
    capture.assert_counter_incremented("sandbox.container_exits.total", 1, &[("result", "error")]);
    let span = capture.find_span(
        "usecase.record_container_exit",
        &[],
        &[("sandbox.result", text("error")), ("error.type", text("store_unavailable"))],
    );
    assert!(span.error().is_some());
}
