//! The verdict on an answer: what is wrong with the server's response to a case, given what
//! the oracle expected. Each rule the API documents is a function of its own: no 5xx, the
//! documented status and error code, the error shape, and for a success what its route
//! promises (and that it changed nothing it should not).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::MAX_LIFETIME_SECONDS;
use super::generate::Case;
use super::inside::Run;
use super::oracle::{Effect, Expected, Live, Model};
use super::raw_http::Response;
use super::rules::{Route, chat_of, route};

/// When a request was sent and its answer received, to judge the times in the answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) sent: DateTime<Utc>,
    pub(crate) received: DateTime<Utc>,
}

/// What is wrong with `response` for `case`, if anything.
pub(crate) fn check(
    case: &Case,
    expected: &Expected,
    response: &Response,
    model: &Model,
    window: Window,
) -> Result<(), String> {
    no_server_error(response, model)?;
    let head = case.method == "HEAD";
    if response.status >= 400 && !head && case.path != "/readyz" {
        documented_error(expected, response)?;
    } else {
        expected.allows(response.status, None)?;
    }
    if head || response.status >= 300 {
        return Ok(());
    }
    // Successful answers carry what they promise, and change nothing they should not.
    match route(&case.path) {
        Route::Fixed(fixed) => fixed_route_answer(fixed, response),
        Route::Sandbox(segment) => session_answer(case, segment, response, model),
        Route::Exec(_) => {
            let Effect::Exec(chat, run) = &expected.effect else {
                return Err("a command ran where none should".into());
            };
            check_exec(&json(response)?, &model.chats[chat], run.as_ref())
        }
        Route::Files(..) => file_answer(&expected.effect, response, model),
        // A stored archive's metadata, its removal, or an archive (not followed by the model).
        Route::Workspace(_) | Route::Archive(_) => Ok(()),
        Route::KeepAlive(_) => {
            let Effect::KeepAlive(chat, ttl) = &expected.effect else {
                return Err("a keep-alive succeeded where it should not".into());
            };
            check_keep_alive(&json(response)?, &model.chats[chat], *ttl, window)
        }
        Route::Processes(_) => process_answer(case, response),
        Route::Process(..) => Err("a process the run never started was found".into()),
        Route::Terminal(_) => Err("a terminal opened without a WebSocket upgrade".into()),
        Route::Unknown => Err("a 2xx for no route".into()),
    }
}

/// A list of processes is a list (empty: the run starts none on purpose); a start answers the
/// process, running.
fn process_answer(case: &Case, response: &Response) -> Result<(), String> {
    let body = json(response)?;
    if case.method == "POST" {
        return match body["status"].as_str() {
            Some("running" | "exited") => Ok(()),
            _ => Err(format!("a started process that is not running: {body}")),
        };
    }
    body["processes"].as_array().map(|_| ()).ok_or_else(|| format!("no processes array: {body}"))
}

/// Never a 5xx, but the 503 of a server without Docker.
fn no_server_error(response: &Response, model: &Model) -> Result<(), String> {
    let docker_down_503 = response.status == 503 && !model.docker_up;
    if response.status >= 500 && !docker_down_503 {
        return Err(format!("a {} answer", response.status));
    }
    Ok(())
}

/// The body as JSON.
fn json(response: &Response) -> Result<Value, String> {
    serde_json::from_slice(&response.body).map_err(|error| {
        format!("the body is not JSON ({error}): {:?}", String::from_utf8_lossy(&response.body))
    })
}

/// An error is the documented shape (only `error`, with a code and a message), with an
/// allowed status and code, as JSON.
fn documented_error(expected: &Expected, response: &Response) -> Result<(), String> {
    let body = json(response)?;
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
    Ok(())
}

/// The routes without a chat: the list is a list, a cleanup and a sweep changed nothing, the
/// metrics and probes say what they must.
fn fixed_route_answer(fixed: &str, response: &Response) -> Result<(), String> {
    match fixed {
        "/v1/sandboxes" => {
            json(response)?["sandboxes"].as_array().ok_or("no sandboxes array")?;
        }
        "/v1/maintenance/cleanup" => {
            let report = json(response)?;
            if report["expired"] != 0 || report["cleaned"].as_array().is_none_or(|c| !c.is_empty())
            {
                return Err(format!("a cleanup removed something: {report}"));
            }
        }
        "/v1/maintenance/sweep" => {
            let report = json(response)?;
            for field in ["reconciled", "removed", "orphans_removed"] {
                if report[field] != 0 {
                    return Err(format!("a sweep changed something: {report}"));
                }
            }
        }
        "/v1/engines" => {
            let engines = json(response)?;
            let listed = engines["engines"].as_array().ok_or("no engines array")?;
            let names: Vec<&str> = listed.iter().filter_map(|e| e["name"].as_str()).collect();
            if names != ["default"] {
                return Err(format!("not the one default engine: {engines}"));
            }
        }
        "/metrics" => {
            if !String::from_utf8_lossy(&response.body).contains("http_server_requests_total") {
                return Err("no HTTP metrics in /metrics".into());
            }
        }
        "/healthz" => {
            if json(response)? != json!({"status": "ok"}) {
                return Err("healthz is not {\"status\":\"ok\"}".into());
            }
        }
        "/readyz" => {
            if json(response)?["status"] != "ready" {
                return Err("readyz 200 but not ready".into());
            }
        }
        "/v1/pool" => {
            // The fuzzer runs without a pool.
            let empty = json!({"target": 0, "ready": 0, "starting": 0});
            let mut one_engine = empty.clone();
            one_engine["engine"] = json!("default");
            if json(response)?
                != json!({"target": 0, "ready": 0, "starting": 0, "engines": [one_engine]})
            {
                return Err("the pool of a server without one is not empty".into());
            }
        }
        _ => return Err("a 2xx for no route".into()),
    }
    Ok(())
}

/// A session answer is for the chat asked, with the result a PUT promises, and shows a known
/// session as it is, expiry included.
fn session_answer(
    case: &Case,
    segment: &str,
    response: &Response,
    model: &Model,
) -> Result<(), String> {
    let mut session = json(response)?;
    let chat = chat_of(segment).ok_or("a 2xx for a chat id that is not one")?;
    if session["chat_id"] != chat.hyphenated().to_string() {
        return Err(format!("the answer is for another chat: {session}"));
    }
    if session["engine"] != "default" {
        return Err(format!("a session not on the one engine, `default`: {session}"));
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
    // A new sandbox says what was restored into it: nothing, for the fuzzer's fresh chats
    // (no generated archive is ever accepted); a reuse or a read says nothing of it.
    let workspace = session.as_object_mut().and_then(|fields| fields.remove("workspace"));
    let expected_workspace = (expected_result == Some("created"))
        .then(|| serde_json::json!({"restored": false, "size_bytes": 0, "saved_at": null}));
    if workspace != expected_workspace {
        return Err(format!("workspace {workspace:?} where {expected_workspace:?}: {session}"));
    }
    // A reuse or a read shows the session as it is, expiry included.
    if let Some(live) = model.chats.get(&chat) {
        if session != live.session {
            return Err(format!("{session} where {} was expected", live.session));
        }
    }
    Ok(())
}

/// An upload answers where it wrote and how much; a download answers the bytes uploaded, as
/// `application/octet-stream`.
fn file_answer(effect: &Effect, response: &Response, model: &Model) -> Result<(), String> {
    match effect {
        Effect::Upload { chat, path, bytes, .. } => {
            let answer = json(response)?;
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
                    String::from_utf8_lossy(&response.body).chars().take(100).collect::<String>()
                ));
            }
            let content_type = response.header("content-type").unwrap_or_default();
            if content_type != "application/octet-stream" {
                return Err(format!("a download with content-type {content_type:?}"));
            }
        }
        other => return Err(format!("a 2xx where the files route should not: {other:?}")),
    }
    Ok(())
}

/// The answer of a command: its shape, the sandbox it ran in, and what the command printed
/// and how it ended when that is predicted.
fn check_exec(answer: &Value, live: &Live, run: Option<&Run>) -> Result<(), String> {
    exec_answer_shaped(answer)?;
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
    match run {
        Some(run) => exec_ended_as_predicted(answer, run),
        None => Ok(()),
    }
}

/// The documented fields of an exec answer, each of its type.
fn exec_answer_shaped(answer: &Value) -> Result<(), String> {
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
    Ok(())
}

/// The command printed and ended as the model predicted.
fn exec_ended_as_predicted(answer: &Value, run: &Run) -> Result<(), String> {
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
    let same_session = fields.len() == 9
        && ["session_id", "chat_id", "container_id", "status", "created_at", "engine"]
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
