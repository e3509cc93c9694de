//! One deployment over two real Docker engines: the shared one (runc) and a private one started
//! for the test with gVisor's `runsc` registered. Sandboxes spread over both and `max` bounds
//! each; one engine killed under load (kill -9 of its dockerd) loses no chat: creates go on on
//! the other, `/readyz` stays ready, and after the grace the lost chats come back on the other
//! engine with their workspaces; started again, its stale containers are removed by the sweep.
//! A replica given another set of engines says which engine it does not know.

use std::time::Duration;

use sandkeeper_tests::{
    PrivateEngine, Server, StatusCode, TestEnv, assert_error, chat, eventually, or_skip,
    sandbox_image, test_name,
};
use serde_json::Value;

use super::workspaces::{PATIENCE, READ, WRITE, comes_back_restored, saved_after};

/// The shared engine's address, as the tests' own Docker calls reach it.
fn shared_engine() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// The environment of a test over two engines, and the second engine with the sandbox image.
fn two_engines() -> Option<(TestEnv, PrivateEngine)> {
    let env = TestEnv::for_docker()?;
    let engine = PrivateEngine::start(&test_name(), &[&sandbox_image()])?;
    Some((env, engine))
}

async fn engines(server: &Server) -> Vec<Value> {
    let (status, body) = server.get("/v1/engines").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["engines"].as_array().expect("an engines array").clone()
}

/// The entry of engine `name` in `GET /v1/engines`.
async fn engine(server: &Server, name: &str) -> Value {
    engines(server).await.into_iter().find(|e| e["name"] == name).expect("the engine is listed")
}

/// Waits until `GET /v1/engines` says engine `name` is `state`.
async fn engine_becomes(server: &Server, name: &str, state: &str) {
    eventually(PATIENCE, || async { (engine(server, name).await["state"] == state).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("engine {name} never became {state}:\n{}", server.logs()));
}

#[tokio::test]
async fn sandboxes_spread_over_two_engines_each_bounded_by_its_max() {
    let (env, gvisor) = or_skip!(two_engines());
    let runc = format!("runc={},max=2", shared_engine());
    let runsc = format!("gvisor={},max=2,runtime=runsc", gvisor.host());
    let server = env.serve(&["--engine", &runc, "--engine", &runsc]).await;

    let chats: Vec<String> = (0..4).map(|_| chat()).collect();
    let mut placed = Vec::new();
    for chat_id in &chats {
        placed.push(server.created(chat_id).await["engine"].as_str().unwrap().to_owned());
    }
    placed.sort();
    assert_eq!(placed, ["gvisor", "gvisor", "runc", "runc"]);
    let listed = engines(&server).await;
    assert_eq!(
        listed,
        [
            serde_json::json!({"name": "runc", "state": "up", "running": 2, "max": 2, "runtime": null}),
            serde_json::json!({"name": "gvisor", "state": "up", "running": 2, "max": 2, "runtime": "runsc"}),
        ]
    );
    let (status, body) = server.put_sandbox(&chat()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_error(&body, "capacity_reached", "4 running");

    // The second engine's sandboxes are its own containers, under gVisor, and work.
    let label = format!("io.sandkeeper.instance={}", env.instance_id());
    let on_gvisor = gvisor.containers(&label, false);
    assert_eq!(on_gvisor.len(), 2, "{on_gvisor:?}");
    let runtime = gvisor.docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Runtime}} {{index .Config.Labels \"io.sandkeeper.engine\"}}",
        &on_gvisor[0],
    ]);
    assert_eq!(String::from_utf8_lossy(&runtime.stdout).trim(), "runsc gvisor");
    assert_eq!(env.containers(false).len(), 2);
    for chat_id in &chats {
        assert_eq!(server.shell_stdout(chat_id, "echo placed").await, "placed\n");
    }

    // A replica given only one of the engines says which engine a session's row names.
    let gvisor_chat = {
        let mut found = None;
        for chat_id in &chats {
            if server.get(&format!("/v1/chats/{chat_id}/sandbox")).await.1["engine"] == "gvisor" {
                found = Some(chat_id.clone());
            }
        }
        found.expect("a chat on gvisor")
    };
    let other = env.serve(&["--engine", &runc]).await;
    let (status, body) = other.exec(&gvisor_chat, serde_json::json!({"command": ["true"]})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unknown_engine", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("engine `gvisor` is not one of this replica's engines (runc)"),
        "{message}"
    );
    assert!(message.contains("every replica must be given the same --engine set"), "{message}");
    drop(other);

    for chat_id in &chats {
        assert_eq!(server.delete_sandbox(chat_id).await.0, StatusCode::NO_CONTENT);
    }
    assert!(gvisor.containers(&label, true).is_empty());
}

#[tokio::test]
async fn each_engine_keeps_a_pool_of_its_own_and_a_chat_gets_one_of_its_engine() {
    let (env, gvisor) = or_skip!(two_engines());
    let runc = format!("runc={}", shared_engine());
    let runsc = format!("gvisor={},runtime=runsc", gvisor.host());
    let server = env.serve(&["--engine", &runc, "--engine", &runsc, "--pool-size", "1"]).await;
    let full = eventually(PATIENCE, || async {
        let (_, pool) = server.get("/v1/pool").await;
        (pool["ready"] == 2).then_some(pool)
    })
    .await
    .unwrap_or_else(|| panic!("the pools never filled:\n{}", server.logs()));
    assert_eq!(full["target"], 2, "{full}");
    let per_engine: Vec<(String, Value)> = full["engines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pool| (pool["engine"].as_str().unwrap().to_owned(), pool["ready"].clone()))
        .collect();
    assert_eq!(per_engine, [("runc".to_owned(), 1.into()), ("gvisor".to_owned(), 1.into())]);
    // The private engine serves this test alone.
    let pooled_on_gvisor = gvisor.containers("io.sandkeeper.pool=true", false);
    let pooled_on_runc = env.pooled_containers();
    assert_eq!((pooled_on_gvisor.len(), pooled_on_runc.len()), (1, 1));

    // Two new chats, one placed on each engine: each gets the pooled container of its engine.
    for _ in 0..2 {
        let sandbox = server.created(&chat()).await;
        let container = sandbox["container_id"].as_str().unwrap();
        let pooled =
            if sandbox["engine"] == "gvisor" { &pooled_on_gvisor } else { &pooled_on_runc };
        assert_eq!(pooled, &[container.to_owned()], "{sandbox}");
    }
}

#[tokio::test]
async fn killing_an_engine_under_load_loses_no_chat_and_its_containers_are_reaped_when_back() {
    let (env, lost) = or_skip!(two_engines());
    let kept = format!("kept={}", shared_engine());
    let gone = format!("lost={},runtime=runsc", lost.host());
    let args = [
        "--engine",
        &kept,
        "--engine",
        &gone,
        "--engine-loss-grace",
        "5s",
        "--workspace-checkpoint-interval",
        "1s",
        "--maintenance-interval",
        "1s",
        // A create cut short by the kill can leave a container without a row on the lost
        // engine: reaped as an orphan once the engine is back and it is older than this.
        "--orphan-grace",
        "1s",
    ];
    let server = env.serve(&args).await;

    // Two chats on each engine (the one running fewer comes first), each with a file written.
    let chats: Vec<String> = (0..4).map(|_| chat()).collect();
    let (mut on_lost, mut lost_containers) = (Vec::new(), Vec::new());
    for chat_id in &chats {
        let sandbox = server.created(chat_id).await;
        server.shell(chat_id, WRITE).await;
        if sandbox["engine"] == "lost" {
            on_lost.push(chat_id.clone());
            lost_containers.push(sandbox["container_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(on_lost.len(), 2, "the sandboxes spread over both engines");
    for chat_id in &chats {
        saved_after(&server, chat_id, None).await;
    }

    // Load: new chats keep coming while the engine dies.
    let load = {
        let base = server.url("");
        let client = server.client().clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..12 {
                let chat_id = chat();
                let response = client
                    .put(format!("{base}/v1/chats/{chat_id}/sandbox"))
                    .send()
                    .await
                    .expect("the server answers");
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                answers.push((chat_id, status, body));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    lost.kill();

    // Within the grace the lost chats keep their sandboxes, which answer unavailable.
    let (status, body) = server.exec(&on_lost[0], serde_json::json!({"command": ["true"]})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "docker_unavailable", "{body}");
    let (status, body) = server.get(&format!("/v1/chats/{}/sandbox", on_lost[1])).await;
    assert_eq!((status, &body["engine"]), (StatusCode::OK, &Value::from("lost")), "{body}");

    let answers = load.await.unwrap();
    let mut made_during_loss = Vec::new();
    for (chat_id, status, body) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "a create failed while an engine died: {body}");
        made_during_loss.push(chat_id.clone());
    }
    let last = &answers.last().unwrap().2;
    assert_eq!(last["engine"], "kept", "{last}");
    engine_becomes(&server, "lost", "down").await;
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "ready while one engine answers: {ready}");

    // After it they come back on the other engine with their files.
    for chat_id in &on_lost {
        eventually(PATIENCE, || async {
            let (status, _) = server.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
            (status == StatusCode::NOT_FOUND).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("the lost sandbox of {chat_id} stayed:\n{}", server.logs()));
        comes_back_restored(&server, chat_id).await;
        let (_, sandbox) = server.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
        assert_eq!(sandbox["engine"], "kept", "{sandbox}");
    }
    for chat_id in chats.iter().filter(|chat_id| !on_lost.contains(chat_id)) {
        assert_eq!(server.shell_stdout(chat_id, READ).await, "kept across sandboxes\n");
    }

    // Started again: the containers of its crashed sandboxes (and of a create the kill cut
    // short, if any) are removed by the sweep.
    lost.start_again();
    let label = format!("io.sandkeeper.instance={}", env.instance_id());
    engine_becomes(&server, "lost", "up").await;
    eventually(PATIENCE, || async {
        let (status, _) =
            server.send(server.request(reqwest::Method::POST, "/v1/maintenance/sweep")).await;
        (status == StatusCode::OK && lost.containers(&label, true).is_empty()).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        let left = lost.docker(&["ps", "-a", "--format", "{{.ID}} {{.Status}} {{.Labels}}"]);
        let left = String::from_utf8_lossy(&left.stdout).into_owned();
        panic!("the lost engine's containers stayed:\n{left}\n{}", server.logs())
    });
    for container in &lost_containers {
        let inspect = lost.docker(&["inspect", container]);
        assert!(!inspect.status.success(), "the lost sandbox {container} is still there");
    }
    // The sweep removed them with their crashed rows.
    let removed =
        sandkeeper_tests::metric(&server.metrics().await, "sandbox_maintenance_removed_total");
    assert!(removed.unwrap_or(0.0) >= 2.0, "{removed:?}");
    let (_, crashed) = server.get("/v1/sandboxes?status=crashed").await;
    assert_eq!(crashed["sandboxes"], serde_json::json!([]), "{crashed}");

    for chat_id in chats.iter().chain(&made_during_loss) {
        assert_eq!(server.delete_sandbox(chat_id).await.0, StatusCode::NO_CONTENT, "{chat_id}");
    }
}
