//! The warm pool (`--pool-size`): new chats answered by containers that were started before
//! they asked, with each chat's own TTL, the pool refilled after, and no container ever left
//! behind: across a kill -9 and a restart, a lowered size, a changed configuration, and claims
//! racing on two replicas.

use std::collections::HashSet;
use std::time::Duration;

use chrono::DateTime;
use sandkeeper_tests::{
    Server, StatusCode, TempDatabase, TestEnv, chat, container_label, eventually, metric, or_skip,
};
use serde_json::{Value, json};

/// How long a pool may take to fill (each container ~0.25 s here, two at a time).
const FILL: Duration = Duration::from_secs(30);

/// `GET /v1/pool`.
async fn pool(server: &Server) -> Value {
    let (status, body) = server.get("/v1/pool").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until the pool shows `ready` ready and none starting; panics after [`FILL`].
async fn pool_settles_at(server: &Server, ready: u64) {
    let settled = eventually(FILL, || async {
        let body = pool(server).await;
        (body["ready"] == ready && body["starting"] == 0).then_some(())
    })
    .await;
    assert!(settled.is_some(), "the pool never settled at {ready} ready: {}", pool(server).await);
}

fn set(ids: Vec<String>) -> HashSet<String> {
    ids.into_iter().collect()
}

/// Every container of the instance is a running session's or a ready pooled one: nothing
/// leaked, nothing counted twice. Waits for the pool to settle first.
async fn nothing_leaked(env: &TestEnv, server: &Server, ready: u64) {
    pool_settles_at(server, ready).await;
    let verdict = eventually(FILL, || async {
        let sessions: HashSet<String> = server
            .sandboxes()
            .await
            .iter()
            .filter(|s| s["status"] == "running")
            .map(|s| s["container_id"].as_str().unwrap().to_owned())
            .collect();
        let all = set(env.containers(true));
        let ok = sessions.is_subset(&all) && all.len() as u64 == sessions.len() as u64 + ready;
        ok.then_some(()).ok_or((all, sessions)).ok()
    })
    .await;
    assert!(
        verdict.is_some(),
        "containers of the instance: {:?}; running sessions: {:?}; pool: {}",
        env.containers(true),
        server.sandboxes().await,
        pool(server).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn four_new_chats_are_answered_from_the_pool_with_their_own_ttl_and_it_refills() {
    let (env, server) = or_skip!(TestEnv::docker_server(&["--pool-size", "4"]).await);
    pool_settles_at(&server, 4).await;
    let counts = json!({"target": 4, "ready": 4, "starting": 0});
    let mut default_engine = counts.clone();
    default_engine["engine"] = json!("default");
    let mut expected = counts;
    expected["engines"] = json!([default_engine]);
    assert_eq!(pool(&server).await, expected);
    let pooled = set(env.pooled_containers());
    assert_eq!(pooled.len(), 4, "{pooled:?}");

    let mut claimed = HashSet::new();
    let mut chats = Vec::new();
    for _ in 0..4 {
        let chat_id = chat();
        let (status, body) = server.put_sandbox_with(&chat_id, r#"{"ttl_seconds": 600}"#).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["result"], "created");
        let container = body["container_id"].as_str().unwrap().to_owned();
        assert!(pooled.contains(&container), "{container} was not in the pool {pooled:?}");
        assert!(claimed.insert(container.clone()), "{container} served two chats");
        let created = DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).unwrap();
        let expires = DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
        assert_eq!((expires - created).num_seconds(), 600, "the chat's own TTL: {body}");
        // The store, not a label, says which chat a claimed container serves.
        assert_eq!(container_label(&container, "io.sandkeeper.chat").as_deref(), Some(""));
        let (status, got) = server.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["container_id"], container.as_str());
        chats.push(chat_id);
    }
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, r#"sandbox_pool_claim_total{result="hit"}"#), Some(4.0));
    assert_eq!(metric(&metrics, r#"sandbox_create_total{result="created"}"#), Some(4.0));

    // A claimed sandbox works like any other, as its chat's own uid, with a workspace.
    let out = server.shell_stdout(&chats[0], "echo hello > f && cat f && id -u").await;
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("hello"));
    let uid = lines.next().unwrap().to_owned();
    let claimed_container = server.get(&format!("/v1/chats/{}/sandbox", chats[0])).await.1;
    let label =
        container_label(claimed_container["container_id"].as_str().unwrap(), "io.sandkeeper.uid");
    assert_eq!(label.as_deref(), Some(uid.as_str()), "commands run as the container's own uid");

    // Full again with new containers; the claimed ones are the chats' now.
    pool_settles_at(&server, 4).await;
    let refilled: HashSet<String> =
        set(env.pooled_containers()).difference(&claimed).cloned().collect();
    assert_eq!(refilled.len(), 4, "{refilled:?}");
    assert!(refilled.is_disjoint(&pooled));
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, "sandbox_pool_ready"), Some(4.0), "{metrics}");

    // Deleting a claimed sandbox removes its container like any other, and saves its workspace,
    // which the chat's next sandbox, claimed from the pool again, gets back.
    let (status, _) = server.delete_sandbox(&chats[0]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let before_claim = set(env.pooled_containers());
    let again = server.created(&chats[0]).await;
    let container = again["container_id"].as_str().unwrap();
    assert!(before_claim.contains(container) && !claimed.contains(container), "{again}");
    assert_eq!(again["workspace"]["restored"], true, "{again}");
    assert_eq!(server.shell_stdout(&chats[0], "cat f").await, "hello\n");
    nothing_leaked(&env, &server, 4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_kill_and_a_restart_the_pool_is_reused_and_nothing_is_leaked() {
    let args = ["--pool-size", "3", "--orphan-grace", "1s", "--maintenance-interval", "1s"];
    let (env, mut server) = or_skip!(TestEnv::docker_server(&args).await);
    pool_settles_at(&server, 3).await;
    let chat_id = server.new_sandbox().await;
    pool_settles_at(&server, 3).await;
    let before = set(env.containers(true));
    assert_eq!(before.len(), 4, "{before:?}");
    server.kill();

    let server = env.serve(&args).await;
    // The chat keeps its sandbox; the ready ones are served, not replaced.
    let (status, body) = server.put_sandbox(&chat_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "reused");
    let second = server.new_sandbox().await;
    let (_, body) = server.get(&format!("/v1/chats/{second}/sandbox")).await;
    let container = body["container_id"].as_str().unwrap();
    assert!(
        before.contains(container),
        "the new chat got a pooled container of before: {}",
        server.logs()
    );
    // Several sweeps run (1 s) with a 1 s orphan grace: neither a claimed container nor a
    // ready one is taken for an orphan.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = server.put_sandbox(&chat_id).await;
    assert_eq!((status, body["result"].as_str()), (StatusCode::OK, Some("reused")), "{body}");
    assert!(set(env.containers(false)).is_superset(&before), "nothing recorded was reaped");
    nothing_leaked(&env, &server, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lowered_size_or_another_configuration_drains_the_old_pooled_containers() {
    let (env, mut server) = or_skip!(TestEnv::docker_server(&["--pool-size", "3"]).await);
    pool_settles_at(&server, 3).await;
    let first = set(env.pooled_containers());
    server.terminate();

    let mut server = env.serve(&["--pool-size", "1"]).await;
    pool_settles_at(&server, 1).await;
    let drained = eventually(FILL, || async {
        let now = set(env.containers(true));
        (now.len() == 1).then_some(now)
    })
    .await
    .expect("the pool drains to one container");
    assert!(drained.is_subset(&first), "the one kept is one of before: {drained:?}");
    server.terminate();

    let server = env.serve(&["--pool-size", "2", "--memory-limit", "256m"]).await;
    pool_settles_at(&server, 2).await;
    let changed = eventually(FILL, || async {
        let now = set(env.containers(true));
        (now.len() == 2 && now.is_disjoint(&first)).then_some(now)
    })
    .await
    .expect("the containers of the old configuration are replaced");
    for container in &changed {
        let memory = std::process::Command::new("docker")
            .args(["inspect", "--format", "{{.HostConfig.Memory}}", container])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&memory.stdout).trim(), "268435456");
    }
    // A new chat gets one of the new configuration.
    let chat_id = server.new_sandbox().await;
    let (_, body) = server.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
    assert!(changed.contains(body["container_id"].as_str().unwrap()), "{body}");
    nothing_leaked(&env, &server, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_racing_on_two_replicas_never_share_a_container_nor_overfill_the_pool() {
    let database = or_skip!(TempDatabase::for_docker_test().await);
    let env = TestEnv::new();
    let args = ["--database-url", database.url(), "--pool-size", "4"];
    let replicas = [env.serve(&args).await, env.serve(&args).await];
    pool_settles_at(&replicas[0], 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pooled = set(env.pooled_containers());
    assert_eq!(pooled.len(), 4, "two replicas together keep 4, not 8: {pooled:?}");

    let chats: Vec<String> = (0..8).map(|_| chat()).collect();
    let calls: Vec<_> = chats
        .iter()
        .enumerate()
        .map(|(k, chat_id)| {
            let url = replicas[k % 2].url(&format!("/v1/chats/{chat_id}/sandbox"));
            tokio::spawn(async move {
                let response = reqwest::Client::new().put(&url).send().await.unwrap();
                let status = response.status();
                let text = response.text().await.unwrap();
                (status, serde_json::from_str::<Value>(&text).unwrap())
            })
        })
        .collect();
    let mut containers = HashSet::new();
    let mut from_pool = 0;
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let container = body["container_id"].as_str().unwrap().to_owned();
        from_pool += usize::from(pooled.contains(&container));
        assert!(containers.insert(container), "a container served two chats: {body}");
    }
    assert!(from_pool >= 2, "racing claims were answered from the pool ({from_pool} of 8)");
    let hits: f64 = {
        let mut hits = 0.0;
        for replica in &replicas {
            let text = replica.metrics().await;
            hits += metric(&text, r#"sandbox_pool_claim_total{result="hit"}"#).unwrap_or(0.0);
        }
        hits
    };
    assert_eq!(hits as usize, from_pool, "every hit is a pooled container handed out once");
    nothing_leaked(&env, &replicas[1], 4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_pool_keeps_the_server_ready_and_a_new_chat_falls_back_to_a_cold_create() {
    if sandkeeper_tests::docker(&sandkeeper_tests::test_name()).is_none() {
        return;
    }
    // An image the engine does not have: the pool can never fill.
    let env = TestEnv::with_image("sandkeeper/no-such-image:pool-test");
    let server = env.serve(&["--pool-size", "2"]).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let settled = eventually(FILL, || async {
        let metrics = server.metrics().await;
        let failed = server.logs().contains("pool_container_create_failed");
        (failed && metric(&metrics, "sandbox_pool_ready") == Some(0.0)).then_some(())
    })
    .await;
    assert!(settled.is_some(), "the refill tried and failed: {}", server.logs());
    assert_eq!(pool(&server).await["ready"], 0);
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "an empty pool is no reason to be unready: {body}");

    // The create falls back to Docker, which says why it cannot.
    let (status, body) = server.put_sandbox(&chat()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "image_missing");
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, r#"sandbox_pool_claim_total{result="miss"}"#), Some(1.0));
    assert!(env.containers(true).is_empty(), "nothing was left behind");
}
