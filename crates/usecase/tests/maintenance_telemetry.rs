//! The maintenance sweep's telemetry: its span, events and metrics.
//!
//! Kept in a test binary of its own in which every test captures telemetry from its first line:
//! `tracing` caches per call site whether anyone listens, and a test without a capture running
//! beside one with a capture can make that cache say "no one" for the latter.

mod maintenance_support;

use std::sync::atomic::Ordering;

use chrono::TimeDelta;
use maintenance_support::{Harness, completed, t0};
use sandkeeper_adapters_observability::capture::{Capture, FieldValue};
use sandkeeper_domain::SandboxStatus;
use sandkeeper_ports::ContainerState;
use sandkeeper_usecase::SweepOutcome;

#[tokio::test]
async fn a_completed_sweep_reports_through_span_event_and_metrics() {
    let capture = Capture::install();
    let h = Harness::new();
    h.add_session(1, SandboxStatus::Running, ContainerState::Running).await;
    h.add_session(2, SandboxStatus::Running, ContainerState::Exited).await;
    h.add_session(3, SandboxStatus::Stopped, ContainerState::Exited).await;
    h.add_orphan("orphan-old", None, t0() - TimeDelta::minutes(5));

    completed(&h.sweep(), false).await;

    let span = capture.find_span(
        "usecase.maintenance_sweep",
        &[("sandbox.maintenance.forced", false.into())],
        &[
            ("sandbox.result", "completed".into()),
            ("sandbox.maintenance.reconciled", 1u64.into()),
            ("sandbox.maintenance.removed", 1u64.into()),
            ("sandbox.maintenance.orphans_removed", 1u64.into()),
            ("sandbox.maintenance.errors", 0u64.into()),
            ("sandbox.maintenance.timed_out", false.into()),
        ],
    );
    assert_eq!(span.error(), None);
    let events = capture.events();
    let done = events
        .iter()
        .find(|event| event.message == "maintenance_sweep_completed")
        .unwrap_or_else(|| panic!("no maintenance_sweep_completed event in {events:#?}"));
    assert_eq!(done.level, tracing::Level::INFO);
    assert_eq!(done.span, Some(span.index));
    for (field, value) in [
        ("reconciled", FieldValue::from(1u64)),
        ("removed", 1u64.into()),
        ("orphans_removed", 1u64.into()),
        ("errors", 0u64.into()),
        ("timed_out", false.into()),
    ] {
        assert_eq!(done.fields.get(field), Some(&value), "{field} in {done:?}");
    }
    capture.assert_counter_incremented(
        "sandbox.maintenance.runs.total",
        1,
        &[("result", "completed")],
    );
    assert_eq!(capture.counter_total("sandbox.maintenance.reconciled.total", &[]), 1);
    assert_eq!(
        capture.counter_total("sandbox.crashed.total", &[("detected_by", "maintenance")]),
        1
    );
    assert_eq!(capture.counter_total("sandbox.maintenance.removed.total", &[]), 1);
    assert_eq!(capture.counter_total("sandbox.maintenance.orphans_removed.total", &[]), 1);
    assert_eq!(capture.counter_total("sandbox.maintenance.errors.total", &[]), 0);
    assert_eq!(capture.counter_total("sandbox.maintenance.timed_out.total", &[]), 0);
    // Session 1 is still running; session 2 crashed.
    assert_eq!(capture.gauge_values("sandbox.active.count"), vec![1.0]);
}

#[tokio::test]
async fn skipped_and_failed_sweeps_are_counted_and_a_failure_is_recorded_on_the_span() {
    let capture = Capture::install();
    let h = Harness::new();
    let sweep = h.sweep();
    completed(&sweep, false).await;

    assert_eq!(sweep.run(false).await.unwrap(), SweepOutcome::Skipped);
    h.repository.fail_list.store(true, Ordering::SeqCst);
    sweep.run(true).await.unwrap_err();

    for result in ["skipped", "failed"] {
        capture.assert_counter_incremented(
            "sandbox.maintenance.runs.total",
            1,
            &[("result", result)],
        );
    }
    assert_eq!(
        capture.counter_total("sandbox.maintenance.runs.total", &[("result", "completed")]),
        1
    );
    capture.find_span("usecase.maintenance_sweep", &[], &[("sandbox.result", "skipped".into())]);
    let failed = capture.find_span(
        "usecase.maintenance_sweep",
        &[("sandbox.maintenance.forced", true.into())],
        &[("sandbox.result", "failed".into()), ("error.type", "store_unavailable".into())],
    );
    assert!(
        failed.error().is_some_and(|e| e.to_string().contains("running sessions")),
        "{failed:?}"
    );
    let events = capture.events();
    assert!(
        events
            .iter()
            .any(|e| e.message == "maintenance_sweep_failed" && e.level == tracing::Level::ERROR),
        "{events:#?}"
    );
}
