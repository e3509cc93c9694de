//! The warm pool on fakes: a create claims a ready pooled container and still applies the chat's
//! own TTL, a miss creates as before, dead and refused claims never reach a chat, the refill
//! recycles and drains what must not be handed out, and the exit watcher and the sweep resolve
//! pooled and claimed containers through the store.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sandkeeper_domain::{ContainerId, SandboxStatus, SlotId};
use sandkeeper_ports::inprocess::{
    InMemoryLeases, InMemoryPoolStore, InMemorySessionRepository, ProcessLocalLocker,
};
use sandkeeper_ports::testkit::{FakeRuntime, ManualClock, RuntimeCall};
use sandkeeper_ports::{
    ContainerExit, ContainerState, Engines, PoolCounts, PoolStore, SandboxRuntime,
    SessionRepository, SlotState,
};
use sandkeeper_usecase::{
    CreateResult, CreateSandbox, CreateSandboxCommand, CreateSandboxError, ExitOutcome,
    MaintenanceSettings, MaintenanceSweep, PoolSettings, RecordContainerExit, SweepOutcome,
    WarmPool, WarmPools,
};
use support::*;

struct Pooled {
    repository: Arc<InMemorySessionRepository>,
    runtime: FakeRuntime,
    store: Arc<InMemoryPoolStore>,
    clock: Arc<ManualClock>,
    pool: WarmPool,
    /// The same pool, as the use cases hold it (the pools of a set of one engine).
    pools: WarmPools,
}

/// A warm pool of `size` containers in `store`, started on `runtime`.
fn warm_pool(
    store: &Arc<InMemoryPoolStore>,
    runtime: &FakeRuntime,
    repository: &Arc<InMemorySessionRepository>,
    clock: &Arc<ManualClock>,
    size: u64,
) -> WarmPool {
    let runtime = Arc::new(runtime.clone());
    WarmPool::new(
        store.clone(),
        runtime,
        repository.clone(),
        clock.clone(),
        PoolSettings::new(size),
    )
}

fn pooled(size: u64) -> Pooled {
    let repository = Arc::new(InMemorySessionRepository::new());
    let runtime = FakeRuntime::new();
    let store = Arc::new(InMemoryPoolStore::new());
    let clock = Arc::new(ManualClock::new(now()));
    let pool = warm_pool(&store, &runtime, &repository, &clock, size);
    let pools = WarmPools::new(
        &Engines::single(Arc::new(runtime.clone())),
        |_| store.clone() as Arc<dyn PoolStore>,
        repository.clone(),
        clock.clone(),
        PoolSettings::new(size),
    );
    Pooled { repository, runtime, store, clock, pool, pools }
}

impl Pooled {
    fn create(&self) -> CreateSandbox {
        CreateSandbox::new(
            self.repository.clone(),
            Arc::new(ProcessLocalLocker::new()),
            Arc::new(self.runtime.clone()),
            self.clock.clone(),
            TTL,
        )
        .with_pool(Some(self.pools.clone()))
    }

    async fn fill(&self) {
        while self.pool.refill().await.unwrap().started > 0 {}
    }

    async fn counts(&self) -> PoolCounts {
        self.store.counts(&self.runtime.pool_fingerprint()).await.unwrap()
    }

    async fn ready_containers(&self) -> Vec<ContainerId> {
        let slots = self.store.list().await.unwrap();
        slots
            .into_iter()
            .filter(|slot| slot.state == SlotState::Ready)
            .filter_map(|slot| slot.container_id)
            .collect()
    }
}

fn creates(runtime: &FakeRuntime) -> usize {
    runtime.calls().iter().filter(|call| matches!(call, RuntimeCall::Create(_))).count()
}

fn pooled_creates(runtime: &FakeRuntime) -> usize {
    runtime.calls().iter().filter(|call| matches!(call, RuntimeCall::CreatePooled(_))).count()
}

#[tokio::test]
async fn a_new_chat_claims_the_oldest_ready_container_and_keeps_its_own_ttl() {
    let p = pooled(2);
    p.fill().await;
    assert_eq!(p.counts().await, PoolCounts { starting: 0, ready: 2, claimed: 0 });
    let oldest = p.ready_containers().await[0].clone();

    let ttl = Duration::from_secs(600);
    let outcome = p
        .create()
        .execute(CreateSandboxCommand { chat_id: CHAT_ID, ttl: Some(ttl) })
        .await
        .unwrap();
    assert_eq!(outcome.result, CreateResult::Created);
    assert_eq!(outcome.session.container_id, oldest);
    assert_eq!(outcome.session.expires_at - outcome.session.created_at, seconds(600));
    assert_eq!(creates(&p.runtime), 0, "no container was made for the chat");
    let stored = p.repository.get_by_container(&oldest).await.unwrap().unwrap();
    assert_eq!((stored.chat_id, stored.status), (CHAT_ID, SandboxStatus::Running));
    // The place is freed once the session is saved; the refill makes a new one.
    assert_eq!(p.counts().await, PoolCounts { starting: 0, ready: 1, claimed: 0 });
    p.fill().await;
    assert_eq!(p.counts().await.ready, 2);
    assert_eq!(pooled_creates(&p.runtime), 3);
}

#[tokio::test]
async fn without_a_ready_container_a_create_makes_one_as_before() {
    for size in [0, 3] {
        let p = pooled(size); // never filled
        let outcome = p.create().execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();
        assert_eq!(outcome.result, CreateResult::Created);
        assert_eq!(outcome.session.container_id, container_of(outcome.session.session_id));
        assert_eq!(creates(&p.runtime), 1, "size {size}");
    }
}

#[tokio::test]
async fn a_dead_pooled_container_is_removed_and_the_next_one_handed_out() {
    let p = pooled(2);
    p.fill().await;
    let [dead, alive]: [ContainerId; 2] = p.ready_containers().await.try_into().unwrap();
    p.runtime.set_state(&dead, ContainerState::Exited);

    let outcome = p.create().execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();
    assert_eq!(outcome.session.container_id, alive);
    assert!(p.runtime.stop_calls().contains(&dead), "the dead one is removed");
    assert!(p.store.find_by_container(&dead).await.unwrap().is_none());
    assert_eq!(p.counts().await, PoolCounts::default());
}

#[tokio::test]
async fn a_create_refused_at_capacity_leaves_the_pool_alone() {
    let p = pooled(2);
    p.fill().await;
    p.repository.save(&active()).await.unwrap();
    let create = p.create().with_max_sandboxes(Some(1));
    let refused = create.execute(CreateSandboxCommand::new(FAIL_CHAT_ID)).await;
    assert_eq!(refused, Err(CreateSandboxError::CapacityReached { limit: 1 }));
    assert_eq!(p.counts().await.ready, 2, "pooled containers count apart from running ones");
}

#[tokio::test]
async fn the_refill_recycles_other_configurations_old_and_surplus_containers() {
    let p = pooled(2);
    p.fill().await;
    // A ready slot of another configuration, as an earlier process left it.
    let other = SlotId::new_v4();
    let other_container = ContainerId::new("pooled-other").unwrap();
    p.store.reserve(other, "older-config", 10, now()).await.unwrap();
    p.store.mark_ready(other, &other_container, now()).await.unwrap();
    p.runtime.insert_container(other_container.clone(), ContainerState::Running, None, now());

    let report = p.pool.refill().await.unwrap();
    assert_eq!((report.recycled, report.started), (1, 0));
    assert!(p.runtime.stop_calls().contains(&other_container));
    assert_eq!(p.store.list().await.unwrap().len(), 2);

    // Older than the maximum age: replaced by new ones.
    let before = p.ready_containers().await;
    p.clock.advance(chrono::TimeDelta::hours(2));
    p.fill().await;
    let after = p.ready_containers().await;
    assert_eq!(after.len(), 2);
    assert!(before.iter().all(|old| !after.contains(old) && p.runtime.stop_calls().contains(old)));

    // A lowered size drains the surplus, oldest first; size 0 drains all.
    let smaller = warm_pool(&p.store, &p.runtime, &p.repository, &p.clock, 1);
    assert_eq!(smaller.refill().await.unwrap().recycled, 1);
    assert_eq!(p.ready_containers().await, vec![after[1].clone()]);
    let off = warm_pool(&p.store, &p.runtime, &p.repository, &p.clock, 0);
    off.refill().await.unwrap();
    assert!(p.store.list().await.unwrap().is_empty());
    assert!(off.claim().await.is_none());
}

#[tokio::test]
async fn abandoned_places_are_freed_and_an_unsaved_claim_is_removed() {
    let p = pooled(1);
    // A start that never finished, and a claim whose create died before saving its session.
    let starting = SlotId::new_v4();
    p.store.reserve(starting, &p.runtime.pool_fingerprint(), 5, now()).await.unwrap();
    let claimed = SlotId::new_v4();
    let claimed_container = ContainerId::new("pooled-claimed").unwrap();
    p.store.reserve(claimed, &p.runtime.pool_fingerprint(), 5, now()).await.unwrap();
    p.store.mark_ready(claimed, &claimed_container, now()).await.unwrap();
    p.store.claim(&p.runtime.pool_fingerprint(), now()).await.unwrap().unwrap();
    p.runtime.insert_container(claimed_container.clone(), ContainerState::Running, None, now());

    // Not yet abandoned: left alone, and the starting place counts against the size.
    let report = p.pool.refill().await.unwrap();
    assert_eq!((report.abandoned, report.started), (0, 0));
    p.clock.advance(chrono::TimeDelta::seconds(31));
    let report = p.pool.refill().await.unwrap();
    assert_eq!(report.abandoned, 2);
    assert!(p.runtime.stop_calls().contains(&claimed_container));
    assert_eq!(report.started, 1);
}

#[tokio::test]
async fn the_exit_watcher_frees_a_dead_ready_place_and_crashes_a_claimed_chat() {
    let p = pooled(2);
    p.fill().await;
    let [first, second]: [ContainerId; 2] = p.ready_containers().await.try_into().unwrap();
    let record =
        RecordContainerExit::new(p.repository.clone(), Arc::new(ProcessLocalLocker::new()))
            .with_pool(Some(p.pools.clone()));

    // A claimed one: no session label, its chat found through the store.
    let outcome = p.create().execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();
    assert_eq!(outcome.session.container_id, first);
    p.runtime.exit(&first);
    let exit = ContainerExit { container_id: first.clone(), session_id: None };
    match record.execute(&exit).await.unwrap() {
        ExitOutcome::Crashed(session) => assert_eq!(session.chat_id, CHAT_ID),
        other => panic!("expected the chat's session crashed, got {other:?}"),
    }

    // A ready one: its place is freed and it is removed, never handed out.
    p.runtime.exit(&second);
    let exit = ContainerExit { container_id: second.clone(), session_id: None };
    assert!(matches!(record.execute(&exit).await.unwrap(), ExitOutcome::Ignored(_)));
    assert!(p.store.find_by_container(&second).await.unwrap().is_none());
    assert!(p.runtime.stop_calls().contains(&second));
}

#[tokio::test]
async fn the_sweep_keeps_pooled_and_claimed_containers_and_reaps_unrecorded_ones() {
    let p = pooled(2);
    p.fill().await;
    let ready = p.ready_containers().await;
    let outcome = p.create().execute(CreateSandboxCommand::new(CHAT_ID)).await.unwrap();
    let claimed = outcome.session.container_id;
    // A pool-labelled container whose place went (a crash between steps).
    let stray = ContainerId::new("pooled-stray").unwrap();
    p.runtime.insert_container(stray.clone(), ContainerState::Running, None, now());

    let mut settings = MaintenanceSettings::new("test");
    settings.orphan_grace = Duration::from_secs(60);
    let sweep = MaintenanceSweep::new(
        p.repository.clone(),
        Arc::new(p.runtime.clone()),
        Arc::new(InMemoryLeases::new(p.clock.clone())),
        p.clock.clone(),
        settings,
    )
    .with_pool(Some(p.pools.clone()));
    p.clock.advance(chrono::TimeDelta::minutes(5));
    let SweepOutcome::Completed(report) = sweep.run(true).await.unwrap() else {
        panic!("the sweep was skipped")
    };
    assert_eq!(report.orphans_removed, 1, "{report:?}");
    let left = p.runtime.container_ids();
    assert!(!left.contains(&stray));
    assert!(left.contains(&claimed) && left.contains(&ready[1]), "{left:?}");
}

#[tokio::test]
async fn an_expired_sandbox_is_replaced_by_a_pooled_container() {
    let p = pooled(1);
    p.fill().await;
    let ready = p.ready_containers().await;
    let expired = expired_now();
    p.repository.save(&expired).await.unwrap();
    p.runtime.insert_container(
        expired.container_id.clone(),
        ContainerState::Running,
        Some(expired.session_id),
        expired.created_at,
    );

    let outcome = p.create().execute(CreateSandboxCommand::new(EXPIRED_CHAT_ID)).await.unwrap();
    assert_eq!(outcome.result, CreateResult::Replaced);
    assert_eq!(outcome.session.container_id, ready[0]);
    assert!(p.runtime.stop_calls().contains(&expired.container_id), "the old one is removed");
    assert_eq!(creates(&p.runtime), 0);
}
