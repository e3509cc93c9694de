//! What a sandbox does stays inside its limits, and a dead sandbox is never handed out: each
//! sandbox runs as a uid of its own, its main process and that process's output are out of its
//! reach and logged nowhere, and a container that dies is replaced by the next `PUT` within
//! moments. Each test skips (printing so) without an engine,
//! and fails without one when SANDKEEPER_REQUIRE_DOCKER=1.

use std::time::Duration;

use reqwest::Method;
use sandkeeper_tests::{StatusCode, TestEnv, chat, docker, eventually, metric, or_skip};
use serde_json::{Value, json};

fn inspect(container_id: &str) -> Value {
    let output = std::process::Command::new("docker")
        .args(["inspect", "--type", "container", container_id])
        .output()
        .expect("the docker CLI runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut all: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    all.remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sandbox_runs_as_a_uid_of_its_own_that_owns_its_workspace() {
    let (_env, server) = or_skip!(TestEnv::docker_server(&[]).await);
    let (first, second) = (chat(), chat());
    let sandbox = server.created(&first).await;
    server.created(&second).await;

    let ids = |text: String| -> (u32, u32, String) {
        let mut lines = text.lines();
        let mut number = || lines.next().and_then(|line| line.parse().ok()).expect(&text);
        let (uid, gid) = (number(), number());
        (uid, gid, lines.next().unwrap_or_default().to_owned())
    };
    let (uid, gid, home) = ids(server.shell_stdout(&first, "id -u; id -g; echo $HOME").await);
    let (other_uid, _, _) = ids(server.shell_stdout(&second, "id -u; id -g; echo $HOME").await);
    assert_eq!(gid, uid);
    assert_eq!(home, "/workspace");
    assert_ne!(uid, other_uid, "two sandboxes share a uid");
    for uid in [uid, other_uid] {
        assert!((1_000_000..=1_999_999).contains(&uid), "uid {uid} outside the default range");
    }
    let container = sandbox["container_id"].as_str().unwrap();
    assert_eq!(inspect(container)["Config"]["Labels"]["io.sandkeeper.uid"], uid.to_string());

    // What is uploaded and what its code makes both belong to the sandbox.
    server.uploaded(&first, "dir/uploaded.txt", b"hello").await;
    let owners = server
        .shell_stdout(
            &first,
            "touch made.txt && stat -c '%u:%g %n' /workspace /workspace/dir/uploaded.txt made.txt",
        )
        .await;
    assert_eq!(
        owners,
        format!(
            "{uid}:{uid} /workspace\n{uid}:{uid} /workspace/dir/uploaded.txt\n{uid}:{uid} made.txt\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_uid_range_is_a_setting() {
    let env = or_skip!(TestEnv::for_docker());
    // Above the default range, so that sandboxes of other tests never hold these two.
    let server =
        env.serve_with_env(&[], &[("SANDKEEPER_SANDBOX_UID_RANGE", "2000000-2000001")]).await;
    let (first, second) = (chat(), chat());
    server.created(&first).await;
    server.created(&second).await;
    let mut uids = vec![
        server.shell_stdout(&first, "id -u").await,
        server.shell_stdout(&second, "id -u").await,
    ];
    uids.sort();
    assert_eq!(uids, vec!["2000000\n", "2000001\n"]);

    for (value, reason) in [
        ("1000-2000", "must start at 65536 or above"),
        ("2000000-1000000", "must not end before it starts"),
        ("1000000-3000000", "must end at 2097151 or below"),
        ("all", "must be `FIRST-LAST`"),
    ] {
        let output = env.command("serve").args(["--sandbox-uid-range", value]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("--sandbox-uid-range: `{value}` {reason}")), "{stderr}");
    }
}

/// A static x86-64 Linux program of a few bytes that needs nothing from the image:
/// `inotify_init1(0)`; on failure it exits 1, on success it holds the instance and sleeps
/// (`pause`) until killed.
#[cfg(target_arch = "x86_64")]
const HOLD_INOTIFY_INSTANCE: &[u8] = &[
    0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x3e, 0x00, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x38, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x9b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // mov eax, 294 (inotify_init1); xor edi, edi; syscall; test rax, rax; js fail
    0xb8, 0x26, 0x01, 0x00, 0x00, 0x31, 0xff, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x78, 0x09,
    // hold: mov eax, 34 (pause); syscall; jmp hold
    0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7,
    // fail: mov edi, 1; mov eax, 60 (exit); syscall
    0xbf, 0x01, 0x00, 0x00, 0x00, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05,
];

/// Exits 1 when no inotify instance could be made, 143 when one was made (and held until
/// `timeout` killed it).
#[cfg(target_arch = "x86_64")]
const TRY_ONE_INSTANCE: &str = "timeout 1 ./hold-inotify; echo $?";

#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_that_uses_up_its_inotify_instances_leaves_other_sandboxes_theirs() {
    let test = "a_sandbox_that_uses_up_its_inotify_instances_leaves_other_sandboxes_theirs";
    if docker(test).is_none() {
        return;
    }
    let limit: u32 = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(u32::MAX);
    if limit > 200 {
        println!(
            "skipped {test}: fs.inotify.max_user_instances is {limit}, more than a sandbox's pids limit can use up"
        );
        return;
    }
    let env = TestEnv::new();
    let server = env.serve(&[]).await;
    let (greedy, other) = (chat(), chat());
    for chat_id in [&greedy, &other] {
        server.created(chat_id).await;
        server.uploaded(chat_id, "hold-inotify", HOLD_INOTIFY_INSTANCE).await;
        server.shell_stdout(chat_id, "chmod +x hold-inotify").await;
        assert_eq!(
            server.shell_stdout(chat_id, TRY_ONE_INSTANCE).await,
            "143\n",
            "the program works"
        );
    }

    // One sandbox holds as many instances as its uid may have while the checks run, and says
    // when it has tried them all (nothing else may try one meanwhile, or it would take a slot).
    let fill = format!(
        "for i in $(seq 1 {}); do ./hold-inotify </dev/null >/dev/null 2>&1 & done; \
         sleep 1; touch filled; sleep 30",
        limit + 10
    );
    let filler = {
        let request = server
            .request(Method::POST, &format!("/v1/chats/{greedy}/sandbox/exec"))
            .header("content-type", "application/json")
            .body(json!({"command": ["sh", "-c", fill], "timeout_ms": 60_000}).to_string());
        tokio::spawn(request.send())
    };
    let filled = eventually(Duration::from_secs(20), || async {
        (server.shell_stdout(&greedy, "test -f filled && echo yes || true").await == "yes\n")
            .then_some(())
    })
    .await;
    assert!(filled.is_some(), "the first sandbox never started its holders");
    assert_eq!(
        server.shell_stdout(&greedy, TRY_ONE_INSTANCE).await,
        "1\n",
        "the first sandbox could still make an inotify instance: it did not use them all up"
    );

    assert_eq!(
        server.shell_stdout(&other, TRY_ONE_INSTANCE).await,
        "143\n",
        "the other sandbox could not make an inotify instance while the first held them all"
    );
    filler.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_main_process_and_its_output_are_out_of_reach_and_logged_nowhere() {
    let (_env, server) = or_skip!(TestEnv::docker_server(&[]).await);
    let chat_id = chat();
    let sandbox = server.created(&chat_id).await;

    // What the main process prints, the engine reads; the sandbox cannot write there, nor stop
    // the process that keeps its container alive.
    let script = "yes A | head -c 1048576 > /proc/1/fd/1";
    let (status, wrote) = server.exec(&chat_id, json!({"command": ["sh", "-c", script]})).await;
    assert_eq!(status, StatusCode::OK, "{wrote}");
    assert_ne!(wrote["exit_code"], 0, "{wrote}");
    assert!(wrote["stderr"].as_str().unwrap_or_default().contains("Permission denied"), "{wrote}");
    let (status, killed) = server.exec(&chat_id, json!({"command": ["kill", "1"]})).await;
    assert_eq!(status, StatusCode::OK, "{killed}");
    assert_ne!(killed["exit_code"], 0, "kill 1 from the sandbox: {killed}");
    assert_eq!(server.shell_stdout(&chat_id, "echo alive").await, "alive\n");

    let found = inspect(sandbox["container_id"].as_str().unwrap());
    assert_eq!(found["HostConfig"]["LogConfig"]["Type"], "none", "{}", found["HostConfig"]);
    let log_path = found["LogPath"].as_str().unwrap_or_default();
    assert_eq!(log_path, "", "the engine keeps a log of the sandbox at {log_path}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_whose_container_died_is_replaced_by_the_next_put_within_moments() {
    if docker("a_sandbox_whose_container_died_is_replaced_by_the_next_put_within_moments").is_none()
    {
        return;
    }
    let env = TestEnv::new();
    // The sweep runs once at start and then not again within the test: it cannot be what
    // notices the death.
    let server = env.serve(&["--maintenance-interval", "1h"]).await;
    let chat_id = chat();
    let sandbox = server.created(&chat_id).await;

    // The container dies without sandkeeper's doing (the sandbox itself cannot stop it).
    let killed = std::process::Command::new("docker")
        .args(["kill", sandbox["container_id"].as_str().unwrap()])
        .output()
        .expect("the docker CLI runs");
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));

    let replaced = eventually(Duration::from_secs(10), || async {
        let (status, body) = server.put_sandbox(&chat_id).await;
        (status == StatusCode::CREATED).then_some(body)
    })
    .await
    .expect("the dead sandbox was still handed out 10 s after its container died");
    assert_eq!(replaced["result"], "created");
    assert_ne!(replaced["session_id"], sandbox["session_id"]);
    assert_eq!(server.shell_stdout(&chat_id, "echo alive").await, "alive\n");
    let (_, crashed) = server.get("/v1/sandboxes?status=crashed").await;
    let ids: Vec<&Value> =
        crashed["sandboxes"].as_array().unwrap().iter().map(|s| &s["session_id"]).collect();
    assert_eq!(ids, vec![&sandbox["session_id"]], "{crashed}");

    // The removals sandkeeper makes itself are no crashes.
    let (status, body) = server.delete_sandbox(&chat_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = server.metrics().await;
    let crashes = |by: &str| {
        metric(&metrics, &format!("sandbox_crashed_total{{detected_by=\"{by}\"}}")).unwrap_or(0.0)
    };
    assert_eq!((crashes("exit_event"), crashes("maintenance")), (1.0, 0.0), "{metrics}");
    let (_, crashed) = server.get("/v1/sandboxes?status=crashed").await;
    assert_eq!(crashed["sandboxes"].as_array().map(Vec::len), Some(1), "{crashed}");
}
