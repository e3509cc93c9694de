//! Placement over several engines against one engine: two servers on the same Docker engine, one
//! with the one engine `default`, the other with two engines (`--engine a=SOCKET --engine
//! b=SOCKET`, both the same socket, so that only placement differs: the running count per
//! engine read from the store and the choice of an engine). Cold creates through the API,
//! interleaved round by round (target: median ratio <= 1.05).

use std::time::Instant;

use reqwest::Method;
use sandkeeper_adapters_docker::{DEFAULT_IMAGE, DockerConfig, DockerRuntime};

use crate::report::{self, Paired, Row};
use crate::server::{SWEEP_DONE, Server, quiet_with};

const ROUNDS: usize = 40;
const GOAL: f64 = 1.05;

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    let socket = DockerRuntime::new(DockerConfig::new(DEFAULT_IMAGE, "bench"))
        .map_err(|error| error.to_string())?
        .endpoint()
        .to_owned();
    let (a, b) = (format!("a={socket}"), format!("b={socket}"));
    // No background pass runs during the measurements, and no sandbox expires before the end.
    let two_args = quiet_with(&["--engine", &a, "--engine", &b]);
    crate::server::measure_with(&quiet_with(&[]), async |one, raw| {
        let two = Server::start_on(DEFAULT_IMAGE, &two_args).await?;
        let measured = match two.wait_for_log(SWEEP_DONE, std::time::Duration::from_secs(30)).await
        {
            Ok(()) => compare(one, &two).await,
            Err(error) => Err(error),
        };
        let removed = two.stop(raw).await;
        let row = measured?;
        removed?;
        Ok(vec![row])
    })
    .await
}

/// `PUT` for a fresh chat (201); the chat id and the engine it was placed on.
async fn create(server: &Server) -> Result<(String, String), String> {
    let chat = uuid::Uuid::new_v4().to_string();
    let json = server.expect(Method::PUT, &format!("/v1/chats/{chat}/sandbox"), None, 201).await?;
    let engine = json["engine"].as_str().ok_or_else(|| format!("no engine in {json}"))?;
    Ok((chat, engine.to_owned()))
}

async fn compare(one: &Server, two: &Server) -> Result<Row, String> {
    // One unmeasured round warms both servers.
    for server in [one, two] {
        let (chat, _) = create(server).await?;
        server.expect(Method::DELETE, &format!("/v1/chats/{chat}/sandbox"), None, 204).await?;
    }
    let (mut single, mut placed) = (Vec::new(), Vec::new());
    let mut engines_used = std::collections::BTreeSet::new();
    for round in 0..ROUNDS {
        let mut made = Vec::new();
        for two_turn in report::sides(round) {
            let server = if two_turn { two } else { one };
            let started = Instant::now();
            let (chat, engine) = create(server).await?;
            let took = started.elapsed();
            if two_turn {
                placed.push(took);
                engines_used.insert(engine);
            } else {
                single.push(took);
            }
            made.push((server, chat));
        }
        // Half the sandboxes stay, so that the running counts placement reads grow.
        if round % 2 == 1 {
            for (server, chat) in made {
                server
                    .expect(Method::DELETE, &format!("/v1/chats/{chat}/sandbox"), None, 204)
                    .await?;
            }
        }
    }
    if engines_used.len() != 2 {
        return Err(format!("placement used the engines {engines_used:?}, not both"));
    }
    Ok(Row::paired_at_most(
        "cold create: two engines (placement) vs one engine, same Docker socket",
        3,
        GOAL,
        Paired::of("", ("two engines", &placed), ("one engine", &single)),
    ))
}
