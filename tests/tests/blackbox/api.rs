//! The API's answers to bad requests and to a Docker engine that cannot be reached. None of
//! these requests may create anything, so they run with or without Docker.

use std::time::{Duration, Instant};

use reqwest::Method;
use sandkeeper_tests::{StatusCode, TestEnv, assert_error};

const CHAT: &str = "3f0c1d7e-5b6a-4c8d-9e0f-112233445566";
const TOKEN: &str = "blackbox-token-5f1e9a7c";

#[tokio::test]
async fn bearer_auth_guards_everything_but_healthz_and_the_token_is_never_logged() {
    let env = TestEnv::new();
    let server = env
        .serve_with_env(&["--api-token", TOKEN, "--log-format", "json"], &[("RUST_LOG", "debug")])
        .await;
    let client = server.client();

    let response = client.get(server.url("/v1/sandboxes")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_error(&body, "unauthorized", "Authorization: Bearer");

    for path in ["/v1/sandboxes", "/metrics", "/readyz"] {
        let wrong = client.get(server.url(path)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let put = client
        .put(server.url(&format!("/v1/chats/{CHAT}/sandbox")))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::UNAUTHORIZED);

    let right = client.get(server.url("/v1/sandboxes")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    let open = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(open.status(), StatusCode::OK);

    assert!(server.sandboxes().await.is_empty(), "a refused request creates nothing");
    let logs = server.logs();
    assert!(logs.contains("request_finished"), "requests are logged: {logs}");
    // The access line carries the request's method, route, status and latency itself.
    let listed = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| {
            line["message"] == "request_finished"
                && line["http.route"] == "/v1/sandboxes"
                && line["http.response.status_code"] == 200
        })
        .unwrap_or_else(|| panic!("no access line for the authorised listing: {logs}"));
    assert_eq!(listed["http.request.method"], "GET", "{listed}");
    assert!(listed["latency_ms"].is_number(), "{listed}");
    assert!(!logs.contains(TOKEN), "the token must never be logged:\n{logs}");
}

#[tokio::test]
async fn bad_chat_ids_are_400_naming_the_value_and_create_nothing() {
    let env = TestEnv::new();
    let server = env.serve(&[]).await;
    for bad in ["abc", "123", "3f0c1d7e-5b6a-4c8d-9e0f-11223344556", "chat-1"] {
        for method in [Method::PUT, Method::GET, Method::DELETE] {
            let (status, body) = server
                .send(server.request(method.clone(), &format!("/v1/chats/{bad}/sandbox")))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {bad}: {body}");
            assert_error(&body, "invalid_chat_id", &format!("chat id `{bad}` is not a UUID"));
        }
    }
    assert!(server.sandboxes().await.is_empty());
    assert!(env.containers(true).is_empty(), "no container may exist");
}

#[tokio::test]
async fn bad_bodies_are_refused_and_create_nothing() {
    let env = TestEnv::new();
    let server = env.serve(&[]).await;

    let (status, body) = server.put_sandbox_with(CHAT, r#"{"ttl_seconds": "#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_body", "not valid");

    let (status, body) = server.put_sandbox_with(CHAT, r#"{"ttl_seconds": 60, "x": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_body", "unknown field `x`");

    let (status, body) = server.put_sandbox_with(CHAT, r#"{"ttl_seconds": 0}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_ttl", "ttl_seconds `0`");

    let (status, body) = server.put_sandbox_with(CHAT, r#"{"ttl_seconds": 86400}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "invalid_ttl", "ttl_seconds `86400`");

    let huge = format!(r#"{{"ttl_seconds": 60, "pad": "{}"}}"#, "x".repeat(70 * 1024));
    let (status, body) = server.put_sandbox_with(CHAT, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "body_too_large", "64 KiB");

    let (status, body) = server.get("/v1/sandboxes?status=sleeping").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_status", "status `sleeping`");

    let (status, body) = server.get("/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found", "/v1/nothing-here");

    let (status, body) = server.send(server.request(Method::PATCH, "/v1/sandboxes")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&body, "method_not_allowed", "PATCH");

    assert!(server.sandboxes().await.is_empty());
    assert!(env.containers(true).is_empty(), "no container may exist");
}

#[tokio::test]
async fn with_docker_unreachable_the_server_starts_and_answers_503_fast() {
    let env = TestEnv::new();
    let server = env.serve_with_env(&[], &[("DOCKER_HOST", "unix:///nonexistent.sock")]).await;

    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!({"status": "ok"})));

    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["store"], "ok");
    let docker = body["docker"].as_str().unwrap();
    assert!(docker.starts_with("unavailable: "), "{body}");
    assert!(docker.contains("/nonexistent.sock"), "{body}");

    let started = Instant::now();
    let (status, body) = server.put_sandbox(CHAT).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "docker_unavailable", "/nonexistent.sock");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "503 must be fast: {:?}",
        started.elapsed()
    );

    let (status, _) = server.get(&format!("/v1/chats/{CHAT}/sandbox")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was recorded");
    assert!(server.sandboxes().await.is_empty());
}
