//! `GET /v1/engines`: the engines sandboxes run on, whether each answers, and how full it is.
//! Engine URLs are never shown (they may carry credentials).

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/engines", get(list_engines))
}

#[derive(Debug, Serialize)]
struct EnginesView {
    engines: Vec<EngineView>,
}

#[derive(Debug, Serialize)]
struct EngineView {
    name: String,
    /// `up` while it answers (as the last ping or call found it), else `down`.
    state: &'static str,
    /// Sandboxes running on it, as the store counts them.
    running: u64,
    /// The most sandboxes it may run; `null`: unbounded.
    max: Option<u64>,
    /// The OCI runtime of its sandboxes; `null`: the engine's default.
    runtime: Option<String>,
}

async fn list_engines(State(state): State<AppState>) -> Result<Response, ApiError> {
    let running = state.services.queries.running_by_engine().await?;
    let engines = state
        .services
        .engines()
        .iter()
        .map(|engine| EngineView {
            name: engine.name().to_string(),
            state: if engine.is_up() { "up" } else { "down" },
            running: running
                .iter()
                .find(|(name, _)| name == engine.name())
                .map_or(0, |(_, count)| *count),
            max: engine.max(),
            runtime: engine.runtime_name().map(str::to_owned),
        })
        .collect();
    Ok(axum::Json(EnginesView { engines }).into_response())
}
