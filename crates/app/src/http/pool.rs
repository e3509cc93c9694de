//! `GET /v1/pool`: the warm pool's target and how many pooled sandboxes are ready or starting.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::{ApiError, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/pool", get(pool_status))
}

/// Counts of the current configuration's pooled sandboxes (all replicas together).
#[derive(Debug, Serialize)]
struct PoolView {
    /// `--pool-size`.
    target: u64,
    ready: u64,
    starting: u64,
}

async fn pool_status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let status = state.services.pool.status().await?;
    let view = PoolView { target: status.target, ready: status.ready, starting: status.starting };
    Ok(axum::Json(view).into_response())
}
