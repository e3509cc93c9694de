//! One cycle, step by step: the server under load, killed; faults planted while it is down;
//! the recovery; the invariants; the report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::faults::{plant_dead_container, plant_orphan};
use super::invariants;
use super::load::Load;
use super::observe::{containers_of_instance, read_rows};
use super::plan::duration_arg;
use super::report::{CycleReport, Recovery, Tally, Timings};
use super::{Cycle, DockerContainer, HandedOut, Row, SeededRng, SweepTotals};

/// The warm pool of every server of the run (`--pool-size`): claims race with the kill too.
const POOL_SIZE: &str = "2";
use crate::Server;

/// What the load of a cycle saw before and as the server was killed.
struct Killed {
    after: Duration,
    requests: Tally,
    handed_out: HashMap<String, HandedOut>,
}

/// The faults planted while the server was down.
struct Planted {
    /// The session whose container was killed, if any session was running.
    dead: Option<String>,
    orphan: String,
}

impl CycleReport {
    /// The counts of a cycle that held every invariant; what is not counted here (the requests,
    /// the planted faults, the timings) is filled in by the cycle.
    fn from_counts(
        cycle: usize,
        recovery: Recovery,
        killed: &Killed,
        totals: &SweepTotals,
        after: &Recovered,
    ) -> Self {
        Self {
            cycle,
            recovery,
            killed_after: killed.after,
            requests: Tally::default(),
            sweeps: totals.sweeps,
            sweep_time: totals.time,
            orphans_reaped: totals.orphans_reaped,
            crashed_reconciled: totals.reconciled,
            terminal_removed: totals.removed,
            rows_running: after.rows.iter().filter(|row| row.status == "running").count(),
            rows_crashed: after.rows.iter().filter(|row| row.status == "crashed").count(),
            containers: after.containers.len(),
            containers_running: after.containers.iter().filter(|c| c.state == "running").count(),
            planted_dead: false,
            handed_out: killed.handed_out.len(),
            removals_of_ended: 0,
            timings: Timings::default(),
            duration: Duration::ZERO,
        }
    }
}

/// The store and the engine after the recovery.
struct Recovered {
    rows: Vec<Row>,
    containers: Vec<DockerContainer>,
}

impl Cycle<'_> {
    pub(super) async fn run(
        &self,
        cycle: usize,
        recovery: Recovery,
        mut rng: SeededRng,
    ) -> Result<CycleReport, String> {
        let started = Instant::now();
        let mut timings = Timings::default();
        let mut logs = String::new();

        // 1-3: the server under load, killed at a random moment.
        let killed = self.load_and_kill(&mut rng, &mut timings, &mut logs).await;
        timings.lap("load");
        // 4: faults planted while nothing runs.
        let planted = self.plant_faults(&mut rng).await?;
        timings.lap("plant");
        // 5: recovery.
        let (totals, server) = self.recover(recovery, &mut timings, &mut logs).await;
        let totals = totals.map_err(|why| self.keep_logs(cycle, &why, &logs))?;
        // 6: the invariants.
        let after = Recovered {
            rows: read_rows(&self.db()).await?,
            containers: containers_of_instance(self.env.instance_id())?,
        };
        let mut violations = self.violations(&killed, &planted, &totals, &after, &logs);
        timings.lap("check");
        if let Some(server) = &server {
            violations.extend(invariants::api_agrees(server, self.chats, &after.rows).await);
            timings.lap("serve again");
        }
        if !violations.is_empty() {
            let message = format!(
                "{} violation(s) after {} [{}; sweeps {totals:?}]:\n  - {}",
                violations.len(),
                recovery.as_str(),
                killed.requests,
                violations.join("\n  - ")
            );
            return Err(self.keep_logs(cycle, &message, &logs));
        }
        if let Some(server) = server {
            self.stop(cycle, server)?;
            timings.lap("stop");
        }
        let removals = invariants::orphan_removals(&logs);
        let removals_of_ended =
            invariants::removals_of_ended(&removals, &invariants::sessions_ended(&logs));
        let mut report = CycleReport::from_counts(cycle, recovery, &killed, &totals, &after);
        report.planted_dead = planted.dead.is_some();
        report.removals_of_ended = removals_of_ended;
        report.requests = killed.requests;
        report.timings = timings;
        report.duration = started.elapsed();
        Ok(report)
    }

    /// `sandkeeper serve` on the run's data dir, with its cleanup and maintenance loops every
    /// `loop_interval`.
    async fn serve(&self, loop_interval: &str) -> Server {
        let grace = duration_arg(self.config.orphan_grace);
        let ttl = duration_arg(self.config.ttl);
        self.env
            .serve(&[
                "--ttl",
                &ttl,
                "--cleanup-interval",
                loop_interval,
                "--maintenance-interval",
                loop_interval,
                "--orphan-grace",
                &grace,
                "--pool-size",
                POOL_SIZE,
                "--log-format",
                "json",
            ])
            .await
    }

    /// Starts the server with its loops every second, loads it and kills it at a moment drawn
    /// from the generator. An early kill now and then lands in the start-up sweep.
    async fn load_and_kill(
        &self,
        rng: &mut SeededRng,
        timings: &mut Timings,
        logs: &mut String,
    ) -> Killed {
        let mut server = self.serve("1s").await;
        timings.lap("start");
        let after = if rng.chance(15) {
            rng.between(Duration::ZERO, Duration::from_millis(300))
        } else {
            rng.between(Duration::from_millis(300), self.config.longest_load)
        };
        let load = Load::start(&server, self.chats, self.config.workers_per_chat, rng);
        tokio::time::sleep(after).await;
        // Taken before the signal: whatever fails from here on was cut by the kill.
        let killed_at = Instant::now();
        server.kill();
        let (requests, handed_out) = load.finish(killed_at).await;
        logs.push_str(&format!("==== serve under load (killed after {after:?})\n"));
        logs.push_str(&server.logs());
        Killed { after, requests, handed_out }
    }

    async fn plant_faults(&self, rng: &mut SeededRng) -> Result<Planted, String> {
        let rows = read_rows(&self.db()).await?;
        let containers = containers_of_instance(self.env.instance_id())?;
        let dead = plant_dead_container(&rows, &containers, rng)?;
        let orphan = plant_orphan(self.image, self.env.instance_id())?;
        Ok(Planted { dead, orphan })
    }

    /// Recovers as `recovery` says; returns the sweeps' totals and, after a restart, the
    /// restarted server (its loops slowed down so that nothing moves while it is checked).
    async fn recover(
        &self,
        recovery: Recovery,
        timings: &mut Timings,
        logs: &mut String,
    ) -> (Result<SweepTotals, String>, Option<Server>) {
        match recovery {
            Recovery::Restart => {
                let server = self.serve("1h").await;
                timings.lap("restart");
                let totals = self.sweep_through_api(&server, timings).await;
                logs.push_str("==== restarted serve\n");
                logs.push_str(&server.logs());
                (totals, Some(server))
            }
            Recovery::Maintain => {
                let (totals, maintain_logs) = self.sweep_with_maintain(timings).await;
                logs.push_str("==== sandkeeper maintain\n");
                logs.push_str(&maintain_logs);
                (totals, None)
            }
        }
    }

    /// Every invariant that the store, the engine and the logs can tell without the API.
    fn violations(
        &self,
        killed: &Killed,
        planted: &Planted,
        totals: &SweepTotals,
        after: &Recovered,
        logs: &str,
    ) -> Vec<String> {
        let mut violations = invariants::invariants(&after.rows, &after.containers);
        violations.extend(invariants::handed_out_reaped(
            &killed.handed_out,
            &invariants::orphan_removals(logs),
            &invariants::sessions_ended(logs),
            self.config.orphan_grace,
        ));
        violations.extend(invariants::expected_answers(&killed.requests.unexpected));
        violations.extend(invariants::planted_faults_repaired(
            &after.containers,
            &planted.orphan,
            planted.dead.is_some(),
            totals.orphans_reaped,
            totals.reconciled,
        ));
        if let Err(violation) = self.foreign.check() {
            violations.push(violation);
        }
        violations
            .extend(invariants::workspace_archives_whole(&self.env.data_dir().join("workspaces")));
        violations
    }

    /// Stops the restarted server, which must exit cleanly on SIGTERM.
    fn stop(&self, cycle: usize, mut server: Server) -> Result<(), String> {
        let status = tokio::task::block_in_place(|| server.terminate());
        if status.success() {
            return Ok(());
        }
        let why = format!("the restarted server did not exit cleanly on SIGTERM: {status}");
        Err(self.keep_logs(cycle, &why, &server.logs()))
    }

    fn db(&self) -> PathBuf {
        self.env.data_dir().join("sandkeeper.db")
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
