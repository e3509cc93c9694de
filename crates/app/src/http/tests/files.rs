//! Files inside a sandbox: raw bytes in and out, and each file error's status.

use super::*;

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
