//! `SandboxRuntime::exec` against a real engine: output, exit codes, input, environment,
//! working directory, output caps, and timeouts that leave no process behind.
//!
//! Each test uses its own instance id and removes its containers when it ends (even by
//! panic). Without an engine the tests print that they skipped; with
//! `SANDKEEPER_REQUIRE_DOCKER=1` they fail instead.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandkeeper_adapters_docker::{DURATION_METRIC, DockerRuntime};
use sandkeeper_domain::ContainerId;
use sandkeeper_ports::{ExecError, ExecOutput, ExecRequest, SandboxRuntime};

const MIB: usize = 1024 * 1024;

fn request(command: &[&str]) -> ExecRequest {
    ExecRequest::new(
        command.iter().map(|part| (*part).to_owned()).collect(),
        Duration::from_secs(20),
        MIB,
    )
}

fn shell(script: &str) -> ExecRequest {
    request(&["sh", "-c", script])
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("utf-8 output")
}

async fn run(runtime: &DockerRuntime, id: &ContainerId, request: ExecRequest) -> ExecOutput {
    runtime.exec(id, &request).await.unwrap_or_else(|error| panic!("{request:?}: {error}"))
}

#[tokio::test]
async fn exec_returns_stdout_stderr_and_the_exit_code() {
    let Some((engine, id)) = Engine::with_sandbox("exec_returns_stdout_stderr").await else {
        return;
    };

    let output = run(&engine.runtime, &id, request(&["echo", "hello", "world"])).await;
    assert_eq!(text(&output.stdout), "hello world\n");
    assert_eq!(output.stderr, b"");
    assert_eq!(output.exit_code, Some(0));
    assert!(!output.timed_out && !output.truncated, "{output:?}");
    assert!(output.duration < Duration::from_secs(10), "{output:?}");

    let output = run(&engine.runtime, &id, shell("echo out; echo err >&2; exit 3")).await;
    assert_eq!((text(&output.stdout), text(&output.stderr)), ("out\n", "err\n"));
    assert_eq!(output.exit_code, Some(3));

    // A program that does not exist, as a shell would report it.
    let output = run(&engine.runtime, &id, request(&["no-such-program"])).await;
    assert_eq!(output.exit_code, Some(127), "{output:?}");
    assert!(text(&output.stderr).contains("no-such-program"), "{output:?}");

    // A program whose name looks like an option is never read as an option of the wrapper's
    // `exec`: it is refused as a program that cannot be run, with a message saying why.
    let output = run(&engine.runtime, &id, request(&["-n"])).await;
    assert_eq!(output.exit_code, Some(127), "{output:?}");
    assert!(text(&output.stderr).contains("begins with \"-\": -n"), "{output:?}");
    let output = run(&engine.runtime, &id, request(&["--"])).await;
    assert_eq!(output.exit_code, Some(127), "{output:?}");

    // Arguments reach the program as given: no shell splitting or expansion on the way.
    let output = run(&engine.runtime, &id, request(&["printf", "%s|", "a b", "$HOME", "*"])).await;
    assert_eq!(text(&output.stdout), "a b|$HOME|*|");
}

#[tokio::test]
async fn exec_feeds_stdin_sets_the_environment_and_the_working_directory() {
    let Some((engine, id)) = Engine::with_sandbox("exec_feeds_stdin").await else { return };

    let mut with_stdin = request(&["cat"]);
    let binary: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    with_stdin.stdin = Some(binary.clone());
    let output = run(&engine.runtime, &id, with_stdin).await;
    assert_eq!(output.exit_code, Some(0));
    assert!(output.stdout == binary, "stdin came back changed ({} bytes)", output.stdout.len());

    // Without stdin the command reads end-of-file at once instead of waiting.
    let output = run(&engine.runtime, &id, request(&["cat"])).await;
    assert_eq!((output.exit_code, output.stdout.len()), (Some(0), 0));

    let mut with_env = shell("echo \"$GREETING|$EMPTY|$HOME\"");
    with_env.env = vec![("GREETING".into(), "hello there".into()), ("EMPTY".into(), String::new())];
    let output = run(&engine.runtime, &id, with_env).await;
    assert_eq!(text(&output.stdout), "hello there||/workspace\n");

    let output = run(&engine.runtime, &id, request(&["pwd"])).await;
    assert_eq!(text(&output.stdout), "/workspace\n", "the default working directory");
    run(&engine.runtime, &id, request(&["mkdir", "-p", "/workspace/project/src"])).await;
    let mut elsewhere = request(&["pwd"]);
    elsewhere.workdir = Some("/workspace/project/src".into());
    assert_eq!(
        text(&run(&engine.runtime, &id, elsewhere).await.stdout),
        "/workspace/project/src\n"
    );

    let mut missing = request(&["pwd"]);
    missing.workdir = Some("/workspace/nowhere".into());
    let output = run(&engine.runtime, &id, missing).await;
    assert_eq!(output.exit_code, Some(126), "{output:?}");
    assert!(text(&output.stderr).contains("/workspace/nowhere"), "{output:?}");
}

#[tokio::test]
async fn output_beyond_the_cap_is_read_and_discarded_so_the_command_still_finishes() {
    let Some((engine, id)) = Engine::with_sandbox("output_beyond_the_cap").await else { return };

    // 8 MiB on stdout and 8 MiB on stderr, far beyond a 64 KiB cap: the command is never
    // blocked on a full pipe, so it exits by itself with its own status.
    let mut loud = shell("yes | head -c 8388608; yes e | head -c 8388608 >&2; exit 7");
    loud.output_limit = 64 * 1024;
    let output = run(&engine.runtime, &id, loud).await;
    assert_eq!(output.exit_code, Some(7), "{:?}", output.exit_code);
    assert!(output.truncated && !output.timed_out);
    assert_eq!(output.stdout.len(), 64 * 1024);
    assert_eq!(output.stderr.len(), 64 * 1024);
    assert!(output.stdout.chunks(2).all(|pair| pair == b"y\n"));
    assert!(output.stderr.chunks(2).all(|pair| pair == b"e\n"));

    // Under the cap nothing is marked truncated.
    let mut quiet = shell("yes | head -c 1000");
    quiet.output_limit = 1000;
    let output = run(&engine.runtime, &id, quiet).await;
    assert_eq!((output.stdout.len(), output.truncated), (1000, false));
}

#[tokio::test]
async fn a_command_that_never_stops_writing_is_capped_and_returns_at_its_timeout() {
    let Some((engine, id)) = Engine::with_sandbox("never_stops_writing").await else { return };

    let mut spew = request(&["yes"]);
    spew.timeout = Duration::from_secs(2);
    spew.output_limit = 100_000;
    let started = Instant::now();
    let output = run(&engine.runtime, &id, spew).await;
    let took = started.elapsed();
    assert!(output.timed_out && output.truncated, "{:?}", (output.timed_out, output.truncated));
    assert_eq!(output.exit_code, None);
    assert_eq!(output.stdout.len(), 100_000);
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "took {took:?}");
    assert!(processes_matching(&id, "yes").is_empty(), "{:?}", processes_matching(&id, "yes"));
}

#[tokio::test]
async fn a_timeout_kills_the_command_and_every_process_it_started() {
    let Some((engine, id)) = Engine::with_sandbox("a_timeout_kills").await else { return };

    let mut slow = shell("echo started; sleep 100 & sleep 100 & wait");
    slow.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let output = run(&engine.runtime, &id, slow).await;
    let took = started.elapsed();

    assert!(output.timed_out, "{output:?}");
    assert_eq!(output.exit_code, None);
    assert_eq!(text(&output.stdout), "started\n", "output before the timeout is kept");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(output.duration >= Duration::from_secs(1), "{output:?}");
    // The proof: nothing of it is left in the container.
    assert_eq!(processes_matching(&id, "sleep 100"), Vec::<String>::new());
    // The sandbox's own process is untouched and the sandbox still works.
    let sandbox_process: Vec<String> = processes_matching(&id, "sleep infinity")
        .into_iter()
        .filter(|line| !line.contains("docker-init"))
        .collect();
    assert_eq!(sandbox_process.len(), 1, "{sandbox_process:?}");
    let output = run(&engine.runtime, &id, request(&["echo", "still here"])).await;
    assert_eq!(text(&output.stdout), "still here\n");
}

#[tokio::test]
async fn a_timeout_also_kills_children_that_left_the_session_and_orphans() {
    let Some((engine, id)) = Engine::with_sandbox("a_timeout_kills_escapees").await else { return };

    // One child starts a session of its own; another is orphaned (its parent exits at once)
    // and is adopted by init; a third ignores SIGTERM. All must go.
    let mut sneaky =
        shell("setsid sleep 301 & (sleep 302 &) ; sh -c 'trap \"\" TERM; sleep 303' & wait");
    sneaky.timeout = Duration::from_secs(1);
    let output = run(&engine.runtime, &id, sneaky).await;
    assert!(output.timed_out, "{output:?}");
    for needle in ["sleep 301", "sleep 302", "sleep 303"] {
        assert_eq!(processes_matching(&id, needle), Vec::<String>::new(), "{needle}");
    }
}

#[tokio::test]
async fn a_timed_out_fork_bomb_is_killed_and_the_sandbox_recovers() {
    let Some((engine, id)) = Engine::with_sandbox("a_timed_out_fork_bomb").await else { return };

    // Every bomb process forks for as long as it lives, and the command itself never ends by
    // itself (it becomes a sleep once the bomb is lit), so only the timeout can end it.
    let mut bomb = shell("bomb() { while :; do bomb & done; }; bomb & exec sleep 1000");
    bomb.timeout = Duration::from_secs(2);
    bomb.output_limit = 4096;
    let output = run(&engine.runtime, &id, bomb).await;
    assert!(output.timed_out, "{:?}", (output.exit_code, output.timed_out));
    assert_eq!(processes_matching(&id, "bomb"), Vec::<String>::new());
    let output = run(&engine.runtime, &id, request(&["echo", "recovered"])).await;
    assert_eq!(text(&output.stdout), "recovered\n");
}

/// Of the PIDs listed in `file` (one a line), those that still run in the container (a zombie,
/// dead and waiting to be reaped, does not count), read from `/proc` by another exec.
fn alive_of(id: &ContainerId, file: &str) -> Vec<String> {
    let script = format!(
        "for pid in $(cat {file}); do \
           [ -r /proc/$pid/stat ] || continue; read -r line < /proc/$pid/stat; \
           case ${{line##*) }} in Z*) ;; *) echo $pid ;; esac; \
         done"
    );
    let (ok, listing) = exec(id, &script);
    assert!(ok, "{listing}");
    listing.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test]
async fn a_timeout_kills_double_forked_escapees_but_not_the_processes_of_a_concurrent_exec() {
    let Some((engine, id)) = Engine::with_sandbox("a_timeout_kills_double_forked").await else {
        return;
    };

    // Another exec in the same sandbox (same uid) double-forks a sleeper of its own and keeps
    // running: the timeout of the command below must leave both alone.
    let mut bystander = shell(
        "setsid sh -c 'sleep 2001 & echo $! > /workspace/bystander.pids'; \
         echo $$ >> /workspace/bystander.pids; exec sleep 2000",
    );
    bystander.timeout = Duration::from_secs(120);
    let running = {
        let (runtime, id) = (engine.runtime.clone(), id.clone());
        tokio::spawn(async move { runtime.exec(&id, &bystander).await })
    };
    let mut polls = 0;
    while alive_of(&id, "/workspace/bystander.pids 2>/dev/null").len() < 2 {
        polls += 1;
        assert!(polls < 200, "the concurrent exec never started its sleeper");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Sleepers that start a session of their own and whose parent exits at once: reparented
    // to the container's init, in a session and process group that are not the command's.
    let mut escaping = shell(
        "setsid sh -c 'sleep 1001 & echo $! >> /workspace/escaped.pids'; \
         setsid sh -c 'setsid sh -c \"sleep 1002 & echo \\$! >> /workspace/escaped.pids\" &'; \
         while [ \"$(wc -l < /workspace/escaped.pids)\" -lt 2 ]; do :; done; \
         echo ready; exec sleep 1000",
    );
    escaping.timeout = Duration::from_secs(2);
    let output = run(&engine.runtime, &id, escaping).await;
    assert!(output.timed_out, "{output:?}");
    assert_eq!(text(&output.stdout), "ready\n", "{output:?}");

    let (_, written) = exec(&id, "cat /workspace/escaped.pids");
    assert_eq!(written.lines().count(), 2, "{written}");
    assert_eq!(alive_of(&id, "/workspace/escaped.pids"), Vec::<String>::new(), "{written}");
    for needle in ["sleep 1000", "sleep 1001", "sleep 1002"] {
        assert_eq!(processes_matching(&id, needle), Vec::<String>::new(), "{needle}");
    }
    // The other exec and its sleeper still run.
    assert_eq!(alive_of(&id, "/workspace/bystander.pids").len(), 2);
    assert!(!running.is_finished(), "the concurrent exec ended: {:?}", running.await);
    running.abort();
}

#[tokio::test]
async fn ten_concurrent_execs_in_one_sandbox_all_complete_with_their_own_output() {
    let Some((engine, id)) = Engine::with_sandbox("ten_concurrent_execs").await else { return };

    let requests: Vec<ExecRequest> =
        (0..10).map(|n| shell(&format!("sleep 0.5; echo exec-{n}; exit {n}"))).collect();
    let started = Instant::now();
    let outputs =
        futures::future::join_all(requests.iter().map(|request| engine.runtime.exec(&id, request)))
            .await;
    // They ran side by side, not one after another.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    for (n, output) in outputs.into_iter().enumerate() {
        let output = output.unwrap();
        assert_eq!(text(&output.stdout), format!("exec-{n}\n"));
        assert_eq!(output.exit_code, Some(n as i64));
    }
}

#[tokio::test]
async fn exec_in_a_missing_or_stopped_container_says_it_is_not_running() {
    let Some(engine) = Engine::start("exec_in_a_missing_container").await else { return };
    let missing = ContainerId::new("sandkeeper-never-existed").unwrap();
    let error = engine.runtime.exec(&missing, &request(&["true"])).await.unwrap_err();
    assert_eq!(error, ExecError::ContainerNotRunning { container_id: missing });

    let id = engine.runtime.create(&spec()).await.unwrap();
    docker(&["kill", id.as_str()]);
    let error = engine.runtime.exec(&id, &request(&["true"])).await.unwrap_err();
    assert_eq!(error, ExecError::ContainerNotRunning { container_id: id });
}

#[tokio::test]
async fn an_exec_in_flight_when_its_sandbox_is_removed_fails_as_not_running() {
    let Some((engine, id)) = Engine::with_sandbox("an_exec_in_flight").await else { return };

    let runtime = engine.runtime.clone();
    let running = {
        let id = id.clone();
        tokio::spawn(async move { runtime.exec(&id, &shell("echo begun; sleep 60")).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    engine.runtime.stop(&id).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("the exec returns soon after its sandbox is removed")
        .unwrap();
    assert_eq!(result, Err(ExecError::ContainerNotRunning { container_id: id }));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// Needs no engine: an address where nothing listens.
#[tokio::test]
async fn exec_on_an_unreachable_engine_is_unavailable_fast() {
    let runtime = runtime_without_engine();
    let started = Instant::now();
    let error = runtime
        .exec(&ContainerId::new("sandkeeper-x").unwrap(), &request(&["true"]))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(&error, ExecError::Runtime(sandkeeper_ports::RuntimeError::Unavailable(message))
            if report(message).contains("/nonexistent.sock")),
        "{error:?}"
    );
}

/// Needs no engine: an exec is timed like every other engine call.
#[test]
fn exec_records_its_duration() {
    let counts = durations_recorded(|runtime| async move {
        let id = ContainerId::new("sandkeeper-x").unwrap();
        let _ = runtime.exec(&id, &request(&["true"])).await;
    });
    assert!(
        counts.iter().any(|(operation, _)| operation == "exec"),
        "{DURATION_METRIC}{{operation=exec}} was not recorded: {counts:?}"
    );
}

/// A cause with the whole chain under it, as the edges show it.
fn report(cause: &sandkeeper_ports::Cause) -> String {
    sandkeeper_ports::Report(cause).to_string()
}
