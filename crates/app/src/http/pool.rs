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

/// Counts of the current configuration's pooled sandboxes (all replicas together): over every
/// engine, then engine by engine.
#[derive(Debug, Serialize)]
struct PoolView {
    /// `--pool-size` times the number of engines (each keeps its own pool).
    target: u64,
    ready: u64,
    starting: u64,
    engines: Vec<EnginePoolView>,
}

/// One engine's pool.
#[derive(Debug, Serialize)]
struct EnginePoolView {
    engine: String,
    /// `--pool-size`.
    target: u64,
    ready: u64,
    starting: u64,
}

async fn pool_status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let statuses = state.services.pool.status().await?;
    let engines: Vec<EnginePoolView> = statuses
        .into_iter()
        .map(|(engine, status)| EnginePoolView {
            engine: engine.to_string(),
            target: status.target,
            ready: status.ready,
            starting: status.starting,
        })
        .collect();
    let view = PoolView {
        target: engines.iter().map(|engine| engine.target).sum(),
        ready: engines.iter().map(|engine| engine.ready).sum(),
        starting: engines.iter().map(|engine| engine.starting).sum(),
        engines,
    };
    Ok(axum::Json(view).into_response())
}
