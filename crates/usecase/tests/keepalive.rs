//! KeepAlive: how far the expiry moves and what bounds it, what is refused, the race with the
//! cleanup, and the sliding expiry of execs and file transfers.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sandkeeper_adapters_observability::capture::Capture;
use sandkeeper_domain::{SandboxSession, SessionId, Timestamp};
use sandkeeper_ports::inprocess::{InMemorySessionRepository, ProcessLocalLocker};
use sandkeeper_ports::testkit::{FakeRuntime, ManualClock};
use sandkeeper_ports::{Clock, ContainerState, LifecycleLocker, SessionRepository, StoreError};
use sandkeeper_usecase::{
    AccessError, CleanupExpiredSandboxes, ExecInSandbox, ExecSettings, FileSettings, KeepAlive,
    KeepAliveCommand, KeepAliveError, KeepAliveResult, KeepAliveSettings, SandboxAccess,
    SandboxFiles, SandboxSlots,
};
use support::*;

// Every test captures telemetry from its first line, also those that assert none: `tracing`
// caches per call site whether anyone listens, and a test without a capture running beside one
// with a capture can make that cache say "no one" for the latter.
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(5);

fn settings() -> KeepAliveSettings {
    KeepAliveSettings {
        default_ttl: TTL,
        max_ttl: Duration::from_secs(3600),
        max_lifetime: Duration::from_secs(24 * 3600),
    }
}

fn keep_alive(
    repository: Arc<dyn SessionRepository>,
    locker: Arc<dyn LifecycleLocker>,
    clock: Arc<dyn Clock>,
    settings: KeepAliveSettings,
) -> KeepAlive {
    KeepAlive::new(repository, locker, clock, settings)
}

/// The keep-alive of the [`active`] sandbox, with its store and a locker that records.
async fn keep_alive_of_active() -> (Arc<InMemorySessionRepository>, Arc<RecordingLocker>, KeepAlive)
{
    let repository = repository_with(&[&active()]).await;
    let locker = RecordingLocker::new();
    let usecase = keep_alive(repository.clone(), locker.clone(), at_now(), settings());
    (repository, locker, usecase)
}

/// How many keep-alives of `trigger` ended as `result`.
fn keepalives(capture: &Capture, trigger: &str, result: &str) -> u64 {
    capture.counter_total("sandbox.keepalive.total", &[("trigger", trigger), ("result", result)])
}

async fn stored(repository: &InMemorySessionRepository, id: SessionId) -> SandboxSession {
    repository.get(id).await.unwrap().expect("the session is in the store")
}

#[tokio::test]
async fn a_keepalive_moves_the_expiry_to_now_plus_the_ttl_under_the_chats_lock() {
    let capture = Capture::install();
    let (repository, locker, usecase) = keep_alive_of_active().await;

    let command = KeepAliveCommand { chat_id: CHAT_ID, ttl: Some(Duration::from_secs(600)) };
    let outcome = usecase.execute(command).await.unwrap();

    let expected = SandboxSession { expires_at: now() + minutes(10), ..active() };
    assert_eq!(outcome.session, expected);
    assert_eq!(outcome.result, KeepAliveResult::Extended);
    assert_eq!(outcome.lifetime_ends_at, active().created_at + chrono::TimeDelta::hours(24));
    assert_eq!(stored(&repository, SESSION_ACTIVE_ID).await, expected, "written to the store");
    assert_eq!(locker.chat_ids(), vec![CHAT_ID]);

    assert_eq!(keepalives(&capture, "request", "extended"), 1);
    let span = capture.find_span(
        "usecase.keep_alive",
        &[("chat.id", text(CHAT_ID)), ("sandbox.trigger", text("request"))],
        &[
            ("session.id", text(SESSION_ACTIVE_ID)),
            ("container.id", text("container-active")),
            ("sandbox.result", text("extended")),
            ("sandbox.expires_at", text(expected.expires_at)),
        ],
    );
    assert_eq!(span.error(), None);
    let events = logged(&capture);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, "sandbox_kept_alive");
    assert_eq!(events[0].2["session_id"], SESSION_ACTIVE_ID.to_string());
}

#[tokio::test]
async fn without_a_ttl_the_deployments_ttl_is_used() {
    let _capture = Capture::install();
    let repository = repository_with(&[&active()]).await;
    let usecase = keep_alive(repository.clone(), RecordingLocker::new(), at_now(), settings());
    let outcome = usecase.execute(KeepAliveCommand::new(CHAT_ID)).await.unwrap();
    assert_eq!(outcome.session.expires_at, now() + minutes(5));
    assert_eq!(stored(&repository, SESSION_ACTIVE_ID).await.expires_at, now() + minutes(5));
}

#[tokio::test]
async fn a_keepalive_never_shortens_a_sandboxs_life() {
    let capture = Capture::install();
    let long = SandboxSession { expires_at: now() + minutes(30), ..active() };
    let repository = repository_with(&[&long]).await;
    let usecase = keep_alive(repository.clone(), RecordingLocker::new(), at_now(), settings());

    let command = KeepAliveCommand { chat_id: CHAT_ID, ttl: Some(Duration::from_secs(60)) };
    let outcome = usecase.execute(command).await.unwrap();

    assert_eq!(outcome.result, KeepAliveResult::Unchanged);
    assert_eq!(outcome.session, long);
    assert_eq!(stored(&repository, SESSION_ACTIVE_ID).await, long);
    assert_eq!(keepalives(&capture, "request", "unchanged"), 1);
}

#[tokio::test]
async fn the_expiry_never_goes_past_the_maximum_lifetime() {
    let _capture = Capture::install();
    // Created 23 h 58 min ago, with a lifetime of 24 h: two minutes are left.
    let old = running(SESSION_ACTIVE_ID, CHAT_ID, "container-active")
        .between(now() - minutes(24 * 60 - 2), now() + minutes(1));
    let repository = repository_with(&[&old]).await;
    let usecase = keep_alive(repository.clone(), RecordingLocker::new(), at_now(), settings());
    let lifetime_ends_at = now() + minutes(2);

    let outcome = usecase.execute(KeepAliveCommand::new(CHAT_ID)).await.unwrap();
    assert_eq!(outcome.result, KeepAliveResult::Extended);
    assert_eq!(outcome.session.expires_at, lifetime_ends_at, "capped at the lifetime");
    assert_eq!(outcome.lifetime_ends_at, lifetime_ends_at);
    assert_eq!(stored(&repository, SESSION_ACTIVE_ID).await.expires_at, lifetime_ends_at);

    let again = usecase.execute(KeepAliveCommand::new(CHAT_ID)).await.unwrap();
    assert_eq!(again.result, KeepAliveResult::Unchanged, "nothing is left to give");
    assert_eq!(again.session.expires_at, lifetime_ends_at);
}

#[tokio::test]
async fn a_bad_ttl_is_refused_before_anything_is_touched() {
    let capture = Capture::install();
    let (repository, locker, usecase) = keep_alive_of_active().await;

    for ttl in [Duration::ZERO, Duration::from_secs(3601)] {
        let error = usecase.execute(KeepAliveCommand { chat_id: CHAT_ID, ttl: Some(ttl) }).await;
        assert_eq!(
            error,
            Err(KeepAliveError::InvalidTtl { ttl, max: Duration::from_secs(3600) }),
            "{ttl:?}"
        );
    }
    let message = KeepAliveError::InvalidTtl {
        ttl: Duration::from_secs(3601),
        max: Duration::from_secs(3600),
    }
    .to_string();
    assert!(message.contains("3601s") && message.contains("1 second to 3600s"), "{message}");
    assert!(locker.chat_ids().is_empty(), "the lock was not even taken");
    assert_eq!(stored(&repository, SESSION_ACTIVE_ID).await, active());
    assert_eq!(keepalives(&capture, "request", "error"), 2);
}

#[tokio::test]
async fn a_chat_without_a_sandbox_or_with_an_expired_one_is_not_kept_alive() {
    let capture = Capture::install();
    // Expired exactly now (the boundary counts as expired) and not cleaned up yet.
    let expired = expired_now();
    let repository = repository_with(&[&expired]).await;
    let usecase = keep_alive(repository.clone(), RecordingLocker::new(), at_now(), settings());

    for chat_id in [CHAT_ID, EXPIRED_CHAT_ID] {
        let error = usecase.execute(KeepAliveCommand::new(chat_id)).await.unwrap_err();
        assert_eq!(error, KeepAliveError::Access(AccessError::NoSandbox { chat_id }));
        assert!(error.to_string().contains("create one first"), "{error}");
    }
    assert_eq!(stored(&repository, SESSION_EXPIRED_ID).await, expired, "not revived");
    assert_eq!(keepalives(&capture, "request", "not_found"), 2);
    capture.find_span(
        "usecase.keep_alive",
        &[("chat.id", text(EXPIRED_CHAT_ID))],
        &[("error.type", text("no_sandbox")), ("sandbox.result", text("not_found"))],
    );
}

#[tokio::test]
async fn a_store_failure_is_returned_and_changes_nothing() {
    let _capture = Capture::install();
    let repository = ScriptedRepository::new();
    repository.save(&active()).await.unwrap();
    repository.fail_running_by_chat(StoreError::Unavailable("connection refused".into()));
    let usecase = keep_alive(repository.clone(), RecordingLocker::new(), at_now(), settings());
    let error = usecase.execute(KeepAliveCommand::new(CHAT_ID)).await.unwrap_err();
    assert!(
        matches!(error, KeepAliveError::Access(AccessError::Store(StoreError::Unavailable(_)))),
        "{error:?}"
    );
    assert_eq!(error.kind(), "store_unavailable");
    assert_eq!(repository.get(SESSION_ACTIVE_ID).await.unwrap(), Some(active()));
}

/// The cleanup takes its snapshot of expired sessions, then works through it one chat at a
/// time. A keep-alive that lands in between (here from a replica whose clock is a second
/// behind the cleanup's) must win: the cleanup re-reads the session under the chat's lock,
/// sees the new expiry and leaves the sandbox alone.
#[tokio::test]
async fn a_sandbox_kept_alive_after_the_cleanups_snapshot_is_not_removed() {
    let _capture = Capture::install();
    let due = running(SESSION_ACTIVE_ID, CHAT_ID, "container-active")
        .between(now() - minutes(5), now() + seconds(1));
    let repository = Arc::new(PausedSnapshot::default());
    repository.inner.save(&due).await.unwrap();
    let runtime = FakeRuntime::new();
    runtime.insert_container(
        due.container_id.clone(),
        ContainerState::Running,
        Some(due.session_id),
        due.created_at,
    );
    let locker: Arc<dyn LifecycleLocker> = Arc::new(ProcessLocalLocker::new());
    let cleanup_clock = Arc::new(ManualClock::new(now() + seconds(1)));
    let cleanup = CleanupExpiredSandboxes::new(
        repository.clone(),
        Arc::clone(&locker),
        Arc::new(runtime.clone()),
        cleanup_clock,
    );
    let usecase = keep_alive(repository.clone(), locker, at_now(), settings());

    let pass = tokio::spawn(async move { cleanup.execute().await });
    tokio::time::timeout(WAIT, repository.snapshot_taken.notified()).await.unwrap();
    let kept = usecase.execute(KeepAliveCommand::new(CHAT_ID)).await.unwrap();
    assert_eq!(kept.session.expires_at, now() + minutes(5));
    repository.release.notify_one();
    let report = tokio::time::timeout(WAIT, pass).await.unwrap().unwrap().unwrap();

    assert_eq!(report.expired, 1, "the snapshot saw it expired: {report:?}");
    assert_eq!(report.skipped, 1, "{report:?}");
    assert!(report.cleaned.is_empty(), "{report:?}");
    assert!(runtime.stop_calls().is_empty(), "the container was not stopped");
    assert_eq!(repository.inner.get(due.session_id).await.unwrap(), Some(kept.session));
}

// ---- sliding expiry ----

fn sliding_settings(ttl: Duration) -> KeepAliveSettings {
    KeepAliveSettings { default_ttl: ttl, ..settings() }
}

/// The way into the sandboxes of `repository` and `runtime` in sliding mode, with `ttl`.
fn sliding_access(
    repository: Arc<dyn SessionRepository>,
    runtime: &FakeRuntime,
    clock: Arc<ManualClock>,
    ttl: Duration,
) -> SandboxAccess {
    let keep_alive = keep_alive(
        Arc::clone(&repository),
        Arc::new(ProcessLocalLocker::new()),
        clock.clone(),
        sliding_settings(ttl),
    );
    sandbox_access(repository, runtime, clock, SandboxSlots::default())
        .with_sliding_expiry(keep_alive)
}

fn sliding_exec(
    repository: Arc<dyn SessionRepository>,
    runtime: &FakeRuntime,
    clock: Arc<ManualClock>,
    ttl: Duration,
) -> ExecInSandbox {
    ExecInSandbox::new(sliding_access(repository, runtime, clock, ttl), ExecSettings::default())
}

/// The [`active_sandbox`], the clock (at [`now`]) and the execs in it in sliding mode.
async fn sliding_exec_in_active_sandbox()
-> (Arc<InMemorySessionRepository>, FakeRuntime, Arc<ManualClock>, ExecInSandbox) {
    let (repository, runtime) = active_sandbox().await;
    let clock = at_now();
    let usecase = sliding_exec(repository.clone(), &runtime, clock.clone(), TTL);
    (repository, runtime, clock, usecase)
}

#[tokio::test]
async fn in_sliding_mode_an_exec_pushes_the_expiry_when_it_starts_and_when_it_ends() {
    let capture = Capture::install();
    let (repository, runtime, clock, usecase) = sliding_exec_in_active_sandbox().await;

    let in_flight = exec_in_flight(&usecase, &runtime, command(&["sleep", "1"])).await;
    assert_eq!(
        stored(&repository, SESSION_ACTIVE_ID).await.expires_at,
        now() + minutes(5),
        "pushed as the command started"
    );

    clock.advance(seconds(40));
    runtime.release_execs(1);
    in_flight.await.unwrap().unwrap();
    assert_eq!(
        stored(&repository, SESSION_ACTIVE_ID).await.expires_at,
        now() + seconds(40) + minutes(5),
        "pushed again as it ended"
    );
    assert_eq!(keepalives(&capture, "activity", "extended"), 2);
    assert!(logged(&capture).is_empty(), "pushes are not logged at info: {:?}", logged(&capture));
}

#[tokio::test]
async fn in_fixed_mode_an_exec_leaves_the_expiry_alone() {
    let _capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    let access = sandbox_access(repository.clone(), &runtime, at_now(), SandboxSlots::default());
    let usecase = ExecInSandbox::new(access, ExecSettings::default());
    usecase.execute(command(&["true"])).await.unwrap();
    assert_eq!(stored(&repository, SESSION_ACTIVE_ID).await, active());
}

/// A command that runs longer than the TTL is not removed under itself: while it runs, its
/// sandbox's expiry is pushed every third of the TTL, so the cleanup finds it alive.
#[tokio::test]
async fn in_sliding_mode_a_command_longer_than_the_ttl_keeps_its_sandbox_alive() {
    let _capture = Capture::install();
    let ttl = Duration::from_secs(3);
    let session = SandboxSession { expires_at: now() + seconds(3), ..active() };
    let repository = repository_with(&[&session]).await;
    let runtime = runtime_with(&[&active()]);
    let clock = at_now();
    let usecase = sliding_exec(repository.clone(), &runtime, clock.clone(), ttl);

    let in_flight = exec_in_flight(&usecase, &runtime, command(&["sleep", "600"])).await;
    // Two seconds of the sandbox's clock pass while the command runs; the heartbeat (every
    // second with a TTL of 3 s) pushes the expiry to 2 s + 3 s.
    clock.advance(seconds(2));
    let pushed = async {
        while stored(&repository, SESSION_ACTIVE_ID).await.expires_at != now() + seconds(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, pushed).await.expect("the heartbeat pushed the expiry");

    // The cleanup runs after the sandbox's first expiry (3 s) and finds it alive.
    let cleanup = CleanupExpiredSandboxes::new(
        repository.clone(),
        Arc::new(ProcessLocalLocker::new()),
        Arc::new(runtime.clone()),
        Arc::new(ManualClock::new(now() + seconds(4))),
    );
    let report = cleanup.execute().await.unwrap();
    assert_eq!(report.expired, 0, "{report:?}");
    assert!(runtime.stop_calls().is_empty());

    runtime.release_execs(1);
    let outcome = in_flight.await.unwrap().unwrap();
    assert_eq!(outcome.output.exit_code, Some(0));
}

#[tokio::test]
async fn in_sliding_mode_the_end_push_never_extends_the_sandbox_that_replaced_it() {
    let _capture = Capture::install();
    let (repository, runtime, clock, usecase) = sliding_exec_in_active_sandbox().await;

    let in_flight = exec_in_flight(&usecase, &runtime, command(&["sleep", "600"])).await;
    // The sandbox is deleted and the chat gets a new one while the command runs.
    repository.delete(SESSION_ACTIVE_ID).await.unwrap();
    runtime.set_state(&active().container_id, ContainerState::Missing);
    let replacement = running(SESSION_REPLACEMENT_ID, CHAT_ID, "container-replacement")
        .between(now(), now() + minutes(5));
    repository.save(&replacement).await.unwrap();

    clock.advance(minutes(1));
    runtime.release_execs(1);
    let error = in_flight.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), "sandbox_gone");
    assert_eq!(stored(&repository, SESSION_REPLACEMENT_ID).await, replacement, "untouched");
}

#[tokio::test]
async fn in_sliding_mode_file_transfers_push_the_expiry() {
    let _capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    let clock = at_now();
    let access = sliding_access(repository.clone(), &runtime, clock.clone(), TTL);
    let files = SandboxFiles::new(access, FileSettings::default());

    clock.advance(minutes(2));
    files.upload(CHAT_ID, "notes/a.txt", b"hello").await.unwrap();
    assert_eq!(stored(&repository, SESSION_ACTIVE_ID).await.expires_at, now() + minutes(7));
    clock.advance(minutes(2));
    let file = files.download(CHAT_ID, "notes/a.txt").await.unwrap();
    assert_eq!(file.bytes, b"hello");
    assert_eq!(stored(&repository, SESSION_ACTIVE_ID).await.expires_at, now() + minutes(9));

    // A refused request (a bad path) touches nothing.
    clock.advance(minutes(1));
    assert!(files.upload(CHAT_ID, "../escape", b"x").await.is_err());
    assert_eq!(stored(&repository, SESSION_ACTIVE_ID).await.expires_at, now() + minutes(9));
}

// ---- test doubles ----

/// The in-memory repository whose `list_expired` signals once it has read the snapshot and
/// then waits to be released, so that a test can act between the snapshot and the re-check.
#[derive(Debug, Default)]
struct PausedSnapshot {
    inner: InMemorySessionRepository,
    snapshot_taken: Notify,
    release: Notify,
}

#[async_trait]
impl sandkeeper_ports::testkit::DelegatingRepository for PausedSnapshot {
    fn inner(&self) -> &dyn SessionRepository {
        &self.inner
    }

    async fn list_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SandboxSession>, StoreError> {
        let snapshot = self.inner.list_expired(now, limit).await;
        self.snapshot_taken.notify_one();
        self.release.notified().await;
        snapshot
    }
}
