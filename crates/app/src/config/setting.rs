//! The names of the settings, and the error that names one.
//!
//! Every setting of sandkeeper is a flag and a `SANDKEEPER_*` variable. Each has one [`Flag`]
//! here, used both by the command line's definition and by every error about it, so that what
//! main prints (the flag, and the variable when that is where the value came from) is read from
//! a typed field, never recovered from a message's text. A few settings belong to the
//! environment alone (`DOCKER_HOST`, `RUST_LOG`): a [`Setting::Variable`].

use std::fmt;

/// A setting of the command line: its long flag and its environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flag {
    /// The flag without its leading dashes, as clap takes it (`ttl` for `--ttl`).
    pub(crate) long: &'static str,
    /// The environment variable that sets it when the flag is absent.
    pub(crate) env: &'static str,
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--{}", self.long)
    }
}

/// What a configuration error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    /// A flag (or its `SANDKEEPER_*` variable).
    Flag(Flag),
    /// A variable of the environment that has no flag (`DOCKER_HOST`, `RUST_LOG`).
    Variable(&'static str),
}

impl From<Flag> for Setting {
    fn from(flag: Flag) -> Self {
        Self::Flag(flag)
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag(flag) => flag.fmt(f),
            Self::Variable(name) => f.write_str(name),
        }
    }
}

macro_rules! settings {
    ($($name:ident = $long:literal, $env:literal;)*) => {
        $(pub(crate) const $name: Flag = Flag { long: $long, env: $env };)*
        /// Every flag, for the check that each is one of the command line.
        #[cfg(test)]
        pub(crate) const ALL: &[Flag] = &[$($name),*];
    };
}

settings! {
    ALLOWED_HOSTS = "allowed-hosts", "SANDKEEPER_ALLOWED_HOSTS";
    API_TOKEN = "api-token", "SANDKEEPER_API_TOKEN";
    API_TOKEN_FILE = "api-token-file", "SANDKEEPER_API_TOKEN_FILE";
    CLEANUP_INTERVAL = "cleanup-interval", "SANDKEEPER_CLEANUP_INTERVAL";
    CPUS = "cpus", "SANDKEEPER_CPUS";
    DATABASE_URL = "database-url", "SANDKEEPER_DATABASE_URL";
    DATA_DIR = "data-dir", "SANDKEEPER_DATA_DIR";
    ENGINE = "engine", "SANDKEEPER_ENGINE";
    ENGINE_LOSS_GRACE = "engine-loss-grace", "SANDKEEPER_ENGINE_LOSS_GRACE";
    EXEC_CONCURRENCY = "exec-concurrency", "SANDKEEPER_EXEC_CONCURRENCY";
    EXEC_MAX_TIMEOUT = "exec-max-timeout", "SANDKEEPER_EXEC_MAX_TIMEOUT";
    EXEC_OUTPUT_LIMIT = "exec-output-limit", "SANDKEEPER_EXEC_OUTPUT_LIMIT";
    EXEC_STDIN_LIMIT = "exec-stdin-limit", "SANDKEEPER_EXEC_STDIN_LIMIT";
    EXEC_TIMEOUT = "exec-timeout", "SANDKEEPER_EXEC_TIMEOUT";
    FILE_SIZE_LIMIT = "file-size-limit", "SANDKEEPER_FILE_SIZE_LIMIT";
    HTTP_BODY_MEMORY_LIMIT = "http-body-memory-limit", "SANDKEEPER_HTTP_BODY_MEMORY_LIMIT";
    HTTP_BODY_TIMEOUT = "http-body-timeout", "SANDKEEPER_HTTP_BODY_TIMEOUT";
    HTTP_HEADER_TIMEOUT = "http-header-timeout", "SANDKEEPER_HTTP_HEADER_TIMEOUT";
    HTTP_IDLE_TIMEOUT = "http-idle-timeout", "SANDKEEPER_HTTP_IDLE_TIMEOUT";
    HTTP_MAX_CONNECTIONS = "http-max-connections", "SANDKEEPER_HTTP_MAX_CONNECTIONS";
    IMAGE = "image", "SANDKEEPER_IMAGE";
    INSTANCE_ID = "instance-id", "SANDKEEPER_INSTANCE_ID";
    LISTEN = "listen", "SANDKEEPER_LISTEN";
    LOG_FORMAT = "log-format", "SANDKEEPER_LOG_FORMAT";
    MAINTENANCE_INTERVAL = "maintenance-interval", "SANDKEEPER_MAINTENANCE_INTERVAL";
    MAX_LIFETIME = "max-lifetime", "SANDKEEPER_MAX_LIFETIME";
    MAX_PROCESSES = "max-processes", "SANDKEEPER_MAX_PROCESSES";
    MAX_SANDBOXES = "max-sandboxes", "SANDKEEPER_MAX_SANDBOXES";
    MAX_TTL = "max-ttl", "SANDKEEPER_MAX_TTL";
    MEMORY_LIMIT = "memory-limit", "SANDKEEPER_MEMORY_LIMIT";
    NETWORK = "network", "SANDKEEPER_NETWORK";
    ORPHAN_GRACE = "orphan-grace", "SANDKEEPER_ORPHAN_GRACE";
    OTLP_ENDPOINT = "otlp-endpoint", "SANDKEEPER_OTLP_ENDPOINT";
    PIDS_LIMIT = "pids-limit", "SANDKEEPER_PIDS_LIMIT";
    POOL_MAX_AGE = "pool-max-age", "SANDKEEPER_POOL_MAX_AGE";
    POOL_SIZE = "pool-size", "SANDKEEPER_POOL_SIZE";
    PROCESS_LOG_LIMIT = "process-log-limit", "SANDKEEPER_PROCESS_LOG_LIMIT";
    RUNTIME = "runtime", "SANDKEEPER_RUNTIME";
    SANDBOX_UID_RANGE = "sandbox-uid-range", "SANDKEEPER_SANDBOX_UID_RANGE";
    TTL = "ttl", "SANDKEEPER_TTL";
    TTL_MODE = "ttl-mode", "SANDKEEPER_TTL_MODE";
    WORKSPACE_CHECKPOINT_INTERVAL = "workspace-checkpoint-interval", "SANDKEEPER_WORKSPACE_CHECKPOINT_INTERVAL";
    WORKSPACE_DIR = "workspace-dir", "SANDKEEPER_WORKSPACE_DIR";
    WORKSPACE_RETENTION = "workspace-retention", "SANDKEEPER_WORKSPACE_RETENTION";
    WORKSPACE_SIZE = "workspace-size", "SANDKEEPER_WORKSPACE_SIZE";
    WORKSPACE_STORE = "workspace-store", "SANDKEEPER_WORKSPACE_STORE";
}

/// A setting whose value is wrong: alone (found while parsing, where clap carries it as the
/// cause of its error), in the light of another setting, or of a file it names. Main prints it
/// like clap's own errors and exits with the same code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub(crate) struct ConfigError {
    pub(crate) setting: Setting,
    /// What is wrong, without the setting's name.
    pub(crate) message: String,
}

impl ConfigError {
    pub(crate) fn new(setting: impl Into<Setting>, message: impl Into<String>) -> Self {
        Self { setting: setting.into(), message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::config::Cli;

    #[test]
    fn every_setting_is_a_flag_with_its_variable() {
        let cli = Cli::command();
        for flag in ALL {
            let declared = cli
                .get_subcommands()
                .flat_map(|command| command.get_arguments())
                .find(|arg| arg.get_long() == Some(flag.long))
                .unwrap_or_else(|| panic!("{flag} is no flag of any command"));
            assert_eq!(declared.get_env(), Some(std::ffi::OsStr::new(flag.env)), "{flag}");
            let variable = format!("SANDKEEPER_{}", flag.long.replace('-', "_").to_uppercase());
            assert_eq!(flag.env, variable);
        }
    }

    #[test]
    fn an_error_names_its_setting_first() {
        let error = ConfigError::new(TTL, "`abc` is not a duration like 30s or 5m");
        assert_eq!(error.to_string(), "--ttl: `abc` is not a duration like 30s or 5m");
        assert_eq!(error.setting, Setting::Flag(TTL));
        let error = ConfigError::new(Setting::Variable("DOCKER_HOST"), "`ftp://x` is not usable");
        assert_eq!(error.to_string(), "DOCKER_HOST: `ftp://x` is not usable");
    }
}
