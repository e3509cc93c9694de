//! SandboxAccess, the one way into a running sandbox: which session is entered, the slot held
//! while inside, keeping the sandbox alive while work runs, and the errors every use case
//! inside a sandbox shares.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sandkeeper_adapters_observability::capture::Capture;
use sandkeeper_ports::inprocess::{InMemorySessionRepository, ProcessLocalLocker};
use sandkeeper_ports::testkit::{FakeRuntime, ManualClock};
use sandkeeper_ports::{SessionRepository, StoreError};
use sandkeeper_usecase::{
    AccessError, KeepAlive, KeepAliveSettings, Operation, SandboxAccess, SandboxSlots,
};
use support::*;

// Every test captures telemetry from its first line (see exec.rs for why).

/// The way into [`active`]'s sandbox, with `per_sandbox` slots.
async fn setup(per_sandbox: usize) -> (Arc<InMemorySessionRepository>, SandboxAccess) {
    let repository = repository_with(&[&active(), &expired_now()]).await;
    let runtime = runtime_with(&[&active()]);
    let slots = SandboxSlots::new(per_sandbox);
    (repository.clone(), sandbox_access(repository, &runtime, at_now(), slots))
}

/// The sliding expiry's keep-alive, with a TTL of [`TTL`].
fn keep_alive(repository: Arc<dyn SessionRepository>, clock: Arc<ManualClock>) -> KeepAlive {
    let settings = KeepAliveSettings {
        default_ttl: TTL,
        max_ttl: Duration::from_secs(3600),
        max_lifetime: Duration::from_secs(24 * 3600),
    };
    KeepAlive::new(repository, Arc::new(ProcessLocalLocker::new()), clock, settings)
}

async fn expires_at(repository: &InMemorySessionRepository) -> sandkeeper_domain::Timestamp {
    repository.get(SESSION_ACTIVE_ID).await.unwrap().unwrap().expires_at
}

#[tokio::test]
async fn entering_finds_the_chats_live_session_and_holds_a_slot_until_dropped() {
    let _capture = Capture::install();
    let (_, access) = setup(1).await;

    let entered = access.enter(CHAT_ID, Operation::Exec).await.unwrap();
    assert_eq!(entered.session(), &active());
    assert_eq!(access.slots().busy_sandboxes(), 1);
    assert_eq!(
        access.enter(CHAT_ID, Operation::Upload).await.unwrap_err(),
        AccessError::Busy { chat_id: CHAT_ID, limit: 1 },
        "one slot, and any operation takes it"
    );

    assert_eq!(entered.into_session(), active(), "the session outlives the slot");
    assert_eq!(access.slots().busy_sandboxes(), 0);
    let again = access.enter(CHAT_ID, Operation::Download).await.expect("the slot is free");
    drop(again);
    assert_eq!(access.slots().busy_sandboxes(), 0, "dropping gives the slot back");
}

#[tokio::test]
async fn a_chat_without_a_sandbox_or_with_an_expired_one_is_not_entered() {
    let _capture = Capture::install();
    let (_, access) = setup(1).await;
    for chat_id in [CLEAN_CHAT_ID, EXPIRED_CHAT_ID] {
        let error = access.enter(chat_id, Operation::Exec).await.unwrap_err();
        assert_eq!(error, AccessError::NoSandbox { chat_id });
        assert_eq!(error.kind(), "no_sandbox");
        assert!(error.to_string().contains("create one first"), "{error}");
    }
    assert_eq!(access.slots().busy_sandboxes(), 0, "no slot was taken");
}

#[tokio::test]
async fn a_store_that_cannot_be_read_is_a_store_error() {
    let _capture = Capture::install();
    let repository = Arc::new(ScriptedRepository::default());
    repository.fail_running_by_chat(StoreError::Unavailable("connection refused".into()));
    let access = sandbox_access(repository, &FakeRuntime::new(), at_now(), SandboxSlots::default());
    let error = access.enter(CHAT_ID, Operation::Exec).await.unwrap_err();
    assert_eq!(error, AccessError::Store(StoreError::Unavailable("connection refused".into())));
    assert_eq!(error.kind(), "store_unavailable");
}

#[tokio::test]
async fn a_sandbox_that_went_away_names_the_session_and_what_was_running() {
    let _capture = Capture::install();
    let (_, access) = setup(2).await;
    for (operation, what) in [
        (Operation::Exec, "before the command finished"),
        (Operation::Upload, "before the transfer finished"),
        (Operation::Download, "before the transfer finished"),
    ] {
        let error = access.enter(CHAT_ID, operation).await.unwrap().gone();
        assert_eq!(
            error,
            AccessError::SandboxGone { chat_id: CHAT_ID, session_id: SESSION_ACTIVE_ID, operation }
        );
        assert_eq!(error.kind(), "sandbox_gone");
        assert!(error.to_string().contains(what), "{error}");
        assert!(error.to_string().contains("get-or-create a sandbox and retry"), "{error}");
    }
}

#[tokio::test]
async fn in_fixed_mode_work_and_use_leave_the_expiry_alone() {
    let _capture = Capture::install();
    let (repository, access) = setup(1).await;
    let entered = access.enter(CHAT_ID, Operation::Exec).await.unwrap();
    assert_eq!(entered.run(async { 7 }).await, 7);
    entered.record_use().await;
    assert_eq!(expires_at(&repository).await, active().expires_at);
}

#[tokio::test]
async fn in_sliding_mode_work_and_each_recorded_use_push_the_expiry() {
    let _capture = Capture::install();
    let repository = repository_with(&[&active()]).await;
    let clock = at_now();
    let keep_alive = keep_alive(repository.clone(), clock.clone());
    let access = sandbox_access(
        repository.clone(),
        &FakeRuntime::new(),
        clock.clone(),
        SandboxSlots::new(1),
    )
    .with_sliding_expiry(keep_alive);

    let entered = access.enter(CHAT_ID, Operation::Exec).await.unwrap();
    assert_eq!(expires_at(&repository).await, active().expires_at, "entering alone is no use");
    clock.advance(minutes(1));
    entered.run(async {}).await;
    assert_eq!(expires_at(&repository).await, now() + minutes(1) + minutes(5));
    clock.advance(minutes(1));
    entered.record_use().await;
    assert_eq!(expires_at(&repository).await, now() + minutes(2) + minutes(5));
}

#[tokio::test]
async fn clones_share_the_slots() {
    let _capture = Capture::install();
    let (repository, access) = setup(1).await;
    let other = access.clone().with_sliding_expiry(keep_alive(repository, at_now()));
    let _entered = access.enter(CHAT_ID, Operation::Exec).await.unwrap();
    assert_eq!(
        other.enter(CHAT_ID, Operation::Upload).await.unwrap_err(),
        AccessError::Busy { chat_id: CHAT_ID, limit: 1 }
    );
}
