//! DeleteSandbox (the API's DELETE) and the read helpers the API uses.

mod support;

use sandkeeper_adapters_observability::capture::Capture;
use sandkeeper_domain::{SandboxSession, SandboxStatus};
use sandkeeper_ports::testkit::FakeRuntime;
use sandkeeper_ports::{RuntimeError, SessionRepository};
use sandkeeper_usecase::{DeleteSandboxError, SandboxQueries};
use support::*;
use tracing::Level;

#[tokio::test]
async fn delete_sandbox_stops_the_container_and_forgets_the_session() {
    let capture = Capture::install();
    let other = running(SESSION_CLEAN_ID, CLEAN_CHAT_ID, "container-other")
        .between(now(), now() + minutes(5));
    let runtime = FakeRuntime::new();
    let (repository, locker, usecase) =
        lifecycle(&[&active(), &other], &runtime, delete_sandbox).await;

    let deleted = usecase.execute(CHAT_ID).await.unwrap();

    assert_eq!(deleted, Some(active()));
    assert_eq!(runtime.stop_calls(), vec![container("container-active")]);
    assert_eq!(repository.get(SESSION_ACTIVE_ID).await.unwrap(), None);
    assert_eq!(repository.get_running_by_chat(CLEAN_CHAT_ID).await.unwrap(), Some(other));
    assert_eq!(locker.chat_ids(), vec![CHAT_ID]);
    assert_eq!(logged(&capture), vec![session_event(Level::INFO, "sandbox_deleted", &active())]);
    assert_eq!(last_active_count(&capture), 1.0);
    capture.assert_counter_incremented("sandbox.delete.total", 1, &[("result", "deleted")]);
    capture.find_span(
        "usecase.delete_sandbox",
        &[("chat.id", text(CHAT_ID))],
        &[
            ("session.id", text(SESSION_ACTIVE_ID)),
            ("container.id", text("container-active")),
            ("sandbox.result", text("deleted")),
        ],
    );
}

#[tokio::test]
async fn delete_sandbox_of_a_chat_without_one_answers_none_and_touches_nothing() {
    let capture = Capture::install();
    let runtime = FakeRuntime::new();
    let (_, _, usecase) = lifecycle(&[], &runtime, delete_sandbox).await;

    assert_eq!(usecase.execute(CHAT_ID).await, Ok(None));
    assert_eq!(runtime.calls(), vec![]);
    assert_eq!(logged(&capture), vec![]);
    capture.assert_counter_incremented("sandbox.delete.total", 1, &[("result", "not_found")]);
}

#[tokio::test]
async fn delete_sandbox_keeps_the_session_when_the_container_cannot_be_stopped() {
    let capture = Capture::install();
    let runtime = failing_stop("container-active");
    let (repository, _, usecase) = lifecycle(&[&active()], &runtime, delete_sandbox).await;

    let error = usecase.execute(CHAT_ID).await.unwrap_err();

    assert_eq!(error, DeleteSandboxError::Runtime(RuntimeError::Failed("stop_failed".into())));
    assert_eq!(error.to_string(), "stop_failed");
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), Some(active()));
    let span = capture.find_span(
        "usecase.delete_sandbox",
        &[("chat.id", text(CHAT_ID))],
        &[("sandbox.result", text("error")), ("error.type", text("runtime_error"))],
    );
    assert_eq!(span.error(), Some(&text("stop_failed")));
    capture.assert_counter_incremented("sandbox.delete.total", 1, &[("result", "error")]);
}

#[tokio::test]
async fn queries_read_the_running_session_and_list_by_status() {
    // Every test of this binary installs the capture, so that no test registers the use cases'
    // callsites while no subscriber listens (tracing caches that interest per callsite).
    let _capture = Capture::install();
    let expired = running(SESSION_OLD_ID, EXPIRED_CHAT_ID, "container-old")
        .between(now() - minutes(10), now());
    let crashed = SandboxSession {
        status: SandboxStatus::Crashed,
        ..running(SESSION_FAIL_ID, FAIL_CHAT_ID, "container-fail")
            .between(now() - minutes(2), now())
    };
    let repository = repository_with(&[&active(), &expired, &crashed]).await;
    let queries = SandboxQueries::new(repository);

    assert_eq!(queries.running_for_chat(CHAT_ID).await.unwrap(), Some(active()));
    assert_eq!(queries.running_for_chat(EXPIRED_CHAT_ID).await.unwrap(), Some(expired.clone()));
    assert_eq!(queries.running_for_chat(FAIL_CHAT_ID).await.unwrap(), None);
    assert_eq!(
        queries.list(&[SandboxStatus::Running], 10).await.unwrap(),
        vec![expired.clone(), active()],
        "oldest first"
    );
    assert_eq!(queries.list(&[SandboxStatus::Crashed], 10).await.unwrap(), vec![crashed]);
    assert_eq!(queries.list(&SandboxStatus::ALL, 1).await.unwrap(), vec![expired]);
}
