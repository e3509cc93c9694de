//! How a cycle brings the store and the engine back into agreement: a restarted server and
//! `POST /v1/maintenance/sweep`, or `sandkeeper maintain` with no server running. Either way
//! the sweep runs only once every container of the instance is older than the orphan grace.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::observe::containers_of_instance;
use super::plan::duration_arg;
use super::report::Timings;
use super::{Cycle, SweepTotals};
use crate::{Server, metric};

/// How many sweeps a recovery may need when the first ones are cut short by the sweep's time
/// budget (250 ms of new work per pass) before the run gives up.
const MAX_RECOVERY_SWEEPS: usize = 5;
/// How long a restarted server may take to finish its start-up maintenance pass.
const STARTUP_PASS_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to the orphan grace before the recovery sweep, for the engine's and our clock reads.
const GRACE_MARGIN: Duration = Duration::from_millis(300);

impl SweepTotals {
    /// Counts one sweep that took `took`.
    fn count(&mut self, took: Duration) {
        self.time += took;
        self.sweeps += 1;
    }

    /// Whether another sweep is needed after one that answered `report`, or the error of too
    /// many sweeps cut short (`what` names them).
    fn again_after(&self, report: &Value, what: &str) -> Result<bool, String> {
        if report["timed_out"] != Value::Bool(true) {
            return Ok(false);
        }
        if self.sweeps >= MAX_RECOVERY_SWEEPS {
            return Err(format!(
                "{MAX_RECOVERY_SWEEPS} {what} in a row were cut short by their time budget"
            ));
        }
        Ok(true)
    }
}

impl Cycle<'_> {
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
    pub(super) async fn sweep_through_api(
        &self,
        server: &Server,
        timings: &mut Timings,
    ) -> Result<SweepTotals, String> {
        wait_for_startup_pass(server).await?;
        timings.lap("start-up pass");
        wait_for_full_pool(server).await?;
        timings.lap("pool");
        self.wait_out_the_grace().await?;
        timings.lap("grace");
        let mut totals = SweepTotals::default();
        loop {
            let started = Instant::now();
            let (status, report) =
                server.send(server.request(reqwest::Method::POST, "/v1/maintenance/sweep")).await;
            totals.count(started.elapsed());
            if status != reqwest::StatusCode::OK {
                return Err(format!("POST /v1/maintenance/sweep answered {status}: {report}"));
            }
            totals.errors += report["errors"].as_u64().unwrap_or(0);
            if !totals.again_after(&report, "sweeps")? {
                break;
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

    /// `sandkeeper maintain` with no server running, until a pass was not cut short. Returns
    /// the totals and the logs of the passes.
    pub(super) async fn sweep_with_maintain(
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
            let pass = self.maintain_once(&mut logs).await;
            totals.count(started.elapsed());
            let report = match pass {
                Ok(report) => report,
                Err(why) => return (Err(why), logs),
            };
            let count = |name: &str| report[name].as_u64().unwrap_or(0);
            totals.orphans_reaped += count("orphans_removed");
            totals.reconciled += count("reconciled");
            totals.removed += count("removed");
            totals.errors += count("errors");
            match totals.again_after(&report, "maintain passes") {
                Ok(true) => {}
                Ok(false) => break,
                Err(why) => return (Err(why), logs),
            }
        }
        timings.lap("maintain");
        (Ok(totals), logs)
    }

    /// One `sandkeeper maintain`: its JSON report; its log lines go to `logs`.
    async fn maintain_once(&self, logs: &mut String) -> Result<Value, String> {
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
            .expect("the maintain command was waited for")
            .map_err(|error| format!("cannot run sandkeeper maintain: {error}"))?;
        logs.push_str(&String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).map_err(|_| {
            format!(
                "sandkeeper maintain printed no report ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }
}

/// How long a restarted server's pool may take to be full again: the places a killed server
/// left starting are freed 30 s after they were reserved.
const POOL_FILL_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until the restarted server's warm pool is full and nothing starts, so that nothing
/// moves while the cycle is checked (the refill moves again only on a claim).
async fn wait_for_full_pool(server: &Server) -> Result<(), String> {
    let deadline = Instant::now() + POOL_FILL_TIMEOUT;
    loop {
        let (status, pool) = server.get("/v1/pool").await;
        if status == reqwest::StatusCode::OK
            && pool["ready"] == pool["target"]
            && pool["starting"] == 0
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the restarted server's pool was not full within {POOL_FILL_TIMEOUT:?}: {pool}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the restarted server's start-up maintenance pass has finished (its metric shows).
async fn wait_for_startup_pass(server: &Server) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_PASS_TIMEOUT;
    loop {
        let text = server.metrics().await;
        if text.contains("background_pass_total{loop=\"maintenance\"") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the restarted server's start-up maintenance pass did not finish within \
                 {STARTUP_PASS_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
