//! API fuzzing: well over a thousand generated requests against the real server, shaped after
//! docs/openapi.yaml (every route, every method, odd chat ids, file paths, query strings, bodies,
//! content types, tokens). Each request's answer is predicted from the API's documented rules
//! and checked: never a 5xx, the documented status and error code, the error shape with a
//! message, and no state change from any rejected request (sessions and containers compared
//! before and after, and each sandbox's `/workspace` and `/tmp` listed and read back). The
//! server must survive all of it, malformed HTTP included.
//!
//! `SANDKEEPER_FUZZ_SEED` replays a run (the seed is printed), `SANDKEEPER_FUZZ_CASES` sets how
//! many requests are generated (default 1500). With Docker the run starts with two sandboxes,
//! each with symbolic links planted in its workspace (out of it and inside it), creates at most
//! a handful more (a few valid PUTs), and lets a bounded number of valid requests reach a
//! sandbox: commands whose output it predicts, uploads and downloads checked against a model of
//! the workspace, and keep-alives whose new expiry it follows. Without Docker it still runs, and
//! a valid PUT of a new chat must then be a 503 `docker_unavailable`.

mod generate;
mod inside;
mod raw_http;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sandkeeper_tests::{Server, StatusCode, TestEnv, docker};
use serde_json::{Value, json};
use uuid::Uuid;

use generate::{
    BODY_LIMIT, Case, EXEC_BODY_LIMIT, EXEC_ROUTE, FILE_LIMIT, FILES_ROUTE, Generator,
    KEEPALIVE_ROUTE, MAX_EXEC_TIMEOUT_MS, ROUTES, SANDBOX_ROUTE, STDIN_LIMIT,
};
use inside::{Refusal, Run, Workspace};
use raw_http::{Answer, Response};

const TOKEN: &str = "fuzz-token-3c9d2e71b84a";
const DEFAULT_CASES: usize = 1500;
/// Valid PUTs for chats without a sandbox that the run may make (each creates a container).
const CREATE_BUDGET: usize = 3;
/// Valid requests that reach a sandbox (commands, uploads, downloads) the run may make; each is
/// a Docker exec.
const SANDBOX_BUDGET: usize = 80;
/// `--max-ttl` and `--ttl` of the fuzzed server.
const MAX_TTL_SECONDS: u64 = 3600;
/// A sandbox the run creates must outlive it: nothing may expire while the state is compared.
const MIN_CREATED_TTL_SECONDS: u64 = 1800;
/// `--max-lifetime` of the fuzzed server.
const MAX_LIFETIME_SECONDS: i64 = 2 * 3600;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server must answer to a case.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    status: u16,
    /// The error code, for an error.
    code: Option<&'static str>,
    /// Other answers the API allows: a request that breaks several rules whose order the API
    /// does not document may be refused for any of them.
    or: Vec<Refusal>,
    effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
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
    fn reaches_sandbox(&self) -> bool {
        matches!(self, Self::Exec(..) | Self::Upload { .. } | Self::Download(..))
    }
}

impl Expected {
    fn error(status: u16, code: &'static str) -> Self {
        Self { status, code: Some(code), or: Vec::new(), effect: Effect::None }
    }

    fn ok(status: u16) -> Self {
        Self { status, code: None, or: Vec::new(), effect: Effect::None }
    }

    /// Any one of `refusals` (never empty).
    fn refused(mut refusals: Vec<Refusal>) -> Self {
        let (status, code) = refusals.remove(0);
        Self { status, code: Some(code), or: refusals, effect: Effect::None }
    }

    fn with(self, effect: Effect) -> Self {
        Self { effect, ..self }
    }

    /// Whether the answer's status, and its error code when it is given, are allowed.
    fn allows(&self, status: u16, code: Option<&str>) -> Result<(), String> {
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
struct Live {
    /// The session as `GET /v1/sandboxes` lists it, with the expiry of the last keep-alive.
    session: Value,
    workspace: Workspace,
}

/// What the oracle knows about the server.
#[derive(Debug)]
struct Model {
    docker_up: bool,
    chats: HashMap<Uuid, Live>,
}

/// The route a path matches (before the method is looked at), with its chat id segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Sandbox(&'a str),
    Exec(&'a str),
    KeepAlive(&'a str),
    /// The chat id, and what follows `/files`: `None` for nothing, `Some("")` for a lone `/`.
    Files(&'a str, Option<&'a str>),
    Fixed(&'static str),
    Unknown,
}

fn route(path: &str) -> Route<'_> {
    if let Some(rest) = path.strip_prefix("/v1/chats/") {
        // A chat id segment may be empty: the route matches, and it is no UUID.
        let (chat, tail) = rest.split_once('/').unwrap_or((rest, ""));
        return match tail {
            "sandbox" => Route::Sandbox(chat),
            "sandbox/exec" => Route::Exec(chat),
            "sandbox/keepalive" => Route::KeepAlive(chat),
            "sandbox/files" => Route::Files(chat, None),
            _ => match tail.strip_prefix("sandbox/files/") {
                Some(file) => Route::Files(chat, Some(file)),
                None => Route::Unknown,
            },
        };
    }
    match ROUTES.iter().find(|known| **known == path) {
        Some(known) => Route::Fixed(known),
        None => Route::Unknown,
    }
}

/// The route template a path matches, as docs/openapi.yaml names it.
fn route_of(path: &str) -> &'static str {
    match route(path) {
        Route::Sandbox(_) => SANDBOX_ROUTE,
        Route::Exec(_) => EXEC_ROUTE,
        Route::KeepAlive(_) => KEEPALIVE_ROUTE,
        Route::Files(..) => FILES_ROUTE,
        Route::Fixed(known) => known,
        Route::Unknown => "(no such route)",
    }
}

/// `percent_decode` as servers do it: `%` with two hex digits is a byte, any other `%` is kept.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The pairs of an `application/x-www-form-urlencoded` query, as servers read them.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode =
        |text: &str| String::from_utf8_lossy(&percent_decode(&text.replace('+', " "))).into_owned();
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Whether the `Authorization` header carries the token: `Bearer` in any case, then the token
/// with surrounding whitespace ignored.
fn authorized(header: Option<&[u8]>) -> bool {
    let Some(value) = header else {
        return false;
    };
    // HTTP drops the whitespace around a header value.
    let value = value.trim_ascii();
    let Some((scheme, token)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && token.trim_ascii() == TOKEN.as_bytes()
}

/// The chat id a path segment stands for, if it is a UUID in any spelling, exactly: surrounding
/// whitespace makes it no chat id.
fn chat_of(segment: &str) -> Option<Uuid> {
    let decoded = String::from_utf8(percent_decode(segment)).ok()?;
    Uuid::parse_str(&decoded).ok()
}

/// The body of a PUT or a keep-alive, judged as the API documents: the TTL it asks for
/// (`None`: the default), or how it is refused.
fn judge_put_body(body: Option<&[u8]>) -> Result<Option<u64>, Refusal> {
    let Some(body) = body else {
        return Ok(None);
    };
    if body.len() > BODY_LIMIT {
        return Err((413, "body_too_large"));
    }
    if body.trim_ascii().is_empty() {
        return Ok(None);
    }
    let invalid = (400, "invalid_body");
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid)?;
    let Some(object) = value.as_object() else {
        return Err(invalid);
    };
    if object.keys().any(|key| key != "ttl_seconds") {
        return Err(invalid);
    }
    match object.get("ttl_seconds") {
        None | Some(Value::Null) => Ok(None),
        Some(ttl) => match whole_number(ttl) {
            Some(seconds) if (1..=MAX_TTL_SECONDS).contains(&seconds) => Ok(Some(seconds)),
            _ => Err((400, "invalid_ttl")),
        },
    }
}

/// A JSON number that JSON Schema counts as an integer: `60`, and also `60.0` or `6e1`, as long as
/// a double holds it exactly.
fn whole_number(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let number = value.as_f64()?;
        let exact = number.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&number);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        exact.then_some(number as u64)
    })
}

fn judge_list_query(query: Option<&str>) -> Expected {
    let pairs = query.map(query_pairs).unwrap_or_default();
    let mut status = None;
    let mut limit = None;
    for (key, value) in pairs {
        let slot = match key.as_str() {
            "status" => &mut status,
            "limit" => &mut limit,
            _ => return Expected::error(400, "invalid_query"),
        };
        if slot.is_some() {
            // A parameter given twice.
            return Expected::error(400, "invalid_query");
        }
        *slot = Some(value);
    }
    if let Some(status) = status {
        let known = ["running", "stopped", "crashed"];
        if !known.iter().any(|name| name.eq_ignore_ascii_case(status.trim())) {
            return Expected::error(400, "invalid_status");
        }
    }
    if let Some(limit) = limit {
        let fine = limit.trim().parse::<usize>().is_ok_and(|n| (1..=10_000).contains(&n));
        if !fine {
            return Expected::error(400, "invalid_limit");
        }
    }
    Expected::ok(200)
}

/// The answer the API documents for `case`.
fn expect(case: &Case, model: &Model) -> Expected {
    let path = case.path.as_str();
    let method = case.method.as_str();
    if path != "/healthz" && !authorized(case.authorization.as_deref()) {
        return Expected::error(401, "unauthorized");
    }
    let get_like = matches!(method, "GET" | "HEAD");
    let not_allowed = Expected::error(405, "method_not_allowed");
    let invalid_chat = Expected::error(400, "invalid_chat_id");
    let no_sandbox = Expected::error(404, "sandbox_not_found");
    match route(path) {
        Route::Sandbox(segment) => {
            if !matches!(method, "GET" | "HEAD" | "PUT" | "DELETE") {
                return not_allowed;
            }
            let Some(chat) = chat_of(segment) else {
                return invalid_chat;
            };
            let known = model.chats.contains_key(&chat);
            match method {
                "PUT" => match judge_put_body(case.body.as_deref()) {
                    Err((status, code)) => Expected::error(status, code),
                    Ok(_) if known => Expected::ok(200),
                    Ok(ttl) if model.docker_up => Expected::ok(201)
                        .with(Effect::Creates(chat, ttl.unwrap_or(MAX_TTL_SECONDS))),
                    Ok(_) => Expected::error(503, "docker_unavailable"),
                },
                "DELETE" if known => Expected::ok(204).with(Effect::Deletes),
                _ if known => Expected::ok(200),
                _ => no_sandbox,
            }
        }
        Route::Exec(segment) => {
            if method != "POST" {
                return not_allowed;
            }
            let Some(chat) = chat_of(segment) else {
                return invalid_chat;
            };
            let exec = match inside::judge_exec_body(case.body.as_deref()) {
                Ok(exec) => exec,
                Err(refusals) => return Expected::refused(refusals),
            };
            match model.chats.get(&chat) {
                Some(live) => Expected::ok(200)
                    .with(Effect::Exec(chat, inside::predict(&exec, &live.workspace))),
                None => no_sandbox,
            }
        }
        Route::KeepAlive(segment) => {
            if method != "POST" {
                return not_allowed;
            }
            let Some(chat) = chat_of(segment) else {
                return invalid_chat;
            };
            match judge_put_body(case.body.as_deref()) {
                Err((status, code)) => Expected::error(status, code),
                Ok(ttl) if model.chats.contains_key(&chat) => {
                    Expected::ok(200).with(Effect::KeepAlive(chat, ttl.unwrap_or(MAX_TTL_SECONDS)))
                }
                Ok(_) => no_sandbox,
            }
        }
        Route::Files(segment, file) => {
            if !matches!(method, "GET" | "HEAD" | "PUT") {
                return not_allowed;
            }
            let Some(chat) = chat_of(segment) else {
                return invalid_chat;
            };
            let invalid_path = (400, "invalid_path");
            // Without a path there is no file to read the body for.
            let Some(file) = file.filter(|file| !file.is_empty()) else {
                return Expected::refused(vec![invalid_path]);
            };
            let upload = method == "PUT";
            let bytes = case.body.clone().unwrap_or_default();
            // The path is judged first, then whether the chat has a sandbox, and only then is
            // an upload's body read (and found too large).
            let Some(file) = String::from_utf8(percent_decode(file))
                .ok()
                .filter(|file| inside::path_allowed(file))
            else {
                return Expected::refused(vec![invalid_path]);
            };
            let Some(live) = model.chats.get(&chat) else {
                return no_sandbox;
            };
            if upload && bytes.len() > FILE_LIMIT {
                return Expected::error(413, "file_too_large");
            }
            if upload {
                let landing = live.workspace.upload(&file);
                let expected = match landing {
                    Ok(_) => Expected::ok(200),
                    Err((status, code)) => Expected::error(status, code),
                };
                let resolved = landing.ok();
                expected.with(Effect::Upload { chat, path: file, resolved, bytes })
            } else {
                match live.workspace.download(&file) {
                    Ok(bytes) => Expected::ok(200).with(Effect::Download(chat, Some(bytes.into()))),
                    Err((status, code)) => {
                        Expected::error(status, code).with(Effect::Download(chat, None))
                    }
                }
            }
        }
        Route::Fixed(fixed) => match fixed {
            "/v1/sandboxes" if get_like => judge_list_query(case.query.as_deref()),
            "/v1/maintenance/cleanup" | "/v1/maintenance/sweep" if method == "POST" => {
                Expected::ok(200)
            }
            "/metrics" | "/healthz" if get_like => Expected::ok(200),
            "/readyz" if get_like => Expected::ok(if model.docker_up { 200 } else { 503 }),
            _ => not_allowed,
        },
        Route::Unknown => Expected::error(404, "not_found"),
    }
}

/// When a request was sent and its answer received, to judge the times in the answer.
#[derive(Debug, Clone, Copy)]
struct Window {
    sent: DateTime<Utc>,
    received: DateTime<Utc>,
}

/// What is wrong with `response` for `case`, if anything.
fn check(
    case: &Case,
    expected: &Expected,
    response: &Response,
    model: &Model,
    window: Window,
) -> Result<(), String> {
    let docker_down_503 = response.status == 503 && !model.docker_up;
    if response.status >= 500 && !docker_down_503 {
        return Err(format!("a {} answer", response.status));
    }
    let head = case.method == "HEAD";
    let json = || -> Result<Value, String> {
        serde_json::from_slice(&response.body).map_err(|error| {
            format!("the body is not JSON ({error}): {:?}", String::from_utf8_lossy(&response.body))
        })
    };
    if response.status >= 400 && !head && case.path != "/readyz" {
        let body = json()?;
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        if code.is_empty() || message.trim().is_empty() {
            return Err(format!("not the error shape with a code and a message: {body}"));
        }
        if body.as_object().map(|o| o.len()) != Some(1) {
            return Err(format!("more than the error in the body: {body}"));
        }
        expected.allows(response.status, Some(code)).map_err(|why| format!("{why}: {body}"))?;
        let content_type = response.header("content-type").unwrap_or_default();
        if !content_type.starts_with("application/json") {
            return Err(format!("an error with content-type {content_type:?}"));
        }
    } else {
        expected.allows(response.status, None)?;
    }
    if head || response.status >= 300 {
        return Ok(());
    }
    // Successful answers carry what they promise, and change nothing they should not.
    match route(&case.path) {
        Route::Fixed("/v1/sandboxes") => {
            json()?["sandboxes"].as_array().ok_or("no sandboxes array")?;
        }
        Route::Fixed("/v1/maintenance/cleanup") => {
            let report = json()?;
            if report["expired"] != 0 || report["cleaned"].as_array().is_none_or(|c| !c.is_empty())
            {
                return Err(format!("a cleanup removed something: {report}"));
            }
        }
        Route::Fixed("/v1/maintenance/sweep") => {
            let report = json()?;
            for field in ["reconciled", "removed", "orphans_removed"] {
                if report[field] != 0 {
                    return Err(format!("a sweep changed something: {report}"));
                }
            }
        }
        Route::Fixed("/metrics") => {
            if !String::from_utf8_lossy(&response.body).contains("http_server_requests_total") {
                return Err("no HTTP metrics in /metrics".into());
            }
        }
        Route::Fixed("/healthz") => {
            if json()? != json!({"status": "ok"}) {
                return Err("healthz is not {\"status\":\"ok\"}".into());
            }
        }
        Route::Fixed("/readyz") => {
            if json()?["status"] != "ready" {
                return Err("readyz 200 but not ready".into());
            }
        }
        Route::Sandbox(segment) => {
            let mut session = json()?;
            let chat = chat_of(segment).ok_or("a 2xx for a chat id that is not one")?;
            if session["chat_id"] != chat.hyphenated().to_string() {
                return Err(format!("the answer is for another chat: {session}"));
            }
            let result = session.as_object_mut().and_then(|fields| fields.remove("result"));
            let expected_result = match (case.method.as_str(), response.status) {
                ("PUT", 200) => Some("reused"),
                ("PUT", _) => Some("created"),
                _ => None,
            };
            if result.as_ref().and_then(Value::as_str) != expected_result {
                return Err(format!("result {result:?} where {expected_result:?}: {session}"));
            }
            // A reuse or a read shows the session as it is, expiry included.
            if let Some(live) = model.chats.get(&chat) {
                if session != live.session {
                    return Err(format!("{session} where {} was expected", live.session));
                }
            }
        }
        Route::Exec(_) => {
            let Effect::Exec(chat, run) = &expected.effect else {
                return Err("a command ran where none should".into());
            };
            check_exec(&json()?, &model.chats[chat], run.as_ref())?;
        }
        Route::Files(..) => match &expected.effect {
            Effect::Upload { chat, path, bytes, .. } => {
                let answer = json()?;
                let session_id = &model.chats[chat].session["session_id"];
                let promised = json!({"path": path, "size": bytes.len(), "session_id": session_id});
                if answer != promised {
                    return Err(format!("upload answered {answer}, not {promised}"));
                }
            }
            Effect::Download(_, Some(bytes)) => {
                if response.body != *bytes {
                    return Err(format!(
                        "downloaded {} bytes that are not the {} bytes uploaded: {:?}",
                        response.body.len(),
                        bytes.len(),
                        String::from_utf8_lossy(&response.body)
                            .chars()
                            .take(100)
                            .collect::<String>()
                    ));
                }
                let content_type = response.header("content-type").unwrap_or_default();
                if content_type != "application/octet-stream" {
                    return Err(format!("a download with content-type {content_type:?}"));
                }
            }
            other => return Err(format!("a 2xx where the files route should not: {other:?}")),
        },
        Route::KeepAlive(_) => {
            let Effect::KeepAlive(chat, ttl) = &expected.effect else {
                return Err("a keep-alive succeeded where it should not".into());
            };
            check_keep_alive(&json()?, &model.chats[chat], *ttl, window)?;
        }
        Route::Fixed(_) | Route::Unknown => return Err("a 2xx for no route".into()),
    }
    Ok(())
}

/// The answer of a command: its shape, the sandbox it ran in, and what the command printed
/// and how it ended when that is predicted.
fn check_exec(answer: &Value, live: &Live, run: Option<&Run>) -> Result<(), String> {
    let fields = answer.as_object().ok_or("the exec answer is not an object")?;
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    let documented =
        ["duration_ms", "exit_code", "session_id", "stderr", "stdout", "timed_out", "truncated"];
    let shaped = names == documented
        && (answer["exit_code"].is_i64() || answer["exit_code"].is_null())
        && answer["stdout"].is_string()
        && answer["stderr"].is_string()
        && answer["timed_out"].is_boolean()
        && answer["duration_ms"].is_u64();
    if !shaped {
        return Err(format!("not the documented exec answer: {answer}"));
    }
    if answer["session_id"] != live.session["session_id"] {
        return Err(format!("the command ran in another sandbox: {answer}"));
    }
    if answer["truncated"] != false {
        return Err(format!("a short output was truncated: {answer}"));
    }
    // `exit_code` is null exactly when the command timed out.
    if answer["timed_out"] == answer["exit_code"].is_i64() {
        return Err(format!("exit_code and timed_out disagree: {answer}"));
    }
    let Some(run) = run else {
        return Ok(());
    };
    let ended_as_predicted = answer["exit_code"].as_i64() == run.exit_code
        && answer["stdout"] == run.stdout.as_str()
        && run.stderr.as_ref().is_none_or(|stderr| answer["stderr"] == stderr.as_str())
        && answer["timed_out"] == run.timed_out;
    if !ended_as_predicted {
        return Err(format!("the command answered {answer}, where {run:?} was expected"));
    }
    Ok(())
}

fn time(value: &Value) -> Result<DateTime<Utc>, String> {
    value
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&Utc))
        .ok_or_else(|| format!("not an RFC 3339 time: {value}"))
}

/// The answer of a keep-alive: the same session, an expiry that never moved back nor past the
/// lifetime, `extended` exactly when it moved, to about now + the TTL.
fn check_keep_alive(answer: &Value, live: &Live, ttl: u64, window: Window) -> Result<(), String> {
    let fields = answer.as_object().ok_or("the keep-alive answer is not an object")?;
    let before = &live.session;
    let same_session = fields.len() == 8
        && ["session_id", "chat_id", "container_id", "status", "created_at"]
            .iter()
            .all(|field| answer[field] == before[field]);
    if !same_session {
        return Err(format!("not the kept session {before}: {answer}"));
    }
    let created = time(&answer["created_at"])?;
    let lifetime = time(&answer["lifetime_ends_at"])?;
    if lifetime != created + chrono::Duration::seconds(MAX_LIFETIME_SECONDS) {
        return Err(format!("lifetime_ends_at is not created_at + --max-lifetime: {answer}"));
    }
    let old = time(&before["expires_at"])?;
    let new = time(&answer["expires_at"])?;
    let ttl = chrono::Duration::seconds(i64::try_from(ttl).unwrap());
    let slack = chrono::Duration::seconds(1);
    let wanted_at_least = (window.sent + ttl).min(lifetime);
    let fine = new <= lifetime
        && match answer["result"].as_str() {
            Some("extended") => {
                new >= old && new + slack >= wanted_at_least && new <= window.received + ttl + slack
            }
            Some("unchanged") => new == old && old + slack >= wanted_at_least,
            _ => false,
        };
    if !fine {
        return Err(format!(
            "a keep-alive of {}s sent at {} moved the expiry from {old} as {answer}",
            ttl.num_seconds(),
            window.sent
        ));
    }
    Ok(())
}

/// Everything the state comparison looks at: each session as listed, and the containers.
async fn state(server: &Server, env: &TestEnv) -> (BTreeMap<String, Value>, Vec<String>) {
    let sessions = server
        .sandboxes()
        .await
        .into_iter()
        .map(|session| (session["session_id"].as_str().unwrap_or_default().to_owned(), session))
        .collect();
    let mut containers = env.containers(true);
    containers.sort();
    (sessions, containers)
}

/// Runs a shell script in the chat's sandbox (in `/workspace`) and returns what it printed.
async fn shell(server: &Server, chat: Uuid, script: &str) -> String {
    let request = server
        .request(reqwest::Method::POST, &format!("/v1/chats/{chat}/sandbox/exec"))
        .body(json!({"command": ["sh", "-c", script]}).to_string());
    let (status, answer) = server.send(request).await;
    assert_eq!(status, StatusCode::OK, "{script}: {answer}");
    assert_eq!(answer["exit_code"], 0, "{script}: {answer}");
    answer["stdout"].as_str().expect("stdout").to_owned()
}

/// `find <dirs> -mindepth 1` in the chat's sandbox, sorted.
async fn listing(server: &Server, chat: Uuid, dirs: &str) -> Vec<String> {
    let printed = shell(server, chat, &format!("find {dirs} -mindepth 1")).await;
    let mut entries: Vec<String> = printed.lines().map(str::to_owned).collect();
    entries.sort();
    entries
}

/// A path with every byte but the unreserved ones percent-encoded, `/` kept.
fn url_path(path: &str) -> String {
    path.split('/')
        .map(|name| {
            name.bytes()
                .map(|byte| match byte {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        char::from(byte).to_string()
                    }
                    _ => format!("%{byte:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// After the run each sandbox holds exactly what the accepted uploads put there, byte for
/// byte, and nothing else: no refused upload left a file, a directory or a temporary file,
/// in `/workspace` or (through a link) in `/tmp`.
async fn check_workspaces(server: &Server, model: &Model, tmp: &[String]) -> Vec<String> {
    let mut failures = Vec::new();
    for (chat, live) in &model.chats {
        let mut expected = live.workspace.listing();
        expected.extend(tmp.iter().cloned());
        expected.sort();
        let found = listing(server, *chat, "/workspace /tmp").await;
        if found != expected {
            failures.push(format!(
                "chat {chat}: the sandbox holds {found:?}, where {expected:?} was expected"
            ));
        }
        for (path, bytes) in live.workspace.files() {
            let url = format!("/v1/chats/{chat}/sandbox/files/{}", url_path(path));
            let response = server.request(reqwest::Method::GET, &url).send().await.unwrap();
            let status = response.status();
            let body = response.bytes().await.unwrap();
            if status != StatusCode::OK || body.as_ref() != bytes.as_slice() {
                failures.push(format!(
                    "chat {chat}: `{path}` answers {status} with {} bytes, not the {} uploaded",
                    body.len(),
                    bytes.len()
                ));
            }
        }
    }
    failures
}

fn seed() -> u64 {
    match std::env::var("SANDKEEPER_FUZZ_SEED") {
        Ok(text) => text.trim().parse().expect("SANDKEEPER_FUZZ_SEED is a whole number"),
        Err(_) => Uuid::new_v4().as_u64_pair().0,
    }
}

fn cases() -> usize {
    std::env::var("SANDKEEPER_FUZZ_CASES")
        .map(|text| text.trim().parse().expect("SANDKEEPER_FUZZ_CASES is a whole number"))
        .unwrap_or(DEFAULT_CASES)
}

/// How many requests of each kind reached a sandbox, and how many of them had their answer
/// predicted in full.
#[derive(Debug, Default)]
struct Reached {
    commands: usize,
    commands_predicted: usize,
    uploads: usize,
    downloads: usize,
    keep_alives: usize,
    keep_alives_extended: usize,
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_requests_never_get_a_5xx_get_the_documented_answer_and_change_nothing() {
    let test = "generated_requests_never_get_a_5xx_get_the_documented_answer_and_change_nothing";
    let docker_up = docker(test).is_some();
    if !docker_up {
        println!("{test}: without Docker; valid PUTs of new chats must answer 503");
    }
    let seed = seed();
    let total = cases();
    println!("{test}: seed {seed} (SANDKEEPER_FUZZ_SEED={seed} replays it), {total} requests");

    let env = TestEnv::new();
    let mut docker_host = Vec::new();
    if !docker_up {
        docker_host.push(("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
    }
    // The loops must not change anything while the state is compared: nothing expires during
    // the run and no periodic sweep runs after the first. The limits of the routes inside a
    // sandbox are small, so that requests on both sides of them are cheap.
    let ttl = format!("{MAX_TTL_SECONDS}s");
    let lifetime = format!("{MAX_LIFETIME_SECONDS}s");
    let stdin_limit = format!("{}k", STDIN_LIMIT / 1024);
    let file_limit = format!("{}k", FILE_LIMIT / 1024);
    let max_timeout = format!("{MAX_EXEC_TIMEOUT_MS}ms");
    let server = env
        .serve_with_env(
            &[
                "--api-token",
                TOKEN,
                "--max-ttl",
                &ttl,
                "--ttl",
                &ttl,
                "--max-lifetime",
                &lifetime,
                "--maintenance-interval",
                "1h",
                "--cleanup-interval",
                "1h",
                "--exec-stdin-limit",
                &stdin_limit,
                "--file-size-limit",
                &file_limit,
                "--exec-max-timeout",
                &max_timeout,
            ],
            &docker_host,
        )
        .await;
    let address: SocketAddr =
        server.url("").trim_start_matches("http://").parse().expect("a socket address");
    let authority = address.to_string();

    let mut model = Model { docker_up, chats: HashMap::new() };
    let mut generator = Generator::new(StdRng::seed_from_u64(seed), TOKEN);
    let mut tmp = Vec::new();
    if docker_up {
        for _ in 0..2 {
            let chat = Uuid::new_v4();
            let (status, session) = server.put_sandbox(&chat.to_string()).await;
            assert_eq!(status, StatusCode::CREATED, "{session}");
            shell(&server, chat, inside::PLANT_SCRIPT).await;
            tmp = listing(&server, chat, "/tmp").await;
            model.chats.insert(chat, Live { session, workspace: Workspace::planted() });
            generator.add_known_chat(chat);
        }
    }
    let (sessions_before, containers_before) = state(&server, &env).await;
    for live in model.chats.values_mut() {
        live.session = sessions_before[live.session["session_id"].as_str().unwrap()].clone();
    }

    let mut per_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut per_route: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    let mut per_method: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut reached = Reached::default();
    let mut failures = Vec::new();
    let mut created = Vec::new();
    let mut cut_short = 0;
    let mut sent = 0;
    while sent < total {
        let case = generator.case();
        let expected = expect(&case, &model);
        let sandbox_calls = reached.commands + reached.uploads + reached.downloads;
        match expected.effect {
            Effect::Deletes => continue,
            Effect::Creates(_, ttl)
                if created.len() >= CREATE_BUDGET || ttl < MIN_CREATED_TTL_SECONDS =>
            {
                continue;
            }
            ref effect if effect.reaches_sandbox() && sandbox_calls >= SANDBOX_BUDGET => continue,
            _ => {}
        }
        sent += 1;
        match expected.effect {
            Effect::Exec(_, ref run) => {
                reached.commands += 1;
                reached.commands_predicted += usize::from(run.is_some());
            }
            Effect::Upload { .. } => reached.uploads += 1,
            Effect::Download(..) => reached.downloads += 1,
            Effect::KeepAlive(..) => reached.keep_alives += 1,
            _ => {}
        }
        let head = case.method == "HEAD";
        let window_sent = Utc::now();
        let answer =
            raw_http::exchange(address, case.to_bytes(&authority), head, REQUEST_TIMEOUT).await;
        let window = Window { sent: window_sent, received: Utc::now() };
        let response = match answer {
            Ok(Answer::Response(response)) => response,
            Ok(Answer::Closed { received, status }) => {
                // A route that does not read the body answers, and closes the connection as
                // asked with the body unread: the kernel then resets it, dropping what of a
                // long answer was not yet delivered. Only the head can be checked.
                if status == Some(expected.status) && !reads_body(&case) {
                    cut_short += 1;
                    *per_status.entry(expected.status).or_default() += 1;
                    continue;
                }
                failures.push(format!(
                    "closed without a complete answer ({received} bytes, status {status:?}): {}",
                    case.describe()
                ));
                continue;
            }
            Err(error) => {
                failures.push(format!("{error}: {}", case.describe()));
                continue;
            }
        };
        *per_status.entry(response.status).or_default() += 1;
        *per_route.entry((route_of(&case.path), response.status)).or_default() += 1;
        *per_method.entry(case.method.clone()).or_default() += 1;
        if let Ok(answer) = serde_json::from_slice::<Value>(&response.body) {
            let code = answer["error"]["code"].as_str().or(answer["result"].as_str());
            if let Some(code) = code {
                *per_code.entry(format!("{} {code}", response.status)).or_default() += 1;
            }
            reached.keep_alives_extended += usize::from(
                route_of(&case.path) == KEEPALIVE_ROUTE && answer["result"] == "extended",
            );
        }
        if let Err(why) = check(&case, &expected, &response, &model, window) {
            failures.push(format!(
                "{why}\n    request: {}\n    expected: {} {:?} (or {:?})\n    answer: {} {}",
                case.describe(),
                expected.status,
                expected.code,
                expected.or,
                response.status,
                String::from_utf8_lossy(&response.body).chars().take(400).collect::<String>()
            ));
        } else {
            apply(expected.effect, &response, &mut model, &mut generator, &mut created);
        }
        if failures.len() >= 20 {
            break;
        }
    }

    // Requests that break HTTP itself: answered by the HTTP layer or dropped, never fatal.
    let mut malformed = BTreeMap::new();
    for _ in 0..60 {
        let (name, bytes) = generate::malformed(&mut generator.rng, TOKEN, &authority);
        match raw_http::exchange(address, bytes, false, REQUEST_TIMEOUT).await {
            Ok(Answer::Response(response)) if (400..500).contains(&response.status) => {
                *malformed.entry(format!("{} {name}", response.status)).or_insert(0) += 1;
            }
            Ok(Answer::Closed { .. }) => {
                *malformed.entry(format!("closed {name}")).or_insert(0) += 1;
            }
            Ok(Answer::Response(response)) => failures.push(format!(
                "malformed request `{name}`: {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )),
            Err(error) => failures.push(format!("malformed request `{name}`: {error}")),
        }
    }

    println!("{test}: seed {seed}: {sent} generated requests, answers by status:");
    for (status, count) in &per_status {
        println!("  {status}: {count}");
    }
    println!("by route and status:");
    for ((route, status), count) in &per_route {
        println!("  {route} {status}: {count}");
    }
    println!("by method: {per_method:?}");
    println!("by error code or result: {per_code:?}");
    println!("malformed HTTP (status or closed, kind): {malformed:?}");
    println!("sandboxes created by valid PUTs: {}", created.len());
    println!("reached a sandbox: {reached:?}");
    println!(
        "answers cut short after their head (a body left unread, the connection closed): {cut_short}"
    );

    if docker_up && failures.is_empty() {
        failures.extend(check_workspaces(&server, &model, &tmp).await);
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) with seed {seed} (SANDKEEPER_FUZZ_SEED={seed} replays them):\n{}\n\nserver log tail:\n{}",
        failures.len(),
        failures.join("\n"),
        tail(&server.logs(), 40)
    );
    assert!(sent >= total, "only {sent} of {total} requests were sent");

    // The server is alive and well, and nothing but the few valid PUTs and the keep-alives
    // changed anything: every session is as listed before (with the expiry its last keep-alive
    // answered), plus the created ones as their PUT answered.
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    let (sessions_after, containers_after) = state(&server, &env).await;
    let mut expected_sessions = sessions_before.clone();
    for live in model.chats.values() {
        let session_id = live.session["session_id"].as_str().unwrap().to_owned();
        expected_sessions.insert(session_id, live.session.clone());
    }
    let mut expected_containers = containers_before.clone();
    expected_containers.extend(created.iter().cloned());
    expected_containers.sort();
    assert_eq!(sessions_after, expected_sessions, "rejected requests changed the sessions");
    assert_eq!(containers_after, expected_containers, "rejected requests changed the containers");
    // Methods are any token to HTTP; the metrics keep a bounded set of labels all the same.
    let metrics = server.metrics().await;
    println!("/metrics after the run: {} bytes", metrics.len());
    let standard = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    for label in metrics.split("method=\"").skip(1) {
        let method = label.split('"').next().unwrap_or_default();
        assert!(
            standard.contains(&method) || method == "_OTHER",
            "a metric label for the method `{method}`: any client could grow the metrics"
        );
    }
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "the server panicked:\n{}", tail(&logs, 60));
    assert!(!logs.contains(TOKEN), "the token was logged");
}

/// Whether the server reads the case's body, so that closing the connection cannot cut its
/// answer short: only the routes that take a body do, and only once the token and the method
/// passed. An empty body leaves nothing unread.
fn reads_body(case: &Case) -> bool {
    let method = case.method.as_str();
    let takes_body = match route(&case.path) {
        Route::Sandbox(_) => method == "PUT",
        Route::Exec(_) | Route::KeepAlive(_) => method == "POST",
        Route::Files(_, file) => method == "PUT" && file.is_some_and(|file| !file.is_empty()),
        Route::Fixed(_) | Route::Unknown => false,
    };
    let authorized = case.path == "/healthz" || authorized(case.authorization.as_deref());
    case.body.as_ref().is_none_or(Vec::is_empty) || (takes_body && authorized)
}

/// Records in the model what an answered request did.
fn apply(
    effect: Effect,
    response: &Response,
    model: &mut Model,
    generator: &mut Generator,
    created: &mut Vec<String>,
) {
    match effect {
        Effect::Creates(chat, _) => {
            let mut session: Value = serde_json::from_slice(&response.body).unwrap();
            session.as_object_mut().unwrap().remove("result");
            created.push(session["container_id"].as_str().unwrap().to_owned());
            model.chats.insert(chat, Live { session, workspace: Workspace::default() });
            generator.add_known_chat(chat);
        }
        Effect::Upload { chat, resolved: Some(resolved), bytes, .. } => {
            model.chats.get_mut(&chat).unwrap().workspace.write(resolved, bytes);
        }
        Effect::KeepAlive(chat, _) if response.status == 200 => {
            let answer: Value = serde_json::from_slice(&response.body).unwrap();
            model.chats.get_mut(&chat).unwrap().session["expires_at"] =
                answer["expires_at"].clone();
        }
        _ => {}
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The routes and methods docs/openapi.yaml documents.
fn documented_operations() -> BTreeSet<(String, String)> {
    let document = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let text = std::fs::read_to_string(&document).expect("docs/openapi.yaml");
    let mut operations = BTreeSet::new();
    let mut path = None;
    for line in text.lines() {
        if let Some(route) = line.strip_prefix("  /").and_then(|rest| rest.strip_suffix(':')) {
            path = Some(format!("/{route}"));
        } else if !line.starts_with("  ") && !line.trim().is_empty() {
            // The next top-level key (`components:`) ends the paths.
            path = None;
        } else if let (Some(path), Some(method)) =
            (&path, line.strip_prefix("    ").and_then(|rest| rest.strip_suffix(':')))
        {
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&method) {
                operations.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    operations
}

#[test]
fn every_route_of_the_openapi_document_is_generated() {
    let documented = documented_operations();
    assert!(
        documented.len() >= 13,
        "too few operations found in docs/openapi.yaml: {documented:?}"
    );
    let mut generator = Generator::new(StdRng::seed_from_u64(7), TOKEN);
    generator.add_known_chat(Uuid::new_v4());
    let generated: BTreeSet<(String, String)> = (0..3000)
        .map(|_| generator.case())
        .map(|case| (route_of(&case.path).to_owned(), case.method))
        .collect();
    for (path, method) in &documented {
        assert!(
            generated.contains(&(path.clone(), method.clone())),
            "docs/openapi.yaml documents {method} {path}, which the fuzzer does not generate: \
             teach tests/tests/blackbox/fuzz/generate.rs and the oracle in fuzz.rs about it"
        );
    }
}

#[test]
fn the_oracle_reads_ids_queries_and_tokens_as_the_api_documents() {
    let chat = "0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b";
    let uuid = Uuid::parse_str(chat).unwrap();
    for spelling in [
        chat.to_owned(),
        chat.to_uppercase(),
        chat.replace('-', ""),
        format!("{{{chat}}}"),
        format!("urn:uuid:{chat}"),
        chat.replace('-', "%2D"),
    ] {
        assert_eq!(chat_of(&spelling), Some(uuid), "{spelling}");
    }
    let padded = [format!("%20{chat}%09"), format!("{chat}%0A"), format!("%C2%A0{chat}")];
    for bad in ["..", "%2e%2e", "%FF", "%", "abc", &chat[..35], &format!("{chat}0")]
        .into_iter()
        .chain(padded.iter().map(String::as_str))
    {
        assert_eq!(chat_of(bad), None, "{bad}");
    }
    assert_eq!(route("/v1/chats/x/sandbox"), Route::Sandbox("x"));
    assert_eq!(route("/v1/chats//sandbox/exec"), Route::Exec(""));
    assert_eq!(route("/v1/chats/x/sandbox/keepalive"), Route::KeepAlive("x"));
    assert_eq!(route("/v1/chats/x/sandbox/files"), Route::Files("x", None));
    assert_eq!(route("/v1/chats/x/sandbox/files/"), Route::Files("x", Some("")));
    assert_eq!(route("/v1/chats/x/sandbox/files//a/"), Route::Files("x", Some("/a/")));
    for path in ["/v1/chats/x/sandbox/files%2Fa", "/v1/chats/x/sandbox/", "/v1/chats/", "/v1/chats"]
    {
        assert_eq!(route(path), Route::Unknown, "{path}");
    }
    assert_eq!(percent_decode("a%2"), b"a%2");
    assert_eq!(percent_decode("%41%zz%4"), b"A%zz%4");
    assert_eq!(
        query_pairs("status=Running&&limit=+5&x"),
        vec![
            ("status".into(), "Running".into()),
            ("limit".into(), " 5".into()),
            ("x".into(), "".into())
        ]
    );
    assert_eq!(judge_list_query(Some("status=RUNNING&limit=%2B5")).status, 200);
    assert_eq!(judge_list_query(Some("status=a&status=b")).code, Some("invalid_query"));
    assert_eq!(judge_list_query(Some("limit=0")).code, Some("invalid_limit"));
    assert!(authorized(Some(format!("  bEaReR   {TOKEN} ").as_bytes())));
    assert!(!authorized(Some(format!("Bearer\t{TOKEN}").as_bytes())));
    assert!(!authorized(Some(b"Bearer")));
    assert_eq!(
        judge_put_body(Some(br#"{"ttl_seconds": 60, "ttl_seconds": 0}"#)).unwrap_err(),
        (400, "invalid_ttl")
    );
    assert_eq!(judge_put_body(Some(br#"{"ttl_seconds": 1e3}"#)), Ok(Some(1000)));
    assert_eq!(judge_put_body(Some(br#"{"ttl_seconds": 60.0}"#)), Ok(Some(60)));
    assert_eq!(judge_put_body(Some(br#"{"ttl_seconds": 1e4}"#)).unwrap_err(), (400, "invalid_ttl"));
    assert_eq!(judge_put_body(Some(br#"{"ttl_seconds": 60}"#)), Ok(Some(60)));
    assert_eq!(judge_put_body(Some(b"{}")), Ok(None));
    assert!(judge_put_body(Some(&[b' '; BODY_LIMIT])).is_ok());
    assert_eq!(judge_put_body(Some(&[b' '; BODY_LIMIT + 1])).unwrap_err().0, 413);
}

#[test]
fn the_oracle_judges_exec_bodies_paths_and_workspaces_as_the_api_documents() {
    let judge = |body: &str| inside::judge_exec_body(Some(body.as_bytes()));
    let exec = judge(
        r#"{"command": ["cat"], "stdin": "in", "env": {"FUZZ_V": "1"}, "workdir": "seed",
            "timeout_ms": 5000, "env": {"FUZZ_V": "2"}}"#,
    )
    .unwrap();
    assert_eq!(exec.command, ["cat"]);
    assert_eq!(exec.stdin.as_deref(), Some("in"));
    assert_eq!(exec.env, [("FUZZ_V".to_owned(), "2".to_owned())]);
    assert_eq!((exec.workdir.as_deref(), exec.timeout_ms), (Some("seed"), Some(5000)));
    let body = (400, "invalid_body");
    let command = (400, "invalid_command");
    for (text, refusals) in [
        ("", vec![body]),
        ("[]", vec![body]),
        (r#"{"cmd": ["true"]}"#, vec![body]),
        (r#"{"command": ["\ud800"]}"#, vec![body]),
        ("{}", vec![command]),
        (r#"{"command": []}"#, vec![command]),
        (r#"{"command": ["", "x"]}"#, vec![command]),
        (r#"{"command": ["echo", "a\u0000"]}"#, vec![command]),
        (r#"{"command": ["true"], "stdin": 5}"#, vec![(400, "invalid_stdin")]),
        (r#"{"command": ["true"], "env": {"1A": "x"}}"#, vec![(400, "invalid_env")]),
        (r#"{"command": ["true"], "env": {"A": 1}}"#, vec![(400, "invalid_env")]),
        (r#"{"command": ["true"], "workdir": "../x"}"#, vec![(400, "invalid_workdir")]),
        (r#"{"command": ["true"], "workdir": ""}"#, vec![(400, "invalid_workdir")]),
        (r#"{"command": ["true"], "timeout_ms": 60001}"#, vec![(400, "invalid_timeout")]),
        (r#"{"command": ["true"], "timeout_ms": 1.5}"#, vec![(400, "invalid_timeout")]),
        (r#"{"command": ["true"], "timeout_ms": 6.0001e4}"#, vec![(400, "invalid_timeout")]),
        (r#"{"command": "ls", "timeout_ms": 0}"#, vec![command, (400, "invalid_timeout")]),
    ] {
        assert_eq!(judge(text).unwrap_err(), refusals, "{text}");
    }
    let stdin = format!(r#"{{"command": ["cat"], "stdin": "{}"}}"#, "x".repeat(STDIN_LIMIT + 1));
    assert_eq!(judge(&stdin).unwrap_err(), [(413, "stdin_too_large")]);
    let huge = format!(r#"{{"command": ["true"]}}{}"#, " ".repeat(EXEC_BODY_LIMIT));
    assert_eq!(judge(&huge).unwrap_err(), [(413, "body_too_large")]);
    assert!(judge(&huge[..EXEC_BODY_LIMIT]).is_ok());
    assert!(judge(r#"{"command": ["true"], "workdir": "/../tmp", "timeout_ms": 60000}"#).is_ok());
    let args = |count: usize| json!({"command": vec!["x"; count]}).to_string();
    assert!(judge(&args(4096)).is_ok());
    assert_eq!(judge(&args(4097)).unwrap_err(), [command]);

    let long_name = "n".repeat(255);
    let name = "m".repeat(204);
    let long_path = [name.as_str(); 5].join("/");
    assert_eq!(long_path.len(), 1024);
    for fine in ["a", "a/b.txt", ".hidden", "a..b", "...", "%", "\u{202e}x", &long_name] {
        assert!(inside::path_allowed(fine), "{fine}");
    }
    assert!(inside::path_allowed(&long_path));
    for bad in ["", "/a", "a/", "a//b", "..", "a/./b", "a\\b", "a\u{0}", "a\u{85}", "a\tb"] {
        assert!(!inside::path_allowed(bad), "{bad:?}");
    }
    assert!(!inside::path_allowed(&format!("{long_name}n")));
    assert!(!inside::path_allowed(&format!("m{long_path}")));
    for bytes in [1022, 1024, 1025, 4000] {
        let path = generate::long_path(bytes);
        assert_eq!(path.len(), bytes);
        assert!(path.split('/').all(|name| (1..=255).contains(&name.len())), "{path}");
        assert_eq!(inside::path_allowed(&path), bytes <= 1024);
    }

    let mut workspace = Workspace::planted();
    for path in ["escape", "escape/x", "tmplink/x/y"] {
        assert_eq!(workspace.upload(path), Err((400, "outside_workspace")), "{path}");
        assert_eq!(workspace.download(path), Err((400, "outside_workspace")), "{path}");
    }
    assert_eq!(workspace.upload("inside"), Err((409, "not_a_regular_file")));
    assert_eq!(workspace.download("seed"), Err((409, "not_a_regular_file")));
    assert_eq!(workspace.download("inside/hello.txt"), Ok(&b"hello\n"[..]));
    assert_eq!(workspace.upload("seed/hello.txt/x"), Err((409, "parent_not_a_directory")));
    assert_eq!(workspace.download("seed/hello.txt/x"), Err((404, "file_not_found")));
    assert_eq!(workspace.upload("inside/new/file"), Ok("seed/new/file".to_owned()));
    workspace.write("seed/new/file".into(), b"1".to_vec());
    assert_eq!(workspace.download("inside/new"), Err((409, "not_a_regular_file")));
    assert_eq!(
        workspace.listing(),
        [
            "/workspace/escape",
            "/workspace/inside",
            "/workspace/seed",
            "/workspace/seed/hello.txt",
            "/workspace/seed/new",
            "/workspace/seed/new/file",
            "/workspace/tmplink",
        ]
    );

    let predict = |text: &str| inside::predict(&judge(text).unwrap(), &workspace);
    let printed = |stdout: &str| Run {
        exit_code: Some(0),
        stdout: stdout.into(),
        stderr: Some(String::new()),
        timed_out: false,
    };
    assert_eq!(predict(r#"{"command": ["echo", "a", "", "b"]}"#), Some(printed("a  b\n")));
    assert_eq!(
        predict(r#"{"command": ["pwd"], "workdir": "seed/new"}"#),
        Some(printed("/workspace/seed/new\n"))
    );
    assert_eq!(predict(r#"{"command": ["pwd"], "workdir": "inside"}"#), None);
    assert_eq!(predict(r#"{"command": ["true"], "env": {"PATH": "/x"}}"#), None);
    assert_eq!(predict(r#"{"command": ["true"], "timeout_ms": 10}"#), None);
    let missing = predict(r#"{"command": ["true"], "workdir": "seed/hello.txt"}"#).unwrap();
    assert_eq!((missing.exit_code, missing.timed_out), (Some(126), false));
    let slept = predict(r#"{"command": ["sleep", "5"], "timeout_ms": 200}"#).unwrap();
    assert_eq!((slept.exit_code, slept.timed_out), (None, true));
}
