//! Builds the real adapters from the configuration: the SQL store (SQLite by default,
//! PostgreSQL by URL), the Docker runtime, and the chat locker that fits the store.

use std::sync::Arc;

use sandkeeper_adapters_docker::{DockerConfig, DockerRuntime};
use sandkeeper_adapters_sql::{Backend, SqlStore, StoreOptions};
use sandkeeper_ports::inprocess::ProcessLocalLocker;
use sandkeeper_ports::{LifecycleLocker, SystemClock};

use crate::config::{ConfigError, DatabaseKind, DockerArgs, StoreArgs};
use crate::services::{Ports, Probe};

/// A failure to start that is not a configuration mistake (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct StartError(pub(crate) String);

/// Connects to the store and migrates it. The data dir is created for the default SQLite file.
pub(crate) async fn open_store(args: &StoreArgs) -> Result<SqlStore, StartError> {
    let database = args.database();
    if args.database_url.is_none() {
        std::fs::create_dir_all(&args.data_dir).map_err(|error| {
            StartError(format!(
                "cannot create the data dir `{}` (--data-dir): {error}",
                args.data_dir.display()
            ))
        })?;
    }
    let store = SqlStore::connect(database.as_str(), StoreOptions::default())
        .await
        .map_err(|error| StartError(format!("--database-url: {error}")))?;
    store.migrate().await.map_err(|error| {
        StartError(format!("migrating the store at `{database}` failed: {error}"))
    })?;
    tracing::info!(
        backend = %store.backend(),
        database = %database,
        "store ready"
    );
    debug_assert_eq!(
        store.backend() == Backend::Postgres,
        database.kind() == DatabaseKind::Postgres
    );
    Ok(store)
}

/// The Docker runtime. The engine is not contacted yet: sandkeeper starts while it is down.
pub(crate) fn docker_runtime(args: &DockerArgs) -> Result<DockerRuntime, ConfigError> {
    let mut config = DockerConfig::new(args.image.clone(), args.instance_id.clone());
    config.memory_bytes = args.memory_limit;
    config.cpus = args.cpus;
    config.pids_limit = args.pids_limit;
    config.network_mode = args.network.clone();
    config.runtime = args.runtime.clone();
    config.uid_range = args.sandbox_uid_range;
    DockerRuntime::new(config).map_err(|error| {
        let setting = match error.field {
            "image" => "--image",
            "instance_id" => "--instance-id",
            "memory_bytes" => "--memory-limit",
            "cpus" => "--cpus",
            "pids_limit" => "--pids-limit",
            "network_mode" => "--network",
            "runtime" => "--runtime",
            "uid_range" => "--sandbox-uid-range",
            other => other,
        };
        ConfigError(format!("{setting}: `{}` {}", error.value, error.reason))
    })
}

/// The ports over the store and the runtime. The chat lock is the store's own when it has one
/// (a PostgreSQL advisory lock, shared by every replica), else a lock in this process (SQLite
/// serves one replica).
pub(crate) fn ports(store: &SqlStore, runtime: DockerRuntime) -> Ports {
    let locker: Arc<dyn LifecycleLocker> =
        store.locker().unwrap_or_else(|| Arc::new(ProcessLocalLocker::new()));
    let probe_store = store.clone();
    let store_probe: Probe = Arc::new(move || {
        let store = probe_store.clone();
        Box::pin(async move {
            store.ping().await.map_err(|error| sandkeeper_ports::Report(&error).to_string())
        })
    });
    Ports {
        repository: store.sessions(),
        leases: store.leases(),
        locker,
        runtime: Arc::new(runtime),
        clock: Arc::new(SystemClock),
        store_probe,
    }
}
