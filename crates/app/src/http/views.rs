//! The JSON shapes of the API's answers. Reports are also what `sandkeeper cleanup` and
//! `sandkeeper maintain` print.

use chrono::SecondsFormat;
use sandkeeper_domain::{SandboxSession, Timestamp};
use sandkeeper_usecase::{CleanupReport, CreateResult, MaintenanceReport};
use serde::Serialize;

use crate::services::Readiness;

fn rfc3339(timestamp: Timestamp) -> String {
    timestamp.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A session, and on `PUT` how the call got it.
#[derive(Debug, Serialize)]
pub(crate) struct SessionView {
    session_id: String,
    chat_id: String,
    container_id: String,
    status: &'static str,
    created_at: String,
    expires_at: String,
    /// The engine the sandbox runs on.
    engine: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'static str>,
    /// What was restored into a sandbox the call created (with a workspace store).
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace: Option<super::workspace::RestoreView>,
}

impl SessionView {
    pub(crate) fn new(session: &SandboxSession, result: Option<CreateResult>) -> Self {
        Self {
            session_id: session.session_id.to_string(),
            chat_id: session.chat_id.to_string(),
            container_id: session.container_id.to_string(),
            status: session.status.as_str(),
            created_at: rfc3339(session.created_at),
            expires_at: rfc3339(session.expires_at),
            engine: session.engine.to_string(),
            result: result.map(CreateResult::as_str),
            workspace: None,
        }
    }

    pub(crate) fn with_workspace(
        mut self,
        workspace: Option<super::workspace::RestoreView>,
    ) -> Self {
        self.workspace = workspace;
        self
    }
}

/// `GET /v1/sandboxes`.
#[derive(Debug, Serialize)]
pub(crate) struct SessionListView {
    sandboxes: Vec<SessionView>,
}

impl SessionListView {
    pub(crate) fn new(sessions: &[SandboxSession]) -> Self {
        Self { sandboxes: sessions.iter().map(|session| SessionView::new(session, None)).collect() }
    }
}

/// A session the cleanup could not remove, with why.
#[derive(Debug, Serialize)]
struct CleanupFailureView {
    #[serde(flatten)]
    session: SessionView,
    error: ErrorView,
}

#[derive(Debug, Serialize)]
struct ErrorView {
    kind: &'static str,
    message: String,
}

/// What a cleanup pass did.
#[derive(Debug, Serialize)]
pub(crate) struct CleanupReportView {
    /// Expired sessions in the snapshot.
    expired: usize,
    /// Sessions left alone because the snapshot was stale.
    skipped: usize,
    cleaned: Vec<SessionView>,
    errors: Vec<CleanupFailureView>,
}

impl CleanupReportView {
    pub(crate) fn new(report: &CleanupReport) -> Self {
        Self {
            expired: report.expired,
            skipped: report.skipped,
            cleaned: report.cleaned.iter().map(|session| SessionView::new(session, None)).collect(),
            errors: report
                .errors
                .iter()
                .map(|failure| CleanupFailureView {
                    session: SessionView::new(&failure.session, None),
                    error: ErrorView {
                        kind: failure.error.kind(),
                        message: failure.error.to_string(),
                    },
                })
                .collect(),
        }
    }
}

/// What a maintenance sweep did.
#[derive(Debug, Serialize)]
pub(crate) struct MaintenanceReportView {
    reconciled: u64,
    removed: u64,
    orphans_removed: u64,
    errors: u64,
    timed_out: bool,
}

impl MaintenanceReportView {
    pub(crate) fn new(report: &MaintenanceReport) -> Self {
        Self {
            reconciled: report.reconciled,
            removed: report.removed,
            orphans_removed: report.orphans_removed,
            errors: report.errors,
            timed_out: report.timed_out,
        }
    }
}

/// `/readyz`: `ok` or `unavailable: <why>` per dependency.
#[derive(Debug, Serialize)]
pub(crate) struct ReadinessView {
    status: &'static str,
    store: String,
    docker: String,
}

impl ReadinessView {
    pub(crate) fn new(readiness: &Readiness) -> Self {
        let show = |check: &Result<(), String>| match check {
            Ok(()) => "ok".to_owned(),
            Err(why) => format!("unavailable: {why}"),
        };
        Self {
            status: if readiness.is_ready() { "ready" } else { "unavailable" },
            store: show(&readiness.store),
            docker: show(&readiness.docker),
        }
    }
}
