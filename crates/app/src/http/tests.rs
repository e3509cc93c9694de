//! The API on the in-process ports and the fake runtime: what a client sees for each request.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{TimeDelta, TimeZone, Utc};
use sandkeeper_domain::ContainerId;
use sandkeeper_ports::inprocess::{InMemoryLeases, InMemorySessionRepository, ProcessLocalLocker};
use sandkeeper_ports::testkit::{FakeRuntime, ManualClock};
use sandkeeper_ports::{
    Clock, ContainerSpec, ContainerState, LeaseRequest, MaintenanceLeases, ManagedContainer,
    RuntimeError, SandboxRuntime, SessionRepository,
};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, router};
use crate::config::{ApiToken, ServiceSettings};
use crate::services::{Ports, Probe, Services};

const CHAT: &str = "11111111-1111-1111-1111-111111111111";
const OTHER_CHAT: &str = "22222222-2222-2222-2222-222222222222";
const TOKEN: &str = "test-token-0123456789";

struct Harness {
    app: axum::Router,
    repository: Arc<InMemorySessionRepository>,
    runtime: FakeRuntime,
    clock: Arc<ManualClock>,
    leases: Arc<InMemoryLeases>,
}

#[derive(Default)]
struct Options {
    token: Option<&'static str>,
    max_sandboxes: Option<u64>,
    runtime: Option<Arc<dyn SandboxRuntime>>,
    store_down: bool,
    operations: Option<ServiceSettings>,
}

fn harness(options: Options) -> Harness {
    let repository = Arc::new(InMemorySessionRepository::new());
    let runtime = FakeRuntime::new();
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap()));
    let leases = Arc::new(InMemoryLeases::new(Arc::clone(&clock) as Arc<dyn Clock>));
    let store_down = options.store_down;
    let store_probe: Probe = Arc::new(move || {
        Box::pin(async move {
            if store_down {
                Err("database at `sqlite://x`: connection refused".to_owned())
            } else {
                Ok(())
            }
        })
    });
    let ports = Ports {
        repository: Arc::clone(&repository) as Arc<dyn SessionRepository>,
        leases: Arc::clone(&leases) as Arc<dyn MaintenanceLeases>,
        locker: Arc::new(ProcessLocalLocker::new()),
        runtime: options.runtime.unwrap_or_else(|| Arc::new(runtime.clone())),
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        store_probe,
    };
    let settings = ServiceSettings {
        max_sandboxes: options.max_sandboxes,
        ..options.operations.unwrap_or_default()
    };
    let services = Arc::new(Services::new(ports, &settings));
    let metrics = Arc::new(|| "sandbox_create_total{result=\"created\"} 1\n".to_owned());
    let state = AppState::new(services, metrics, Duration::from_secs(3600));
    let token = options.token.map(ApiToken::for_tests);
    let edge = super::EdgeSettings {
        body_timeout: Duration::from_secs(60),
        body_memory_limit: 256 << 20,
        largest_body: 17 << 20,
        allowed_hosts: Vec::new(),
    };
    Harness { app: router(state, token, edge), repository, runtime, clock, leases }
}

impl Harness {
    async fn call(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, body)
    }

    async fn send(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        self.call(request).await
    }

    async fn put(&self, chat: &str) -> (StatusCode, Value) {
        self.send(Method::PUT, &format!("/v1/chats/{chat}/sandbox"), "").await
    }

    async fn sessions(&self) -> usize {
        self.repository.count_running().await.unwrap() as usize
    }
}

fn assert_error(body: &Value, code: &str, message_part: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(message.contains(message_part), "`{message_part}` not in {body}");
}

#[tokio::test]
async fn put_creates_then_reuses_and_get_and_delete_see_the_same_sandbox() {
    let h = harness(Options::default());
    let (status, created) = h.put(CHAT).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["result"], "created");
    assert_eq!(created["chat_id"], CHAT);
    assert_eq!(created["status"], "running");
    assert_eq!(created["created_at"], "2026-04-02T12:00:00.000Z");
    assert_eq!(created["expires_at"], "2026-04-02T12:05:00.000Z");
    let session_id = created["session_id"].as_str().unwrap().to_owned();
    assert_eq!(created["container_id"], format!("container-{session_id}"));

    let (status, reused) = h.put(&CHAT.to_uppercase()).await;
    assert_eq!(status, StatusCode::OK, "{reused}");
    assert_eq!(reused["result"], "reused");
    assert_eq!(reused["session_id"], session_id.as_str());
    assert_eq!(h.runtime.create_calls().len(), 1);

    let (status, got) = h.send(Method::GET, &format!("/v1/chats/{CHAT}/sandbox"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["session_id"], session_id.as_str());
    assert!(got.get("result").is_none(), "GET has no result: {got}");

    let (status, body) = h.send(Method::DELETE, &format!("/v1/chats/{CHAT}/sandbox"), "").await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert!(h.runtime.container_ids().is_empty());
    let (status, body) = h.send(Method::GET, &format!("/v1/chats/{CHAT}/sandbox"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "sandbox_not_found", CHAT);
    let (status, _) = h.send(Method::DELETE, &format!("/v1/chats/{CHAT}/sandbox"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_expired_sandbox_is_replaced_with_201() {
    let h = harness(Options::default());
    let (_, first) = h.put(CHAT).await;
    h.clock.advance(TimeDelta::minutes(5));
    let (status, second) = h.put(CHAT).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["result"], "replaced");
    assert_ne!(second["session_id"], first["session_id"]);
    assert_eq!(h.sessions().await, 1);
}

#[tokio::test]
async fn put_takes_a_ttl_within_max_ttl() {
    let h = harness(Options::default());
    let (status, body) =
        h.send(Method::PUT, &format!("/v1/chats/{CHAT}/sandbox"), r#"{"ttl_seconds": 60}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["expires_at"], "2026-04-02T12:01:00.000Z");

    let (status, body) = h
        .send(Method::PUT, &format!("/v1/chats/{OTHER_CHAT}/sandbox"), r#"{"ttl_seconds": 3601}"#)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_ttl", "ttl_seconds `3601`");
    assert_eq!(h.sessions().await, 1, "a bad TTL creates nothing");
}

#[tokio::test]
async fn bad_chat_ids_are_named_and_change_nothing() {
    let h = harness(Options::default());
    for (path_id, shown) in
        [("abc", "`abc`"), ("1234", "`1234`"), ("not%20a%20uuid", "`not a uuid`")]
    {
        for method in [Method::PUT, Method::GET, Method::DELETE] {
            let (status, body) =
                h.send(method.clone(), &format!("/v1/chats/{path_id}/sandbox"), "").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path_id}: {body}");
            assert_error(&body, "invalid_chat_id", &format!("chat id {shown} is not a UUID"));
        }
    }
    assert!(h.runtime.calls().is_empty());
    assert_eq!(h.sessions().await, 0);
}

#[tokio::test]
async fn malformed_unknown_and_oversized_bodies_are_refused_and_change_nothing() {
    let h = harness(Options::default());
    let path = format!("/v1/chats/{CHAT}/sandbox");
    let (status, body) = h.send(Method::PUT, &path, "{\"ttl_seconds\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_body", "not valid");
    let (status, body) = h.send(Method::PUT, &path, r#"{"image": "evil"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_body", "unknown field `image`");
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(64 * 1024));
    let (status, body) = h.send(Method::PUT, &path, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&body, "body_too_large", "64 KiB");
    assert!(h.runtime.calls().is_empty());
    assert_eq!(h.sessions().await, 0);
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_read() {
    let h = harness(Options::default());
    let body = format!("{{}}{}", " ".repeat(64 * 1024 - 2));
    let (status, _) = h.send(Method::PUT, &format!("/v1/chats/{CHAT}/sandbox"), &body).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn every_route_but_healthz_needs_the_token() {
    let h = harness(Options { token: Some(TOKEN), ..Options::default() });
    let request = |auth: Option<&str>, path: &str| {
        let mut builder = Request::builder().method(Method::GET).uri(path);
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        builder.body(Body::empty()).unwrap()
    };
    for path in ["/v1/sandboxes", "/metrics", "/readyz", "/nowhere"] {
        let (status, body) = h.call(request(None, path)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_error(&body, "unauthorized", "Authorization: Bearer");
        let (status, body) = h.call(request(Some("Bearer wrong-token"), path)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_error(&body, "unauthorized", "not valid");
        let (status, _) = h.call(request(Some(&format!("Basic {TOKEN}")), path)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _) = h.call(request(Some(&format!("Bearer {TOKEN}")), "/v1/sandboxes")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h.call(request(None, "/healthz")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    let unauthenticated_put = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/chats/{CHAT}/sandbox"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.call(unauthenticated_put).await.0, StatusCode::UNAUTHORIZED);
    assert!(h.runtime.calls().is_empty(), "an unauthenticated request changes nothing");
}

#[tokio::test]
async fn capacity_refuses_new_sandboxes_with_429_but_still_reuses() {
    let h = harness(Options { max_sandboxes: Some(1), ..Options::default() });
    assert_eq!(h.put(CHAT).await.0, StatusCode::CREATED);
    let (status, body) = h.put(OTHER_CHAT).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_error(&body, "capacity_reached", "capacity reached");
    assert_eq!(h.put(CHAT).await.0, StatusCode::OK);
    assert_eq!(h.runtime.create_calls().len(), 1);
}

#[tokio::test]
async fn docker_unavailable_is_503_and_records_nothing() {
    let h = harness(Options::default());
    h.runtime.fail_create(RuntimeError::Unavailable(
        "cannot connect to the Docker engine at unix:///nonexistent.sock".into(),
    ));
    let (status, body) = h.put(CHAT).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "docker_unavailable", "unix:///nonexistent.sock");
    assert_eq!(h.sessions().await, 0);
}

#[tokio::test]
async fn a_failing_runtime_is_a_500_without_its_details() {
    let h = harness(Options::default());
    h.runtime.fail_create(RuntimeError::Failed("engine said: secret internals".into()));
    let (status, body) = h.put(CHAT).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "internal");
    assert!(!body.to_string().contains("secret internals"), "{body}");
}

#[tokio::test]
async fn the_list_filters_by_status_and_names_a_bad_filter() {
    let h = harness(Options::default());
    h.put(CHAT).await;
    h.put(OTHER_CHAT).await;
    let (status, body) = h.send(Method::GET, "/v1/sandboxes", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sandboxes"].as_array().unwrap().len(), 2);
    let (_, body) = h.send(Method::GET, "/v1/sandboxes?status=running", "").await;
    assert_eq!(body["sandboxes"].as_array().unwrap().len(), 2);
    let (_, body) = h.send(Method::GET, "/v1/sandboxes?status=crashed", "").await;
    assert_eq!(body, json!({"sandboxes": []}));
    let (_, body) = h.send(Method::GET, "/v1/sandboxes?limit=1", "").await;
    assert_eq!(body["sandboxes"].as_array().unwrap().len(), 1);

    let (status, body) = h.send(Method::GET, "/v1/sandboxes?status=paused", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(
        &body,
        "invalid_status",
        "status `paused` is not one of running, stopped, crashed",
    );
    let (status, body) = h.send(Method::GET, "/v1/sandboxes?limit=0", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_limit", "limit `0`");
    let (status, body) = h.send(Method::GET, "/v1/sandboxes?colour=red", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_query", "colour");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let h = harness(Options::default());
    let (status, body) = h.send(Method::GET, "/v2/anything", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found", "/v2/anything");
    let (status, body) = h.send(Method::POST, &format!("/v1/chats/{CHAT}/sandbox"), "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&body, "method_not_allowed", "POST");
    let (status, _) = h.send(Method::GET, "/v1/maintenance/sweep", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

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

/// A runtime whose engine cannot be reached.
struct DownRuntime;

#[async_trait]
impl SandboxRuntime for DownRuntime {
    async fn create(&self, _: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        Err(down())
    }
    async fn stop(&self, _: &ContainerId) -> Result<(), RuntimeError> {
        Err(down())
    }
    async fn inspect(&self, _: &ContainerId) -> Result<ContainerState, RuntimeError> {
        Err(down())
    }
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        Err(down())
    }
    async fn ping(&self) -> Result<(), RuntimeError> {
        Err(down())
    }
}

fn down() -> RuntimeError {
    RuntimeError::Unavailable("cannot connect to unix:///nonexistent.sock".into())
}

#[tokio::test]
async fn readyz_names_what_is_down() {
    let h = harness(Options::default());
    let (status, body) = h.send(Method::GET, "/readyz", "").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "ready", "store": "ok", "docker": "ok"}))
    );

    let h = harness(Options { runtime: Some(Arc::new(DownRuntime)), ..Options::default() });
    let (status, body) = h.send(Method::GET, "/readyz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["store"], "ok");
    assert!(body["docker"].as_str().unwrap().starts_with("unavailable: "), "{body}");
    assert!(body["docker"].as_str().unwrap().contains("nonexistent.sock"), "{body}");
    assert_eq!(h.send(Method::GET, "/healthz", "").await.0, StatusCode::OK);

    let h = harness(Options { store_down: true, ..Options::default() });
    let (status, body) = h.send(Method::GET, "/readyz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["store"].as_str().unwrap().starts_with("unavailable: "), "{body}");
}

#[tokio::test]
async fn with_docker_down_reads_still_work_and_writes_answer_503() {
    let h = harness(Options { runtime: Some(Arc::new(DownRuntime)), ..Options::default() });
    let (status, body) = h.put(CHAT).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&body, "docker_unavailable", "nonexistent.sock");
    assert_eq!(h.send(Method::GET, "/v1/sandboxes", "").await.0, StatusCode::OK);
    assert_eq!(h.sessions().await, 0);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let h = harness(Options::default());
    let response = h
        .app
        .clone()
        .oneshot(Request::builder().uri("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("sandbox_create_total"));
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_path_is_served() {
    let openapi = include_str!("../../../../docs/openapi.yaml");
    let guide = include_str!("../../../../docs/api.md");
    let h = harness(Options::default());
    for (method, route, path) in [
        (Method::PUT, "/v1/chats/{chat_id}/sandbox", format!("/v1/chats/{CHAT}/sandbox")),
        (Method::GET, "/v1/sandboxes", "/v1/sandboxes".to_owned()),
        (Method::POST, "/v1/maintenance/cleanup", "/v1/maintenance/cleanup".to_owned()),
        (Method::POST, "/v1/maintenance/sweep", "/v1/maintenance/sweep".to_owned()),
        (Method::GET, "/metrics", "/metrics".to_owned()),
        (Method::GET, "/healthz", "/healthz".to_owned()),
        (Method::GET, "/readyz", "/readyz".to_owned()),
    ] {
        assert!(openapi.contains(&format!("\n  {route}:\n")), "{route} missing from openapi.yaml");
        assert!(
            guide.contains(&format!("`{method} {route}`")),
            "{method} {route} missing from api.md"
        );
        let (status, body) = h.send(method.clone(), &path, "").await;
        assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Inside a sandbox: exec, files, keep-alive and the sliding expiry.
// ---------------------------------------------------------------------------------------------

fn with_operations(operations: ServiceSettings) -> Harness {
    harness(Options { operations: Some(operations), ..Options::default() })
}

impl Harness {
    async fn exec(&self, chat: &str, body: &str) -> (StatusCode, Value) {
        self.send(Method::POST, &format!("/v1/chats/{chat}/sandbox/exec"), body).await
    }

    async fn keep_alive(&self, chat: &str, body: &str) -> (StatusCode, Value) {
        self.send(Method::POST, &format!("/v1/chats/{chat}/sandbox/keepalive"), body).await
    }

    async fn upload(&self, chat: &str, path: &str, bytes: &[u8]) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(Method::PUT)
            .uri(format!("/v1/chats/{chat}/sandbox/files/{path}"))
            .body(Body::from(bytes.to_vec()))
            .unwrap();
        self.call(request).await
    }

    /// The raw answer of a download: status, content type and bytes.
    async fn download(&self, chat: &str, path: &str) -> (StatusCode, String, Vec<u8>) {
        let request = Request::builder()
            .uri(format!("/v1/chats/{chat}/sandbox/files/{path}"))
            .body(Body::empty())
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, content_type, bytes.to_vec())
    }

    async fn expires_at(&self, chat: &str) -> Value {
        let (status, body) = self.send(Method::GET, &format!("/v1/chats/{chat}/sandbox"), "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["expires_at"].clone()
    }
}

fn exec_output(stdout: &[u8], exit_code: Option<i64>) -> sandkeeper_ports::ExecOutput {
    sandkeeper_ports::ExecOutput {
        exit_code,
        stdout: stdout.to_vec(),
        stderr: b"warning\n".to_vec(),
        timed_out: exit_code.is_none(),
        truncated: false,
        duration: Duration::from_millis(1234),
    }
}

#[tokio::test]
async fn exec_without_a_sandbox_says_to_put_one_first() {
    let h = harness(Options::default());
    let (status, body) = h.exec(CHAT, r#"{"command": ["true"]}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "sandbox_not_found", &format!("PUT /v1/chats/{CHAT}/sandbox"));
    assert!(h.runtime.exec_calls().is_empty());
}

#[tokio::test]
async fn exec_runs_the_command_and_answers_its_output_as_text() {
    let h = harness(Options::default());
    let (_, created) = h.put(CHAT).await;
    h.runtime.push_exec_result(Ok(exec_output(b"caf\xc3\xa9 \xff!\n", Some(3))));
    let (status, body) = h
        .exec(
            CHAT,
            r#"{"command": ["sh", "-c", "cat; exit 3"], "stdin": "input", "env": {"LANG": "C"},
                "workdir": "src", "timeout_ms": 2500}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "exit_code": 3,
            "stdout": "café \u{fffd}!\n",
            "stderr": "warning\n",
            "timed_out": false,
            "truncated": false,
            "duration_ms": 1234,
            "session_id": created["session_id"],
        })
    );
    let calls = h.runtime.exec_calls();
    assert_eq!(calls.len(), 1);
    let (container, request) = &calls[0];
    assert_eq!(container.as_str(), created["container_id"].as_str().unwrap());
    assert_eq!(request.command, ["sh", "-c", "cat; exit 3"]);
    assert_eq!(request.stdin.as_deref(), Some(&b"input"[..]));
    assert_eq!(request.env, [("LANG".to_owned(), "C".to_owned())]);
    assert_eq!(request.workdir.as_deref(), Some("/workspace/src"));
    assert_eq!(request.timeout, Duration::from_millis(2500));

    h.runtime.push_exec_result(Ok(exec_output(b"", None)));
    let (_, body) = h.exec(CHAT, r#"{"command": ["sleep", "9"]}"#).await;
    assert_eq!((body["exit_code"].clone(), body["timed_out"].clone()), (Value::Null, json!(true)));
}

#[tokio::test]
async fn bad_exec_requests_name_the_field_and_change_nothing() {
    let h = harness(Options::default());
    h.put(CHAT).await;
    for (body, code, part) in [
        (r#"{"command": []}"#, "invalid_command", "`command` is invalid: is empty"),
        (r#"{"command": ["ls"], "env": {"1A": "x"}}"#, "invalid_env", "variable name `1A`"),
        (r#"{"command": ["ls"], "workdir": "../etc"}"#, "invalid_workdir", "`workdir`"),
        (r#"{"command": ["ls"], "timeout_ms": 0}"#, "invalid_timeout", "`timeout_ms` `0`"),
        (r#"{"cmd": ["ls"]}"#, "invalid_body", "unknown field `cmd`"),
    ] {
        let (status, answer) = h.exec(CHAT, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_error(&answer, code, part);
    }
    assert!(h.runtime.exec_calls().is_empty(), "nothing ran");
    let (status, body) = h.exec("not-a-chat", r#"{"command": ["ls"]}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_chat_id", "`not-a-chat`");
}

#[tokio::test]
async fn exec_stdin_and_bodies_beyond_their_limits_are_413() {
    let operations = ServiceSettings {
        exec: sandkeeper_usecase::ExecSettings {
            stdin_limit: 4,
            ..sandkeeper_usecase::ExecSettings::default()
        },
        ..ServiceSettings::default()
    };
    let h = with_operations(operations);
    h.put(CHAT).await;
    let (status, body) = h.exec(CHAT, r#"{"command": ["cat"], "stdin": "12345"}"#).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "stdin_too_large", "5 bytes is larger than the limit of 4 bytes");
    let huge = format!(r#"{{"command": ["cat"], "stdin": "{}"}}"#, "x".repeat(1 << 20));
    let (status, body) = h.exec(CHAT, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "body_too_large", "--exec-stdin-limit");
    assert!(h.runtime.exec_calls().is_empty());
}

#[tokio::test]
async fn execs_beyond_the_bound_per_sandbox_are_429_and_a_vanished_sandbox_is_409() {
    let h = with_operations(ServiceSettings { per_sandbox: 1, ..ServiceSettings::default() });
    h.put(CHAT).await;
    h.runtime.hold_execs();
    let app = h.app.clone();
    let held = tokio::spawn(async move {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/chats/{CHAT}/sandbox/exec"))
            .body(Body::from(r#"{"command": ["sleep", "1"]}"#))
            .unwrap();
        app.oneshot(request).await.unwrap().status()
    });
    tokio::time::timeout(Duration::from_secs(5), h.runtime.execs_held(1)).await.unwrap();
    let (status, body) = h.exec(CHAT, r#"{"command": ["true"]}"#).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_error(&body, "sandbox_busy", "1 operations are already running");
    h.runtime.release_execs(1);
    assert_eq!(held.await.unwrap(), StatusCode::OK);

    let container = h.runtime.container_ids()[0].clone();
    h.runtime.push_exec_result(Err(sandkeeper_ports::ExecError::ContainerNotRunning {
        container_id: container,
    }));
    h.runtime.release_execs(1);
    let (status, body) = h.exec(CHAT, r#"{"command": ["true"]}"#).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "sandbox_gone", "get-or-create a sandbox and retry");
}

#[tokio::test]
async fn files_go_in_and_out_as_raw_bytes() {
    let h = harness(Options::default());
    let (_, created) = h.put(CHAT).await;
    let bytes: Vec<u8> = (0..=255).collect();
    let (status, body) = h.upload(CHAT, "data/deep/blob.bin", &bytes).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"path": "data/deep/blob.bin", "size": 256, "session_id": created["session_id"]})
    );
    let (status, content_type, downloaded) = h.download(CHAT, "data/deep/blob.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/octet-stream");
    assert_eq!(downloaded, bytes);
    // A name with a space, percent-encoded in the URL.
    assert_eq!(h.upload(CHAT, "my%20notes.txt", b"hi").await.0, StatusCode::OK);
    assert_eq!(h.download(CHAT, "my%20notes.txt").await.2, b"hi");
}

#[tokio::test]
async fn file_errors_map_to_their_statuses() {
    let h = with_operations(ServiceSettings {
        files: sandkeeper_usecase::FileSettings { upload_limit: 8, download_limit: 8 },
        ..ServiceSettings::default()
    });
    let (status, body) = h.upload(CHAT, "a.txt", b"x").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "sandbox_not_found", "PUT /v1/chats/");
    h.put(CHAT).await;

    for (path, code, part) in [
        ("..%2Fetc%2Fpasswd", "invalid_path", "`.` and `..` segments are not allowed"),
        ("%2Fetc%2Fpasswd", "invalid_path", "it is absolute"),
        ("a%5Cb", "invalid_path", "backslash"),
    ] {
        let (status, body) = h.upload(CHAT, path, b"x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_error(&body, code, part);
        let (status, _, _) = h.download(CHAT, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
    for path in ["", "/"] {
        let uri = format!("/v1/chats/{CHAT}/sandbox/files{path}");
        let (status, body) = h.send(Method::GET, &uri, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_error(&body, "invalid_path", "the file's path is missing");
    }
    let (status, body) = h.upload(CHAT, "big.bin", b"123456789").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "file_too_large", "8 bytes");
    let (status, _, body) = h.download(CHAT, "missing.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("file_not_found"));

    let path = |p: &str| sandkeeper_ports::WorkspacePath::parse(p).unwrap();
    h.runtime.fail_file(
        path("dir"),
        sandkeeper_ports::FileError::NotARegularFile {
            path: path("dir"),
            found: "directory".into(),
        },
    );
    h.runtime.fail_file(
        path("link"),
        sandkeeper_ports::FileError::OutsideWorkspace {
            path: path("link"),
            resolved: "/etc/passwd".into(),
        },
    );
    h.runtime
        .fail_file(path("full"), sandkeeper_ports::FileError::WorkspaceFull { path: path("full") });
    for (path, status, code) in [
        ("dir", StatusCode::CONFLICT, "not_a_regular_file"),
        ("link", StatusCode::BAD_REQUEST, "outside_workspace"),
        ("full", StatusCode::INSUFFICIENT_STORAGE, "workspace_full"),
    ] {
        let (answered, body) = h.upload(CHAT, path, b"x").await;
        assert_eq!(answered, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
}

/// Bytes that are not UTF-8 once decoded make the router drop both parameters; the chat id is
/// still judged first, like on every chat route.
#[tokio::test]
async fn a_file_route_names_a_bad_chat_id_before_a_bad_path() {
    let h = harness(Options::default());
    h.put(CHAT).await;
    for (chat, path, code, part) in [
        ("%FF", "a.txt", "invalid_chat_id", "chat id `%FF` is not UTF-8"),
        ("not-a-chat", "%FF", "invalid_chat_id", "chat id `not-a-chat` is not a UUID"),
        ("not-a-chat", "..%2Fx", "invalid_chat_id", "chat id `not-a-chat` is not a UUID"),
        (CHAT, "%FF", "invalid_path", "percent-encode it as UTF-8"),
    ] {
        let (status, body) = h.upload(chat, path, b"x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{chat} {path}: {body}");
        assert_error(&body, code, part);
        let (status, _, body) = h.download(chat, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{chat} {path}");
        assert!(String::from_utf8_lossy(&body).contains(code), "{chat} {path}");
    }
    let container = h.runtime.container_ids()[0].clone();
    let path = sandkeeper_ports::WorkspacePath::parse("a.txt").unwrap();
    assert_eq!(h.runtime.file(&container, &path), None, "nothing was written");
}

#[tokio::test]
async fn keepalive_moves_the_expiry_within_max_ttl_and_the_lifetime() {
    let h = with_operations(ServiceSettings {
        keep_alive: sandkeeper_usecase::KeepAliveSettings {
            max_lifetime: Duration::from_secs(20 * 60),
            ..ServiceSettings::default().keep_alive
        },
        ..ServiceSettings::default()
    });
    let (status, body) = h.keep_alive(CHAT, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "sandbox_not_found", "create one with PUT");

    let (_, created) = h.put(CHAT).await;
    h.clock.advance(TimeDelta::minutes(1));
    let (status, body) = h.keep_alive(CHAT, r#"{"ttl_seconds": 600}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["session_id"], created["session_id"]);
    assert_eq!(body["expires_at"], "2026-04-02T12:11:00.000Z");
    assert_eq!(body["result"], "extended");
    assert_eq!(body["lifetime_ends_at"], "2026-04-02T12:20:00.000Z");
    assert_eq!(h.expires_at(CHAT).await, "2026-04-02T12:11:00.000Z", "GET sees it");

    // No body: the deployment's TTL (5 min), which is sooner: the expiry does not move back.
    let (_, body) = h.keep_alive(CHAT, "").await;
    assert_eq!(
        (body["result"].clone(), body["expires_at"].clone()),
        (json!("unchanged"), json!("2026-04-02T12:11:00.000Z"))
    );

    // Capped at created_at + --max-lifetime.
    h.clock.advance(TimeDelta::minutes(9));
    let (_, body) = h.keep_alive(CHAT, r#"{"ttl_seconds": 3600}"#).await;
    assert_eq!(body["expires_at"], "2026-04-02T12:20:00.000Z", "{body}");
    assert_eq!(body["result"], "extended");

    let (status, body) = h.keep_alive(CHAT, r#"{"ttl_seconds": 3601}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_ttl", "ttl_seconds `3601`");
    let (status, body) = h.keep_alive(CHAT, r#"{"ttl": 60}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_body", "unknown field `ttl`");

    // Expired but not cleaned up yet: gone as far as the caller is concerned.
    h.clock.advance(TimeDelta::minutes(10));
    let (status, body) = h.keep_alive(CHAT, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(h.expires_at(CHAT).await, "2026-04-02T12:20:00.000Z", "not revived");
}

#[tokio::test]
async fn in_sliding_mode_exec_and_files_push_the_expiry() {
    let h = with_operations(ServiceSettings {
        ttl_mode: crate::config::TtlMode::Sliding,
        ..ServiceSettings::default()
    });
    h.put(CHAT).await;
    assert_eq!(h.expires_at(CHAT).await, "2026-04-02T12:05:00.000Z");
    h.clock.advance(TimeDelta::minutes(2));
    assert_eq!(h.exec(CHAT, r#"{"command": ["true"]}"#).await.0, StatusCode::OK);
    assert_eq!(h.expires_at(CHAT).await, "2026-04-02T12:07:00.000Z");
    h.clock.advance(TimeDelta::minutes(2));
    assert_eq!(h.upload(CHAT, "a.txt", b"x").await.0, StatusCode::OK);
    assert_eq!(h.expires_at(CHAT).await, "2026-04-02T12:09:00.000Z");
    // A refused request is no activity.
    h.clock.advance(TimeDelta::minutes(1));
    assert_eq!(h.exec(CHAT, r#"{"command": []}"#).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(h.expires_at(CHAT).await, "2026-04-02T12:09:00.000Z");
}

#[tokio::test]
async fn in_fixed_mode_exec_leaves_the_expiry_alone() {
    let h = harness(Options::default());
    h.put(CHAT).await;
    h.clock.advance(TimeDelta::minutes(2));
    assert_eq!(h.exec(CHAT, r#"{"command": ["true"]}"#).await.0, StatusCode::OK);
    assert_eq!(h.expires_at(CHAT).await, "2026-04-02T12:05:00.000Z");
}

#[tokio::test]
async fn the_routes_inside_sandboxes_are_documented_served_and_authenticated() {
    let openapi = include_str!("../../../../docs/openapi.yaml");
    let guide = include_str!("../../../../docs/api.md");
    let h = harness(Options { token: Some(TOKEN), ..Options::default() });
    let exec_body = r#"{"command": ["true"]}"#;
    for (method, route, path, body) in [
        (Method::POST, "/v1/chats/{chat_id}/sandbox/exec", "exec", exec_body),
        (Method::PUT, "/v1/chats/{chat_id}/sandbox/files/{path}", "files/a.txt", "x"),
        (Method::GET, "/v1/chats/{chat_id}/sandbox/files/{path}", "files/a.txt", ""),
        (Method::POST, "/v1/chats/{chat_id}/sandbox/keepalive", "keepalive", ""),
    ] {
        assert!(openapi.contains(&format!("\n  {route}:\n")), "{route} missing from openapi.yaml");
        assert!(
            guide.contains(&format!("`{method} {route}`")),
            "{method} {route} missing from api.md"
        );
        let uri = format!("/v1/chats/{CHAT}/sandbox/{path}");
        let unauthenticated =
            Request::builder().method(method.clone()).uri(&uri).body(Body::from(body)).unwrap();
        assert_eq!(h.call(unauthenticated).await.0, StatusCode::UNAUTHORIZED, "{method} {uri}");
        let request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::from(body))
            .unwrap();
        let (status, answer) = h.call(request).await;
        // Served: the chat has no sandbox, which is a 404 of its own, not "no such route".
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {answer}");
        assert_eq!(answer["error"]["code"], "sandbox_not_found", "{method} {uri}");
    }
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("/v1/chats/{CHAT}/sandbox/exec"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, body) = h.call(request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_error(&body, "method_not_allowed", "GET");
}
