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
//!
//! The modules: `generate` (the requests), `raw_http` (sending them byte for byte), `rules` (how
//! the API reads a request), `oracle` (the answer it documents, and the effect), `inside` (what
//! happens inside a sandbox: exec bodies, paths, the workspace model), `verdict` (what is wrong
//! with an answer), `state` (what the server and its sandboxes hold).

mod generate;
mod inside;
mod oracle;
mod raw_http;
mod rules;
mod state;
mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sandkeeper_tests::{Server, StatusCode, TestEnv, docker};
use serde_json::Value;
use uuid::Uuid;

use generate::{Case, FILE_LIMIT, Generator, KEEPALIVE_ROUTE, MAX_EXEC_TIMEOUT_MS, STDIN_LIMIT};
use inside::Workspace;
use oracle::{Effect, Expected, Live, Model, expect, reads_body};
use raw_http::{Answer, Response};
use rules::route_of;
use state::{check_workspaces, listing, state};
use verdict::{Window, check};

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

/// What the run sent and saw, for its report and its verdict.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    per_status: BTreeMap<u16, usize>,
    per_route: BTreeMap<(&'static str, u16), usize>,
    per_method: BTreeMap<String, usize>,
    per_code: BTreeMap<String, usize>,
    reached: Reached,
    /// The containers the valid PUTs created.
    created: Vec<String>,
    /// Answers cut short after their head (a body left unread, the connection closed).
    cut_short: usize,
    /// Answers to malformed HTTP, by status (or `closed`) and kind.
    malformed: BTreeMap<String, usize>,
    failures: Vec<String>,
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
    let server = start(&env, docker_up).await;
    let address: SocketAddr =
        server.url("").trim_start_matches("http://").parse().expect("a socket address");
    let authority = address.to_string();

    let mut model = Model { docker_up, chats: Default::default() };
    let mut generator = Generator::new(StdRng::seed_from_u64(seed), TOKEN);
    let tmp = plant_sandboxes(&server, &mut model, &mut generator).await;
    let before = state(&server, &env).await;
    for live in model.chats.values_mut() {
        live.session = before.0[live.session["session_id"].as_str().unwrap()].clone();
    }

    let mut tally = Tally::default();
    while tally.sent < total && tally.failures.len() < 20 {
        send_case(address, &authority, &mut generator, &mut model, &mut tally).await;
    }
    send_malformed(address, &authority, &mut generator, &mut tally).await;
    print_tally(test, seed, &tally);

    if docker_up && tally.failures.is_empty() {
        tally.failures.extend(check_workspaces(&server, &model, &tmp).await);
    }
    assert!(
        tally.failures.is_empty(),
        "{} failure(s) with seed {seed} (SANDKEEPER_FUZZ_SEED={seed} replays them):\n{}\n\nserver log tail:\n{}",
        tally.failures.len(),
        tally.failures.join("\n"),
        tail(&server.logs(), 40)
    );
    assert!(tally.sent >= total, "only {} of {total} requests were sent", tally.sent);
    assert_nothing_else_changed(&server, &env, before, &model, &tally.created).await;
    assert_metric_labels_bounded(&server).await;
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "the server panicked:\n{}", tail(&logs, 60));
    assert!(!logs.contains(TOKEN), "the token was logged");
}

/// The fuzzed server. The loops must not change anything while the state is compared: nothing
/// expires during the run and no periodic sweep runs after the first. The limits of the routes
/// inside a sandbox are small, so that requests on both sides of them are cheap. Without
/// Docker, it is given an engine that is not there.
async fn start(env: &TestEnv, docker_up: bool) -> Server {
    let mut docker_host = Vec::new();
    if !docker_up {
        docker_host.push(("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
    }
    let ttl = format!("{MAX_TTL_SECONDS}s");
    let lifetime = format!("{MAX_LIFETIME_SECONDS}s");
    let stdin_limit = format!("{}k", STDIN_LIMIT / 1024);
    let file_limit = format!("{}k", FILE_LIMIT / 1024);
    let max_timeout = format!("{MAX_EXEC_TIMEOUT_MS}ms");
    env.serve_with_env(
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
    .await
}

/// With Docker, two sandboxes with symbolic links planted in their workspaces, known to the
/// model and the generator. Returns what `/tmp` holds in a fresh sandbox.
async fn plant_sandboxes(
    server: &Server,
    model: &mut Model,
    generator: &mut Generator,
) -> Vec<String> {
    let mut tmp = Vec::new();
    if !model.docker_up {
        return tmp;
    }
    for _ in 0..2 {
        let chat = Uuid::new_v4();
        let session = server.created(&chat.to_string()).await;
        server.shell_stdout(&chat.to_string(), inside::PLANT_SCRIPT).await;
        tmp = listing(server, chat, "/tmp").await;
        model.chats.insert(chat, Live { session, workspace: Workspace::planted() });
        generator.add_known_chat(chat);
    }
    tmp
}

/// Whether the run sends a case the oracle expects `expected` for: never a DELETE of a live
/// sandbox, a few creates that outlive the run, and a bounded number of calls into sandboxes.
fn within_budget(expected: &Expected, tally: &Tally) -> bool {
    let reached = &tally.reached;
    let sandbox_calls = reached.commands + reached.uploads + reached.downloads;
    match expected.effect {
        Effect::Deletes => false,
        Effect::Creates(_, ttl) => {
            tally.created.len() < CREATE_BUDGET && ttl >= MIN_CREATED_TTL_SECONDS
        }
        ref effect => !(effect.reaches_sandbox() && sandbox_calls >= SANDBOX_BUDGET),
    }
}

/// Generates a case within the budgets, sends it, checks its answer and applies its effect.
async fn send_case(
    address: SocketAddr,
    authority: &str,
    generator: &mut Generator,
    model: &mut Model,
    tally: &mut Tally,
) {
    let case = generator.case();
    let expected = expect(&case, model);
    if !within_budget(&expected, tally) {
        return;
    }
    tally.sent += 1;
    tally.reached.count(&expected.effect);
    let sent = Utc::now();
    let answer = raw_http::exchange(
        address,
        case.to_bytes(authority),
        case.method == "HEAD",
        REQUEST_TIMEOUT,
    )
    .await;
    let window = Window { sent, received: Utc::now() };
    let response = match answer {
        Ok(Answer::Response(response)) => response,
        Ok(Answer::Closed { received, status }) => {
            // A route that does not read the body answers, and closes the connection as
            // asked with the body unread: the kernel then resets it, dropping what of a
            // long answer was not yet delivered. Only the head can be checked.
            if status == Some(expected.status) && !reads_body(&case) {
                tally.cut_short += 1;
                *tally.per_status.entry(expected.status).or_default() += 1;
                return;
            }
            tally.failures.push(format!(
                "closed without a complete answer ({received} bytes, status {status:?}): {}",
                case.describe()
            ));
            return;
        }
        Err(error) => {
            tally.failures.push(format!("{error}: {}", case.describe()));
            return;
        }
    };
    tally.count(&case, &response);
    if let Err(why) = check(&case, &expected, &response, model, window) {
        tally.failures.push(format!(
            "{why}\n    request: {}\n    expected: {} {:?} (or {:?})\n    answer: {} {}",
            case.describe(),
            expected.status,
            expected.code,
            expected.or,
            response.status,
            String::from_utf8_lossy(&response.body).chars().take(400).collect::<String>()
        ));
    } else {
        apply(expected.effect, &response, model, generator, &mut tally.created);
    }
}

impl Reached {
    /// Counts a case sent with this effect.
    fn count(&mut self, effect: &Effect) {
        match effect {
            Effect::Exec(_, run) => {
                self.commands += 1;
                self.commands_predicted += usize::from(run.is_some());
            }
            Effect::Upload { .. } => self.uploads += 1,
            Effect::Download(..) => self.downloads += 1,
            Effect::KeepAlive(..) => self.keep_alives += 1,
            _ => {}
        }
    }
}

impl Tally {
    /// Counts a complete answer by status, route, method and error code or result.
    fn count(&mut self, case: &Case, response: &Response) {
        *self.per_status.entry(response.status).or_default() += 1;
        *self.per_route.entry((route_of(&case.path), response.status)).or_default() += 1;
        *self.per_method.entry(case.method.clone()).or_default() += 1;
        if let Ok(answer) = serde_json::from_slice::<Value>(&response.body) {
            let code = answer["error"]["code"].as_str().or(answer["result"].as_str());
            if let Some(code) = code {
                *self.per_code.entry(format!("{} {code}", response.status)).or_default() += 1;
            }
            self.reached.keep_alives_extended += usize::from(
                route_of(&case.path) == KEEPALIVE_ROUTE && answer["result"] == "extended",
            );
        }
    }
}

/// Requests that break HTTP itself: answered by the HTTP layer or dropped, never fatal.
async fn send_malformed(
    address: SocketAddr,
    authority: &str,
    generator: &mut Generator,
    tally: &mut Tally,
) {
    for _ in 0..60 {
        let (name, bytes) = generate::malformed(&mut generator.rng, TOKEN, authority);
        match raw_http::exchange(address, bytes, false, REQUEST_TIMEOUT).await {
            Ok(Answer::Response(response)) if (400..500).contains(&response.status) => {
                *tally.malformed.entry(format!("{} {name}", response.status)).or_insert(0) += 1;
            }
            Ok(Answer::Closed { .. }) => {
                *tally.malformed.entry(format!("closed {name}")).or_insert(0) += 1;
            }
            Ok(Answer::Response(response)) => tally.failures.push(format!(
                "malformed request `{name}`: {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )),
            Err(error) => tally.failures.push(format!("malformed request `{name}`: {error}")),
        }
    }
}

fn print_tally(test: &str, seed: u64, tally: &Tally) {
    println!("{test}: seed {seed}: {} generated requests, answers by status:", tally.sent);
    for (status, count) in &tally.per_status {
        println!("  {status}: {count}");
    }
    println!("by route and status:");
    for ((route, status), count) in &tally.per_route {
        println!("  {route} {status}: {count}");
    }
    println!("by method: {:?}", tally.per_method);
    println!("by error code or result: {:?}", tally.per_code);
    println!("malformed HTTP (status or closed, kind): {:?}", tally.malformed);
    println!("sandboxes created by valid PUTs: {}", tally.created.len());
    println!("reached a sandbox: {:?}", tally.reached);
    println!(
        "answers cut short after their head (a body left unread, the connection closed): {}",
        tally.cut_short
    );
}

/// The server is alive and well, and nothing but the few valid PUTs and the keep-alives
/// changed anything: every session is as listed before (with the expiry its last keep-alive
/// answered), plus the created ones as their PUT answered.
async fn assert_nothing_else_changed(
    server: &Server,
    env: &TestEnv,
    (sessions_before, containers_before): (BTreeMap<String, Value>, Vec<String>),
    model: &Model,
    created: &[String],
) {
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    let (sessions_after, containers_after) = state(server, env).await;
    let mut expected_sessions = sessions_before;
    for live in model.chats.values() {
        let session_id = live.session["session_id"].as_str().unwrap().to_owned();
        expected_sessions.insert(session_id, live.session.clone());
    }
    let mut expected_containers = containers_before;
    expected_containers.extend(created.iter().cloned());
    expected_containers.sort();
    assert_eq!(sessions_after, expected_sessions, "rejected requests changed the sessions");
    assert_eq!(containers_after, expected_containers, "rejected requests changed the containers");
}

/// Methods are any token to HTTP; the metrics keep a bounded set of labels all the same.
async fn assert_metric_labels_bounded(server: &Server) {
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
            session.as_object_mut().unwrap().remove("workspace");
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
             teach tests/tests/blackbox/fuzz/generate.rs and the oracle (fuzz/oracle.rs) about it"
        );
    }
}
