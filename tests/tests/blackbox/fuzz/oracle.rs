//! The oracle: the answer the API documents for a generated request, and what an accepted
//! request does to the sandboxes (its effect), predicted from the rules of `rules.rs` and the
//! model of what the server holds. One function per route.

use std::collections::HashMap;

use serde_json::Value;
use uuid::Uuid;

use super::MAX_TTL_SECONDS;
use super::generate::{Case, FILE_LIMIT, STDIN_LIMIT};
use super::inside::{self, Refusal, Run, Workspace};
use super::rules::{
    Route, authorized, chat_of, judge_list_query, judge_put_body, named_query, percent_decode,
    route,
};

/// What the server must answer to a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) status: u16,
    /// The error code, for an error.
    pub(crate) code: Option<&'static str>,
    /// Other answers the API allows: a request that breaks several rules whose order the API
    /// does not document may be refused for any of them.
    pub(crate) or: Vec<Refusal>,
    pub(crate) effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    None,
    /// Creates the chat's sandbox (a valid PUT for a chat without one, with Docker up), with
    /// this TTL in seconds.
    Creates(Uuid, u64),
    /// Would stop a running sandbox: never sent.
    Deletes,
    /// Runs a command in the chat's sandbox; `None` when its output is not predicted.
    Exec(Uuid, Option<Run>),
    /// Uploads the file at `path` (as given); `resolved` is where it lands when it is accepted.
    Upload {
        chat: Uuid,
        path: String,
        resolved: Option<String>,
        bytes: Vec<u8>,
    },
    /// Downloads a file, which has these bytes when it is there.
    Download(Uuid, Option<Vec<u8>>),
    /// Keeps the chat's sandbox alive for this many seconds.
    KeepAlive(Uuid, u64),
}

impl Effect {
    /// Whether the request is a Docker exec in a sandbox, and so counts against the budget.
    pub(crate) fn reaches_sandbox(&self) -> bool {
        matches!(self, Self::Exec(..) | Self::Upload { .. } | Self::Download(..))
    }
}

impl Expected {
    pub(crate) fn error(status: u16, code: &'static str) -> Self {
        Self { status, code: Some(code), or: Vec::new(), effect: Effect::None }
    }

    pub(crate) fn ok(status: u16) -> Self {
        Self { status, code: None, or: Vec::new(), effect: Effect::None }
    }

    /// Any one of `refusals` (never empty).
    pub(crate) fn refused(mut refusals: Vec<Refusal>) -> Self {
        let (status, code) = refusals.remove(0);
        Self { status, code: Some(code), or: refusals, effect: Effect::None }
    }

    /// Allows a success with `status` too, besides the refusals.
    pub(crate) fn or_ok(mut self, status: u16) -> Self {
        self.or.push((status, ""));
        self
    }

    pub(crate) fn with(self, effect: Effect) -> Self {
        Self { effect, ..self }
    }

    /// Whether the answer's status, and its error code when it is given, are allowed.
    pub(crate) fn allows(&self, status: u16, code: Option<&str>) -> Result<(), String> {
        let mut codes = std::iter::once((self.status, self.code))
            .chain(self.or.iter().map(|(status, code)| (*status, Some(*code))))
            .filter(|(allowed, _)| *allowed == status)
            .peekable();
        if codes.peek().is_none() {
            let mut allowed = vec![self.status];
            allowed.extend(self.or.iter().map(|(status, _)| *status));
            return Err(format!("status {status} where {allowed:?} was expected"));
        }
        let Some(code) = code else {
            return Ok(());
        };
        if codes.any(|(_, allowed)| allowed.is_none_or(|allowed| allowed == code)) {
            return Ok(());
        }
        Err(format!("code `{code}` where {:?} or {:?} was expected", self.code, self.or))
    }
}

/// A chat the run knows to have a running sandbox.
#[derive(Debug)]
pub(crate) struct Live {
    /// The session as `GET /v1/sandboxes` lists it, with the expiry of the last keep-alive.
    pub(crate) session: Value,
    pub(crate) workspace: Workspace,
}

/// What the oracle knows about the server.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) docker_up: bool,
    pub(crate) chats: HashMap<Uuid, Live>,
}

/// The answer the API documents for `case`.
pub(crate) fn expect(case: &Case, model: &Model) -> Expected {
    if case.path != "/healthz" && !authorized(case.authorization.as_deref()) {
        return Expected::error(401, "unauthorized");
    }
    match route(&case.path) {
        Route::Sandbox(segment) => {
            on_chat(case, segment, &["GET", "HEAD", "PUT", "DELETE"], |chat| {
                expect_sandbox(case, chat, model)
            })
        }
        Route::Exec(segment) => {
            on_chat(case, segment, &["POST"], |chat| expect_exec(case, chat, model))
        }
        Route::KeepAlive(segment) => {
            on_chat(case, segment, &["POST"], |chat| expect_keep_alive(case, chat, model))
        }
        Route::Files(segment, file) => on_chat(case, segment, &["GET", "HEAD", "PUT"], |chat| {
            expect_file(case, chat, file, model)
        }),
        Route::Workspace(segment) => on_chat(case, segment, &["GET", "HEAD", "DELETE"], |chat| {
            expect_workspace(case, chat, model)
        }),
        Route::Archive(segment) => on_chat(case, segment, &["GET", "HEAD", "PUT"], |chat| {
            expect_archive(case, chat, model)
        }),
        Route::Processes(segment) => on_chat(case, segment, &["GET", "HEAD", "POST"], |chat| {
            expect_processes(case, chat, model)
        }),
        Route::Process(segment, id, part) => {
            let methods: &[&str] = match part {
                "logs" => &["GET", "HEAD"],
                "stdin" => &["POST"],
                _ => &["GET", "HEAD", "DELETE"],
            };
            on_chat(case, segment, methods, |chat| expect_process(case, chat, id, part, model))
        }
        Route::Terminal(segment) => {
            on_chat(case, segment, &["GET", "HEAD"], |_| expect_terminal(case))
        }
        Route::Fixed(fixed) => expect_fixed(case, fixed, model),
        Route::Unknown => Expected::error(404, "not_found"),
    }
}

/// A route of a chat: the method must be one it serves, then its chat id segment a chat id;
/// then the route's own `rules` judge the request.
fn on_chat(
    case: &Case,
    segment: &str,
    methods: &[&str],
    rules: impl FnOnce(Uuid) -> Expected,
) -> Expected {
    if !methods.contains(&case.method.as_str()) {
        return not_allowed();
    }
    match chat_of(segment) {
        Some(chat) => rules(chat),
        None => invalid_chat(),
    }
}

fn not_allowed() -> Expected {
    Expected::error(405, "method_not_allowed")
}

fn invalid_chat() -> Expected {
    Expected::error(400, "invalid_chat_id")
}

fn no_sandbox() -> Expected {
    Expected::error(404, "sandbox_not_found")
}

/// `/v1/chats/{chat_id}/sandbox`: GET, HEAD, PUT (get-or-create) and DELETE.
fn expect_sandbox(case: &Case, chat: Uuid, model: &Model) -> Expected {
    let known = model.chats.contains_key(&chat);
    match case.method.as_str() {
        "PUT" => match judge_put_body(case.body.as_deref()) {
            Err((status, code)) => Expected::error(status, code),
            Ok(_) if known => Expected::ok(200),
            Ok(ttl) if model.docker_up => {
                Expected::ok(201).with(Effect::Creates(chat, ttl.unwrap_or(MAX_TTL_SECONDS)))
            }
            Ok(_) => Expected::error(503, "docker_unavailable"),
        },
        "DELETE" if known => Expected::ok(204).with(Effect::Deletes),
        _ if known => Expected::ok(200),
        _ => no_sandbox(),
    }
}

/// `POST /v1/chats/{chat_id}/sandbox/exec`: the body is judged before the chat's sandbox is
/// looked up; what the command prints is predicted when the model can.
fn expect_exec(case: &Case, chat: Uuid, model: &Model) -> Expected {
    let exec = match inside::judge_exec_body(case.body.as_deref()) {
        Ok(exec) => exec,
        Err(refusals) => return Expected::refused(refusals),
    };
    match model.chats.get(&chat) {
        Some(live) => {
            Expected::ok(200).with(Effect::Exec(chat, inside::predict(&exec, &live.workspace)))
        }
        None => no_sandbox(),
    }
}

/// `/v1/chats/{chat_id}/sandbox/processes`: a start's body is judged as an exec's; then the
/// sandbox. The run never starts processes on purpose, so a list is empty.
fn expect_processes(case: &Case, chat: Uuid, model: &Model) -> Expected {
    if case.method == "POST" {
        if let Err(refusals) = inside::judge_exec_body(case.body.as_deref()) {
            return Expected::refused(refusals);
        }
    }
    match (model.chats.contains_key(&chat), case.method.as_str()) {
        (false, _) => no_sandbox(),
        (true, "POST") => Expected::ok(201),
        (true, _) => Expected::ok(200),
    }
}

/// `.../processes/{process_id}[/logs|/stdin]`: an id that is not 16 hex digits names no
/// process; a logs query is read next (then a stdin body); then the sandbox, which has no such
/// process.
fn expect_process(case: &Case, chat: Uuid, id: &str, part: &str, model: &Model) -> Expected {
    let id = String::from_utf8(percent_decode(id)).unwrap_or_default();
    let hex = id.len() == 16 && id.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    if !hex {
        return Expected::error(404, "process_not_found");
    }
    if part == "logs" {
        let offsets = match named_query(case.query.as_deref(), ["stdout_offset", "stderr_offset"]) {
            Ok(offsets) => offsets,
            Err((status, code)) => return Expected::error(status, code),
        };
        if offsets.iter().flatten().any(|offset| offset.parse::<u64>().is_err()) {
            return Expected::error(400, "invalid_offset");
        }
    }
    if part == "stdin" && case.body.as_ref().is_some_and(|body| body.len() > STDIN_LIMIT) {
        return Expected::error(413, "body_too_large");
    }
    if model.chats.contains_key(&chat) {
        Expected::error(404, "process_not_found")
    } else {
        no_sandbox()
    }
}

/// `GET /v1/chats/{chat_id}/sandbox/terminal`: the size is read, then the request must be a
/// WebSocket upgrade, which the run never sends.
fn expect_terminal(case: &Case) -> Expected {
    let size = match named_query(case.query.as_deref(), ["cols", "rows"]) {
        Ok(size) => size,
        Err((status, code)) => return Expected::error(status, code),
    };
    let fits = |value: &String| value.parse::<u32>().is_ok_and(|value| (1..=1000).contains(&value));
    if !size.iter().flatten().all(fits) {
        return Expected::error(400, "invalid_size");
    }
    Expected::error(426, "websocket_required")
}

/// `POST /v1/chats/{chat_id}/sandbox/keepalive`: the body as a PUT's, then the sandbox.
fn expect_keep_alive(case: &Case, chat: Uuid, model: &Model) -> Expected {
    match judge_put_body(case.body.as_deref()) {
        Err((status, code)) => Expected::error(status, code),
        Ok(ttl) if model.chats.contains_key(&chat) => {
            Expected::ok(200).with(Effect::KeepAlive(chat, ttl.unwrap_or(MAX_TTL_SECONDS)))
        }
        Ok(_) => no_sandbox(),
    }
}

/// `/v1/chats/{chat_id}/sandbox/files/{path}`: the path is judged first, then whether the chat
/// has a sandbox, and only then is an upload's body read (and found too large).
fn expect_file(case: &Case, chat: Uuid, file: Option<&str>, model: &Model) -> Expected {
    let invalid_path = (400, "invalid_path");
    // Without a path there is no file to read the body for.
    let Some(file) = file.filter(|file| !file.is_empty()) else {
        return Expected::refused(vec![invalid_path]);
    };
    let Some(file) =
        String::from_utf8(percent_decode(file)).ok().filter(|file| inside::path_allowed(file))
    else {
        return Expected::refused(vec![invalid_path]);
    };
    let Some(live) = model.chats.get(&chat) else {
        return no_sandbox();
    };
    if case.method == "PUT" {
        expect_upload(chat, file, case.body.clone().unwrap_or_default(), &live.workspace)
    } else {
        expect_download(chat, &file, &live.workspace)
    }
}

/// An upload lands where the workspace resolves its path, unless it is too large or the
/// workspace refuses the path.
fn expect_upload(chat: Uuid, path: String, bytes: Vec<u8>, workspace: &Workspace) -> Expected {
    if bytes.len() > FILE_LIMIT {
        return Expected::error(413, "file_too_large");
    }
    let landing = workspace.upload(&path);
    let expected = match landing {
        Ok(_) => Expected::ok(200),
        Err((status, code)) => Expected::error(status, code),
    };
    let resolved = landing.ok();
    expected.with(Effect::Upload { chat, path, resolved, bytes })
}

/// A download answers the bytes the model holds, or the workspace's refusal.
fn expect_download(chat: Uuid, path: &str, workspace: &Workspace) -> Expected {
    match workspace.download(path) {
        Ok(bytes) => Expected::ok(200).with(Effect::Download(chat, Some(bytes.into()))),
        Err((status, code)) => Expected::error(status, code).with(Effect::Download(chat, None)),
    }
}

/// `/v1/chats/{chat_id}/workspace`: the stored archive's metadata, or its removal. Whether a
/// chat's archive is stored depends on checkpoints and expiries the model does not follow, so
/// both answers are allowed for every chat.
fn expect_workspace(case: &Case, _chat: Uuid, _model: &Model) -> Expected {
    let found = if case.method == "DELETE" { 204 } else { 200 };
    Expected::refused(vec![(404, "no_workspace")]).or_ok(found)
}

/// `/v1/chats/{chat_id}/workspace/archive`: a download archives the running sandbox (or serves
/// the stored archive); an upload is checked as a tar first, which no generated body is.
fn expect_archive(case: &Case, chat: Uuid, model: &Model) -> Expected {
    if case.method == "PUT" {
        return Expected::error(400, "invalid_archive");
    }
    if model.chats.contains_key(&chat) {
        Expected::ok(200)
    } else {
        Expected::refused(vec![(404, "no_workspace")]).or_ok(200)
    }
}

/// The routes without a chat: the list, the maintenance calls, metrics and the probes.
fn expect_fixed(case: &Case, fixed: &str, model: &Model) -> Expected {
    let method = case.method.as_str();
    let get_like = matches!(method, "GET" | "HEAD");
    match fixed {
        "/v1/sandboxes" if get_like => judge_list_query(case.query.as_deref()),
        "/v1/maintenance/cleanup" | "/v1/maintenance/sweep" if method == "POST" => {
            Expected::ok(200)
        }
        "/metrics" | "/healthz" | "/v1/pool" | "/v1/engines" if get_like => Expected::ok(200),
        "/readyz" if get_like => Expected::ok(if model.docker_up { 200 } else { 503 }),
        _ => not_allowed(),
    }
}

/// Whether the server reads the case's body, so that closing the connection cannot cut its
/// answer short: only the routes that take a body do, and only once the token and the method
/// passed. An empty body leaves nothing unread.
pub(crate) fn reads_body(case: &Case) -> bool {
    let method = case.method.as_str();
    let takes_body = match route(&case.path) {
        Route::Sandbox(_) => method == "PUT",
        Route::Exec(_) | Route::KeepAlive(_) | Route::Processes(_) => method == "POST",
        Route::Process(_, _, part) => method == "POST" && part == "stdin",
        Route::Terminal(_) => false,
        Route::Files(_, file) => method == "PUT" && file.is_some_and(|file| !file.is_empty()),
        Route::Archive(_) => method == "PUT",
        Route::Workspace(_) => false,
        Route::Fixed(_) | Route::Unknown => false,
    };
    let authorized = case.path == "/healthz" || authorized(case.authorization.as_deref());
    case.body.as_ref().is_none_or(Vec::is_empty) || (takes_body && authorized)
}
