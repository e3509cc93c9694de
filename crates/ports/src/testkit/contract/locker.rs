//! The contract of [`LifecycleLocker`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sandkeeper_domain::ChatId;

use super::Subject;
use crate::LifecycleLocker;

super::contract_suite! {
    /// One `#[tokio::test]` per case of this suite: `(factory)` or `(factory, when = condition)`,
    /// as the [module](super) says.
    lifecycle_locker_contract for locker: [
        a_second_locker_of_a_chat_waits_until_the_first_releases,
        locks_of_different_chats_do_not_wait_for_each_other,
        a_cancelled_waiter_does_not_keep_the_lock,
        waiters_of_one_chat_hold_the_lock_one_at_a_time,
        a_lock_can_be_taken_again_and_again,
    ]
}

/// Long enough for anything that should happen to happen, on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a waiter is watched to see that it does not get the lock.
const WATCH: Duration = Duration::from_millis(300);

fn chat(n: u128) -> ChatId {
    ChatId::parse(&format!("{:032x}", 0x10c4_0000_0000_4000_8000_0000_0000_0000 | n)).unwrap()
}

pub async fn a_second_locker_of_a_chat_waits_until_the_first_releases(
    subject: &Subject<dyn LifecycleLocker>,
) {
    let locker = subject.port().clone();
    let first = locker.lock(chat(1)).await.unwrap();
    let second = tokio::spawn({
        let locker = locker.clone();
        async move { locker.lock(chat(1)).await.map(drop) }
    });
    tokio::time::sleep(WATCH).await;
    assert!(!second.is_finished(), "the second lock must wait for the first");
    drop(first);
    tokio::time::timeout(PATIENCE, second)
        .await
        .expect("the second lock is granted once the first is released")
        .unwrap()
        .unwrap();
}

pub async fn locks_of_different_chats_do_not_wait_for_each_other(
    subject: &Subject<dyn LifecycleLocker>,
) {
    let locker = subject.port();
    let _first = locker.lock(chat(1)).await.unwrap();
    let _second = tokio::time::timeout(PATIENCE, locker.lock(chat(2)))
        .await
        .expect("a lock on another chat must not wait")
        .unwrap();
    let _third = tokio::time::timeout(PATIENCE, locker.lock(chat(3)))
        .await
        .expect("a lock on a third chat must not wait")
        .unwrap();
}

pub async fn a_cancelled_waiter_does_not_keep_the_lock(subject: &Subject<dyn LifecycleLocker>) {
    let locker = subject.port();
    let held = locker.lock(chat(1)).await.unwrap();
    let abandoned = tokio::time::timeout(WATCH, locker.lock(chat(1))).await;
    assert!(abandoned.is_err(), "the waiter should have timed out");
    drop(held);
    // Had the abandoned waiter been granted the lock after giving up, nobody would get it.
    let again = tokio::time::timeout(PATIENCE, locker.lock(chat(1)))
        .await
        .expect("the lock is free after its holder released it and its waiter gave up")
        .unwrap();
    drop(again);
    let _and_again = tokio::time::timeout(PATIENCE, locker.lock(chat(1)))
        .await
        .expect("the lock is free once more")
        .unwrap();
}

pub async fn waiters_of_one_chat_hold_the_lock_one_at_a_time(
    subject: &Subject<dyn LifecycleLocker>,
) {
    let locker = subject.port().clone();
    let inside = Arc::new(AtomicUsize::new(0));
    let most_inside = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (locker, inside, most_inside, entered) =
                (locker.clone(), inside.clone(), most_inside.clone(), entered.clone());
            tokio::spawn(async move {
                let _guard = locker.lock(chat(1)).await.unwrap();
                let now_inside = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most_inside.fetch_max(now_inside, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                entered.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(PATIENCE, task).await.expect("every waiter gets its turn").unwrap();
    }
    assert_eq!(entered.load(Ordering::SeqCst), 6);
    assert_eq!(most_inside.load(Ordering::SeqCst), 1, "two holders of one chat's lock at once");
}

pub async fn a_lock_can_be_taken_again_and_again(subject: &Subject<dyn LifecycleLocker>) {
    let locker = subject.port();
    for round in 0..20 {
        let guard = tokio::time::timeout(PATIENCE, locker.lock(chat(1)))
            .await
            .unwrap_or_else(|_| panic!("round {round}: the released lock was not granted"))
            .unwrap();
        drop(guard);
    }
}
