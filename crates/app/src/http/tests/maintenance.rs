//! The maintenance routes: a cleanup now, and a sweep now against the lease.

use super::*;

#[tokio::test]
async fn cleanup_now_removes_expired_sandboxes_and_reports_them() {
    let h = harness(Options::default());
    let (_, created) = h.put(CHAT).await;
    let (status, report) = h.send(Method::POST, "/v1/maintenance/cleanup", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report, json!({"expired": 0, "skipped": 0, "cleaned": [], "errors": []}));

    h.clock.advance(TimeDelta::minutes(5));
    let (status, report) = h.send(Method::POST, "/v1/maintenance/cleanup", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["expired"], 1);
    assert_eq!(report["cleaned"][0]["session_id"], created["session_id"]);
    assert_eq!(h.sessions().await, 0);
    assert!(h.runtime.container_ids().is_empty());
}

#[tokio::test]
async fn cleanup_failures_are_reported_per_session() {
    let h = harness(Options::default());
    let (_, created) = h.put(CHAT).await;
    let container = ContainerId::new(created["container_id"].as_str().unwrap()).unwrap();
    h.runtime.fail_stop(container, RuntimeError::Failed("device busy".into()));
    h.clock.advance(TimeDelta::minutes(5));
    let (status, report) = h.send(Method::POST, "/v1/maintenance/cleanup", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["errors"][0]["session_id"], created["session_id"]);
    assert_eq!(report["errors"][0]["error"]["kind"], "runtime_error");
    assert_eq!(h.sessions().await, 1, "the row stays for the next pass");
}

#[tokio::test]
async fn sweep_now_ignores_the_minimum_interval() {
    let h = harness(Options::default());
    let (_, created) = h.put(CHAT).await;
    let container = ContainerId::new(created["container_id"].as_str().unwrap()).unwrap();
    h.runtime.set_state(&container, ContainerState::Exited);
    let (status, report) = h.send(Method::POST, "/v1/maintenance/sweep", "").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["reconciled"], 1);
    // A second one right away still runs although the last completed a moment ago.
    let (status, report) = h.send(Method::POST, "/v1/maintenance/sweep", "").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["removed"], 1, "the crashed sandbox is removed by the second pass");
    assert_eq!(h.sessions().await, 0);
}

#[tokio::test(start_paused = true)]
async fn sweep_now_waits_for_a_held_lease_then_answers_409() {
    let h = harness(Options::default());
    let held = LeaseRequest {
        name: sandkeeper_usecase::DEFAULT_MAINTENANCE_LEASE_NAME,
        holder: "another-replica",
        duration: Duration::from_secs(3600),
        min_interval: Duration::ZERO,
    };
    assert!(h.leases.try_acquire(&held).await.unwrap());
    let (status, body) = h.send(Method::POST, "/v1/maintenance/sweep", "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "sweep_in_progress", "another maintenance sweep");
}

#[tokio::test(start_paused = true)]
async fn sweep_now_runs_once_a_held_lease_is_released() {
    let h = harness(Options::default());
    let name = sandkeeper_usecase::DEFAULT_MAINTENANCE_LEASE_NAME;
    let held = LeaseRequest {
        name,
        holder: "another-replica",
        duration: Duration::from_secs(3600),
        min_interval: Duration::ZERO,
    };
    assert!(h.leases.try_acquire(&held).await.unwrap());
    let leases = Arc::clone(&h.leases);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        leases.complete(name, "another-replica").await.unwrap();
    });
    let (status, body) = h.send(Method::POST, "/v1/maintenance/sweep", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
