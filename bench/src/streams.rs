//! Long-running work through the API:
//!
//! - first output byte of a streamed exec: `POST .../exec` with `Accept: text/event-stream` of
//!   `sh -c 'echo ok; sleep 1'` until its first `stdout` event, against a raw bollard exec of the
//!   same command in the same sandbox until its first output frame, interleaved round by round
//!   (target: median paired ratio <= 1.15);
//! - background processes: 16 processes in one sandbox, each writing 1 MiB/s, each followed by a
//!   client reading its output as events, for 10 s: the server's CPU (user + system time over wall
//!   time) and peak RSS are reported (no goal).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;

use crate::exec::{sandbox_user, start_raw};
use crate::report::{self, Paired, Row, Verdict};
use crate::server::Server;

const ROUNDS: usize = 30;
const GOAL: f64 = 1.15;
const COMMAND: &[&str] = &["sh", "-c", "echo ok; sleep 1"];
const PROCESSES: usize = 16;
const MIB: f64 = 1024.0 * 1024.0;
const WRITERS_RUN: Duration = Duration::from_secs(10);
/// Each process writes 1 MiB a second, in 64 KiB pieces.
const WRITER: &str = "while :; do i=0; while [ $i -lt 16 ]; do head -c 65536 /dev/zero; \
                      i=$((i + 1)); done; sleep 1; done";
/// Followers poll while they read; they and the starts must not be refused for slots. The logs
/// of 16 processes must fit in the sandbox's 64 MiB `/tmp`: 1 MiB per stream.
const EXTRA_ARGS: &[&str] = &["--exec-concurrency", "64", "--process-log-limit", "1m"];

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    crate::server::measure_with(&crate::server::quiet_with(EXTRA_ARGS), async |server, raw| {
        let chat = uuid::Uuid::new_v4().to_string();
        let created =
            server.expect(Method::PUT, &format!("/v1/chats/{chat}/sandbox"), None, 201).await?;
        let container = created["container_id"].as_str().ok_or("no container_id")?.to_owned();
        let user = sandbox_user(raw, &container).await?;
        let argv: Vec<String> = COMMAND.iter().map(|&arg| arg.to_owned()).collect();
        let url = server.url(&format!("/v1/chats/{chat}/sandbox/exec"));
        let body = serde_json::json!({ "command": COMMAND }).to_string();
        let first_byte_api = async || -> Result<Duration, String> {
            let started = Instant::now();
            let response = server
                .client()
                .post(&url)
                .header("accept", "text/event-stream")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| format!("POST exec: {e}"))?;
            let mut response = response;
            let mut seen = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| format!("events: {e}"))? {
                seen.extend_from_slice(&chunk);
                if seen.windows(13).any(|window| window == b"event: stdout") {
                    return Ok(started.elapsed());
                }
            }
            Err(format!("no stdout event in {:?}", String::from_utf8_lossy(&seen)))
        };
        let first_byte_raw = async || -> Result<Duration, String> {
            let started = Instant::now();
            let (_, mut output, _input) =
                start_raw(raw, &container, &user, argv.clone(), false).await?;
            match output.next().await {
                Some(Ok(_)) => Ok(started.elapsed()),
                other => Err(format!("the raw exec's first frame: {other:?}")),
            }
        };
        first_byte_api().await?;
        first_byte_raw().await?;
        let (mut api, mut direct) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            for api_turn in report::sides(round) {
                if api_turn {
                    api.push(first_byte_api().await?);
                } else {
                    direct.push(first_byte_raw().await?);
                }
            }
        }
        let first_byte = Row::paired_at_most(
            "streamed exec, first output byte: API SSE vs raw bollard exec attach",
            2,
            GOAL,
            Paired::of(&format!(" of `{}`", COMMAND.join(" ")), ("API", &api), ("raw", &direct)),
        );
        Ok(vec![first_byte, background(server, &chat).await?])
    })
    .await
}

/// Starts the writers and their followers, and measures the server while they run.
async fn background(server: &Server, chat: &str) -> Result<Row, String> {
    let mut followers = Vec::new();
    let received = std::sync::Arc::new(AtomicUsize::new(0));
    for _ in 0..PROCESSES {
        let body = serde_json::json!({ "command": ["sh", "-c", WRITER] }).to_string();
        let path = format!("/v1/chats/{chat}/sandbox/processes");
        let process = server.expect(Method::POST, &path, Some(&body), 201).await?;
        let id = process["process_id"].as_str().ok_or("no process_id")?.to_owned();
        let url = server.url(&format!("{path}/{id}/logs"));
        // A client of its own: the server's has a timeout for a whole answer.
        let client = reqwest::Client::new();
        let received = std::sync::Arc::clone(&received);
        followers.push(tokio::spawn(async move {
            let response = client.get(url).header("accept", "text/event-stream").send().await;
            if let Ok(mut response) = response {
                while let Ok(Some(chunk)) = response.chunk().await {
                    received.fetch_add(chunk.len(), Ordering::Relaxed);
                }
            }
        }));
    }
    let cpu_before = cpu_ticks(server.pid())?;
    let received_before = received.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(WRITERS_RUN).await;
    let cpu = (cpu_ticks(server.pid())? - cpu_before) as f64 / ticks_per_second();
    let wall = started.elapsed().as_secs_f64();
    let peak_kib = server.memory_kib("VmHWM")?;
    let streamed = (received.load(Ordering::Relaxed) - received_before) as f64 / wall / MIB;
    for follower in &followers {
        follower.abort();
    }
    let share = 100.0 * cpu / wall;
    Ok(Row {
        name: format!(
            "{PROCESSES} background processes writing 1 MiB/s each, each followed as events: \
             server CPU and peak RSS"
        ),
        figure: format!("{share:.0}% CPU, {:.0} MiB", peak_kib as f64 / 1024.0),
        goal: "-".to_owned(),
        met: Verdict::Reported,
        detail: format!(
            "{cpu:.1} s of CPU over {wall:.1} s while the followers received {streamed:.1} MiB/s \
             of events (JSON-escaped NUL bytes: 6 bytes of event per byte of output); \
             --process-log-limit 1m"
        ),
    })
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    let fields: Vec<&str> =
        stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("").split(' ').collect();
    let field = |index: usize| fields.get(index).and_then(|value| value.parse::<u64>().ok());
    // After the name: state is field 0, utime 11 and stime 12.
    match (field(11), field(12)) {
        (Some(user), Some(system)) => Ok(user + system),
        _ => Err(format!("/proc/{pid}/stat has no utime and stime: {stat}")),
    }
}

/// Linux's USER_HZ, which /proc/PID/stat counts in.
fn ticks_per_second() -> f64 {
    100.0
}
