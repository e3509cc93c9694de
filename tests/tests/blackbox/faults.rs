//! Dependencies failing under a running server: Docker going away and coming back, the SQLite
//! file refusing writes, PostgreSQL stopped and started again. In each case a request fails fast
//! with a 503 that names the dependency, nothing is half-written or lost, and the server recovers
//! by itself once the dependency is back, without a restart.
//!
//! Docker tests skip (printing so) without an engine and fail without one under
//! SANDKEEPER_REQUIRE_DOCKER=1; the PostgreSQL test runs a private cluster of its own (it stops
//! it), skips when this machine cannot make one and fails instead under
//! SANDKEEPER_REQUIRE_POSTGRES=1.

mod docker_switch;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::Method;
use sandkeeper_tests::{
    DockerProxy, Immutable, PrivateCluster, Server, StatusCode, TestEnv, assert_error, chat,
    docker, eventually, or_skip,
};
use serde_json::Value;
use sqlx::Connection;

use docker_switch::DockerSwitch;

/// The longest a request may take to fail when Docker is gone: it must not wait for anything.
const DOCKER_FAILS_WITHIN: Duration = Duration::from_secs(5);
/// The longest a request may take to fail when the store refuses writes or is down: the store
/// waits its busy timeout / connection timeout (5 s each), then the request gives up.
const STORE_FAILS_WITHIN: Duration = Duration::from_secs(9);
/// How long recovery may take once a dependency is back.
const RECOVERY_WITHIN: Duration = Duration::from_secs(15);

/// The sessions `GET /v1/sandboxes` lists, by session id, as (chat id, container id, status).
async fn sessions(server: &Server) -> BTreeMap<String, (String, String, String)> {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    server
        .sandboxes()
        .await
        .iter()
        .map(|s| {
            (
                text(&s["session_id"]),
                (text(&s["chat_id"]), text(&s["container_id"]), text(&s["status"])),
            )
        })
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// The sum of every series of a Prometheus metric (0 when it has none yet).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One series of a Prometheus metric, e.g. `name{label="value"}` (0 when absent).
fn metric_series(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn put_timed(server: &Server, chat_id: &str) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let (status, body) = server.put_sandbox(chat_id).await;
    (status, body, started.elapsed())
}

async fn wait_ready(server: &Server, what: &str) {
    let ready = eventually(RECOVERY_WITHIN, || async {
        (server.get("/readyz").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert!(ready.is_some(), "/readyz did not turn 200 {what}:\n{}", server.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_going_away_fails_fast_loses_nothing_and_recovery_needs_no_restart() {
    let engine = or_skip!(DockerProxy::engine_for_test());
    let env = TestEnv::new();
    let mut switch = DockerSwitch::on(&env.data_dir().join("docker.sock"), engine);
    let host = switch.docker_host();
    // Loops every second, so that several cleanup passes and sweeps run during the outage.
    let server = env
        .serve_with_env(
            &["--cleanup-interval", "1s", "--maintenance-interval", "1s"],
            &[("DOCKER_HOST", host.as_str())],
        )
        .await;
    wait_ready(&server, "at start").await;

    let kept = chat();
    let (status, kept_session) = server.put_sandbox_with(&kept, r#"{"ttl_seconds": 600}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{kept_session}");
    // This one expires during the outage: its cleanup must wait for Docker, not drop the row.
    let expiring = chat();
    let (status, expiring_session) =
        server.put_sandbox_with(&expiring, r#"{"ttl_seconds": 4}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{expiring_session}");
    let before = sessions(&server).await;
    let containers_before = sorted(env.containers(true));
    assert_eq!(containers_before.len(), 2);

    switch.switch_off();
    let before_outage = server.metrics().await;

    // A new chat: 503 at once, naming Docker, and nothing recorded.
    let fresh = chat();
    let (status, body, took) = put_timed(&server, &fresh).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "docker_unavailable", "Docker engine");
    assert_error(&body, "docker_unavailable", "retry");
    assert!(took < DOCKER_FAILS_WITHIN, "the 503 took {took:?}");
    assert_eq!(server.get(&format!("/v1/chats/{fresh}/sandbox")).await.0, StatusCode::NOT_FOUND);

    // A live sandbox is still handed out: reuse needs no Docker call.
    let (status, reused) = server.put_sandbox(&kept).await;
    assert_eq!(status, StatusCode::OK, "{reused}");
    assert_eq!(reused["session_id"], kept_session["session_id"]);

    // A delete cannot stop the container, so it keeps the session for a retry.
    let (status, body) = server.delete_sandbox(&kept).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "docker_unavailable", "Docker engine");

    let (status, readiness) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{readiness}");
    assert_eq!(readiness["store"], "ok", "{readiness}");
    let docker_state = readiness["docker"].as_str().unwrap_or_default();
    assert!(docker_state.starts_with("unavailable: "), "{readiness}");
    assert!(docker_state.contains("docker.sock"), "readiness names the engine: {readiness}");

    // An explicit sweep while Docker is away: it can tell nothing about the containers, so it
    // changes nothing and says so in its error count.
    let (status, report) = server.send(server.request(Method::POST, "/v1/maintenance/sweep")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["reconciled"], 0, "{report}");
    assert_eq!(report["removed"], 0, "{report}");
    assert_eq!(report["orphans_removed"], 0, "{report}");
    assert!(report["errors"].as_u64().unwrap_or(0) >= 1, "{report}");

    // Let the background loops run during the outage, past the expiry of `expiring`: sweeps
    // complete (with errors) and cleanup passes fail to stop the expired container.
    let passes_ran = eventually(Duration::from_secs(20), || async {
        let now = server.metrics().await;
        let sweeps = metric_series(&now, "sandbox_maintenance_runs_total{result=\"completed\"}")
            - metric_series(&before_outage, "sandbox_maintenance_runs_total{result=\"completed\"}");
        let cleanup_errors = metric_sum(&now, "sandbox_cleanup_error_total")
            - metric_sum(&before_outage, "sandbox_cleanup_error_total");
        (sweeps >= 2.0 && cleanup_errors >= 1.0).then_some(now)
    })
    .await;
    let during = passes_ran.unwrap_or_else(|| {
        panic!("no sweep or cleanup pass ran during the outage:\n{}", server.logs())
    });
    assert_eq!(metric_sum(&during, "sandbox_maintenance_reconciled_total"), 0.0, "{during}");
    assert_eq!(metric_sum(&during, "sandbox_maintenance_removed_total"), 0.0, "{during}");

    // Nothing was lost, nothing was marked crashed, no container was touched.
    assert_eq!(sessions(&server).await, before, "the sessions changed during the outage");
    assert_eq!(sorted(env.containers(true)), containers_before);
    assert_eq!(sorted(env.containers(false)), containers_before, "every container still runs");
    assert_eq!(server.get(&format!("/v1/chats/{fresh}/sandbox")).await.0, StatusCode::NOT_FOUND);

    // Docker comes back: readiness, creation and cleanup recover without a restart.
    let pid = server.pid();
    switch.switch_on();
    wait_ready(&server, "after Docker came back").await;
    let created = server.created(&fresh).await;
    let (status, reused) = server.put_sandbox(&kept).await;
    assert_eq!((status, &reused["session_id"]), (StatusCode::OK, &kept_session["session_id"]));
    let expected = sorted(vec![
        kept_session["container_id"].as_str().unwrap().to_owned(),
        created["container_id"].as_str().unwrap().to_owned(),
    ]);
    let cleaned = eventually(RECOVERY_WITHIN, || async {
        (sorted(env.containers(true)) == expected).then_some(())
    })
    .await;
    assert!(cleaned.is_some(), "the expired sandbox was not cleaned after recovery");
    let after = sessions(&server).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.values().all(|(_, _, status)| status == "running"), "{after:?}");
    assert!(!after.contains_key(expiring_session["session_id"].as_str().unwrap()));
    assert_eq!(server.pid(), pid);
}

/// Holds SQLite's write lock from another connection, as a backup tool or an operator's
/// `sqlite3` shell in a write transaction would, until released.
struct WriteLock(sqlx::SqliteConnection);

impl WriteLock {
    async fn take(database: &Path) -> Self {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(database)
            .busy_timeout(Duration::from_secs(10));
        let mut connection =
            sqlx::SqliteConnection::connect_with(&options).await.expect("open the database");
        // In WAL mode readers go on beside this; every writer waits for it.
        sqlx::query("BEGIN IMMEDIATE").execute(&mut connection).await.expect("BEGIN IMMEDIATE");
        Self(connection)
    }

    async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.0).await.expect("ROLLBACK");
        self.0.close().await.expect("close the locking connection");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_file_locked_by_another_writer_gives_503_leaves_nothing_and_recovers() {
    let (env, server) = or_skip!(TestEnv::docker_server(&[]).await);
    let kept = chat();
    let kept_session = server.created(&kept).await;
    let before = sessions(&server).await;
    let containers_before = env.containers(true);

    let lock = WriteLock::take(&env.data_dir().join("sandkeeper.db")).await;

    // The container is made, its session cannot be saved: the container must go again.
    let fresh = chat();
    let (status, body, took) = put_timed(&server, &fresh).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "store_unavailable", "store is unavailable");
    assert!(took < STORE_FAILS_WITHIN, "the 503 took {took:?}");
    assert_eq!(env.containers(true), containers_before, "a container outlived its failed save");
    // Reads go on beside the writer.
    assert_eq!(sessions(&server).await, before);
    assert_eq!(server.get(&format!("/v1/chats/{fresh}/sandbox")).await.0, StatusCode::NOT_FOUND);
    // A delete removes the container but cannot forget the session: 503, and a retry finishes.
    let (status, body) = server.delete_sandbox(&kept).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "store_unavailable", "retry");
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);

    lock.release().await;
    let (status, created, took) = put_timed(&server, &fresh).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(took < Duration::from_secs(3), "writes recovered at once: {took:?}");
    // The retried delete finishes; or the session, whose container is gone, was already marked
    // crashed when the engine reported the container's exit, and is no running sandbox any more.
    let (status, body) = server.delete_sandbox(&kept).await;
    assert!(
        status == StatusCode::NO_CONTENT
            || (status == StatusCode::NOT_FOUND
                && sessions(&server)
                    .await
                    .get(kept_session["session_id"].as_str().unwrap())
                    .is_some_and(|(_, _, status)| status == "crashed")),
        "the retried delete finishes: {status} {body}"
    );
    assert_eq!(env.containers(true), vec![created["container_id"].as_str().unwrap().to_owned()]);
    // A crashed row is the sweep's to remove.
    let (status, swept) =
        server.send(server.request(reqwest::Method::POST, "/v1/maintenance/sweep")).await;
    assert_eq!(status, StatusCode::OK, "{swept}");
    let after = sessions(&server).await;
    assert_eq!(after.keys().collect::<Vec<_>>(), vec![created["session_id"].as_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_sqlite_file_gives_503_leaves_nothing_and_recovers() {
    let test = "a_read_only_sqlite_file_gives_503_leaves_nothing_and_recovers";
    let (env, server) = or_skip!(TestEnv::docker_server(&[]).await);
    let kept = chat();
    server.created(&kept).await;
    let before = sessions(&server).await;
    let containers_before = env.containers(true);

    let Some(read_only) = Immutable::database_in(env.data_dir()) else {
        println!("skipped {test}: `chattr +i` does not refuse writes here (needs root, ext4-like)");
        return;
    };

    for _ in 0..3 {
        let (status, body, took) = put_timed(&server, &chat()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_error(&body, "store_unavailable", "store is unavailable");
        assert!(took < STORE_FAILS_WITHIN, "the 503 took {took:?}");
    }
    // Many reads at once make the server open connections while the file refuses writes:
    // SQLite opens those read-only, and none of them may linger once the file is writable.
    for _ in 0..3 {
        let reads = (0..16).map(|_| server.get("/v1/sandboxes"));
        for (status, body) in join_all(reads).await {
            assert!(
                status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                "a read answered {status}: {body}"
            );
        }
    }
    assert_eq!(env.containers(true), containers_before, "a container outlived its failed save");
    assert_eq!(sessions(&server).await, before, "reads still work");
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);

    drop(read_only);
    let fresh = chat();
    let (status, created, took) = put_timed(&server, &fresh).await;
    assert_eq!(status, StatusCode::CREATED, "{created}\n{}", server.logs());
    assert!(took < Duration::from_secs(3), "writes recovered at once: {took:?}");
    // Every connection of the pool writes again: parallel creates all succeed.
    let chats: Vec<String> = (0..10).map(|_| chat()).collect();
    let creates = chats.iter().map(|chat_id| server.put_sandbox(chat_id));
    for (status, body) in join_all(creates).await {
        assert_eq!(status, StatusCode::CREATED, "a write failed after recovery: {body}");
    }
    assert_eq!(sessions(&server).await.len(), 12);
    assert_eq!(env.containers(true).len(), 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_and_restarted_gives_503_then_recovers_without_losing_data() {
    let test = "postgres_stopped_and_restarted_gives_503_then_recovers_without_losing_data";
    if docker(test).is_none() {
        return;
    }
    let cluster = or_skip!(PrivateCluster::start(test));
    let env = TestEnv::new();
    let url = cluster.url();
    let server = env
        .serve(&[
            "--database-url",
            &url,
            "--cleanup-interval",
            "1s",
            "--maintenance-interval",
            "1s",
        ])
        .await;
    wait_ready(&server, "at start").await;
    let kept = chat();
    let kept_session = server.created(&kept).await;
    let before = sessions(&server).await;
    let containers_before = env.containers(true);

    cluster.stop();

    let fresh = chat();
    let (status, body, took) = put_timed(&server, &fresh).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "store_unavailable", "store is unavailable");
    assert!(took < STORE_FAILS_WITHIN, "the 503 took {took:?}");
    let (status, body, took) = put_timed(&server, &kept).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took < STORE_FAILS_WITHIN, "the 503 took {took:?}");
    let (status, body) = server.get("/v1/sandboxes").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "store_unavailable", "retry");
    let (status, readiness) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{readiness}");
    assert!(readiness["store"].as_str().unwrap_or_default().starts_with("unavailable: "));
    assert_eq!(readiness["docker"], "ok", "{readiness}");
    assert_eq!(env.containers(true), containers_before, "nothing was created");
    // The loops keep failing meanwhile; the server stays up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);

    let pid = server.pid();
    cluster.restart();
    wait_ready(&server, "after PostgreSQL came back").await;
    assert_eq!(sessions(&server).await, before, "no session was lost");
    let (status, reused) = server.put_sandbox(&kept).await;
    assert_eq!(status, StatusCode::OK, "{reused}");
    assert_eq!(reused["session_id"], kept_session["session_id"]);
    server.created(&fresh).await;
    assert_eq!(sessions(&server).await.len(), 2);
    assert_eq!(env.containers(true).len(), 2);
    assert_eq!(server.pid(), pid, "the same process served throughout");
}
