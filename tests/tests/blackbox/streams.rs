//! Streamed exec through the real binary and the real Docker engine, read by a real HTTP
//! client as Server-Sent Events: output arrives while the command runs, split at character
//! boundaries, bytes that are not UTF-8 in base64, the same caps and timeout as a plain exec,
//! and a client that goes away has its command killed (checked with `ps` in the sandbox).

use std::time::{Duration, Instant};

use sandkeeper_tests::events::output_of;
use sandkeeper_tests::{StatusCode, TestEnv, assert_error, chat, or_skip};
use serde_json::json;

use crate::exec::{assert_all_gone, processes_matching};

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_exec_sends_output_while_the_command_runs_then_its_exit() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);
    // The euro sign is written in two parts, a second apart: it must arrive whole. 0xff is
    // never UTF-8.
    let script = r"echo first; sleep 2; printf '\342\202'; sleep 1; printf '\254 \377\n'; echo oops >&2; exit 4";
    let sent = Instant::now();
    let mut events = server
        .exec_events(&chat_id, json!({"command": ["sh", "-c", script]}))
        .await
        .expect("a streamed exec is answered with events");
    let first = events.next_within(Duration::from_secs(30)).await;
    assert_eq!((first.name.as_str(), &first.data), ("stdout", &json!({"text": "first\n"})));
    assert!(sent.elapsed() < Duration::from_secs(2), "the first line came only at the end");
    let rest = events.rest().await;
    let exit = rest.last().expect("an exit event");
    assert_eq!(exit.name, "exit", "{rest:?}");
    assert_eq!(exit.data["exit_code"], 4);
    assert_eq!((&exit.data["timed_out"], &exit.data["truncated"]), (&json!(false), &json!(false)));
    assert!(exit.data["duration_ms"].as_u64().is_some_and(|ms| ms >= 3000), "{exit:?}");
    assert!(exit.data["session_id"].is_string());
    assert_eq!(rest.iter().filter(|event| event.name == "exit").count(), 1);
    assert!(
        rest.iter().any(|event| event.data == json!({"text": "€ "})),
        "the euro sign was split: {rest:?}"
    );
    assert!(rest.iter().any(|event| event.data == json!({"base64": "/w=="})), "{rest:?}");
    assert_eq!(output_of(&rest, "stdout"), ["€ ".as_bytes(), b"\xff\n"].concat());
    assert_eq!(output_of(&rest, "stderr"), b"oops\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_exec_keeps_the_output_cap_and_the_timeout() {
    let (_env, server, chat_id) =
        or_skip!(TestEnv::docker_sandbox_with(&["--exec-output-limit", "1000"]).await);
    let mut events = server
        .exec_events(
            &chat_id,
            json!({"command": ["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' a; echo; sleep 60"],
                   "timeout_ms": 1500}),
        )
        .await
        .expect("events");
    let all = events.rest().await;
    assert_eq!(output_of(&all, "stdout"), vec![b'a'; 1000]);
    let exit = all.last().unwrap();
    assert_eq!(exit.name, "exit");
    assert_eq!(exit.data["timed_out"], true);
    assert_eq!(exit.data["truncated"], true);
    assert_eq!(exit.data["exit_code"], json!(null));
    assert!(processes_matching(&server, &chat_id, "sleep 60").await.is_empty());

    // Refusals are answered before any event, as JSON with their status.
    let (status, body) =
        server.exec_events(&chat(), json!({"command": ["true"]})).await.err().unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "sandbox_not_found", "has no running sandbox");
    let (status, body) = server.exec_events(&chat_id, json!({"command": []})).await.err().unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_command", "is empty");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_from_a_streamed_exec_has_its_command_killed() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);
    let script = "sleep 321 & (sleep 322 &) ; echo started; sleep 323";
    let mut events = server
        .exec_events(&chat_id, json!({"command": ["sh", "-c", script], "timeout_ms": 300_000}))
        .await
        .expect("events");
    let started = events.next_within(Duration::from_secs(30)).await;
    assert_eq!(started.data, json!({"text": "started\n"}));
    // Three sleepers (and, in dash, the shell that waits for the last).
    assert!(processes_matching(&server, &chat_id, "sleep 32").await.len() >= 3);
    drop(events);
    assert_all_gone(&server, &chat_id, "sleep 32").await;
}
