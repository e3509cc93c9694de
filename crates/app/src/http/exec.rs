//! `POST /v1/chats/{chat_id}/sandbox/exec`: run a command in the chat's sandbox and wait for it,
//! or (with `Accept: text/event-stream`) stream its output while it runs.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sandkeeper_domain::ChatId;
use sandkeeper_usecase::{ExecCommand, ExecInSandboxError, ExecOutcome};
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::body::{shorten, whole_number};
use super::{ApiError, AppState, ChatPath, stream};

/// Room in an exec body beyond its stdin: the command, the environment and JSON's own syntax.
const BODY_OVERHEAD: usize = 1024 * 1024;

/// The fields an exec body may have.
const FIELDS: [&str; 5] = ["command", "stdin", "env", "workdir", "timeout_ms"];

const COMMAND_EXAMPLE: &str = r#"["sh", "-c", "echo hi"]"#;

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let limit = body_limit(state.services.exec.settings().stdin_limit);
    Router::new()
        .route("/v1/chats/{chat_id}/sandbox/exec", post(exec).layer(DefaultBodyLimit::max(limit)))
}

/// The largest exec body: the most stdin plus [`BODY_OVERHEAD`].
pub(super) fn body_limit(stdin_limit: usize) -> usize {
    stdin_limit.saturating_add(BODY_OVERHEAD)
}

async fn exec(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let settings = state.services.exec.settings();
    let command =
        exec_command(chat_id, body, body_limit(settings.stdin_limit), settings.max_timeout)?;
    if stream::wants_events(&headers) {
        return streamed(&state, command).await;
    }
    let outcome = state.services.exec.execute(command).await.map_err(exec_error)?;
    Ok(axum::Json(ExecView::new(&outcome)).into_response())
}

/// `Accept: text/event-stream`: refusals are answered as usual; once the command runs, its
/// output is sent as events while it is produced, then `exit` with the fields of the JSON
/// answer (its `stdout` and `stderr` empty: they were sent), or `error` with the error
/// envelope. A client that goes away has its command killed.
async fn streamed(state: &AppState, command: ExecCommand) -> Result<Response, ApiError> {
    let prepared = state.services.exec.prepare(command).await.map_err(exec_error)?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let run = tokio::spawn(async move { prepared.run(Some(&sender)).await }.in_current_span());
    let ending = async move {
        match run.await {
            Ok(Ok(outcome)) => stream::event("exit", &ExecView::new(&outcome)),
            Ok(Err(error)) => stream::error_event(&exec_error(error)),
            Err(panicked) => stream::error_event(&ApiError::internal(&panicked)),
        }
    };
    Ok(stream::output_answer(receiver, ending).into_response())
}

/// How a command ended. Output is UTF-8 text; bytes that are not UTF-8 show as U+FFFD.
#[derive(Debug, Serialize)]
struct ExecView {
    /// `None` when the command timed out (it was killed, and did not exit by itself).
    exit_code: Option<i64>,
    stdout: String,
    stderr: String,
    timed_out: bool,
    truncated: bool,
    duration_ms: u64,
    /// The sandbox the command ran in.
    session_id: String,
}

impl ExecView {
    fn new(outcome: &ExecOutcome) -> Self {
        let output = &outcome.output;
        Self {
            exit_code: output.exit_code,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            timed_out: output.timed_out,
            truncated: output.truncated,
            duration_ms: u64::try_from(output.duration.as_millis()).unwrap_or(u64::MAX),
            session_id: outcome.session.session_id.to_string(),
        }
    }
}

/// Reads an exec body: a JSON object with `command` and optionally `stdin`, `env`, `workdir`,
/// `timeout_ms`. A bad field is a 400 that names it; nothing is touched before.
pub(super) fn exec_command(
    chat_id: ChatId,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    max_timeout: Duration,
) -> Result<ExecCommand, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::with_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body is larger than {limit} bytes (--exec-stdin-limit plus 1 MiB \
                     for the rest); send less stdin, or upload the input as a file first"
                ),
            )
        } else {
            ApiError::bad_request(
                "invalid_body",
                format!("the request body could not be read: {}", rejection.body_text()),
            )
        }
    })?;
    let invalid = |why: String| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "the request body is not valid: {why}; send a JSON object like \
                 {{\"command\": {COMMAND_EXAMPLE}}}"
            ),
        )
    };
    if body.trim_ascii().is_empty() {
        return Err(invalid("it is empty".to_owned()));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|error| invalid(error.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(invalid(format!("`{}` is not a JSON object", shorten(&value.to_string()))));
    };
    if let Some(unknown) = fields.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return Err(invalid(format!(
            "unknown field `{}`, expected one of {}",
            shorten(unknown),
            FIELDS.map(|field| format!("`{field}`")).join(", ")
        )));
    }
    let command = command_field(fields.remove("command"))?;
    let mut exec = ExecCommand::new(chat_id, command);
    exec.stdin = optional_string(&mut fields, "stdin", "invalid_stdin")?.map(String::into_bytes);
    exec.env = env_field(fields.remove("env"))?;
    exec.workdir = optional_string(&mut fields, "workdir", "invalid_workdir")?;
    exec.timeout = timeout_field(fields.remove("timeout_ms"), max_timeout)?;
    Ok(exec)
}

fn command_field(value: Option<Value>) -> Result<Vec<String>, ApiError> {
    let invalid = |why: String| {
        ApiError::bad_request(
            "invalid_command",
            format!(
                "`command` {why}; give the program and its arguments as an array of strings, \
                 e.g. {COMMAND_EXAMPLE}"
            ),
        )
    };
    match value {
        None | Some(Value::Null) => Err(invalid("is missing".to_owned())),
        Some(Value::Array(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(index, part)| match part {
                Value::String(part) => Ok(part),
                other => Err(invalid(format!(
                    "element {index} is `{}`, not a string",
                    shorten(&other.to_string())
                ))),
            })
            .collect(),
        Some(other) => Err(invalid(format!("is `{}`, not an array", shorten(&other.to_string())))),
    }
}

fn optional_string(
    fields: &mut Map<String, Value>,
    field: &'static str,
    code: &'static str,
) -> Result<Option<String>, ApiError> {
    match fields.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(ApiError::bad_request(
            code,
            format!("`{field}` is `{}`, not a string", shorten(&other.to_string())),
        )),
    }
}

fn env_field(value: Option<Value>) -> Result<Vec<(String, String)>, ApiError> {
    let invalid = |why: String| {
        ApiError::bad_request(
            "invalid_env",
            format!("`env` {why}; give an object of strings, e.g. {{\"NAME\": \"value\"}}"),
        )
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(variables)) => variables
            .into_iter()
            .map(|(name, value)| match value {
                Value::String(value) => Ok((name, value)),
                other => Err(invalid(format!(
                    "variable `{}` is `{}`, not a string",
                    shorten(&name),
                    shorten(&other.to_string())
                ))),
            })
            .collect(),
        Some(other) => Err(invalid(format!("is `{}`, not an object", shorten(&other.to_string())))),
    }
}

fn timeout_field(
    value: Option<Value>,
    max_timeout: Duration,
) -> Result<Option<Duration>, ApiError> {
    let max_ms = u64::try_from(max_timeout.as_millis()).unwrap_or(u64::MAX).max(1);
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match whole_number(&value) {
            Some(ms) if (1..=max_ms).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
            _ => Err(ApiError::bad_request(
                "invalid_timeout",
                format!(
                    "`timeout_ms` `{}` is not a whole number of milliseconds from 1 to {max_ms} \
                     (the server's --exec-max-timeout)",
                    shorten(&value.to_string())
                ),
            )),
        },
    }
}

pub(super) fn exec_error(error: ExecInSandboxError) -> ApiError {
    match error {
        ExecInSandboxError::Invalid { field, .. } => {
            let code = match field {
                "command" => "invalid_command",
                "env" => "invalid_env",
                "workdir" => "invalid_workdir",
                "timeout" => "invalid_timeout",
                _ => "invalid_body",
            };
            ApiError::bad_request(code, error.to_string())
        }
        ExecInSandboxError::StdinTooLarge { .. } => ApiError::with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "stdin_too_large",
            format!(
                "{error} (the server's --exec-stdin-limit); upload the input as a file instead"
            ),
        ),
        ExecInSandboxError::Access(error) => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = "11111111-1111-1111-1111-111111111111";

    fn parse(body: &str) -> Result<ExecCommand, ApiError> {
        let chat_id = ChatId::parse(CHAT).unwrap();
        exec_command(chat_id, Ok(Bytes::from(body.to_owned())), 1 << 20, Duration::from_secs(600))
    }

    #[test]
    fn every_field_is_read() {
        let command = parse(
            r#"{"command": ["sh", "-c", "cat"], "stdin": "in", "env": {"A": "1"},
                "workdir": "src", "timeout_ms": 1500}"#,
        )
        .unwrap();
        assert_eq!(command.command, ["sh", "-c", "cat"]);
        assert_eq!(command.stdin.as_deref(), Some(&b"in"[..]));
        assert_eq!(command.env, [("A".to_owned(), "1".to_owned())]);
        assert_eq!(command.workdir.as_deref(), Some("src"));
        assert_eq!(command.timeout, Some(Duration::from_millis(1500)));
        let minimal = parse(r#"{"command": ["true"], "stdin": null, "timeout_ms": null}"#).unwrap();
        assert_eq!((minimal.stdin, minimal.timeout, minimal.env), (None, None, vec![]));
    }

    #[test]
    fn a_bad_field_is_named_with_its_own_code() {
        for (body, code, part) in [
            (r#"{}"#, "invalid_command", "`command` is missing"),
            (r#"{"command": "ls"}"#, "invalid_command", "is `\"ls\"`, not an array"),
            (r#"{"command": ["ls", 1]}"#, "invalid_command", "element 1 is `1`, not a string"),
            (r#"{"command": ["ls"], "stdin": 5}"#, "invalid_stdin", "`stdin` is `5`"),
            (r#"{"command": ["ls"], "env": []}"#, "invalid_env", "is `[]`, not an object"),
            (r#"{"command": ["ls"], "env": {"A": 1}}"#, "invalid_env", "variable `A` is `1`"),
            (r#"{"command": ["ls"], "workdir": true}"#, "invalid_workdir", "`workdir` is `true`"),
            (r#"{"command": ["ls"], "timeout_ms": 0}"#, "invalid_timeout", "`timeout_ms` `0`"),
            (r#"{"command": ["ls"], "timeout_ms": 600001}"#, "invalid_timeout", "1 to 600000"),
            (r#"{"command": ["ls"], "timeout_ms": 1.5}"#, "invalid_timeout", "`1.5`"),
            (r#"{"command": ["ls"], "timeout": 5}"#, "invalid_body", "unknown field `timeout`"),
            (r#"[]"#, "invalid_body", "not a JSON object"),
            (r#"{"command": "#, "invalid_body", "not valid"),
            ("", "invalid_body", "it is empty"),
        ] {
            let error = parse(body).unwrap_err();
            assert_eq!((error.status(), error.code()), (StatusCode::BAD_REQUEST, code), "{body}");
            assert!(error.message().contains(part), "{body}: {error:?}");
        }
    }

    #[test]
    fn the_body_limit_leaves_room_beyond_the_stdin() {
        assert_eq!(body_limit(16 << 20), (16 << 20) + (1 << 20));
        assert_eq!(body_limit(usize::MAX), usize::MAX);
    }
}
