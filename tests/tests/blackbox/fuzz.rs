//! API fuzzing: well over a thousand generated requests against the real server, shaped after
//! docs/openapi.yaml (every route, every method, odd chat ids, query strings, bodies, content
//! types, tokens). Each request's answer is predicted from the API's documented rules and
//! checked: never a 5xx, the documented status and error code, the error shape with a message,
//! and no state change from any rejected request (sessions and containers compared before and
//! after). The server must survive all of it, malformed HTTP included.
//!
//! `SANDKEEPER_FUZZ_SEED` replays a run (the seed is printed), `SANDKEEPER_FUZZ_CASES` sets how
//! many requests are generated (default 1500). With Docker the run creates at most a handful of
//! sandboxes (a few valid PUTs); without Docker it still runs, and a valid PUT of a new chat must
//! then be a 503 `docker_unavailable`.

mod generate;
mod raw_http;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use sandkeeper_tests::{Server, StatusCode, TestEnv, docker};
use serde_json::Value;
use uuid::Uuid;

use generate::{BODY_LIMIT, Case, Generator};
use raw_http::{Answer, Response};

const TOKEN: &str = "fuzz-token-3c9d2e71b84a";
const DEFAULT_CASES: usize = 1500;
/// Valid PUTs for chats without a sandbox that the run may make (each creates a container).
const CREATE_BUDGET: usize = 3;
const MAX_TTL_SECONDS: u64 = 3600;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server must answer to a case.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    status: u16,
    /// The error code, for an error.
    code: Option<&'static str>,
    effect: Effect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    None,
    /// Creates the chat's sandbox (a valid PUT for a chat without one, with Docker up).
    Creates(Uuid),
    /// Would stop a running sandbox: never sent.
    Deletes,
}

impl Expected {
    fn error(status: u16, code: &'static str) -> Self {
        Self { status, code: Some(code), effect: Effect::None }
    }

    fn ok(status: u16) -> Self {
        Self { status, code: None, effect: Effect::None }
    }
}

/// What the oracle knows about the server.
#[derive(Debug)]
struct Model {
    docker_up: bool,
    /// Chat -> its running session id.
    chats: HashMap<Uuid, String>,
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

/// The chat id a path segment stands for, if it is a UUID in any spelling.
fn chat_of(segment: &str) -> Option<Uuid> {
    let decoded = String::from_utf8(percent_decode(segment)).ok()?;
    Uuid::parse_str(decoded.trim()).ok()
}

/// The body of a PUT, judged as the API documents: `Ok(())` when it asks for nothing wrong.
fn judge_put_body(body: Option<&[u8]>) -> Result<(), Expected> {
    let Some(body) = body else {
        return Ok(());
    };
    if body.len() > BODY_LIMIT {
        return Err(Expected::error(413, "body_too_large"));
    }
    if body.trim_ascii().is_empty() {
        return Ok(());
    }
    let invalid = Expected::error(400, "invalid_body");
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid.clone())?;
    let Some(object) = value.as_object() else {
        return Err(invalid);
    };
    if object.keys().any(|key| key != "ttl_seconds") {
        return Err(invalid);
    }
    match object.get("ttl_seconds") {
        None | Some(Value::Null) => Ok(()),
        Some(ttl) => match ttl.as_u64() {
            Some(seconds) if (1..=MAX_TTL_SECONDS).contains(&seconds) => Ok(()),
            _ => Err(Expected::error(400, "invalid_ttl")),
        },
    }
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
    let chat_segment = path
        .strip_prefix("/v1/chats/")
        .and_then(|rest| rest.strip_suffix("/sandbox"))
        // An empty segment matches the route too (and is no UUID).
        .filter(|segment| !segment.contains('/'));
    if let Some(segment) = chat_segment {
        if !matches!(method, "GET" | "HEAD" | "PUT" | "DELETE") {
            return not_allowed;
        }
        let Some(chat) = chat_of(segment) else {
            return Expected::error(400, "invalid_chat_id");
        };
        let known = model.chats.contains_key(&chat);
        return match method {
            "PUT" => match judge_put_body(case.body.as_deref()) {
                Err(rejected) => rejected,
                Ok(()) if known => Expected::ok(200),
                Ok(()) if model.docker_up => {
                    Expected { status: 201, code: None, effect: Effect::Creates(chat) }
                }
                Ok(()) => Expected::error(503, "docker_unavailable"),
            },
            "DELETE" if known => Expected { status: 204, code: None, effect: Effect::Deletes },
            _ if known => Expected::ok(200),
            _ => Expected::error(404, "sandbox_not_found"),
        };
    }
    match path {
        "/v1/sandboxes" if get_like => judge_list_query(case.query.as_deref()),
        "/v1/maintenance/cleanup" | "/v1/maintenance/sweep" if method == "POST" => {
            Expected::ok(200)
        }
        "/metrics" | "/healthz" if get_like => Expected::ok(200),
        "/readyz" if get_like => Expected::ok(if model.docker_up { 200 } else { 503 }),
        "/v1/sandboxes"
        | "/v1/maintenance/cleanup"
        | "/v1/maintenance/sweep"
        | "/metrics"
        | "/healthz"
        | "/readyz" => not_allowed,
        _ => Expected::error(404, "not_found"),
    }
}

/// What is wrong with `response` for `case`, if anything.
fn check(
    case: &Case,
    expected: &Expected,
    response: &Response,
    model: &Model,
) -> Result<(), String> {
    let docker_down_503 = response.status == 503 && !model.docker_up;
    if response.status >= 500 && !docker_down_503 {
        return Err(format!("a {} answer", response.status));
    }
    if response.status != expected.status {
        return Err(format!("status {} where {} was expected", response.status, expected.status));
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
        if expected.code.is_some_and(|expected| expected != code) {
            return Err(format!("code `{code}` where `{:?}` was expected: {body}", expected.code));
        }
        let content_type = response.header("content-type").unwrap_or_default();
        if !content_type.starts_with("application/json") {
            return Err(format!("an error with content-type {content_type:?}"));
        }
    }
    if head || response.status >= 300 {
        return Ok(());
    }
    // Successful answers carry what they promise, and change nothing they should not.
    match case.path.as_str() {
        "/v1/sandboxes" => {
            json()?["sandboxes"].as_array().ok_or("no sandboxes array")?;
        }
        "/v1/maintenance/cleanup" => {
            let report = json()?;
            if report["expired"] != 0 || report["cleaned"].as_array().is_none_or(|c| !c.is_empty())
            {
                return Err(format!("a cleanup removed something: {report}"));
            }
        }
        "/v1/maintenance/sweep" => {
            let report = json()?;
            for field in ["reconciled", "removed", "orphans_removed"] {
                if report[field] != 0 {
                    return Err(format!("a sweep changed something: {report}"));
                }
            }
        }
        "/metrics" => {
            if !String::from_utf8_lossy(&response.body).contains("http_server_requests_total") {
                return Err("no HTTP metrics in /metrics".into());
            }
        }
        "/healthz" => {
            if json()? != serde_json::json!({"status": "ok"}) {
                return Err("healthz is not {\"status\":\"ok\"}".into());
            }
        }
        "/readyz" => {
            if json()?["status"] != "ready" {
                return Err("readyz 200 but not ready".into());
            }
        }
        _ => {
            let session = json()?;
            let chat = case
                .path
                .strip_prefix("/v1/chats/")
                .and_then(|rest| rest.strip_suffix("/sandbox"))
                .and_then(chat_of)
                .ok_or("a 2xx for a chat id that is not one")?;
            if session["chat_id"] != chat.hyphenated().to_string() {
                return Err(format!("the answer is for another chat: {session}"));
            }
            if let Some(known) = model.chats.get(&chat) {
                if session["session_id"] != known.as_str() {
                    return Err(format!("a different session than the chat's: {session}"));
                }
            }
            let result = session["result"].as_str();
            let expected_result = match (case.method.as_str(), response.status) {
                ("PUT", 200) => Some("reused"),
                ("PUT", _) => Some("created"),
                _ => None,
            };
            if result != expected_result {
                return Err(format!("result {result:?} where {expected_result:?}: {session}"));
            }
        }
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
    // the run and no periodic sweep runs after the first.
    let server = env
        .serve_with_env(
            &[
                "--api-token",
                TOKEN,
                "--max-ttl",
                "1h",
                "--ttl",
                "1h",
                "--maintenance-interval",
                "1h",
                "--cleanup-interval",
                "1h",
            ],
            &docker_host,
        )
        .await;
    let address: SocketAddr =
        server.url("").trim_start_matches("http://").parse().expect("a socket address");
    let authority = address.to_string();

    let mut model = Model { docker_up, chats: HashMap::new() };
    let mut generator = Generator::new(StdRng::seed_from_u64(seed), TOKEN);
    if docker_up {
        for _ in 0..2 {
            let chat = Uuid::new_v4();
            let (status, session) = server.put_sandbox(&chat.to_string()).await;
            assert_eq!(status, StatusCode::CREATED, "{session}");
            model.chats.insert(chat, session["session_id"].as_str().unwrap().to_owned());
            generator.add_known_chat(chat);
        }
    }
    let (sessions_before, containers_before) = state(&server, &env).await;

    let mut per_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut per_route: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_method: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut created = Vec::new();
    let mut sent = 0;
    while sent < total {
        let case = generator.case();
        let expected = expect(&case, &model);
        match expected.effect {
            Effect::Deletes => continue,
            Effect::Creates(_) if created.len() >= CREATE_BUDGET => continue,
            _ => {}
        }
        sent += 1;
        let head = case.method == "HEAD";
        let answer =
            raw_http::exchange(address, case.to_bytes(&authority), head, REQUEST_TIMEOUT).await;
        let response = match answer {
            Ok(Answer::Response(response)) => response,
            Ok(Answer::Closed { received }) => {
                failures.push(format!(
                    "closed without an answer ({received} bytes): {}",
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
        *per_route.entry(route_of(&case.path)).or_default() += 1;
        *per_method.entry(case.method.clone()).or_default() += 1;
        if let Err(why) = check(&case, &expected, &response, &model) {
            failures.push(format!(
                "{why}\n    request: {}\n    answer: {} {}",
                case.describe(),
                response.status,
                String::from_utf8_lossy(&response.body).chars().take(400).collect::<String>()
            ));
        } else if let Effect::Creates(chat) = expected.effect {
            let session: Value = serde_json::from_slice(&response.body).unwrap();
            let session_id = session["session_id"].as_str().unwrap().to_owned();
            created
                .push((session_id.clone(), session["container_id"].as_str().unwrap().to_owned()));
            model.chats.insert(chat, session_id);
            generator.add_known_chat(chat);
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
    println!("by route: {per_route:?}");
    println!("by method: {per_method:?}");
    println!("malformed HTTP (status or closed, kind): {malformed:?}");
    println!("sandboxes created by valid PUTs: {}", created.len());

    assert!(
        failures.is_empty(),
        "{} failure(s) with seed {seed} (SANDKEEPER_FUZZ_SEED={seed} replays them):\n{}\n\nserver log tail:\n{}",
        failures.len(),
        failures.join("\n"),
        tail(&server.logs(), 40)
    );
    assert!(sent >= total, "only {sent} of {total} requests were sent");

    // The server is alive and well, and nothing but the few valid PUTs changed anything.
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    let (sessions_after, containers_after) = state(&server, &env).await;
    let mut expected_sessions = sessions_before.clone();
    let mut expected_containers = containers_before.clone();
    for (session_id, container_id) in &created {
        let listed = sessions_after.get(session_id).cloned().unwrap_or(Value::Null);
        expected_sessions.insert(session_id.clone(), listed);
        expected_containers.push(container_id.clone());
    }
    expected_containers.sort();
    assert_eq!(sessions_after, expected_sessions, "rejected requests changed the sessions");
    assert_eq!(containers_after, expected_containers, "rejected requests changed the containers");
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "the server panicked:\n{}", tail(&logs, 60));
    assert!(!logs.contains(TOKEN), "the token was logged");
}

/// The route template a path matches, for the report.
fn route_of(path: &str) -> &'static str {
    let chat = path
        .strip_prefix("/v1/chats/")
        .and_then(|rest| rest.strip_suffix("/sandbox"))
        .is_some_and(|segment| !segment.contains('/'));
    match path {
        _ if chat => "/v1/chats/{chat_id}/sandbox",
        "/v1/sandboxes" => "/v1/sandboxes",
        "/v1/maintenance/cleanup" => "/v1/maintenance/cleanup",
        "/v1/maintenance/sweep" => "/v1/maintenance/sweep",
        "/metrics" => "/metrics",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        _ => "(no such route)",
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn every_route_of_the_openapi_document_is_generated() {
    let document = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let text = std::fs::read_to_string(&document).expect("docs/openapi.yaml");
    let documented: Vec<&str> =
        text.lines().filter_map(|line| line.strip_prefix("  /")?.strip_suffix(':')).collect();
    assert!(documented.len() >= 7, "no paths found in {}", document.display());
    for path in documented {
        let path = format!("/{path}");
        assert!(
            path == generate::CHAT_ROUTE || generate::ROUTES.contains(&path.as_str()),
            "docs/openapi.yaml documents {path}, which the fuzzer does not generate: teach \
             tests/tests/blackbox/fuzz/generate.rs and the oracle in fuzz.rs about it"
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
        format!("%20{chat}%09"),
    ] {
        assert_eq!(chat_of(&spelling), Some(uuid), "{spelling}");
    }
    for bad in ["..", "%2e%2e", "%FF", "%", "abc", &chat[..35], &format!("{chat}0")] {
        assert_eq!(chat_of(bad), None, "{bad}");
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
        judge_put_body(Some(br#"{"ttl_seconds": 60, "ttl_seconds": 0}"#)).unwrap_err().code,
        Some("invalid_ttl")
    );
    assert_eq!(
        judge_put_body(Some(br#"{"ttl_seconds": 1e3}"#)).unwrap_err().code,
        Some("invalid_ttl")
    );
    assert!(judge_put_body(Some(&[b' '; BODY_LIMIT])).is_ok());
    assert_eq!(judge_put_body(Some(&[b' '; BODY_LIMIT + 1])).unwrap_err().status, 413);
}
