//! What validation makes of the command line: the settings each part of sandkeeper is built
//! with, in the types of that part (the use cases', the HTTP edge's, the Docker adapter's), so
//! that the wiring hands them over as they are.

use super::workspace::WorkspaceConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sandkeeper_adapters_docker::DockerConfig;
use sandkeeper_adapters_observability::OtlpEndpoint;
use sandkeeper_usecase::{
    DEFAULT_MAX_LIFETIME, DEFAULT_OPERATIONS_PER_SANDBOX, ExecSettings, FileSettings,
    KeepAliveSettings, MaintenanceSettings, PoolSettings, ProcessSettings,
};

use super::engines::EngineConfig;
use super::flags::{LogFormat, TtlMode};
use super::secrets::{ApiToken, DatabaseUrl};
use crate::http::EdgeSettings;
use crate::http::server::ConnectionSettings;
use crate::loops::LoopSettings;

/// The validated settings of `serve`.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) api_token: Option<ApiToken>,
    pub(crate) services: ServiceSettings,
    pub(crate) loops: LoopSettings,
    pub(crate) edge: EdgeSettings,
    pub(crate) connections: ConnectionSettings,
    pub(crate) docker: DockerConfig,
    /// The engines sandboxes run on (one named `default` without `--engine`).
    pub(crate) engines: Vec<EngineConfig>,
    pub(crate) store: StoreConfig,
    pub(crate) log_format: LogFormat,
    /// Where traces are exported; `None` exports none.
    pub(crate) otlp_endpoint: Option<OtlpEndpoint>,
}

/// The validated settings of `cleanup` and `maintain`, which run one pass and exit.
#[derive(Debug, Clone)]
pub(crate) struct OneShotConfig {
    pub(crate) services: ServiceSettings,
    /// The engines, each with the sandboxes' settings (the one-shot commands only stop and
    /// inspect containers).
    pub(crate) engines: Vec<EngineConfig>,
    pub(crate) store: StoreConfig,
    pub(crate) log_format: LogFormat,
}

/// Where the sessions are stored.
#[derive(Debug, Clone)]
pub(crate) struct StoreConfig {
    pub(crate) url: DatabaseUrl,
    /// The data dir to create before connecting: set when the store is the default SQLite
    /// file inside it.
    pub(crate) create_dir: Option<PathBuf>,
}

/// The settings of the use cases, in their own types.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSettings {
    /// How many sandboxes may run at once; `None`: no bound.
    pub(crate) max_sandboxes: Option<u64>,
    /// Its `default_ttl` is also the TTL of a new sandbox.
    pub(crate) keep_alive: KeepAliveSettings,
    pub(crate) ttl_mode: TtlMode,
    pub(crate) exec: ExecSettings,
    pub(crate) files: FileSettings,
    /// Execs and transfers at once per sandbox.
    pub(crate) per_sandbox: usize,
    pub(crate) maintenance: MaintenanceSettings,
    /// Durable workspaces; `None` when `--workspace-store off`.
    pub(crate) workspaces: Option<WorkspaceConfig>,
    pub(crate) processes: ProcessSettings,
    /// The warm pool; size 0 (the one-shot commands' default) keeps none.
    pub(crate) pool: PoolSettings,
}

impl ServiceSettings {
    /// The use cases' own defaults, for a process of the deployment `instance_id`: what the
    /// one-shot commands (which never create a sandbox) run with.
    pub(crate) fn defaults(instance_id: &str) -> Self {
        Self {
            max_sandboxes: None,
            keep_alive: KeepAliveSettings {
                default_ttl: Duration::from_secs(300),
                max_ttl: Duration::from_secs(3600),
                max_lifetime: DEFAULT_MAX_LIFETIME,
            },
            ttl_mode: TtlMode::Fixed,
            exec: ExecSettings::default(),
            files: FileSettings::default(),
            per_sandbox: DEFAULT_OPERATIONS_PER_SANDBOX,
            maintenance: MaintenanceSettings::new(lease_holder(instance_id)),
            workspaces: None,
            processes: ProcessSettings::default(),
            pool: PoolSettings::new(0),
        }
    }
}

#[cfg(test)]
impl Default for ServiceSettings {
    fn default() -> Self {
        Self::defaults("test")
    }
}

/// The lease holder's name: the instance id plus something unique to this process, so that
/// replicas of one deployment (which share the instance id) never mistake each other's lease.
fn lease_holder(instance_id: &str) -> String {
    format!("{instance_id}/{}-{:08x}", std::process::id(), rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_of_one_deployment_hold_the_lease_under_names_of_their_own() {
        let (one, other) = (ServiceSettings::defaults("prod"), ServiceSettings::defaults("prod"));
        assert!(one.maintenance.holder.starts_with("prod/"), "{}", one.maintenance.holder);
        assert_ne!(one.maintenance.holder, other.maintenance.holder);
    }
}
