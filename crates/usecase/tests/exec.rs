//! ExecInSandbox: which sandbox a command runs in, what is refused before anything is touched,
//! the per-sandbox bound, and the telemetry.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sandkeeper_adapters_observability::capture::{Capture, CapturedSpan, FieldValue};
use sandkeeper_domain::SandboxSession;
use sandkeeper_ports::testkit::FakeRuntime;
use sandkeeper_ports::{
    ContainerState, ExecError, ExecOutput, ExecRequest, RuntimeError, SessionRepository,
};
use sandkeeper_usecase::{
    AccessError, ExecCommand, ExecInSandbox, ExecInSandboxError, ExecSettings, Operation,
    SandboxSlots,
};
use support::*;

// Every test captures telemetry from its first line, also those that assert none: `tracing`
// caches per call site whether anyone listens, and a test without a capture running beside one
// with a capture can make that cache say "no one" for the latter.
use tracing::Level;

const WAIT: Duration = Duration::from_secs(5);

/// The span of an exec in the sandbox of [`CHAT_ID`] that recorded at least `recorded`.
fn exec_span(capture: &Capture, recorded: &[(&str, FieldValue)]) -> CapturedSpan {
    capture.find_span("usecase.exec_in_sandbox", &[("chat.id", text(CHAT_ID))], recorded)
}

/// One exec ended as `result`: it was counted, and its duration measured, once.
fn assert_one_exec(capture: &Capture, result: &str) {
    capture.assert_counter_incremented("sandbox.exec.total", 1, &[("result", result)]);
    let durations =
        capture.histogram_values("sandbox.exec.duration.seconds", &[("result", result)]);
    assert_eq!(durations.len(), 1, "one duration of a {result} exec");
}

fn other_chat() -> SandboxSession {
    running(SESSION_CLEAN_ID, CLEAN_CHAT_ID, "container-other").between(now(), now() + minutes(5))
}

fn exec_in_sandbox(
    repository: Arc<dyn SessionRepository>,
    runtime: &FakeRuntime,
    slots: SandboxSlots,
) -> ExecInSandbox {
    ExecInSandbox::new(
        sandbox_access(repository, runtime, at_now(), slots),
        ExecSettings::default(),
    )
}

fn gone() -> ExecInSandboxError {
    ExecInSandboxError::Access(AccessError::SandboxGone {
        chat_id: CHAT_ID,
        session_id: SESSION_ACTIVE_ID,
        operation: Operation::Exec,
    })
}

fn output(exit_code: Option<i64>, stdout: &str, timed_out: bool) -> ExecOutput {
    ExecOutput {
        exit_code,
        stdout: stdout.as_bytes().to_vec(),
        stderr: Vec::new(),
        timed_out,
        truncated: false,
        duration: Duration::from_millis(12),
    }
}

#[tokio::test]
async fn exec_runs_the_command_in_the_chats_running_sandbox_with_the_defaults() {
    let capture = Capture::install();
    let repository = repository_with(&[&active(), &other_chat()]).await;
    let runtime = runtime_with(&[&active(), &other_chat()]);
    runtime.push_exec_result(Ok(output(Some(3), "hello\n", false)));
    let usecase = exec_in_sandbox(repository, &runtime, SandboxSlots::new(4));

    let outcome = usecase.execute(command(&["sh", "-c", "echo hello; exit 3"])).await.unwrap();

    assert_eq!(outcome.session, active());
    assert_eq!(outcome.output, output(Some(3), "hello\n", false));
    let expected = ExecRequest {
        command: vec!["sh".into(), "-c".into(), "echo hello; exit 3".into()],
        stdin: None,
        env: vec![],
        workdir: None,
        timeout: Duration::from_secs(30),
        output_limit: 1024 * 1024,
    };
    assert_eq!(runtime.exec_calls(), vec![(container("container-active"), expected)]);

    assert_one_exec(&capture, "ok");
    let span = exec_span(
        &capture,
        &[
            ("session.id", text(SESSION_ACTIVE_ID)),
            ("container.id", text("container-active")),
            ("sandbox.result", text("ok")),
            ("exec.exit_code", FieldValue::Int(3)),
            ("exec.timed_out", FieldValue::Bool(false)),
        ],
    );
    assert_eq!(span.error(), None);
    assert_eq!(logged(&capture), vec![], "a finished command logs nothing at info");
}

#[tokio::test]
async fn stdin_env_workdir_and_timeout_reach_the_runtime() {
    let _capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    let usecase = exec_in_sandbox(repository, &runtime, SandboxSlots::default());

    let mut full = command(&["cat"]);
    full.stdin = Some(b"input".to_vec());
    full.env = vec![("LANG".into(), "C.UTF-8".into()), ("_X1".into(), String::new())];
    full.workdir = Some("project/src".into());
    full.timeout = Some(Duration::from_millis(1500));
    usecase.execute(full).await.unwrap();
    let mut absolute = command(&["pwd"]);
    absolute.workdir = Some("/tmp".into());
    usecase.execute(absolute).await.unwrap();

    let calls = runtime.exec_calls();
    let request = &calls[0].1;
    assert_eq!(request.stdin.as_deref(), Some(&b"input"[..]));
    assert_eq!(request.env, vec![("LANG".into(), "C.UTF-8".into()), ("_X1".into(), String::new())]);
    assert_eq!(request.workdir.as_deref(), Some("/workspace/project/src"));
    assert_eq!(request.timeout, Duration::from_millis(1500));
    assert_eq!(calls[1].1.workdir.as_deref(), Some("/tmp"));
}

#[tokio::test]
async fn a_chat_without_a_sandbox_or_with_an_expired_one_has_no_sandbox() {
    let capture = Capture::install();
    // Expired exactly now: the boundary is inclusive.
    let expired = expired_now();
    let repository = repository_with(&[&expired]).await;
    let runtime = runtime_with(&[&expired]);
    let usecase = exec_in_sandbox(repository, &runtime, SandboxSlots::default());

    for chat_id in [CHAT_ID, EXPIRED_CHAT_ID] {
        let error =
            usecase.execute(ExecCommand::new(chat_id, vec!["true".into()])).await.unwrap_err();
        assert_eq!(error, ExecInSandboxError::Access(AccessError::NoSandbox { chat_id }));
        assert!(error.to_string().contains("create one first"), "{error}");
    }
    assert_eq!(runtime.calls(), vec![], "the runtime was not asked");
    assert_eq!(capture.counter_total("sandbox.exec.total", &[("result", "error")]), 2);
    let span = exec_span(
        &capture,
        &[("sandbox.result", text("error")), ("error.type", text("no_sandbox"))],
    );
    assert!(!span.has_field("session.id"), "{span:?}");
}

#[tokio::test]
async fn beyond_the_bound_an_exec_in_the_same_sandbox_is_busy_and_others_are_not() {
    let capture = Capture::install();
    let repository = repository_with(&[&active(), &other_chat()]).await;
    let runtime = runtime_with(&[&active(), &other_chat()]);
    let slots = SandboxSlots::new(2);
    let usecase = exec_in_sandbox(repository, &runtime, slots.clone());
    runtime.hold_execs();

    let first = spawn_exec(&usecase, command(&["sleep", "1"]));
    let second = spawn_exec(&usecase, command(&["sleep", "2"]));
    tokio::time::timeout(WAIT, runtime.execs_held(2)).await.expect("two execs started");

    let error = usecase.execute(command(&["sleep", "3"])).await.unwrap_err();
    assert_eq!(error, ExecInSandboxError::Access(AccessError::Busy { chat_id: CHAT_ID, limit: 2 }));
    assert!(error.to_string().contains("busy"), "{error}");
    assert_eq!(runtime.exec_calls().len(), 2, "the third never reached the runtime");
    exec_span(&capture, &[("error.type", text("busy")), ("session.id", text(SESSION_ACTIVE_ID))]);

    // Another chat's sandbox has slots of its own.
    let other = spawn_exec(&usecase, ExecCommand::new(CLEAN_CHAT_ID, vec!["true".into()]));
    tokio::time::timeout(WAIT, runtime.execs_held(3)).await.expect("the other chat's exec started");

    runtime.release_execs(3);
    for handle in [first, second, other] {
        handle.await.unwrap().unwrap();
    }
    assert_eq!(slots.busy_sandboxes(), 0, "slots are given back and forgotten");
    runtime.release_execs(1);
    let again = tokio::time::timeout(WAIT, usecase.execute(command(&["true"]))).await.unwrap();
    again.expect("a slot is free again");
}

#[tokio::test]
async fn a_timed_out_command_is_counted_as_timeout_and_logged() {
    let capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    runtime.push_exec_result(Ok(output(None, "partial", true)));
    let usecase = exec_in_sandbox(repository, &runtime, SandboxSlots::default());

    let mut slow = command(&["sleep", "100"]);
    slow.timeout = Some(Duration::from_secs(1));
    let outcome = usecase.execute(slow).await.unwrap();

    assert!(outcome.output.timed_out);
    assert_one_exec(&capture, "timeout");
    let span = exec_span(
        &capture,
        &[("sandbox.result", text("timeout")), ("exec.timed_out", FieldValue::Bool(true))],
    );
    assert!(!span.has_field("exec.exit_code"), "{span:?}");
    let (level, message, fields) = logged(&capture).pop().expect("a timeout is logged");
    assert_eq!((level, message.as_str()), (Level::INFO, "sandbox_exec_timed_out"));
    assert_eq!(fields["session_id"], SESSION_ACTIVE_ID.to_string());
    assert_eq!(fields["timeout_ms"], "1000");
}

#[tokio::test]
async fn a_sandbox_that_goes_away_under_the_command_is_reported_as_gone() {
    let capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    let usecase = exec_in_sandbox(repository, &runtime, SandboxSlots::default());

    // Deleted between the lookup and the exec: the runtime finds no container.
    runtime.set_state(&container("container-active"), ContainerState::Missing);
    let error = usecase.execute(command(&["true"])).await.unwrap_err();
    assert_eq!(error, gone());
    assert!(error.to_string().contains("before the command finished"), "{error}");
    exec_span(
        &capture,
        &[("error.type", text("sandbox_gone")), ("otel.status_code", text("ERROR"))],
    );
}

#[tokio::test]
async fn runtime_failures_are_returned_as_such() {
    let _capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    runtime.push_exec_result(Err(ExecError::Runtime(RuntimeError::Unavailable("down".into()))));
    let usecase = exec_in_sandbox(repository, &runtime, SandboxSlots::default());

    let error = usecase.execute(command(&["true"])).await.unwrap_err();
    let down = AccessError::Runtime(RuntimeError::Unavailable("down".into()));
    assert_eq!(error, ExecInSandboxError::Access(down));
    assert_eq!(error.kind(), "runtime_unavailable");
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_touched() {
    let capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    let usecase = exec_in_sandbox(repository, &runtime, SandboxSlots::default());

    let with = |change: fn(&mut ExecCommand)| {
        let mut command = command(&["true"]);
        change(&mut command);
        command
    };
    let cases: Vec<(ExecCommand, &str, &str)> = vec![
        (command(&[]), "command", "is empty"),
        (command(&["", "x"]), "command", "names no program"),
        (command(&["-n", "x"]), "command", "`-n`, which begins with `-`"),
        (command(&["echo", "a\0b"]), "command", "element 1 contains a NUL byte"),
        (with(|c| c.env = vec![("1X".into(), "v".into())]), "env", "`1X`"),
        (with(|c| c.env = vec![("A=B".into(), "v".into())]), "env", "`A=B`"),
        (with(|c| c.env = vec![(String::new(), "v".into())]), "env", "``"),
        (with(|c| c.env = vec![("A".into(), "v\0".into())]), "env", "NUL"),
        (with(|c| c.workdir = Some("../etc".into())), "workdir", "`..`"),
        (with(|c| c.workdir = Some("/tmp\0".into())), "workdir", "NUL"),
        (with(|c| c.timeout = Some(Duration::ZERO)), "timeout", "more than zero"),
        (with(|c| c.timeout = Some(Duration::from_secs(601))), "timeout", "maximum of 600s"),
    ];
    for (command, field, says) in cases {
        let error = usecase.execute(command.clone()).await.unwrap_err();
        let ExecInSandboxError::Invalid { field: got, .. } = &error else {
            panic!("{command:?}: {error:?}")
        };
        assert_eq!(*got, field, "{command:?}");
        assert!(error.to_string().contains(says), "{command:?}: {error}");
        assert_eq!(error.kind(), "invalid_request");
    }

    let mut big = command(&["cat"]);
    big.stdin = Some(vec![0; 16 * 1024 * 1024 + 1]);
    let error = usecase.execute(big).await.unwrap_err();
    assert_eq!(
        error,
        ExecInSandboxError::StdinTooLarge { size: 16 * 1024 * 1024 + 1, limit: 16 * 1024 * 1024 }
    );

    assert_eq!(runtime.calls(), vec![]);
    assert_eq!(capture.counter_total("sandbox.exec.total", &[("result", "error")]), 13);
}

#[tokio::test]
async fn settings_bound_the_output_and_the_timeouts() {
    let _capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    let settings = ExecSettings {
        default_timeout: Duration::from_secs(5),
        max_timeout: Duration::from_secs(7),
        output_limit: 4096,
        stdin_limit: 3,
    };
    let access = sandbox_access(repository, &runtime, at_now(), SandboxSlots::default());
    let usecase = ExecInSandbox::new(access, settings);
    assert_eq!(usecase.settings(), &settings);

    usecase.execute(command(&["true"])).await.unwrap();
    let request = &runtime.exec_calls()[0].1;
    assert_eq!((request.timeout, request.output_limit), (Duration::from_secs(5), 4096));

    let mut long = command(&["true"]);
    long.timeout = Some(Duration::from_secs(8));
    assert!(matches!(
        usecase.execute(long).await,
        Err(ExecInSandboxError::Invalid { field: "timeout", .. })
    ));
    let mut input = command(&["cat"]);
    input.stdin = Some(b"four".to_vec());
    assert_eq!(
        usecase.execute(input).await,
        Err(ExecInSandboxError::StdinTooLarge { size: 4, limit: 3 })
    );
}

/// What happens to a command in flight when its sandbox expires: nothing, until the cleanup
/// removes the expired sandbox; then the command is killed with its container and the caller
/// hears that the sandbox is gone (its output is lost).
#[tokio::test]
async fn a_command_in_flight_when_its_sandbox_expires_and_is_cleaned_up_reports_it_gone() {
    let _capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    let clock = at_now();
    let access =
        sandbox_access(repository.clone(), &runtime, clock.clone(), SandboxSlots::default());
    let usecase = ExecInSandbox::new(access, ExecSettings::default());
    let in_flight = exec_in_flight(&usecase, &runtime, command(&["sleep", "600"])).await;

    clock.advance(minutes(5));
    let cleanup = sandkeeper_usecase::CleanupExpiredSandboxes::new(
        repository,
        RecordingLocker::new(),
        Arc::new(runtime.clone()),
        clock,
    );
    let report = cleanup.execute().await.unwrap();
    assert_eq!(report.cleaned.len(), 1, "{report:?}");

    runtime.release_execs(1);
    let error = in_flight.await.unwrap().unwrap_err();
    assert_eq!(error, gone());
    assert!(error.to_string().contains("before the command finished"), "{error}");
    // A new command is told to create a sandbox first.
    assert_eq!(
        usecase.execute(command(&["true"])).await,
        Err(ExecInSandboxError::Access(AccessError::NoSandbox { chat_id: CHAT_ID }))
    );
}
