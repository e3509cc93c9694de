//! What a cycle and the whole run return, and what they print.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::ChaosConfig;
use crate::TestEnv;

/// How a cycle brought the store and the engine back into agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// A restarted `serve` and `POST /v1/maintenance/sweep`.
    Restart,
    /// `sandkeeper maintain`, with no server running.
    Maintain,
}

impl Recovery {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart + POST sweep",
            Self::Maintain => "sandkeeper maintain",
        }
    }

    /// Every third cycle recovers with `sandkeeper maintain`, the others with a restart.
    pub(super) fn of_cycle(cycle: usize) -> Self {
        if cycle % 3 == 0 { Self::Maintain } else { Self::Restart }
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
    pub(super) fn lap(&mut self, step: &'static str) {
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
    pub(super) fn merge(&mut self, other: Tally) {
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

/// The first line of a run: its seed (and how to replay it) and its settings.
pub(super) fn print_start(config: &ChaosConfig, env: &TestEnv) {
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
}

/// What a cycle did and checked, with its counts and how long each step took.
pub(super) fn print_cycle(config: &ChaosConfig, report: &CycleReport) {
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

/// The last line of a run that held every invariant.
pub(super) fn print_summary(summary: &ChaosSummary, leftovers: usize, foreign: usize) {
    let requests: usize = summary.cycles.iter().map(|c| c.requests.total()).sum();
    let reaped: u64 = summary.cycles.iter().map(|c| c.orphans_reaped).sum();
    let reconciled: u64 = summary.cycles.iter().map(|c| c.crashed_reconciled).sum();
    println!(
        "chaos: all invariants held over {} cycles in {:.1} s (seed {}): {requests} requests, \
         {reaped} orphans reaped, {reconciled} crashed sessions reconciled; removing the \
         {leftovers} containers of instance {} and the {foreign} foreign ones",
        summary.cycles.len(),
        summary.duration.as_secs_f64(),
        summary.seed,
        summary.instance_id,
    );
}
