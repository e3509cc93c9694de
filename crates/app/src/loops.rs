//! The background loops: cleanup of expired sandboxes and the maintenance sweep.
//!
//! Each loop waits its interval with ±10% jitter (so that replicas drift apart), runs one pass
//! bounded in time, logs and counts the outcome, and goes on whatever happened. A pass that is
//! running when shutdown is asked for is allowed to finish (it is bounded); the wait between
//! passes is cut short.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sandkeeper_usecase::SweepOutcome;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::services::Services;

/// Counter `background.pass.total{loop, result=ok|skipped|error|timeout}`.
const PASS_TOTAL: &str = "background.pass.total";

/// The longest a single pass may run before it is abandoned; the next pass picks up whatever
/// it left (every step of a pass is safe to repeat).
const PASS_TIMEOUT: Duration = Duration::from_secs(120);

/// Tells the loops to stop.
#[derive(Debug)]
pub(crate) struct Shutdown {
    sender: watch::Sender<bool>,
}

impl Shutdown {
    pub(crate) fn new() -> Self {
        Self { sender: watch::Sender::new(false) }
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.sender.subscribe()
    }

    pub(crate) fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

/// The intervals of the loops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopSettings {
    pub(crate) cleanup_interval: Duration,
    pub(crate) maintenance_interval: Duration,
}

/// Starts both loops. The first sweep runs at once (in the background: readiness never waits
/// for it); the first cleanup after one interval.
pub(crate) fn spawn(
    services: Arc<Services>,
    settings: LoopSettings,
    shutdown: &Shutdown,
) -> Vec<JoinHandle<()>> {
    let cleanup = {
        let services = Arc::clone(&services);
        run_every("cleanup", settings.cleanup_interval, false, shutdown.subscribe(), move || {
            let services = Arc::clone(&services);
            async move { cleanup_pass(&services).await }
        })
    };
    let sweep = run_every(
        "maintenance",
        settings.maintenance_interval,
        true,
        shutdown.subscribe(),
        move || {
            let services = Arc::clone(&services);
            async move { sweep_pass(&services).await }
        },
    );
    vec![tokio::spawn(cleanup), tokio::spawn(sweep)]
}

/// What one pass came to, for the log and the counter.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    Ok,
    Skipped,
    Failed,
}

async fn cleanup_pass(services: &Services) -> Pass {
    match services.cleanup.execute().await {
        Ok(report) => {
            if report.expired > 0 {
                tracing::info!(
                    expired = report.expired,
                    cleaned = report.cleaned.len(),
                    skipped = report.skipped,
                    errors = report.errors.len(),
                    "cleanup_pass_finished"
                );
            }
            if report.errors.is_empty() { Pass::Ok } else { Pass::Failed }
        }
        Err(error) => {
            tracing::warn!(error.type = error.kind(), error.message = %error, "cleanup_pass_failed");
            Pass::Failed
        }
    }
}

async fn sweep_pass(services: &Arc<Services>) -> Pass {
    match services.sweep_once(false).await {
        Ok(SweepOutcome::Completed(report)) => {
            if report.errors > 0 {
                Pass::Failed
            } else {
                Pass::Ok
            }
        }
        Ok(SweepOutcome::Skipped) => Pass::Skipped,
        Err(error) => {
            tracing::warn!(error.type = error.kind(), error.message = %error, "maintenance_pass_failed");
            Pass::Failed
        }
    }
}

async fn run_every<F, Fut>(
    name: &'static str,
    interval: Duration,
    run_at_once: bool,
    mut shutdown: watch::Receiver<bool>,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Pass>,
{
    let mut first = run_at_once;
    loop {
        if !first {
            let wait = jittered(interval, rand::rng().random_range(-0.1..=0.1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        first = false;
        if *shutdown.borrow() {
            break;
        }
        let result = match tokio::time::timeout(PASS_TIMEOUT, pass()).await {
            Ok(Pass::Ok) => "ok",
            Ok(Pass::Skipped) => "skipped",
            Ok(Pass::Failed) => "error",
            Err(_) => {
                tracing::warn!(
                    r#loop = name,
                    timeout = %humantime::format_duration(PASS_TIMEOUT),
                    "background pass abandoned after its time limit; the next pass continues"
                );
                "timeout"
            }
        };
        metrics::counter!(PASS_TOTAL, "loop" => name, "result" => result).increment(1);
    }
    tracing::debug!(r#loop = name, "background loop stopped");
}

/// `interval` stretched by `factor` (-0.1 shortens it by 10%).
fn jittered(interval: Duration, factor: f64) -> Duration {
    interval.mul_f64((1.0 + factor).max(0.0))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(10);
        assert_eq!(jittered(interval, -0.1), Duration::from_secs(9));
        assert_eq!(jittered(interval, 0.1), Duration::from_secs(11));
        for _ in 0..100 {
            let wait = jittered(interval, rand::rng().random_range(-0.1..=0.1));
            assert!((Duration::from_secs(9)..=Duration::from_secs(11)).contains(&wait));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_runs_each_interval_survives_failures_and_stops_on_shutdown() {
        let passes = Arc::new(AtomicUsize::new(0));
        let shutdown = Shutdown::new();
        let counter = Arc::clone(&passes);
        let task = tokio::spawn(run_every(
            "test",
            Duration::from_secs(10),
            true,
            shutdown.subscribe(),
            move || {
                let counter = Arc::clone(&counter);
                async move {
                    // Every other pass fails; the loop must go on regardless.
                    if counter.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                        Pass::Failed
                    } else {
                        Pass::Ok
                    }
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 1, "the first pass runs at once");
        tokio::time::sleep(Duration::from_secs(35)).await;
        let seen = passes.load(Ordering::SeqCst);
        assert!((4..=5).contains(&seen), "about one pass per 10 s after the first: {seen}");
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(1), task).await.unwrap().unwrap();
        let after = passes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(passes.load(Ordering::SeqCst), after, "no pass after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_that_hangs_is_abandoned_and_the_loop_goes_on() {
        let passes = Arc::new(AtomicUsize::new(0));
        let shutdown = Shutdown::new();
        let counter = Arc::clone(&passes);
        let _task = tokio::spawn(run_every(
            "test",
            Duration::from_secs(1),
            true,
            shutdown.subscribe(),
            move || {
                let counter = Arc::clone(&counter);
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                        std::future::pending::<()>().await;
                    }
                    Pass::Ok
                }
            },
        ));
        tokio::time::sleep(PASS_TIMEOUT + Duration::from_secs(3)).await;
        assert!(passes.load(Ordering::SeqCst) >= 2, "the loop went on after the hung pass");
        shutdown.trigger();
    }
}
