//! `POST /v1/chats/{chat_id}/sandbox/keepalive`: keep the chat's sandbox alive for longer.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::SecondsFormat;
use sandkeeper_usecase::{KeepAliveCommand, KeepAliveError, KeepAliveOutcome};
use serde::Serialize;

use super::views::SessionView;
use super::{ApiError, AppState, body, parse_chat_id};

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
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let chat_id = parse_chat_id(path)?;
    let request = body::create_sandbox_request(body, state.max_ttl)?;
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
