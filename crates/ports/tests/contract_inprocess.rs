//! The contract suites against the in-process implementations.
//! Run with `cargo test -p sandkeeper-ports --features testkit`.
#![cfg(feature = "testkit")]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use sandkeeper_ports::inprocess::{
    InMemoryLeases, InMemoryPoolStore, InMemorySessionRepository, InMemoryWorkspaceStore,
    ProcessLocalLocker,
};
use sandkeeper_ports::testkit::ManualClock;
use sandkeeper_ports::testkit::contract::{LeaseAging, LeaseSubject, Subject};
use sandkeeper_ports::{
    LifecycleLocker, MaintenanceLeases, PoolStore, SessionRepository, WorkspaceStore,
};

/// In memory, a lease ages when the clock that judges it moves forward.
struct AdvanceClock(Arc<ManualClock>);

#[async_trait]
impl LeaseAging for AdvanceClock {
    async fn age(&self, _name: &str, by: Duration) {
        self.0.advance(chrono::TimeDelta::from_std(by).unwrap());
    }
}

async fn repository() -> Subject<dyn SessionRepository> {
    Subject::new(Arc::new(InMemorySessionRepository::new()))
}

async fn leases() -> LeaseSubject {
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap()));
    let leases: Arc<dyn MaintenanceLeases> = Arc::new(InMemoryLeases::new(clock.clone()));
    LeaseSubject::new(Subject::new(leases), Arc::new(AdvanceClock(clock)))
}

async fn locker() -> Subject<dyn LifecycleLocker> {
    Subject::new(Arc::new(ProcessLocalLocker::new()))
}

mod in_memory_repository {
    sandkeeper_ports::session_repository_contract!(super::repository);
}

mod in_memory_leases {
    sandkeeper_ports::maintenance_leases_contract!(super::leases);
}

mod process_local_locker {
    sandkeeper_ports::lifecycle_locker_contract!(super::locker);
}

async fn workspaces() -> Subject<dyn WorkspaceStore> {
    Subject::new(Arc::new(InMemoryWorkspaceStore::new()))
}

mod in_memory_workspaces {
    sandkeeper_ports::workspace_store_contract!(super::workspaces);
}

async fn pool() -> Subject<dyn PoolStore> {
    Subject::new(Arc::new(InMemoryPoolStore::new()))
}

mod in_memory_pool {
    sandkeeper_ports::pool_store_contract!(super::pool);
}
