//! `POST /v1/chats/{chat_id}/sandbox/keepalive`: keep the chat's sandbox alive for longer.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::SecondsFormat;
use sandkeeper_usecase::{KeepAliveCommand, KeepAliveError, KeepAliveOutcome};
use serde::Serialize;

use super::body::CreateSandboxRequest;
use super::views::SessionView;
use super::{ApiError, AppState, ChatPath};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/chats/{chat_id}/sandbox/keepalive", post(keep_alive))
}

/// The session with its new expiry, what the call did, and how far the sandbox can ever live.
#[derive(Debug, Serialize)]
struct KeepAliveView {
    #[serde(flatten)]
    session: SessionView,
    /// `extended` or `unchanged` (the expiry never moves back, nor past `lifetime_ends_at`).
    result: &'static str,
    lifetime_ends_at: String,
}

impl KeepAliveView {
    fn new(outcome: &KeepAliveOutcome) -> Self {
        Self {
            session: SessionView::new(&outcome.session, None),
            result: outcome.result.as_str(),
            lifetime_ends_at: outcome.lifetime_ends_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

/// The body is the one of `PUT .../sandbox`: none, or `{"ttl_seconds": N}` up to `--max-ttl`.
async fn keep_alive(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
    request: CreateSandboxRequest,
) -> Result<Response, ApiError> {
    let command = KeepAliveCommand { chat_id, ttl: request.ttl };
    match state.services.keep_alive.execute(command).await {
        Ok(outcome) => Ok(axum::Json(KeepAliveView::new(&outcome)).into_response()),
        // The body's bound (--max-ttl) makes this unreachable from the API.
        Err(error @ KeepAliveError::InvalidTtl { .. }) => {
            Err(ApiError::bad_request("invalid_ttl", error.to_string()))
        }
        Err(KeepAliveError::Access(error)) => Err(error.into()),
    }
}
