//! The mapping of failures to statuses and codes: Docker or the store down, a failing runtime,
//! unknown routes and methods, and the readiness probe.

use super::*;

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
