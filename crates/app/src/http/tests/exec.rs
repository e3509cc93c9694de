//! Commands inside a sandbox: the answer, refused bodies and their limits, the bound per
//! sandbox.

use super::*;

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
