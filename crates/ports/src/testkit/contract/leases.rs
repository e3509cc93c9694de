//! The contract of [`MaintenanceLeases`](crate::MaintenanceLeases).

use std::sync::Arc;
use std::time::Duration;

use super::LeaseSubject;
use crate::{LeaseRequest, MaintenanceLeases};

super::contract_suite! {
    /// One `#[tokio::test]` per case of this suite: `(factory)` or `(factory, when = condition)`,
    /// as the [module](super) says.
    maintenance_leases_contract for leases: [
        the_first_acquire_of_a_new_lease_wins,
        lease_is_read_gated_while_held,
        lease_is_held_until_it_expires_and_reacquirable_once_stale,
        lease_is_read_gated_after_a_recent_completion,
        lease_is_acquirable_once_the_last_completion_is_older_than_min_interval,
        zero_min_interval_allows_reacquiring_right_after_completion,
        release_frees_the_lease_without_recording_completion,
        only_the_holder_can_complete_or_release,
        a_holder_whose_lease_was_taken_over_cannot_complete_it,
        leases_with_different_names_are_independent,
        very_long_durations_are_accepted,
        concurrent_acquires_have_exactly_one_winner,
        renewing_keeps_the_lease_for_its_live_holder_only,
        an_expired_holder_cannot_renew_even_if_nobody_took_the_lease,
        state_outlives_its_holders_and_only_the_holder_writes_it,
    ]
}

const NAME: &str = "sandbox_lifecycle_maintenance";
const DURATION: Duration = Duration::from_secs(60);
const MIN_INTERVAL: Duration = Duration::from_secs(30);

fn request<'a>(name: &'a str, holder: &'a str) -> LeaseRequest<'a> {
    LeaseRequest { name, holder, duration: DURATION, min_interval: MIN_INTERVAL }
}

/// Whether `holder` wins the lease `NAME`, asking for the suite's duration and minimum interval.
async fn acquire(leases: &Arc<dyn MaintenanceLeases>, holder: &str) -> bool {
    leases.try_acquire(&request(NAME, holder)).await.unwrap()
}

/// Whether `holder` wins the lease `NAME` asking for no minimum interval: only a lease that
/// someone holds refuses it.
async fn acquire_eagerly(leases: &Arc<dyn MaintenanceLeases>, holder: &str) -> bool {
    let eager = LeaseRequest { min_interval: Duration::ZERO, ..request(NAME, holder) };
    leases.try_acquire(&eager).await.unwrap()
}

pub async fn the_first_acquire_of_a_new_lease_wins(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(acquire(leases, "replica-a").await);
}

pub async fn lease_is_read_gated_while_held(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(acquire(leases, "replica-a").await);
    assert!(!acquire(leases, "replica-b").await);
    assert!(!acquire(leases, "replica-a").await, "not even the holder wins a held lease twice");
    assert!(
        !acquire_eagerly(leases, "replica-b").await,
        "min_interval does not shorten a held lease"
    );
}

pub async fn lease_is_held_until_it_expires_and_reacquirable_once_stale(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(acquire(leases, "replica-a").await);
    subject.aging.age(NAME, DURATION - Duration::from_secs(5)).await;
    assert!(!acquire(leases, "replica-b").await, "still held");
    // The holder died without completing or releasing: once stale, another one takes over.
    subject.aging.age(NAME, Duration::from_secs(6)).await;
    assert!(acquire(leases, "replica-b").await, "stale lease");
    assert!(!acquire(leases, "replica-c").await, "b holds it now");
}

pub async fn lease_is_read_gated_after_a_recent_completion(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(acquire(leases, "replica-a").await);
    leases.complete(NAME, "replica-a").await.unwrap();
    assert!(!acquire(leases, "replica-b").await);
    assert!(!acquire(leases, "replica-a").await);
    subject.aging.age(NAME, MIN_INTERVAL - Duration::from_secs(5)).await;
    assert!(!acquire(leases, "replica-b").await, "still recent");
}

pub async fn lease_is_acquirable_once_the_last_completion_is_older_than_min_interval(
    subject: &LeaseSubject,
) {
    let leases = subject.leases.port();
    assert!(acquire(leases, "replica-a").await);
    leases.complete(NAME, "replica-a").await.unwrap();
    subject.aging.age(NAME, MIN_INTERVAL + Duration::from_secs(1)).await;
    assert!(acquire(leases, "replica-b").await);
}

pub async fn zero_min_interval_allows_reacquiring_right_after_completion(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(acquire_eagerly(leases, "replica-a").await);
    leases.complete(NAME, "replica-a").await.unwrap();
    assert!(acquire_eagerly(leases, "replica-b").await);
    assert!(!acquire_eagerly(leases, "replica-a").await, "b holds it");
}

pub async fn release_frees_the_lease_without_recording_completion(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(acquire(leases, "replica-a").await);
    leases.release(NAME, "replica-a").await.unwrap();
    // Released after a failed run: free at once, even with a minimum interval.
    assert!(acquire(leases, "replica-b").await);
}

pub async fn only_the_holder_can_complete_or_release(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(acquire(leases, "replica-a").await);
    leases.complete(NAME, "replica-b").await.unwrap();
    leases.release(NAME, "replica-b").await.unwrap();
    assert!(
        !acquire_eagerly(leases, "replica-c").await,
        "a stranger's complete or release must not free the lease"
    );
    leases.complete(NAME, "replica-a").await.unwrap();
    assert!(!acquire(leases, "replica-c").await, "the holder's completion is recorded");
    assert!(acquire_eagerly(leases, "replica-c").await);
}

pub async fn a_holder_whose_lease_was_taken_over_cannot_complete_it(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(acquire(leases, "replica-a").await);
    subject.aging.age(NAME, DURATION + Duration::from_secs(1)).await;
    assert!(acquire(leases, "replica-b").await);
    leases.complete(NAME, "replica-a").await.unwrap();
    leases.release(NAME, "replica-a").await.unwrap();
    assert!(!acquire_eagerly(leases, "replica-c").await, "b still holds the lease");
    leases.complete(NAME, "replica-b").await.unwrap();
    assert!(acquire_eagerly(leases, "replica-c").await);
}

pub async fn very_long_durations_are_accepted(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    let forever = LeaseRequest {
        name: NAME,
        holder: "replica-a",
        duration: Duration::MAX,
        min_interval: Duration::MAX,
    };
    assert!(leases.try_acquire(&forever).await.unwrap());
    assert!(
        !leases
            .try_acquire(&LeaseRequest { holder: "replica-b", ..forever.clone() })
            .await
            .unwrap()
    );
    leases.complete(NAME, "replica-a").await.unwrap();
    assert!(!leases.try_acquire(&LeaseRequest { holder: "replica-b", ..forever }).await.unwrap());
}

pub async fn leases_with_different_names_are_independent(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(leases.try_acquire(&request("sweep", "replica-a")).await.unwrap());
    assert!(leases.try_acquire(&request("compaction", "replica-b")).await.unwrap());
    leases.complete("sweep", "replica-a").await.unwrap();
    assert!(!leases.try_acquire(&request("compaction", "replica-c")).await.unwrap());
}

pub async fn concurrent_acquires_have_exactly_one_winner(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    let holders: Vec<String> = (0..8).map(|n| format!("replica-{n}")).collect();
    for round in 0..5 {
        // A new lease (everyone races to insert the row too), then the same lease once stale.
        let name = format!("lease-{round}");
        for phase in ["new", "stale"] {
            let attempts = holders.iter().map(|holder| {
                let leases = leases.clone();
                let name = name.clone();
                let holder = holder.clone();
                async move { leases.try_acquire(&request(&name, &holder)).await }
            });
            let won = futures_join_all(attempts).await;
            let winners = won.iter().filter(|r| matches!(r, Ok(true))).count();
            assert!(won.iter().all(Result::is_ok), "round {round} ({phase}): {won:?}");
            assert_eq!(winners, 1, "round {round} ({phase}): exactly one winner");
            subject.aging.age(&name, DURATION + Duration::from_secs(1)).await;
        }
    }
}

pub async fn renewing_keeps_the_lease_for_its_live_holder_only(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(acquire(leases, "replica-a").await);
    subject.aging.age(NAME, DURATION - Duration::from_secs(10)).await;
    assert!(!leases.renew(NAME, "replica-b", DURATION).await.unwrap(), "b does not hold it");
    assert!(leases.renew(NAME, "replica-a", DURATION).await.unwrap());
    // Without the renewal, 20 s more would have let b in.
    subject.aging.age(NAME, Duration::from_secs(20)).await;
    assert!(!acquire(leases, "replica-b").await, "renewed");
    assert!(leases.renew(NAME, "replica-a", DURATION).await.unwrap(), "renewed again");
}

pub async fn an_expired_holder_cannot_renew_even_if_nobody_took_the_lease(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert!(acquire(leases, "replica-a").await);
    subject.aging.age(NAME, DURATION + Duration::from_secs(1)).await;
    assert!(!leases.renew(NAME, "replica-a", DURATION).await.unwrap(), "expired: lost");
    assert!(acquire(leases, "replica-b").await, "free for others");
    assert!(!leases.renew(NAME, "replica-a", DURATION).await.unwrap(), "b holds it");
    assert!(leases.renew(NAME, "replica-b", DURATION).await.unwrap());
}

pub async fn state_outlives_its_holders_and_only_the_holder_writes_it(subject: &LeaseSubject) {
    let leases = subject.leases.port();
    assert_eq!(leases.load_state(NAME).await.unwrap(), None, "nothing saved yet");
    assert!(!leases.save_state(NAME, "replica-a", "early").await.unwrap(), "not held");
    assert!(acquire(leases, "replica-a").await);
    assert!(leases.save_state(NAME, "replica-a", "after row 7").await.unwrap());
    assert!(!leases.save_state(NAME, "replica-b", "stolen").await.unwrap(), "b does not hold it");
    leases.complete(NAME, "replica-a").await.unwrap();
    assert_eq!(leases.load_state(NAME).await.unwrap().as_deref(), Some("after row 7"));
    assert!(!leases.save_state(NAME, "replica-a", "late").await.unwrap(), "completed: not held");

    assert!(acquire_eagerly(leases, "replica-b").await);
    assert_eq!(leases.load_state(NAME).await.unwrap().as_deref(), Some("after row 7"));
    assert!(leases.save_state(NAME, "replica-b", "after row 9").await.unwrap());
    subject.aging.age(NAME, DURATION + Duration::from_secs(1)).await;
    assert!(!leases.save_state(NAME, "replica-b", "expired").await.unwrap(), "lease ran out");
    assert_eq!(leases.load_state(NAME).await.unwrap().as_deref(), Some("after row 9"));
    assert_eq!(leases.load_state("another lease").await.unwrap(), None);
}

/// Runs the futures concurrently, each on its own task, and returns their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.expect("an acquiring task panicked"));
    }
    outputs
}
