//! Background processes of a chat's sandbox: `POST`/`GET /v1/chats/{chat_id}/sandbox/processes`,
//! `GET`/`DELETE .../processes/{process_id}`, `GET .../processes/{process_id}/logs` (JSON, or
//! followed as Server-Sent Events) and `POST .../processes/{process_id}/stdin` (raw bytes).

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sandkeeper_domain::{ChatId, Timestamp};
use sandkeeper_ports::{
    LogSlice, OutputChunk, OutputSender, OutputStream, ProcessInfo, ProcessLogs, ProcessState,
};
use sandkeeper_usecase::{SandboxProcesses, SandboxProcessesError};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::exec::{body_limit, exec_command, exec_error};
use percent_encoding::percent_decode_str;

use super::{ApiError, AppState, ChatPath, chat_id, stream};

/// How often a followed log is read again while nothing new came.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let settings = state.services.processes.settings();
    let start_limit = body_limit(settings.stdin_limit);
    let stdin_limit = settings.stdin_limit;
    Router::new()
        .route(
            "/v1/chats/{chat_id}/sandbox/processes",
            post(start).layer(DefaultBodyLimit::max(start_limit)).get(list),
        )
        .route("/v1/chats/{chat_id}/sandbox/processes/{process_id}", get(show).delete(kill))
        .route("/v1/chats/{chat_id}/sandbox/processes/{process_id}/logs", get(logs))
        .route(
            "/v1/chats/{chat_id}/sandbox/processes/{process_id}/stdin",
            post(stdin).layer(DefaultBodyLimit::max(stdin_limit)),
        )
}

/// The `{chat_id}` and `{process_id}` of a process's route. A process id that cannot name a
/// process (16 hex digits) is answered 404 like one that names none.
struct ProcessPath(ChatId, String);

impl<S: Send + Sync> FromRequestParts<S> for ProcessPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params =
            RawPathParams::from_request_parts(parts, state).await.map_err(|rejection| {
                ApiError::bad_request(
                    "invalid_chat_id",
                    format!("the path could not be read: {}", rejection.body_text()),
                )
            })?;
        let raw = |wanted: &str| {
            let value = params.iter().find(|(name, _)| *name == wanted).map_or("", |(_, v)| v);
            percent_decode_str(value).decode_utf8()
        };
        let chat = raw("chat_id").map_err(|_| {
            ApiError::bad_request(
                "invalid_chat_id",
                "the chat id in the path could not be read: it is not UTF-8 once percent-decoded",
            )
        })?;
        let chat_id = chat_id(&chat)?;
        let process_id = raw("process_id").map(String::from).unwrap_or_default();
        let valid = process_id.len() == 16
            && process_id.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(process_error(SandboxProcessesError::NotFound { process_id }));
        }
        Ok(Self(chat_id, process_id))
    }
}

fn rfc3339(timestamp: Timestamp) -> String {
    timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A process as the API shows it.
#[derive(Debug, Serialize)]
struct ProcessView {
    process_id: String,
    status: &'static str,
    command: Vec<String>,
    exit_code: Option<i64>,
    started_at: String,
    ended_at: Option<String>,
}

impl ProcessView {
    fn new(process: &ProcessInfo) -> Self {
        Self {
            process_id: process.process_id.clone(),
            status: process.state.as_str(),
            command: process.command.clone(),
            exit_code: process.exit_code,
            started_at: rfc3339(process.started_at),
            ended_at: process.ended_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize)]
struct ProcessListView {
    processes: Vec<ProcessView>,
}

async fn start(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let processes = &state.services.processes;
    let settings = state.services.exec.settings();
    let limit = body_limit(processes.settings().stdin_limit);
    let command = exec_command(chat_id, body, limit, settings.max_timeout)?;
    let started = processes.start(command).await.map_err(process_error)?;
    Ok((StatusCode::CREATED, axum::Json(ProcessView::new(&started.process))).into_response())
}

async fn list(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
) -> Result<Response, ApiError> {
    let processes = state.services.processes.list(chat_id).await.map_err(process_error)?;
    let processes = processes.iter().map(ProcessView::new).collect();
    Ok(axum::Json(ProcessListView { processes }).into_response())
}

async fn show(
    State(state): State<AppState>,
    ProcessPath(chat_id, process_id): ProcessPath,
) -> Result<Response, ApiError> {
    let process =
        state.services.processes.get(chat_id, &process_id).await.map_err(process_error)?;
    Ok(axum::Json(ProcessView::new(&process)).into_response())
}

async fn kill(
    State(state): State<AppState>,
    ProcessPath(chat_id, process_id): ProcessPath,
) -> Result<Response, ApiError> {
    state.services.processes.kill(chat_id, &process_id).await.map_err(process_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn stdin(
    State(state): State<AppState>,
    ProcessPath(chat_id, process_id): ProcessPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limit = state.services.processes.settings().stdin_limit;
    let body = super::body::read(body, limit)?;
    state.services.processes.stdin(chat_id, &process_id, &body).await.map_err(process_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    stdout_offset: Option<String>,
    stderr_offset: Option<String>,
}

/// A piece of a process's logs as the API shows it.
#[derive(Debug, Serialize)]
struct LogsView {
    stdout: String,
    stderr: String,
    stdout_offset: u64,
    stderr_offset: u64,
    truncated: bool,
    status: &'static str,
    exit_code: Option<i64>,
}

/// The bytes of `slice` that end at a character boundary, unless the stream has ended there:
/// a character cut by the read limit is read whole next time.
fn whole_characters(slice: &mut LogSlice, ended: bool) {
    if ended && slice.next_offset() >= slice.end {
        return;
    }
    if let Err(error) = std::str::from_utf8(&slice.bytes) {
        if error.error_len().is_none() {
            slice.bytes.truncate(error.valid_up_to());
        }
    }
}

/// Whether bytes from `requested` on were dropped before they could be read.
fn dropped(requested: u64, slice: &LogSlice) -> bool {
    requested < slice.first_kept
}

async fn logs(
    State(state): State<AppState>,
    ProcessPath(chat_id, process_id): ProcessPath,
    headers: HeaderMap,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = super::query_params(query, "stdout_offset and stderr_offset")?;
    let offsets = (
        offset(query.stdout_offset.as_deref(), "stdout_offset")?,
        offset(query.stderr_offset.as_deref(), "stderr_offset")?,
    );
    let processes = state.services.processes.clone();
    // The first read answers the refusals (no sandbox, no such process) with their status.
    let first = processes.logs(chat_id, &process_id, offsets).await.map_err(process_error)?;
    if stream::wants_events(&headers) {
        return Ok(follow(processes, chat_id, process_id, offsets, first));
    }
    let mut first = first;
    let ended = first.state != ProcessState::Running;
    whole_characters(&mut first.stdout, ended);
    whole_characters(&mut first.stderr, ended);
    Ok(axum::Json(logs_view(offsets, &first)).into_response())
}

fn logs_view(requested: (u64, u64), logs: &ProcessLogs) -> LogsView {
    LogsView {
        stdout: String::from_utf8_lossy(&logs.stdout.bytes).into_owned(),
        stderr: String::from_utf8_lossy(&logs.stderr.bytes).into_owned(),
        stdout_offset: logs.stdout.next_offset(),
        stderr_offset: logs.stderr.next_offset(),
        truncated: dropped(requested.0, &logs.stdout) || dropped(requested.1, &logs.stderr),
        status: logs.state.as_str(),
        exit_code: logs.exit_code,
    }
}

fn offset(raw: Option<&str>, name: &str) -> Result<u64, ApiError> {
    match raw {
        None => Ok(0),
        Some(raw) => raw.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_offset",
                format!("{name} `{raw}` is not a whole number of bytes from 0"),
            )
        }),
    }
}

/// The logs followed as events (like a streamed exec's) until the process has ended and its
/// output has been read to its end; then `exit` with the process and the offsets to read from
/// next. A client that goes away stops the following, never the process.
fn follow(
    processes: SandboxProcesses,
    chat_id: ChatId,
    process_id: String,
    requested: (u64, u64),
    first: ProcessLogs,
) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let task = async move {
        let mut logs = first;
        let mut truncated = false;
        let mut offsets = requested;
        let mut ended_reads = 0;
        loop {
            truncated |= dropped(offsets.0, &logs.stdout) || dropped(offsets.1, &logs.stderr);
            let read = send(&sender, OutputStream::Stdout, &logs.stdout)
                | send(&sender, OutputStream::Stderr, &logs.stderr);
            offsets = (logs.stdout.next_offset(), logs.stderr.next_offset());
            if logs.state != ProcessState::Running {
                // The supervisor writes the exit status before the last output may be read:
                // one more read once nothing new came.
                ended_reads += 1;
                if !read && ended_reads > 1 {
                    break;
                }
            }
            if sender.is_closed() {
                return None;
            }
            if !read {
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            }
            logs = match processes.logs(chat_id, &process_id, offsets).await {
                Ok(logs) => logs,
                Err(error) => return Some(stream::error_event(&process_error(error))),
            };
        }
        let ending = match processes.get(chat_id, &process_id).await {
            Ok(process) => stream::event(
                "exit",
                &serde_json::json!({
                    "process": ProcessView::new(&process),
                    "stdout_offset": offsets.0,
                    "stderr_offset": offsets.1,
                    "truncated": truncated,
                }),
            ),
            Err(error) => stream::error_event(&process_error(error)),
        };
        Some(ending)
    };
    let task = tokio::spawn(task.in_current_span());
    let ending = async move {
        match task.await {
            Ok(Some(event)) => event,
            Ok(None) => stream::event("end", &serde_json::json!({})),
            Err(panicked) => stream::error_event(&ApiError::internal(&panicked)),
        }
    };
    stream::output_answer(receiver, ending).into_response()
}

/// Sends what `slice` holds; whether it held anything.
fn send(sender: &OutputSender, stream: OutputStream, slice: &LogSlice) -> bool {
    if slice.bytes.is_empty() {
        return false;
    }
    let _ = sender.send(OutputChunk { stream, bytes: slice.bytes.clone() });
    true
}

fn process_error(error: SandboxProcessesError) -> ApiError {
    match error {
        SandboxProcessesError::Request(error) => exec_error(error),
        SandboxProcessesError::NotFound { .. } => {
            ApiError::not_found("process_not_found", error.to_string())
        }
        SandboxProcessesError::TooMany { .. } => ApiError::with_status(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_processes",
            error.to_string(),
        ),
        SandboxProcessesError::Access(error) => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_by_the_read_limit_is_left_for_the_next_read() {
        let euro = "€".as_bytes();
        let mut slice =
            LogSlice { bytes: [b"a", &euro[..2]].concat(), offset: 10, first_kept: 0, end: 20 };
        whole_characters(&mut slice, false);
        assert_eq!((slice.bytes.as_slice(), slice.next_offset()), (&b"a"[..], 11));
        let mut ended = LogSlice { bytes: vec![b'a', 0xe2], offset: 0, first_kept: 0, end: 2 };
        whole_characters(&mut ended, true);
        assert_eq!(ended.bytes, [b'a', 0xe2], "the end of an ended stream is all there is");
    }

    #[test]
    fn offsets_are_whole_numbers() {
        assert_eq!(offset(None, "stdout_offset").unwrap(), 0);
        assert_eq!(offset(Some("42"), "stdout_offset").unwrap(), 42);
        for bad in ["-1", "1.5", "x", ""] {
            let error = offset(Some(bad), "stderr_offset").unwrap_err();
            assert_eq!(error.code(), "invalid_offset");
        }
    }
}
