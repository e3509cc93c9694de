//! The use cases, built once from the ports, and what the app adds around them: readiness
//! checks and the explicit (forced, but never concurrent) maintenance sweep.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sandkeeper_domain::EngineName;
use sandkeeper_ports::{
    Clock, Engines, LifecycleLocker, MaintenanceLeases, PoolStore, SessionRepository,
    WorkspaceStore,
};
use sandkeeper_usecase::{
    CleanupExpiredSandboxes, CreateSandbox, DeleteSandbox, ExecInSandbox, KeepAlive,
    MaintenanceError, MaintenanceReport, MaintenanceSweep, RecordContainerExit, SandboxAccess,
    SandboxFiles, SandboxProcesses, SandboxQueries, SandboxSlots, SandboxTerminal, SweepOutcome,
    WarmPools, Workspaces,
};
use tokio::time::Instant;

use crate::config::{ServiceSettings, TtlMode};

/// How long a readiness check may take before its dependency counts as unavailable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an explicit sweep asks again for a lease that another sweep holds.
const LEASE_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// A check that a dependency answers; the error says why not.
pub(crate) type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The store of an engine's warm pool slots.
pub(crate) type PoolStores = Arc<dyn Fn(&EngineName) -> Arc<dyn PoolStore> + Send + Sync>;

/// Pools kept in this process, one store per engine (tests).
#[cfg(test)]
pub(crate) fn pools_in_memory() -> PoolStores {
    Arc::new(|_: &EngineName| {
        Arc::new(sandkeeper_ports::inprocess::InMemoryPoolStore::new()) as Arc<dyn PoolStore>
    })
}

/// The ports the use cases run on, chosen by the wiring (or by a test).
#[derive(Clone)]
pub(crate) struct Ports {
    pub(crate) repository: Arc<dyn SessionRepository>,
    pub(crate) leases: Arc<dyn MaintenanceLeases>,
    pub(crate) locker: Arc<dyn LifecycleLocker>,
    /// The engines sandboxes run on (one named `default` without `--engine`).
    pub(crate) engines: Engines,
    pub(crate) clock: Arc<dyn Clock>,
    /// Whether the store answers (its own ping, cheaper than a query).
    pub(crate) store_probe: Probe,
    /// Where workspace archives are kept; `None`: nowhere (`--workspace-store off`).
    pub(crate) workspaces: Option<Arc<dyn WorkspaceStore>>,
    /// Where each engine's warm pool keeps its slots.
    pub(crate) pool: PoolStores,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}

/// Every operation of the service.
pub(crate) struct Services {
    pub(crate) create: CreateSandbox,
    pub(crate) delete: DeleteSandbox,
    pub(crate) queries: SandboxQueries,
    pub(crate) cleanup: CleanupExpiredSandboxes,
    pub(crate) sweep: MaintenanceSweep,
    pub(crate) keep_alive: KeepAlive,
    pub(crate) exec: ExecInSandbox,
    pub(crate) files: SandboxFiles,
    pub(crate) processes: SandboxProcesses,
    pub(crate) terminal: SandboxTerminal,
    pub(crate) record_exit: RecordContainerExit,
    /// Durable workspaces, when a store keeps them.
    pub(crate) workspaces: Option<Workspaces>,
    /// How often changed workspaces are checkpointed; `None`: never.
    pub(crate) checkpoint_interval: Option<Duration>,
    /// The warm pools (one per engine; their refill loop runs whatever their size, so that a
    /// size lowered to 0 drains them).
    pub(crate) pool: WarmPools,
    engines: Engines,
    clock: Arc<dyn Clock>,
    store_probe: Probe,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").field("sweep", &self.sweep).finish_non_exhaustive()
    }
}

/// Whether each dependency answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub(crate) store: Result<(), String>,
    /// Ready while at least one engine answers; the error names each engine and why not.
    pub(crate) docker: Result<(), String>,
}

impl Readiness {
    pub(crate) fn is_ready(&self) -> bool {
        self.store.is_ok() && self.docker.is_ok()
    }
}

/// Why an explicit sweep did not run.
#[derive(Debug)]
pub(crate) enum SweepError {
    /// Another sweep held the lease for as long as this one was willing to wait.
    Busy {
        waited: Duration,
    },
    Failed(MaintenanceError),
}

impl std::fmt::Display for SweepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy { waited } => write!(
                f,
                "another maintenance sweep still held the lease after {}; retry shortly",
                humantime::format_duration(*waited)
            ),
            Self::Failed(error) => write!(
                f,
                "{}; check the session store, the next run retries",
                sandkeeper_ports::Report(error)
            ),
        }
    }
}

impl Services {
    pub(crate) fn new(ports: Ports, settings: &ServiceSettings) -> Self {
        let Ports { repository, leases, locker, engines, clock, store_probe, workspaces, pool } =
            ports;
        let pool = WarmPools::new(
            &engines,
            |engine| pool(engine),
            Arc::clone(&repository),
            Arc::clone(&clock),
            settings.pool.clone(),
        );
        let config = settings.workspaces.as_ref();
        let workspaces = workspaces.zip(config).map(|(store, config)| {
            Workspaces::new(
                store,
                engines.clone(),
                Arc::clone(&repository),
                Arc::clone(&locker),
                Arc::clone(&clock),
                config.settings.clone(),
            )
        });
        let checkpoint_interval =
            workspaces.as_ref().and(config).and_then(|config| config.checkpoint_interval);
        let create = CreateSandbox::new(
            Arc::clone(&repository),
            Arc::clone(&locker),
            engines.clone(),
            Arc::clone(&clock),
            settings.keep_alive.default_ttl,
        )
        .with_max_sandboxes(settings.max_sandboxes)
        .with_workspaces(workspaces.clone())
        .with_pool(Some(pool.clone()));
        let delete =
            DeleteSandbox::new(Arc::clone(&repository), Arc::clone(&locker), engines.clone())
                .with_clock(Arc::clone(&clock))
                .with_workspaces(workspaces.clone());
        let queries = SandboxQueries::new(Arc::clone(&repository));
        let (keep_alive, exec, files, processes, terminal) =
            operations(&repository, &locker, &engines, &clock, settings, workspaces.as_ref());
        let cleanup = CleanupExpiredSandboxes::new(
            Arc::clone(&repository),
            Arc::clone(&locker),
            engines.clone(),
            Arc::clone(&clock),
        )
        .with_workspaces(workspaces.clone());
        let record_exit = RecordContainerExit::new(Arc::clone(&repository), Arc::clone(&locker))
            .with_pool(Some(pool.clone()));
        let sweep = MaintenanceSweep::new(
            repository,
            engines.clone(),
            leases,
            Arc::clone(&clock),
            settings.maintenance.clone(),
        )
        .with_workspaces(workspaces.clone())
        .with_pool(Some(pool.clone()));
        Self {
            create,
            delete,
            queries,
            cleanup,
            sweep,
            keep_alive,
            exec,
            files,
            processes,
            terminal,
            record_exit,
            workspaces,
            checkpoint_interval,
            pool,
            engines,
            clock,
            store_probe,
        }
    }

    /// The engines, for the watchers of container exits and the engine probe.
    pub(crate) fn engines(&self) -> &Engines {
        &self.engines
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Asks the store and every engine at the same time, each bounded by [`PROBE_TIMEOUT`].
    /// Docker counts as ready while one engine answers.
    pub(crate) async fn readiness(&self) -> Readiness {
        let docker = async {
            let pings = self.engines.iter().map(|engine| async move {
                (engine, tokio::time::timeout(PROBE_TIMEOUT, engine.runtime().ping()).await)
            });
            let answers = futures::future::join_all(pings).await;
            let single = answers.len() == 1;
            let mut failures = Vec::new();
            for (engine, answer) in answers {
                let why = match answer {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(error)) => sandkeeper_ports::Report(&error).to_string(),
                    Err(_) => {
                        format!("no answer within {}", humantime::format_duration(PROBE_TIMEOUT))
                    }
                };
                failures.push(if single {
                    why
                } else {
                    format!("engine {}: {why}", engine.name())
                });
            }
            Err(failures.join("; "))
        };
        let store = async {
            match tokio::time::timeout(PROBE_TIMEOUT, (self.store_probe)()).await {
                Ok(result) => result,
                Err(_) => {
                    Err(format!("no answer within {}", humantime::format_duration(PROBE_TIMEOUT)))
                }
            }
        };
        let (store, docker) = tokio::join!(store, docker);
        Readiness { store, docker }
    }

    /// One sweep now, whenever the last one ran, but never beside another: while another
    /// sweep holds the lease this waits, at most a little longer than a lease lasts (so that
    /// the lease of a crashed holder runs out), then gives up.
    pub(crate) async fn sweep_now(self: &Arc<Self>) -> Result<MaintenanceReport, SweepError> {
        let patience = self.sweep.settings().lease_duration + Duration::from_secs(2);
        let started = Instant::now();
        loop {
            match self.sweep_once(true).await.map_err(SweepError::Failed)? {
                SweepOutcome::Completed(report) => return Ok(report),
                SweepOutcome::Skipped if started.elapsed() >= patience => {
                    return Err(SweepError::Busy { waited: started.elapsed() });
                }
                SweepOutcome::Skipped => tokio::time::sleep(LEASE_RETRY_INTERVAL).await,
            }
        }
    }
}

impl Services {
    /// One sweep pass (see [`MaintenanceSweep::run`]).
    pub(crate) async fn sweep_once(&self, force: bool) -> Result<SweepOutcome, MaintenanceError> {
        self.sweep.run(force).await
    }
}

/// Keep-alive, exec and file transfers. Exec and transfers enter sandboxes through one
/// `SandboxAccess`, so they share one bound per sandbox; in sliding mode both keep their sandbox
/// alive while they run.
fn operations(
    repository: &Arc<dyn SessionRepository>,
    locker: &Arc<dyn LifecycleLocker>,
    engines: &Engines,
    clock: &Arc<dyn Clock>,
    settings: &ServiceSettings,
    workspaces: Option<&Workspaces>,
) -> (KeepAlive, ExecInSandbox, SandboxFiles, SandboxProcesses, SandboxTerminal) {
    let keep_alive = KeepAlive::new(
        Arc::clone(repository),
        Arc::clone(locker),
        Arc::clone(clock),
        settings.keep_alive,
    );
    let mut access = SandboxAccess::new(
        Arc::clone(repository),
        engines.clone(),
        Arc::clone(clock),
        SandboxSlots::new(settings.per_sandbox),
    );
    if settings.ttl_mode == TtlMode::Sliding {
        access = access.with_sliding_expiry(keep_alive.clone());
    }
    if let Some(workspaces) = workspaces {
        access = access.with_workspace_changes(workspaces.changes().clone());
    }
    let exec = ExecInSandbox::new(access.clone(), settings.exec);
    let files = SandboxFiles::new(access.clone(), settings.files);
    let processes = SandboxProcesses::new(access.clone(), settings.processes);
    let terminal = SandboxTerminal::new(access);
    (keep_alive, exec, files, processes, terminal)
}
