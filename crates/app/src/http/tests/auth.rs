//! The bearer token: every route but `/healthz` needs it, and a request without it changes
//! nothing.

use super::*;

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
