//! The warm pool (`--pool-size`) against the floor it removes from a new chat's wait:
//!
//! - claim: `PUT /v1/chats/<new chat>/sandbox` (201) answered from a full pool, against a raw
//!   bollard create+start of the same container, interleaved round by round (the pool is
//!   refilled between rounds, outside the measurement). Targets: median ratio <= 0.05 and a
//!   median PUT of at most 10 ms;
//! - burst: as many new chats at once as the pool holds, every one answered by a container that
//!   was in the pool; then the time until the pool is full again (reported).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bollard::Docker;
use reqwest::Method;

use crate::docker::{self, force_remove};
use crate::report::{self, Paired, Row, Summary, Verdict};
use crate::server::{Server, quiet_with};

const POOL: usize = 8;
const ROUNDS: usize = 24;
const RATIO_GOAL: f64 = 0.05;
const MEDIAN_GOAL: Duration = Duration::from_millis(10);
const FILL_TIMEOUT: Duration = Duration::from_secs(60);
const POOL_SIZE: &str = "8";

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    crate::server::measure_with(&quiet_with(&["--pool-size", POOL_SIZE]), async |server, raw| {
        full(server).await?;
        let (ratio, median) = claims(server, raw).await?;
        let burst = burst(server, raw).await?;
        Ok(vec![ratio, median, burst])
    })
    .await
}

/// Waits until the pool holds [`POOL`] ready containers; how long that took.
async fn full(server: &Server) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let pool = server.expect(Method::GET, "/v1/pool", None, 200).await?;
        if pool["ready"] == POOL as u64 && pool["starting"] == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > FILL_TIMEOUT {
            return Err(format!("the pool was not full after {FILL_TIMEOUT:?}: {pool}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `PUT` for a fresh chat, which must be `created`; its container id.
async fn put_new(server: &Server) -> Result<String, String> {
    let chat = uuid::Uuid::new_v4();
    let json = server.expect(Method::PUT, &format!("/v1/chats/{chat}/sandbox"), None, 201).await?;
    json["container_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("PUT answered no container_id: {json}"))
}

/// The containers of the server's instance that no chat has: the ready pooled ones.
async fn pooled(
    raw: &Docker,
    server: &Server,
    taken: &HashSet<String>,
) -> Result<HashSet<String>, String> {
    let all = docker::containers_of(raw, server.instance()).await?;
    Ok(all.into_iter().filter(|id| !taken.contains(id)).collect())
}

async fn claims(server: &Server, raw: &Docker) -> Result<(Row, Row), String> {
    // One unmeasured round warms both paths; its container tells the raw side what to ask for.
    let first = put_new(server).await?;
    let body = docker::body_of(raw, &first).await?;
    let warm = docker::raw_create(raw, &body).await?;
    raw.remove_container(&warm, Some(force_remove())).await.map_err(|e| format!("remove: {e}"))?;
    let mut taken = HashSet::from([first]);

    let (mut api, mut direct) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        full(server).await?;
        let ready = pooled(raw, server, &taken).await?;
        for api_turn in report::sides(round) {
            let started = Instant::now();
            if api_turn {
                let container = put_new(server).await?;
                api.push(started.elapsed());
                if !ready.contains(&container) {
                    return Err(format!("round {round}: {container} was not in the full pool"));
                }
                taken.insert(container);
            } else {
                let id = docker::raw_create(raw, &body).await?;
                direct.push(started.elapsed());
                raw.remove_container(&id, Some(force_remove()))
                    .await
                    .map_err(|e| format!("raw remove: {e}"))?;
            }
        }
    }
    let full_pool = format!(", pool of {POOL} full before each round");
    let ratio_row = Row::paired_at_most(
        "warm pool: API PUT (201, from the pool) vs raw bollard create+start",
        3,
        RATIO_GOAL,
        Paired::of(&full_pool, ("API", &api), ("raw", &direct)),
    );
    let median = Summary::of(&api).median;
    let median_row = Row {
        name: "warm pool: API PUT (201, from the pool), median".to_owned(),
        figure: format!("{:.2} ms", median.as_secs_f64() * 1e3),
        goal: format!("<= {} ms", MEDIAN_GOAL.as_millis()),
        met: Verdict::of(median <= MEDIAN_GOAL),
        detail: format!("{ROUNDS} PUTs for new chats, one at a time; {}", Summary::of(&api)),
    };
    Ok((ratio_row, median_row))
}

/// [`POOL`] new chats at once from a full pool: all must be answered by pooled containers.
async fn burst(server: &Server, raw: &Docker) -> Result<Row, String> {
    full(server).await?;
    let sessions: HashSet<String> = {
        let list = server.expect(Method::GET, "/v1/sandboxes", None, 200).await?;
        list["sandboxes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["container_id"].as_str().map(str::to_owned))
            .collect()
    };
    let ready = pooled(raw, server, &sessions).await?;
    let started = Instant::now();
    let answers = futures::future::join_all((0..POOL).map(|_| put_new(server))).await;
    let answered = started.elapsed();
    let mut from_pool = 0;
    let mut seen = HashSet::new();
    for answer in answers {
        let container = answer?;
        from_pool += usize::from(ready.contains(&container));
        if !seen.insert(container.clone()) {
            return Err(format!("{container} was handed to two chats"));
        }
    }
    let refill = full(server).await?;
    Ok(Row {
        name: format!("warm pool: a burst of {POOL} new chats at once, answered from the pool"),
        figure: format!("{from_pool}/{POOL}"),
        goal: format!("{POOL}/{POOL}"),
        met: Verdict::of(from_pool == POOL),
        detail: format!(
            "all answered in {:.1} ms; the pool was full again {:.2} s after the last answer \
             (reported; the refill starts 2 containers at a time per replica)",
            answered.as_secs_f64() * 1e3,
            refill.as_secs_f64()
        ),
    })
}
