//! `/readyz` follows whether the store takes writes, not only whether it answers reads: while
//! the SQLite file refuses writes the server is not ready (503, naming the store), and it is
//! ready again once the file takes writes, without a restart and without a request having to
//! succeed first.
//!
//! Needs Docker (the server's readiness asks it too) and `chattr +i` (root, an ext4-like
//! filesystem); skips, saying so, without them.

use std::time::Duration;

use sandkeeper_tests::{Immutable, StatusCode, TestEnv, docker, eventually};

/// The store probes writes at most once per 5 s when none was tried; room to spare.
const READY_AGAIN_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_while_the_sqlite_file_refuses_writes_and_200_once_it_takes_them_again() {
    let test =
        "readyz_is_503_while_the_sqlite_file_refuses_writes_and_200_once_it_takes_them_again";
    if docker(test).is_none() {
        return;
    }
    let env = TestEnv::new();
    let server = env.serve(&[]).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, created) = server.put_sandbox(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let Some(read_only) = Immutable::database_in(env.data_dir()) else {
        println!("skipped {test}: `chattr +i` does not refuse writes here (needs root, ext4-like)");
        return;
    };
    let (status, body) = server.put_sandbox(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Reads still work, but a store that refuses writes cannot serve: not ready.
    assert_eq!(server.get("/v1/sandboxes").await.0, StatusCode::OK);
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["store"].as_str().is_some_and(|s| s.contains("refuses writes")), "{body}");
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK, "alive all along");

    drop(read_only);
    // No request writes meanwhile: the store's own probe finds the file writable again.
    let ready = eventually(READY_AGAIN_WITHIN, || async {
        let (status, body) = server.get("/readyz").await;
        (status == StatusCode::OK).then_some(body)
    })
    .await;
    assert!(ready.is_some(), "/readyz stayed 503 after the file took writes again");
    let (status, created) = server.put_sandbox(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}
