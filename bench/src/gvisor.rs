//! What gVisor costs: the same API calls on one engine, with sandboxes under `runsc` and under
//! the engine's default runtime (`runc`), interleaved round by round:
//!
//! - cold create: `PUT /v1/chats/<new chat>/sandbox` (201);
//! - exec round trip: `POST .../exec` of `sh -c 'echo ok'` in a sandbox of each.
//!
//! The engine is the one `SANDKEEPER_GVISOR_HOST` names (a `DOCKER_HOST` URL of an engine with
//! `runsc` registered); `cargo xtask bench` starts one with `.ci/gvisor.sh` when it is unset.
//! Both servers give their sandboxes the pids limit gVisor needs (`docs/security.md`), so that
//! the runtime is the only difference. The figures are reported, not judged: they are the price
//! of the stronger isolation.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use sandkeeper_adapters_docker::DEFAULT_IMAGE;

use crate::docker;
use crate::exec::json_answer;
use crate::report::{self, Paired, Row, Verdict};
use crate::server::{SWEEP_DONE, Server, quiet_with};

/// The variable that names the engine with `runsc` registered.
const HOST_VARIABLE: &str = "SANDKEEPER_GVISOR_HOST";
const CREATE_ROUNDS: usize = 20;
const EXEC_ROUNDS: usize = 30;
/// Added to the quiet server's arguments: both runtimes get the pids limit gVisor needs.
const EXTRA_ARGS: &[&str] = &["--pids-limit", "1024"];
const EXEC_BODY: &str = r#"{"command": ["sh", "-c", "echo ok"]}"#;

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    let host =
        std::env::var(HOST_VARIABLE).ok().filter(|host| !host.is_empty()).ok_or_else(|| {
            format!(
                "{HOST_VARIABLE} names no engine with runsc registered (`cargo xtask bench` \
                 starts one with .ci/gvisor.sh; by hand: `.ci/gvisor.sh start DIR`)"
            )
        })?;
    let raw = docker::connect_to(&host).await?;
    let runc_args = quiet_with(EXTRA_ARGS);
    let gvisor_args: Vec<&str> = ["--runtime", "runsc"].iter().chain(&runc_args).copied().collect();
    let gvisor = Server::start_on_engine(&host, DEFAULT_IMAGE, &gvisor_args).await?;
    let runc = match Server::start_on_engine(&host, DEFAULT_IMAGE, &runc_args).await {
        Ok(server) => server,
        Err(error) => {
            gvisor.stop(&raw).await?;
            return Err(error);
        }
    };
    let measured = compare(&gvisor, &runc).await;
    let stopped = (gvisor.stop(&raw).await, runc.stop(&raw).await);
    let rows = measured?;
    stopped.0?;
    stopped.1?;
    Ok(rows)
}

async fn compare(gvisor: &Server, runc: &Server) -> Result<Vec<Row>, String> {
    for server in [gvisor, runc] {
        server.wait_for_log(SWEEP_DONE, Duration::from_secs(30)).await?;
    }
    // One unmeasured create on each warms the connections, the image and the store; these
    // sandboxes then serve the exec rounds.
    let (gvisor_chat, runc_chat) = (create(gvisor).await?, create(runc).await?);

    let (mut under_gvisor, mut under_runc) = (Vec::new(), Vec::new());
    for round in 0..CREATE_ROUNDS {
        for gvisor_turn in report::sides(round) {
            let (server, samples) =
                if gvisor_turn { (gvisor, &mut under_gvisor) } else { (runc, &mut under_runc) };
            let started = Instant::now();
            let chat = create(server).await?;
            samples.push(started.elapsed());
            server.expect(Method::DELETE, &sandbox_path(&chat), None, 204).await?;
        }
    }
    let create_row = row(
        "cold create under gVisor: API PUT (201) with --runtime runsc vs the engine's default \
         runtime (runc), same engine",
        &under_gvisor,
        &under_runc,
    );

    let urls = [(gvisor, exec_url(gvisor, &gvisor_chat)), (runc, exec_url(runc, &runc_chat))];
    for (server, url) in &urls {
        exec(server, url).await?;
    }
    let (mut under_gvisor, mut under_runc) = (Vec::new(), Vec::new());
    for round in 0..EXEC_ROUNDS {
        for gvisor_turn in report::sides(round) {
            let ((server, url), samples) = if gvisor_turn {
                (&urls[0], &mut under_gvisor)
            } else {
                (&urls[1], &mut under_runc)
            };
            let started = Instant::now();
            exec(server, url).await?;
            samples.push(started.elapsed());
        }
    }
    let exec_row = row(
        "exec round trip under gVisor: API POST .../exec with --runtime runsc vs runc, same \
         engine",
        &under_gvisor,
        &under_runc,
    );
    Ok(vec![create_row, exec_row])
}

fn row(name: &str, gvisor: &[Duration], runc: &[Duration]) -> Row {
    let paired = Paired::of("", ("runsc", gvisor), ("runc", runc));
    Row {
        name: name.to_owned(),
        figure: format!("{:.2}x", paired.ratio),
        goal: "none (reported)".to_owned(),
        met: Verdict::Reported,
        detail: paired.detail,
    }
}

fn sandbox_path(chat: &str) -> String {
    format!("/v1/chats/{chat}/sandbox")
}

fn exec_url(server: &Server, chat: &str) -> String {
    server.url(&format!("{}/exec", sandbox_path(chat)))
}

/// A sandbox for a new chat (201); its chat id.
async fn create(server: &Server) -> Result<String, String> {
    let chat = uuid::Uuid::new_v4().to_string();
    let created = server.expect(Method::PUT, &sandbox_path(&chat), None, 201).await?;
    if created["result"] != "created" {
        return Err(format!("PUT for a new chat answered 201 but not `created`: {created}"));
    }
    Ok(chat)
}

/// One exec through the API; fails unless it printed `ok`.
async fn exec(server: &Server, url: &str) -> Result<(), String> {
    let request = server.client().post(url).header("content-type", "application/json");
    let (status, json) = json_answer(request.body(EXEC_BODY), "POST exec").await?;
    if status != StatusCode::OK || json["stdout"] != "ok\n" {
        return Err(format!("POST exec answered {status}: {json}"));
    }
    Ok(())
}
