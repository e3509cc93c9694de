//! From the parsed command line to the validated settings: the checks that involve several
//! settings or a file, and the making of each part's settings.

use std::path::Path;
use std::time::Duration;

use sandkeeper_adapters_docker::DockerConfig;

use super::engines::engine_configs;
use sandkeeper_adapters_observability::OtlpEndpoint;
use sandkeeper_usecase::{
    ExecSettings, FileSettings, KeepAliveSettings, PoolSettings, ProcessSettings,
};

use super::flags::{DockerArgs, MaintainArgs, OneShotArgs, ServeArgs, StoreArgs};
use super::secrets::{ApiToken, DatabaseUrl};
use super::setting::*;
use super::settings::{OneShotConfig, ServeConfig, ServiceSettings, StoreConfig};
use crate::http::EdgeSettings;
use crate::http::server::ConnectionSettings;
use crate::loops::LoopSettings;

/// The share of `--maintenance-interval` that must pass since the last completed sweep before a
/// periodic sweep runs again. Below 1 so that the jitter of one replica's own loop (±10%) never
/// makes it skip its turn, while replicas together still sweep about once per interval.
const SWEEP_MIN_INTERVAL_SHARE: f64 = 0.75;

/// What an exec request's body may hold beside its stdin (the command, env, workdir).
const EXEC_BODY_OVERHEAD: u64 = 1 << 20;

impl ServeArgs {
    /// Checks what involves several settings or a file, reads the token file, and makes the
    /// settings of every part.
    pub(crate) fn validate(self) -> Result<ServeConfig, ConfigError> {
        let longer = |setting: Flag, value: Duration, than: Flag, limit: Duration| {
            ConfigError::new(
                setting,
                format!(
                    "`{}` is longer than {than} `{}`; raise {than} or shorten {setting}",
                    humantime::format_duration(value),
                    humantime::format_duration(limit)
                ),
            )
        };
        if self.ttl > self.max_ttl {
            return Err(longer(TTL, self.ttl, MAX_TTL, self.max_ttl));
        }
        if self.max_ttl > self.max_lifetime {
            return Err(longer(MAX_TTL, self.max_ttl, MAX_LIFETIME, self.max_lifetime));
        }
        let exec = &self.exec;
        if exec.exec_timeout > exec.exec_max_timeout {
            return Err(longer(
                EXEC_TIMEOUT,
                exec.exec_timeout,
                EXEC_MAX_TIMEOUT,
                exec.exec_max_timeout,
            ));
        }
        let largest_body =
            exec.file_size_limit.max(exec.exec_stdin_limit.saturating_add(EXEC_BODY_OVERHEAD));
        if self.http.http_body_memory_limit < largest_body {
            return Err(ConfigError::new(
                HTTP_BODY_MEMORY_LIMIT,
                format!(
                    "`{}` bytes is less than the largest single request body ({largest_body} \
                     bytes, from {FILE_SIZE_LIMIT} and {EXEC_STDIN_LIMIT} plus 1 MiB); raise it \
                     or lower those limits",
                    self.http.http_body_memory_limit
                ),
            ));
        }
        let api_token = match (self.api_token, &self.api_token_file) {
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(read_token_file(path)?),
            (None, None) => None,
        };
        if api_token.is_none() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::new(
                LISTEN,
                format!(
                    "refusing to listen on `{}` without an API token: anyone who can reach it \
                     could create containers. Set {API_TOKEN_FILE} (or {API_TOKEN}), or listen \
                     on a loopback address such as 127.0.0.1",
                    self.listen
                ),
            ));
        }

        let mut services = ServiceSettings::defaults(&self.docker.instance_id);
        services.max_sandboxes = (self.max_sandboxes > 0).then_some(self.max_sandboxes);
        services.keep_alive = KeepAliveSettings {
            default_ttl: self.ttl,
            max_ttl: self.max_ttl,
            max_lifetime: self.max_lifetime,
        };
        services.ttl_mode = self.ttl_mode;
        services.exec = ExecSettings {
            default_timeout: exec.exec_timeout,
            max_timeout: exec.exec_max_timeout,
            output_limit: bytes(exec.exec_output_limit),
            stdin_limit: bytes(exec.exec_stdin_limit),
        };
        services.files = FileSettings {
            upload_limit: exec.file_size_limit,
            download_limit: exec.file_size_limit,
        };
        services.per_sandbox = exec.exec_concurrency as usize;
        services.processes = ProcessSettings {
            max_processes: exec.max_processes as usize,
            log_limit: exec.process_log_limit,
            read_limit: services.exec.output_limit,
            stdin_limit: services.exec.stdin_limit,
        };
        services.maintenance.orphan_grace = self.sweep.orphan_grace;
        services.pool =
            PoolSettings { max_age: self.pool_max_age, ..PoolSettings::new(self.pool_size) };
        services.maintenance.engine_loss_grace = self.sweep.engine_loss_grace;
        services.maintenance.min_interval =
            self.maintenance_interval.mul_f64(SWEEP_MIN_INTERVAL_SHARE);
        let mut docker = self.docker.config()?;
        services.workspaces = self.workspace.config(&self.store, &mut docker)?;
        let engines = engine_configs(&self.docker.engines, &docker)?;

        let http = self.http;
        Ok(ServeConfig {
            listen: self.listen,
            api_token,
            services,
            loops: LoopSettings {
                cleanup_interval: self.cleanup_interval,
                maintenance_interval: self.maintenance_interval,
            },
            edge: EdgeSettings {
                body_timeout: http.http_body_timeout,
                body_memory_limit: bytes(http.http_body_memory_limit),
                largest_body: bytes(largest_body),
                allowed_hosts: http.allowed_hosts,
            },
            connections: ConnectionSettings {
                header_timeout: http.http_header_timeout,
                idle_timeout: http.http_idle_timeout,
                max_connections: http.http_max_connections as usize,
            },
            docker,
            engines,
            store: self.store.config(),
            log_format: self.log.log_format,
            otlp_endpoint: otlp_endpoint_or_otel(
                self.otlp_endpoint,
                std::env::var(OTEL_ENDPOINT_VARIABLE).ok(),
            )?,
        })
    }
}

/// OpenTelemetry's own variable for the collector's base URL, read when neither
/// `--otlp-endpoint` nor its variable is set.
const OTEL_ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// `--otlp-endpoint`, else the standard variable (an empty one is unset). A bad value of the
/// variable is an error of the flag it stands for, saying where it came from.
fn otlp_endpoint_or_otel(
    flag: Option<OtlpEndpoint>,
    otel: Option<String>,
) -> Result<Option<OtlpEndpoint>, ConfigError> {
    if flag.is_some() {
        return Ok(flag);
    }
    let Some(value) = otel.filter(|value| !value.trim().is_empty()) else {
        return Ok(None);
    };
    OtlpEndpoint::parse(&value).map(Some).map_err(|error| {
        ConfigError::new(OTLP_ENDPOINT, format!("{error} (set by {OTEL_ENDPOINT_VARIABLE})"))
    })
}

impl OneShotArgs {
    /// The settings of `sandkeeper cleanup`, the base of those of `maintain`: the use cases'
    /// defaults, and a sweep that runs whenever asked, however recent the last one.
    pub(crate) fn validate(self) -> Result<OneShotConfig, ConfigError> {
        let mut services = ServiceSettings::defaults(&self.docker.instance_id);
        services.maintenance.min_interval = Duration::ZERO;
        let mut docker = self.docker.config()?;
        services.workspaces = self.workspace.config(&self.store, &mut docker)?;
        let engines = engine_configs(&self.docker.engines, &docker)?;
        Ok(OneShotConfig {
            services,
            engines,
            store: self.store.config(),
            log_format: self.log.log_format,
        })
    }
}

impl MaintainArgs {
    pub(crate) fn validate(self) -> Result<OneShotConfig, ConfigError> {
        let mut config = self.one_shot.validate()?;
        config.services.maintenance.orphan_grace = self.sweep.orphan_grace;
        config.services.maintenance.engine_loss_grace = self.sweep.engine_loss_grace;
        Ok(config)
    }
}

impl StoreArgs {
    /// The database URL given, or the SQLite file in the data dir (which is then created).
    pub(crate) fn config(&self) -> StoreConfig {
        match &self.database_url {
            Some(url) => StoreConfig { url: url.clone(), create_dir: None },
            None => StoreConfig {
                url: DatabaseUrl::default_sqlite(&self.data_dir),
                create_dir: Some(self.data_dir.clone()),
            },
        }
    }
}

impl DockerArgs {
    /// The Docker adapter's settings, checked by the adapter's own rules.
    pub(crate) fn config(&self) -> Result<DockerConfig, ConfigError> {
        let mut config = DockerConfig::new(self.image.clone(), self.instance_id.clone());
        config.memory_bytes = self.memory_limit;
        config.cpus = self.cpus;
        config.pids_limit = self.pids_limit;
        config.network_mode = self.network.clone();
        config.runtime = self.runtime.clone();
        config.uid_range = self.sandbox_uid_range;
        config.validate().map_err(docker_error)?;
        Ok(config)
    }
}

/// The Docker adapter's refusal of a setting, named as the command line names it.
pub(crate) fn docker_error(error: sandkeeper_adapters_docker::ConfigError) -> ConfigError {
    let setting = match error.field {
        "image" => IMAGE.into(),
        "instance_id" => INSTANCE_ID.into(),
        "memory_bytes" => MEMORY_LIMIT.into(),
        "cpus" => CPUS.into(),
        "pids_limit" => PIDS_LIMIT.into(),
        "network_mode" => NETWORK.into(),
        "runtime" => RUNTIME.into(),
        "uid_range" => SANDBOX_UID_RANGE.into(),
        "DOCKER_HOST" => Setting::Variable("DOCKER_HOST"),
        // A field the command line does not set keeps the adapter's name for it.
        other => Setting::Variable(other),
    };
    ConfigError::new(setting, format!("`{}` {}", error.value, error.reason))
}

fn read_token_file(path: &Path) -> Result<ApiToken, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::new(API_TOKEN_FILE, format!("cannot read `{}`: {error}", path.display()))
    })?;
    ApiToken::parse(text.trim()).map_err(|message| {
        ConfigError::new(API_TOKEN_FILE, format!("`{}` {message}", path.display()))
    })
}

/// A size in bytes as the in-memory settings take it.
fn bytes(size: u64) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::flags::{Command, parse, serve};

    #[test]
    fn the_otlp_endpoint_comes_from_the_flag_else_from_the_standard_variable() {
        let config = serve(&["--otlp-endpoint", "http://127.0.0.1:4318/"]).validate().unwrap();
        let endpoint = config.otlp_endpoint.unwrap();
        assert_eq!(endpoint.traces_url(), "http://127.0.0.1:4318/v1/traces");
        let other = Some("http://other:4318".to_owned());
        let chosen = otlp_endpoint_or_otel(Some(endpoint.clone()), other.clone()).unwrap();
        assert_eq!(chosen, Some(endpoint), "the flag wins");
        let chosen = otlp_endpoint_or_otel(None, other).unwrap().unwrap();
        assert_eq!(chosen.traces_url(), "http://other:4318/v1/traces");
        assert_eq!(otlp_endpoint_or_otel(None, Some(" ".to_owned())), Ok(None));
        assert_eq!(otlp_endpoint_or_otel(None, None), Ok(None));
        let error = otlp_endpoint_or_otel(None, Some("grpc://x".to_owned())).unwrap_err();
        assert_eq!(error.setting, Setting::Flag(OTLP_ENDPOINT));
        assert!(error.message.ends_with("(set by OTEL_EXPORTER_OTLP_ENDPOINT)"), "{error}");
    }

    #[test]
    fn a_bad_otlp_endpoint_is_refused_naming_the_flag() {
        let error = super::super::values::otlp_endpoint("https://collector:4318").unwrap_err();
        assert_eq!(error.setting, Setting::Flag(OTLP_ENDPOINT));
        assert!(
            error.to_string().starts_with(
                "--otlp-endpoint: `https://collector:4318` is not a collector URL like \
                 http://127.0.0.1:4318"
            ),
            "{error}"
        );
    }

    #[test]
    fn the_defaults_make_the_settings_of_every_part() {
        let config = serve(&[]).validate().unwrap();
        let services = &config.services;
        assert_eq!(services.max_sandboxes, Some(64));
        assert_eq!(services.keep_alive.default_ttl, Duration::from_secs(300));
        assert_eq!(services.keep_alive.max_ttl, Duration::from_secs(3600));
        assert_eq!(services.keep_alive.max_lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(services.exec.default_timeout, Duration::from_secs(30));
        assert_eq!(services.exec.output_limit, 1 << 20);
        assert_eq!(services.files.upload_limit, 16 << 20);
        assert_eq!(services.files.download_limit, 16 << 20);
        assert_eq!(services.per_sandbox, 8);
        assert_eq!(services.maintenance.orphan_grace, Duration::from_secs(60));
        assert_eq!(services.maintenance.min_interval, Duration::from_millis(22_500));
        assert!(services.maintenance.holder.starts_with("default/"));
        assert_eq!(config.loops.cleanup_interval, Duration::from_secs(10));
        assert_eq!(config.edge.largest_body, 17 << 20);
        assert_eq!(config.edge.body_memory_limit, 256 << 20);
        assert_eq!(config.connections.max_connections, 512);
        assert_eq!(config.docker.instance_id, "default");
        assert_eq!(config.docker.memory_bytes, 512 << 20);
        assert!(config.api_token.is_none());
        let unlimited = serve(&["--max-sandboxes", "0"]).validate().unwrap();
        assert_eq!(unlimited.services.max_sandboxes, None);
    }

    #[test]
    fn the_one_shot_commands_sweep_whenever_asked() {
        let command = parse(&["maintain", "--orphan-grace", "5m"]).unwrap().command;
        let Command::Maintain(args) = command else { panic!("parsed {command:?}") };
        let config = args.validate().unwrap();
        assert_eq!(config.services.maintenance.orphan_grace, Duration::from_secs(300));
        assert_eq!(config.services.maintenance.min_interval, Duration::ZERO);
        let command = parse(&["cleanup", "--instance-id", "blue"]).unwrap().command;
        let Command::Cleanup(args) = command else { panic!("parsed {command:?}") };
        let config = args.validate().unwrap();
        assert!(config.services.maintenance.holder.starts_with("blue/"));
        assert_eq!(config.services.maintenance.orphan_grace, Duration::from_secs(60));
        assert_eq!(config.engines[0].docker.instance_id, "blue");
        assert_eq!(config.engines[0].name.as_str(), "default");
        assert_eq!(config.services.maintenance.engine_loss_grace, Duration::from_secs(120));
    }

    /// `serve <args>` is refused, naming `setting`, with a message that starts with `start`.
    fn assert_refused(args: &[&str], setting: impl Into<Setting>, start: &str) {
        let error = serve(args).validate().unwrap_err();
        assert_eq!(error.setting, setting.into());
        let message = error.to_string();
        assert!(message.starts_with(start), "{message}");
    }

    #[test]
    fn ttl_longer_than_max_ttl_is_refused() {
        assert_refused(&["--ttl", "2h"], TTL, "--ttl: `2h` is longer than --max-ttl `1h`");
    }

    #[test]
    fn without_a_token_only_loopback_is_accepted() {
        let refusal = "--listen: refusing to listen on `0.0.0.0:8080`";
        assert_refused(&["--listen", "0.0.0.0:8080"], LISTEN, refusal);
        let config = serve(&["--listen", "0.0.0.0:8080", "--api-token", "s3cret"]).validate();
        assert!(config.is_ok());
        assert!(serve(&["--listen", "[::1]:8080"]).validate().is_ok());
    }

    #[test]
    fn the_token_is_read_from_a_file_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("sandkeeper-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-file-secret\n").unwrap();
        let config = serve(&["--api-token-file", file.to_str().unwrap()]).validate().unwrap();
        assert_eq!(config.api_token.as_ref().unwrap().as_bytes(), b"from-file-secret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("from-file-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");

        std::fs::write(&file, "  \n").unwrap();
        let error = serve(&["--api-token-file", file.to_str().unwrap()]).validate().unwrap_err();
        assert_eq!(error.setting, API_TOKEN_FILE.into());
        assert!(error.message.contains("is empty"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = serve(&["--api-token-file", "/nonexistent/token"]).validate().unwrap_err();
        let message = missing.to_string();
        assert!(message.starts_with("--api-token-file: cannot read `/nonexistent/token`"));
    }

    #[test]
    fn a_token_flag_is_redacted_in_debug_output() {
        let args = serve(&["--api-token", "flag-secret"]);
        assert!(!format!("{args:?}").contains("flag-secret"));
        let config = args.validate().unwrap();
        assert!(!format!("{config:?}").contains("flag-secret"));
    }

    #[test]
    fn a_database_password_is_never_shown_by_the_settings() {
        let url = "postgres://app:hunter2@db:5432/sandkeeper";
        let config = serve(&["--database-url", url]).validate().unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/sandkeeper"), "{shown}");
        assert_eq!(config.store.url.expose(), url);
    }

    #[test]
    fn exec_and_lifetime_settings_that_contradict_each_other_are_named() {
        let message = serve(&["--max-lifetime", "30m"]).validate().unwrap_err().to_string();
        assert!(
            message.starts_with("--max-ttl: `1h` is longer than --max-lifetime `30m`"),
            "{message}"
        );
        let message = serve(&["--exec-timeout", "20m"]).validate().unwrap_err().to_string();
        assert!(
            message.starts_with("--exec-timeout: `20m` is longer than --exec-max-timeout `10m`"),
            "{message}"
        );
    }

    #[test]
    fn the_body_memory_must_hold_the_largest_body() {
        let error = serve(&["--http-body-memory-limit", "8m"]).validate().unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("--http-body-memory-limit: `8388608` bytes is less than"),
            "{message}"
        );
        let fits = serve(&[
            "--http-body-memory-limit",
            "8m",
            "--file-size-limit",
            "4m",
            "--exec-stdin-limit",
            "4m",
        ]);
        assert_eq!(fits.validate().unwrap().edge.largest_body, 5 << 20);
    }

    #[test]
    fn the_docker_adapter_refusals_name_the_flag() {
        assert_refused(&["--cpus", "0"], CPUS, "--cpus: `0` ");
        let error = serve(&["--network", "no ne"]).validate().unwrap_err();
        assert_eq!(error.setting, NETWORK.into());
    }
}
