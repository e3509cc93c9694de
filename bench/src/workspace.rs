//! Durable workspaces against the work they stand for, on a 10 MiB workspace, interleaved round
//! by round in one run:
//!
//! - restore: `PUT /v1/chats/<chat>/sandbox` of a chat whose archive is stored (a create that
//!   restores it before answering) against a cold create of a chat without one plus a raw exec
//!   that feeds the same archive to `tar x` in `/workspace` (target: median ratio <= 1.2);
//! - archive: `GET /v1/chats/<chat>/workspace/archive` of a running sandbox (tar made inside
//!   it, streamed out through sandkeeper) against a raw exec of `tar c` whose output is read
//!   whole (target: median time ratio <= 1.2).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::exec::{Sandbox, blob};
use crate::report::{self, Paired, Row};
use crate::server::Server;

const ROUNDS: usize = 16;
const GOAL: f64 = 1.2;
const SIZE: usize = 10 * 1024 * 1024;
/// No checkpoint runs during the measurement (nor, with the quiet server, any background pass).
const EXTRA_ARGS: &[&str] = &["--workspace-checkpoint-interval", "0"];

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    crate::server::measure_with(&crate::server::quiet_with(EXTRA_ARGS), async |server, raw| {
        // The restored chat: a 10 MiB file uploaded, then saved by a DELETE.
        let restored = uuid::Uuid::new_v4().to_string();
        let sandbox = Sandbox::create(server, raw, restored.clone()).await?;
        let data = blob(SIZE);
        let url = server.url(&format!("/v1/chats/{restored}/sandbox/files/data/blob.bin"));
        let put = server.client().put(url).body(data.clone()).send().await;
        let status = put.map_err(|e| format!("PUT file: {e}"))?.status();
        if status != StatusCode::OK {
            return Err(format!("PUT file answered {status}"));
        }
        let archive = archive_through_api(server, &restored).await?;
        let archive_rows = archive_rounds(server, &sandbox, &restored).await?;
        delete(server, &restored).await?;
        let restore_rows = restore_rounds(server, raw, &restored, &archive).await?;
        Ok(vec![restore_rows, archive_rows])
    })
    .await
}

async fn delete(server: &Server, chat: &str) -> Result<(), String> {
    server.expect(Method::DELETE, &format!("/v1/chats/{chat}/sandbox"), None, 204).await.map(drop)
}

/// The chat's workspace as a tar, through the API.
async fn archive_through_api(server: &Server, chat: &str) -> Result<Vec<u8>, String> {
    let url = server.url(&format!("/v1/chats/{chat}/workspace/archive"));
    let response =
        server.client().get(url).send().await.map_err(|e| format!("GET archive: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("GET archive: the body: {e}"))?;
    if status != StatusCode::OK || body.len() < SIZE {
        return Err(format!("GET archive answered {status} with {} bytes", body.len()));
    }
    Ok(body.to_vec())
}

async fn archive_rounds(server: &Server, sandbox: &Sandbox<'_>, chat: &str) -> Result<Row, String> {
    let argv = ["tar", "-cf", "-", "-C", "/workspace", "."].map(str::to_owned).to_vec();
    let (mut api, mut direct) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for api_turn in report::sides(round) {
            let started = Instant::now();
            if api_turn {
                archive_through_api(server, chat).await?;
                api.push(started.elapsed());
            } else {
                let tar = sandbox.raw_exec(argv.clone(), None).await?;
                direct.push(started.elapsed());
                if tar.len() < SIZE {
                    return Err(format!("the raw tar c wrote {} bytes", tar.len()));
                }
            }
        }
    }
    Ok(ratio_row(
        "workspace archive of 10 MiB: API GET .../workspace/archive vs a raw exec of tar c read \
         whole",
        &api,
        &direct,
    ))
}

async fn restore_rounds(
    server: &Server,
    raw: &bollard::Docker,
    restored: &str,
    archive: &[u8],
) -> Result<Row, String> {
    let argv = ["tar", "-xf", "-", "-C", "/workspace"].map(str::to_owned).to_vec();
    let (mut api, mut direct) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for api_turn in report::sides(round) {
            if api_turn {
                let started = Instant::now();
                let path = format!("/v1/chats/{restored}/sandbox");
                let created = server.expect(Method::PUT, &path, None, 201).await?;
                api.push(started.elapsed());
                if created["workspace"]["restored"] != true {
                    return Err(format!("the create restored nothing: {created}"));
                }
                delete(server, restored).await?;
            } else {
                let cold = uuid::Uuid::new_v4().to_string();
                let started = Instant::now();
                let sandbox = Sandbox::create(server, raw, cold.clone()).await?;
                sandbox.raw_exec(argv.clone(), Some(archive)).await?;
                direct.push(started.elapsed());
                // The raw tar x went around sandkeeper, which therefore archives nothing at
                // the removal; a stored archive, if any, is removed too.
                delete(server, &cold).await?;
                let path = format!("/v1/chats/{cold}/workspace");
                let (status, body) = server.call(Method::DELETE, &path, None).await?;
                if !matches!(status.as_u16(), 204 | 404) {
                    return Err(format!("DELETE {path} answered {status}: {body}"));
                }
            }
        }
    }
    Ok(ratio_row(
        "create restoring a 10 MiB workspace: API PUT .../sandbox vs a cold create plus a raw \
         exec of tar x of the same archive",
        &api,
        &direct,
    ))
}

fn ratio_row(name: &str, api: &[Duration], direct: &[Duration]) -> Row {
    Row::paired_at_most(name, 2, GOAL, Paired::of("", ("API", api), ("raw", direct)))
}
