//! Cleanup of 500 expired sandboxes through the API against force-removing 500 containers of the
//! same configuration directly, with the same parallelism (target: ratio <= 1.2).
//!
//! The API side: 500 sandboxes created through `PUT` with `{"ttl_seconds": 1}`, on a server whose
//! own loops stay idle (long intervals), then one timed `POST /v1/maintenance/cleanup` that must
//! report all 500 cleaned. The floor: 500 raw containers with the configuration read back from
//! one of the server's, force-removed [`DEFAULT_CLEANUP_CONCURRENCY`] at a time, which is the
//! parallelism the cleanup pass has. Each side runs with only its own 500 containers on the
//! engine; the rounds alternate which side goes first.

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
const ROUNDS: usize = 2;
const GOAL: f64 = 1.2;
/// Parallel creates while setting up (not measured).
const SETUP_CONCURRENCY: usize = 8;
/// No sandbox bound: the benchmark creates [`SANDBOXES`], beyond the default --max-sandboxes.
const SERVER_ARGS: &[&str] =
    &["--cleanup-interval", "1h", "--maintenance-interval", "1h", "--max-sandboxes", "0"];

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    Ok(vec![crate::server::measure_with(SERVER_ARGS, measure).await?])
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
                let (took, first) = api_side(server, raw).await?;
                sides.api.push(took.as_secs_f64());
                body.get_or_insert(first);
            } else {
                let body = match &body {
                    Some(body) => body.clone(),
                    None => sample_body(server, raw).await?,
                };
                let (took, each) = raw_side(raw, &body).await?;
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

/// Creates [`SANDBOXES`] one-second sandboxes through the API, lets them expire, and times one
/// cleanup pass. Returns the time and the configuration of the server's containers.
async fn api_side(
    server: &Server,
    raw: &Docker,
) -> Result<(Duration, ContainerCreateBody), String> {
    let created: Vec<Result<String, String>> = futures::stream::iter(0..SANDBOXES)
        .map(|_| async move {
            let chat = uuid::Uuid::new_v4().to_string();
            let path = format!("/v1/chats/{chat}/sandbox");
            let json =
                server.expect(Method::PUT, &path, Some(r#"{"ttl_seconds": 1}"#), 201).await?;
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
    // The last sandbox expires one second after it was created.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let started = Instant::now();
    let report = server.expect(Method::POST, "/v1/maintenance/cleanup", None, 200).await?;
    let took = started.elapsed();

    let cleaned = report["cleaned"].as_array().map_or(0, Vec::len);
    let errors = report["errors"].as_array().map_or(0, Vec::len);
    if report["expired"] != SANDBOXES || cleaned != SANDBOXES || errors != 0 {
        return Err(format!(
            "the cleanup pass did not clean all {SANDBOXES} expired sandboxes: expired {}, \
             cleaned {cleaned}, skipped {}, errors {errors} (first error: {})",
            report["expired"], report["skipped"], report["errors"][0]
        ));
    }
    let left = docker::containers_of(raw, server.instance()).await?;
    if !left.is_empty() {
        return Err(format!(
            "the cleanup pass reported {SANDBOXES} sandboxes cleaned but {} containers remain",
            left.len()
        ));
    }
    Ok((took, body))
}

/// Creates [`SANDBOXES`] containers directly, then times force-removing them with the cleanup
/// pass's parallelism. Returns the total and each removal's latency.
async fn raw_side(
    raw: &Docker,
    body: &ContainerCreateBody,
) -> Result<(Duration, Vec<Duration>), String> {
    let created: Vec<Result<String, String>> = futures::stream::iter(0..SANDBOXES)
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
