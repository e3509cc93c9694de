//! SandboxFiles: the path rule, the size limits, which sandbox a file goes to, the errors the
//! API maps, and the telemetry.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sandkeeper_adapters_observability::capture::{Capture, FieldValue};
use sandkeeper_ports::testkit::{FakeRuntime, RuntimeCall};
use sandkeeper_ports::{
    ContainerState, FileError, PathRule, RuntimeError, SessionRepository, WorkspacePath,
};
use sandkeeper_usecase::{
    AccessError, ExecInSandbox, ExecSettings, FileSettings, Operation, SandboxFiles,
    SandboxFilesError, SandboxSlots,
};
use support::*;

// Every test captures telemetry from its first line, also those that assert none: `tracing`
// caches per call site whether anyone listens, and a test without a capture running beside one
// with a capture can make that cache say "no one" for the latter.

fn path(path: &str) -> WorkspacePath {
    WorkspacePath::parse(path).unwrap()
}

fn sandbox_files(
    repository: Arc<dyn SessionRepository>,
    runtime: &FakeRuntime,
    settings: FileSettings,
) -> SandboxFiles {
    SandboxFiles::new(
        sandbox_access(repository, runtime, at_now(), SandboxSlots::default()),
        settings,
    )
}

async fn setup() -> (FakeRuntime, SandboxFiles) {
    let (repository, runtime) = active_sandbox().await;
    let files = sandbox_files(repository, &runtime, FileSettings::default());
    (runtime, files)
}

#[tokio::test]
async fn the_path_rule_refuses_escapes_before_anything_is_touched() {
    let _capture = Capture::install();
    let (runtime, files) = setup().await;
    let refused: &[(&str, PathRule)] = &[
        ("../x", PathRule::DotSegment),
        ("/etc/passwd", PathRule::Absolute),
        ("a/../../b", PathRule::DotSegment),
        ("a//b", PathRule::EmptySegment),
        ("a\\b", PathRule::Backslash),
        ("a\0b", PathRule::Nul),
        ("", PathRule::Empty),
        ("dir/", PathRule::EmptySegment),
    ];
    for (bad, rule) in refused {
        for error in [
            files.upload(CHAT_ID, bad, b"data").await.unwrap_err(),
            files.download(CHAT_ID, bad).await.unwrap_err(),
        ] {
            let SandboxFilesError::InvalidPath(path_error) = &error else {
                panic!("{bad:?}: {error:?}")
            };
            assert_eq!(path_error.reason, *rule, "{bad:?}");
            assert_eq!(error.kind(), "invalid_path");
        }
    }
    assert_eq!(runtime.calls(), vec![], "no refused path reached the runtime");

    for good in ["a/b.txt", "dir/sub/file"] {
        let uploaded = files.upload(CHAT_ID, good, good.as_bytes()).await.unwrap();
        assert_eq!(uploaded.path.as_str(), good);
        assert_eq!(
            runtime.file(&container("container-active"), &path(good)).unwrap(),
            good.as_bytes()
        );
    }
}

#[tokio::test]
async fn a_file_goes_into_the_chats_sandbox_and_comes_back() {
    let capture = Capture::install();
    let (runtime, files) = setup().await;

    let uploaded = files.upload(CHAT_ID, "src/main.py", b"print('hi')\n").await.unwrap();
    assert_eq!(
        (uploaded.session, uploaded.path.clone(), uploaded.size),
        (active(), path("src/main.py"), 12)
    );
    let downloaded = files.download(CHAT_ID, "src/main.py").await.unwrap();
    assert_eq!(downloaded.bytes, b"print('hi')\n");
    assert_eq!(downloaded.session, active());

    let container = container("container-active");
    assert_eq!(
        runtime.calls(),
        vec![
            RuntimeCall::Upload(container.clone(), path("src/main.py"), b"print('hi')\n".to_vec()),
            RuntimeCall::Download(container, path("src/main.py"), 16 * 1024 * 1024),
        ]
    );

    for (operation, span) in
        [("upload", "usecase.upload_file"), ("download", "usecase.download_file")]
    {
        capture.assert_counter_incremented(
            "sandbox.file.total",
            1,
            &[("operation", operation), ("result", "ok")],
        );
        assert_eq!(
            capture.histogram_values("sandbox.file.bytes", &[("operation", operation)]),
            vec![12.0]
        );
        assert_eq!(
            capture
                .histogram_values("sandbox.file.duration.seconds", &[("operation", operation)])
                .len(),
            1
        );
        capture.find_span(
            span,
            &[("chat.id", text(CHAT_ID)), ("file.path", text("src/main.py"))],
            &[
                ("session.id", text(SESSION_ACTIVE_ID)),
                ("container.id", text("container-active")),
                ("file.size", FieldValue::Int(12)),
                ("sandbox.result", text("ok")),
            ],
        );
    }
}

#[tokio::test]
async fn size_limits_refuse_large_uploads_at_once_and_bound_downloads() {
    let capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    let files =
        sandbox_files(repository, &runtime, FileSettings { upload_limit: 4, download_limit: 6 });

    assert_eq!(files.upload(CHAT_ID, "ok", b"1234").await.unwrap().size, 4);
    let error = files.upload(CHAT_ID, "big", b"12345").await.unwrap_err();
    assert_eq!(
        error,
        SandboxFilesError::File(FileError::TooLarge { path: path("big"), size: 5, limit: 4 })
    );
    assert_eq!(error.kind(), "file_too_large");
    assert_eq!(runtime.file(&container("container-active"), &path("big")), None);

    runtime.put_file(container("container-active"), path("seven"), b"1234567".to_vec());
    let error = files.download(CHAT_ID, "seven").await.unwrap_err();
    assert_eq!(
        error,
        SandboxFilesError::File(FileError::TooLarge { path: path("seven"), size: 7, limit: 6 })
    );
    capture.find_span(
        "usecase.upload_file",
        &[("file.path", text("big"))],
        &[("error.type", text("file_too_large")), ("file.size", FieldValue::Int(5))],
    );
    capture.assert_counter_incremented(
        "sandbox.file.total",
        1,
        &[("operation", "download"), ("result", "error")],
    );
}

#[tokio::test]
async fn what_the_sandbox_says_about_a_path_is_passed_on() {
    let _capture = Capture::install();
    let (runtime, files) = setup().await;

    let error = files.download(CHAT_ID, "missing.txt").await.unwrap_err();
    assert_eq!(error, SandboxFilesError::File(FileError::NotFound { path: path("missing.txt") }));
    assert_eq!(error.kind(), "file_not_found");

    let outside =
        FileError::OutsideWorkspace { path: path("link"), resolved: "/etc/passwd".into() };
    runtime.fail_file(path("link"), outside.clone());
    assert_eq!(
        files.download(CHAT_ID, "link").await,
        Err(SandboxFilesError::File(outside.clone()))
    );
    assert_eq!(files.upload(CHAT_ID, "link", b"x").await, Err(SandboxFilesError::File(outside)));

    let unavailable = FileError::Runtime(RuntimeError::Unavailable("down".into()));
    runtime.fail_file(path("any"), unavailable);
    assert_eq!(
        files.download(CHAT_ID, "any").await,
        Err(SandboxFilesError::Access(AccessError::Runtime(RuntimeError::Unavailable(
            "down".into()
        ))))
    );
}

#[tokio::test]
async fn no_sandbox_an_expired_one_and_one_that_went_away_are_told_apart() {
    let _capture = Capture::install();
    let expired = expired_now();
    let repository = repository_with(&[&active(), &expired]).await;
    let runtime = runtime_with(&[&active(), &expired]);
    let files = sandbox_files(repository, &runtime, FileSettings::default());

    for chat_id in [CLEAN_CHAT_ID, EXPIRED_CHAT_ID] {
        let no_sandbox = SandboxFilesError::Access(AccessError::NoSandbox { chat_id });
        assert_eq!(files.upload(chat_id, "a", b"x").await.unwrap_err(), no_sandbox);
        assert_eq!(files.download(chat_id, "a").await.unwrap_err(), no_sandbox);
    }
    assert_eq!(runtime.calls(), vec![]);

    runtime.set_state(&container("container-active"), ContainerState::Exited);
    let error = files.download(CHAT_ID, "a").await.unwrap_err();
    let gone = AccessError::SandboxGone {
        chat_id: CHAT_ID,
        session_id: SESSION_ACTIVE_ID,
        operation: Operation::Download,
    };
    assert_eq!(error, SandboxFilesError::Access(gone));
    assert!(error.to_string().contains("before the transfer finished"), "{error}");
    assert!(error.to_string().contains("get-or-create"), "{error}");
}

#[tokio::test]
async fn transfers_and_execs_share_the_sandboxs_bound() {
    let _capture = Capture::install();
    let (repository, runtime) = active_sandbox().await;
    let slots = SandboxSlots::new(1);
    let access = sandbox_access(repository, &runtime, at_now(), slots.clone());
    let exec = ExecInSandbox::new(access.clone(), ExecSettings::default());
    let files = SandboxFiles::new(access, FileSettings::default());
    runtime.hold_execs();
    let running = tokio::spawn(async move { exec.execute(command(&["sleep", "1"])).await });
    tokio::time::timeout(Duration::from_secs(5), runtime.execs_held(1)).await.unwrap();

    assert_eq!(
        files.upload(CHAT_ID, "a", b"x").await,
        Err(SandboxFilesError::Access(AccessError::Busy { chat_id: CHAT_ID, limit: 1 }))
    );
    runtime.release_execs(1);
    running.await.unwrap().unwrap();
    files.upload(CHAT_ID, "a", b"x").await.expect("the slot is free again");
    assert_eq!(slots.busy_sandboxes(), 0);
}
