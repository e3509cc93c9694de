//! Cleanup of 500 expired sandboxes through the API against force-removing 500 containers of the
//! same configuration directly, with the same parallelism (target: ratio <= 1.2).
//!
//! The API side: 500 sandboxes created through `PUT` with `{"ttl_seconds": 1}`, on a server whose
//! own loops stay idle (long intervals), then one timed `POST /v1/maintenance/cleanup` that must
//! report all 500 cleaned. The floor: 500 raw containers with the configuration read back from
//! one of the server's, force-removed [`DEFAULT_CLEANUP_CONCURRENCY`] at a time, which is the
//! parallelism the cleanup pass has. Each side runs with only its own 500 containers on the
//! engine; the rounds alternate which side goes first.
//!
//! Those sandboxes were never used, so their removal archives nothing. A second, reported row
//! measures the same with 100 sandboxes that each ran a command first: each one's workspace is
//! archived before its container is removed (`docs/workspaces.md`).

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use futures::StreamExt;
use reqwest::Method;
use sandkeeper_usecase::{DEFAULT_CLEANUP_BATCH_LIMIT, DEFAULT_CLEANUP_CONCURRENCY};

use crate::docker::{self, force_remove};
use crate::report::{self, Row};
use crate::server::Server;

const SANDBOXES: usize = 500;
/// The sandboxes of the reported row, each used by one command before it expires.
const USED_SANDBOXES: usize = 100;
const ROUNDS: usize = 2;
const GOAL: f64 = 1.2;
/// Parallel creates while setting up (not measured).
const SETUP_CONCURRENCY: usize = 8;

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    // No sandbox bound: the benchmark creates [`SANDBOXES`], beyond the default --max-sandboxes.
    let args = crate::server::without_passes(&["--max-sandboxes", "0"]);
    crate::server::measure_with(&args, async |server, raw| {
        Ok(vec![measure(server, raw).await?, measure_used(server, raw).await?])
    })
    .await
}

/// One round's timings of both sides.
#[derive(Debug, Default)]
struct Sides {
    api: Vec<f64>,
    raw: Vec<f64>,
    /// Each raw removal's own latency, over every round.
    raw_each: Vec<Duration>,
}

async fn measure(server: &Server, raw: &Docker) -> Result<Row, String> {
    let mut body = None;
    let mut sides = Sides::default();
    for round in 0..ROUNDS {
        for api_turn in report::sides(round) {
            if api_turn {
                let (took, first) = api_side(server, raw, SANDBOXES, false).await?;
                sides.api.push(took.as_secs_f64());
                body.get_or_insert(first);
            } else {
                let body = match &body {
                    Some(body) => body.clone(),
                    None => sample_body(server, raw).await?,
                };
                let (took, each) = raw_side(raw, &body, SANDBOXES).await?;
                sides.raw.push(took.as_secs_f64());
                sides.raw_each.extend(each);
            }
        }
    }
    let ratio = report::paired_ratio(&sides.api, &sides.raw);
    let per_second =
        |seconds: &[f64]| -> Vec<f64> { seconds.iter().map(|s| SANDBOXES as f64 / s).collect() };
    Ok(Row::ratio_at_most(
        format!(
            "cleanup of {SANDBOXES} expired sandboxes (API) vs force-removing {SANDBOXES} \
             containers directly"
        ),
        ratio,
        2,
        GOAL,
        format!(
            "median of {ROUNDS} paired ratios (rounds alternate which side goes first, each side \
             alone on the engine); both sides {DEFAULT_CLEANUP_CONCURRENCY} at a time (the \
             cleanup pass's default concurrency; its batch limit is \
             {DEFAULT_CLEANUP_BATCH_LIMIT}); POST /v1/maintenance/cleanup {} ({}); raw force \
             removes {} ({}), each remove {}",
            report::spread(&sides.api, 2, " s"),
            report::spread(&per_second(&sides.api), 0, "/s"),
            report::spread(&sides.raw, 2, " s"),
            report::spread(&per_second(&sides.raw), 0, "/s"),
            crate::report::Summary::of(&sides.raw_each),
        ),
    ))
}

/// One round of each side with [`USED_SANDBOXES`] sandboxes that each ran a command.
async fn measure_used(server: &Server, raw: &Docker) -> Result<Row, String> {
    let (api, body) = api_side(server, raw, USED_SANDBOXES, true).await?;
    let (direct, _) = raw_side(raw, &body, USED_SANDBOXES).await?;
    let ratio = api.as_secs_f64() / direct.as_secs_f64();
    Ok(Row {
        name: format!(
            "cleanup of {USED_SANDBOXES} expired sandboxes that each ran a command (workspaces \
             archived) vs force-removing {USED_SANDBOXES} containers directly"
        ),
        figure: format!("{ratio:.2}x"),
        goal: "none (reported)".to_owned(),
        met: report::Verdict::Reported,
        detail: format!(
            "one round, both sides {DEFAULT_CLEANUP_CONCURRENCY} at a time; POST \
             /v1/maintenance/cleanup {:.2} s; raw force removes {:.2} s",
            api.as_secs_f64(),
            direct.as_secs_f64()
        ),
    })
}

/// The configuration the server sends, from one sandbox it creates (and then deletes).
async fn sample_body(server: &Server, raw: &Docker) -> Result<ContainerCreateBody, String> {
    let chat = uuid::Uuid::new_v4().to_string();
    let path = format!("/v1/chats/{chat}/sandbox");
    let json = server.expect(Method::PUT, &path, None, 201).await?;
    let container = json["container_id"].as_str().ok_or("PUT answered no container_id")?;
    let body = docker::body_of(raw, container).await;
    server.expect(Method::DELETE, &path, None, 204).await?;
    body
}

/// Creates `count` sandboxes through the API (each `used` by a command writing a file, when
/// set) that expire a moment later, lets them expire, and times one cleanup pass. Returns the
/// time and the configuration of the server's containers.
async fn api_side(
    server: &Server,
    raw: &Docker,
    count: usize,
    used: bool,
) -> Result<(Duration, ContainerCreateBody), String> {
    let ttl = if used { r#"{"ttl_seconds": 5}"# } else { r#"{"ttl_seconds": 1}"# };
    let created: Vec<Result<String, String>> = futures::stream::iter(0..count)
        .map(|_| async move {
            let chat = uuid::Uuid::new_v4().to_string();
            let path = format!("/v1/chats/{chat}/sandbox");
            let json = server.expect(Method::PUT, &path, Some(ttl), 201).await?;
            if used {
                let command = r#"{"command": ["sh", "-c", "echo work > notes.txt"]}"#;
                server.expect(Method::POST, &format!("{path}/exec"), Some(command), 200).await?;
            }
            json["container_id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("PUT answered no container_id: {json}"))
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let containers: Vec<String> = created.into_iter().collect::<Result<_, _>>()?;
    let body = docker::body_of(raw, &containers[0]).await?;
    // The last sandbox expires a moment after it was created (after its command, if used).
    tokio::time::sleep(Duration::from_millis(if used { 5_500 } else { 1_500 })).await;

    let started = Instant::now();
    let report = server.expect(Method::POST, "/v1/maintenance/cleanup", None, 200).await?;
    let took = started.elapsed();

    let cleaned = report["cleaned"].as_array().map_or(0, Vec::len);
    let errors = report["errors"].as_array().map_or(0, Vec::len);
    if report["expired"] != count || cleaned != count || errors != 0 {
        return Err(format!(
            "the cleanup pass did not clean all {count} expired sandboxes: expired {}, \
             cleaned {cleaned}, skipped {}, errors {errors} (first error: {})",
            report["expired"], report["skipped"], report["errors"][0]
        ));
    }
    let left = docker::containers_of(raw, server.instance()).await?;
    if !left.is_empty() {
        return Err(format!(
            "the cleanup pass reported {count} sandboxes cleaned but {} containers remain",
            left.len()
        ));
    }
    Ok((took, body))
}

/// Creates `count` containers directly, then times force-removing them with the cleanup pass's
/// parallelism. Returns the total and each removal's latency.
async fn raw_side(
    raw: &Docker,
    body: &ContainerCreateBody,
    count: usize,
) -> Result<(Duration, Vec<Duration>), String> {
    let created: Vec<Result<String, String>> = futures::stream::iter(0..count)
        .map(|_| docker::raw_create(raw, body))
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let ids: Vec<String> = created.into_iter().collect::<Result<_, _>>()?;

    let started = Instant::now();
    let removed: Vec<Result<Duration, String>> = futures::stream::iter(ids)
        .map(|id| async move {
            let started = Instant::now();
            raw.remove_container(&id, Some(force_remove()))
                .await
                .map(|()| started.elapsed())
                .map_err(|e| format!("raw remove of {id}: {e}"))
        })
        .buffer_unordered(DEFAULT_CLEANUP_CONCURRENCY)
        .collect()
        .await;
    let took = started.elapsed();
    let each = removed.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((took, each))
}
