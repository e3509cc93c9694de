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
//! - (c) never two running sessions, nor two running containers, for one chat;
//! - (d) a foreign container (no labels) and a container of another instance, made before the
//!   run, still run and were never restarted;
//! - (e) no container a client was handed (a 200/201 reply to PUT) was reaped as an orphan
//!   while its session was alive;
//! - (f) before the kill, every request got one of the answers its route promises (no 5xx, no
//!   dropped connection).
//!
//! Every cycle prints what it checked with counts. A violation ends the run with a message that
//! names the seed, the cycle, the invariant and the container or row, and the servers' logs are
//! written to a file for the post-mortem. The generator drives the kill moments and every
//! worker's sequence of requests; the interleaving with the server is up to the machine, so a
//! seed replays the same plan, not the same schedule.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{INSTANCE_LABEL, Server, TestEnv, metric, sandbox_image};

const MANAGED_LABEL: &str = "io.sandkeeper.managed";
const SESSION_LABEL: &str = "io.sandkeeper.session";
const CHAT_LABEL: &str = "io.sandkeeper.chat";

/// How many sweeps a recovery may need when the first ones are cut short by the sweep's time
/// budget (250 ms of new work per pass) before the run gives up.
const MAX_RECOVERY_SWEEPS: usize = 5;
/// How long a restarted server may take to finish its start-up maintenance pass.
const STARTUP_PASS_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to the orphan grace before the recovery sweep, for the engine's and our clock reads.
const GRACE_MARGIN: Duration = Duration::from_millis(300);

/// What one run does.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub cycles: usize,
    /// The chats the workers ask for; the same ones in every cycle, so that sessions outlive
    /// the kills and the next cycle reuses or replaces them.
    pub chats: usize,
    /// Workers per chat: more than one makes calls for one chat race.
    pub workers_per_chat: usize,
    pub seed: u64,
    /// `--ttl` of the servers (requests also ask for 1 to 3 s).
    pub ttl: Duration,
    /// `--orphan-grace` of the servers and of `sandkeeper maintain` (at least 1 s).
    pub orphan_grace: Duration,
    /// The latest moment of the kill after the load started.
    pub longest_load: Duration,
}

impl ChaosConfig {
    /// The full run of `cargo xtask chaos`.
    pub fn full(seed: u64) -> Self {
        Self {
            cycles: 12,
            chats: 6,
            workers_per_chat: 2,
            seed,
            ttl: Duration::from_secs(2),
            orphan_grace: Duration::from_secs(1),
            longest_load: Duration::from_secs(3),
        }
    }

    /// The short run of the black-box suite: a few cycles, both recovery paths.
    pub fn short(seed: u64) -> Self {
        Self { cycles: 3, chats: 4, longest_load: Duration::from_millis(2500), ..Self::full(seed) }
    }
}

/// The seed of `SANDKEEPER_CHAOS_SEED`, else a fresh one.
pub fn seed_from_env() -> u64 {
    std::env::var("SANDKEEPER_CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.trim().parse().ok())
        .unwrap_or_else(fresh_seed)
}

/// A seed from the clock and the process id; printed by every run, so any run can be replayed.
pub fn fresh_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    SeededRng::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}

/// A small deterministic generator (SplitMix64): the same seed gives the same plan on every
/// machine and every version of every crate.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration in `low..=high`, to the millisecond.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.below(span + 1))
    }
}

/// How a cycle brought the store and the engine back into agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// A restarted `serve` and `POST /v1/maintenance/sweep`.
    Restart,
    /// `sandkeeper maintain`, with no server running.
    Maintain,
}

impl Recovery {
    fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart + POST sweep",
            Self::Maintain => "sandkeeper maintain",
        }
    }
}

/// What one cycle did and checked.
#[derive(Debug, Clone)]
pub struct CycleReport {
    pub cycle: usize,
    pub recovery: Recovery,
    pub killed_after: Duration,
    pub requests: Tally,
    /// Sweeps the recovery needed (more than one only when the first were cut short by their
    /// time budget).
    pub sweeps: usize,
    /// How long the recovery sweeps took, lease waits included.
    pub sweep_time: Duration,
    pub orphans_reaped: u64,
    pub crashed_reconciled: u64,
    pub terminal_removed: u64,
    pub rows_running: usize,
    pub rows_crashed: usize,
    pub containers: usize,
    pub containers_running: usize,
    pub planted_dead: bool,
    pub handed_out: usize,
    /// Orphan removals (while under load or in the recovery) of a container whose session
    /// sandkeeper had just ended itself: the sweep listed it before a delete or cleanup removed
    /// it, found no row after, and "removed" what was already gone. Harmless, but counted in
    /// `orphans_removed`.
    pub removals_of_ended: usize,
    pub timings: Timings,
    pub duration: Duration,
}

/// How long each step of a cycle took.
#[derive(Debug, Clone)]
pub struct Timings {
    pub steps: Vec<(&'static str, Duration)>,
    last: Instant,
}

impl Default for Timings {
    fn default() -> Self {
        Self { steps: Vec::new(), last: Instant::now() }
    }
}

impl Timings {
    fn lap(&mut self, step: &'static str) {
        let now = Instant::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(step, took)| format!("{step} {:.2}", took.as_secs_f64()))
            .collect();
        write!(f, "{} s", steps.join(", "))
    }
}

/// What the whole run did.
#[derive(Debug, Clone)]
pub struct ChaosSummary {
    pub seed: u64,
    pub instance_id: String,
    pub cycles: Vec<CycleReport>,
    pub duration: Duration,
}

/// The answers the load got, by request and status.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// `"PUT 201"` -> how many.
    pub answers: BTreeMap<String, usize>,
    /// Requests that got no answer because the server was killed under them.
    pub cut_by_kill: usize,
    /// Answers outside what the route promises (a 5xx, say), and transport errors before the
    /// kill.
    pub unexpected: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (key, count) in other.answers {
            *self.answers.entry(key).or_default() += count;
        }
        self.cut_by_kill += other.cut_by_kill;
        self.unexpected.extend(other.unexpected);
    }

    pub fn total(&self) -> usize {
        self.answers.values().sum::<usize>() + self.cut_by_kill
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let answers: Vec<String> =
            self.answers.iter().map(|(key, count)| format!("{key}×{count}")).collect();
        write!(
            f,
            "{} requests: {}, cut by the kill {}, unexpected {}",
            self.total(),
            answers.join(" "),
            self.cut_by_kill,
            self.unexpected.len()
        )
    }
}

/// Runs the cycles. Needs a Docker engine with the sandbox image (see [`crate::docker`]).
/// Returns what was checked, or the first violation, described.
pub async fn run(config: &ChaosConfig) -> Result<ChaosSummary, String> {
    assert!(config.orphan_grace >= Duration::from_secs(1), "sandkeeper's orphan grace is >= 1 s");
    let started = Instant::now();
    let env = TestEnv::new();
    let image = sandbox_image();
    println!(
        "chaos: seed {} (replay with --seed {0} or SANDKEEPER_CHAOS_SEED={0}), {} cycles, {} chats \
         × {} workers, ttl {:?}, orphan grace {:?}, instance {}, data dir {}",
        config.seed,
        config.cycles,
        config.chats,
        config.workers_per_chat,
        config.ttl,
        config.orphan_grace,
        env.instance_id(),
        env.data_dir().display()
    );
    let foreign = Foreign::create(&image, env.instance_id())?;
    println!("chaos: foreign containers made before the run: {}", foreign.describe());

    let mut rng = SeededRng::new(config.seed);
    let chats: Vec<String> = (0..config.chats).map(|_| uuid_from(&mut rng)).collect();
    let mut cycles = Vec::new();
    for cycle in 1..=config.cycles {
        let recovery = if cycle % 3 == 0 { Recovery::Maintain } else { Recovery::Restart };
        let cycle_rng = SeededRng::new(rng.next_u64());
        let context = Cycle { config, env: &env, image: &image, chats: &chats, foreign: &foreign };
        let report = context.run(cycle, recovery, cycle_rng).await.map_err(|violation| {
            format!("chaos seed {}, cycle {cycle}/{}: {violation}", config.seed, config.cycles)
        })?;
        print_cycle(config, &report);
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
    let requests: usize = summary.cycles.iter().map(|c| c.requests.total()).sum();
    let reaped: u64 = summary.cycles.iter().map(|c| c.orphans_reaped).sum();
    let reconciled: u64 = summary.cycles.iter().map(|c| c.crashed_reconciled).sum();
    println!(
        "chaos: all invariants held over {} cycles in {:.1} s (seed {}): {requests} requests, \
         {reaped} orphans reaped, {reconciled} crashed sessions reconciled; removing the \
         {leftovers} containers of instance {} and the {} foreign ones",
        summary.cycles.len(),
        summary.duration.as_secs_f64(),
        config.seed,
        env.instance_id(),
        foreign.containers.len()
    );
    drop(foreign);
    drop(env);
    Ok(summary)
}

fn print_cycle(config: &ChaosConfig, report: &CycleReport) {
    println!(
        "cycle {}/{} [{}]: killed {:.2} s into the load; {}\n  \
         recovery: {} sweep(s) in {:.2} s: orphans reaped {} (1 planted), crashed reconciled {} \
         ({} planted), terminal removed {}\n  \
         checked: rows {} (running {}, crashed {}), containers {} (running {}), handed-out \
         containers {} (none reaped while alive; orphan removals of already ended sessions {}), \
         foreign 2/2 untouched: ok\n  \
         took {:.1} s: {}",
        report.cycle,
        config.cycles,
        report.recovery.as_str(),
        report.killed_after.as_secs_f64(),
        report.requests,
        report.sweeps,
        report.sweep_time.as_secs_f64(),
        report.orphans_reaped,
        report.crashed_reconciled,
        usize::from(report.planted_dead),
        report.terminal_removed,
        report.rows_running + report.rows_crashed,
        report.rows_running,
        report.rows_crashed,
        report.containers,
        report.containers_running,
        report.handed_out,
        report.removals_of_ended,
        report.duration.as_secs_f64(),
        report.timings
    );
}

/// A UUID drawn from the generator, so that a seed names the same chats.
fn uuid_from(rng: &mut SeededRng) -> String {
    let high = u128::from(rng.next_u64()) << 64;
    uuid::Builder::from_random_bytes((high | u128::from(rng.next_u64())).to_be_bytes())
        .into_uuid()
        .to_string()
}

fn duration_arg(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Everything a cycle needs from the run.
struct Cycle<'a> {
    config: &'a ChaosConfig,
    env: &'a TestEnv,
    image: &'a str,
    chats: &'a [String],
    foreign: &'a Foreign,
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

impl Cycle<'_> {
    async fn run(
        &self,
        cycle: usize,
        recovery: Recovery,
        mut rng: SeededRng,
    ) -> Result<CycleReport, String> {
        let started = Instant::now();
        let mut timings = Timings::default();
        let grace = duration_arg(self.config.orphan_grace);
        let ttl = duration_arg(self.config.ttl);
        let mut logs = String::new();

        // 1-3: the server under load, killed at a random moment. An early kill now and then
        // lands in the start-up sweep.
        let mut server = self
            .env
            .serve(&[
                "--ttl",
                &ttl,
                "--cleanup-interval",
                "1s",
                "--maintenance-interval",
                "1s",
                "--orphan-grace",
                &grace,
                "--log-format",
                "json",
            ])
            .await;
        timings.lap("start");
        let killed_after = if rng.chance(15) {
            rng.between(Duration::ZERO, Duration::from_millis(300))
        } else {
            rng.between(Duration::from_millis(300), self.config.longest_load)
        };
        let load = Load::start(&server, self.chats, self.config.workers_per_chat, &mut rng);
        tokio::time::sleep(killed_after).await;
        // Taken before the signal: whatever fails from here on was cut by the kill.
        let killed_at = Instant::now();
        server.kill();
        let (requests, handed_out) = load.finish(killed_at).await;
        timings.lap("load");
        logs.push_str(&format!("==== serve under load (killed after {killed_after:?})\n"));
        logs.push_str(&server.logs());
        drop(server);

        // 4: faults planted while nothing runs.
        let rows = read_rows(&self.db()).await?;
        let containers = containers_of_instance(self.env.instance_id())?;
        let planted_dead = self.plant_dead_container(&rows, &containers, &mut rng)?;
        let planted_orphan = self.plant_orphan()?;
        timings.lap("plant");

        // 5: recovery.
        let mut recovered = None;
        let totals = match recovery {
            Recovery::Restart => {
                let server = self
                    .env
                    .serve(&[
                        "--ttl",
                        &ttl,
                        "--cleanup-interval",
                        "1h",
                        "--maintenance-interval",
                        "1h",
                        "--orphan-grace",
                        &grace,
                        "--log-format",
                        "json",
                    ])
                    .await;
                timings.lap("restart");
                let totals = self.sweep_through_api(&server, &mut timings).await;
                logs.push_str("==== restarted serve\n");
                logs.push_str(&server.logs());
                recovered = Some(server);
                totals
            }
            Recovery::Maintain => {
                let (totals, maintain_logs) = self.sweep_with_maintain(&mut timings).await;
                logs.push_str("==== sandkeeper maintain\n");
                logs.push_str(&maintain_logs);
                totals
            }
        };
        let totals = match totals {
            Ok(totals) => totals,
            Err(why) => return Err(self.keep_logs(cycle, &why, &logs)),
        };

        // 6: the invariants.
        let rows = read_rows(&self.db()).await?;
        let containers = containers_of_instance(self.env.instance_id())?;
        let mut violations = invariants(&rows, &containers);
        let removals = orphan_removals(&logs);
        let ended = sessions_ended(&logs);
        violations.extend(handed_out_reaped(
            &handed_out,
            &removals,
            &ended,
            self.config.orphan_grace,
        ));
        violations.extend(
            requests.unexpected.iter().map(|answer| format!("(f) unexpected answer: {answer}")),
        );
        if containers.iter().any(|c| c.id == planted_orphan) {
            violations.push(format!(
                "the orphan planted after the kill ({planted_orphan}) survived the sweep"
            ));
        }
        if totals.orphans_reaped == 0 {
            violations.push(
                "the recovery reaped no orphan, yet one was planted after the kill".to_owned(),
            );
        }
        if planted_dead.is_some() && totals.reconciled == 0 {
            violations.push(
                "the recovery reconciled no crashed session, yet a running session's container \
                 was killed while the server was down"
                    .to_owned(),
            );
        }
        if let Err(violation) = self.foreign.check() {
            violations.push(violation);
        }
        timings.lap("check");
        if let Some(server) = &recovered {
            violations.extend(self.check_api(server, &rows).await);
            timings.lap("serve again");
        }
        if !violations.is_empty() {
            let message = format!(
                "{} violation(s) after {} [{}; sweeps {totals:?}]:\n  - {}",
                violations.len(),
                recovery.as_str(),
                requests,
                violations.join("\n  - ")
            );
            return Err(self.keep_logs(cycle, &message, &logs));
        }

        if let Some(mut server) = recovered {
            let status = tokio::task::block_in_place(|| server.terminate());
            if !status.success() {
                let why = format!("the restarted server did not exit cleanly on SIGTERM: {status}");
                return Err(self.keep_logs(cycle, &why, &server.logs()));
            }
            timings.lap("stop");
        }

        let running_rows = rows.iter().filter(|row| row.status == "running").count();
        Ok(CycleReport {
            cycle,
            recovery,
            killed_after,
            requests,
            sweeps: totals.sweeps,
            sweep_time: totals.time,
            orphans_reaped: totals.orphans_reaped,
            crashed_reconciled: totals.reconciled,
            terminal_removed: totals.removed,
            rows_running: running_rows,
            rows_crashed: rows.iter().filter(|row| row.status == "crashed").count(),
            containers: containers.len(),
            containers_running: containers.iter().filter(|c| c.state == "running").count(),
            planted_dead: planted_dead.is_some(),
            handed_out: handed_out.len(),
            removals_of_ended: removals
                .iter()
                .filter(|(at, id)| ended.get(id).is_some_and(|end| *end <= *at + LOG_RACE))
                .count(),
            timings,
            duration: started.elapsed(),
        })
    }

    fn db(&self) -> PathBuf {
        self.env.data_dir().join("sandkeeper.db")
    }

    /// Kills the container of one running session, as if it had crashed while sandkeeper was
    /// down. Returns its session id, or `None` when no session was running.
    fn plant_dead_container(
        &self,
        rows: &[Row],
        containers: &[DockerContainer],
        rng: &mut SeededRng,
    ) -> Result<Option<String>, String> {
        let live: Vec<&Row> = rows
            .iter()
            .filter(|row| row.status == "running")
            .filter(|row| {
                containers.iter().any(|c| c.id == row.container_id && c.state == "running")
            })
            .collect();
        if live.is_empty() {
            return Ok(None);
        }
        let victim = live[rng.below(live.len() as u64) as usize];
        docker(&["kill", &victim.container_id])?;
        Ok(Some(victim.session_id.clone()))
    }

    /// A container with this instance's labels and no row, as a create cut short before its
    /// save leaves behind.
    fn plant_orphan(&self) -> Result<String, String> {
        let output = docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "--label",
            &format!("{MANAGED_LABEL}=true"),
            "--label",
            &format!("{INSTANCE_LABEL}={}", self.env.instance_id()),
            "--label",
            &format!("{SESSION_LABEL}={}", uuid::Uuid::new_v4()),
            "--label",
            &format!("{CHAT_LABEL}={}", uuid::Uuid::new_v4()),
            self.image,
            "sleep",
            "infinity",
        ])?;
        Ok(output.trim().to_owned())
    }

    /// Waits until every container of the instance is older than the orphan grace, so that the
    /// next sweep must reap whichever has no row. The engine lists creation times in whole
    /// seconds and sandkeeper counts from the end of that second (never reaping early), so the
    /// grace runs from the end of the second the newest container was created in.
    async fn wait_out_the_grace(&self) -> Result<(), String> {
        let containers = containers_of_instance(self.env.instance_id())?;
        if let Some(newest) = containers.iter().map(|c| c.created).max() {
            let end_of_second = DateTime::from_timestamp(newest.timestamp() + 1, 0)
                .expect("a creation time within chrono's range");
            let ready_at = end_of_second
                + chrono::TimeDelta::from_std(self.config.orphan_grace + GRACE_MARGIN)
                    .expect("a small duration");
            if let Ok(wait) = (ready_at - Utc::now()).to_std() {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }

    /// The restarted server: lets its start-up pass finish (it may run or, if the killed server
    /// held the lease, be skipped), waits out the grace, then sweeps until a sweep was not cut
    /// short by its time budget.
    async fn sweep_through_api(
        &self,
        server: &Server,
        timings: &mut Timings,
    ) -> Result<SweepTotals, String> {
        let deadline = Instant::now() + STARTUP_PASS_TIMEOUT;
        loop {
            let text = server.metrics().await;
            if text.contains("background_pass_total{loop=\"maintenance\"") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the restarted server's start-up maintenance pass did not finish within \
                     {STARTUP_PASS_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        timings.lap("start-up pass");
        self.wait_out_the_grace().await?;
        timings.lap("grace");
        let mut totals = SweepTotals::default();
        loop {
            let started = Instant::now();
            let (status, report) =
                server.send(server.request(reqwest::Method::POST, "/v1/maintenance/sweep")).await;
            totals.time += started.elapsed();
            totals.sweeps += 1;
            if status != reqwest::StatusCode::OK {
                return Err(format!("POST /v1/maintenance/sweep answered {status}: {report}"));
            }
            totals.errors += report["errors"].as_u64().unwrap_or(0);
            if report["timed_out"] != Value::Bool(true) {
                break;
            }
            if totals.sweeps >= MAX_RECOVERY_SWEEPS {
                return Err(format!(
                    "{MAX_RECOVERY_SWEEPS} sweeps in a row were cut short by their time budget"
                ));
            }
        }
        timings.lap("sweep");
        // Counted from the metrics, so that the start-up pass's work is included.
        let text = server.metrics().await;
        let count = |name: &str| metric(&text, name).unwrap_or(0.0) as u64;
        totals.orphans_reaped = count("sandbox_maintenance_orphans_removed_total");
        totals.reconciled = count("sandbox_maintenance_reconciled_total");
        totals.removed = count("sandbox_maintenance_removed_total");
        Ok(totals)
    }

    /// `sandkeeper maintain` with no server running, until a pass was not cut short.
    async fn sweep_with_maintain(
        &self,
        timings: &mut Timings,
    ) -> (Result<SweepTotals, String>, String) {
        let mut logs = String::new();
        if let Err(why) = self.wait_out_the_grace().await {
            return (Err(why), logs);
        }
        timings.lap("grace");
        let mut totals = SweepTotals::default();
        loop {
            let started = Instant::now();
            let mut command = self.env.command("maintain");
            command.args([
                "--orphan-grace",
                &duration_arg(self.config.orphan_grace),
                "--log-format",
                "json",
            ]);
            if std::env::var_os("RUST_LOG").is_none() {
                command.env("RUST_LOG", "info");
            }
            let output = tokio::task::spawn_blocking(move || command.output())
                .await
                .expect("the maintain command was waited for");
            totals.time += started.elapsed();
            totals.sweeps += 1;
            let output = match output {
                Ok(output) => output,
                Err(error) => {
                    return (Err(format!("cannot run sandkeeper maintain: {error}")), logs);
                }
            };
            logs.push_str(&String::from_utf8_lossy(&output.stderr));
            let Ok(report) = serde_json::from_slice::<Value>(&output.stdout) else {
                let why = format!(
                    "sandkeeper maintain printed no report ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
                return (Err(why), logs);
            };
            let count = |name: &str| report[name].as_u64().unwrap_or(0);
            totals.orphans_reaped += count("orphans_removed");
            totals.reconciled += count("reconciled");
            totals.removed += count("removed");
            totals.errors += count("errors");
            if report["timed_out"] != Value::Bool(true) {
                break;
            }
            if totals.sweeps >= MAX_RECOVERY_SWEEPS {
                let why = format!(
                    "{MAX_RECOVERY_SWEEPS} maintain passes in a row were cut short by their time \
                     budget"
                );
                return (Err(why), logs);
            }
        }
        timings.lap("maintain");
        (Ok(totals), logs)
    }

    /// The restarted server lists exactly the store's sessions, and serves every chat again:
    /// each PUT answers 200 or 201 with a running container.
    async fn check_api(&self, server: &Server, rows: &[Row]) -> Vec<String> {
        let mut violations = Vec::new();
        let listed: HashSet<String> = server
            .sandboxes()
            .await
            .iter()
            .filter_map(|session| session["session_id"].as_str().map(str::to_owned))
            .collect();
        let stored: HashSet<String> = rows.iter().map(|row| row.session_id.clone()).collect();
        if listed != stored {
            violations
                .push(format!("GET /v1/sandboxes lists {listed:?} but the store holds {stored:?}"));
        }
        // Half of the chats get a sandbox for a minute: it outlives this cycle, so the next one
        // starts with live sessions to reuse, to delete, and to find dead after the kill.
        let mut puts = tokio::task::JoinSet::new();
        for (i, chat) in self.chats.iter().enumerate() {
            let mut request =
                server.request(reqwest::Method::PUT, &format!("/v1/chats/{chat}/sandbox"));
            if i % 2 == 0 {
                request = request.body(r#"{"ttl_seconds": 60}"#);
            }
            let chat = chat.clone();
            puts.spawn(async move {
                let answer = async {
                    let response = request.send().await.map_err(|error| error.to_string())?;
                    let status = response.status();
                    let text = response.text().await.map_err(|error| error.to_string())?;
                    Ok::<_, String>((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
                };
                (chat, answer.await)
            });
        }
        while let Some(joined) = puts.join_next().await {
            let (chat, answer) = joined.expect("a PUT task finished");
            let (status, body) = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    violations
                        .push(format!("after the recovery, PUT for chat {chat} failed: {error}"));
                    continue;
                }
            };
            if status != reqwest::StatusCode::OK && status != reqwest::StatusCode::CREATED {
                violations.push(format!(
                    "after the recovery, PUT for chat {chat} answered {status}: {body}"
                ));
                continue;
            }
            let container = body["container_id"].as_str().unwrap_or_default();
            let running = docker(&["inspect", "--format", "{{.State.Running}}", container])
                .is_ok_and(|out| out.trim() == "true");
            if !running {
                violations.push(format!(
                    "after the recovery, PUT for chat {chat} answered {status} with container \
                     {container}, which is not running"
                ));
            }
        }
        violations
    }

    /// Writes the logs next to the other temporary files and names the file in the message.
    fn keep_logs(&self, cycle: usize, why: &str, logs: &str) -> String {
        let path = std::env::temp_dir()
            .join(format!("sandkeeper-chaos-{}-cycle{cycle}.log", self.config.seed));
        match std::fs::write(&path, logs) {
            Ok(()) => format!("{why}\n  (the servers' logs are in {})", path.display()),
            Err(error) => {
                format!("{why}\n  (could not write the logs to {}: {error})", path.display())
            }
        }
    }
}

/// A session row, as the store holds it.
#[derive(Debug, Clone)]
struct Row {
    session_id: String,
    chat_id: String,
    container_id: String,
    status: String,
}

/// Reads every session straight from the SQLite file, read-only: the store's truth, whatever
/// the API says.
async fn read_rows(db: &Path) -> Result<Vec<Row>, String> {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(|error| format!("cannot open {} read-only: {error}", db.display()))?;
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT session_id, chat_id, container_id, status FROM sandbox_sessions \
         ORDER BY created_at, session_id",
    )
    .fetch_all(&mut connection)
    .await
    .map_err(|error| format!("cannot read the sessions of {}: {error}", db.display()))?;
    connection.close().await.ok();
    Ok(rows
        .into_iter()
        .map(|(session_id, chat_id, container_id, status)| Row {
            session_id,
            chat_id,
            container_id,
            status,
        })
        .collect())
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

/// Every container (in any state) that carries this instance's label.
fn containers_of_instance(instance_id: &str) -> Result<Vec<DockerContainer>, String> {
    let ids = docker(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={INSTANCE_LABEL}={instance_id}"),
    ])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let format = format!(
        "{{{{.Id}}}}|{{{{.State.Status}}}}|{{{{.Created}}}}|{{{{index .Config.Labels \
         \"{MANAGED_LABEL}\"}}}}|{{{{index .Config.Labels \"{SESSION_LABEL}\"}}}}|{{{{index \
         .Config.Labels \"{CHAT_LABEL}\"}}}}"
    );
    // A container can go between the listing and the inspection (right after a kill, the
    // engine is still finishing removals the server asked for): it is simply not there.
    let output = Command::new("docker")
        .args(["inspect", "--format", &format])
        .args(&ids)
        .output()
        .map_err(|error| format!("cannot run docker: {error}"))?;
    let errors = String::from_utf8_lossy(&output.stderr);
    if let Some(error) =
        errors.lines().find(|line| !line.trim().is_empty() && !line.contains("No such object"))
    {
        return Err(format!("`docker inspect` of the instance's containers failed: {error}"));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.trim().split('|').collect();
            let [id, state, created, managed, session, chat] = fields[..] else {
                return Err(format!("unexpected `docker inspect` line: {line}"));
            };
            let created = DateTime::parse_from_rfc3339(created)
                .map_err(|error| format!("container {id}: creation time `{created}`: {error}"))?
                .with_timezone(&Utc);
            Ok(DockerContainer {
                id: id.to_owned(),
                state: state.to_owned(),
                created,
                managed: managed.to_owned(),
                session: session.to_owned(),
                chat: chat.to_owned(),
            })
        })
        .collect()
}

/// The invariants (a), (b) and (c) over the store's rows and the engine's containers.
fn invariants(rows: &[Row], containers: &[DockerContainer]) -> Vec<String> {
    let mut violations = Vec::new();
    let row_of: HashMap<&str, &Row> =
        rows.iter().map(|row| (row.container_id.as_str(), row)).collect();
    let container_of: HashMap<&str, &DockerContainer> =
        containers.iter().map(|c| (c.id.as_str(), c)).collect();

    for container in containers {
        match row_of.get(container.id.as_str()) {
            None => violations.push(format!(
                "(a) container {} ({}, session label {}, chat label {}, managed={}, created {}) \
                 has no row after the sweep",
                container.id,
                container.state,
                container.session,
                container.chat,
                container.managed,
                container.created
            )),
            Some(row) if container.state == "running" && row.status != "running" => violations
                .push(format!(
                    "(b) container {} is running but its session {} (chat {}) is {}",
                    container.id, row.session_id, row.chat_id, row.status
                )),
            Some(_) => {}
        }
    }

    let mut running_per_chat: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for row in rows.iter().filter(|row| row.status == "running") {
        running_per_chat.entry(&row.chat_id).or_default().push(&row.session_id);
        match container_of.get(row.container_id.as_str()) {
            Some(container) if container.state == "running" => {}
            found => violations.push(format!(
                "(b) session {} (chat {}) is running but its container {} is {}",
                row.session_id,
                row.chat_id,
                row.container_id,
                found.map_or("missing", |c| c.state.as_str())
            )),
        }
    }
    for (chat, sessions) in running_per_chat.iter().filter(|(_, sessions)| sessions.len() > 1) {
        violations
            .push(format!("(c) chat {chat} has {} running sessions: {sessions:?}", sessions.len()));
    }

    let mut containers_per_chat: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for container in containers.iter().filter(|c| c.state == "running") {
        containers_per_chat.entry(&container.chat).or_default().push(&container.id);
    }
    for (chat, ids) in containers_per_chat.iter().filter(|(_, ids)| ids.len() > 1) {
        violations.push(format!("(c) chat {chat} has {} running containers: {ids:?}", ids.len()));
    }
    violations
}

/// A container a client was given in a 200/201 answer to PUT.
#[derive(Debug, Clone)]
struct HandedOut {
    container_id: String,
    session_id: String,
    chat_id: String,
    session_created_at: DateTime<Utc>,
}

/// `orphan_container_removed` events of a JSON log: when and which.
fn orphan_removals(logs: &str) -> Vec<(DateTime<Utc>, String)> {
    logs.lines()
        .filter(|line| line.contains("orphan_container_removed"))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "orphan_container_removed")
        .filter_map(|event| {
            let at = DateTime::parse_from_rfc3339(event["timestamp"].as_str()?).ok()?;
            Some((at.with_timezone(&Utc), event["container_id"].as_str()?.to_owned()))
        })
        .collect()
}

/// When sandkeeper ended each container's session itself (a delete, a cleanup, a replace or
/// the removal of a terminal session), from the JSON logs: container id -> time.
fn sessions_ended(logs: &str) -> HashMap<String, DateTime<Utc>> {
    const ENDINGS: [&str; 4] =
        ["sandbox_deleted", "sandbox_cleaned", "sandbox_replaced", "sandbox_removed"];
    let mut ended = HashMap::new();
    for event in logs
        .lines()
        .filter(|line| ENDINGS.iter().any(|ending| line.contains(ending)))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| ENDINGS.iter().any(|ending| event["message"] == *ending))
    {
        let (Some(at), Some(id)) = (
            event["timestamp"].as_str().and_then(|at| DateTime::parse_from_rfc3339(at).ok()),
            event["container_id"].as_str(),
        ) else {
            continue;
        };
        ended.entry(id.to_owned()).or_insert(at.with_timezone(&Utc));
    }
    ended
}

/// How much later than the orphan removal the end of the same session may be logged and still
/// count as earlier: the sweep's listing can predate a delete that then removes the container
/// and the row, so the sweep finds no row and "removes" a container that is already gone; the
/// delete logs right after its row is gone, the sweep only after another engine call.
const LOG_RACE: chrono::TimeDelta = chrono::TimeDelta::milliseconds(100);

/// Invariant (e): no container a client was handed was reaped as an orphan while its session
/// was alive. An orphan removal of a container whose session sandkeeper had already ended is a
/// removal of something already gone, and harmless.
fn handed_out_reaped(
    handed_out: &HashMap<String, HandedOut>,
    reaped: &[(DateTime<Utc>, String)],
    ended: &HashMap<String, DateTime<Utc>>,
    grace: Duration,
) -> Vec<String> {
    let grace = chrono::TimeDelta::from_std(grace).expect("a small duration");
    reaped
        .iter()
        .filter_map(|(at, container_id)| {
            let given = handed_out.get(container_id)?;
            if ended.get(container_id).is_some_and(|end| *end <= *at + LOG_RACE) {
                return None;
            }
            // The session's created_at is taken just before its container is created, so this
            // age is an upper bound of the container's.
            let age = *at - given.session_created_at;
            let why =
                if age < grace { "inside the orphan grace" } else { "while its session was alive" };
            Some(format!(
                "(e) container {container_id} of session {} (chat {}) was handed to a client, \
                 then reaped as an orphan {:.3} s after its session was created ({why}, grace \
                 {:.3} s)",
                given.session_id,
                given.chat_id,
                age.as_seconds_f64(),
                grace.as_seconds_f64()
            ))
        })
        .collect()
}

/// The parallel requests of one cycle.
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<WorkerResult>>,
}

#[derive(Default)]
struct WorkerResult {
    tally: Tally,
    /// Transport errors and when they happened: after the kill they are expected.
    failures: Vec<(Instant, String)>,
    handed_out: Vec<HandedOut>,
}

impl Load {
    fn start(server: &Server, chats: &[String], per_chat: usize, rng: &mut SeededRng) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let base = server.url("");
        let mut workers = Vec::new();
        for chat in chats {
            for _ in 0..per_chat {
                let worker = Worker {
                    client: client.clone(),
                    base: base.clone(),
                    rng: SeededRng::new(rng.next_u64()),
                    stop: Arc::clone(&stop),
                };
                workers.push(tokio::spawn(worker.chat(chat.clone())));
            }
        }
        let maintenance =
            Worker { client, base, rng: SeededRng::new(rng.next_u64()), stop: Arc::clone(&stop) };
        workers.push(tokio::spawn(maintenance.maintenance()));
        Self { stop, workers }
    }

    /// Stops the workers (the server is dead by now) and adds up what they saw.
    async fn finish(self, killed_at: Instant) -> (Tally, HashMap<String, HandedOut>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut tally = Tally::default();
        let mut handed_out = HashMap::new();
        for worker in self.workers {
            let result = worker.await.expect("a load worker finished");
            tally.merge(result.tally);
            for (at, failure) in result.failures {
                if at < killed_at {
                    tally.unexpected.push(format!("before the kill: {failure}"));
                } else {
                    tally.cut_by_kill += 1;
                }
            }
            for given in result.handed_out {
                handed_out.insert(given.container_id.clone(), given);
            }
        }
        (tally, handed_out)
    }
}

struct Worker {
    client: reqwest::Client,
    base: String,
    rng: SeededRng,
    stop: Arc<AtomicBool>,
}

impl Worker {
    /// PUTs (65%), DELETEs (10%) and GETs for one chat. A fifth of the PUTs ask for a TTL of 1 to
    /// 3 s (more expiry, replaces and cleanups), a tenth for a minute (sessions that outlive the
    /// cycle, to be reused after the restart or found dead after the kill).
    async fn chat(mut self, chat: String) -> WorkerResult {
        let mut result = WorkerResult::default();
        let path = format!("/v1/chats/{chat}/sandbox");
        while !self.stop.load(Ordering::SeqCst) {
            let roll = self.rng.below(100);
            let (method, body, expected): (_, _, &[u16]) = if roll < 65 {
                let body = match self.rng.below(10) {
                    0 | 1 => Some(format!("{{\"ttl_seconds\": {}}}", 1 + self.rng.below(3))),
                    2 => Some("{\"ttl_seconds\": 60}".to_owned()),
                    _ => None,
                };
                (reqwest::Method::PUT, body, &[200, 201])
            } else if roll < 75 {
                (reqwest::Method::DELETE, None, &[204, 404])
            } else {
                (reqwest::Method::GET, None, &[200, 404])
            };
            let is_put = method == reqwest::Method::PUT;
            if let Some(answer) = self.call(method, &path, body, expected, &mut result).await {
                if is_put {
                    if let Some(given) = handout_of(&answer) {
                        result.handed_out.push(given);
                    }
                }
            }
            let pause = self.rng.between(Duration::ZERO, Duration::from_millis(60));
            tokio::time::sleep(pause).await;
        }
        result
    }

    /// Cleanup passes now and then, and an explicit sweep once in a while.
    async fn maintenance(mut self) -> WorkerResult {
        let mut result = WorkerResult::default();
        while !self.stop.load(Ordering::SeqCst) {
            let pause = self.rng.between(Duration::from_millis(50), Duration::from_millis(250));
            tokio::time::sleep(pause).await;
            if self.rng.chance(80) {
                self.call(
                    reqwest::Method::POST,
                    "/v1/maintenance/cleanup",
                    None,
                    &[200],
                    &mut result,
                )
                .await;
            } else {
                self.call(
                    reqwest::Method::POST,
                    "/v1/maintenance/sweep",
                    None,
                    &[200, 409],
                    &mut result,
                )
                .await;
            }
        }
        result
    }

    /// One request; its answer is counted, and returned when it is one of `expected`.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        expected: &[u16],
        result: &mut WorkerResult,
    ) -> Option<Value> {
        let label = format!("{method} {}", route_of(path));
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                result.failures.push((Instant::now(), format!("{label}: {error}")));
                return None;
            }
        };
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => {
                result.failures.push((Instant::now(), format!("{label} {status}: {error}")));
                return None;
            }
        };
        *result.tally.answers.entry(format!("{label} {status}")).or_default() += 1;
        if !expected.contains(&status) {
            result.tally.unexpected.push(format!("{label} {path} answered {status}: {text}"));
            return None;
        }
        Some(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A short name for a path: `PUT chat`, `POST cleanup`.
fn route_of(path: &str) -> &'static str {
    if path.starts_with("/v1/chats/") {
        "chat"
    } else if path.ends_with("/cleanup") {
        "cleanup"
    } else if path.ends_with("/sweep") {
        "sweep"
    } else {
        "other"
    }
}

fn handout_of(answer: &Value) -> Option<HandedOut> {
    let created = DateTime::parse_from_rfc3339(answer["created_at"].as_str()?).ok()?;
    Some(HandedOut {
        container_id: answer["container_id"].as_str()?.to_owned(),
        session_id: answer["session_id"].as_str()?.to_owned(),
        chat_id: answer["chat_id"].as_str()?.to_owned(),
        session_created_at: created.with_timezone(&Utc),
    })
}

/// Containers sandkeeper must never touch: one without any label, one of another instance
/// (every sandkeeper label, another instance id). Both exist before the first cycle, so they
/// are older than the grace at every sweep. Removed when dropped.
#[derive(Debug)]
struct Foreign {
    containers: Vec<ForeignContainer>,
}

#[derive(Debug)]
struct ForeignContainer {
    what: &'static str,
    id: String,
    started_at: String,
}

impl Foreign {
    fn create(image: &str, instance_id: &str) -> Result<Self, String> {
        let mut foreign = Self { containers: Vec::new() };
        let unlabelled = docker(&["run", "-d", "--network", "none", image, "sleep", "infinity"])?;
        foreign.add("unlabelled container", unlabelled.trim())?;
        let other_instance = docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "--label",
            &format!("{MANAGED_LABEL}=true"),
            "--label",
            &format!("{INSTANCE_LABEL}={instance_id}-other"),
            "--label",
            &format!("{SESSION_LABEL}={}", uuid::Uuid::new_v4()),
            "--label",
            &format!("{CHAT_LABEL}={}", uuid::Uuid::new_v4()),
            image,
            "sleep",
            "infinity",
        ])?;
        foreign.add("container of another instance", other_instance.trim())?;
        Ok(foreign)
    }

    fn add(&mut self, what: &'static str, id: &str) -> Result<(), String> {
        let started_at = docker(&["inspect", "--format", "{{.State.StartedAt}}", id])?;
        self.containers.push(ForeignContainer {
            what,
            id: id.to_owned(),
            started_at: started_at.trim().to_owned(),
        });
        Ok(())
    }

    fn describe(&self) -> String {
        let parts: Vec<String> =
            self.containers.iter().map(|c| format!("{} {:.12}", c.what, c.id)).collect();
        parts.join(", ")
    }

    /// Invariant (d): each still runs, and was never restarted.
    fn check(&self) -> Result<(), String> {
        for container in &self.containers {
            let state = docker(&[
                "inspect",
                "--format",
                "{{.State.Running}} {{.State.StartedAt}} {{.RestartCount}}",
                &container.id,
            ])
            .map_err(|why| format!("(d) the {} {} is gone: {why}", container.what, container.id))?;
            let expected = format!("true {} 0", container.started_at);
            if state.trim() != expected {
                return Err(format!(
                    "(d) the {} {} was touched: running/started/restarts is `{}`, expected `{}`",
                    container.what,
                    container.id,
                    state.trim(),
                    expected
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let ids: Vec<&str> = self.containers.iter().map(|c| c.id.as_str()).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_replays_a_seed() {
        let first: Vec<u64> = (0..5).scan(SeededRng::new(42), |r, _| Some(r.next_u64())).collect();
        let again: Vec<u64> = (0..5).scan(SeededRng::new(42), |r, _| Some(r.next_u64())).collect();
        let other: Vec<u64> = (0..5).scan(SeededRng::new(43), |r, _| Some(r.next_u64())).collect();
        assert_eq!(first, again);
        assert_ne!(first, other);
        let mut rng = SeededRng::new(7);
        for _ in 0..1000 {
            let d = rng.between(Duration::from_millis(300), Duration::from_millis(500));
            assert!((Duration::from_millis(300)..=Duration::from_millis(500)).contains(&d));
        }
    }

    fn row(session: &str, chat: &str, container: &str, status: &str) -> Row {
        Row {
            session_id: session.into(),
            chat_id: chat.into(),
            container_id: container.into(),
            status: status.into(),
        }
    }

    fn container(id: &str, chat: &str, state: &str) -> DockerContainer {
        DockerContainer {
            id: id.into(),
            state: state.into(),
            created: Utc::now(),
            managed: "true".into(),
            session: "s".into(),
            chat: chat.into(),
        }
    }

    #[test]
    fn consistent_state_passes_and_each_invariant_is_named_when_broken() {
        let rows = [row("s1", "c1", "k1", "running"), row("s2", "c2", "k2", "crashed")];
        let containers = [container("k1", "c1", "running"), container("k2", "c2", "exited")];
        assert!(invariants(&rows, &containers).is_empty());

        let orphan = [container("k1", "c1", "running"), container("k9", "c9", "running")];
        let violations = invariants(&rows[..1], &orphan);
        assert!(
            violations.len() == 1 && violations[0].starts_with("(a) container k9"),
            "{violations:?}"
        );

        let dead = [container("k1", "c1", "exited")];
        let violations = invariants(&rows[..1], &dead);
        assert!(violations[0].starts_with("(b) session s1"), "{violations:?}");

        let twice = [row("s1", "c1", "k1", "running"), row("s3", "c1", "k3", "running")];
        let both = [container("k1", "c1", "running"), container("k3", "c1", "running")];
        let violations = invariants(&twice, &both);
        assert!(violations.iter().any(|v| v.starts_with("(c) chat c1 has 2 running sessions")));
        assert!(violations.iter().any(|v| v.starts_with("(c) chat c1 has 2 running containers")));
    }

    #[test]
    fn orphan_removals_are_read_from_json_logs() {
        let logs = concat!(
            r#"{"timestamp":"2026-11-23T14:56:32.317962Z","level":"INFO","message":"orphan_container_removed","container_id":"abc"}"#,
            "\n",
            r#"{"timestamp":"2026-11-23T14:56:32.319787Z","level":"INFO","message":"maintenance_sweep_completed"}"#,
            "\n"
        );
        let removals = orphan_removals(logs);
        assert_eq!(removals.len(), 1);
        assert_eq!(removals[0].1, "abc");
    }
}
