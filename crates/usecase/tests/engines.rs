//! A deployment of two engines: placement, an engine that stops answering, and the sweep
//! engine by engine.

mod support;

use std::sync::Arc;

use sandkeeper_domain::{ChatId, EngineName, SandboxSession, SandboxStatus};
use sandkeeper_ports::inprocess::{InMemoryLeases, InMemorySessionRepository, ProcessLocalLocker};
use sandkeeper_ports::testkit::{FakeRuntime, ManualClock};
use sandkeeper_ports::{Engine, EngineSpec, Engines, RuntimeError, SessionRepository};
use sandkeeper_usecase::{
    AccessError, CreateResult, CreateSandbox, CreateSandboxCommand, CreateSandboxError,
    DeleteSandbox, MaintenanceSettings, MaintenanceSweep, Operation, SandboxAccess, SandboxSlots,
    SweepOutcome,
};
use support::*;

fn name(value: &str) -> EngineName {
    EngineName::parse(value).unwrap()
}

struct Deployment {
    repository: Arc<InMemorySessionRepository>,
    clock: Arc<ManualClock>,
    engines: Engines,
    create: CreateSandbox,
}

/// A deployment of engines `a` and `b`, each a fake runtime of its own with the given bound,
/// and those runtimes.
fn deployment(max_a: Option<u64>, max_b: Option<u64>) -> (Deployment, FakeRuntime, FakeRuntime) {
    let (a, b) = (FakeRuntime::new(), FakeRuntime::new());
    let spec = |n: &str, runtime: &FakeRuntime, max| EngineSpec {
        name: name(n),
        runtime: Arc::new(runtime.clone()),
        max,
        runtime_name: None,
    };
    let engines = Engines::new(vec![spec("a", &a, max_a), spec("b", &b, max_b)]);
    let repository = Arc::new(InMemorySessionRepository::new());
    let clock = at_now();
    let locker = Arc::new(ProcessLocalLocker::new());
    let create =
        CreateSandbox::new(repository.clone(), locker, engines.clone(), clock.clone(), TTL);
    (Deployment { repository, clock, engines, create }, a, b)
}

/// A deployment of unbounded engines whose `a` does not answer creates, and the sandbox of the
/// first create, which went on to `b`.
async fn first_create_while_a_does_not_answer()
-> (Deployment, FakeRuntime, FakeRuntime, SandboxSession) {
    let (deployment, a, b) = deployment(None, None);
    a.fail_create(RuntimeError::Unavailable("connection refused".into()));
    let first = deployment.create(chat_n(1)).await.unwrap();
    assert_eq!(first.engine, name("b"), "the create went on to the engine that answers");
    (deployment, a, b, first)
}

fn chat_n(n: u128) -> ChatId {
    ChatId::from_uuid(uuid::Uuid::from_u128(0xc000 + n))
}

impl Deployment {
    async fn create(&self, chat: ChatId) -> Result<SandboxSession, CreateSandboxError> {
        self.create.execute(CreateSandboxCommand::new(chat)).await.map(|outcome| outcome.session)
    }

    fn engine(&self, engine: &str) -> &Engine {
        self.engines.get(&name(engine)).unwrap()
    }

    fn delete(&self) -> DeleteSandbox {
        let locker = Arc::new(ProcessLocalLocker::new());
        DeleteSandbox::new(self.repository.clone(), locker, self.engines.clone())
    }

    fn sweep(&self, grace_seconds: u64) -> MaintenanceSweep {
        let mut settings = MaintenanceSettings::new("instance-a:1");
        settings.engine_loss_grace = std::time::Duration::from_secs(grace_seconds);
        MaintenanceSweep::new(
            self.repository.clone(),
            self.engines.clone(),
            Arc::new(InMemoryLeases::new(self.clock.clone())),
            self.clock.clone(),
            settings,
        )
    }
}

#[tokio::test]
async fn new_sandboxes_spread_over_both_engines_and_each_row_names_its_engine() {
    let (deployment, a, b) = deployment(None, None);
    let mut placed = Vec::new();
    for n in 0..4 {
        placed.push(deployment.create(chat_n(n)).await.unwrap().engine.to_string());
    }
    assert_eq!(placed, ["a", "b", "a", "b"], "the engine running fewer comes first");
    assert_eq!((a.create_calls().len(), b.create_calls().len()), (2, 2));
    let counts = deployment.repository.count_running_by_engine().await.unwrap();
    assert_eq!(counts, vec![(name("a"), 2), (name("b"), 2)]);
}

#[tokio::test]
async fn max_bounds_each_engine_and_a_full_deployment_is_capacity_reached_before_any_create() {
    let (deployment, a, b) = deployment(Some(1), Some(2));
    let mut placed = Vec::new();
    for n in 0..3 {
        placed.push(deployment.create(chat_n(n)).await.unwrap().engine.to_string());
    }
    assert_eq!(placed, ["b", "a", "b"], "the most free room first");
    let refused = deployment.create(chat_n(9)).await.unwrap_err();
    assert_eq!(refused, CreateSandboxError::CapacityReached { limit: 3 });
    assert_eq!(refused.kind(), "capacity_reached");
    assert_eq!((a.create_calls().len(), b.create_calls().len()), (1, 2));
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_marked_down_and_creates_go_to_the_other_at_once() {
    let (deployment, a, b, _first) = first_create_while_a_does_not_answer().await;
    assert!(!deployment.engine("a").is_up());
    let second = deployment.create(chat_n(2)).await.unwrap();
    assert_eq!(second.engine, name("b"));
    assert_eq!(a.create_calls().len(), 1, "a down engine is not tried again");
    assert_eq!(b.create_calls().len(), 2);

    deployment.engine("b").mark_down(now());
    let error = deployment.create(chat_n(3)).await.unwrap_err();
    assert_eq!(error.kind(), "runtime_unavailable", "{error}");
}

#[tokio::test]
async fn a_lost_engines_sandboxes_are_kept_for_the_grace_then_crashed_and_come_back_on_the_other() {
    let (deployment, a, b) = deployment(None, None);
    let lost = deployment.create(chat_n(1)).await.unwrap();
    assert_eq!(lost.engine, name("a"));
    let engine_a = deployment.engine("a");
    engine_a.mark_down(now());

    // Inside the sandbox: unavailable at once, without a call to the engine.
    let access = SandboxAccess::new(
        deployment.repository.clone(),
        deployment.engines.clone(),
        deployment.clock.clone(),
        SandboxSlots::new(4),
    );
    let refused = access.enter(lost.chat_id, Operation::Exec).await.unwrap_err();
    assert!(matches!(refused, AccessError::Runtime(RuntimeError::Unavailable(_))), "{refused}");
    assert!(refused.to_string().contains("unavailable"), "{refused}");

    let sweep = deployment.sweep(60);
    deployment.clock.advance(seconds(59));
    assert!(matches!(sweep.run(true).await.unwrap(), SweepOutcome::Completed(_)));
    let kept = deployment.repository.get(lost.session_id).await.unwrap().unwrap();
    assert_eq!(kept.status, SandboxStatus::Running, "within the grace the row is kept");

    deployment.clock.advance(seconds(1));
    let SweepOutcome::Completed(report) = sweep.run(true).await.unwrap() else { panic!() };
    assert_eq!(report.reconciled, 1);
    let crashed = deployment.repository.get(lost.session_id).await.unwrap().unwrap();
    assert_eq!(crashed.status, SandboxStatus::Crashed);

    // The chat's next get-or-create lands on the other engine.
    let outcome = deployment.create.execute(CreateSandboxCommand::new(lost.chat_id)).await.unwrap();
    assert_eq!((outcome.result, outcome.session.engine.as_str()), (CreateResult::Created, "b"));
    assert_eq!(b.create_calls().len(), 1);

    // While the engine is down its crashed row waits; once it answers, the container goes.
    let SweepOutcome::Completed(report) = sweep.run(true).await.unwrap() else { panic!() };
    assert_eq!((report.removed, report.errors), (0, 0));
    assert!(a.stop_calls().is_empty());
    engine_a.mark_up();
    let SweepOutcome::Completed(report) = sweep.run(true).await.unwrap() else { panic!() };
    assert_eq!(report.removed, 1);
    assert_eq!(a.stop_calls(), vec![lost.container_id.clone()]);
    assert_eq!(deployment.repository.get(lost.session_id).await.unwrap(), None);
}

#[tokio::test]
async fn deleting_a_sandbox_of_a_down_engine_does_not_wait_on_it_and_its_container_is_reaped_later()
{
    let (deployment, a, _b) = deployment(None, None);
    let session = deployment.create(chat_n(1)).await.unwrap();
    deployment.engine("a").mark_down(now());
    let delete = deployment.delete();
    assert_eq!(delete.execute(session.chat_id).await.unwrap(), Some(session.clone()));
    assert!(a.stop_calls().is_empty());
    assert_eq!(deployment.repository.get(session.session_id).await.unwrap(), None);

    // Back up: the container, now without a row, is an orphan of engine a.
    deployment.engine("a").mark_up();
    deployment.clock.advance(minutes(2));
    let SweepOutcome::Completed(report) = deployment.sweep(60).run(true).await.unwrap() else {
        panic!()
    };
    assert_eq!(report.orphans_removed, 1);
    assert_eq!(a.stop_calls(), vec![session.container_id]);
}

#[tokio::test]
async fn a_row_of_an_engine_this_replica_was_not_given_is_a_clear_error() {
    let (deployment, _a, _b) = deployment(None, None);
    let mut session = deployment.create(chat_n(1)).await.unwrap();
    session.engine = name("elsewhere");
    deployment.repository.save(&session).await.unwrap();
    let delete = deployment.delete();
    let error = delete.execute(session.chat_id).await.unwrap_err().to_string();
    assert!(
        error.contains("engine `elsewhere` is not one of this replica's engines (a, b)"),
        "{error}"
    );
    assert!(error.contains("every replica must be given the same --engine set"), "{error}");
    assert!(deployment.repository.get(session.session_id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_container_left_by_a_create_that_moved_to_the_other_engine_is_an_orphan() {
    // The create's container was made on `a`, which then stopped answering before it started;
    // the create went on to `b` with the same session.
    let (deployment, a, b, session) = first_create_while_a_does_not_answer().await;
    let left = sandkeeper_domain::ContainerId::new("left-on-a").unwrap();
    a.insert_container(
        left.clone(),
        sandkeeper_ports::ContainerState::Exited,
        Some(session.session_id),
        now(),
    );
    deployment.engine("a").mark_up();
    deployment.clock.advance(minutes(2));

    let SweepOutcome::Completed(report) = deployment.sweep(60).run(true).await.unwrap() else {
        panic!()
    };
    assert_eq!(report.orphans_removed, 1);
    assert_eq!(a.stop_calls(), vec![left]);
    assert!(b.stop_calls().is_empty(), "the session's own container stays");
    let kept = deployment.repository.get(session.session_id).await.unwrap().unwrap();
    assert_eq!(kept.status, SandboxStatus::Running);
}
