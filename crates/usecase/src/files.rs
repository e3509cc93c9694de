//! Moving files in and out of a chat's sandbox, confined to its `/workspace`.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use sandkeeper_domain::{ChatId, SandboxSession, SessionId};
use sandkeeper_ports::{
    Clock, FileError, PathError, RuntimeError, SandboxRuntime, SessionRepository, StoreError,
    WorkspacePath,
};
use tracing::field::{Empty, display};
use tracing::{Instrument, Span};

use crate::exec::{SandboxSlots, live_session};
use crate::keepalive::KeepAlive;
use crate::telemetry::record_error;

/// Counter `sandbox.file.total{operation=upload|download, result=ok|error}`.
const FILE_TOTAL: &str = "sandbox.file.total";
/// Histogram `sandbox.file.duration.seconds{operation, result}`: how long a whole call took.
const FILE_DURATION: &str = "sandbox.file.duration.seconds";
/// Histogram `sandbox.file.bytes{operation}`: the size of each file moved.
const FILE_BYTES: &str = "sandbox.file.bytes";

/// The largest file that can be uploaded.
pub const DEFAULT_UPLOAD_LIMIT: u64 = 16 * 1024 * 1024;
/// The largest file that can be downloaded.
pub const DEFAULT_DOWNLOAD_LIMIT: u64 = 16 * 1024 * 1024;

/// The size limits of [`SandboxFiles`]. Files are held in memory whole on their way through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSettings {
    pub upload_limit: u64,
    pub download_limit: u64,
}

impl Default for FileSettings {
    fn default() -> Self {
        Self { upload_limit: DEFAULT_UPLOAD_LIMIT, download_limit: DEFAULT_DOWNLOAD_LIMIT }
    }
}

/// A file written into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedFile {
    pub session: SandboxSession,
    pub path: WorkspacePath,
    pub size: u64,
}

/// A file read from a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadedFile {
    pub session: SandboxSession,
    pub path: WorkspacePath,
    pub bytes: Vec<u8>,
}

/// Why a file could not be moved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxFilesError {
    /// The path breaks the confinement rule (nothing was touched).
    #[error(transparent)]
    InvalidPath(#[from] PathError),
    /// The chat has no running sandbox, or only an expired one.
    #[error("chat {chat_id} has no running sandbox; create one first (get-or-create), then retry")]
    NoSandbox { chat_id: ChatId },
    /// As many execs and file transfers as allowed are already running in this sandbox.
    #[error(
        "the sandbox of chat {chat_id} is busy: {limit} operations are already running in it; \
         retry when one has finished"
    )]
    Busy { chat_id: ChatId, limit: usize },
    /// The sandbox went away before or during the transfer.
    #[error(
        "the sandbox of chat {chat_id} (session {session_id}) stopped running before the \
         transfer finished; it was deleted, replaced or cleaned up; get-or-create a sandbox and \
         retry"
    )]
    SandboxGone { chat_id: ChatId, session_id: SessionId },
    /// What the sandbox's file system said: not found, too large, not a regular file, outside
    /// the workspace through a link, a file where a directory is needed, workspace full. An
    /// upload over the limit is refused here as `TooLarge` before anything is touched.
    /// Never `FileError::ContainerNotRunning` or `FileError::Runtime`: those become
    /// [`Self::SandboxGone`] and [`Self::Runtime`].
    #[error(transparent)]
    File(FileError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl SandboxFilesError {
    /// A short stable name for the `error.type` label, e.g. `file_not_found`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidPath(_) => "invalid_path",
            Self::NoSandbox { .. } => "no_sandbox",
            Self::Busy { .. } => "busy",
            Self::SandboxGone { .. } => "sandbox_gone",
            Self::File(error) => error.kind(),
            Self::Store(error) => error.kind(),
            Self::Runtime(error) => error.kind(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Operation {
    Upload,
    Download,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
        }
    }
}

/// Uploads and downloads files of a chat's running sandbox, paths relative to `/workspace`.
///
/// The path rule ([`WorkspacePath::parse`]) is checked first; symbolic links inside the
/// sandbox that lead out of `/workspace` are refused by the runtime. Like
/// [`crate::ExecInSandbox`], no chat lock is taken, and a transfer takes one of the sandbox's
/// operation slots.
#[derive(Clone)]
pub struct SandboxFiles {
    repository: Arc<dyn SessionRepository>,
    runtime: Arc<dyn SandboxRuntime>,
    clock: Arc<dyn Clock>,
    slots: SandboxSlots,
    settings: FileSettings,
    sliding_expiry: Option<KeepAlive>,
}

impl fmt::Debug for SandboxFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxFiles")
            .field("settings", &self.settings)
            .field("slots", &self.slots)
            .field("sliding_expiry", &self.sliding_expiry.is_some())
            .finish_non_exhaustive()
    }
}

impl SandboxFiles {
    pub fn new(
        repository: Arc<dyn SessionRepository>,
        runtime: Arc<dyn SandboxRuntime>,
        clock: Arc<dyn Clock>,
        slots: SandboxSlots,
        settings: FileSettings,
    ) -> Self {
        Self { repository, runtime, clock, slots, settings, sliding_expiry: None }
    }

    /// Sliding expiry: a transfer counts as activity, and its sandbox is kept alive while it
    /// runs (see [`KeepAlive::while_active`]). Without this the expiry stays where it is.
    pub fn with_sliding_expiry(mut self, keep_alive: KeepAlive) -> Self {
        self.sliding_expiry = Some(keep_alive);
        self
    }

    pub fn settings(&self) -> &FileSettings {
        &self.settings
    }

    /// Writes `bytes` to `path` (relative to `/workspace`), creating missing directories and
    /// replacing an existing file whole.
    pub async fn upload(
        &self,
        chat_id: ChatId,
        path: &str,
        bytes: &[u8],
    ) -> Result<UploadedFile, SandboxFilesError> {
        let span = file_span(Operation::Upload, chat_id, path);
        let started = Instant::now();
        let outcome = async {
            let path = WorkspacePath::parse(path)?;
            let size = bytes.len() as u64;
            span.record("file.size", size);
            if size > self.settings.upload_limit {
                let limit = self.settings.upload_limit;
                return Err(SandboxFilesError::File(FileError::TooLarge { path, size, limit }));
            }
            let session = self.session(chat_id, &span).await?;
            let _slot = self.slot(chat_id, &session)?;
            let upload = self.runtime.upload(&session.container_id, &path, bytes);
            self.while_active(&session, upload).await.map_err(|error| gone(error, &session))?;
            Ok(UploadedFile { session, path, size })
        }
        .instrument(span.clone())
        .await;
        finish(&span, Operation::Upload, started, &outcome, |file| file.size);
        outcome
    }

    /// Reads the regular file at `path` (relative to `/workspace`).
    pub async fn download(
        &self,
        chat_id: ChatId,
        path: &str,
    ) -> Result<DownloadedFile, SandboxFilesError> {
        let span = file_span(Operation::Download, chat_id, path);
        let started = Instant::now();
        let outcome = async {
            let path = WorkspacePath::parse(path)?;
            let session = self.session(chat_id, &span).await?;
            let _slot = self.slot(chat_id, &session)?;
            let download =
                self.runtime.download(&session.container_id, &path, self.settings.download_limit);
            let bytes = self
                .while_active(&session, download)
                .await
                .map_err(|error| gone(error, &session))?;
            span.record("file.size", bytes.len() as u64);
            Ok(DownloadedFile { session, path, bytes })
        }
        .instrument(span.clone())
        .await;
        finish(&span, Operation::Download, started, &outcome, |file| file.bytes.len() as u64);
        outcome
    }

    async fn while_active<F: std::future::Future>(
        &self,
        session: &SandboxSession,
        transfer: F,
    ) -> F::Output {
        match &self.sliding_expiry {
            Some(keep_alive) => keep_alive.while_active(session, transfer).await,
            None => transfer.await,
        }
    }

    async fn session(
        &self,
        chat_id: ChatId,
        span: &Span,
    ) -> Result<SandboxSession, SandboxFilesError> {
        let session = live_session(self.repository.as_ref(), self.clock.as_ref(), chat_id)
            .await?
            .ok_or(SandboxFilesError::NoSandbox { chat_id })?;
        span.record("session.id", display(session.session_id));
        span.record("container.id", display(&session.container_id));
        Ok(session)
    }

    fn slot(
        &self,
        chat_id: ChatId,
        session: &SandboxSession,
    ) -> Result<crate::exec::Slot, SandboxFilesError> {
        self.slots
            .try_acquire(session.session_id)
            .ok_or(SandboxFilesError::Busy { chat_id, limit: self.slots.per_sandbox() })
    }
}

fn file_span(operation: Operation, chat_id: ChatId, path: &str) -> Span {
    // The path as given (it may be invalid), escaped so that it stays on one line.
    let shown = path.escape_debug().to_string();
    match operation {
        Operation::Upload => tracing::info_span!(
            "usecase.upload_file",
            chat.id = %chat_id,
            file.path = %shown,
            file.size = Empty,
            session.id = Empty,
            container.id = Empty,
            sandbox.result = Empty,
            error = Empty,
            "error.type" = Empty,
            otel.status_code = Empty,
        ),
        Operation::Download => tracing::info_span!(
            "usecase.download_file",
            chat.id = %chat_id,
            file.path = %shown,
            file.size = Empty,
            session.id = Empty,
            container.id = Empty,
            sandbox.result = Empty,
            error = Empty,
            "error.type" = Empty,
            otel.status_code = Empty,
        ),
    }
}

/// The runtime's "container not running" is the sandbox going away under the transfer.
fn gone(error: FileError, session: &SandboxSession) -> SandboxFilesError {
    match error {
        FileError::ContainerNotRunning { .. } => SandboxFilesError::SandboxGone {
            chat_id: session.chat_id,
            session_id: session.session_id,
        },
        FileError::Runtime(error) => SandboxFilesError::Runtime(error),
        other => SandboxFilesError::File(other),
    }
}

fn finish<T>(
    span: &Span,
    operation: Operation,
    started: Instant,
    outcome: &Result<T, SandboxFilesError>,
    size: impl Fn(&T) -> u64,
) {
    let result = match outcome {
        Ok(done) => {
            metrics::histogram!(FILE_BYTES, "operation" => operation.as_str())
                .record(size(done) as f64);
            "ok"
        }
        Err(error) => {
            record_error(span, error, error.kind());
            "error"
        }
    };
    span.record("sandbox.result", result);
    metrics::counter!(FILE_TOTAL, "operation" => operation.as_str(), "result" => result)
        .increment(1);
    metrics::histogram!(FILE_DURATION, "operation" => operation.as_str(), "result" => result)
        .record(started.elapsed().as_secs_f64());
}
