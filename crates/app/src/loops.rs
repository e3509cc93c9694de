//! The background loops: cleanup of expired sandboxes, the maintenance sweep, and the watcher
//! of container exits.
//!
//! Each loop waits its interval with ±10% jitter (so that replicas drift apart), runs one pass
//! bounded in time, logs and counts the outcome, and goes on whatever happened. A pass that is
//! running when shutdown is asked for is allowed to finish (it is bounded); the wait between
//! passes is cut short.
//!
//! The watcher follows the runtime's report of container exits and hands each one to
//! `RecordContainerExit`, so that a sandbox whose container died is marked crashed within
//! moments instead of at the next sweep. When the runtime goes away it watches again after a
//! backoff, asking for what it missed meanwhile; it stops at shutdown. There is one watcher
//! per engine.
//!
//! The engine probe pings every engine every [`ENGINE_PROBE_INTERVAL`]: one that does not
//! answer is marked down (the use cases also mark an engine down when a call finds it
//! unreachable), one that answers again is marked up; the gauge `sandbox.engine.up{engine}`
//! follows it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sandkeeper_domain::Timestamp;
use sandkeeper_ports::ContainerExit;
use sandkeeper_ports::Report;
use sandkeeper_usecase::SweepOutcome;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::services::Services;

/// Counter `background.pass.total{loop, result=ok|skipped|error|timeout}`.
const PASS_TOTAL: &str = "background.pass.total";

/// The longest a single pass may run before it is abandoned; the next pass picks up whatever
/// it left (every step of a pass is safe to repeat).
const PASS_TIMEOUT: Duration = Duration::from_secs(120);

/// Counter `background.exit_watch.lost.total`: how often the watch of container exits ended
/// (the engine went away or could not be reached) and had to be made again.
const EXIT_WATCH_LOST_TOTAL: &str = "background.exit_watch.lost.total";
/// The wait before watching again after the first loss; doubled after each further one.
const EXIT_WATCH_FIRST_BACKOFF: Duration = Duration::from_millis(500);
const EXIT_WATCH_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A watch that lasted this long was working: the backoff after its end starts afresh.
const EXIT_WATCH_SETTLED: Duration = Duration::from_secs(10);
/// When watching again, ask for the exits since a little before the last watch ended, so that
/// none reported meanwhile is lost (one reported twice changes nothing).
const EXIT_WATCH_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(2);
/// The longest the pool's refill waits between passes without a claim.
const POOL_REFILL_INTERVAL: Duration = Duration::from_secs(2);
/// The longest wait after refill passes that kept failing (doubled from the interval).
const POOL_REFILL_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Exits read but not yet handed to a task; the runtime waits while it is full.
const EXIT_QUEUE: usize = 256;

/// How often each engine is pinged, and how long a ping may take.
pub(crate) const ENGINE_PROBE_INTERVAL: Duration = Duration::from_secs(2);
const ENGINE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Gauge `sandbox.engine.up{engine}`: 1 while the engine answers, 0 while it does not.
const ENGINE_UP: &str = "sandbox.engine.up";

/// The intervals of the loops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopSettings {
    pub(crate) cleanup_interval: Duration,
    pub(crate) maintenance_interval: Duration,
}

/// Starts the loops and the watcher of container exits. The first sweep runs at once (in the
/// background: readiness never waits for it); the first cleanup after one interval. They stop
/// when `shutdown` is cancelled.
pub(crate) fn spawn(
    services: Arc<Services>,
    settings: LoopSettings,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let cleanup = {
        let services = Arc::clone(&services);
        run_every("cleanup", settings.cleanup_interval, false, shutdown.clone(), move || {
            let services = Arc::clone(&services);
            async move { cleanup_pass(&services).await }
        })
    };
    let sweep = {
        let services = Arc::clone(&services);
        run_every("maintenance", settings.maintenance_interval, true, shutdown.clone(), move || {
            let services = Arc::clone(&services);
            async move { sweep_pass(&services).await }
        })
    };
    let checkpoints = services.checkpoint_interval.map(|interval| {
        let services = Arc::clone(&services);
        tokio::spawn(run_every("checkpoint", interval, false, shutdown.clone(), move || {
            let services = Arc::clone(&services);
            async move {
                let Some(workspaces) = &services.workspaces else { return Pass::Skipped };
                let report = workspaces.checkpoint().await;
                if report.failed > 0 { Pass::Failed } else { Pass::Ok }
            }
        }))
    });
    let mut tasks = vec![tokio::spawn(cleanup), tokio::spawn(sweep)];
    tasks.push(tokio::spawn(refill_pool(Arc::clone(&services), shutdown.clone())));
    for engine in 0..services.engines().len() {
        tasks.push(tokio::spawn(watch_exits(Arc::clone(&services), engine, shutdown.clone())));
    }
    tasks.push(tokio::spawn(probe_engines(services, shutdown.clone())));
    tasks.extend(checkpoints);
    tasks
}

/// Pings every engine each [`ENGINE_PROBE_INTERVAL`] until shutdown and records whether it is
/// up (see the module's documentation).
async fn probe_engines(services: Arc<Services>, shutdown: CancellationToken) {
    loop {
        let pings = services.engines().iter().map(|engine| async move {
            let answer = tokio::time::timeout(ENGINE_PROBE_TIMEOUT, engine.runtime().ping()).await;
            (engine, answer)
        });
        for (engine, answer) in futures::future::join_all(pings).await {
            let name = engine.name().to_string();
            match answer {
                Ok(Ok(())) => {
                    if engine.mark_up() {
                        tracing::info!(engine = %name, "engine_up");
                    }
                }
                Ok(Err(error)) => {
                    if engine.mark_down(services.clock().now()) {
                        tracing::warn!(
                            engine = %name,
                            error.type = error.kind(),
                            error.message = %Report(&error),
                            "engine_down"
                        );
                    }
                }
                Err(_) => {
                    if engine.mark_down(services.clock().now()) {
                        tracing::warn!(engine = %name, error.type = "runtime_timeout", "engine_down");
                    }
                }
            }
            metrics::gauge!(ENGINE_UP, "engine" => name).set(if engine.is_up() {
                1.0
            } else {
                0.0
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(ENGINE_PROBE_INTERVAL) => {}
            () = shutdown.cancelled() => break,
        }
    }
}

/// Follows the runtime's container exits until shutdown, watching again with a backoff
/// whenever the runtime goes away. Each exit is recorded by a task of its own, so that one
/// waiting for its chat's lock holds back no other.
async fn watch_exits(services: Arc<Services>, engine: usize, shutdown: CancellationToken) {
    let Some(runtime) = services.engines().iter().nth(engine).map(|e| Arc::clone(e.runtime()))
    else {
        return;
    };
    let (sender, mut receiver) = mpsc::channel::<ContainerExit>(EXIT_QUEUE);
    let mut since: Option<Timestamp> = None;
    let mut backoff = EXIT_WATCH_FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        let watch = runtime.watch_exits(since, &sender);
        tokio::pin!(watch);
        let ended = loop {
            tokio::select! {
                result = &mut watch => break Some(result),
                Some(exit) = receiver.recv() => {
                    let services = Arc::clone(&services);
                    // The use case logs and counts what it did, failures included.
                    tokio::spawn(async move { let _ = services.record_exit.execute(&exit).await; });
                }
                () = shutdown.cancelled() => break None,
            }
        };
        let Some(result) = ended else { break };
        let settled = started.elapsed() >= EXIT_WATCH_SETTLED;
        if settled {
            backoff = EXIT_WATCH_FIRST_BACKOFF;
        }
        metrics::counter!(EXIT_WATCH_LOST_TOTAL).increment(1);
        let message = match &result {
            Ok(()) => "the watch ended".to_owned(),
            Err(error) => Report(error).to_string(),
        };
        let error_type = result.as_ref().err().map_or("ended", |error| error.kind());
        if backoff == EXIT_WATCH_FIRST_BACKOFF {
            tracing::warn!(
                error.type = error_type,
                error.message = %message,
                retry_in = %humantime::format_duration(backoff),
                "container_exit_watch_lost"
            );
        } else {
            tracing::debug!(
                error.type = error_type,
                error.message = %message,
                retry_in = %humantime::format_duration(backoff),
                "container_exit_watch_lost"
            );
        }
        // After a watch that failed at once, ask again from where the last working one ended.
        if since.is_none() || settled {
            let lost_at = services.clock().now();
            since = Some(lost_at.checked_sub_signed(EXIT_WATCH_OVERLAP).unwrap_or(lost_at));
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(EXIT_WATCH_MAX_BACKOFF);
    }
    tracing::debug!("container exit watcher stopped");
}

/// Keeps the warm pool full until shutdown: a refill pass at once, again at once while places
/// are missing and the last pass started something, otherwise after a claim or
/// [`POOL_REFILL_INTERVAL`] (which also recycles aged containers and, with size 0, drains a
/// pool left by an earlier configuration). Passes that keep failing wait longer each time, up
/// to [`POOL_REFILL_MAX_BACKOFF`] (a claim still wakes the loop).
async fn refill_pool(services: Arc<Services>, shutdown: CancellationToken) {
    let pool = &services.pool;
    let mut backoff = POOL_REFILL_INTERVAL;
    loop {
        let report = tokio::select! {
            report = tokio::time::timeout(PASS_TIMEOUT, pool.refill()) => report,
            () = shutdown.cancelled() => break,
        };
        let result = match &report {
            Ok(Ok(report)) if report.errors > 0 => "error",
            Ok(Ok(_)) => "ok",
            Ok(Err(error)) => {
                tracing::warn!(error.type = error.kind(), error.message = %Report(error),
                    "pool_refill_failed");
                "error"
            }
            Err(_) => "timeout",
        };
        metrics::counter!(PASS_TOTAL, "loop" => "pool", "result" => result).increment(1);
        let progressed =
            matches!(&report, Ok(Ok(report)) if report.started > 0 && report.errors == 0);
        if progressed && pool.is_short().await {
            continue;
        }
        // Failing passes (Docker or the store away, an image missing) back off.
        backoff = if result == "ok" {
            POOL_REFILL_INTERVAL
        } else {
            (backoff * 2).min(POOL_REFILL_MAX_BACKOFF)
        };
        let wait = jittered(backoff, rand::rng().random_range(-0.1..=0.1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = pool.claimed() => {}
            () = shutdown.cancelled() => break,
        }
    }
    tracing::debug!(r#loop = "pool", "background loop stopped");
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
            tracing::warn!(error.type = error.kind(), error.message = %Report(&error), "cleanup_pass_failed");
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
            tracing::warn!(error.type = error.kind(), error.message = %Report(&error), "maintenance_pass_failed");
            Pass::Failed
        }
    }
}

async fn run_every<F, Fut>(
    name: &'static str,
    interval: Duration,
    run_at_once: bool,
    shutdown: CancellationToken,
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
                () = shutdown.cancelled() => break,
            }
        }
        first = false;
        if shutdown.is_cancelled() {
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

    use chrono::{TimeZone, Utc};
    use sandkeeper_domain::{ChatId, SandboxStatus};
    use sandkeeper_ports::inprocess::{
        InMemoryLeases, InMemorySessionRepository, ProcessLocalLocker,
    };
    use sandkeeper_ports::testkit::{FakeRuntime, ManualClock};
    use sandkeeper_ports::{Clock, RuntimeError, SessionRepository};
    use sandkeeper_usecase::{CreateResult, CreateSandboxCommand};

    use super::*;
    use crate::config::ServiceSettings;
    use crate::services::{Ports, Probe};

    fn services(runtime: &FakeRuntime) -> (Arc<Services>, Arc<InMemorySessionRepository>) {
        let repository = Arc::new(InMemorySessionRepository::new());
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap()));
        let store_probe: Probe = Arc::new(|| Box::pin(async { Ok(()) }));
        let ports = Ports {
            repository: Arc::clone(&repository) as Arc<dyn SessionRepository>,
            leases: Arc::new(InMemoryLeases::new(Arc::clone(&clock) as Arc<dyn Clock>)),
            locker: Arc::new(ProcessLocalLocker::new()),
            engines: sandkeeper_ports::Engines::single(Arc::new(runtime.clone())),
            clock,
            store_probe,
            workspaces: None,
            pool: crate::services::pools_in_memory(),
        };
        (Arc::new(Services::new(ports, &ServiceSettings::default())), repository)
    }

    async fn status_becomes(
        repository: &InMemorySessionRepository,
        session: &sandkeeper_domain::SandboxSession,
        status: SandboxStatus,
    ) {
        for _ in 0..500 {
            let now = repository.get(session.session_id).await.unwrap().map(|s| s.status);
            if now == Some(status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("session {} never became {status}", session.session_id);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_crashes_the_session_of_a_container_that_exits_and_stops_on_shutdown() {
        let runtime = FakeRuntime::new();
        let (services, repository) = services(&runtime);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(watch_exits(Arc::clone(&services), 0, shutdown.clone()));
        runtime.watchers(1).await;
        let chat = ChatId::parse("11111111-1111-1111-1111-111111111111").unwrap();
        let created = services.create.execute(CreateSandboxCommand::new(chat)).await.unwrap();

        runtime.exit(&created.session.container_id);
        status_becomes(&repository, &created.session, SandboxStatus::Crashed).await;
        let next = services.create.execute(CreateSandboxCommand::new(chat)).await.unwrap();
        assert_eq!(next.result, CreateResult::Created);
        assert_eq!(runtime.watch_calls(), vec![None], "one watch, never lost");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task).await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_watches_again_with_backoff_and_asks_for_what_it_missed() {
        let runtime = FakeRuntime::new();
        let (services, repository) = services(&runtime);
        let unavailable = RuntimeError::Unavailable("cannot reach the Docker engine".into());
        runtime.fail_watch(unavailable.clone());
        runtime.fail_watch(unavailable);
        let shutdown = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(watch_exits(Arc::clone(&services), 0, shutdown.clone()));
        runtime.watchers(1).await;
        // 0.5 s, then 1 s.
        assert!(started.elapsed() >= Duration::from_millis(1500), "{:?}", started.elapsed());
        let calls = runtime.watch_calls();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(calls[0], None);
        let lost_at = Utc.with_ymd_and_hms(2026, 4, 2, 11, 59, 58).unwrap();
        assert_eq!(&calls[1..], &[Some(lost_at), Some(lost_at)]);

        let chat = ChatId::parse("11111111-1111-1111-1111-111111111111").unwrap();
        let created = services.create.execute(CreateSandboxCommand::new(chat)).await.unwrap();
        runtime.exit(&created.session.container_id);
        status_becomes(&repository, &created.session, SandboxStatus::Crashed).await;

        // The engine goes away while watching: the watcher comes back by itself.
        runtime.drop_watchers();
        runtime.watchers(1).await;
        assert_eq!(runtime.watch_calls().len(), 4);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task).await.unwrap().unwrap();
    }

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

    /// A loop started at once, every `interval`, whose pass counts itself and then runs `pass`
    /// with the number of passes before it: the count, the loop's shutdown and its task.
    fn counting_loop<Fut>(
        interval: Duration,
        pass: impl Fn(usize) -> Fut + Send + 'static,
    ) -> (Arc<AtomicUsize>, CancellationToken, tokio::task::JoinHandle<()>)
    where
        Fut: Future<Output = Pass> + Send + 'static,
    {
        let passes = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let counter = Arc::clone(&passes);
        let task = tokio::spawn(run_every("test", interval, true, shutdown.clone(), move || {
            pass(counter.fetch_add(1, Ordering::SeqCst))
        }));
        (passes, shutdown, task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_runs_each_interval_survives_failures_and_stops_on_shutdown() {
        let (passes, shutdown, task) =
            counting_loop(Duration::from_secs(10), |before| async move {
                // Every other pass fails; the loop must go on regardless.
                if before % 2 == 0 { Pass::Failed } else { Pass::Ok }
            });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 1, "the first pass runs at once");
        tokio::time::sleep(Duration::from_secs(35)).await;
        let seen = passes.load(Ordering::SeqCst);
        assert!((4..=5).contains(&seen), "about one pass per 10 s after the first: {seen}");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task).await.unwrap().unwrap();
        let after = passes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(passes.load(Ordering::SeqCst), after, "no pass after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_that_hangs_is_abandoned_and_the_loop_goes_on() {
        let (passes, shutdown, _task) =
            counting_loop(Duration::from_secs(1), |before| async move {
                if before == 0 {
                    std::future::pending::<()>().await;
                }
                Pass::Ok
            });
        tokio::time::sleep(PASS_TIMEOUT + Duration::from_secs(3)).await;
        assert!(passes.load(Ordering::SeqCst) >= 2, "the loop went on after the hung pass");
        shutdown.cancel();
    }
}
