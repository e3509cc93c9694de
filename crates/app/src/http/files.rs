//! `PUT` and `GET /v1/chats/{chat_id}/sandbox/files/{path}`: move a file into or out of the
//! chat's sandbox, as raw bytes, with paths relative to `/workspace`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use percent_encoding::percent_decode_str;
use sandkeeper_domain::ChatId;
use sandkeeper_ports::{FileError, WorkspacePath};
use sandkeeper_usecase::{AccessError, SandboxFilesError};
use serde::{Deserialize, Serialize};

use super::body::shorten;
use super::{ApiError, AppState, ChatPath};

const ROUTE: &str = "/v1/chats/{chat_id}/sandbox/files/{*path}";

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let limit = usize::try_from(state.services.files.settings().upload_limit).unwrap_or(usize::MAX);
    Router::new()
        .route(ROUTE, put(upload).layer(DefaultBodyLimit::max(limit)).get(download))
        // Without a path the catch-all does not match; say what is missing instead of 404.
        .route("/v1/chats/{chat_id}/sandbox/files", put(no_path).get(no_path))
        .route("/v1/chats/{chat_id}/sandbox/files/", put(no_path).get(no_path))
}

#[derive(Debug, Deserialize)]
struct FilePath {
    chat_id: String,
    path: String,
}

/// The chat id and the file's path, both checked for what can be checked without a sandbox.
/// The chat id is judged first, as on every chat route.
fn parse_path(
    uri: &Uri,
    path: Result<Path<FilePath>, PathRejection>,
) -> Result<(ChatId, String), ApiError> {
    let Path(FilePath { chat_id, path }) = match path {
        Ok(path) => path,
        Err(rejection) => {
            // A parameter that is not UTF-8 once percent-decoded makes both unreadable: judge
            // the chat id from the URI, so that a bad one is named as such.
            chat_id_in(uri)?;
            return Err(ApiError::bad_request(
                "invalid_path",
                format!(
                    "the path could not be read: {}; percent-encode it as UTF-8",
                    rejection.body_text()
                ),
            ));
        }
    };
    let chat_id = ChatId::parse(&chat_id)
        .map_err(|error| ApiError::bad_request("invalid_chat_id", error.to_string()))?;
    Ok((chat_id, path))
}

/// The chat id of a `/v1/chats/{chat_id}/...` URI, percent-decoded and parsed.
fn chat_id_in(uri: &Uri) -> Result<ChatId, ApiError> {
    let raw = uri
        .path()
        .strip_prefix("/v1/chats/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    // `%` and two hex digits is a byte, as the router decodes it; any other `%` stays.
    let text = percent_decode_str(raw).decode_utf8().map_err(|_| {
        ApiError::bad_request(
            "invalid_chat_id",
            format!(
                "chat id `{}` is not UTF-8 once percent-decoded, so not a UUID (expected e.g. \
                 11111111-1111-1111-1111-111111111111)",
                shorten(raw)
            ),
        )
    })?;
    ChatId::parse(&text)
        .map_err(|error| ApiError::bad_request("invalid_chat_id", error.to_string()))
}

/// The answer to an upload.
#[derive(Debug, Serialize)]
struct UploadedView {
    /// Relative to `/workspace`.
    path: String,
    size: u64,
    session_id: String,
}

async fn upload(
    State(state): State<AppState>,
    uri: Uri,
    path: Result<Path<FilePath>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let (chat_id, path) = parse_path(&uri, path)?;
    // The body is read only for a chat that has a running sandbox: a request for any other chat
    // is answered without holding its bytes (the rest of it is drained, not kept).
    WorkspacePath::parse(&path).map_err(|error| files_error(error.into()))?;
    if state.services.queries.running_for_chat(chat_id).await?.is_none() {
        return Err(AccessError::NoSandbox { chat_id }.into());
    }
    let limit = state.services.files.settings().upload_limit;
    let body =
        Bytes::from_request(request, &state).await.map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::with_status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "file_too_large",
                    format!(
                        "the file is larger than the limit of {limit} bytes (the server's \
                     --file-size-limit)"
                    ),
                )
            } else {
                ApiError::bad_request(
                    "invalid_body",
                    format!("the request body could not be read: {}", rejection.body_text()),
                )
            }
        })?;
    let uploaded = state.services.files.upload(chat_id, &path, &body).await.map_err(files_error)?;
    let view = UploadedView {
        path: uploaded.path.to_string(),
        size: uploaded.size,
        session_id: uploaded.session.session_id.to_string(),
    };
    Ok(axum::Json(view).into_response())
}

async fn download(
    State(state): State<AppState>,
    uri: Uri,
    path: Result<Path<FilePath>, PathRejection>,
) -> Result<Response, ApiError> {
    let (chat_id, path) = parse_path(&uri, path)?;
    let file = state.services.files.download(chat_id, &path).await.map_err(files_error)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], file.bytes).into_response())
}

async fn no_path(chat: Result<ChatPath, ApiError>) -> ApiError {
    match chat {
        Err(error) => error,
        Ok(_) => ApiError::bad_request(
            "invalid_path",
            "the file's path is missing: add it after /files/, relative to /workspace, e.g. \
             /files/src/main.py",
        ),
    }
}

fn files_error(error: SandboxFilesError) -> ApiError {
    match error {
        SandboxFilesError::InvalidPath(_) => {
            ApiError::bad_request("invalid_path", error.to_string())
        }
        SandboxFilesError::File(error) => file_error(error),
        SandboxFilesError::Access(error) => error.into(),
    }
}

fn file_error(error: FileError) -> ApiError {
    let message = error.to_string();
    match error {
        FileError::NotFound { .. } => ApiError::not_found("file_not_found", message),
        FileError::NotARegularFile { .. } => ApiError::conflict("not_a_regular_file", message),
        FileError::ParentNotADirectory { .. } => {
            ApiError::conflict("parent_not_a_directory", message)
        }
        FileError::TooLarge { .. } => ApiError::with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
            format!("{message} (the server's --file-size-limit)"),
        ),
        FileError::OutsideWorkspace { .. } | FileError::LinkToNowhere { .. } => {
            ApiError::bad_request("outside_workspace", message)
        }
        FileError::PermissionDenied { .. } => {
            ApiError::with_status(StatusCode::FORBIDDEN, "permission_denied", message)
        }
        FileError::TimedOut { .. } => {
            ApiError::with_status(StatusCode::GATEWAY_TIMEOUT, "transfer_timed_out", message)
        }
        FileError::AtLimit { .. } => ApiError::conflict("sandbox_at_limit", message),
        FileError::WorkspaceFull { .. } => {
            ApiError::with_status(StatusCode::INSUFFICIENT_STORAGE, "workspace_full", message)
        }
        FileError::ContainerNotRunning { .. } => ApiError::conflict(
            "sandbox_gone",
            format!(
                "{message}; get-or-create a sandbox (PUT /v1/chats/{{chat_id}}/sandbox) and retry"
            ),
        ),
        FileError::Runtime(error) => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(path: &str) -> Uri {
        path.parse().unwrap()
    }

    #[test]
    fn the_chat_id_of_the_uri_is_percent_decoded() {
        let chat_id = chat_id_in(&uri(
            "/v1/chats/%31%31111111-1111-1111-1111-111111111111/sandbox/files/%ff",
        ))
        .unwrap();
        assert_eq!(chat_id.to_string(), "11111111-1111-1111-1111-111111111111");
    }

    #[test]
    fn a_chat_id_that_is_not_utf8_once_decoded_is_named_as_such() {
        for raw in ["%ff%fe", "a%c3"] {
            let error = chat_id_in(&uri(&format!("/v1/chats/{raw}/sandbox/files/x"))).unwrap_err();
            assert_eq!(
                (error.status(), error.code()),
                (StatusCode::BAD_REQUEST, "invalid_chat_id")
            );
            assert!(error.message().contains(&format!("`{raw}` is not UTF-8")), "{error:?}");
        }
    }

    #[test]
    fn a_percent_without_two_hex_digits_stays_and_fails_as_a_uuid() {
        let error = chat_id_in(&uri("/v1/chats/%zz1/sandbox/files/x")).unwrap_err();
        assert_eq!(error.code(), "invalid_chat_id");
        assert!(error.message().contains("%zz1"), "{error:?}");
    }
}
