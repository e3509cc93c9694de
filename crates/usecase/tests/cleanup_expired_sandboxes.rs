//! CleanupExpiredSandboxes: the seed's tests, one for one, then what sandkeeper adds
//! (bounded concurrency, batch limit, a failed snapshot).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sandkeeper_adapters_observability::capture::{Capture, CapturedSpan};
use sandkeeper_domain::{ChatId, ContainerId, SandboxSession};
use sandkeeper_ports::testkit::FakeRuntime;
use sandkeeper_ports::{
    ContainerSpec, ContainerState, ManagedContainer, Report, RuntimeError, SandboxRuntime,
    SessionRepository, StoreError,
};
use sandkeeper_usecase::{CleanupError, CleanupExpiredSandboxes, CleanupFailure};
use support::in_flight::InFlight;
use support::*;
use tracing::Level;

/// The span of a whole pass, found by the counts and the result it recorded.
fn pass_span(
    capture: &Capture,
    expired: u64,
    cleaned: u64,
    errors: u64,
    result: &str,
) -> CapturedSpan {
    capture.find_span(
        "usecase.cleanup_expired_sandboxes",
        &[],
        &[
            ("sandbox.expired_count", expired.into()),
            ("sandbox.cleaned_count", cleaned.into()),
            ("sandbox.error_count", errors.into()),
            ("sandbox.result", text(result)),
        ],
    )
}

/// The span of one session's removal, found by the session's ids and the result it recorded.
fn session_span(capture: &Capture, session: &SandboxSession, result: &str) -> CapturedSpan {
    capture.find_span(
        "usecase.cleanup_expired_sandbox",
        &[
            ("chat.id", text(session.chat_id)),
            ("session.id", text(session.session_id)),
            ("container.id", text(&session.container_id)),
        ],
        &[("sandbox.result", text(result))],
    )
}

/// A sandbox of `chat_id` created ten minutes ago that expired a second ago.
fn expired_a_second_ago(chat_id: ChatId) -> SandboxSession {
    running(SESSION_EXPIRED_ID, chat_id, "container-expired")
        .between(now() - minutes(10), now() - seconds(1))
}

// --- the seed's tests ---

#[tokio::test]
async fn cleanup_expired_sandboxes_stops_and_deletes_only_expired_sessions() {
    let capture = Capture::install();
    let expired = expired_a_second_ago(EXPIRED_CHAT_ID);
    let boundary = running(SESSION_BOUNDARY_ID, BOUNDARY_CHAT_ID, "container-boundary")
        .between(now() - minutes(5), now());
    let active = running(SESSION_ACTIVE_ID, ACTIVE_CHAT_ID, "container-active")
        .between(now() - minutes(1), now() + minutes(5));
    let runtime = FakeRuntime::new();
    let (repository, locker, usecase) =
        lifecycle(&[&expired, &boundary, &active], &runtime, cleanup_expired_sandboxes).await;

    let report = usecase.execute().await.unwrap();

    assert_eq!(report.cleaned, vec![expired.clone(), boundary.clone()]);
    assert_eq!(
        runtime.stop_calls(),
        vec![container("container-expired"), container("container-boundary")]
    );
    assert_eq!(repository.get_running_by_chat(EXPIRED_CHAT_ID).await.unwrap(), None);
    assert_eq!(repository.get_running_by_chat(BOUNDARY_CHAT_ID).await.unwrap(), None);
    assert_eq!(repository.get_running_by_chat(ACTIVE_CHAT_ID).await.unwrap(), Some(active));
    assert_eq!(locker.chat_ids(), vec![EXPIRED_CHAT_ID, BOUNDARY_CHAT_ID]);
    assert_eq!(
        logged(&capture),
        vec![
            session_event(Level::INFO, "sandbox_cleaned", &expired),
            session_event(Level::INFO, "sandbox_cleaned", &boundary),
        ]
    );
}

#[tokio::test]
async fn cleanup_expired_sandboxes_records_observability_on_cleaned_session() {
    let capture = Capture::install();
    let expired = expired_a_second_ago(EXPIRED_CHAT_ID);
    let repository = repository_with(&[&expired]).await;
    let usecase =
        cleanup_expired_sandboxes(repository, RecordingLocker::new(), &FakeRuntime::new());

    let report = usecase.execute().await.unwrap();

    assert_eq!(report.cleaned, vec![expired.clone()]);
    capture.assert_counter_incremented("sandbox.cleanup.total", 1, &[("result", "cleaned")]);
    assert_eq!(last_active_count(&capture), 0.0);
    let root = pass_span(&capture, 1, 1, 0, "completed");
    assert_eq!(root.error(), None);
    let cleaned = session_span(&capture, &expired, "cleaned");
    assert_eq!(cleaned.error(), None);
    assert_eq!(cleaned.parent, Some(root.index));
}

#[tokio::test]
async fn cleanup_expired_sandboxes_skips_replaced_session_from_stale_snapshot() {
    let capture = Capture::install();
    let expired_snapshot = expired_a_second_ago(CHAT_ID);
    let replacement = running(SESSION_REPLACEMENT_ID, CHAT_ID, "container-new")
        .between(now() - seconds(30), now() + minutes(5));
    let repository = ScriptedRepository::new();
    repository.serve_expired_snapshot(vec![expired_snapshot]);
    repository.save(&replacement).await.unwrap();
    let runtime = FakeRuntime::new();
    let locker = RecordingLocker::new();
    let usecase = cleanup_expired_sandboxes(repository.clone(), locker.clone(), &runtime);

    let report = usecase.execute().await.unwrap();

    assert_eq!(report.cleaned, vec![]);
    assert_eq!(runtime.stop_calls(), vec![]);
    assert_eq!(repository.get_running_by_chat(CHAT_ID).await.unwrap(), Some(replacement));
    assert_eq!(locker.chat_ids(), vec![CHAT_ID]);
    assert_eq!(logged(&capture), vec![]);
}

#[tokio::test]
async fn cleanup_expired_sandboxes_continues_after_stop_failure() {
    let capture = Capture::install();
    let failing = running(SESSION_FAIL_ID, FAIL_CHAT_ID, "container-fail")
        .between(now() - minutes(10), now() - minutes(1));
    let cleaned = running(SESSION_CLEAN_ID, CLEAN_CHAT_ID, "container-clean")
        .between(now() - minutes(9), now() - seconds(1));
    let runtime = failing_stop("container-fail");
    let (repository, locker, usecase) =
        lifecycle(&[&failing, &cleaned], &runtime, cleanup_expired_sandboxes).await;

    let report = usecase.execute().await.unwrap();

    assert_eq!(report.cleaned, vec![cleaned.clone()]);
    assert_eq!(
        report.errors,
        vec![CleanupFailure {
            session: failing.clone(),
            error: CleanupError::Runtime(RuntimeError::Failed("stop_failed".into())),
        }]
    );
    assert_eq!(
        runtime.stop_calls(),
        vec![container("container-fail"), container("container-clean")]
    );
    assert_eq!(repository.get_running_by_chat(FAIL_CHAT_ID).await.unwrap(), Some(failing.clone()));
    assert_eq!(repository.get_running_by_chat(CLEAN_CHAT_ID).await.unwrap(), None);
    assert_eq!(locker.chat_ids(), vec![FAIL_CHAT_ID, CLEAN_CHAT_ID]);
    let mut clean_failed = session_event(Level::ERROR, "sandbox_clean_failed", &failing);
    clean_failed.2.insert("error".into(), "runtime_error".into());
    assert_eq!(
        logged(&capture),
        vec![clean_failed, session_event(Level::INFO, "sandbox_cleaned", &cleaned)]
    );
    capture.assert_counter_incremented(
        "sandbox.cleanup.error.total",
        1,
        &[("error.type", "runtime_error")],
    );
    capture.assert_counter_incremented("sandbox.cleanup.total", 1, &[("result", "cleaned")]);
    assert_eq!(last_active_count(&capture), 1.0);
    let root = pass_span(&capture, 2, 1, 1, "completed_with_errors");
    assert_eq!(root.error(), None);
    let failed_span = session_span(&capture, &failing, "error");
    assert_eq!(failed_span.error(), Some(&text("stop_failed")));
    assert_eq!(failed_span.field("error.type"), Some(&text("runtime_error")));
    assert_eq!(failed_span.field("otel.status_code"), Some(&text("ERROR")));
    let cleaned_span = session_span(&capture, &cleaned, "cleaned");
    assert_eq!(cleaned_span.error(), None);
}

// --- beyond the seed ---

/// A runtime whose `stop` takes a scripted time per container, and which counts how many stops
/// are in progress at once.
#[derive(Debug, Default)]
struct SlowStopRuntime {
    inner: FakeRuntime,
    delays: HashMap<ContainerId, Duration>,
    stops: InFlight,
    finished: Mutex<Vec<ContainerId>>,
}

#[async_trait]
impl SandboxRuntime for SlowStopRuntime {
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        self.inner.create(spec).await
    }

    async fn stop(&self, container_id: &ContainerId) -> Result<(), RuntimeError> {
        let delay = self.delays.get(container_id).copied().unwrap_or_default();
        let stop = async {
            tokio::time::sleep(delay).await;
            self.inner.stop(container_id).await
        };
        let stopped = self.stops.run(stop).await;
        self.finished.lock().unwrap().push(container_id.clone());
        stopped
    }

    async fn inspect(&self, container_id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        self.inner.inspect(container_id).await
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        self.inner.list_managed().await
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.inner.ping().await
    }
}

/// Three expired sessions of three chats; the first takes longest to stop.
fn three_expired() -> Vec<SandboxSession> {
    [
        (SESSION_FAIL_ID, FAIL_CHAT_ID),
        (SESSION_CLEAN_ID, CLEAN_CHAT_ID),
        (SESSION_EXPIRED_ID, EXPIRED_CHAT_ID),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, (session_id, chat_id))| {
        let expires_at = now() - minutes(3 - n as i64);
        running(session_id, chat_id, &format!("container-{n}"))
            .between(now() - minutes(10), expires_at)
    })
    .collect()
}

async fn clean_three_with_concurrency(
    concurrency: usize,
) -> (Vec<SandboxSession>, Arc<SlowStopRuntime>) {
    let sessions = three_expired();
    let repository = repository_with(&sessions.iter().collect::<Vec<_>>()).await;
    let delays = [30, 20, 10].into_iter().enumerate();
    let runtime = Arc::new(SlowStopRuntime {
        delays: delays
            .map(|(n, ms)| (container(&format!("container-{n}")), Duration::from_millis(ms)))
            .collect(),
        ..SlowStopRuntime::default()
    });
    let usecase = CleanupExpiredSandboxes::new(
        repository.clone(),
        RecordingLocker::new(),
        runtime.clone(),
        at_now(),
    )
    .with_concurrency(concurrency);

    let report = usecase.execute().await.unwrap();

    assert_eq!(report.cleaned, sessions, "results come back in snapshot order");
    assert_eq!(repository.count_running().await.unwrap(), 0);
    (sessions, runtime)
}

#[tokio::test(start_paused = true)]
async fn cleanup_expired_sandboxes_works_on_several_at_once_and_reports_in_snapshot_order() {
    let _capture = Capture::install();

    let (_, runtime) = clean_three_with_concurrency(8).await;

    assert_eq!(runtime.stops.most(), 3);
    let finished = runtime.finished.lock().unwrap().clone();
    assert_eq!(
        finished,
        vec![container("container-2"), container("container-1"), container("container-0")],
        "the quickest stop finished first, so they ran at the same time"
    );
}

#[tokio::test(start_paused = true)]
async fn cleanup_expired_sandboxes_never_exceeds_its_concurrency() {
    let _capture = Capture::install();

    let (_, two_at_once) = clean_three_with_concurrency(2).await;
    let (_, one_at_once) = clean_three_with_concurrency(1).await;

    assert_eq!(two_at_once.stops.most(), 2);
    assert_eq!(one_at_once.stops.most(), 1);
    assert_eq!(
        one_at_once.finished.lock().unwrap().clone(),
        vec![container("container-0"), container("container-1"), container("container-2")]
    );
}

#[tokio::test]
async fn cleanup_expired_sandboxes_takes_at_most_its_batch_limit_in_expiry_order() {
    let _capture = Capture::install();
    let sessions = three_expired();
    let repository = repository_with(&sessions.iter().collect::<Vec<_>>()).await;
    let runtime = FakeRuntime::new();
    let usecase = cleanup_expired_sandboxes(repository.clone(), RecordingLocker::new(), &runtime)
        .with_batch_limit(2);

    let report = usecase.execute().await.unwrap();

    assert_eq!(report.expired, 2);
    assert_eq!(report.cleaned, sessions[..2].to_vec());
    assert_eq!(repository.count_running().await.unwrap(), 1);
}

#[tokio::test]
async fn cleanup_expired_sandboxes_skips_a_session_that_is_gone_or_no_longer_expired() {
    let capture = Capture::install();
    let gone = running(SESSION_FAIL_ID, FAIL_CHAT_ID, "container-gone")
        .between(now() - minutes(10), now());
    let extended = running(SESSION_CLEAN_ID, CLEAN_CHAT_ID, "container-extended")
        .between(now() - minutes(10), now());
    let repository = ScriptedRepository::new();
    repository.serve_expired_snapshot(vec![gone, extended.clone()]);
    let still_running = SandboxSession { expires_at: now() + minutes(5), ..extended };
    repository.save(&still_running).await.unwrap();
    let runtime = FakeRuntime::new();
    let usecase = cleanup_expired_sandboxes(repository.clone(), RecordingLocker::new(), &runtime);

    let report = usecase.execute().await.unwrap();

    assert_eq!((report.expired, report.skipped, report.cleaned.len()), (2, 2, 0));
    assert_eq!(runtime.stop_calls(), vec![]);
    assert_eq!(repository.get_running_by_chat(CLEAN_CHAT_ID).await.unwrap(), Some(still_running));
    assert_eq!(logged(&capture), vec![]);
    capture.find_span(
        "usecase.cleanup_expired_sandboxes",
        &[],
        &[("sandbox.result", text("completed")), ("sandbox.cleaned_count", 0_u64.into())],
    );
}

#[tokio::test]
async fn cleanup_expired_sandboxes_fails_when_the_snapshot_cannot_be_read() {
    let capture = Capture::install();
    let repository = ScriptedRepository::new();
    repository.fail_list_expired(StoreError::Unavailable("connection refused".into()));
    let runtime = FakeRuntime::new();
    let usecase = cleanup_expired_sandboxes(repository, RecordingLocker::new(), &runtime);

    let error = usecase.execute().await.unwrap_err();

    assert_eq!(error, CleanupError::Store(StoreError::Unavailable("connection refused".into())));
    assert_eq!(error.kind(), "store_unavailable");
    assert_eq!(runtime.calls(), vec![]);
    let root = capture.find_span(
        "usecase.cleanup_expired_sandboxes",
        &[],
        &[("sandbox.result", text("error")), ("error.type", text("store_unavailable"))],
    );
    assert_eq!(root.error(), Some(&text(Report(&error))));
}
