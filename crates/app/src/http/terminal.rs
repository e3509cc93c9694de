//! `GET /v1/chats/{chat_id}/sandbox/terminal?cols=80&rows=24`: a WebSocket to an interactive
//! shell in the chat's sandbox. Binary frames carry the terminal's bytes both ways; a text
//! frame `{"type": "resize", "cols": C, "rows": R}` resizes it; the socket closes when the
//! shell exits, and the shell is killed when the socket closes. A browser, which cannot set
//! `Authorization` on a WebSocket, offers the subprotocols `sandkeeper` and `bearer.<token>`.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use sandkeeper_ports::TerminalInput;
use sandkeeper_usecase::{MAX_TERMINAL_SIZE, OpenTerminal, TerminalError};
use serde::Deserialize;

use super::{ApiError, AppState, ChatPath};

/// The subprotocol the server selects when a client offers it.
const PROTOCOL: &str = "sandkeeper";
const DEFAULT_SIZE: (u32, u32) = (80, 24);

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/chats/{chat_id}/sandbox/terminal", get(terminal))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeQuery {
    cols: Option<String>,
    rows: Option<String>,
}

/// A text frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Control {
    Resize { cols: u16, rows: u16 },
}

async fn terminal(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
    query: Result<Query<SizeQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let query = super::query_params(query, "cols and rows")?;
    let cols = dimension(query.cols.as_deref(), "cols", DEFAULT_SIZE.0)?;
    let rows = dimension(query.rows.as_deref(), "rows", DEFAULT_SIZE.1)?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::with_status(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            format!(
                "the terminal is a WebSocket: {}; connect with a WebSocket client",
                rejection.body_text()
            ),
        )
    })?;
    // Opened before the upgrade, so that a refusal is an HTTP answer with its status.
    let terminal =
        state.services.terminal.open(chat_id, cols, rows).await.map_err(terminal_error)?;
    Ok(upgrade.protocols([PROTOCOL]).on_upgrade(move |socket| pump(socket, terminal)))
}

fn dimension(raw: Option<&str>, name: &'static str, default: u32) -> Result<u32, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    let within = |value: &u32| (1..=u32::from(MAX_TERMINAL_SIZE)).contains(value);
    raw.parse().ok().filter(within).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_size",
            format!("`{name}` `{raw}` is not a whole number from 1 to {MAX_TERMINAL_SIZE}"),
        )
    })
}

/// Carries the terminal's bytes to the socket and the socket's to the terminal until either
/// ends. Dropping the terminal kills its shell.
async fn pump(mut socket: WebSocket, mut terminal: OpenTerminal) {
    loop {
        tokio::select! {
            shown = terminal.output() => match shown {
                Some(bytes) => {
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        return;
                    }
                }
                None => {
                    let frame = CloseFrame { code: close_code::NORMAL, reason: "the shell exited".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            },
            received = socket.recv() => match received {
                Some(Ok(Message::Binary(bytes))) => {
                    if !terminal.input(TerminalInput::Bytes(bytes.to_vec())).await {
                        return;
                    }
                }
                Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
                    Ok(Control::Resize { cols, rows }) => {
                        if !terminal.input(TerminalInput::Resize { cols, rows }).await {
                            return;
                        }
                    }
                    Err(error) => {
                        let reason = format!("a text frame must be {{\"type\": \"resize\", \"cols\": C, \"rows\": R}}: {error}");
                        let reason: String = reason.chars().take(120).collect();
                        let frame = CloseFrame { code: close_code::POLICY, reason: reason.into() };
                        let _ = socket.send(Message::Close(Some(frame))).await;
                        return;
                    }
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
            },
        }
    }
}

fn terminal_error(error: TerminalError) -> ApiError {
    match error {
        TerminalError::InvalidSize { .. } => {
            ApiError::bad_request("invalid_size", error.to_string())
        }
        TerminalError::Access(error) => error.into(),
    }
}
