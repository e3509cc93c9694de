//! The workspace routes: `GET` and `DELETE /v1/chats/{chat_id}/workspace` (the stored archive's
//! metadata, its removal) and `GET` and `PUT /v1/chats/{chat_id}/workspace/archive` (the
//! archive as `application/x-tar`: out of the running sandbox or the store; in, replacing the
//! stored one and a running sandbox's `/workspace`). Archives go through temporary files,
//! never whole through memory; an upload beyond `--workspace-size` is refused while it is read.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::SecondsFormat;
use http_body_util::BodyExt;
use sandkeeper_ports::{ArchiveError, Report, RuntimeError, WorkspaceMeta};
use sandkeeper_usecase::{WorkspaceError, WorkspaceRestore, Workspaces};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::{ApiError, AppState, ChatPath};

/// The buffer of an archive's file as it is streamed to or from a client: each read or write
/// of a `tokio::fs::File` is a trip to the blocking pool.
const TRANSFER_BUFFER: usize = 1 << 20;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/chats/{chat_id}/workspace", get(get_meta).delete(delete)).route(
        "/v1/chats/{chat_id}/workspace/archive",
        // The body is read here, bounded by --workspace-size as it arrives.
        get(download).put(upload).layer(DefaultBodyLimit::disable()),
    )
}

/// A stored archive's metadata.
#[derive(Debug, Serialize)]
struct WorkspaceView {
    chat_id: String,
    size_bytes: u64,
    saved_at: String,
    session_id: Option<String>,
}

impl From<&WorkspaceMeta> for WorkspaceView {
    fn from(meta: &WorkspaceMeta) -> Self {
        Self {
            chat_id: meta.chat_id.to_string(),
            size_bytes: meta.size_bytes,
            saved_at: meta.saved_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            session_id: meta.session_id.map(|id| id.to_string()),
        }
    }
}

/// The `workspace` of a `PUT /v1/chats/{chat_id}/sandbox` answer that created a sandbox.
#[derive(Debug, Serialize)]
pub(crate) struct RestoreView {
    restored: bool,
    size_bytes: u64,
    saved_at: Option<String>,
}

impl From<WorkspaceRestore> for RestoreView {
    fn from(restore: WorkspaceRestore) -> Self {
        Self {
            restored: restore.restored,
            size_bytes: restore.size_bytes,
            saved_at: restore.saved_at.map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        }
    }
}

fn workspaces(state: &AppState) -> Result<&Workspaces, ApiError> {
    state.services.workspaces.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "no_workspace",
            "this sandkeeper keeps no workspaces (--workspace-store off)",
        )
    })
}

async fn get_meta(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
) -> Result<Response, ApiError> {
    let meta = workspaces(&state)?.meta(chat_id).await?;
    Ok(axum::Json(WorkspaceView::from(&meta)).into_response())
}

async fn delete(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
) -> Result<Response, ApiError> {
    workspaces(&state)?.delete(chat_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn download(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
) -> Result<Response, ApiError> {
    let archive = workspaces(&state)?.download(chat_id).await?;
    let size = archive.size();
    let file = archive.open().await.map_err(|error| ApiError::internal(&error))?;
    // The open file is read to its end even though the temporary name is removed now.
    drop(archive);
    let body = Body::from_stream(ReaderStream::with_capacity(file, TRANSFER_BUFFER));
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar"), (header::CONTENT_LENGTH, &size.to_string())],
        body,
    )
        .into_response())
}

async fn upload(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
    request: Request,
) -> Result<Response, ApiError> {
    let workspaces = workspaces(&state)?;
    let limit = workspaces.settings().size_limit;
    let too_large = || {
        ApiError::with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "workspace_too_large",
            format!(
                "the archive is larger than the limit of {limit} bytes (the server's \
                 --workspace-size); nothing was changed"
            ),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|declared| declared > limit) {
        return Err(too_large());
    }
    let (mut archive, file) = workspaces.scratch_file().await?;
    let mut file = tokio::io::BufWriter::with_capacity(TRANSFER_BUFFER, file);
    let mut body = request.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::bad_request(
                "invalid_body",
                format!("the request body could not be read: {error}; nothing was changed"),
            )
        })?;
        let Ok(data) = frame.into_data() else { continue };
        received += data.len() as u64;
        if received > limit {
            return Err(too_large());
        }
        file.write_all(&data).await.map_err(|error| ApiError::internal(&error))?;
    }
    file.flush().await.map_err(|error| ApiError::internal(&error))?;
    drop(file);
    archive.set_size(received);
    let meta = workspaces.upload(chat_id, archive).await?;
    Ok(axum::Json(WorkspaceView::from(&meta)).into_response())
}

impl From<WorkspaceError> for ApiError {
    fn from(error: WorkspaceError) -> Self {
        let message = Report(&error).to_string();
        match error {
            WorkspaceError::NoWorkspace { chat_id } => ApiError::not_found(
                "no_workspace",
                format!("chat {chat_id} has no stored workspace and no running sandbox"),
            ),
            WorkspaceError::InvalidArchive(invalid) => ApiError::bad_request(
                "invalid_archive",
                format!("{invalid}; send a tar archive of the workspace; nothing was changed"),
            ),
            WorkspaceError::Corrupt { .. } => ApiError::conflict("workspace_corrupt", message),
            WorkspaceError::Restore { .. } => {
                tracing::warn!(error.message = %message, "workspace_restore_failed");
                ApiError::unavailable(
                    "workspace_restore_failed",
                    format!("{message}; retry shortly"),
                )
            }
            WorkspaceError::Archive { error: ArchiveError::TooLarge { limit }, chat_id } => {
                ApiError::with_status(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "workspace_too_large",
                    format!(
                        "the workspace of chat {chat_id} makes an archive larger than the limit \
                         of {limit} bytes (--workspace-size); remove files from it"
                    ),
                )
            }
            // Docker is down: the answer every route gives then, whatever it was doing.
            WorkspaceError::Archive {
                error:
                    ArchiveError::Runtime(
                        error @ (RuntimeError::Unavailable(_) | RuntimeError::Timeout { .. }),
                    ),
                ..
            } => error.into(),
            WorkspaceError::Archive { .. } => {
                tracing::warn!(error.message = %message, "workspace_archive_failed");
                ApiError::unavailable(
                    "workspace_archive_failed",
                    format!(
                        "{message}; the sandbox and the previous archive were kept, retry shortly"
                    ),
                )
            }
            WorkspaceError::Store(error) => error.into(),
        }
    }
}
