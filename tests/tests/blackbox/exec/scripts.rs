//! What sandkeeper runs inside a sandbox, seen through the binary: the exec wrapper, the killer
//! and the file scripts must work whatever shell the image has as `/bin/sh` (run this module
//! with `SANDKEEPER_TEST_IMAGE` set to a busybox, a dash and a bash image), and what code in the
//! sandbox does (odd process names, planted links and FIFOs, modes, a delete racing a call)
//! never makes a call answer 500.

use std::time::{Duration, Instant};

use sandkeeper_tests::{StatusCode, TestEnv, assert_error, chat, or_skip, sandbox_runtime};
use serde_json::{Value, json};

use super::processes_matching;

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_of_one_and_two_milliseconds_answer_timed_out() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);

    for round in 0..4 {
        for timeout_ms in [1, 2] {
            let (status, answer) = server
                .exec(&chat_id, json!({"command": ["sleep", "41"], "timeout_ms": timeout_ms}))
                .await;
            assert_eq!(status, StatusCode::OK, "round {round}, {timeout_ms} ms: {answer}");
            assert_eq!(answer["timed_out"], true, "round {round}, {timeout_ms} ms: {answer}");
            assert_eq!(answer["exit_code"], Value::Null, "{answer}");
        }
    }
    let left = processes_matching(&server, &chat_id, "sleep 41").await;
    assert!(left.is_empty(), "commands that timed out are still running: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_whose_name_holds_a_newline_is_killed_at_the_timeout() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);

    // A child that leaves the command's session and renames itself with a newline and a fake
    // end of name, and a grandchild under it: only the parent links tie them to the command.
    let script = r#"setsid sh -c 'printf "x\n) R 1 1 1" > /proc/self/comm; sleep 301; :' &
sleep 302 & echo started; wait"#;
    let (status, answer) =
        server.exec(&chat_id, json!({"command": ["sh", "-c", script], "timeout_ms": 1500})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["timed_out"], true, "{answer}");
    let left = processes_matching(&server, &chat_id, "sleep 30").await;
    assert!(left.is_empty(), "processes escaped the timeout kill: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_features_work_on_the_images_shell() {
    let (_env, server, chat_id) =
        or_skip!(TestEnv::docker_sandbox_with(&["--exec-output-limit", "1k"]).await);

    let (status, answer) = server
        .exec(&chat_id, json!({"command": ["printf", "%s|", "a b", "$HOME", "*", "--", "-n"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["stdout"], "a b|$HOME|*|--|-n|", "arguments arrive as given: {answer}");
    assert_eq!(answer["exit_code"], 0);

    let (_, answer) = server.exec(&chat_id, json!({"command": ["no-such-program"]})).await;
    assert_eq!(answer["exit_code"], 127, "{answer}");
    assert!(answer["stderr"].as_str().unwrap().contains("no-such-program"), "{answer}");
    let (_, answer) = server.exec(&chat_id, json!({"command": ["/etc/passwd"]})).await;
    assert_eq!(answer["exit_code"], 126, "not executable: {answer}");
    let (_, answer) =
        server.exec(&chat_id, json!({"command": ["true"], "workdir": "/no/such/dir"})).await;
    assert_eq!(answer["exit_code"], 126, "{answer}");
    assert!(answer["stderr"].as_str().unwrap().contains("/no/such/dir"), "{answer}");

    server
        .shell(
            &chat_id,
            "mkdir -p './-dash dir' && printf '#!/bin/sh\\necho ran\\n' > ./-tool && chmod +x ./-tool",
        )
        .await;
    let (_, answer) =
        server.exec(&chat_id, json!({"command": ["pwd"], "workdir": "-dash dir"})).await;
    assert_eq!(answer["stdout"], "/workspace/-dash dir\n", "{answer}");
    // A program name that would read as an option is refused, naming it; its path runs it.
    let (status, answer) = server.exec(&chat_id, json!({"command": ["-tool"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_error(&answer, "invalid_command", "`-tool`");
    let (status, answer) = server.exec(&chat_id, json!({"command": ["./-tool"]})).await;
    assert_eq!((status, answer["stdout"].clone()), (StatusCode::OK, json!("ran\n")), "{answer}");

    let (_, answer) = server
        .exec(
            &chat_id,
            json!({"command": ["sh", "-c", "cat; echo \"$A-$B\"; exit 7"], "stdin": "in\n", "env": {"A": "1", "B": "two words"}}),
        )
        .await;
    assert_eq!(answer["stdout"], "in\n1-two words\n", "{answer}");
    assert_eq!(answer["exit_code"], 7);
    let (_, answer) = shell_answer(&server, &chat_id, "head -c 5000 /dev/zero | tr '\\0' a").await;
    assert_eq!(answer["truncated"], true, "{answer}");
    assert_eq!(answer["stdout"].as_str().unwrap().len(), 1024, "{answer}");
}

async fn shell_answer(
    server: &sandkeeper_tests::Server,
    chat_id: &str,
    script: &str,
) -> (StatusCode, Value) {
    server.exec(chat_id, json!({"command": ["sh", "-c", script]})).await
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_links_and_fifos_never_redirect_or_hold_up_an_upload() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);

    // Links at the predictable names a temporary file named after its pid would get
    // (`.sandkeeper-upload.<pid>`) for the next 250 pids the sandbox hands out after this
    // command (each `ln` takes one pid; one `mkfifo` makes every FIFO), in the workspace and in
    // a subdirectory; FIFOs in another.
    server
        .shell(
            &chat_id,
            "mkdir -p sub fifos && base=$$ && n=250 && i=1 && set -- && \
             while [ $i -le $n ]; do p=$((base + 2 * n + i)); \
             ln -s /tmp/escaped.$p .sandkeeper-upload.$p; ln -s /tmp/escaped.$p sub/.sandkeeper-upload.$p; \
             set -- \"$@\" fifos/.sandkeeper-upload.$p; i=$((i + 1)); done; mkfifo \"$@\"",
        )
        .await;
    for path in ["target.txt", "sub/target.txt", "fifos/target.txt", "sub/new/target.txt"] {
        let started = Instant::now();
        let (status, body) = server.upload(&chat_id, path, b"payload").await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(started.elapsed() < Duration::from_secs(20), "{path} was held up");
        assert_eq!(server.download(&chat_id, path).await.2, b"payload", "{path}");
    }
    // Nothing was written outside /workspace, and no temporary file was left behind.
    let answer = server
        .shell(&chat_id, "ls -A /tmp; ls -A . | wc -l; ls -A sub | wc -l; ls -A fifos | wc -l")
        .await;
    assert_eq!(answer["stdout"], "253\n252\n251\n", "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn special_files_modes_and_dangling_links_get_their_own_answers() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);
    server
        .shell(
            &chat_id,
            "mkfifo pipe && echo secret > locked && chmod 000 locked && mkdir ro && chmod 555 ro \
         && mkdir hidden && echo x > hidden/f && chmod 000 hidden \
         && ln -s nothing dangling && ln -s /nowhere/at/all far",
        )
        .await;

    // A FIFO at the path: 409 both ways, without waiting for a writer or a reader.
    let (status, body) = server.download_error(&chat_id, "pipe").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "not_a_regular_file", "`pipe` is a fifo");
    let (status, body) = server.upload(&chat_id, "pipe", b"x").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "not_a_regular_file", "`pipe` is a fifo");

    // Modes that forbid the sandbox's user: 403 naming the path.
    let (status, body) = server.download_error(&chat_id, "locked").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_error(&body, "permission_denied", "may not access `locked`");
    let (status, body) = server.download_error(&chat_id, "hidden/f").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_error(&body, "permission_denied", "may not access `hidden`");
    for path in ["ro/new.txt", "ro/sub/deeper/new.txt"] {
        let (status, body) = server.upload(&chat_id, path, b"x").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_error(&body, "permission_denied", &format!("permission denied for `{path}`"));
        assert_error(&body, "permission_denied", "may not access `ro`");
    }

    // A link to nothing: 400 with where it points, and its target is not created.
    for (path, target) in [("dangling", "nothing"), ("far", "/nowhere/at/all")] {
        let (status, body) = server.upload(&chat_id, path, b"x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_error(&body, "outside_workspace", &format!("to `{target}`, which does not exist"));
        let (status, body) = server.download_error(&chat_id, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_error(&body, "outside_workspace", &format!("to `{target}`, which does not exist"));
    }
    let answer = server.shell(&chat_id, "chmod 755 hidden; ls -A . ro").await;
    assert_eq!(
        answer["stdout"], ".:\ndangling\nfar\nhidden\nlocked\npipe\nro\n\nro:\n",
        "nothing created: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_upload_removes_the_directories_it_created() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);

    // Fill the workspace: the directories can still be made, the file cannot be written.
    server.shell(&chat_id, "mkdir kept; cat /dev/zero > fill 2>/dev/null; true").await;
    let (status, body) = server.upload(&chat_id, "kept/new/deeper/file.bin", &[1u8; 65536]).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_error(&body, "workspace_full", "kept/new/deeper/file.bin");
    let answer = server.shell(&chat_id, "rm fill; ls -A . kept").await;
    assert_eq!(answer["stdout"], ".:\nkept\n\nkept:\n", "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_racing_a_delete_answer_their_result_or_sandbox_gone() {
    let env = or_skip!(TestEnv::for_docker());
    let server = std::sync::Arc::new(env.serve(&[]).await);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..12u64 {
        let chat_id = chat();
        server.created(&chat_id).await;
        let mut calls = tokio::task::JoinSet::new();
        for call in 0..6u64 {
            let (server, chat_id) = (server.clone(), chat_id.clone());
            calls.spawn(async move {
                if call % 2 == 0 {
                    let (status, body) =
                        server.exec(&chat_id, json!({"command": ["echo", "real output"]})).await;
                    let real = body["stdout"] == "real output\n" && body["exit_code"] == 0;
                    ("exec", status, body, real)
                } else {
                    let (status, body) = server.upload(&chat_id, "f.txt", b"bytes").await;
                    let real = body["size"] == 5;
                    ("upload", status, body, real)
                }
            });
        }
        // Spread the delete over the calls' lifetimes from round to round.
        tokio::time::sleep(Duration::from_millis(round * 15)).await;
        let (status, body) = server.delete_sandbox(&chat_id).await;
        assert!(status.is_success(), "{body}");
        while let Some(joined) = calls.join_next().await {
            let (what, status, body, real) = joined.unwrap();
            match status {
                StatusCode::OK => assert!(real, "{what} answered 200 without its result: {body}"),
                StatusCode::CONFLICT => assert_error(&body, "sandbox_gone", ""),
                StatusCode::NOT_FOUND => assert_error(&body, "sandbox_not_found", ""),
                _ => {
                    let logs = server.logs();
                    let errors: Vec<&str> =
                        logs.lines().filter(|line| line.contains("ERROR")).collect();
                    panic!("{what} racing a delete answered {status}: {body}; {errors:?}")
                }
            }
            *seen.entry(format!("{what} {}", status.as_u16())).or_default() += 1;
        }
    }
    eprintln!("answers while racing a delete: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_at_its_process_limit_gets_a_conflict_for_a_transfer_not_a_server_error() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);
    let (status, body) = server.upload(&chat_id, "kept.txt", b"kept").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Sleepers in sessions of their own take every process the sandbox may have (its pids
    // limit is 256) and outlive the command that started them.
    let (status, body) = server
        .exec(
            &chat_id,
            json!({"command": ["sh", "-c", "i=0; while [ $i -lt 400 ]; do \
            setsid sleep 600 </dev/null >/dev/null 2>&1 & i=$((i + 1)); done; exit 0"]}),
        )
        .await;
    if sandbox_runtime().as_deref() == Some("runsc") {
        // Under gVisor the pids limit also counts the threads of the user-space kernel, which
        // cannot start one past it and ends the whole sandbox (docs/security.md): the sandbox
        // is reported gone, never a server error, and the chat's next `PUT` gets a new one.
        let gone = |status: StatusCode, body: &Value| {
            let code = body["error"]["code"].as_str().unwrap_or_default();
            (status, code) == (StatusCode::CONFLICT, "sandbox_gone")
                || (status, code) == (StatusCode::NOT_FOUND, "sandbox_not_found")
        };
        assert!(status == StatusCode::OK || gone(status, &body), "{status} {body}");
        let (status, body) = server.upload(&chat_id, "new.txt", b"new").await;
        assert!(gone(status, &body), "{status} {body}");
        server.created(&chat_id).await;
        return;
    }
    assert_eq!(status, StatusCode::OK, "{body}");

    for _ in 0..2 {
        let (status, body) = server.upload(&chat_id, "new.txt", b"new").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_error(&body, "sandbox_at_limit", "limit of processes or memory");
        let (status, body) = server.download_error(&chat_id, "kept.txt").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_error(&body, "sandbox_at_limit", "`kept.txt`");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_kills_what_escaped_with_setsid_and_nothing_of_another_command() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);

    // Another command leaves a daemon behind (a new session, its parent gone) and returns.
    let daemon = "setsid sh -c 'sleep 2001 </dev/null >/dev/null 2>&1 &'";
    let (status, answer) = server.exec(&chat_id, json!({"command": ["sh", "-c", daemon]})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["exit_code"], 0, "{answer}");

    // The command under test starts daemons the same way, one of them two sessions deep, then
    // runs past its timeout: they must die with it, the other command's daemon must not.
    let script = "setsid sh -c 'sleep 1001 </dev/null >/dev/null 2>&1 &'; \
        setsid sh -c \"setsid sh -c 'sleep 1002 </dev/null >/dev/null 2>&1 &'\"; \
        echo started; exec sleep 1000";
    let (status, answer) =
        server.exec(&chat_id, json!({"command": ["sh", "-c", script], "timeout_ms": 1500})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["timed_out"], true, "{answer}");
    assert_eq!(answer["stdout"], "started\n", "{answer}");
    let left = processes_matching(&server, &chat_id, "sleep 100").await;
    assert!(left.is_empty(), "processes escaped the timeout kill: {left:?}");
    let daemon = processes_matching(&server, &chat_id, "sleep 2001").await;
    assert_eq!(daemon.len(), 1, "another command's daemon was touched: {daemon:?}");
}
