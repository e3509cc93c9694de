//! The API against its documents: every route is in `docs/openapi.yaml` and `docs/api.md` and
//! is served, and `/metrics` is Prometheus text.

use super::*;

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
    let openapi = include_str!("../../../../../docs/openapi.yaml");
    let guide = include_str!("../../../../../docs/api.md");
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

const PROCESS: &str = "/v1/chats/{chat_id}/sandbox/processes/{process_id}";

#[tokio::test]
async fn the_routes_inside_sandboxes_are_documented_served_and_authenticated() {
    let openapi = include_str!("../../../../../docs/openapi.yaml");
    let guide = include_str!("../../../../../docs/api.md");
    let h = harness(Options { token: Some(TOKEN), ..Options::default() });
    let exec_body = r#"{"command": ["true"]}"#;
    for (method, route, path, body) in [
        (Method::POST, "/v1/chats/{chat_id}/sandbox/exec", "exec", exec_body),
        (Method::PUT, "/v1/chats/{chat_id}/sandbox/files/{path}", "files/a.txt", "x"),
        (Method::GET, "/v1/chats/{chat_id}/sandbox/files/{path}", "files/a.txt", ""),
        (Method::POST, "/v1/chats/{chat_id}/sandbox/keepalive", "keepalive", ""),
        (Method::POST, "/v1/chats/{chat_id}/sandbox/processes", "processes", exec_body),
        (Method::GET, "/v1/chats/{chat_id}/sandbox/processes", "processes", ""),
        (Method::GET, PROCESS, "processes/0123456789abcdef", ""),
        (Method::DELETE, PROCESS, "processes/0123456789abcdef", ""),
        (Method::GET, &format!("{PROCESS}/logs"), "processes/0123456789abcdef/logs", ""),
        (Method::POST, &format!("{PROCESS}/stdin"), "processes/0123456789abcdef/stdin", "x"),
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
        let (status, answer) = h.call(authorized(method.clone(), &uri, body)).await;
        // Served: the chat has no sandbox, which is a 404 of its own, not "no such route".
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {answer}");
        assert_eq!(answer["error"]["code"], "sandbox_not_found", "{method} {uri}");
    }
    // The terminal is a WebSocket: a plain request is told so, before any sandbox is looked up.
    let route = "/v1/chats/{chat_id}/sandbox/terminal";
    assert!(openapi.contains(&format!("\n  {route}:\n")), "{route} missing from openapi.yaml");
    assert!(guide.contains(&format!("`GET {route}`")), "GET {route} missing from api.md");
    let terminal = authorized(Method::GET, &format!("/v1/chats/{CHAT}/sandbox/terminal"), "");
    let (status, body) = h.call(terminal).await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED, "{body}");
    assert_error(&body, "websocket_required", "WebSocket");

    let get_exec = authorized(Method::GET, &format!("/v1/chats/{CHAT}/sandbox/exec"), "");
    let (status, body) = h.call(get_exec).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_error(&body, "method_not_allowed", "GET");
}

/// A request that carries the API token.
fn authorized(method: Method, uri: &str, body: &'static str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(body))
        .unwrap()
}
