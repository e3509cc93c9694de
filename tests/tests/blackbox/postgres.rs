//! Two replicas on one PostgreSQL database: they share the sessions and serialise each chat's
//! lifecycle across processes. Skips (printing so) without DATABASE_URL or Docker, fails
//! without them under SANDKEEPER_REQUIRE_POSTGRES=1 / SANDKEEPER_REQUIRE_DOCKER=1.

use std::collections::HashSet;
use std::sync::Arc;

use sandkeeper_tests::{StatusCode, TempDatabase, TestEnv, or_skip};

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_postgres_share_sessions_and_create_one_container_per_chat() {
    let database = or_skip!(TempDatabase::for_docker_test().await);
    let env = TestEnv::new();
    let args = ["--database-url", database.url()];
    let first = Arc::new(env.serve(&args).await);
    let second = Arc::new(env.serve(&args).await);
    for replica in [&first, &second] {
        let (status, body) = replica.get("/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let chat_id = uuid::Uuid::new_v4().to_string();
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let replica = Arc::clone(if i % 2 == 0 { &first } else { &second });
            let chat_id = chat_id.clone();
            tokio::spawn(async move { replica.put_sandbox(&chat_id).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    let created = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let reused = answers.iter().filter(|(status, _)| *status == StatusCode::OK).count();
    assert_eq!((created, reused), (1, 19), "{answers:?}");
    let sessions: HashSet<_> =
        answers.iter().map(|(_, body)| body["session_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(sessions.len(), 1);
    assert_eq!(env.containers(true).len(), 1, "exactly one container across both replicas");

    let (status, seen) = second.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["session_id"], answers[0].1["session_id"]);

    let (status, _) = first.delete_sandbox(&chat_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(second.get(&format!("/v1/chats/{chat_id}/sandbox")).await.0, StatusCode::NOT_FOUND);
    assert!(env.containers(true).is_empty());

    // Sessions outlive the processes: a restarted replica reuses what the other created.
    let created = first.created(&chat_id).await;
    drop(first);
    drop(second);
    let third = env.serve(&args).await;
    let (status, reused) = third.put_sandbox(&chat_id).await;
    assert_eq!(status, StatusCode::OK, "{reused}");
    assert_eq!(reused["session_id"], created["session_id"]);
}
