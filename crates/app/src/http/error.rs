//! The API's error responses: `{"error": {"code": "...", "message": "..."}}`.
//!
//! Every failure a handler can meet is turned into an [`ApiError`] here, in one place, so that
//! the status codes and codes of the API stay consistent. A 500 never carries the cause: the
//! cause is logged, the client gets a generic message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sandkeeper_ports::{Report, RuntimeError, SaveError, StoreError};
use sandkeeper_usecase::AccessError;
use serde::Serialize;

use super::body::shorten;

/// What an operator does about a missing sandbox image.
pub(crate) const IMAGE_ADVICE: &str =
    "build it with `cargo xtask image` (or `docker build`), or choose another with --image";

/// The most characters of a message; a longer one (which only input quoted outside backticks
/// could make) is cut.
const MAX_MESSAGE_CHARS: usize = 1024;

/// A message whose quotes are short: every part between backticks (where messages quote what
/// was sent, and where the errors of serde, the router and the domain quote it too) keeps at
/// most a bounded prefix, so that a large bad input never makes a large answer.
fn bounded(message: String) -> String {
    let parts: Vec<&str> = message.split('`').collect();
    let message = if parts.len() % 2 == 1 {
        parts
            .iter()
            .enumerate()
            .map(|(index, part)| if index % 2 == 1 { shorten(part) } else { (*part).to_owned() })
            .collect::<Vec<_>>()
            .join("`")
    } else {
        message
    };
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}...", &message[..cut]),
        None => message,
    }
}

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: bounded(message.into()) }
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    #[cfg(test)]
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    #[cfg(test)]
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// Any status with its code, for the answers of one route family (exec, files) that the
    /// constructors below do not name.
    pub(crate) fn with_status(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::new(status, code, message)
    }

    /// 400: a value in the request could not be accepted. `message` names the value.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub(crate) fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method {method} is not allowed on {path}; see docs/api.md for the API"),
        )
    }

    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub(crate) fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {} KiB", limit_bytes / 1024),
        )
    }

    pub(crate) fn capacity_reached(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "capacity_reached", message)
    }

    pub(crate) fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 500: logs the cause and answers with a generic message.
    pub(crate) fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error.message = %Report(cause), "request_failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "sandkeeper failed to handle the request; the cause is in its logs",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => {
                tracing::warn!(error.message = %Report(&error), "store_unavailable");
                Self::unavailable(
                    "store_unavailable",
                    "the session store is unavailable; retry shortly",
                )
            }
            StoreError::Failed(_) => Self::internal(&error),
        }
    }
}

impl From<SaveError> for ApiError {
    fn from(error: SaveError) -> Self {
        match error {
            SaveError::Store(error) => error.into(),
            // The chat's lock makes this unreachable unless the store is shared with something
            // that bypasses it; a retry will find the other session.
            SaveError::Conflict { .. } => Self::conflict("conflict", format!("{error}; retry")),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(error: RuntimeError) -> Self {
        match &error {
            RuntimeError::Unavailable(_) | RuntimeError::Timeout { .. } => {
                tracing::warn!(error.message = %Report(&error), "docker_unavailable");
                Self::unavailable(
                    "docker_unavailable",
                    format!("{}; retry shortly", Report(&error)),
                )
            }
            // The operator's fix is named in the message.
            RuntimeError::ImageMissing { .. } => {
                let message = format!("{error}; {IMAGE_ADVICE}");
                tracing::error!(error.message = %message, "image_missing");
                Self::unavailable("image_missing", message)
            }
            // The operator's fix (the same --engine set on every replica) is in the message.
            RuntimeError::UnknownEngine { .. } => {
                tracing::error!(error.message = %Report(&error), "unknown_engine");
                Self::unavailable("unknown_engine", error.to_string())
            }
            RuntimeError::NotManaged { .. } | RuntimeError::Failed(_) => Self::internal(&error),
        }
    }
}

/// The answers every route that works inside a sandbox shares.
impl From<AccessError> for ApiError {
    fn from(error: AccessError) -> Self {
        match error {
            // Says how to get one.
            AccessError::NoSandbox { chat_id } => Self::not_found(
                "sandbox_not_found",
                format!(
                    "chat {chat_id} has no running sandbox (none was created, it was deleted, or \
                     it expired); create one with PUT /v1/chats/{chat_id}/sandbox, then retry"
                ),
            ),
            // Its slots for operations are all taken.
            AccessError::Busy { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "sandbox_busy", error.to_string())
            }
            // It went away (deleted, replaced, cleaned up) while the request ran in it.
            AccessError::SandboxGone { .. } => Self::conflict("sandbox_gone", error.to_string()),
            AccessError::Store(error) => error.into(),
            AccessError::Runtime(error) => error.into(),
        }
    }
}

impl ApiError {
    /// The answer's JSON envelope, `{"error": {"code", "message"}}`, for an error told inside a
    /// stream whose status was already sent.
    pub(crate) fn envelope(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope { error: Body { code: self.code, message: &self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_quote_a_bounded_prefix_of_what_was_sent() {
        let long = "z".repeat(50_000);
        let error = ApiError::bad_request(
            "invalid_body",
            format!("field `{long}` is unknown, expected `ttl_seconds`"),
        );
        assert!(error.message().len() < 200, "{}", error.message());
        assert!(
            error.message().ends_with("is unknown, expected `ttl_seconds`"),
            "{}",
            error.message()
        );
        let error = ApiError::bad_request("invalid_body", format!("unbalanced ` {long}"));
        assert!(error.message().len() <= 1024 + 3, "{}", error.message().len());
    }

    use super::*;

    async fn body_of(error: ApiError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_have_the_documented_shape() {
        let (status, body) =
            body_of(ApiError::bad_request("invalid_chat_id", "chat id `x` is not a UUID")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "invalid_chat_id", "message": "chat id `x` is not a UUID"}})
        );
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_their_cause() {
        let error: ApiError =
            StoreError::Failed("syntax error near SELECT secret_table".into()).into();
        let (status, body) = body_of(error).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.to_string().contains("secret_table"), "{body}");
    }

    #[tokio::test]
    async fn unavailable_dependencies_are_503() {
        let docker: ApiError = RuntimeError::Unavailable("connect: no such file".into()).into();
        assert_eq!(
            (docker.status(), docker.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "docker_unavailable")
        );
        assert!(docker.message().contains("no such file"), "{docker:?}");
        let store: ApiError = StoreError::Unavailable("pool timed out".into()).into();
        assert_eq!(
            (store.status(), store.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        );
        let timeout: ApiError =
            RuntimeError::Timeout { operation: "create", after: std::time::Duration::from_secs(1) }
                .into();
        assert_eq!(timeout.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn unauthorized_names_the_scheme() {
        let response = ApiError::unauthorized("missing token").into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
