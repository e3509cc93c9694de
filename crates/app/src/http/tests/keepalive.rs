//! Keep-alive and the expiry: within the maximum TTL and the lifetime, and the sliding and fixed
//! modes.

use super::*;

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
