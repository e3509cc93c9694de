//! Moving files in and out of a chat's sandbox, confined to its `/workspace`.

use std::time::Instant;

use sandkeeper_domain::{ChatId, SandboxSession};
use sandkeeper_ports::error_kind;
use sandkeeper_ports::{FileError, PathError, WorkspacePath};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::access::{AccessError, Entered, Operation, SandboxAccess};
use crate::telemetry::{record_result, usecase_span};

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
    /// What the sandbox's file system said: not found, too large, not a regular file, outside
    /// the workspace through a link, a file where a directory is needed, workspace full. An
    /// upload over the limit is refused here as `TooLarge` before anything is touched.
    /// Never `FileError::ContainerNotRunning` or `FileError::Runtime`: those become
    /// [`AccessError::SandboxGone`] and [`AccessError::Runtime`].
    #[error(transparent)]
    File(FileError),
    /// No running sandbox, a busy one, one that went away before or during the transfer, or
    /// the store or the runtime failed.
    #[error(transparent)]
    Access(#[from] AccessError),
}

error_kind!(SandboxFilesError { InvalidPath => "invalid_path" } wraps File, Access);

/// The two transfers, each with a span of its own.
#[derive(Debug, Clone, Copy)]
enum Transfer {
    Upload,
    Download,
}

impl Transfer {
    const fn operation(self) -> Operation {
        match self {
            Self::Upload => Operation::Upload,
            Self::Download => Operation::Download,
        }
    }

    const fn as_str(self) -> &'static str {
        self.operation().as_str()
    }
}

/// Uploads and downloads files of a chat's running sandbox, paths relative to `/workspace`.
///
/// The path rule ([`WorkspacePath::parse`]) is checked first; symbolic links inside the
/// sandbox that lead out of `/workspace` are refused by the runtime. The sandbox is entered
/// through [`SandboxAccess`], like [`crate::ExecInSandbox`]: no chat lock is taken, and a
/// transfer takes one of the sandbox's operation slots.
#[derive(Debug, Clone)]
pub struct SandboxFiles {
    access: SandboxAccess,
    settings: FileSettings,
}

impl SandboxFiles {
    /// Give [`crate::ExecInSandbox`] the same `access` so that transfers and commands share the
    /// bound per sandbox (and the sliding expiry).
    pub fn new(access: SandboxAccess, settings: FileSettings) -> Self {
        Self { access, settings }
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
        let span = file_span(Transfer::Upload, chat_id, path);
        let started = Instant::now();
        let outcome = async {
            let path = WorkspacePath::parse(path)?;
            let size = bytes.len() as u64;
            span.record("file.size", size);
            if size > self.settings.upload_limit {
                let limit = self.settings.upload_limit;
                return Err(SandboxFilesError::File(FileError::TooLarge { path, size, limit }));
            }
            let entered = self.access.enter(chat_id, Operation::Upload).await?;
            let upload = entered.runtime().upload(&entered.session().container_id, &path, bytes);
            entered.run(upload).await.map_err(|error| failed(error, &entered))?;
            Ok(UploadedFile { session: entered.into_session(), path, size })
        }
        .instrument(span.clone())
        .await;
        finish(&span, Transfer::Upload, started, &outcome, |file| file.size);
        outcome
    }

    /// Reads the regular file at `path` (relative to `/workspace`).
    pub async fn download(
        &self,
        chat_id: ChatId,
        path: &str,
    ) -> Result<DownloadedFile, SandboxFilesError> {
        let span = file_span(Transfer::Download, chat_id, path);
        let started = Instant::now();
        let outcome = async {
            let path = WorkspacePath::parse(path)?;
            let entered = self.access.enter(chat_id, Operation::Download).await?;
            let container = &entered.session().container_id;
            let download =
                entered.runtime().download(container, &path, self.settings.download_limit);
            let bytes = entered.run(download).await.map_err(|error| failed(error, &entered))?;
            span.record("file.size", bytes.len() as u64);
            Ok(DownloadedFile { session: entered.into_session(), path, bytes })
        }
        .instrument(span.clone())
        .await;
        finish(&span, Transfer::Download, started, &outcome, |file| file.bytes.len() as u64);
        outcome
    }
}

fn file_span(transfer: Transfer, chat_id: ChatId, path: &str) -> Span {
    // The path as given (it may be invalid), escaped so that it stays on one line.
    let shown = path.escape_debug().to_string();
    // Both transfers carry the same fields; only the span name (a constant) differs.
    macro_rules! transfer_span {
        ($name:literal) => {
            usecase_span!(
                chat: chat_id,
                $name,
                file.path = %shown,
                file.size = Empty,
            )
        };
    }
    match transfer {
        Transfer::Upload => transfer_span!("usecase.upload_file"),
        Transfer::Download => transfer_span!("usecase.download_file"),
    }
}

/// The runtime's "container not running" is the sandbox going away under the transfer; the
/// rest is what the sandbox's file system said.
fn failed(error: FileError, entered: &Entered) -> SandboxFilesError {
    match error {
        FileError::ContainerNotRunning { .. } => entered.gone().into(),
        FileError::Runtime(error) => AccessError::Runtime(error).into(),
        other => SandboxFilesError::File(other),
    }
}

fn finish<T>(
    span: &Span,
    transfer: Transfer,
    started: Instant,
    outcome: &Result<T, SandboxFilesError>,
    size: impl Fn(&T) -> u64,
) {
    let result = record_result(span, outcome.as_ref(), |done| {
        metrics::histogram!(FILE_BYTES, "operation" => transfer.as_str()).record(size(done) as f64);
        "ok"
    });
    metrics::counter!(FILE_TOTAL, "operation" => transfer.as_str(), "result" => result)
        .increment(1);
    metrics::histogram!(FILE_DURATION, "operation" => transfer.as_str(), "result" => result)
        .record(started.elapsed().as_secs_f64());
}
