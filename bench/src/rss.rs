//! The server's memory with 10k running sessions in its store (target: <= 64 MiB).
//!
//! A fresh SQLite store is filled with 10k unexpired running sessions before `sandkeeper serve`
//! starts on it. They all point at one real running container of the bench's instance, so the
//! start-up sweep (which inspects the containers of running sessions) finds them alive and the
//! store stays at 10k running sessions. The server then answers the calls a deployment sees:
//! lists (the default page and all 10k at once), reuses, a cleanup pass, a sweep, metrics,
//! readiness. The figure is the peak resident set (`VmHWM`), read from `/proc`.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use reqwest::Method;
use sandkeeper_adapters_docker::{DEFAULT_IMAGE, DockerConfig, DockerRuntime};
use sandkeeper_adapters_sql::{SqlStore, StoreOptions};
use sandkeeper_domain::{ChatId, SandboxSession, SandboxStatus, SessionId};
use sandkeeper_ports::{ContainerSpec, SandboxRuntime};

use crate::docker;
use crate::report::{Row, Verdict};
use crate::server::Server;

const SESSIONS: usize = 10_000;
const GOAL_MIB: f64 = 64.0;
const REUSES: usize = 500;
const REUSE_CONCURRENCY: usize = 16;

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    let raw = docker::connect().await?;
    let instance = docker::instance_id();
    let data_dir = tempfile::Builder::new()
        .prefix("sandkeeper-bench-")
        .tempdir()
        .map_err(|e| format!("a temporary data dir: {e}"))?;
    let chats = match fill(&data_dir, &instance).await {
        Ok(chats) => chats,
        Err(error) => {
            docker::remove_instance(&raw, &instance).await?;
            return Err(error);
        }
    };
    let args = crate::server::without_passes(&["--ttl", "1h"]);
    let server = match Server::start_in(data_dir, instance.clone(), &args).await {
        Ok(server) => server,
        Err(error) => {
            docker::remove_instance(&raw, &instance).await?;
            return Err(error);
        }
    };
    let measured = measure(&server, &chats).await;
    let removed = server.stop(&raw).await;
    let row = measured?;
    removed?;
    Ok(vec![row])
}

/// Fills `<data dir>/sandkeeper.db` (the server's default store) with [`SESSIONS`] running
/// sessions on one real container; returns their chat ids.
async fn fill(data_dir: &tempfile::TempDir, instance: &str) -> Result<Vec<ChatId>, String> {
    let now = Utc::now();
    let chats: Vec<ChatId> =
        (0..SESSIONS).map(|_| ChatId::from_uuid(uuid::Uuid::new_v4())).collect();
    let first = SessionId::new_v4();
    let runtime = DockerRuntime::new(DockerConfig::new(DEFAULT_IMAGE, instance))
        .map_err(|e| e.to_string())?;
    let expires_at = now + TimeDelta::hours(1);
    let container = runtime
        .create(&ContainerSpec {
            session_id: first,
            chat_id: chats[0],
            created_at: now,
            expires_at,
        })
        .await
        .map_err(|e| e.to_string())?;
    let sessions: Vec<SandboxSession> = chats
        .iter()
        .enumerate()
        .map(|(n, &chat_id)| {
            let age = TimeDelta::milliseconds(i64::try_from(SESSIONS - n).unwrap_or(0));
            SandboxSession {
                session_id: if n == 0 { first } else { SessionId::new_v4() },
                chat_id,
                container_id: container.clone(),
                status: SandboxStatus::Running,
                created_at: now - age,
                expires_at: expires_at - age,
                engine: sandkeeper_domain::EngineName::default(),
            }
        })
        .collect();
    let url = format!("sqlite://{}", data_dir.path().join("sandkeeper.db").display());
    let store =
        SqlStore::connect(&url, StoreOptions::default()).await.map_err(|e| e.to_string())?;
    let filled = async {
        store.migrate().await.map_err(|e| e.to_string())?;
        store.save_many(&sessions).await.map_err(|e| e.to_string())
    }
    .await;
    store.close().await;
    filled?;
    Ok(chats)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn measure(server: &Server, chats: &[ChatId]) -> Result<Row, String> {
    server.wait_for_log(crate::server::SWEEP_DONE, Duration::from_secs(60)).await?;
    // VmRSS after each step, to show what memory each kind of call leaves behind.
    let mut steps = vec![("idle after the start-up sweep", server.memory_kib("VmRSS")?)];

    let page = server.expect(Method::GET, "/v1/sandboxes", None, 200).await?;
    let page_len = page["sandboxes"].as_array().map_or(0, Vec::len);
    steps.push(("GET /v1/sandboxes (default page)", server.memory_kib("VmRSS")?));

    let all =
        server.expect(Method::GET, "/v1/sandboxes?status=running&limit=10000", None, 200).await?;
    let running = all["sandboxes"].as_array().map_or(0, Vec::len);
    if running != SESSIONS {
        return Err(format!(
            "the store should hold {SESSIONS} running sessions, GET /v1/sandboxes lists \
             {running} (the default page had {page_len})"
        ));
    }
    steps.push(("all 10k listed", server.memory_kib("VmRSS")?));

    let reused: Vec<Result<(), String>> = futures::stream::iter(chats.iter().take(REUSES))
        .map(|chat| async move {
            let path = format!("/v1/chats/{chat}/sandbox");
            let json = server.expect(Method::PUT, &path, None, 200).await?;
            if json["result"] == "reused" {
                Ok(())
            } else {
                Err(format!("PUT {path} answered 200 but not `reused`: {json}"))
            }
        })
        .buffer_unordered(REUSE_CONCURRENCY)
        .collect()
        .await;
    reused.into_iter().collect::<Result<Vec<()>, _>>()?;
    steps.push(("500 reuses, 16 at a time", server.memory_kib("VmRSS")?));

    let cleanup = server.expect(Method::POST, "/v1/maintenance/cleanup", None, 200).await?;
    if cleanup["expired"] != 0 {
        return Err(format!("nothing should have expired: {cleanup}"));
    }
    server.expect(Method::POST, "/v1/maintenance/sweep", None, 200).await?;
    let metrics = server
        .client()
        .get(server.url("/metrics"))
        .send()
        .await
        .map_err(|e| format!("GET /metrics: no answer: {e}"))?;
    if !metrics.status().is_success() {
        return Err(format!("GET /metrics answered {}", metrics.status()));
    }
    metrics.text().await.map_err(|e| format!("GET /metrics: reading the body: {e}"))?;
    server.expect(Method::GET, "/readyz", None, 200).await?;
    steps.push(("a cleanup pass, a sweep, /metrics, /readyz", server.memory_kib("VmRSS")?));

    server.expect(Method::GET, "/v1/sandboxes?limit=10000", None, 200).await?;
    steps.push(("all 10k listed again", server.memory_kib("VmRSS")?));

    let peak = server.memory_kib("VmHWM")?;
    let figure = mib(peak);
    let steps: Vec<String> =
        steps.iter().map(|(step, kib)| format!("{step} {:.1}", mib(*kib))).collect();
    Ok(Row {
        name: format!(
            "server RSS with {}k running sessions in the store (SQLite)",
            SESSIONS / 1000
        ),
        figure: format!("{figure:.1} MiB"),
        goal: format!("<= {GOAL_MIB:.0} MiB"),
        met: Verdict::of(figure <= GOAL_MIB),
        detail: format!(
            "peak resident set (VmHWM) of `sandkeeper serve`; VmRSS in MiB after each step: {}",
            steps.join(", ")
        ),
    })
}
