//! The maintenance sweep against the in-process repository and leases, the fake runtime and a
//! manual clock.

mod maintenance_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::TimeDelta;
use maintenance_support::{Harness, completed, container_id, t0, unavailable};
use sandkeeper_domain::{ContainerId, SandboxStatus};
use sandkeeper_ports::testkit::RuntimeCall;
use sandkeeper_ports::{
    ContainerState, LeaseRequest, MaintenanceLeases, RuntimeError, SessionRepository,
};
use sandkeeper_usecase::{
    CleanupOutcome, MaintenanceError, MaintenanceReport, MaintenanceSweep, SweepOutcome,
};

// ---- cleanup of one terminal session ----

#[tokio::test]
async fn cleanup_removes_terminal_row_and_container() {
    let h = Harness::new();
    let stopped = h.add_session(1, SandboxStatus::Stopped, ContainerState::Exited).await;

    assert_eq!(h.cleanup_terminal(&stopped).await, CleanupOutcome::Removed);
    assert_eq!(h.status(1).await, None, "the row should be deleted");
    assert!(!h.has_container(&stopped.container_id), "the container should be removed");
    assert_eq!(h.runtime.fake.stop_calls(), vec![stopped.container_id]);
}

#[tokio::test]
async fn cleanup_of_a_crashed_session_whose_container_is_missing_removes_the_row() {
    let h = Harness::new();
    let crashed = h.add_session(1, SandboxStatus::Crashed, ContainerState::Missing).await;

    assert_eq!(h.cleanup_terminal(&crashed).await, CleanupOutcome::Removed);
    assert_eq!(h.status(1).await, None);
}

#[tokio::test]
async fn cleanup_skips_an_active_session() {
    let h = Harness::new();
    let running = h.add_session(1, SandboxStatus::Running, ContainerState::Running).await;

    assert_eq!(h.cleanup_terminal(&running).await, CleanupOutcome::SkippedActive);
    assert_eq!(h.status(1).await, Some(SandboxStatus::Running));
    assert!(h.has_container(&running.container_id));
    assert!(h.runtime.fake.stop_calls().is_empty(), "a running sandbox must not be stopped");
}

#[tokio::test]
async fn cleanup_second_call_is_a_no_op() {
    let h = Harness::new();
    let stopped = h.add_session(1, SandboxStatus::Stopped, ContainerState::Exited).await;
    let sweep = h.sweep();

    assert_eq!(sweep.cleanup_terminal(stopped.session_id).await.unwrap(), CleanupOutcome::Removed);
    assert_eq!(
        sweep.cleanup_terminal(stopped.session_id).await.unwrap(),
        CleanupOutcome::AlreadyGone
    );
    assert_eq!(h.runtime.fake.stop_calls().len(), 1, "the second call must not touch the runtime");
}

#[tokio::test]
async fn cleanup_is_already_claimed_when_the_row_goes_between_read_and_delete() {
    let h = Harness::new();
    let stopped = h.add_session(1, SandboxStatus::Stopped, ContainerState::Exited).await;
    h.repository.delete_after_get.store(true, Ordering::SeqCst);

    assert_eq!(h.cleanup_terminal(&stopped).await, CleanupOutcome::AlreadyClaimed);
    assert_eq!(h.status(1).await, None);
}

#[tokio::test]
async fn cleanup_runtime_error_keeps_the_row_for_retry() {
    let h = Harness::new();
    let stopped = h.add_session(1, SandboxStatus::Stopped, ContainerState::Exited).await;
    h.runtime.fake.fail_stop(stopped.container_id.clone(), unavailable());

    assert_eq!(h.cleanup_terminal(&stopped).await, CleanupOutcome::RuntimeError);
    assert_eq!(h.status(1).await, Some(SandboxStatus::Stopped), "the row must stay for a retry");
    assert!(h.has_container(&stopped.container_id));
}

#[tokio::test]
async fn cleanup_returns_a_store_failure() {
    let h = Harness::new();
    let stopped = h.add_session(1, SandboxStatus::Stopped, ContainerState::Exited).await;
    h.repository.fail_get.store(true, Ordering::SeqCst);

    let error = h.sweep().cleanup_terminal(stopped.session_id).await.unwrap_err();

    assert_eq!(error.kind(), "store_unavailable");
    assert!(h.runtime.fake.stop_calls().is_empty());
}

// ---- the sweep: reconcile and terminal cleanup ----

#[tokio::test]
async fn sweep_reconciles_dead_running_sessions_and_cleans_terminal_ones() {
    let h = Harness::new();
    let alive = h.add_session(1, SandboxStatus::Running, ContainerState::Running).await;
    let exited = h.add_session(2, SandboxStatus::Running, ContainerState::Exited).await;
    h.add_session(3, SandboxStatus::Running, ContainerState::Missing).await;
    let stopped = h.add_session(4, SandboxStatus::Stopped, ContainerState::Exited).await;
    h.add_session(5, SandboxStatus::Crashed, ContainerState::Missing).await;

    let report = completed(&h.sweep(), false).await;

    assert_eq!(
        report,
        MaintenanceReport {
            reconciled: 2,
            removed: 2,
            orphans_removed: 0,
            errors: 0,
            timed_out: false
        }
    );
    assert_eq!(h.status(1).await, Some(SandboxStatus::Running));
    assert!(h.has_container(&alive.container_id), "a running sandbox must be left alone");
    assert_eq!(h.status(2).await, Some(SandboxStatus::Crashed));
    assert_eq!(h.status(3).await, Some(SandboxStatus::Crashed));
    assert_eq!(h.status(4).await, None);
    assert_eq!(h.status(5).await, None);
    assert!(!h.has_container(&stopped.container_id));
    // A crash stays visible until the next pass, which removes it.
    assert!(h.has_container(&exited.container_id));

    let next = completed(&h.sweep(), true).await;

    assert_eq!(next, MaintenanceReport { removed: 2, ..MaintenanceReport::default() });
    assert_eq!(h.status(2).await, None);
    assert_eq!(h.status(3).await, None);
    assert!(!h.has_container(&exited.container_id));
    assert_eq!(h.runtime.fake.container_ids(), vec![alive.container_id]);
}

#[tokio::test]
async fn sweep_counts_a_failed_removal_and_keeps_the_row() {
    let h = Harness::new();
    let stopped = h.add_session(1, SandboxStatus::Stopped, ContainerState::Exited).await;
    h.runtime.fake.fail_stop(stopped.container_id.clone(), unavailable());

    let report = completed(&h.sweep(), false).await;

    assert_eq!(report, MaintenanceReport { errors: 1, ..MaintenanceReport::default() });
    assert_eq!(h.status(1).await, Some(SandboxStatus::Stopped));
}

#[tokio::test]
async fn unavailable_runtime_never_crashes_a_running_row() {
    let h = Harness::new();
    let reachable_later = h.add_session(1, SandboxStatus::Running, ContainerState::Running).await;
    let missing = h.add_session(2, SandboxStatus::Running, ContainerState::Missing).await;
    h.runtime.fail_inspect(reachable_later.container_id.clone(), unavailable());
    h.runtime.fail_inspect(
        missing.container_id.clone(),
        RuntimeError::Timeout { operation: "inspect", after: Duration::from_secs(5) },
    );

    let report = completed(&h.sweep(), false).await;

    assert_eq!(report, MaintenanceReport { errors: 2, ..MaintenanceReport::default() });
    assert_eq!(h.status(1).await, Some(SandboxStatus::Running));
    assert_eq!(h.status(2).await, Some(SandboxStatus::Running));
    assert!(h.runtime.fake.stop_calls().is_empty());
}

#[tokio::test]
async fn failing_session_listing_fails_the_sweep_and_releases_the_lease() {
    let h = Harness::new();
    h.add_session(1, SandboxStatus::Stopped, ContainerState::Exited).await;
    h.repository.fail_list.store(true, Ordering::SeqCst);

    let error = h.sweep().run(false).await.unwrap_err();

    assert!(matches!(error, MaintenanceError::Store { phase: "running", .. }), "{error:?}");
    assert_eq!(error.kind(), "store_unavailable");
    assert!(error.to_string().contains("could not list running sessions"), "{error}");
    assert_eq!(h.status(1).await, Some(SandboxStatus::Stopped));

    // Released and not recorded as completed: a non-forced retry runs at once.
    h.repository.fail_list.store(false, Ordering::SeqCst);
    let report = completed(&h.sweep(), false).await;
    assert_eq!(report.removed, 1);
}

// ---- orphans ----

#[tokio::test]
async fn sweep_removes_old_orphans_only() {
    let h = Harness::new();
    let with_row = h.add_session(1, SandboxStatus::Running, ContainerState::Running).await;
    let old_orphan = h.add_orphan("orphan-old", Some(90), t0() - TimeDelta::minutes(5));
    let unlabelled = h.add_orphan("orphan-unlabelled", None, t0() - TimeDelta::seconds(61));
    let young = h.add_orphan("orphan-young", Some(91), t0() - TimeDelta::seconds(30));
    let at_grace = h.add_orphan("orphan-at-grace", Some(92), t0() - TimeDelta::seconds(60));

    let report = completed(&h.sweep(), false).await;

    assert_eq!(report, MaintenanceReport { orphans_removed: 2, ..MaintenanceReport::default() });
    assert!(!h.has_container(&old_orphan));
    assert!(!h.has_container(&unlabelled), "a container without a session label is an orphan");
    assert!(h.has_container(&young), "a container within the grace period must be kept");
    assert!(h.has_container(&at_grace), "the grace period must be exceeded, not just reached");
    assert!(h.has_container(&with_row.container_id), "a container with a row must be kept");
}

#[tokio::test]
async fn sweep_never_reaps_a_container_created_after_it_began() {
    let h = Harness::new();
    let before = h.add_orphan("orphan-before", Some(90), t0() - TimeDelta::seconds(1));
    let after = h.add_orphan("orphan-after", Some(91), t0() + TimeDelta::seconds(1));
    let at_start = h.add_orphan("orphan-at-start", Some(92), t0());

    let report = completed(&h.sweep_with(|s| s.orphan_grace = Duration::ZERO), false).await;

    assert_eq!(report.orphans_removed, 1);
    assert!(!h.has_container(&before));
    assert!(h.has_container(&after), "a container newer than the sweep must be kept");
    assert!(h.has_container(&at_start));
}

#[tokio::test]
async fn orphan_phase_is_skipped_when_the_store_read_fails() {
    let h = Harness::new();
    let orphans = [
        h.add_orphan("orphan-1", Some(90), t0() - TimeDelta::minutes(5)),
        h.add_orphan("orphan-2", Some(91), t0() - TimeDelta::minutes(5)),
        h.add_orphan("orphan-3", None, t0() - TimeDelta::minutes(5)),
    ];
    h.repository.fail_get.store(true, Ordering::SeqCst);

    let report = completed(&h.sweep(), false).await;

    assert_eq!(report, MaintenanceReport { errors: 1, ..MaintenanceReport::default() });
    assert!(h.runtime.fake.stop_calls().is_empty(), "nothing may be removed on a failed read");
    for orphan in &orphans {
        assert!(h.has_container(orphan));
    }
}

#[tokio::test]
async fn orphan_phase_is_skipped_when_listing_containers_fails() {
    let h = Harness::new();
    let stopped = h.add_session(1, SandboxStatus::Stopped, ContainerState::Exited).await;
    h.runtime.fake.fail_list(unavailable());

    let report = completed(&h.sweep(), false).await;

    assert_eq!(report, MaintenanceReport { removed: 1, errors: 1, ..MaintenanceReport::default() });
    assert_eq!(h.runtime.fake.stop_calls(), vec![stopped.container_id]);
}

// ---- the lease ----

#[tokio::test]
async fn lease_gates_repeated_and_concurrent_sweeps() {
    let h = Harness::new();
    let sweep = h.sweep();

    completed(&sweep, false).await;
    assert_eq!(
        sweep.run(false).await.unwrap(),
        SweepOutcome::Skipped,
        "within the minimum interval"
    );
    completed(&sweep, true).await;

    h.clock.advance(TimeDelta::seconds(31));
    completed(&sweep, false).await;

    h.clock.advance(TimeDelta::seconds(31));
    let other = LeaseRequest {
        name: &sweep.settings().lease_name,
        holder: "instance-b:1",
        duration: Duration::from_secs(10),
        min_interval: Duration::from_secs(30),
    };
    assert!(h.leases.try_acquire(&other).await.unwrap());
    assert_eq!(sweep.run(true).await.unwrap(), SweepOutcome::Skipped, "another holder sweeps");
    assert_eq!(sweep.run(false).await.unwrap(), SweepOutcome::Skipped);

    h.clock.advance(TimeDelta::seconds(11));
    completed(&sweep, false).await;
}

#[tokio::test]
async fn a_skipped_sweep_touches_nothing() {
    let h = Harness::new();
    let sweep = h.sweep();
    completed(&sweep, false).await;
    h.add_session(1, SandboxStatus::Running, ContainerState::Exited).await;
    let calls_before = h.runtime.fake.calls().len();

    assert_eq!(sweep.run(false).await.unwrap(), SweepOutcome::Skipped);

    assert_eq!(h.status(1).await, Some(SandboxStatus::Running));
    assert_eq!(h.runtime.fake.calls().len(), calls_before);
}

// ---- limits ----

#[tokio::test]
async fn each_phase_handles_at_most_max_rows() {
    let h = Harness::new();
    h.add_sessions(1..=3, SandboxStatus::Running, ContainerState::Exited).await;
    h.add_sessions(11..=13, SandboxStatus::Stopped, ContainerState::Exited).await;
    for n in 0..3 {
        let created_at = t0() - TimeDelta::minutes(20) + TimeDelta::seconds(n.into());
        h.add_orphan(&format!("orphan-{n}"), Some(90 + n), created_at);
    }

    let report = completed(&h.sweep_with(|s| s.max_rows_per_phase = 2), false).await;

    assert_eq!(
        report,
        MaintenanceReport {
            reconciled: 2,
            removed: 2,
            orphans_removed: 2,
            errors: 0,
            timed_out: false
        }
    );
    // Oldest first in every phase.
    assert_eq!(h.status(3).await, Some(SandboxStatus::Running));
    assert_eq!(h.status(13).await, Some(SandboxStatus::Stopped));
    assert!(h.has_container(&ContainerId::new("orphan-2").unwrap()));
}

#[tokio::test]
async fn an_orphan_behind_more_live_containers_than_one_pass_examines_is_reached_later() {
    let h = Harness::new();
    h.add_sessions(1..=3, SandboxStatus::Running, ContainerState::Running).await;
    let orphan = h.add_orphan("orphan-newest", Some(90), t0() - TimeDelta::minutes(5));
    let sweep = h.sweep_with(|s| s.max_rows_per_phase = 2);

    let first = completed(&sweep, true).await;
    assert_eq!(first.orphans_removed, 0, "the first pass only sees the two oldest containers");
    assert!(h.has_container(&orphan));

    let second = completed(&sweep, true).await;
    assert_eq!(second.orphans_removed, 1);
    assert!(!h.has_container(&orphan));

    // Once the newest was reached, the next pass starts from the oldest again.
    let late = h.add_orphan("orphan-oldest", None, t0() - TimeDelta::hours(1));
    let third = completed(&sweep, true).await;
    assert_eq!(third.orphans_removed, 1);
    assert!(!h.has_container(&late));
    for n in 1..=3 {
        assert!(h.has_container(&container_id(n)));
    }
}

/// Runs one forced pass of `sweep`: its report, and the containers it inspected in order.
async fn pass_inspecting(
    h: &Harness,
    sweep: &MaintenanceSweep,
) -> (MaintenanceReport, Vec<ContainerId>) {
    let calls = h.runtime.fake.calls().len();
    let report = completed(sweep, true).await;
    let inspected = h.runtime.fake.calls()[calls..]
        .iter()
        .filter_map(|call| match call {
            RuntimeCall::Inspect(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    (report, inspected)
}

/// Runs one forced pass of `sweep` and checks that it inspected the containers of the sessions
/// `read`, in order, and crashed session `crashed`, the only one it reconciled.
async fn assert_pass_crashes(h: &Harness, sweep: &MaintenanceSweep, read: &[u32], crashed: u32) {
    let (report, inspected) = pass_inspecting(h, sweep).await;
    assert_eq!(report.reconciled, 1, "{report:?}");
    assert_eq!(h.status(crashed).await, Some(SandboxStatus::Crashed));
    let read: Vec<ContainerId> = read.iter().map(|n| container_id(*n)).collect();
    assert_eq!(inspected, read);
}

#[tokio::test]
async fn a_dead_sandbox_behind_more_running_sessions_than_one_pass_reads_is_reconciled_later() {
    let h = Harness::new();
    h.add_sessions(1..=4, SandboxStatus::Running, ContainerState::Running).await;
    h.add_session(5, SandboxStatus::Running, ContainerState::Exited).await;
    let sweep = h.sweep_with(|s| s.max_rows_per_phase = 2);

    let mut reconciled = Vec::new();
    let mut inspected = Vec::new();
    for _ in 0..3 {
        let (report, containers) = pass_inspecting(&h, &sweep).await;
        reconciled.push(report.reconciled);
        inspected.push(containers);
    }

    assert_eq!(reconciled, [0, 0, 1], "the newest session is reached by the third pass");
    assert_eq!(h.status(5).await, Some(SandboxStatus::Crashed));
    assert_eq!(
        inspected,
        [
            vec![container_id(1), container_id(2)],
            vec![container_id(3), container_id(4)],
            vec![container_id(5)]
        ],
        "each pass goes on after the previous one"
    );

    // The last page was short: the next pass starts from the oldest again.
    h.runtime.fake.set_state(&container_id(1), ContainerState::Exited);
    assert_pass_crashes(&h, &sweep, &[1, 2], 1).await;
}

#[tokio::test]
async fn a_pass_that_ends_exactly_at_the_newest_running_session_is_followed_by_a_full_one() {
    let h = Harness::new();
    h.add_sessions(1..=4, SandboxStatus::Running, ContainerState::Running).await;
    let sweep = h.sweep_with(|s| s.max_rows_per_phase = 2);
    completed(&sweep, true).await;
    completed(&sweep, true).await;

    // Nothing is left after the newest: this pass starts from the oldest instead of idling.
    h.runtime.fake.set_state(&container_id(2), ContainerState::Exited);
    assert_pass_crashes(&h, &sweep, &[1, 2], 2).await;
}

#[tokio::test]
async fn an_unreachable_container_does_not_hold_back_the_running_sessions_behind_it() {
    let h = Harness::new();
    for n in 1..=2 {
        let session = h.add_session(n, SandboxStatus::Running, ContainerState::Running).await;
        h.runtime.fail_inspect(session.container_id, unavailable());
    }
    h.add_session(3, SandboxStatus::Running, ContainerState::Missing).await;
    let sweep = h.sweep_with(|s| s.max_rows_per_phase = 2);

    let first = completed(&sweep, true).await;
    assert_eq!(first, MaintenanceReport { errors: 2, ..MaintenanceReport::default() });
    let second = completed(&sweep, true).await;
    assert_eq!(second.reconciled, 1);
    assert_eq!(h.status(3).await, Some(SandboxStatus::Crashed));
    // The rows that could not be judged are left as they were, and tried again later.
    let third = completed(&sweep, true).await;
    assert_eq!(third.errors, 2);
    assert_eq!(h.status(1).await, Some(SandboxStatus::Running));
    assert_eq!(h.status(2).await, Some(SandboxStatus::Running));
}

#[tokio::test]
async fn terminal_rows_whose_containers_cannot_be_removed_do_not_starve_the_others() {
    let h = Harness::new();
    for n in 1..=2 {
        let stuck = h.add_session(n, SandboxStatus::Stopped, ContainerState::Exited).await;
        h.runtime.fake.fail_stop(stuck.container_id, unavailable());
    }
    h.add_sessions(3..=4, SandboxStatus::Crashed, ContainerState::Exited).await;
    let sweep = h.sweep_with(|s| s.max_rows_per_phase = 2);

    let first = completed(&sweep, true).await;
    assert_eq!(first, MaintenanceReport { errors: 2, ..MaintenanceReport::default() });
    let second = completed(&sweep, true).await;
    assert_eq!(second, MaintenanceReport { removed: 2, ..MaintenanceReport::default() });
    assert_eq!(h.status(3).await, None);
    assert_eq!(h.status(4).await, None);

    // The stuck rows are kept and retried once the phase comes round to them again.
    let third = completed(&sweep, true).await;
    assert_eq!(third, MaintenanceReport { errors: 2, ..MaintenanceReport::default() });
    assert_eq!(h.status(1).await, Some(SandboxStatus::Stopped));
    assert_eq!(h.status(2).await, Some(SandboxStatus::Stopped));
    let stops = h.runtime.fake.stop_calls();
    assert_eq!(stops.iter().filter(|id| **id == container_id(1)).count(), 2, "{stops:?}");
}

#[tokio::test]
async fn a_pass_cut_short_by_time_is_continued_by_the_next_one() {
    let h = Harness::new();
    h.add_sessions(1..=4, SandboxStatus::Running, ContainerState::Running).await;
    h.add_session(5, SandboxStatus::Running, ContainerState::Exited).await;
    h.runtime.advance_clock_per_inspect(TimeDelta::milliseconds(100));
    let sweep = h.sweep_with(|s| {
        s.max_duration = Duration::from_millis(250);
        s.concurrency = 1;
    });

    // Inspections start at 0, 100 and 200 ms; the fourth would start at 300 ms.
    let first = completed(&sweep, true).await;
    assert!(first.timed_out);
    assert_eq!(first.reconciled, 0);

    assert_pass_crashes(&h, &sweep, &[4, 5], 5).await;
}

#[tokio::test]
async fn sweep_stops_early_when_out_of_time() {
    let h = Harness::new();
    h.add_sessions(1..=5, SandboxStatus::Running, ContainerState::Exited).await;
    let stopped = h.add_session(11, SandboxStatus::Stopped, ContainerState::Exited).await;
    let orphan = h.add_orphan("orphan-old", None, t0() - TimeDelta::minutes(5));
    h.runtime.advance_clock_per_inspect(TimeDelta::milliseconds(100));

    let sweep = h.sweep_with(|s| {
        s.max_duration = Duration::from_millis(250);
        s.concurrency = 1;
    });
    let report = completed(&sweep, false).await;

    // Inspections start at 0, 100 and 200 ms; the fourth would start at 300 ms.
    assert_eq!(
        report,
        MaintenanceReport {
            reconciled: 3,
            removed: 0,
            orphans_removed: 0,
            errors: 0,
            timed_out: true
        }
    );
    assert_eq!(h.status(4).await, Some(SandboxStatus::Running));
    assert_eq!(h.status(11).await, Some(SandboxStatus::Stopped), "later phases are skipped");
    assert!(h.has_container(&stopped.container_id));
    assert!(h.has_container(&orphan));
}

#[tokio::test]
async fn removals_run_concurrently_up_to_the_limit_and_all_complete() {
    let h = Harness::new();
    h.add_sessions(1..=12, SandboxStatus::Stopped, ContainerState::Exited).await;

    let report = completed(&h.sweep_with(|s| s.concurrency = 4), false).await;

    assert_eq!(report, MaintenanceReport { removed: 12, ..MaintenanceReport::default() });
    assert_eq!(h.runtime.max_stops_in_flight(), 4);
    assert!(h.runtime.fake.container_ids().is_empty());
    assert_eq!(h.repository.inner.count_running().await.unwrap(), 0);
    let left = h
        .repository
        .inner
        .list(&[SandboxStatus::Stopped, SandboxStatus::Crashed], 100)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

// ---- the app spawns sweeps ----

#[tokio::test]
async fn a_sweep_can_run_in_a_spawned_task() {
    let h = Harness::new();
    h.add_session(1, SandboxStatus::Running, ContainerState::Exited).await;
    let sweep = std::sync::Arc::new(h.sweep());

    // Compiles only if the sweep's future is Send.
    let outcome = tokio::spawn(async move { sweep.run(false).await }).await.unwrap().unwrap();

    assert!(matches!(outcome, SweepOutcome::Completed(report) if report.reconciled == 1));
}

// ---- positions kept in the store, a short lease renewed and fenced ----

#[tokio::test]
async fn a_restarted_sweeper_resumes_where_the_last_pass_stopped() {
    let h = Harness::new();
    h.add_sessions(1..=4, SandboxStatus::Running, ContainerState::Running).await;
    h.add_session(5, SandboxStatus::Running, ContainerState::Exited).await;
    let before_restart = h.sweep_with(|s| s.max_rows_per_phase = 2);
    let (_, inspected) = pass_inspecting(&h, &before_restart).await;
    assert_eq!(inspected, [container_id(1), container_id(2)]);
    drop(before_restart);

    // A new process (or another replica): it has only what the store kept.
    let after_restart = h.sweep_with(|s| {
        s.max_rows_per_phase = 2;
        s.holder = "instance-b:1".to_owned();
    });
    let (_, inspected) = pass_inspecting(&h, &after_restart).await;
    assert_eq!(inspected, [container_id(3), container_id(4)], "no rereading");
    assert_pass_crashes(&h, &after_restart, &[5], 5).await;
}

#[tokio::test]
async fn the_lease_of_a_sweeper_that_died_mid_pass_is_taken_over_within_a_few_seconds() {
    let h = Harness::new();
    h.add_session(1, SandboxStatus::Running, ContainerState::Exited).await;
    let sweep = h.sweep();
    // A sweeper of another replica won the lease with the same settings, then was killed.
    let dead = LeaseRequest {
        name: &sweep.settings().lease_name,
        holder: "instance-b:1#1",
        duration: sweep.settings().lease_duration,
        min_interval: sweep.settings().min_interval,
    };
    assert!(h.leases.try_acquire(&dead).await.unwrap());
    assert_eq!(sweep.run(true).await.unwrap(), SweepOutcome::Skipped, "held by the dead one");

    h.clock.advance(TimeDelta::seconds(5));
    assert_eq!(completed(&sweep, true).await.reconciled, 1, "taken over");
    assert_eq!(h.status(1).await, Some(SandboxStatus::Crashed));
}

#[tokio::test]
async fn a_pass_that_outlives_its_lease_stops_before_its_next_change() {
    let h = Harness::new();
    h.add_session(1, SandboxStatus::Running, ContainerState::Exited).await;
    h.add_session(2, SandboxStatus::Stopped, ContainerState::Exited).await;
    let sweep = h.sweep_with(|s| {
        s.lease_duration = Duration::from_secs(3);
        s.max_duration = Duration::from_secs(600);
        s.concurrency = 1;
    });
    // The inspect hangs past the lease: another sweeper may hold it by the time it answers.
    h.runtime.advance_clock_per_inspect(TimeDelta::seconds(4));
    let takeover = LeaseRequest {
        name: &sweep.settings().lease_name,
        holder: "instance-b:1#1",
        duration: Duration::from_secs(3),
        min_interval: Duration::ZERO,
    };

    let error = sweep.run(true).await.unwrap_err();
    assert!(matches!(error, MaintenanceError::Lease { .. }), "{error:?}");
    assert_eq!(h.status(1).await, Some(SandboxStatus::Running), "not marked without the lease");
    assert_eq!(h.status(2).await, Some(SandboxStatus::Stopped), "not removed without the lease");
    assert!(h.has_container(&container_id(2)));
    assert!(h.leases.try_acquire(&takeover).await.unwrap(), "the lease is free for another");
}

#[tokio::test]
async fn a_live_sweeper_renews_its_lease_so_a_long_pass_keeps_it() {
    let h = Harness::new();
    h.add_sessions(1..=4, SandboxStatus::Running, ContainerState::Exited).await;
    let sweep = h.sweep_with(|s| {
        s.lease_duration = Duration::from_secs(3);
        s.max_duration = Duration::from_secs(600);
        s.concurrency = 1;
    });
    // Four inspects of 2 s each: the pass lasts 8 s, well past one lease.
    h.runtime.advance_clock_per_inspect(TimeDelta::seconds(2));
    assert_eq!(completed(&sweep, true).await.reconciled, 4);
    for n in 1..=4 {
        assert_eq!(h.status(n).await, Some(SandboxStatus::Crashed));
    }
}
