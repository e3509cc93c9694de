//! The HTTP API against its floor, on one real server:
//!
//! - cold create: `PUT /v1/chats/<new chat>/sandbox` (201) against a raw bollard create+start of
//!   the same container (the configuration read back from a container the server made),
//!   interleaved round by round (target: median ratio <= 1.10);
//! - reuse: the throughput of `PUT` for chats whose sandbox lives (200 reused) against the same
//!   server's `/healthz` under the same load: the same client, the same keep-alive connections,
//!   the same duration, run alternately (target: ratio >= 0.5).

use std::time::{Duration, Instant};

use bollard::Docker;
use reqwest::{Method, StatusCode};
use tokio::task::JoinSet;

use crate::docker::{self, force_remove};
use crate::report::{self, Paired, Row, Verdict};
use crate::server::Server;

const ROUNDS: usize = 40;
const CREATE_GOAL: f64 = 1.10;
/// Concurrent keep-alive connections of the load, one chat each for the reuse side.
const CONNECTIONS: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(3);
const WARM_UP_FOR: Duration = Duration::from_secs(1);
/// Runs of each side, alternating which goes first.
const LOAD_PAIRS: usize = 4;
const REUSE_GOAL: f64 = 0.5;

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    // No background pass runs during the measurements (the start-up sweep is awaited), and no
    // sandbox expires before the end.
    crate::server::measure_with(&crate::server::quiet_with(&[]), async |server, raw| {
        let (cold, chats) = cold_create(server, raw).await?;
        let reuse = reuse(server, &chats).await?;
        Ok(vec![cold, reuse])
    })
    .await
}

/// `PUT` for a fresh chat; returns the chat id and its container id.
async fn put_new(server: &Server) -> Result<(String, String), String> {
    let chat = uuid::Uuid::new_v4().to_string();
    let json = server.expect(Method::PUT, &sandbox_path(&chat), None, 201).await?;
    if json["result"] != "created" {
        return Err(format!("PUT for a new chat answered 201 but not `created`: {json}"));
    }
    let container = json["container_id"]
        .as_str()
        .ok_or_else(|| format!("PUT answered no container_id: {json}"))?
        .to_owned();
    Ok((chat, container))
}

fn sandbox_path(chat: &str) -> String {
    format!("/v1/chats/{chat}/sandbox")
}

/// The cold-create rounds. The first [`CONNECTIONS`] chats keep their sandboxes for the reuse
/// load; the others are deleted through the API after their round, outside the measurement.
async fn cold_create(server: &Server, raw: &Docker) -> Result<(Row, Vec<String>), String> {
    // One unmeasured round warms both paths (connections, image layers, SQLite pages), and the
    // server's first container tells the raw side what to ask for.
    let (chat, container) = put_new(server).await?;
    let mut kept = vec![chat];
    let body = docker::body_of(raw, &container).await?;
    let warm = docker::raw_create(raw, &body).await?;
    raw.remove_container(&warm, Some(force_remove())).await.map_err(|e| format!("remove: {e}"))?;

    let (mut api, mut direct) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (mut chat, mut raw_id) = (None, None);
        for api_turn in report::sides(round) {
            let started = Instant::now();
            if api_turn {
                chat = Some(put_new(server).await?.0);
                api.push(started.elapsed());
            } else {
                raw_id = Some(docker::raw_create(raw, &body).await?);
                direct.push(started.elapsed());
            }
        }
        let (Some(chat), Some(raw_id)) = (chat, raw_id) else { unreachable!("both sides ran") };
        raw.remove_container(&raw_id, Some(force_remove()))
            .await
            .map_err(|e| format!("raw remove: {e}"))?;
        if kept.len() < CONNECTIONS {
            kept.push(chat);
        } else {
            server.expect(Method::DELETE, &sandbox_path(&chat), None, 204).await?;
        }
    }

    let row = Row::paired_at_most(
        "cold create: API PUT (201) vs raw bollard create+start (same image, same config)",
        3,
        CREATE_GOAL,
        Paired::of("", ("API", &api), ("raw", &direct)),
    );
    Ok((row, kept))
}

/// Alternating runs of the same load: `PUT` for the kept chats (each answered 200 reused) and
/// `GET /healthz`.
async fn reuse(server: &Server, chats: &[String]) -> Result<Row, String> {
    let reuse_targets: Vec<(Method, String)> = (0..CONNECTIONS)
        .map(|n| (Method::PUT, server.url(&sandbox_path(&chats[n % chats.len()]))))
        .collect();
    let health_targets: Vec<(Method, String)> =
        (0..CONNECTIONS).map(|_| (Method::GET, server.url("/healthz"))).collect();

    load(server, &reuse_targets, WARM_UP_FOR).await?;
    load(server, &health_targets, WARM_UP_FOR).await?;
    let (mut reuse_rates, mut health_rates) = (Vec::new(), Vec::new());
    for pair in 0..LOAD_PAIRS {
        let reuse_first = pair % 2 == 0;
        for reuse_turn in [reuse_first, !reuse_first] {
            if reuse_turn {
                reuse_rates.push(load(server, &reuse_targets, RUN_FOR).await?);
            } else {
                health_rates.push(load(server, &health_targets, RUN_FOR).await?);
            }
        }
    }
    let ratio = report::paired_ratio(&reuse_rates, &health_rates);
    Ok(Row {
        name: "reuse: API PUT (200 reused) vs GET /healthz throughput, same load".to_owned(),
        figure: format!("{ratio:.2}x"),
        goal: format!(">= {REUSE_GOAL:.2}x"),
        met: Verdict::of(ratio >= REUSE_GOAL),
        detail: format!(
            "median of {LOAD_PAIRS} paired ratios of alternating {}s runs, {CONNECTIONS} \
             keep-alive HTTP/1.1 connections (one client, one chat per connection), server \
             RUST_LOG={}, its log going to a file; reuse {}; /healthz {}",
            RUN_FOR.as_secs(),
            crate::server::log_filter(),
            report::spread(&reuse_rates, 0, " req/s"),
            report::spread(&health_rates, 0, " req/s")
        ),
    })
}

/// Requests per second: one task per target, each sending its request back to back on its own
/// keep-alive connection for `run_for`. Any other answer than the expected one fails the run.
async fn load(
    server: &Server,
    targets: &[(Method, String)],
    run_for: Duration,
) -> Result<f64, String> {
    let started = Instant::now();
    let stop_at = started + run_for;
    let mut tasks = JoinSet::new();
    for (method, url) in targets {
        let (method, url) = (method.clone(), url.clone());
        let client = server.client().clone();
        // Reuse answers 200 like /healthz (a 201 would mean a sandbox was created).
        let expected = StatusCode::OK;
        tasks.spawn(async move {
            let mut done = 0_u64;
            while Instant::now() < stop_at {
                let response = client
                    .request(method.clone(), &url)
                    .send()
                    .await
                    .map_err(|e| format!("{method} {url}: no answer: {e}"))?;
                let status = response.status();
                // Read to the end, so that the connection is reused.
                let body = response.bytes().await.map_err(|e| format!("{method} {url}: {e}"))?;
                if status != expected {
                    return Err(format!(
                        "{method} {url} answered {status}, expected {expected}: {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
                done += 1;
            }
            Ok::<u64, String>(done)
        });
    }
    let mut total = 0_u64;
    while let Some(joined) = tasks.join_next().await {
        total += joined.map_err(|e| format!("a load task failed: {e}"))??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
