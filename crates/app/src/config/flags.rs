//! The command line: subcommands and settings, each a flag and a `SANDKEEPER_*` variable.
//!
//! Values are checked while parsing (a bad one fails with clap's exit code 2, naming the flag and
//! the value); checks that involve several settings run in [`ServeArgs::validate`] and friends and
//! fail the same way.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sandkeeper_adapters_docker::UidRange;

const ABOUT: &str = "sandkeeper gives every chat its own Docker sandbox: it creates the sandbox on \
the first request, hands the same one back while it lives, replaces it once it has expired, and \
removes whatever is expired, dead or orphaned.";

const AFTER_HELP: &str = "\
Every setting is a flag and an environment variable (SANDKEEPER_<NAME>); the flag wins.
Durations are written like 3s, 10m, 1h 30m. Run `sandkeeper <command> --help` for a command's settings.
Docker is reached like the docker CLI does: DOCKER_HOST, else /var/run/docker.sock.
RUST_LOG filters the logs (default `info`).
Exit codes: 0 success, 1 a failure while running, 2 a bad setting (the message names it).";

/// The `sandkeeper` command line.
#[derive(Debug, Parser)]
#[command(name = "sandkeeper", version, about = ABOUT, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the HTTP API and the background cleanup and maintenance loops until SIGINT or SIGTERM.
    ///
    /// The store is migrated at start. The server starts even when Docker is unreachable:
    /// /readyz then answers 503 and names what is down, and the API answers 503 until Docker
    /// comes back. On SIGINT or SIGTERM it stops accepting connections, lets in-flight requests
    /// finish, stops the loops and exits 0; running sandboxes stay and are reused after a
    /// restart. Docker is reached like the docker CLI does (DOCKER_HOST, else
    /// /var/run/docker.sock).
    #[command(after_help = "The API is described in docs/api.md and docs/openapi.yaml.")]
    // Boxed: its settings outweigh every other command's by far.
    Serve(Box<ServeArgs>),
    /// Create or update the store's tables, then exit.
    Migrate(MigrateArgs),
    /// Remove expired sandboxes once (up to 1000), print the report as JSON on stdout, exit.
    ///
    /// Exits 1 if some could not be removed (they stay, and the next pass retries them).
    Cleanup(CleanupArgs),
    /// Run one maintenance sweep now (reconcile crashed sandboxes, remove stopped and crashed
    /// ones, reap orphaned containers), print the report as JSON on stdout, then exit.
    ///
    /// It ignores the minimum interval between sweeps, but never runs beside another sweep: it
    /// waits for the sweep lease a bounded time and fails (exit code 1) if it stays taken.
    /// Exits 1 too when the report counts errors (what failed is left for the next sweep).
    Maintain(MaintainArgs),
}

/// The output format of the logs (always on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[value(alias = "human")]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub(crate) struct LogArgs {
    /// The log format: `text` (human-readable) or `json` (one object per line). Logs go to
    /// stderr; the level is filtered by RUST_LOG (default `info`).
    #[arg(
        long,
        env = "SANDKEEPER_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub(crate) log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Store")]
pub(crate) struct StoreArgs {
    /// The directory for sandkeeper's own files (the SQLite database). Created if missing.
    #[arg(long, env = "SANDKEEPER_DATA_DIR", value_name = "DIR", default_value = "./.sandkeeper")]
    pub(crate) data_dir: PathBuf,

    /// Where the sessions are stored: `postgres://user@host:port/db` for PostgreSQL (needed to
    /// run several replicas), or `sqlite://path/to/file.db`. Default: the SQLite file
    /// `<data-dir>/sandkeeper.db`, created on first start.
    #[arg(long, env = "SANDKEEPER_DATABASE_URL", value_name = "URL", value_parser = parse_database_url, hide_env_values = true)]
    pub(crate) database_url: Option<DatabaseUrl>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Docker")]
pub(crate) struct DockerArgs {
    /// The image every sandbox container runs. It must already be present on the engine
    /// (`cargo xtask image` builds the default one; nothing is pulled).
    #[arg(
        long,
        env = "SANDKEEPER_IMAGE",
        value_name = "IMAGE",
        default_value = "sandkeeper/sandbox:latest",
        value_parser = parse_non_empty("--image")
    )]
    pub(crate) image: String,

    /// This deployment's id, written into every container's `io.sandkeeper.instance` label.
    /// sandkeeper only ever stops or removes containers that carry its own instance label, so
    /// two deployments on one engine need two ids; the replicas of one deployment share one.
    #[arg(
        long,
        env = "SANDKEEPER_INSTANCE_ID",
        value_name = "ID",
        default_value = "default",
        value_parser = parse_instance_id
    )]
    pub(crate) instance_id: String,

    /// The memory limit of each sandbox, like `512m` or `1g` (binary units: 1m = 1 MiB); no
    /// swap beyond it.
    #[arg(long, env = "SANDKEEPER_MEMORY_LIMIT", value_name = "SIZE", default_value = "512m", value_parser = parse_size("--memory-limit", 6 << 20))]
    pub(crate) memory_limit: u64,

    /// The CPU limit of each sandbox, in CPUs (`0.5` is half a core).
    #[arg(long, env = "SANDKEEPER_CPUS", value_name = "CPUS", default_value_t = 1.0)]
    pub(crate) cpus: f64,

    /// The most processes and threads one sandbox may hold (a fork bomb stops there).
    #[arg(long, env = "SANDKEEPER_PIDS_LIMIT", value_name = "N", default_value_t = 256)]
    pub(crate) pids_limit: u32,

    /// The Docker network mode of the sandboxes. `none` (the default) gives them no network at
    /// all, only loopback; anything else lets sandboxed code reach the network.
    #[arg(long, env = "SANDKEEPER_NETWORK", value_name = "MODE", default_value = "none")]
    pub(crate) network: String,

    /// The OCI runtime of the sandboxes, e.g. `runsc` for gVisor (it must be registered with
    /// the engine). Default: the engine's default runtime.
    #[arg(long, env = "SANDKEEPER_RUNTIME", value_name = "NAME")]
    pub(crate) runtime: Option<String>,

    /// The uids sandboxes run as, `FIRST-LAST`: each sandbox gets one (as uid and gid) that no
    /// other sandbox on the engine uses, so that per-user kernel limits are not shared. No host
    /// account may use these uids; the range must lie within 65536-2097151.
    #[arg(long, env = "SANDKEEPER_SANDBOX_UID_RANGE", value_name = "FIRST-LAST", default_value = "1000000-1999999", value_parser = parse_uid_range)]
    pub(crate) sandbox_uid_range: UidRange,
}

fn parse_uid_range(value: &str) -> Result<UidRange, String> {
    UidRange::parse(value)
        .map_err(|error| format!("--sandbox-uid-range: `{value}` {}", error.reason))
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Maintenance")]
pub(crate) struct SweepArgs {
    /// How old a container with this instance's labels but no session must be before the
    /// maintenance sweep removes it as an orphan. The grace period protects a sandbox that is
    /// being created (its container exists a moment before its session is saved).
    #[arg(long, env = "SANDKEEPER_ORPHAN_GRACE", value_name = "DURATION", default_value = "60s", value_parser = parse_duration_at_least("--orphan-grace", Duration::from_secs(1)))]
    pub(crate) orphan_grace: Duration,
}

/// `sandkeeper serve`
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// The address the HTTP API listens on (`127.0.0.1:0` picks a free port; the chosen
    /// address is logged as `listening on <addr>`). Without an API token only a loopback
    /// address is accepted.
    #[arg(long, env = "SANDKEEPER_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = parse_listen, help_heading = "HTTP API")]
    pub(crate) listen: SocketAddr,

    /// The bearer token every request but /healthz must carry (`Authorization: Bearer
    /// <token>`). Prefer --api-token-file: a flag is visible to other users of the machine.
    #[arg(long, env = "SANDKEEPER_API_TOKEN", value_name = "TOKEN", hide_env_values = true, value_parser = parse_token("--api-token"), conflicts_with = "api_token_file", help_heading = "HTTP API")]
    pub(crate) api_token: Option<ApiToken>,

    /// A file holding the bearer token (surrounding whitespace is ignored).
    #[arg(long, env = "SANDKEEPER_API_TOKEN_FILE", value_name = "PATH", help_heading = "HTTP API")]
    pub(crate) api_token_file: Option<PathBuf>,

    /// How many sandboxes may run at once; a request that would create one more is refused
    /// with 429. The default of 64 keeps the host's processes within reach: each sandbox may
    /// hold --pids-limit processes (256 by default, so 16,384 for 64 sandboxes, below Linux's
    /// usual 32,768 pid_max). Raise it with the host's resources in mind; 0 means unlimited.
    #[arg(
        long,
        env = "SANDKEEPER_MAX_SANDBOXES",
        value_name = "N",
        default_value_t = 64,
        help_heading = "Sandboxes"
    )]
    pub(crate) max_sandboxes: u64,

    /// How long a new sandbox lives before it expires (a request may ask for another TTL with
    /// `{"ttl_seconds": N}`). An expired sandbox is replaced by the next request for its chat
    /// and removed by the cleanup loop.
    #[arg(long, env = "SANDKEEPER_TTL", value_name = "DURATION", default_value = "5m", value_parser = parse_duration_at_least("--ttl", Duration::from_secs(1)), help_heading = "Sandboxes")]
    pub(crate) ttl: Duration,

    /// The longest TTL a request may ask for with `ttl_seconds` (on create and keep-alive).
    #[arg(long, env = "SANDKEEPER_MAX_TTL", value_name = "DURATION", default_value = "1h", value_parser = parse_duration_at_least("--max-ttl", Duration::from_secs(1)), help_heading = "Sandboxes")]
    pub(crate) max_ttl: Duration,

    /// The longest a sandbox may live, counted from its creation: keep-alives and the sliding
    /// expiry never set an expiry past `created_at + max-lifetime`. At least --max-ttl.
    #[arg(long, env = "SANDKEEPER_MAX_LIFETIME", value_name = "DURATION", default_value = "24h", value_parser = parse_duration_at_least("--max-lifetime", Duration::from_secs(1)), help_heading = "Sandboxes")]
    pub(crate) max_lifetime: Duration,

    /// How a sandbox's expiry moves after it was created. `fixed`: only a keep-alive
    /// (`POST .../keepalive`) moves it. `sliding`: every exec and file transfer also counts as
    /// activity and pushes it to now + --ttl, also while a long command runs (never past
    /// --max-lifetime).
    #[arg(
        long,
        env = "SANDKEEPER_TTL_MODE",
        value_name = "MODE",
        value_enum,
        default_value = "fixed",
        help_heading = "Sandboxes"
    )]
    pub(crate) ttl_mode: TtlMode,

    /// How often the cleanup loop removes expired sandboxes (each pass waits ±10% more or
    /// less, so that replicas drift apart).
    #[arg(long, env = "SANDKEEPER_CLEANUP_INTERVAL", value_name = "DURATION", default_value = "10s", value_parser = parse_duration_at_least("--cleanup-interval", Duration::from_millis(100)), help_heading = "Maintenance")]
    pub(crate) cleanup_interval: Duration,

    /// How often the maintenance sweep runs (±10%); the first one runs in the background at
    /// start. With several replicas a lease in the store lets one of them sweep at a time, and
    /// all together sweep about once per interval (never twice within three quarters of it).
    #[arg(long, env = "SANDKEEPER_MAINTENANCE_INTERVAL", value_name = "DURATION", default_value = "30s", value_parser = parse_duration_at_least("--maintenance-interval", Duration::from_millis(100)), help_heading = "Maintenance")]
    pub(crate) maintenance_interval: Duration,

    #[command(flatten)]
    pub(crate) http: HttpArgs,
    #[command(flatten)]
    pub(crate) exec: ExecArgs,
    #[command(flatten)]
    pub(crate) sweep: SweepArgs,
    #[command(flatten)]
    pub(crate) docker: DockerArgs,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// The bounds of the HTTP edge: what one client, or many, can hold of the server before a
/// request is answered.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP API")]
pub(crate) struct HttpArgs {
    /// How long a client has to send a request's whole head (request line and headers),
    /// counted from the moment the connection opens or a keep-alive connection receives the
    /// first byte of its next request. A client that is slower is disconnected.
    #[arg(long, env = "SANDKEEPER_HTTP_HEADER_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration_at_least("--http-header-timeout", Duration::from_millis(100)))]
    pub(crate) http_header_timeout: Duration,

    /// How long a keep-alive connection may stay open without a request before it is closed.
    #[arg(long, env = "SANDKEEPER_HTTP_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_duration_at_least("--http-idle-timeout", Duration::from_millis(100)))]
    pub(crate) http_idle_timeout: Duration,

    /// How long a request's whole body may take to arrive, counted from the end of its head;
    /// a slower one is answered 408 `body_timeout` and its connection closed.
    #[arg(long, env = "SANDKEEPER_HTTP_BODY_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_duration_at_least("--http-body-timeout", Duration::from_millis(100)))]
    pub(crate) http_body_timeout: Duration,

    /// The most connections open at once. At the limit, a new connection closes the one that
    /// has waited longest without a request in progress (idle, or still sending its head); if
    /// every connection is serving a request, the new one is answered 503
    /// `too_many_connections`. Lowered at start to what the process's open-file limit allows.
    #[arg(long, env = "SANDKEEPER_HTTP_MAX_CONNECTIONS", value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) http_max_connections: u32,

    /// The most bytes of request bodies the server holds at once, over all requests (binary
    /// units: 1m = 1 MiB). A request whose body would go beyond it is answered 503
    /// `body_capacity_reached`. At least the largest single body (--file-size-limit, and
    /// --exec-stdin-limit plus 1 MiB).
    #[arg(long, env = "SANDKEEPER_HTTP_BODY_MEMORY_LIMIT", value_name = "SIZE", default_value = "256m", value_parser = parse_size("--http-body-memory-limit", 1 << 20))]
    pub(crate) http_body_memory_limit: u64,

    /// Without an API token, only requests whose Host is a loopback name (localhost,
    /// 127.0.0.1, [::1], any port) are served, so that a web page cannot reach sandkeeper
    /// through DNS rebinding. This comma-separated list adds host names (without port) that
    /// are served too. Ignored when a token is set.
    #[arg(long, env = "SANDKEEPER_ALLOWED_HOSTS", value_name = "HOSTS", value_delimiter = ',', value_parser = parse_host_name)]
    pub(crate) allowed_hosts: Vec<String>,
}

/// How a sandbox's expiry moves after it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TtlMode {
    /// The expiry moves only when a keep-alive asks.
    Fixed,
    /// Exec and file calls count as activity and push the expiry to now + the TTL.
    Sliding,
}

impl TtlMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Sliding => "sliding",
        }
    }
}

/// The settings of commands and file transfers in sandboxes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Exec and files")]
pub(crate) struct ExecArgs {
    /// How long a command may run when its request has no `timeout_ms`. When it runs out, the
    /// command and every process it started are killed and the answer says `timed_out`.
    #[arg(long, env = "SANDKEEPER_EXEC_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_duration_at_least("--exec-timeout", Duration::from_millis(1)))]
    pub(crate) exec_timeout: Duration,

    /// The longest `timeout_ms` a request may ask for.
    #[arg(long, env = "SANDKEEPER_EXEC_MAX_TIMEOUT", value_name = "DURATION", default_value = "10m", value_parser = parse_duration_at_least("--exec-max-timeout", Duration::from_millis(1)))]
    pub(crate) exec_max_timeout: Duration,

    /// How much of a command's stdout, and separately of its stderr, is returned (binary
    /// units: 1m = 1 MiB); the rest is read and discarded, and the answer says `truncated`.
    #[arg(long, env = "SANDKEEPER_EXEC_OUTPUT_LIMIT", value_name = "SIZE", default_value = "1m", value_parser = parse_size("--exec-output-limit", 1))]
    pub(crate) exec_output_limit: u64,

    /// The most stdin a command may be given; a larger `stdin` is refused with 413.
    #[arg(long, env = "SANDKEEPER_EXEC_STDIN_LIMIT", value_name = "SIZE", default_value = "16m", value_parser = parse_size("--exec-stdin-limit", 1))]
    pub(crate) exec_stdin_limit: u64,

    /// How many commands and file transfers may run at once in one sandbox (per replica); one
    /// more is refused with 429 at once.
    #[arg(long, env = "SANDKEEPER_EXEC_CONCURRENCY", value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) exec_concurrency: u32,

    /// The largest file that can be uploaded into or downloaded from a sandbox; a larger one is
    /// refused with 413. Files pass through sandkeeper's memory whole.
    #[arg(long, env = "SANDKEEPER_FILE_SIZE_LIMIT", value_name = "SIZE", default_value = "16m", value_parser = parse_size("--file-size-limit", 1))]
    pub(crate) file_size_limit: u64,
}

/// `sandkeeper migrate`
#[derive(Debug, Clone, Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// `sandkeeper cleanup`
#[derive(Debug, Clone, Args)]
pub(crate) struct CleanupArgs {
    #[command(flatten)]
    pub(crate) docker: DockerArgs,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// `sandkeeper maintain`
#[derive(Debug, Clone, Args)]
pub(crate) struct MaintainArgs {
    #[command(flatten)]
    pub(crate) sweep: SweepArgs,
    #[command(flatten)]
    pub(crate) docker: DockerArgs,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// A setting whose value is wrong in the light of another setting (or of a file it names).
/// Rendered like clap's own errors and exits with the same code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub(crate) String);

/// The validated settings of `serve`.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) api_token: Option<ApiToken>,
    pub(crate) max_sandboxes: Option<u64>,
    pub(crate) ttl: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) ttl_mode: TtlMode,
    pub(crate) exec: ExecArgs,
    pub(crate) http: HttpArgs,
    pub(crate) cleanup_interval: Duration,
    pub(crate) maintenance_interval: Duration,
    pub(crate) orphan_grace: Duration,
    pub(crate) docker: DockerArgs,
    pub(crate) store: StoreArgs,
    pub(crate) log: LogArgs,
}

impl ServeArgs {
    /// Checks what involves several settings or a file, and reads the token file.
    pub(crate) fn validate(self) -> Result<ServeConfig, ConfigError> {
        if self.ttl > self.max_ttl {
            return Err(ConfigError(format!(
                "--ttl: `{}` is longer than --max-ttl `{}`; raise --max-ttl or shorten --ttl",
                humantime::format_duration(self.ttl),
                humantime::format_duration(self.max_ttl)
            )));
        }
        if self.max_ttl > self.max_lifetime {
            return Err(ConfigError(format!(
                "--max-ttl: `{}` is longer than --max-lifetime `{}`; raise --max-lifetime or \
                 shorten --max-ttl",
                humantime::format_duration(self.max_ttl),
                humantime::format_duration(self.max_lifetime)
            )));
        }
        if self.exec.exec_timeout > self.exec.exec_max_timeout {
            return Err(ConfigError(format!(
                "--exec-timeout: `{}` is longer than --exec-max-timeout `{}`; raise \
                 --exec-max-timeout or shorten --exec-timeout",
                humantime::format_duration(self.exec.exec_timeout),
                humantime::format_duration(self.exec.exec_max_timeout)
            )));
        }
        let largest_body =
            self.exec.file_size_limit.max(self.exec.exec_stdin_limit.saturating_add(1 << 20));
        if self.http.http_body_memory_limit < largest_body {
            return Err(ConfigError(format!(
                "--http-body-memory-limit: `{}` bytes is less than the largest single request body \
                 ({largest_body} bytes, from --file-size-limit and --exec-stdin-limit plus 1 MiB); \
                 raise it or lower those limits",
                self.http.http_body_memory_limit
            )));
        }
        let api_token = match (self.api_token, &self.api_token_file) {
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(read_token_file(path)?),
            (None, None) => None,
        };
        if api_token.is_none() && !self.listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "--listen: refusing to listen on `{}` without an API token: anyone who can reach it \
                 could create containers. Set --api-token-file (or --api-token), or listen on a \
                 loopback address such as 127.0.0.1",
                self.listen
            )));
        }
        Ok(ServeConfig {
            listen: self.listen,
            api_token,
            max_sandboxes: (self.max_sandboxes > 0).then_some(self.max_sandboxes),
            ttl: self.ttl,
            max_ttl: self.max_ttl,
            max_lifetime: self.max_lifetime,
            ttl_mode: self.ttl_mode,
            exec: self.exec,
            http: self.http,
            cleanup_interval: self.cleanup_interval,
            maintenance_interval: self.maintenance_interval,
            orphan_grace: self.sweep.orphan_grace,
            docker: self.docker,
            store: self.store,
            log: self.log,
        })
    }
}

impl StoreArgs {
    /// The database URL: the one given, or the SQLite file in the data dir.
    pub(crate) fn database(&self) -> DatabaseUrl {
        self.database_url.clone().unwrap_or_else(|| DatabaseUrl::default_sqlite(&self.data_dir))
    }
}

fn read_token_file(path: &Path) -> Result<ApiToken, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError(format!("--api-token-file: cannot read `{}`: {error}", path.display()))
    })?;
    parse_token_value(text.trim())
        .map_err(|message| ConfigError(format!("--api-token-file: `{}` {message}", path.display())))
}

/// The bearer token. Its `Debug` never shows it, so that a logged config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ApiToken(String);

impl ApiToken {
    #[cfg(test)]
    pub(crate) fn for_tests(token: &str) -> Self {
        Self(token.to_owned())
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// A store URL. Its `Debug` and `Display` hide a password, if the URL has one.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct DatabaseUrl {
    url: String,
    kind: DatabaseKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl DatabaseUrl {
    fn default_sqlite(data_dir: &Path) -> Self {
        Self {
            url: format!("sqlite://{}", data_dir.join("sandkeeper.db").display()),
            kind: DatabaseKind::Sqlite,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.url
    }

    pub(crate) fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The URL with any password (in the user info or a `password=` parameter) shown as `***`.
    pub(crate) fn redacted(&self) -> String {
        let (base, query) = match self.url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (self.url.as_str(), None),
        };
        let mut shown = match base.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                match authority.rsplit_once('@').map(|(info, host)| (info.split_once(':'), host)) {
                    Some((Some((user, _password)), host)) => {
                        format!("{scheme}://{user}:***@{host}{tail}")
                    }
                    _ => base.to_owned(),
                }
            }
            None => base.to_owned(),
        };
        if let Some(query) = query {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            shown.push('?');
            shown.push_str(&pairs.join("&"));
        }
        shown
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn parse_database_url(value: &str) -> Result<DatabaseUrl, String> {
    let value = value.trim();
    let kind = if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        DatabaseKind::Postgres
    } else if value.starts_with("sqlite:") {
        DatabaseKind::Sqlite
    } else {
        let shown = DatabaseUrl { url: value.to_owned(), kind: DatabaseKind::Sqlite }.redacted();
        return Err(format!(
            "`{shown}` is not a database URL; use postgres://user@host:port/db or sqlite://path/to/file.db"
        ));
    };
    Ok(DatabaseUrl { url: value.to_owned(), kind })
}

/// Parses a human duration (`3s`, `10m`, `1h 30m`), naming the setting and the value on failure.
pub(crate) fn parse_duration(setting: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|_| format!("{setting}: `{value}` is not a duration like 30s or 5m"))
}

fn parse_duration_at_least(
    setting: &'static str,
    minimum: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |value| {
        let duration = parse_duration(setting, value)?;
        if duration < minimum {
            return Err(format!(
                "{setting}: `{value}` is too short; use at least {}",
                humantime::format_duration(minimum)
            ));
        }
        Ok(duration)
    }
}

fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("--listen: `{value}` is not an address like 127.0.0.1:8080"))
}

fn parse_token_value(value: &str) -> Result<ApiToken, String> {
    if value.is_empty() {
        return Err("is empty; a token must have at least one character".to_owned());
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters, which a bearer token cannot carry"
            .to_owned());
    }
    Ok(ApiToken(value.to_owned()))
}

fn parse_token(
    setting: &'static str,
) -> impl Fn(&str) -> Result<ApiToken, String> + Clone + Send + Sync + 'static {
    // The value is never echoed: it is a secret.
    move |value| {
        parse_token_value(value.trim()).map_err(|message| format!("{setting}: the token {message}"))
    }
}

/// A host name for --allowed-hosts: letters, digits, `-` and `.`, without a port.
fn parse_host_name(value: &str) -> Result<String, String> {
    let host = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if valid {
        Ok(host)
    } else {
        Err(format!(
            "--allowed-hosts: `{value}` is not a host name like sandkeeper.internal (letters, \
             digits, `-` and `.`, no port)"
        ))
    }
}

fn parse_non_empty(
    setting: &'static str,
) -> impl Fn(&str) -> Result<String, String> + Clone + Send + Sync + 'static {
    move |value| {
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{setting}: must not be empty"));
        }
        Ok(value.to_owned())
    }
}

fn parse_instance_id(value: &str) -> Result<String, String> {
    let valid = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && value.len() <= 63
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "--instance-id: `{value}` must be 1 to 63 letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ))
    }
}

/// Parses a size like `512m`, `1g`, `1.5GiB` or `1048576` (bytes). Units are binary, as with
/// `docker run --memory`.
fn parse_size(
    setting: &'static str,
    minimum: u64,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |value| {
        let text = value.trim().to_ascii_lowercase();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let factor: u64 = match unit.trim() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => 0,
        };
        let bytes = match number.parse::<f64>() {
            Ok(number) if factor > 0 && number.is_finite() && number > 0.0 => {
                (number * factor as f64) as u64
            }
            _ => return Err(format!("{setting}: `{value}` is not a size like 512m or 1g")),
        };
        if bytes < minimum {
            let least = if minimum >= 1 << 20 {
                format!("{}m", minimum >> 20)
            } else {
                format!("{minimum} byte{}", if minimum == 1 { "" } else { "s" })
            };
            return Err(format!("{setting}: `{value}` is too small; use at least {least}"));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sandkeeper").chain(args.iter().copied()))
    }

    fn serve(args: &[&str]) -> ServeArgs {
        match parse(&[&["serve"], args].concat()).unwrap().command {
            Command::Serve(args) => *args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_run_on_a_laptop() {
        let args = serve(&[]);
        assert_eq!(args.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args.ttl, Duration::from_secs(300));
        assert_eq!(args.max_ttl, Duration::from_secs(3600));
        assert_eq!(args.cleanup_interval, Duration::from_secs(10));
        assert_eq!(args.maintenance_interval, Duration::from_secs(30));
        assert_eq!(args.sweep.orphan_grace, Duration::from_secs(60));
        assert_eq!(args.docker.image, "sandkeeper/sandbox:latest");
        assert_eq!(args.docker.instance_id, "default");
        assert_eq!(args.log.log_format, LogFormat::Text);
        let database = args.store.database();
        assert_eq!(database.kind(), DatabaseKind::Sqlite);
        assert_eq!(database.as_str(), "sqlite://./.sandkeeper/sandkeeper.db");
        let config = args.validate().unwrap();
        assert_eq!(config.max_sandboxes, Some(64));
        assert_eq!(serve(&["--max-sandboxes", "0"]).validate().unwrap().max_sandboxes, None);
        assert!(config.api_token.is_none());
    }

    #[test]
    fn a_bad_duration_names_the_setting_and_the_value() {
        let error = parse(&["serve", "--ttl", "abc"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let message = error.to_string();
        assert!(message.contains("--ttl: `abc` is not a duration like 30s or 5m"), "{message}");
    }

    #[test]
    fn human_durations_are_accepted() {
        let args = serve(&["--ttl", "3s", "--cleanup-interval", "1s", "--max-ttl", "1h 30m"]);
        assert_eq!(args.ttl, Duration::from_secs(3));
        assert_eq!(args.cleanup_interval, Duration::from_secs(1));
        assert_eq!(args.max_ttl, Duration::from_secs(5400));
    }

    #[test]
    fn a_zero_ttl_is_refused() {
        let message = parse(&["serve", "--ttl", "0s"]).unwrap_err().to_string();
        assert!(message.contains("--ttl: `0s` is too short"), "{message}");
    }

    #[test]
    fn ttl_longer_than_max_ttl_is_refused() {
        let error = serve(&["--ttl", "2h"]).validate().unwrap_err();
        assert!(error.0.starts_with("--ttl: `2h` is longer than --max-ttl `1h`"), "{error}");
    }

    #[test]
    fn a_bad_listen_address_is_named() {
        let message = parse(&["serve", "--listen", "localhost"]).unwrap_err().to_string();
        assert!(message.contains("--listen: `localhost` is not an address"), "{message}");
    }

    #[test]
    fn without_a_token_only_loopback_is_accepted() {
        let error = serve(&["--listen", "0.0.0.0:8080"]).validate().unwrap_err();
        assert!(error.0.starts_with("--listen: refusing to listen on `0.0.0.0:8080`"), "{error}");
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
        assert!(error.0.contains("is empty"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = serve(&["--api-token-file", "/nonexistent/token"]).validate().unwrap_err();
        assert!(missing.0.starts_with("--api-token-file: cannot read `/nonexistent/token`"));
    }

    #[test]
    fn a_token_flag_is_redacted_in_debug_output() {
        let args = serve(&["--api-token", "flag-secret"]);
        assert!(!format!("{args:?}").contains("flag-secret"));
        let config = args.validate().unwrap();
        assert!(!format!("{config:?}").contains("flag-secret"));
    }

    #[test]
    fn token_and_token_file_conflict() {
        let error = parse(&["serve", "--api-token", "a", "--api-token-file", "/x"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn database_urls_are_recognised_and_passwords_hidden() {
        let args = serve(&["--database-url", "postgres://app:hunter2@db:5432/sandkeeper"]);
        let database = args.store.database();
        assert_eq!(database.kind(), DatabaseKind::Postgres);
        assert_eq!(database.to_string(), "postgres://app:***@db:5432/sandkeeper");
        assert!(!format!("{args:?}").contains("hunter2"));
        let args =
            serve(&["--database-url", "postgres://app@db/x?sslmode=disable&password=hunter2"]);
        assert_eq!(
            args.store.database().to_string(),
            "postgres://app@db/x?sslmode=disable&password=***"
        );
        let message = parse(&["serve", "--database-url", "mysql://x"]).unwrap_err().to_string();
        assert!(message.contains("`mysql://x` is not a database URL"), "{message}");
    }

    #[test]
    fn sizes_take_binary_units_and_refuse_nonsense() {
        let parse = parse_size("--memory-limit", 6 << 20);
        assert_eq!(parse("512m"), Ok(512 << 20));
        assert_eq!(parse("1G"), Ok(1 << 30));
        assert_eq!(parse("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse("8388608"), Ok(8 << 20));
        assert_eq!(parse("1k"), Err("--memory-limit: `1k` is too small; use at least 6m".into()));
        assert_eq!(
            parse("lots"),
            Err("--memory-limit: `lots` is not a size like 512m or 1g".into())
        );
        assert!(parse("5x").is_err() && parse("-5m").is_err());
    }

    #[test]
    fn docker_settings_have_secure_defaults() {
        let args = serve(&[]);
        assert_eq!(args.docker.memory_limit, 512 << 20);
        assert_eq!(args.docker.network, "none");
        assert_eq!(args.docker.pids_limit, 256);
        assert_eq!(args.docker.runtime, None);
        assert_eq!(args.docker.sandbox_uid_range, UidRange { first: 1_000_000, last: 1_999_999 });
    }

    #[test]
    fn a_bad_sandbox_uid_range_is_named() {
        let args = serve(&["--sandbox-uid-range", "200000-200009"]);
        assert_eq!(args.docker.sandbox_uid_range, UidRange { first: 200_000, last: 200_009 });
        for (value, reason) in [
            ("1000-2000", "must start at 65536 or above"),
            ("2000000-1000000", "must not end before it starts"),
            ("1000000-3000000", "must end at 2097151 or below"),
            ("lots", "must be `FIRST-LAST`"),
        ] {
            let error = parse(&["serve", "--sandbox-uid-range", value]).unwrap_err();
            assert_eq!(error.exit_code(), 2);
            let message = error.to_string();
            assert!(
                message.contains(&format!("--sandbox-uid-range: `{value}` {reason}")),
                "{message}"
            );
        }
    }

    #[test]
    fn exec_file_and_lifetime_settings_have_their_defaults() {
        let args = serve(&[]);
        assert_eq!(args.max_lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(args.ttl_mode, TtlMode::Fixed);
        assert_eq!(args.exec.exec_timeout, Duration::from_secs(30));
        assert_eq!(args.exec.exec_max_timeout, Duration::from_secs(600));
        assert_eq!(args.exec.exec_output_limit, 1 << 20);
        assert_eq!(args.exec.exec_stdin_limit, 16 << 20);
        assert_eq!(args.exec.exec_concurrency, 8);
        assert_eq!(args.exec.file_size_limit, 16 << 20);
        let args = serve(&["--ttl-mode", "sliding", "--exec-output-limit", "1k"]);
        assert_eq!(args.ttl_mode, TtlMode::Sliding);
        assert_eq!(args.exec.exec_output_limit, 1024);
    }

    #[test]
    fn exec_and_lifetime_settings_that_contradict_each_other_are_named() {
        let error = serve(&["--max-lifetime", "30m"]).validate().unwrap_err();
        assert!(
            error.0.starts_with("--max-ttl: `1h` is longer than --max-lifetime `30m`"),
            "{error}"
        );
        let error = serve(&["--exec-timeout", "20m"]).validate().unwrap_err();
        assert!(
            error.0.starts_with("--exec-timeout: `20m` is longer than --exec-max-timeout `10m`"),
            "{error}"
        );
        let message = parse(&["serve", "--exec-concurrency", "0"]).unwrap_err().to_string();
        assert!(message.contains("--exec-concurrency"), "{message}");
        let message = parse(&["serve", "--ttl-mode", "lazy"]).unwrap_err().to_string();
        assert!(message.contains("lazy") && message.contains("sliding"), "{message}");
        let message = parse(&["serve", "--file-size-limit", "0.1"]).unwrap_err().to_string();
        assert!(
            message.contains("--file-size-limit: `0.1` is too small; use at least 1 byte"),
            "{message}"
        );
    }

    #[test]
    fn the_http_edge_is_bounded_by_default_and_its_settings_are_checked() {
        let args = serve(&[]);
        assert_eq!(args.http.http_header_timeout, Duration::from_secs(10));
        assert_eq!(args.http.http_idle_timeout, Duration::from_secs(60));
        assert_eq!(args.http.http_body_timeout, Duration::from_secs(60));
        assert_eq!(args.http.http_max_connections, 512);
        assert_eq!(args.http.http_body_memory_limit, 256 << 20);
        assert!(args.http.allowed_hosts.is_empty());
        let args = serve(&["--allowed-hosts", "Devbox.Internal., sandkeeper"]);
        assert_eq!(args.http.allowed_hosts, ["devbox.internal", "sandkeeper"]);
        let message = parse(&["serve", "--allowed-hosts", "evil.example:80"]).unwrap_err();
        assert!(message.to_string().contains("--allowed-hosts: `evil.example:80`"), "{message}");
        let message = parse(&["serve", "--http-max-connections", "0"]).unwrap_err().to_string();
        assert!(message.contains("--http-max-connections"), "{message}");
        let message = parse(&["serve", "--http-header-timeout", "1ms"]).unwrap_err().to_string();
        assert!(message.contains("--http-header-timeout: `1ms` is too short"), "{message}");
        let error = serve(&["--http-body-memory-limit", "8m"]).validate().unwrap_err();
        assert!(
            error.0.starts_with("--http-body-memory-limit: `8388608` bytes is less than"),
            "{error}"
        );
        let fits = serve(&[
            "--http-body-memory-limit",
            "8m",
            "--file-size-limit",
            "4m",
            "--exec-stdin-limit",
            "4m",
        ]);
        assert!(fits.validate().is_ok());
    }

    #[test]
    fn a_bad_instance_id_is_named() {
        let message = parse(&["serve", "--instance-id", "a b"]).unwrap_err().to_string();
        assert!(message.contains("--instance-id: `a b` must be"), "{message}");
    }

    #[test]
    fn every_setting_is_explained_in_the_help() {
        let help =
            Cli::command().find_subcommand_mut("serve").unwrap().render_long_help().to_string();
        for setting in [
            "--listen",
            "--data-dir",
            "--database-url",
            "--ttl",
            "--cleanup-interval",
            "--maintenance-interval",
            "--orphan-grace",
            "--image",
            "--instance-id",
            "--api-token",
            "--api-token-file",
            "--max-sandboxes",
            "--max-ttl",
            "--log-format",
            "--max-lifetime",
            "--ttl-mode",
            "--exec-timeout",
            "--exec-max-timeout",
            "--exec-output-limit",
            "--exec-stdin-limit",
            "--exec-concurrency",
            "--file-size-limit",
            "--http-header-timeout",
            "--http-idle-timeout",
            "--http-body-timeout",
            "--http-max-connections",
            "--http-body-memory-limit",
            "--allowed-hosts",
            "--sandbox-uid-range",
        ] {
            assert!(help.contains(setting), "`{setting}` missing from\n{help}");
            let variable = format!("SANDKEEPER_{}", setting[2..].replace('-', "_").to_uppercase());
            assert!(help.contains(&variable), "`{variable}` missing from\n{help}");
        }
    }
}
