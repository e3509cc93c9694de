//! The Docker adapter against the floor it stands on: the same create+start and the same removal
//! made directly with bollard, interleaved in one run.
//!
//! The raw side uses exactly what the adapter sent: the container configuration and host
//! configuration are read back (inspect) from a container the adapter created, so both sides ask
//! the engine for the same hardened container. The adapter's remove is `stop`, which checks the
//! labels before force-removing; the raw side force-removes directly.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use chrono::{TimeDelta, Utc};
use sandkeeper_adapters_docker::{DEFAULT_IMAGE, DockerConfig, DockerRuntime};
use sandkeeper_domain::{ChatId, SessionId};
use sandkeeper_ports::{ContainerSpec, SandboxRuntime};

use crate::docker::{self, force_remove, raw_create, remove_instance};
use crate::report::{Paired, Row};

const SAMPLES: usize = 40;
const CREATE_GOAL: f64 = 1.05;
/// The adapter's stop makes one more call (an inspect for the label check) than a raw remove;
/// the same bound as the cleanup target applies.
const REMOVE_GOAL: f64 = 1.20;

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    let instance = docker::instance_id();
    let runtime = DockerRuntime::new(DockerConfig::new(DEFAULT_IMAGE, instance.clone()))
        .map_err(|error| error.to_string())?;
    runtime.ping().await.map_err(|error| error.to_string())?;
    let raw = docker::connect().await?;
    let measured = measure(&runtime, &raw).await;
    let leftover = remove_instance(&raw, &instance).await;
    let (create, remove) = measured?;
    leftover?;
    Ok(vec![
        ratio_row(
            "Docker create+start: adapter vs raw bollard (same image, same config)",
            &create,
            CREATE_GOAL,
        ),
        ratio_row(
            "Docker remove: adapter stop (label check + force remove) vs raw force remove",
            &remove,
            REMOVE_GOAL,
        ),
    ])
}

/// Samples of both sides of one comparison.
struct Pairs {
    adapter: Vec<Duration>,
    raw: Vec<Duration>,
}

async fn measure(runtime: &DockerRuntime, raw: &Docker) -> Result<(Pairs, Pairs), String> {
    let body = adapter_body(runtime, raw).await?;
    let mut create = Pairs { adapter: Vec::new(), raw: Vec::new() };
    let mut remove = Pairs { adapter: Vec::new(), raw: Vec::new() };
    // One unmeasured round warms the engine's caches (image layers, cgroup setup) for both sides.
    for round in 0..=SAMPLES {
        // Alternate which side goes first, so drift on the machine falls on both equally.
        let adapter_first = round % 2 == 0;
        let mut create_pair = [Duration::ZERO; 2];
        let mut ids = (None, None);
        for side in sides(adapter_first) {
            let started = Instant::now();
            if side == Side::Adapter {
                ids.0 = Some(runtime.create(&spec()).await.map_err(|e| e.to_string())?);
            } else {
                ids.1 = Some(raw_create(raw, &body).await?);
            }
            create_pair[side as usize] = started.elapsed();
        }
        let (Some(adapter_id), Some(raw_id)) = ids else { unreachable!("both sides ran") };
        let mut remove_pair = [Duration::ZERO; 2];
        for side in sides(adapter_first) {
            let started = Instant::now();
            if side == Side::Adapter {
                runtime.stop(&adapter_id).await.map_err(|e| e.to_string())?;
            } else {
                raw.remove_container(&raw_id, Some(force_remove()))
                    .await
                    .map_err(|e| format!("raw remove: {e}"))?;
            }
            remove_pair[side as usize] = started.elapsed();
        }
        if round > 0 {
            create.adapter.push(create_pair[Side::Adapter as usize]);
            create.raw.push(create_pair[Side::Raw as usize]);
            remove.adapter.push(remove_pair[Side::Adapter as usize]);
            remove.raw.push(remove_pair[Side::Raw as usize]);
        }
    }
    Ok((create, remove))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Adapter = 0,
    Raw = 1,
}

fn sides(adapter_first: bool) -> [Side; 2] {
    if adapter_first { [Side::Adapter, Side::Raw] } else { [Side::Raw, Side::Adapter] }
}

fn spec() -> ContainerSpec {
    let now = Utc::now();
    ContainerSpec {
        session_id: SessionId::new_v4(),
        chat_id: ChatId::from_uuid(uuid::Uuid::new_v4()),
        created_at: now,
        expires_at: now + TimeDelta::minutes(5),
    }
}

/// What the adapter sends, read back from a container it created (then removed).
async fn adapter_body(
    runtime: &DockerRuntime,
    raw: &Docker,
) -> Result<ContainerCreateBody, String> {
    let id = runtime.create(&spec()).await.map_err(|e| e.to_string())?;
    let body = docker::body_of(raw, id.as_str()).await;
    runtime.stop(&id).await.map_err(|e| e.to_string())?;
    body
}

/// The figure is the median of the per-round ratios ([`Paired`]): each round's two samples were
/// taken back to back, so a slow phase of the machine weighs on both sides of the same ratio.
fn ratio_row(name: &str, pairs: &Pairs, goal: f64) -> Row {
    Row::paired_at_most(
        name,
        2,
        goal,
        Paired::of("", ("adapter", &pairs.adapter), ("raw", &pairs.raw)),
    )
}
