//! Durable workspaces with the real binary and Docker: a file written in a chat's sandbox is
//! there again after the sandbox expired, after `docker rm -f` of its container plus a
//! checkpoint, after a kill -9 of the server and a restart, and on PostgreSQL on another
//! replica; bad archives and oversized bodies are refused and change nothing. Runs on the image
//! `SANDKEEPER_TEST_IMAGE` names (busybox by default).

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use sandkeeper_ports::tar::{Entry, files, tar};
use sandkeeper_tests::{
    Server, StatusCode, TempDatabase, TestEnv, assert_error, chat, eventually, or_skip,
};
use serde_json::Value;

/// Long enough for a cleanup, a sweep or a checkpoint to come round on a loaded machine.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) const WRITE: &str =
    "mkdir -p notes && printf 'kept across sandboxes\\n' > notes/todo.txt";
pub(crate) const READ: &str = "cat notes/todo.txt";

async fn stored(server: &Server, chat_id: &str) -> (StatusCode, Value) {
    server.get(&format!("/v1/chats/{chat_id}/workspace")).await
}

/// Waits until the chat's stored archive is newer than `after` (an RFC 3339 time, or none).
pub(crate) async fn saved_after(server: &Server, chat_id: &str, after: Option<&str>) -> Value {
    eventually(PATIENCE, || async {
        let (status, body) = stored(server, chat_id).await;
        let saved_at = body["saved_at"].as_str()?.to_owned();
        (status == StatusCode::OK && after.is_none_or(|after| saved_at.as_str() > after))
            .then_some(body)
    })
    .await
    .unwrap_or_else(|| panic!("no archive of chat {chat_id} was stored:\n{}", server.logs()))
}

/// Waits until the chat has no running sandbox.
pub(crate) async fn sandbox_gone(server: &Server, chat_id: &str) {
    let path = format!("/v1/chats/{chat_id}/sandbox");
    eventually(PATIENCE, || async {
        (server.get(&path).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the sandbox of chat {chat_id} stayed:\n{}", server.logs()));
}

/// `PUT` of the chat's sandbox, which must create one and restore the stored workspace.
pub(crate) async fn comes_back_restored(server: &Server, chat_id: &str) {
    let body = server.created(chat_id).await;
    assert_eq!(body["workspace"]["restored"], true, "{body}");
    assert!(body["workspace"]["size_bytes"].as_u64().unwrap() > 0, "{body}");
    assert!(body["workspace"]["saved_at"].is_string(), "{body}");
    assert_eq!(server.shell_stdout(chat_id, READ).await, "kept across sandboxes\n");
}

fn docker_rm(container_id: &str) {
    let removed = Command::new("docker").args(["rm", "-f", container_id]).output().unwrap();
    assert!(removed.status.success(), "{removed:?}");
}

async fn put_archive(server: &Server, chat_id: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let request = server
        .request(Method::PUT, &format!("/v1/chats/{chat_id}/workspace/archive"))
        .header("content-type", "application/x-tar")
        .body(body);
    server.send(request).await
}

#[tokio::test]
async fn a_file_is_there_again_after_the_sandbox_expired_and_the_chat_came_back() {
    let args = ["--ttl", "2s", "--cleanup-interval", "300ms"];
    let (_env, server) = or_skip!(TestEnv::docker_server(&args).await);
    let (chat_id, idle) = (chat(), chat());
    let first = server.created(&chat_id).await;
    assert_eq!(first["workspace"]["restored"], false, "{first}");
    assert_eq!(first["workspace"]["saved_at"], Value::Null, "{first}");
    server.created(&idle).await;
    server.shell(&chat_id, WRITE).await;

    sandbox_gone(&server, &chat_id).await;
    let (status, meta) = stored(&server, &chat_id).await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    assert_eq!(meta["session_id"], first["session_id"], "{meta}");
    // A sandbox nothing ran in expires without an archive: there was nothing to keep.
    sandbox_gone(&server, &idle).await;
    let (status, answer) = stored(&server, &idle).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    comes_back_restored(&server, &chat_id).await;
    server.delete_sandbox(&chat_id).await;
}

#[tokio::test]
async fn a_file_is_there_again_after_docker_rm_f_and_a_checkpoint() {
    let args = ["--workspace-checkpoint-interval", "1s"];
    let (_env, server) = or_skip!(TestEnv::docker_server(&args).await);
    let chat_id = chat();
    let sandbox = server.created(&chat_id).await;
    server.shell(&chat_id, WRITE).await;
    saved_after(&server, &chat_id, None).await;

    docker_rm(sandbox["container_id"].as_str().unwrap());
    sandbox_gone(&server, &chat_id).await;
    comes_back_restored(&server, &chat_id).await;
    server.delete_sandbox(&chat_id).await;
}

#[tokio::test]
async fn a_file_is_there_again_after_a_kill_9_of_the_server_and_a_restart() {
    let env = or_skip!(TestEnv::for_docker());
    // Frequent sweeps: the restarted server finds the missing container soon.
    let args = ["--workspace-checkpoint-interval", "1s", "--maintenance-interval", "1s"];
    let mut server = env.serve(&args).await;
    let chat_id = chat();
    let sandbox = server.created(&chat_id).await;
    server.shell(&chat_id, WRITE).await;
    saved_after(&server, &chat_id, None).await;

    // The host goes down: the server is killed and the container with it.
    server.kill();
    docker_rm(sandbox["container_id"].as_str().unwrap());
    let server = env.serve(&args).await;
    sandbox_gone(&server, &chat_id).await;
    comes_back_restored(&server, &chat_id).await;
    server.delete_sandbox(&chat_id).await;
}

#[tokio::test]
async fn bad_archives_and_oversized_bodies_are_refused_and_change_nothing() {
    let args = ["--workspace-size", "1m"];
    let (_env, server) = or_skip!(TestEnv::docker_server(&args).await);
    let chat_id = chat();
    server.created(&chat_id).await;
    server.shell(&chat_id, WRITE).await;

    let (status, body) = put_archive(&server, &chat_id, b"plain text, no tar".repeat(100)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_archive", "not a tar archive");
    let escaping = tar(&[Entry::symlink("etc", "/etc"), Entry::file("etc/evil", b"x")]);
    let (status, body) = put_archive(&server, &chat_id, escaping).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_archive", "symbolic link");
    let (status, body) = put_archive(&server, &chat_id, tar(&[Entry::file("../up", b"x")])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_archive", "outside /workspace");
    let big = tar(&[Entry::file("big.bin", &vec![7u8; 2 << 20])]);
    let (status, body) = put_archive(&server, &chat_id, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "workspace_too_large", "--workspace-size");

    // Nothing changed: no archive was stored, the sandbox's files are as they were.
    let (status, body) = stored(&server, &chat_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "no_workspace", &chat_id);
    assert_eq!(
        server.shell_stdout(&chat_id, "find . | sort").await,
        ".\n./notes\n./notes/todo.txt\n"
    );

    // A good archive replaces both the running workspace and the stored archive.
    let good = tar(&[Entry::dir("src/"), Entry::file("src/main.py", b"print(42)\n")]);
    let (status, meta) = put_archive(&server, &chat_id, good.clone()).await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    assert_eq!(meta["size_bytes"], good.len() as u64, "{meta}");
    assert_eq!(server.shell_stdout(&chat_id, "find . | sort").await, ".\n./src\n./src/main.py\n");
    let response = server
        .request(Method::GET, &format!("/v1/chats/{chat_id}/workspace/archive"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    let archive = response.bytes().await.unwrap();
    assert_eq!(files(&archive).unwrap(), vec![("src/main.py".to_owned(), b"print(42)\n".to_vec())]);

    server.delete_sandbox(&chat_id).await;
    let deleted = server.request(Method::DELETE, &format!("/v1/chats/{chat_id}/workspace"));
    assert_eq!(server.send(deleted).await.0, StatusCode::NO_CONTENT);
    assert_eq!(stored(&server, &chat_id).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgresql_a_replica_restores_the_workspace_another_saved() {
    let database = or_skip!(TempDatabase::for_docker_test().await);
    let env = TestEnv::new();
    let args = ["--database-url", database.url()];
    let (one, two) = (env.serve(&args).await, env.serve(&args).await);
    let chat_id = chat();
    one.created(&chat_id).await;
    one.shell(&chat_id, WRITE).await;
    let (status, body) = one.delete_sandbox(&chat_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let (status, meta) = stored(&two, &chat_id).await;
    assert_eq!(status, StatusCode::OK, "the other replica sees the archive: {meta}");
    comes_back_restored(&two, &chat_id).await;
    two.delete_sandbox(&chat_id).await;
}
