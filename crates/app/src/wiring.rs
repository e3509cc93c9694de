//! Builds the real adapters from the configuration: the SQL store (SQLite by default,
//! PostgreSQL by URL), the Docker runtime, and the chat locker that fits the store.

use std::sync::Arc;

use sandkeeper_adapters_docker::DockerRuntime;
use sandkeeper_adapters_sql::{SqlStore, StoreOptions};
use sandkeeper_ports::inprocess::ProcessLocalLocker;
use sandkeeper_ports::{EngineSpec, Engines, LifecycleLocker, SystemClock};

use sandkeeper_adapters_fs::DirWorkspaceStore;
use sandkeeper_ports::WorkspaceStore;

use crate::config::setting::{DATA_DIR, DATABASE_URL, WORKSPACE_DIR, WORKSPACE_STORE};
use crate::config::{
    ConfigError, EngineConfig, ServiceSettings, StoreConfig, WorkspaceBackend, WorkspaceConfig,
    docker_error,
};
use crate::services::{Ports, Probe};

/// A failure to start that is not a configuration mistake (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct StartError(pub(crate) String);

/// Connects to the store and migrates it. The data dir is created for the default SQLite file.
pub(crate) async fn open_store(config: &StoreConfig) -> Result<SqlStore, StartError> {
    let url = &config.url;
    if let Some(dir) = &config.create_dir {
        std::fs::create_dir_all(dir).map_err(|error| {
            StartError(format!(
                "cannot create the data dir `{}` ({DATA_DIR}): {error}",
                dir.display()
            ))
        })?;
    }
    let store = SqlStore::connect(url.expose(), StoreOptions::default())
        .await
        .map_err(|error| StartError(format!("{DATABASE_URL}: {error}")))?;
    store
        .migrate()
        .await
        .map_err(|error| StartError(format!("migrating the store at `{url}` failed: {error}")))?;
    tracing::info!(backend = %store.backend(), database = %url, "store ready");
    debug_assert_eq!(store.backend(), url.backend());
    Ok(store)
}

/// The engines, a Docker runtime each, and what each one's endpoint is (for the start-up
/// log). No engine is contacted yet: sandkeeper starts while they are down. The settings were
/// checked by validation; what is left to refuse is `DOCKER_HOST`.
pub(crate) fn engines(configs: &[EngineConfig]) -> Result<(Engines, Vec<String>), ConfigError> {
    let mut specs = Vec::with_capacity(configs.len());
    let mut endpoints = Vec::with_capacity(configs.len());
    for config in configs {
        let runtime = DockerRuntime::new(config.docker.clone()).map_err(docker_error)?;
        endpoints.push(format!("{}={}", config.name, runtime.endpoint()));
        specs.push(EngineSpec {
            name: config.name.clone(),
            runtime: Arc::new(runtime),
            max: config.max,
            runtime_name: config.docker.runtime.clone(),
        });
    }
    Ok((Engines::new(specs), endpoints))
}

/// The ports over the store and the runtime. The chat lock is the store's own when it has one
/// (a PostgreSQL advisory lock, shared by every replica), else a lock in this process (SQLite
/// serves one replica).
pub(crate) async fn ports(
    store: &SqlStore,
    engines: Engines,
    settings: &ServiceSettings,
) -> Result<Ports, StartError> {
    let locker: Arc<dyn LifecycleLocker> =
        store.locker().unwrap_or_else(|| Arc::new(ProcessLocalLocker::new()));
    let probe_store = store.clone();
    let store_probe: Probe = Arc::new(move || {
        let store = probe_store.clone();
        Box::pin(async move {
            store.ping().await.map_err(|error| sandkeeper_ports::Report(&error).to_string())
        })
    });
    Ok(Ports {
        repository: store.sessions(),
        leases: store.leases(),
        locker,
        engines,
        clock: Arc::new(SystemClock),
        store_probe,
        workspaces: workspace_store(store, settings.workspaces.as_ref()).await?,
        pool: {
            let store = store.clone();
            Arc::new(move |engine| store.pool(engine))
        },
    })
}

/// A temporary archive file this old was left by a process that crashed (another process, a
/// one-shot command, may share the directory and still be using its younger ones).
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The workspace store the settings chose (validation made sure that `database` is on
/// PostgreSQL), with its scratch directory emptied of what a crash left there.
async fn workspace_store(
    store: &SqlStore,
    config: Option<&WorkspaceConfig>,
) -> Result<Option<Arc<dyn WorkspaceStore>>, StartError> {
    let Some(config) = config else { return Ok(None) };
    let scratch = &config.settings.scratch_dir;
    sandkeeper_ports::remove_stale_temporaries(scratch, STALE_TEMPORARY);
    std::fs::create_dir_all(scratch).map_err(|error| {
        StartError(format!(
            "cannot create `{}` for workspace archives in transit ({WORKSPACE_DIR}): {error}",
            scratch.display()
        ))
    })?;
    let workspaces: Arc<dyn WorkspaceStore> = match &config.backend {
        WorkspaceBackend::Dir(dir) => {
            Arc::new(DirWorkspaceStore::open(dir).await.map_err(|error| {
                StartError(format!(
                    "{WORKSPACE_DIR}: the workspace directory `{}` cannot be used: {}",
                    dir.display(),
                    sandkeeper_ports::Report(&error)
                ))
            })?)
        }
        WorkspaceBackend::Database => store.workspaces().ok_or_else(|| {
            StartError(format!("{WORKSPACE_STORE}: `database` needs a PostgreSQL store"))
        })?,
    };
    tracing::info!(store = ?config.backend, "workspace store ready");
    Ok(Some(workspaces))
}
