//! The API on the in-process ports and the fake runtime: what a client sees for each request.
//! This module holds the harness (the router on in-memory ports, a manual clock and a fake or
//! unreachable runtime); one module per concern holds the tests.

mod auth;
mod chats;
mod documented;
mod errors;
mod exec;
mod files;
mod keepalive;
mod maintenance;

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
        engines: options.runtime.unwrap_or_else(|| Arc::new(runtime.clone())).into(),
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        store_probe,
        workspaces: None,
        pool: crate::services::pools_in_memory(),
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
