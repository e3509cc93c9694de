//! The chat routes: get-or-create, read and delete of a chat's sandbox, TTLs, chat ids and
//! bodies, the capacity, and the list.

use super::*;

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
