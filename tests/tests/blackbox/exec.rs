//! Using a sandbox through the real binary and the real Docker engine: running commands,
//! timeouts that leave nothing behind, output caps, the bound per sandbox, files in and out,
//! keep-alive, and the fixed and sliding expiry. Each test skips (printing so) without an
//! engine, and fails without one when SANDKEEPER_REQUIRE_DOCKER=1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sandkeeper_tests::{Server, StatusCode, TestEnv, assert_error, chat, eventually, or_skip};
use serde_json::{Value, json};

mod scripts;

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time as the API writes it
/// (`2026-04-02T12:05:00.000Z`).
fn epoch_ms(value: &Value) -> i64 {
    let text = value.as_str().unwrap_or_else(|| panic!("{value} is not a time"));
    let number = |range: std::ops::Range<usize>| -> i64 {
        text[range].parse().unwrap_or_else(|_| panic!("`{text}` is not an RFC 3339 time"))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute, second, millis) =
        (number(11..13), number(14..16), number(17..19), number(20..23));
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis
}

/// Lines of `ps` in the sandbox that mention `needle`, zombies (dead, waiting for init) left
/// out.
pub(crate) async fn processes_matching(
    server: &Server,
    chat_id: &str,
    needle: &str,
) -> Vec<String> {
    let listing = server.shell(chat_id, "ps -e -o pid,stat,args").await;
    listing["stdout"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(needle) && !line.contains("-o pid,stat,args"))
        .filter(|line| line.split_whitespace().nth(1).is_none_or(|stat| !stat.starts_with('Z')))
        .map(str::to_owned)
        .collect()
}

/// Waits (up to 20 s) until no process in the sandbox mentions `needle`; fails if some stay.
pub(crate) async fn assert_all_gone(server: &Server, chat_id: &str, needle: &str) {
    let gone = eventually(Duration::from_secs(20), || async {
        processes_matching(server, chat_id, needle).await.is_empty().then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "left running: {:?}\nthe server's log:\n{}",
        processes_matching(server, chat_id, needle).await,
        server.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_code_with_stdin_env_and_workdir_and_answers_the_exit_code() {
    let (_env, server) = or_skip!(TestEnv::docker_server(&[]).await);
    let chat_id = chat();

    let (status, body) = server.exec(&chat_id, json!({"command": ["echo", "hi"]})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "sandbox_not_found", &format!("PUT /v1/chats/{chat_id}/sandbox"));

    let sandbox = server.created(&chat_id).await;
    let answer = server.shell(&chat_id, "echo hello; echo oops >&2; exit 3").await;
    assert_eq!(answer["exit_code"], 3);
    assert_eq!(answer["stdout"], "hello\n");
    assert_eq!(answer["stderr"], "oops\n");
    assert_eq!(
        (answer["timed_out"].clone(), answer["truncated"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(answer["session_id"], sandbox["session_id"]);
    assert!(answer["duration_ms"].as_u64().is_some(), "{answer}");

    let (status, answer) =
        server.exec(&chat_id, json!({"command": ["cat"], "stdin": "from stdin\n"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["stdout"], "from stdin\n");

    let (_, answer) = server
        .exec(
            &chat_id,
            json!({"command": ["sh", "-c", "echo \"$GREETING, $WHO\""], "env": {"GREETING": "hello", "WHO": "chat"}}),
        )
        .await;
    assert_eq!(answer["stdout"], "hello, chat\n", "{answer}");

    server.shell(&chat_id, "mkdir -p project/src").await;
    let (_, answer) =
        server.exec(&chat_id, json!({"command": ["pwd"], "workdir": "project/src"})).await;
    assert_eq!(answer["stdout"], "/workspace/project/src\n", "{answer}");
    let (_, answer) = server.exec(&chat_id, json!({"command": ["pwd"]})).await;
    assert_eq!(answer["stdout"], "/workspace\n", "the default workdir");

    // Output that is not UTF-8 is answered with U+FFFD in place of the bad bytes.
    let answer = server.shell(&chat_id, "printf 'caf\\303\\251 \\377\\n'").await;
    assert_eq!(answer["stdout"], "café \u{fffd}\n");
    let (_, answer) = server.exec(&chat_id, json!({"command": ["no-such-program"]})).await;
    assert_eq!(answer["exit_code"], 127, "{answer}");

    for (body, code, part) in [
        (json!({"command": []}), "invalid_command", "is empty"),
        (json!({"command": "ls"}), "invalid_command", "not an array"),
        (json!({"command": ["ls"], "env": {"BAD-NAME": "x"}}), "invalid_env", "BAD-NAME"),
        (json!({"command": ["ls"], "timeout_ms": 0}), "invalid_timeout", "timeout_ms"),
        (json!({"command": ["ls"], "timeout_ms": 600_001}), "invalid_timeout", "600000"),
        (json!({"command": ["ls"], "shell": true}), "invalid_body", "unknown field `shell`"),
    ] {
        let (status, answer) = server.exec(&chat_id, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_error(&answer, code, part);
    }
    let metrics = server.metrics().await;
    assert!(metrics.contains("sandbox_exec_total{result=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("sandbox_exec_total{result=\"error\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_kills_the_command_and_everything_it_started() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);

    let started = Instant::now();
    let (status, answer) = server
        .exec(
            &chat_id,
            json!({
                "command": ["sh", "-c", "echo started; sleep 101 & sleep 102 & (sleep 103; echo late) & wait"],
                "timeout_ms": 1000
            }),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["timed_out"], true, "{answer}");
    assert_eq!(answer["exit_code"], Value::Null, "{answer}");
    assert_eq!(answer["stdout"], "started\n", "output before the kill is kept");
    assert!(answer["duration_ms"].as_u64().unwrap() >= 1000, "{answer}");
    assert!(took < Duration::from_secs(15), "the answer took {took:?}");

    let left = processes_matching(&server, &chat_id, "sleep 10").await;
    assert!(left.is_empty(), "processes of the timed-out command are left: {left:?}");
    let answer = server.shell(&chat_id, "echo still usable").await;
    assert_eq!(answer["stdout"], "still usable\n");
    assert!(server.metrics().await.contains("sandbox_exec_total{result=\"timeout\"} 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn output_beyond_the_limit_is_truncated() {
    let (_env, server, chat_id) =
        or_skip!(TestEnv::docker_sandbox_with(&["--exec-output-limit", "1k"]).await);

    let answer = server
        .shell(
            &chat_id,
            "head -c 5000 /dev/zero | tr '\\0' a; head -c 3000 /dev/zero | tr '\\0' e >&2; exit 4",
        )
        .await;
    assert_eq!(answer["truncated"], true, "{answer}");
    assert_eq!(answer["stdout"], "a".repeat(1024));
    assert_eq!(answer["stderr"], "e".repeat(1024));
    assert_eq!(answer["exit_code"], 4, "the command ran to its end");

    let answer = server.shell(&chat_id, "head -c 1024 /dev/zero | tr '\\0' b").await;
    assert_eq!(answer["truncated"], false, "exactly the limit is not truncated");
    assert_eq!(answer["stdout"].as_str().unwrap().len(), 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn operations_beyond_the_bound_per_sandbox_are_refused_with_429() {
    let env = or_skip!(TestEnv::for_docker());
    let server = Arc::new(env.serve(&["--exec-concurrency", "2"]).await);
    let busy_chat = chat();
    let other_chat = chat();
    let busy = server.created(&busy_chat).await;
    let container = busy["container_id"].as_str().unwrap().to_owned();
    server.created(&other_chat).await;

    let holders: Vec<_> = (0..2)
        .map(|n| {
            let server = Arc::clone(&server);
            let chat_id = busy_chat.clone();
            tokio::spawn(async move {
                // `exec`: a shell that does not replace itself with its last command (dash)
                // would be listed as a third `... sleep 7`.
                let script = format!("touch /tmp/holding-{n}; exec sleep 7");
                server.exec(&chat_id, json!({"command": ["sh", "-c", script]})).await
            })
        })
        .collect();
    // Both slots are taken once both holders sleep; `docker exec` shows it without taking a
    // slot (`docker top` would not: under gVisor it lists the sandbox's host processes).
    let both_running = eventually(Duration::from_secs(20), || async {
        let top = std::process::Command::new("docker")
            .args(["exec", &container, "ps", "-e", "-o", "args"])
            .output()
            .ok()?;
        let listing = String::from_utf8_lossy(&top.stdout).into_owned();
        (listing.lines().filter(|line| line.ends_with("sleep 7")).count() == 2).then_some(())
    })
    .await;
    assert!(both_running.is_some(), "the two holding commands did not start");
    let (status, body) = server.exec(&busy_chat, json!({"command": ["true"]})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_error(&body, "sandbox_busy", "2 operations are already running");
    let (status, body) = server.upload(&busy_chat, "x.txt", b"x").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "a transfer counts too: {body}");
    let answer = server.shell(&other_chat, "echo other sandbox").await;
    assert_eq!(answer["stdout"], "other sandbox\n", "other sandboxes are not affected");

    for holder in holders {
        let (status, answer) = holder.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["exit_code"], 0, "{answer}");
    }
    let answer = server.shell(&busy_chat, "ls /tmp").await;
    assert_eq!(
        answer["stdout"], "holding-0\nholding-1\n",
        "both held a slot; the refused ran nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn files_move_in_and_out_and_stay_inside_the_workspace() {
    let (_env, server) = or_skip!(TestEnv::docker_server(&["--file-size-limit", "4k"]).await);
    let chat_id = chat();

    let (status, body) = server.upload(&chat_id, "a.txt", b"x").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "sandbox_not_found", "PUT /v1/chats/");
    let sandbox = server.created(&chat_id).await;

    // Every byte value, four times, into directories that do not exist yet.
    let bytes: Vec<u8> = (0..4).flat_map(|_| 0..=255u8).collect();
    let (status, body) = server.upload(&chat_id, "data/deep/er/blob.bin", &bytes).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"path": "data/deep/er/blob.bin", "size": 1024, "session_id": sandbox["session_id"]})
    );
    let (status, content_type, downloaded) =
        server.download(&chat_id, "data/deep/er/blob.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/octet-stream");
    assert_eq!(downloaded, bytes, "the bytes come back as they went in");
    let answer =
        server.shell(&chat_id, "wc -c < data/deep/er/blob.bin; md5sum data/deep/er/blob.bin").await;
    let md5 = "b2ea9f7fcea831a4a63b213f41a8855b";
    assert_eq!(answer["stdout"], format!("1024\n{md5}  data/deep/er/blob.bin\n"), "{answer}");

    // A file the sandbox wrote comes out; an upload replaces a file whole.
    server.shell(&chat_id, "echo 'made inside' > 'out put.txt'").await;
    assert_eq!(server.download(&chat_id, "out%20put.txt").await.2, b"made inside\n");
    assert_eq!(server.upload(&chat_id, "out%20put.txt", b"new").await.0, StatusCode::OK);
    assert_eq!(server.download(&chat_id, "out%20put.txt").await.2, b"new");

    // Paths that would leave /workspace. `..` is percent-encoded with its slashes, because
    // HTTP clients resolve a literal `..` before sending.
    for (path, code) in [
        ("..%2F..%2Fetc%2Fpasswd", "invalid_path"),
        ("data%2F..%2F..%2Fetc%2Fpasswd", "invalid_path"),
        ("%2Fetc%2Fpasswd", "invalid_path"),
        ("data//blob.bin", "invalid_path"),
    ] {
        let (status, body) = server.upload(&chat_id, path, b"x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        let (status, _, body) = server.download(&chat_id, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {}", String::from_utf8_lossy(&body));
    }
    server.shell(&chat_id, "ln -s /etc/passwd passwd-link; ln -s /tmp tmp-link").await;
    let (status, body) = server.download_error(&chat_id, "passwd-link").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "outside_workspace", "/etc/passwd");
    let (status, body) = server.upload(&chat_id, "tmp-link/new/x", b"x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(&body, "outside_workspace", "outside /workspace");
    let answer = server.shell(&chat_id, "ls /tmp").await;
    assert_eq!(answer["stdout"], "", "nothing was created under /tmp");

    let (status, body) = server.download_error(&chat_id, "missing.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "file_not_found", "missing.txt");
    let (status, body) = server.download_error(&chat_id, "data/deep").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "not_a_regular_file", "directory");

    // Too large both ways, with nothing written.
    let (status, body) = server.upload(&chat_id, "big.bin", &[7u8; 4097]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "file_too_large", "4096 bytes");
    assert_eq!(server.download(&chat_id, "big.bin").await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.upload(&chat_id, "edge.bin", &[7u8; 4096]).await.0, StatusCode::OK);
    server.shell(&chat_id, "head -c 5000 /dev/zero > made-big.bin").await;
    let (status, body) = server.download_error(&chat_id, "made-big.bin").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_error(&body, "file_too_large", "5000 bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_extends_the_expiry_within_max_ttl_and_max_lifetime() {
    let env = or_skip!(TestEnv::for_docker());
    let limits = ["--ttl", "4s", "--max-ttl", "10s", "--max-lifetime", "10s"];
    let server = env.serve(&[&limits[..], &["--cleanup-interval", "1h"]].concat()).await;
    let chat_id = chat();
    let (status, body) = server.keep_alive(&chat_id, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "sandbox_not_found", "create one with PUT");

    let sandbox = server.created(&chat_id).await;
    let created_at = epoch_ms(&sandbox["created_at"]);
    assert_eq!(epoch_ms(&sandbox["expires_at"]) - created_at, 4000);

    let (status, kept) = server.keep_alive(&chat_id, r#"{"ttl_seconds": 6}"#).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["result"], "extended");
    assert_eq!(kept["session_id"], sandbox["session_id"]);
    let lived = epoch_ms(&kept["expires_at"]) - created_at;
    assert!((6000..10_000).contains(&lived), "now + 6 s is {lived} ms after creation: {kept}");
    assert_eq!(epoch_ms(&kept["lifetime_ends_at"]) - created_at, 10_000);
    let (_, got) = server.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
    assert_eq!(got["expires_at"], kept["expires_at"], "GET shows the new expiry");

    // Asking for the whole --max-ttl from now would pass created_at + --max-lifetime.
    let (_, capped) = server.keep_alive(&chat_id, r#"{"ttl_seconds": 10}"#).await;
    assert_eq!(epoch_ms(&capped["expires_at"]) - created_at, 10_000, "{capped}");
    assert_eq!(capped["result"], "extended");
    let (_, again) = server.keep_alive(&chat_id, "").await;
    assert_eq!(
        (again["result"].clone(), again["expires_at"].clone()),
        (json!("unchanged"), capped["expires_at"].clone())
    );

    let (status, body) = server.keep_alive(&chat_id, r#"{"ttl_seconds": 11}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_ttl", "from 1 to 10");

    // An expired sandbox that the cleanup has not removed yet is not brought back.
    let short = chat();
    let (status, _) = server.put_sandbox_with(&short, r#"{"ttl_seconds": 1}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, body) = server.keep_alive(&short, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = server.get(&format!("/v1/chats/{short}/sandbox")).await;
    assert_eq!(status, StatusCode::OK, "it is still listed until the cleanup removes it");
    assert!(server.metrics().await.contains("sandbox_keepalive_total{"));
}

/// A server whose sandboxes expire 5 s after their last use, cleaned up every second.
pub(crate) const SLIDING_5S: &[&str] =
    &["--ttl", "5s", "--ttl-mode", "sliding", "--cleanup-interval", "1s"];

/// `--ttl 5s --ttl-mode sliding`: a sandbox used every second outlives its TTL, also through a
/// command longer than the TTL; once idle it is removed. (The TTL leaves a loaded machine time
/// for the first create.)
#[tokio::test(flavor = "multi_thread")]
async fn in_sliding_mode_a_sandbox_in_use_survives_and_is_reaped_once_idle() {
    let (env, server) = or_skip!(TestEnv::docker_server(SLIDING_5S).await);
    let chat_id = chat();
    let sandbox = server.created(&chat_id).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let answer = server.shell(&chat_id, "true").await;
        assert_eq!(answer["session_id"], sandbox["session_id"], "the same sandbox all along");
    }
    let answer = server.shell(&chat_id, "sleep 7; echo done").await;
    assert_eq!(answer["stdout"], "done\n", "a command longer than the TTL ran to its end");
    let (status, got) = server.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["session_id"], sandbox["session_id"]);
    assert_eq!(env.containers(false).len(), 1, "its container still runs");
    assert!(started.elapsed() > Duration::from_secs(15), "it lived over three TTLs");

    let idle = Instant::now();
    let reaped = eventually(Duration::from_secs(25), || async {
        env.containers(true).is_empty().then_some(())
    })
    .await;
    assert!(reaped.is_some(), "the idle sandbox was not removed:\n{}", server.logs());
    assert!(idle.elapsed() >= Duration::from_secs(2), "removed only after going idle");
    let (status, _) = server.get(&format!("/v1/chats/{chat_id}/sandbox")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// `--ttl 3s` in the default fixed mode: use does not matter, the sandbox expires on schedule.
#[tokio::test(flavor = "multi_thread")]
async fn in_fixed_mode_a_sandbox_in_use_still_expires_on_schedule() {
    let (env, server) =
        or_skip!(TestEnv::docker_server(&["--ttl", "3s", "--cleanup-interval", "1s"]).await);
    let chat_id = chat();
    let sandbox = server.created(&chat_id).await;
    let expires_at = sandbox["expires_at"].clone();
    let started = Instant::now();
    let mut refused = None;
    while started.elapsed() < Duration::from_secs(10) {
        let (status, body) = server.exec(&chat_id, json!({"command": ["true"]})).await;
        if status != StatusCode::OK {
            refused = Some((started.elapsed(), status, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (after, status, body) = refused.expect("the sandbox never expired");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64;
    // Judged against the sandbox's own expiry: on a loaded machine the create itself can take
    // a good part of the TTL.
    assert!(
        now_ms >= epoch_ms(&expires_at),
        "refused before its expiry {expires_at}, after {after:?}: {body}"
    );
    // Expired: 404 for a command that comes after the expiry, or 409 for one the cleanup
    // removed the sandbox under.
    match status {
        StatusCode::NOT_FOUND => assert_error(&body, "sandbox_not_found", "PUT"),
        StatusCode::CONFLICT => assert_error(&body, "sandbox_gone", "get-or-create"),
        other => panic!("{other}: {body}"),
    }
    let reaped = eventually(Duration::from_secs(10), || async {
        env.containers(true).is_empty().then_some(())
    })
    .await;
    assert!(reaped.is_some(), "the expired sandbox was not removed:\n{}", server.logs());
    let (_, listed) = server.get("/v1/sandboxes").await;
    assert_eq!(listed, json!({"sandboxes": []}), "its expiry stayed {expires_at}");
}

/// What happens to a command when its sandbox expires under it (fixed mode): nothing, until the
/// cleanup removes the sandbox; that kills the command with its container, and the call answers
/// 409 `sandbox_gone` at once, long before the command's own timeout.
#[tokio::test(flavor = "multi_thread")]
async fn an_exec_in_flight_when_its_sandbox_expires_is_killed_and_answers_409() {
    // The TTL leaves a loaded machine time to start the exec before the sandbox expires.
    let (env, server, chat_id) =
        or_skip!(TestEnv::docker_sandbox_with(&["--ttl", "6s", "--cleanup-interval", "1s"]).await);
    let started = Instant::now();
    let (status, body) = server
        .exec(
            &chat_id,
            json!({"command": ["sh", "-c", "echo working; sleep 30"], "timeout_ms": 25_000}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "sandbox_gone", "get-or-create a sandbox and retry");
    assert!(took < Duration::from_secs(20), "answered after {took:?}, not at the cleanup");
    // The command ends when the cleanup stops the container, which it removes right after.
    let removed = eventually(Duration::from_secs(20), || async {
        env.containers(true).is_empty().then_some(())
    })
    .await;
    assert!(removed.is_some(), "the container is gone");
    let (status, recreated) = server.put_sandbox(&chat_id).await;
    assert_eq!(status, StatusCode::CREATED, "a new sandbox for the chat: {recreated}");
    assert_eq!(recreated["result"], "created");
}
