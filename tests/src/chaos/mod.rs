//! The chaos driver behind `cargo xtask chaos` (the full run) and the black-box test `chaos` (a
//! short run): it kills the real `sandkeeper serve` with SIGKILL at random moments while
//! get-or-create, delete, cleanup and sweep requests are in flight, recovers, and checks the
//! crash-consistency promises of sandkeeper against the store and the Docker engine.
//!
//! One cycle, on one SQLite data dir and one instance id for the whole run:
//! 1. start `serve` with a short TTL and cleanup, maintenance and orphan-grace intervals of 1 s;
//! 2. fire parallel PUT / DELETE / GET for a handful of chats (several workers per chat, so that
//!    calls for one chat race), plus `POST /v1/maintenance/cleanup` and `.../sweep`;
//! 3. SIGKILL the server at a moment drawn from the seeded generator;
//! 4. while it is down, plant two faults the sweep must repair: an orphan (a container with this
//!    instance's labels and no row) and a running session whose container was killed;
//! 5. recover, in one of two ways: restart `serve` on the same data dir (its loops slowed down so
//!    that nothing moves while it is checked) and call `POST /v1/maintenance/sweep`, or run
//!    `sandkeeper maintain` with no server at all (every third cycle). Either way the sweep runs
//!    only once every container of the instance is older than the orphan grace, so its outcome is
//!    deterministic: a container created just before the kill has no row and must be reaped, and
//!    nothing is still being created;
//! 6. check, reading the SQLite file read-only and asking Docker by label, the invariants below,
//!    and, after a restart, that the API lists exactly the store's sessions and serves every
//!    chat again.
//!
//! The invariants, named by letter in every message:
//! - (a) no container of the instance without a row;
//! - (b) no `running` row whose container is not running, and no running container behind a
//!   row that is not `running`;
//! - (c) never two running sessions, nor two running containers, for one chat, and never one
//!   container for two chats (every server keeps a warm pool of 2, so claims race with the
//!   kill; a pool slot's container has a row too, and a claimed one's chat is its session's);
//! - (d) a foreign container (no labels) and a container of another instance, made before the
//!   run, still run and were never restarted;
//! - (e) no container a client was handed (a 200/201 reply to PUT) was reaped as an orphan
//!   while its session was alive;
//! - (f) before the kill, every request got one of the answers its route promises (no 5xx, no
//!   dropped connection);
//! - (g) every workspace archive stored (saved when a sandbox was deleted, cleaned up or
//!   replaced) is whole: the last complete archive or a later one, never a part or a mix.
//!
//! Every cycle prints what it checked with counts. A violation ends the run with a message that
//! names the seed, the cycle, the invariant and the container or row, and the servers' logs are
//! written to a file for the post-mortem. The generator drives the kill moments and every
//! worker's sequence of requests; the interleaving with the server is up to the machine, so a
//! seed replays the same plan, not the same schedule.
//!
//! The modules: `plan` (what a run does and the seeded generator), `cycle` (one cycle, step by
//! step), `load` (the parallel requests), `faults` (what is planted, and the foreign containers
//! that must stay untouched), `recovery` (the sweeps through the API or `sandkeeper maintain`),
//! `observe` (the store's rows and the engine's containers, read directly), `invariants` (the
//! checks, one function per rule) and `report` (what a cycle and the run print and return);
//! this module runs the cycles and holds the records the others share.

mod cycle;
mod faults;
mod invariants;
mod load;
mod observe;
mod plan;
mod recovery;
mod report;

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::{TestEnv, sandbox_image};

pub use plan::{ChaosConfig, SeededRng, fresh_seed, seed_from_env};
pub use report::{ChaosSummary, CycleReport, Recovery, Tally, Timings};

use faults::Foreign;

const MANAGED_LABEL: &str = "io.sandkeeper.managed";
const SESSION_LABEL: &str = "io.sandkeeper.session";
const CHAT_LABEL: &str = "io.sandkeeper.chat";

// The records the modules share. Their fields are private to this module and so readable in
// every module of the chaos driver, and nowhere else.

/// The status of a pool slot's [`Row`]: this, then the slot's state (`ready`, `claimed`).
const POOL_STATUS_PREFIX: &str = "pool:";

/// A session row, or a warm pool slot that holds a container, as the store holds it.
#[derive(Debug, Clone)]
struct Row {
    /// The session's id, or the pool slot's.
    session_id: String,
    chat_id: String,
    container_id: String,
    status: String,
}

/// A container as Docker describes it.
#[derive(Debug, Clone)]
struct DockerContainer {
    id: String,
    /// `created`, `running`, `exited`, ...
    state: String,
    created: DateTime<Utc>,
    managed: String,
    session: String,
    chat: String,
}

/// A container a client was given in a 200/201 answer to PUT.
#[derive(Debug, Clone)]
struct HandedOut {
    container_id: String,
    session_id: String,
    chat_id: String,
    session_created_at: DateTime<Utc>,
}

/// The sweeps of one recovery, added up.
#[derive(Debug, Default)]
struct SweepTotals {
    sweeps: usize,
    time: Duration,
    orphans_reaped: u64,
    reconciled: u64,
    removed: u64,
    errors: u64,
}

/// Everything a cycle needs from the run.
struct Cycle<'a> {
    config: &'a ChaosConfig,
    env: &'a TestEnv,
    image: &'a str,
    chats: &'a [String],
    foreign: &'a Foreign,
}

/// Runs the cycles. Needs a Docker engine with the sandbox image (see [`crate::docker`]).
/// Returns what was checked, or the first violation, described.
pub async fn run(config: &ChaosConfig) -> Result<ChaosSummary, String> {
    assert!(config.orphan_grace >= Duration::from_secs(1), "sandkeeper's orphan grace is >= 1 s");
    let started = Instant::now();
    let env = TestEnv::new();
    let image = sandbox_image();
    report::print_start(config, &env);
    let foreign = Foreign::create(&image, env.instance_id())?;
    println!("chaos: foreign containers made before the run: {}", foreign.describe());

    let mut rng = SeededRng::new(config.seed);
    let chats: Vec<String> = (0..config.chats).map(|_| plan::uuid_from(&mut rng)).collect();
    let mut cycles = Vec::new();
    for cycle in 1..=config.cycles {
        let recovery = Recovery::of_cycle(cycle);
        let cycle_rng = SeededRng::new(rng.next_u64());
        let context = Cycle { config, env: &env, image: &image, chats: &chats, foreign: &foreign };
        let report = context.run(cycle, recovery, cycle_rng).await.map_err(|violation| {
            format!("chaos seed {}, cycle {cycle}/{}: {violation}", config.seed, config.cycles)
        })?;
        report::print_cycle(config, &report);
        cycles.push(report);
    }
    foreign.check().map_err(|violation| format!("chaos seed {}: {violation}", config.seed))?;

    let leftovers = env.containers(true).len();
    let summary = ChaosSummary {
        seed: config.seed,
        instance_id: env.instance_id().to_owned(),
        cycles,
        duration: started.elapsed(),
    };
    report::print_summary(&summary, leftovers, foreign.len());
    drop(foreign);
    drop(env);
    Ok(summary)
}

/// Runs `docker <args>` and returns its standard output, or why it failed.
fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run docker: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`docker {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
