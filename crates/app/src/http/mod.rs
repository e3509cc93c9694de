//! The HTTP API (`docs/api.md`, `docs/openapi.yaml`). Handlers are thin: parse, call a use case, map
//! the outcome or the error.

mod body;
mod edge;
mod engines;
mod error;
mod exec;
mod files;
mod keepalive;
mod middleware;
mod pool;
mod processes;
pub(crate) mod server;
mod stream;
mod terminal;
pub(crate) mod views;
mod workspace;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use sandkeeper_domain::{ChatId, SandboxStatus};
use sandkeeper_usecase::{
    CleanupError, CreateResult, CreateSandboxCommand, CreateSandboxError, DeleteSandboxError,
    MaintenanceError,
};
use serde::Deserialize;

use crate::config::ApiToken;
use crate::services::{Services, SweepError};
pub(crate) use edge::EdgeSettings;
pub(crate) use error::ApiError;
use views::{
    CleanupReportView, MaintenanceReportView, ReadinessView, SessionListView, SessionView,
};

/// How many sessions `GET /v1/sandboxes` returns unless `limit` says otherwise, and at most.
const DEFAULT_LIST_LIMIT: usize = 1000;
const MAX_LIST_LIMIT: usize = 10_000;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    services: Arc<Services>,
    /// Renders every metric in the Prometheus text format.
    metrics: Arc<dyn Fn() -> String + Send + Sync>,
    max_ttl: Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("max_ttl", &self.max_ttl).finish_non_exhaustive()
    }
}

impl AppState {
    pub(crate) fn new(
        services: Arc<Services>,
        metrics: Arc<dyn Fn() -> String + Send + Sync>,
        max_ttl: Duration,
    ) -> Self {
        Self { services, metrics, max_ttl }
    }
}

/// The whole API. `token` is required on every route but `/healthz` when set; without it only
/// loopback hosts and origins are served. `edge` bounds every request's body.
pub(crate) fn router(state: AppState, token: Option<ApiToken>, edge: EdgeSettings) -> Router {
    let edge = Arc::new(edge::Edge::new(edge, token.is_some()));
    let token = token.map(Arc::new);
    // Routes of their own modules, with their own body limits (a command's stdin, a file).
    let inside_sandboxes = exec::routes(&state)
        .merge(files::routes(&state))
        .merge(keepalive::routes())
        .merge(workspace::routes())
        .merge(processes::routes(&state))
        .merge(terminal::routes());
    let engines = engines::routes();
    Router::new()
        .route(
            "/v1/chats/{chat_id}/sandbox",
            put(put_sandbox).get(get_sandbox).delete(delete_sandbox),
        )
        .route("/v1/sandboxes", get(list_sandboxes))
        .route("/v1/maintenance/cleanup", post(run_cleanup))
        .route("/v1/maintenance/sweep", post(run_sweep))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(pool::routes())
        .merge(inside_sandboxes)
        .merge(engines)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(token, middleware::require_token))
        .layer(axum::middleware::from_fn_with_state(edge, edge::guard_requests))
        .layer(axum::middleware::from_fn(middleware::trace_requests))
        .with_state(state)
}

/// The `{chat_id}` of a chat route, parsed. An unreadable or invalid one is answered 400
/// `invalid_chat_id` before anything else of the request is looked at.
struct ChatPath(ChatId);

impl<S: Send + Sync> FromRequestParts<S> for ChatPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|rejection| {
                ApiError::bad_request(
                    "invalid_chat_id",
                    format!("the chat id in the path could not be read: {}", rejection.body_text()),
                )
            })?;
        chat_id(&raw).map(Self)
    }
}

/// A route's query parameters, or 400 `invalid_query` naming the `parameters` it takes.
fn query_params<T>(
    query: Result<Query<T>, QueryRejection>,
    parameters: &str,
) -> Result<T, ApiError> {
    let Query(params) = query.map_err(|rejection| {
        ApiError::bad_request(
            "invalid_query",
            format!("{}; the parameters are {parameters}", rejection.body_text()),
        )
    })?;
    Ok(params)
}

/// A chat id from a path, or the 400 that names it.
fn chat_id(raw: &str) -> Result<ChatId, ApiError> {
    ChatId::parse(raw).map_err(|error| ApiError::bad_request("invalid_chat_id", error.to_string()))
}

async fn put_sandbox(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
    request: body::CreateSandboxRequest,
) -> Result<Response, ApiError> {
    let outcome = state
        .services
        .create
        .execute(CreateSandboxCommand { chat_id, ttl: request.ttl })
        .await
        .map_err(create_error)?;
    let status = match outcome.result {
        CreateResult::Reused => StatusCode::OK,
        CreateResult::Created | CreateResult::Replaced => StatusCode::CREATED,
    };
    let view = SessionView::new(&outcome.session, Some(outcome.result))
        .with_workspace(outcome.workspace.map(workspace::RestoreView::from));
    Ok((status, axum::Json(view)).into_response())
}

fn create_error(error: CreateSandboxError) -> ApiError {
    match error {
        CreateSandboxError::Store(error) => error.into(),
        CreateSandboxError::Runtime(error) => error.into(),
        CreateSandboxError::CapacityReached { .. } => ApiError::capacity_reached(error.to_string()),
        CreateSandboxError::Conflict { .. } => {
            ApiError::conflict("conflict", format!("{error}; retry the request"))
        }
        // The body's bound (--max-ttl) makes this unreachable from the API.
        CreateSandboxError::TtlOutOfRange { .. } => {
            ApiError::bad_request("invalid_ttl", error.to_string())
        }
        CreateSandboxError::Workspace(error) => error.into(),
    }
}

async fn get_sandbox(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
) -> Result<Response, ApiError> {
    match state.services.queries.running_for_chat(chat_id).await? {
        Some(session) => Ok(axum::Json(SessionView::new(&session, None)).into_response()),
        None => Err(no_sandbox(chat_id)),
    }
}

fn no_sandbox(chat_id: ChatId) -> ApiError {
    ApiError::not_found("sandbox_not_found", format!("chat {chat_id} has no running sandbox"))
}

async fn delete_sandbox(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
) -> Result<Response, ApiError> {
    match state.services.delete.execute(chat_id).await {
        Ok(Some(_)) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(None) => Err(no_sandbox(chat_id)),
        Err(DeleteSandboxError::Store(error)) => Err(error.into()),
        Err(DeleteSandboxError::Runtime(error)) => Err(error.into()),
        Err(DeleteSandboxError::Workspace(error)) => Err(error.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
}

async fn list_sandboxes(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query_params(query, "status and limit")?;
    let statuses = match query.status.as_deref() {
        None => SandboxStatus::ALL.to_vec(),
        Some(raw) => vec![
            raw.parse::<SandboxStatus>()
                .map_err(|error| ApiError::bad_request("invalid_status", error.to_string()))?,
        ],
    };
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIST_LIMIT,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_LIST_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit `{raw}` is not a whole number from 1 to {MAX_LIST_LIMIT}"),
                )
            })?,
    };
    let sessions = state.services.queries.list(&statuses, limit).await?;
    Ok(axum::Json(SessionListView::new(&sessions)).into_response())
}

async fn run_cleanup(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.services.cleanup.execute().await {
        Ok(report) => Ok(axum::Json(CleanupReportView::new(&report)).into_response()),
        Err(CleanupError::Store(error)) => Err(error.into()),
        Err(CleanupError::Runtime(error)) => Err(error.into()),
        Err(CleanupError::Workspace(error)) => Err(error.into()),
    }
}

async fn run_sweep(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.services.sweep_now().await {
        Ok(report) => Ok(axum::Json(MaintenanceReportView::new(&report)).into_response()),
        Err(SweepError::Busy { waited }) => Err(ApiError::conflict(
            "sweep_in_progress",
            format!(
                "another maintenance sweep is running and still held its lease after {}; retry shortly",
                humantime::format_duration(waited)
            ),
        )),
        Err(SweepError::Failed(MaintenanceError::Lease { error, .. }))
        | Err(SweepError::Failed(MaintenanceError::Store { error, .. })) => Err(error.into()),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], (state.metrics)())
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.services.readiness().await;
    let status =
        if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(ReadinessView::new(&readiness))).into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!("there is no route {}; see docs/api.md for the API", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(request.method().as_str(), request.uri().path())
}

#[cfg(test)]
mod tests;
