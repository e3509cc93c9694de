//! The load of one cycle: workers that PUT, DELETE and GET the chats' sandboxes, and one that
//! asks for cleanups and sweeps, until the server is killed under them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{HandedOut, SeededRng, Tally};
use crate::Server;

/// The parallel requests of one cycle.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<WorkerResult>>,
}

#[derive(Default)]
struct WorkerResult {
    tally: Tally,
    /// Transport errors and when they happened: after the kill they are expected.
    failures: Vec<(Instant, String)>,
    handed_out: Vec<HandedOut>,
}

impl Load {
    pub(super) fn start(
        server: &Server,
        chats: &[String],
        per_chat: usize,
        rng: &mut SeededRng,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let base = server.url("");
        let mut workers = Vec::new();
        for chat in chats {
            for _ in 0..per_chat {
                let worker = Worker {
                    client: client.clone(),
                    base: base.clone(),
                    rng: SeededRng::new(rng.next_u64()),
                    stop: Arc::clone(&stop),
                };
                workers.push(tokio::spawn(worker.chat(chat.clone())));
            }
        }
        let maintenance =
            Worker { client, base, rng: SeededRng::new(rng.next_u64()), stop: Arc::clone(&stop) };
        workers.push(tokio::spawn(maintenance.maintenance()));
        Self { stop, workers }
    }

    /// Stops the workers (the server is dead by now) and adds up what they saw.
    pub(super) async fn finish(self, killed_at: Instant) -> (Tally, HashMap<String, HandedOut>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut tally = Tally::default();
        let mut handed_out = HashMap::new();
        for worker in self.workers {
            let result = worker.await.expect("a load worker finished");
            tally.merge(result.tally);
            for (at, failure) in result.failures {
                if at < killed_at {
                    tally.unexpected.push(format!("before the kill: {failure}"));
                } else {
                    tally.cut_by_kill += 1;
                }
            }
            for given in result.handed_out {
                handed_out.insert(given.container_id.clone(), given);
            }
        }
        (tally, handed_out)
    }
}

struct Worker {
    client: reqwest::Client,
    base: String,
    rng: SeededRng,
    stop: Arc<AtomicBool>,
}

impl Worker {
    /// PUTs (65%), DELETEs (10%), commands that write a file into the workspace (10%, so that
    /// the archives saved on removals hold something) and GETs for one chat. A fifth of the PUTs ask for a TTL of 1 to
    /// 3 s (more expiry, replaces and cleanups), a tenth for a minute (sessions that outlive the
    /// cycle, to be reused after the restart or found dead after the kill).
    async fn chat(mut self, chat: String) -> WorkerResult {
        let mut result = WorkerResult::default();
        let path = format!("/v1/chats/{chat}/sandbox");
        let exec_path = format!("{path}/exec");
        while !self.stop.load(Ordering::SeqCst) {
            let (method, body, expected) = self.draw_chat_request();
            let is_put = method == reqwest::Method::PUT;
            let path = if method == reqwest::Method::POST { &exec_path } else { &path };
            if let Some(answer) = self.call(method, path, body, expected, &mut result).await {
                if is_put {
                    if let Some(given) = handout_of(&answer) {
                        result.handed_out.push(given);
                    }
                }
            }
            let pause = self.rng.between(Duration::ZERO, Duration::from_millis(60));
            tokio::time::sleep(pause).await;
        }
        result
    }

    /// The next request of a chat worker: its method, body and the statuses it may answer.
    fn draw_chat_request(&mut self) -> (reqwest::Method, Option<String>, &'static [u16]) {
        let roll = self.rng.below(100);
        if roll < 65 {
            let body = match self.rng.below(10) {
                0 | 1 => Some(format!("{{\"ttl_seconds\": {}}}", 1 + self.rng.below(3))),
                2 => Some("{\"ttl_seconds\": 60}".to_owned()),
                _ => None,
            };
            (reqwest::Method::PUT, body, &[200, 201])
        } else if roll < 75 {
            (reqwest::Method::DELETE, None, &[204, 404])
        } else if roll < 85 {
            let size = 1 + self.rng.below(200_000);
            let script = format!("head -c {size} /dev/zero > work-{}.bin", self.rng.below(4));
            let body = serde_json::json!({ "command": ["sh", "-c", script] }).to_string();
            // No sandbox (404), gone under the command (409), or busy (429) are fine.
            (reqwest::Method::POST, Some(body), &[200, 404, 409, 429])
        } else {
            (reqwest::Method::GET, None, &[200, 404])
        }
    }

    /// Cleanup passes now and then, and an explicit sweep once in a while.
    async fn maintenance(mut self) -> WorkerResult {
        let mut result = WorkerResult::default();
        while !self.stop.load(Ordering::SeqCst) {
            let pause = self.rng.between(Duration::from_millis(50), Duration::from_millis(250));
            tokio::time::sleep(pause).await;
            if self.rng.chance(80) {
                self.call(
                    reqwest::Method::POST,
                    "/v1/maintenance/cleanup",
                    None,
                    &[200],
                    &mut result,
                )
                .await;
            } else {
                self.call(
                    reqwest::Method::POST,
                    "/v1/maintenance/sweep",
                    None,
                    &[200, 409],
                    &mut result,
                )
                .await;
            }
        }
        result
    }

    /// One request; its answer is counted, and returned when it is one of `expected`.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        expected: &[u16],
        result: &mut WorkerResult,
    ) -> Option<Value> {
        let label = format!("{method} {}", route_of(path));
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                result.failures.push((Instant::now(), format!("{label}: {error}")));
                return None;
            }
        };
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => {
                result.failures.push((Instant::now(), format!("{label} {status}: {error}")));
                return None;
            }
        };
        *result.tally.answers.entry(format!("{label} {status}")).or_default() += 1;
        if !expected.contains(&status) {
            result.tally.unexpected.push(format!("{label} {path} answered {status}: {text}"));
            return None;
        }
        Some(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A short name for a path: `PUT chat`, `POST cleanup`.
fn route_of(path: &str) -> &'static str {
    if path.starts_with("/v1/chats/") {
        "chat"
    } else if path.ends_with("/cleanup") {
        "cleanup"
    } else if path.ends_with("/sweep") {
        "sweep"
    } else {
        "other"
    }
}

fn handout_of(answer: &Value) -> Option<HandedOut> {
    let created = DateTime::parse_from_rfc3339(answer["created_at"].as_str()?).ok()?;
    Some(HandedOut {
        container_id: answer["container_id"].as_str()?.to_owned(),
        session_id: answer["session_id"].as_str()?.to_owned(),
        chat_id: answer["chat_id"].as_str()?.to_owned(),
        session_created_at: created.with_timezone(&Utc),
    })
}
