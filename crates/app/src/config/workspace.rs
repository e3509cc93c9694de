//! The settings of durable workspaces: `--workspace-store`, `--workspace-dir`,
//! `--workspace-size`, `--workspace-checkpoint-interval` and `--workspace-retention`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use sandkeeper_adapters_docker::DockerConfig;
use sandkeeper_adapters_sql::Backend;
use sandkeeper_usecase::WorkspaceSettings;

use super::flags::StoreArgs;
use super::setting::*;
use super::values;

/// Where workspace archives are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WorkspaceStoreKind {
    /// `database` on PostgreSQL, `dir` on SQLite.
    Auto,
    /// One file per chat in --workspace-dir.
    Dir,
    /// In the PostgreSQL database, so that every replica restores every chat.
    Database,
    /// No archives: a sandbox's files end with it.
    Off,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Workspaces")]
pub(crate) struct WorkspaceArgs {
    /// Where a chat's /workspace is kept between its sandboxes: `dir` (one archive per chat in
    /// --workspace-dir), `database` (in PostgreSQL, shared by every replica), `auto`
    /// (`database` on PostgreSQL, `dir` on SQLite) or `off` (a sandbox's files end with it).
    #[arg(long = WORKSPACE_STORE.long, env = WORKSPACE_STORE.env, value_name = "STORE", value_enum, default_value = "auto")]
    pub(crate) workspace_store: WorkspaceStoreKind,

    /// The directory of the `dir` store. Default: `<data-dir>/workspaces`.
    #[arg(long = WORKSPACE_DIR.long, env = WORKSPACE_DIR.env, value_name = "DIR")]
    pub(crate) workspace_dir: Option<PathBuf>,

    /// The size of each sandbox's /workspace (a tmpfs), and the largest archive kept or
    /// accepted (binary units: 1m = 1 MiB).
    #[arg(long = WORKSPACE_SIZE.long, env = WORKSPACE_SIZE.env, value_name = "SIZE", default_value = "256m", value_parser = values::size_at_least(WORKSPACE_SIZE, 1 << 20))]
    pub(crate) workspace_size: u64,

    /// How often the sandboxes that ran a command or received a file since their last archive
    /// are archived, so that a crash loses at most this much work; `0` turns checkpoints off.
    #[arg(long = WORKSPACE_CHECKPOINT_INTERVAL.long, env = WORKSPACE_CHECKPOINT_INTERVAL.env, value_name = "DURATION", default_value = "1m", value_parser = checkpoint_interval)]
    pub(crate) workspace_checkpoint_interval: Duration,

    /// Archives neither saved nor restored for this long are deleted by the maintenance sweep.
    #[arg(long = WORKSPACE_RETENTION.long, env = WORKSPACE_RETENTION.env, value_name = "DURATION", default_value = "7d", value_parser = values::duration_at_least(WORKSPACE_RETENTION, Duration::from_secs(60)))]
    pub(crate) workspace_retention: Duration,
}

fn checkpoint_interval(value: &str) -> Result<Duration, ConfigError> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    values::duration_at_least(WORKSPACE_CHECKPOINT_INTERVAL, Duration::from_secs(1))(value)
}

/// Which store keeps the archives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkspaceBackend {
    Dir(PathBuf),
    Database,
}

/// The validated workspace settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkspaceConfig {
    pub(crate) backend: WorkspaceBackend,
    pub(crate) settings: WorkspaceSettings,
    /// `None`: no checkpoints.
    pub(crate) checkpoint_interval: Option<Duration>,
}

impl WorkspaceArgs {
    /// The workspace settings (`None` when off), and the workspace size into `docker`.
    pub(crate) fn config(
        &self,
        store: &StoreArgs,
        docker: &mut DockerConfig,
    ) -> Result<Option<WorkspaceConfig>, ConfigError> {
        docker.workspace_size_bytes = self.workspace_size;
        let backend = store.config().url.backend();
        let dir =
            || self.workspace_dir.clone().unwrap_or_else(|| store.data_dir.join("workspaces"));
        let backend = match (self.workspace_store, backend) {
            (WorkspaceStoreKind::Off, _) => return Ok(None),
            (WorkspaceStoreKind::Database, Backend::Sqlite) => {
                return Err(ConfigError::new(
                    WORKSPACE_STORE,
                    "`database` keeps archives in PostgreSQL, but the store is SQLite; set \
                     --database-url postgres://... or use `dir` (or `auto`)",
                ));
            }
            (WorkspaceStoreKind::Auto, Backend::Postgres) | (WorkspaceStoreKind::Database, _) => {
                WorkspaceBackend::Database
            }
            (WorkspaceStoreKind::Auto | WorkspaceStoreKind::Dir, _) => WorkspaceBackend::Dir(dir()),
        };
        let scratch_dir = match &backend {
            WorkspaceBackend::Dir(dir) => dir.join(".scratch"),
            WorkspaceBackend::Database => store.data_dir.join("workspace-scratch"),
        };
        Ok(Some(WorkspaceConfig {
            backend,
            settings: WorkspaceSettings {
                size_limit: self.workspace_size,
                scratch_dir,
                retention: self.workspace_retention,
            },
            checkpoint_interval: (!self.workspace_checkpoint_interval.is_zero())
                .then_some(self.workspace_checkpoint_interval),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::flags::serve;
    use super::*;

    #[test]
    fn by_default_a_single_replica_keeps_archives_in_the_data_dir() {
        let config = serve(&["--data-dir", "/srv/sk"]).validate().unwrap();
        let workspaces = config.services.workspaces.unwrap();
        assert_eq!(workspaces.backend, WorkspaceBackend::Dir("/srv/sk/workspaces".into()));
        assert_eq!(workspaces.settings.scratch_dir, Path::new("/srv/sk/workspaces/.scratch"));
        assert_eq!(workspaces.settings.size_limit, 256 << 20);
        assert_eq!(workspaces.settings.retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(workspaces.checkpoint_interval, Some(Duration::from_secs(60)));
        assert_eq!(config.docker.workspace_size_bytes, 256 << 20, "also the tmpfs size");
    }

    #[test]
    fn on_postgresql_auto_keeps_archives_in_the_database() {
        let url = "postgres://sk@db/sk";
        let config = serve(&["--database-url", url]).validate().unwrap();
        assert_eq!(config.services.workspaces.unwrap().backend, WorkspaceBackend::Database);
        let config = serve(&["--database-url", url, "--workspace-store", "dir"]).validate();
        assert!(matches!(
            config.unwrap().services.workspaces.unwrap().backend,
            WorkspaceBackend::Dir(_)
        ));
    }

    #[test]
    fn the_database_store_on_sqlite_is_refused_naming_the_setting() {
        let error = serve(&["--workspace-store", "database"]).validate().unwrap_err();
        assert_eq!(error.setting, Setting::Flag(WORKSPACE_STORE));
        assert!(error.message.contains("PostgreSQL"), "{error}");
        assert!(error.message.contains("`dir`"), "says what to use instead: {error}");
    }

    #[test]
    fn off_keeps_nothing_and_zero_turns_checkpoints_off() {
        assert_eq!(
            serve(&["--workspace-store", "off"]).validate().unwrap().services.workspaces,
            None
        );
        let config = serve(&[
            "--workspace-checkpoint-interval",
            "0",
            "--workspace-size",
            "64m",
            "--workspace-dir",
            "/elsewhere",
        ])
        .validate()
        .unwrap();
        let workspaces = config.services.workspaces.unwrap();
        assert_eq!(workspaces.checkpoint_interval, None);
        assert_eq!(workspaces.settings.size_limit, 64 << 20);
        assert_eq!(workspaces.backend, WorkspaceBackend::Dir("/elsewhere".into()));
        assert_eq!(config.docker.workspace_size_bytes, 64 << 20);
    }
}
