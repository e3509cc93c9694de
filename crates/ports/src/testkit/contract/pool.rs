//! The contract of [`PoolStore`](crate::PoolStore).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use sandkeeper_domain::{ContainerId, SlotId, Timestamp};

use super::Subject;
use crate::{PoolCounts, PoolStore, SlotState};

super::contract_suite! {
    /// One `#[tokio::test]` per case of this suite; see [`crate::session_repository_contract`].
    pool_store_contract for pool: [
        reserve_stops_at_the_target,
        concurrent_reservations_never_pass_the_target,
        a_reserved_slot_becomes_ready_with_its_container,
        mark_ready_refuses_a_slot_that_is_not_starting,
        a_claim_takes_the_oldest_ready_slot_of_the_fingerprint,
        concurrent_claims_never_share_a_slot,
        remove_deletes_only_in_the_given_state,
        a_slot_is_found_by_its_container,
    ]
}

const FP: &str = "config-a";

fn at(second: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap() + TimeDelta::seconds(second)
}

fn container(n: usize) -> ContainerId {
    ContainerId::new(format!("pooled-container-{n}")).unwrap()
}

/// Reserves and readies `n` slots of `fingerprint`, the first the oldest.
async fn ready_slots(pool: &dyn PoolStore, fingerprint: &str, n: usize) -> Vec<SlotId> {
    let mut slots = Vec::new();
    for k in 0..n {
        let slot = SlotId::new_v4();
        let second = i64::try_from(k).unwrap();
        assert!(pool.reserve(slot, fingerprint, 100, at(second)).await.unwrap());
        let id = ContainerId::new(format!("{fingerprint}-{k}")).unwrap();
        assert!(pool.mark_ready(slot, &id, at(second)).await.unwrap());
        slots.push(slot);
    }
    slots
}

pub async fn reserve_stops_at_the_target(subject: &Subject<dyn PoolStore>) {
    let pool = subject.port();
    for _ in 0..3 {
        assert!(pool.reserve(SlotId::new_v4(), FP, 3, at(0)).await.unwrap());
    }
    assert!(!pool.reserve(SlotId::new_v4(), FP, 3, at(0)).await.unwrap(), "a fourth of 3");
    // Another configuration has places of its own.
    assert!(pool.reserve(SlotId::new_v4(), "config-b", 3, at(0)).await.unwrap());
    // A claimed slot no longer counts against the target.
    let ready = ready_slots(pool.as_ref(), "config-c", 1).await;
    assert!(!pool.reserve(SlotId::new_v4(), "config-c", 1, at(1)).await.unwrap());
    let claimed = pool.claim("config-c", at(2)).await.unwrap().expect("a ready slot");
    assert_eq!(claimed.slot_id, ready[0]);
    assert!(pool.reserve(SlotId::new_v4(), "config-c", 1, at(3)).await.unwrap());
    assert_eq!(pool.counts(FP).await.unwrap(), PoolCounts { starting: 3, ready: 0, claimed: 0 });
}

pub async fn concurrent_reservations_never_pass_the_target(subject: &Subject<dyn PoolStore>) {
    let pool = Arc::clone(subject.port());
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.reserve(SlotId::new_v4(), FP, 4, at(0)).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 4, "exactly the target's worth of reservations win");
    assert_eq!(pool.counts(FP).await.unwrap().starting, 4);
}

pub async fn a_reserved_slot_becomes_ready_with_its_container(subject: &Subject<dyn PoolStore>) {
    let pool = subject.port();
    let slot = SlotId::new_v4();
    assert!(pool.reserve(slot, FP, 1, at(0)).await.unwrap());
    let listed = pool.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, SlotState::Starting);
    assert_eq!(listed[0].container_id, None);
    assert_eq!(listed[0].created_at, at(0));
    assert!(pool.mark_ready(slot, &container(1), at(5)).await.unwrap());
    let listed = pool.list().await.unwrap();
    assert_eq!(listed[0].state, SlotState::Ready);
    assert_eq!(listed[0].container_id, Some(container(1)));
    assert_eq!(listed[0].fingerprint, FP);
    assert_eq!((listed[0].created_at, listed[0].changed_at), (at(0), at(5)));
    assert_eq!(pool.counts(FP).await.unwrap(), PoolCounts { starting: 0, ready: 1, claimed: 0 });
}

pub async fn mark_ready_refuses_a_slot_that_is_not_starting(subject: &Subject<dyn PoolStore>) {
    let pool = subject.port();
    assert!(!pool.mark_ready(SlotId::new_v4(), &container(1), at(0)).await.unwrap(), "unknown");
    let slot = SlotId::new_v4();
    assert!(pool.reserve(slot, FP, 1, at(0)).await.unwrap());
    assert!(pool.remove(slot, SlotState::Starting).await.unwrap());
    assert!(!pool.mark_ready(slot, &container(1), at(1)).await.unwrap(), "removed meanwhile");
    let ready = ready_slots(pool.as_ref(), FP, 1).await;
    assert!(!pool.mark_ready(ready[0], &container(2), at(2)).await.unwrap(), "ready already");
    assert_eq!(
        pool.list().await.unwrap()[0].container_id,
        Some(ContainerId::new(format!("{FP}-0")).unwrap())
    );
}

pub async fn a_claim_takes_the_oldest_ready_slot_of_the_fingerprint(
    subject: &Subject<dyn PoolStore>,
) {
    let pool = subject.port();
    assert_eq!(pool.claim(FP, at(0)).await.unwrap(), None, "an empty pool");
    let other = ready_slots(pool.as_ref(), "config-b", 1).await;
    let starting = SlotId::new_v4();
    assert!(pool.reserve(starting, FP, 10, at(0)).await.unwrap());
    assert_eq!(pool.claim(FP, at(0)).await.unwrap(), None, "starting and other slots");
    let ready = ready_slots(pool.as_ref(), FP, 2).await;
    let first = pool.claim(FP, at(10)).await.unwrap().expect("a ready slot");
    assert_eq!(first.slot_id, ready[0]);
    assert_eq!(first.state, SlotState::Claimed);
    assert_eq!(first.changed_at, at(10));
    assert_eq!(first.container_id, Some(ContainerId::new(format!("{FP}-0")).unwrap()));
    let second = pool.claim(FP, at(11)).await.unwrap().expect("a second ready slot");
    assert_eq!(second.slot_id, ready[1]);
    assert_eq!(pool.claim(FP, at(12)).await.unwrap(), None);
    assert_eq!(pool.counts(FP).await.unwrap(), PoolCounts { starting: 1, ready: 0, claimed: 2 });
    assert_eq!(pool.counts("config-b").await.unwrap().ready, 1);
    assert_eq!(pool.claim("config-b", at(13)).await.unwrap().map(|s| s.slot_id), Some(other[0]));
}

pub async fn concurrent_claims_never_share_a_slot(subject: &Subject<dyn PoolStore>) {
    let pool = Arc::clone(subject.port());
    let ready: HashSet<SlotId> = ready_slots(pool.as_ref(), FP, 5).await.into_iter().collect();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.claim(FP, at(60)).await })
        })
        .collect();
    let mut claimed = Vec::new();
    for task in tasks {
        if let Some(slot) = task.await.unwrap().unwrap() {
            claimed.push(slot.slot_id);
        }
    }
    let distinct: HashSet<SlotId> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 5, "every ready slot is claimed once: {claimed:?}");
    assert_eq!(distinct, ready);
}

pub async fn remove_deletes_only_in_the_given_state(subject: &Subject<dyn PoolStore>) {
    let pool = subject.port();
    let ready = ready_slots(pool.as_ref(), FP, 1).await[0];
    assert!(!pool.remove(ready, SlotState::Starting).await.unwrap());
    assert!(!pool.remove(ready, SlotState::Claimed).await.unwrap());
    assert_eq!(pool.list().await.unwrap().len(), 1);
    let claimed = pool.claim(FP, at(1)).await.unwrap().unwrap();
    assert!(!pool.remove(claimed.slot_id, SlotState::Ready).await.unwrap(), "claimed meanwhile");
    assert!(pool.remove(claimed.slot_id, SlotState::Claimed).await.unwrap());
    assert!(!pool.remove(claimed.slot_id, SlotState::Claimed).await.unwrap(), "gone");
    assert!(pool.list().await.unwrap().is_empty());
}

pub async fn a_slot_is_found_by_its_container(subject: &Subject<dyn PoolStore>) {
    let pool = subject.port();
    let slots = ready_slots(pool.as_ref(), FP, 2).await;
    let id = ContainerId::new(format!("{FP}-1")).unwrap();
    let found = pool.find_by_container(&id).await.unwrap().expect("its slot");
    assert_eq!(found.slot_id, slots[1]);
    assert_eq!(found.state, SlotState::Ready);
    assert_eq!(pool.find_by_container(&container(99)).await.unwrap(), None);
    let listed: Vec<SlotId> = pool.list().await.unwrap().iter().map(|s| s.slot_id).collect();
    assert_eq!(listed, slots, "oldest first");
}
