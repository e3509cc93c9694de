//! Background processes through the real binary and the real Docker engine: they run on when
//! their client goes away and when the server is killed with SIGKILL and started again, their
//! logs stay readable (within the log bound, oldest bytes dropped), their stdin can be fed,
//! DELETE kills their whole tree (checked with `ps`), and a sandbox runs at most
//! `--max-processes`. Run on every image of the matrix with `SANDKEEPER_TEST_IMAGE`.

use std::time::Duration;

use reqwest::Method;
use sandkeeper_tests::events::output_of;
use sandkeeper_tests::{Server, StatusCode, TestEnv, assert_error, or_skip};
use serde_json::{Value, json};

use crate::exec::processes_matching;

fn id(process: &Value) -> String {
    process["process_id"].as_str().expect("a process id").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_background_process_outlives_its_client_and_a_kill_9_of_the_server() {
    let (env, mut server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);
    let script = "i=0; while [ $i -lt 6 ]; do echo \"line $i\"; i=$((i + 1)); sleep 1; done; \
                  read answer; echo \"got $answer\"; echo done >&2; exit 7";
    let process = server.start_process(&chat_id, json!({"command": ["sh", "-c", script]})).await;
    assert_eq!(process["status"], "running");
    assert_eq!(process["command"], json!(["sh", "-c", script]));
    assert!(process["started_at"].is_string());
    let process_id = id(&process);

    // A client follows the output, then goes away.
    let mut events = server.follow_process(&chat_id, &process_id, (0, 0)).await.expect("events");
    let first = events.next_within(Duration::from_secs(20)).await;
    assert_eq!((first.name.as_str(), &first.data), ("stdout", &json!({"text": "line 0\n"})));
    drop(events);

    // The server dies without any shutdown, and another takes its place.
    server.kill();
    let server = env.serve(&[]).await;
    let (status, listed) = server.get(&format!("/v1/chats/{chat_id}/sandbox/processes")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["processes"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["processes"][0]["process_id"], process_id.as_str());
    assert_eq!(listed["processes"][0]["status"], "running");

    let stdin = Server::process_path(&chat_id, &process_id, "/stdin");
    let (status, _) = server.send(server.request(Method::POST, &stdin).body("yes\n")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let ended = server.ended_process(&chat_id, &process_id, Duration::from_secs(30)).await;
    assert_eq!((&ended["status"], &ended["exit_code"]), (&json!("exited"), &json!(7)), "{ended}");
    assert!(ended["ended_at"].is_string(), "{ended}");

    // Every line it printed, before and after the restart, from offset 0.
    let (status, logs) = server.process_logs(&chat_id, &process_id, (0, 0)).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    let lines: String = (0..6).map(|i| format!("line {i}\n")).collect();
    assert_eq!(logs["stdout"], format!("{lines}got yes\n"));
    assert_eq!(logs["stderr"], "done\n");
    assert_eq!(logs["stdout_offset"], lines.len() + 8);
    assert_eq!((&logs["truncated"], &logs["status"]), (&json!(false), &json!("exited")));
    let (_, rest) = server.process_logs(&chat_id, &process_id, (lines.len() as u64, 5)).await;
    assert_eq!((&rest["stdout"], &rest["stderr"]), (&json!("got yes\n"), &json!("")));

    // Following an ended process reads what is left and ends.
    let mut events = server.follow_process(&chat_id, &process_id, (42, 0)).await.expect("events");
    let all = events.rest().await;
    assert_eq!(output_of(&all, "stdout"), format!("{lines}got yes\n").as_bytes()[42..]);
    let exit = all.last().expect("an exit event");
    assert_eq!(exit.name, "exit");
    assert_eq!(exit.data["process"]["exit_code"], 7);
    assert_eq!(exit.data["stdout_offset"], lines.len() + 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_kills_the_process_tree_and_the_logs_keep_only_the_newest_bytes() {
    let (_env, server, chat_id) = or_skip!(
        TestEnv::docker_sandbox_with(&["--process-log-limit", "64k", "--max-processes", "2"]).await
    );
    // 200,000 bytes of stdout, numbered lines so that what is kept can be checked, then
    // sleepers, one of them in a session of its own.
    let script = "i=0; while [ $i -lt 20000 ]; do echo \"$((100000 + i))ab\"; i=$((i + 1)); done; \
                  sleep 601 & (setsid sleep 602 &); sleep 603";
    let process = server.start_process(&chat_id, json!({"command": ["sh", "-c", script]})).await;
    let process_id = id(&process);
    let (status, second) =
        server.post_process(&chat_id, json!({"command": ["sleep", "604"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let (status, refused) =
        server.post_process(&chat_id, json!({"command": ["sleep", "605"]})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_error(&refused, "too_many_processes", "--max-processes");

    let found = sandkeeper_tests::eventually(Duration::from_secs(20), || async {
        let (_, logs) = server.process_logs(&chat_id, &process_id, (0, 0)).await;
        (logs["truncated"] == true).then_some(logs)
    })
    .await;
    let logs = found.expect("the log dropped its oldest bytes");
    let kept = logs["stdout"].as_str().unwrap();
    let next = logs["stdout_offset"].as_u64().unwrap();
    assert!(kept.len() <= 64 * 1024 && kept.len() >= 56 * 1024, "kept {} bytes", kept.len());
    // Offsets stay absolute: the kept bytes end at the offset to read from next.
    let first_line = kept.lines().nth(1).unwrap();
    let number: u64 = first_line.trim_end_matches("ab").parse().unwrap();
    let line_start = (number - 100_000) * 9;
    assert_eq!(
        kept.find(first_line).map(|at| next - kept.len() as u64 + at as u64),
        Some(line_start)
    );
    assert!(processes_matching(&server, &chat_id, "sleep 60").await.len() >= 4);

    let path = Server::process_path(&chat_id, &process_id, "");
    let (status, _) = server.send(server.request(Method::DELETE, &path)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let left = processes_matching(&server, &chat_id, "sleep 60").await;
    assert!(left.iter().all(|line| line.contains("sleep 604")), "left running: {left:?}");
    let (_, killed) = server.get(&path).await;
    assert_eq!((&killed["status"], &killed["exit_code"]), (&json!("killed"), &json!(null)));

    let unknown = Server::process_path(&chat_id, "0123456789abcdef", "");
    let (status, body) = server.get(&unknown).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "process_not_found", "0123456789abcdef");
    let (status, body) = server.process_logs(&chat_id, "../../etc", (0, 0)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) =
        server.get(&Server::process_path(&chat_id, &process_id, "/logs?stdout_offset=-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_offset", "stdout_offset");
}

/// `--ttl 5s --ttl-mode sliding`: a client that follows a process's output, and one that types
/// into a terminal, keep the sandbox alive well past its TTL without any other call.
#[tokio::test(flavor = "multi_thread")]
async fn in_sliding_mode_following_a_process_and_typing_in_a_terminal_are_use() {
    let (_env, server, chat_id) =
        or_skip!(TestEnv::docker_sandbox_with(crate::exec::SLIDING_5S).await);
    let script = "i=0; while [ $i -lt 12 ]; do echo tick; i=$((i + 1)); sleep 1; done";
    let process = server.start_process(&chat_id, json!({"command": ["sh", "-c", script]})).await;
    let started = std::time::Instant::now();
    let mut events = server.follow_process(&chat_id, &id(&process), (0, 0)).await.expect("events");
    let all = events.rest().await;
    assert!(started.elapsed() > Duration::from_secs(10), "followed for over two TTLs");
    let exit = all.last().expect("an exit event");
    assert_eq!(
        (exit.name.as_str(), &exit.data["process"]["exit_code"]),
        ("exit", &json!(0)),
        "{all:?}"
    );
    assert_eq!(output_of(&all, "stdout"), "tick\n".repeat(12).as_bytes());

    let mut socket = crate::terminal::connect(&server, &chat_id, "", None).await.expect("opened");
    let typing = std::time::Instant::now();
    let mut round = 0;
    while typing.elapsed() < Duration::from_secs(12) {
        round += 1;
        crate::terminal::type_in(&mut socket, &format!("echo round-$(({round} * 10))\n")).await;
        crate::terminal::read_until(&mut socket, &format!("round-{}", round * 10)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    drop(socket);
    let (status, sandbox) = server.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
    assert_eq!(status, StatusCode::OK, "the sandbox outlived its TTL while used: {sandbox}");
}

/// The logs live in the sandbox's `/tmp` (64 MiB): a process that prints more than fits, with a
/// log limit larger than `/tmp`, is not killed by it, its exit status is kept, and what its log
/// kept is still read.
#[tokio::test(flavor = "multi_thread")]
async fn a_process_whose_output_fills_tmp_runs_to_its_end() {
    let (_env, server, chat_id) =
        or_skip!(TestEnv::docker_sandbox_with(&["--process-log-limit", "200m"]).await);
    let script = "head -c 83886080 /dev/zero; echo; echo the end";
    let process = server.start_process(&chat_id, json!({"command": ["sh", "-c", script]})).await;
    let ended = server.ended_process(&chat_id, &id(&process), Duration::from_secs(60)).await;
    assert_eq!((&ended["status"], &ended["exit_code"]), (&json!("exited"), &json!(0)), "{ended}");
    // What was read while /tmp was full is lost; what was kept is still read.
    let (status, logs) = server.process_logs(&chat_id, &id(&process), (0, 0)).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    assert_eq!((&logs["truncated"], &logs["status"]), (&json!(true), &json!("exited")), "{logs}");
    let (_, end) = server.process_logs(&chat_id, &id(&process), (u64::MAX / 2, 0)).await;
    assert!(end["stdout_offset"].as_u64().is_some_and(|end| end > 32 << 20), "{end}");
}
