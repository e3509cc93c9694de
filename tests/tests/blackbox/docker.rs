//! The service against the real Docker engine. Each test skips (printing so) without an engine,
//! and fails without one when SANDKEEPER_REQUIRE_DOCKER=1.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use sandkeeper_tests::{
    DockerProxy, StatusCode, TestEnv, chat, container_label, docker, eventually, or_skip,
};

#[tokio::test(flavor = "multi_thread")]
async fn get_or_create_reuses_replaces_after_ttl_and_deletes() {
    // A cleanup interval far beyond the test, so that the replace is done by the PUT.
    // The TTL outlasts the first create and the reuse on a loaded machine.
    let (env, server) =
        or_skip!(TestEnv::docker_server(&["--ttl", "5s", "--cleanup-interval", "1h"]).await);
    let chat_id = chat();

    let created = server.created(&chat_id).await;
    assert_eq!(created["result"], "created");
    assert_eq!(created["chat_id"], chat_id.as_str());
    assert_eq!(created["status"], "running");
    let container = created["container_id"].as_str().unwrap().to_owned();
    assert_eq!(env.containers(false), vec![container.clone()], "one running container");
    assert_eq!(
        container_label(&container, "io.sandkeeper.chat").as_deref(),
        Some(chat_id.as_str())
    );
    assert_eq!(
        container_label(&container, "io.sandkeeper.session").as_deref(),
        created["session_id"].as_str()
    );

    let (status, reused) = server.put_sandbox(&chat_id.to_uppercase()).await;
    assert_eq!(status, StatusCode::OK, "{reused}");
    assert_eq!(reused["result"], "reused");
    assert_eq!(reused["session_id"], created["session_id"]);

    let (status, got) = server.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["session_id"], created["session_id"]);

    tokio::time::sleep(Duration::from_millis(5200)).await;
    let replaced = server.created(&chat_id).await;
    assert_eq!(replaced["result"], "replaced");
    assert_ne!(replaced["session_id"], created["session_id"]);
    let new_container = replaced["container_id"].as_str().unwrap().to_owned();
    assert_eq!(env.containers(true), vec![new_container], "the old container is gone");

    let (status, body) = server.delete_sandbox(&chat_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(env.containers(true).is_empty());
    let (status, _) = server.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.delete_sandbox(&chat_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(server.sandboxes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cleanup_loop_removes_expired_sandboxes() {
    // The TTL leaves room for four creates on a loaded machine before the first one expires.
    let (env, server) =
        or_skip!(TestEnv::docker_server(&["--ttl", "8s", "--cleanup-interval", "1s"]).await);
    for _ in 0..3 {
        let (status, body) = server.put_sandbox(&chat()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // One that lives longer than the test stays.
    let keeper = chat();
    let (status, kept) = server.put_sandbox_with(&keeper, r#"{"ttl_seconds": 600}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{kept}");
    assert_eq!(env.containers(false).len(), 4);

    let cleaned = eventually(Duration::from_secs(30), || async {
        (env.containers(true).len() == 1).then_some(())
    })
    .await;
    assert!(cleaned.is_some(), "the loop did not remove the expired sandboxes:\n{}", server.logs());
    assert_eq!(env.containers(true), vec![kept["container_id"].as_str().unwrap().to_owned()]);
    let listed = server.sandboxes().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["chat_id"], keeper.as_str());
    assert!(server.logs().contains("sandbox_cleaned"));
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_parallel_puts_for_one_chat_make_one_container() {
    let env = or_skip!(TestEnv::for_docker());
    let server = Arc::new(env.serve(&[]).await);
    let chat_id = chat();
    let calls = (0..20).map(|_| {
        let server = Arc::clone(&server);
        let chat_id = chat_id.clone();
        tokio::spawn(async move { server.put_sandbox(&chat_id).await })
    });
    let answers = futures_join(calls).await;
    let created = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let reused = answers.iter().filter(|(status, _)| *status == StatusCode::OK).count();
    assert_eq!((created, reused), (1, 19), "{answers:?}");
    let sessions: HashSet<_> =
        answers.iter().map(|(_, body)| body["session_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(sessions.len(), 1, "every caller got the same session");
    assert_eq!(env.containers(true).len(), 1, "exactly one container");
    assert_eq!(server.sandboxes().await.len(), 1, "exactly one session");
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut results = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        results.push(task.await.expect("the task finished"));
    }
    results
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_cleanly_and_a_restart_reuses_the_sandbox() {
    let env = or_skip!(TestEnv::for_docker());
    let mut first = env.serve(&[]).await;
    let chat_id = chat();
    let created = first.created(&chat_id).await;

    let exit = first.terminate();
    assert!(exit.success(), "SIGTERM must exit 0, got {exit}:\n{}", first.logs());
    assert!(first.logs().contains("shutting down"), "{}", first.logs());
    assert_eq!(env.containers(false).len(), 1, "the sandbox keeps running");

    let second = env.serve(&[]).await;
    let (status, reused) = second.put_sandbox(&chat_id).await;
    assert_eq!(status, StatusCode::OK, "{reused}");
    assert_eq!(reused["result"], "reused");
    assert_eq!(reused["session_id"], created["session_id"]);
    assert_eq!(reused["container_id"], created["container_id"]);
    assert_eq!(env.containers(true).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_carry_the_sandbox_names() {
    let (_env, server) = or_skip!(TestEnv::docker_server(&[]).await);
    let chat_id = chat();
    assert_eq!(server.put_sandbox(&chat_id).await.0, StatusCode::CREATED);
    assert_eq!(server.put_sandbox(&chat_id).await.0, StatusCode::OK);
    let text = server.metrics().await;
    for expected in [
        "sandbox_create_total{result=\"created\"} 1",
        "sandbox_create_total{result=\"reused\"} 1",
        "sandbox_active_count 1",
        "sandbox_create_duration_seconds_bucket",
        "sandbox_docker_duration_seconds_bucket",
        "http_server_requests_total{method=\"PUT\",route=\"/v1/chats/{chat_id}/sandbox\",status=\"201\"} 1",
    ] {
        assert!(text.contains(expected), "`{expected}` missing from /metrics:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_is_enforced_with_429() {
    let (env, server) = or_skip!(TestEnv::docker_server(&["--max-sandboxes", "1"]).await);
    let first = chat();
    assert_eq!(server.put_sandbox(&first).await.0, StatusCode::CREATED);
    let (status, body) = server.put_sandbox(&chat()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "capacity_reached");
    assert_eq!(server.put_sandbox(&first).await.0, StatusCode::OK, "reuse is never refused");
    assert_eq!(env.containers(true).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_repairs_a_crashed_sandbox_and_reaps_orphans() {
    let image = or_skip!(docker("a_sweep_repairs_a_crashed_sandbox_and_reaps_orphans"));
    let env = TestEnv::new();
    let settings = ["--orphan-grace", "1s", "--maintenance-interval", "1h"];
    let mut server = env.serve(&settings).await;
    let chat_id = chat();
    let (_, created) = server.put_sandbox(&chat_id).await;
    // The container dies while no server watches the engine's events (a running server would
    // mark it crashed at once): only the sweep can find it.
    assert!(server.terminate().success());
    let container = created["container_id"].as_str().unwrap();
    let killed = Command::new("docker").args(["kill", container]).output().unwrap();
    assert!(killed.status.success(), "{killed:?}");
    // An orphan: our labels, no session.
    let orphan = Command::new("docker")
        .args(["run", "-d", "--network", "none", "--label", "io.sandkeeper.managed=true"])
        .args(["--label", &format!("io.sandkeeper.instance={}", env.instance_id())])
        .args([&image, "sleep", "infinity"])
        .output()
        .unwrap();
    assert!(orphan.status.success(), "{orphan:?}");
    // Past the 1 s grace even when counted from the end of the whole second the engine lists
    // as the orphan's creation time (up to 1 s later than it was created).
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The sweep finds the death (the one at start or the explicit one, whichever runs first),
    // and leaves the crash visible for one pass; the next explicit one removes it.
    let server = env.serve(&settings).await;
    for _ in 0..2 {
        let (status, report) =
            server.send(server.request(reqwest::Method::POST, "/v1/maintenance/sweep")).await;
        assert_eq!(status, StatusCode::OK, "{report}");
    }
    let metrics = server.metrics().await;
    let count = |series: &str| sandkeeper_tests::metric(&metrics, series).unwrap_or(0.0);
    assert_eq!(count("sandbox_maintenance_reconciled_total"), 1.0, "{metrics}");
    assert_eq!(count("sandbox_crashed_total{detected_by=\"maintenance\"}"), 1.0, "{metrics}");
    assert_eq!(count("sandbox_maintenance_orphans_removed_total"), 1.0, "{metrics}");
    assert_eq!(count("sandbox_maintenance_removed_total"), 1.0, "{metrics}");
    assert!(env.containers(true).is_empty());
    assert!(server.sandboxes().await.is_empty());

    // A crashed chat gets a fresh sandbox.
    let (status, fresh) = server.put_sandbox(&chat_id).await;
    assert_eq!((status, fresh["result"].as_str()), (StatusCode::CREATED, Some("created")));
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_and_maintain_commands_print_their_reports() {
    let env = or_skip!(TestEnv::for_docker());
    let mut server = env.serve(&["--ttl", "1s", "--cleanup-interval", "1h"]).await;
    let created = server.created(&chat()).await;
    assert!(server.terminate().success());
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let output = env.command("cleanup").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["expired"], 1, "{report}");
    assert_eq!(report["cleaned"][0]["session_id"], created["session_id"], "{report}");
    assert!(env.containers(true).is_empty());

    let output = env.command("maintain").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report,
        serde_json::json!({"reconciled": 0, "removed": 0, "orphans_removed": 0, "errors": 0, "timed_out": false})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_recovers_by_itself_when_docker_comes_back() {
    let engine = or_skip!(DockerProxy::engine_for_test());
    let env = TestEnv::new();
    // sandkeeper is pointed at a socket that does not exist yet: Docker is "down".
    let socket = env.data_dir().join("docker-proxy.sock");
    let host = format!("unix://{}", socket.display());
    let server = env.serve_with_env(&[], &[("DOCKER_HOST", host.as_str())]).await;
    let chat_id = chat();
    assert_eq!(server.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.put_sandbox(&chat_id).await.0, StatusCode::SERVICE_UNAVAILABLE);

    // Docker "comes back": a proxy to the real engine appears at that path.
    let _proxy = DockerProxy::start(&socket, engine);
    let ready = eventually(Duration::from_secs(10), || async {
        (server.get("/readyz").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert!(ready.is_some(), "readyz did not recover:\n{}", server.logs());
    server.created(&chat_id).await;
    assert_eq!(env.containers(true).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_request_finish() {
    let engine = or_skip!(DockerProxy::engine_for_test());
    let env = TestEnv::new();
    let socket = env.data_dir().join("docker-proxy.sock");
    let proxy = DockerProxy::start(&socket, engine);
    let host = format!("unix://{}", socket.display());
    let mut server = env.serve_with_env(&[], &[("DOCKER_HOST", host.as_str())]).await;
    assert_eq!(server.get("/readyz").await.0, StatusCode::OK);

    // Every Docker call now takes a second: the PUT below is surely in flight at the signal.
    let mut docker_calls = proxy.slow_down(Duration::from_secs(1));
    let request = server.request(reqwest::Method::PUT, &format!("/v1/chats/{}/sandbox", chat()));
    let in_flight = tokio::spawn(async move { request.send().await });
    tokio::time::timeout(Duration::from_secs(10), docker_calls.recv())
        .await
        .expect("the PUT reached Docker");
    let stopped = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (status, server.logs())
    });

    let response = in_flight.await.unwrap().expect("the in-flight request was answered");
    assert_eq!(response.status(), StatusCode::CREATED, "the in-flight request completed");
    let (status, logs) = stopped.await.unwrap();
    assert!(status.success(), "exit {status}:\n{logs}");
    assert_eq!(env.containers(false).len(), 1, "its sandbox runs on after the shutdown");
}
