//! Durable workspaces' telemetry: the outcome on the use cases' spans, and the archive and
//! restore metrics.
//!
//! A test binary of its own in which every test captures telemetry from its first line (see
//! `maintenance_telemetry.rs` for why).

mod workspace_support;

use chrono::TimeDelta;
use sandkeeper_adapters_observability::capture::Capture;
use workspace_support::*;

#[tokio::test]
async fn removals_and_creates_say_what_happened_to_the_workspace() {
    let capture = Capture::install();
    let h = Harness::new();
    let (chat_id, _) = h.sandbox_with_file("a.txt", b"kept").await;
    h.delete.execute(chat_id).await.unwrap();
    h.clock.advance(TimeDelta::minutes(1));
    h.create(chat_id).await;

    let chat = chat_id.to_string();
    capture.find_span(
        "usecase.delete_sandbox",
        &[("chat.id", chat.as_str().into())],
        &[("sandbox.result", "deleted".into()), ("workspace.result", "saved".into())],
    );
    capture.find_span(
        "usecase.create_sandbox",
        &[("chat.id", chat.as_str().into())],
        &[("sandbox.result", "created".into()), ("workspace.result", "restored".into())],
    );
    capture.assert_counter_incremented(
        "workspace.archive.total",
        1,
        &[("reason", "delete"), ("result", "saved")],
    );
    assert_eq!(capture.counter_total("workspace.restore.total", &[("result", "none")]), 1);
    assert_eq!(capture.counter_total("workspace.restore.total", &[("result", "restored")]), 1);
    let sizes = capture.histogram_values("workspace.restore.size.bytes", &[]);
    assert_eq!(sizes.len(), 1);
    assert!(sizes[0] >= 1024.0, "a tar is at least its end marker: {sizes:?}");
}

#[tokio::test]
async fn a_failed_save_and_a_corrupt_archive_are_recorded_as_errors() {
    let capture = Capture::install();
    let h = Harness::new();
    let (chat_id, _) = h.sandbox_with_file("a.txt", b"lost").await;
    h.runtime.fail_archive(unavailable());
    h.delete.execute(chat_id).await.unwrap_err();
    let shown = chat_id.to_string();
    let span = capture.find_span(
        "usecase.delete_sandbox",
        &[("chat.id", shown.as_str().into())],
        &[("sandbox.result", "error".into()), ("workspace.result", "error".into())],
    );
    assert!(span.error().is_some(), "the failure is on the span");
    capture.assert_counter_incremented(
        "workspace.archive.total",
        1,
        &[("reason", "delete"), ("result", "runtime_unavailable")],
    );

    let other = chat();
    h.put_stored_file(other, "/etc/passwd", b"x").await;
    h.create.execute(sandkeeper_usecase::CreateSandboxCommand::new(other)).await.unwrap_err();
    assert_eq!(capture.counter_total("workspace.restore.total", &[("result", "corrupt")]), 1);
}
