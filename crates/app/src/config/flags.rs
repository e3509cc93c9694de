//! The definition of the command line: subcommands and settings, each a flag and a
//! `SANDKEEPER_*` variable (named once, in [`super::setting`]).
//!
//! Single values are checked while parsing by the parsers of [`super::values`]; checks that
//! involve several settings run in [`super::validate`].

use super::workspace::WorkspaceArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sandkeeper_adapters_docker::UidRange;
use sandkeeper_adapters_observability::OtlpEndpoint;

use super::secrets::{ApiToken, DatabaseUrl};
use super::setting::*;
use super::values;

const ABOUT: &str = "sandkeeper gives every chat its own Docker sandbox: it creates the sandbox on \
the first request, hands the same one back while it lives, replaces it once it has expired, and \
removes whatever is expired, dead or orphaned.";

const AFTER_HELP: &str = "\
Every setting is a flag and an environment variable (SANDKEEPER_<NAME>); the flag wins.
Durations are written like 3s, 10m, 1h 30m. Run `sandkeeper <command> --help` for a command's settings.
Docker is reached like the docker CLI does: DOCKER_HOST, else /var/run/docker.sock; a tcp://
engine over TLS with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem).
PostgreSQL over TLS: sslmode and sslrootcert in the database URL.
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
    /// /var/run/docker.sock; TLS with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH).
    #[command(after_help = "The API is described in docs/api.md and docs/openapi.yaml.")]
    // Boxed: its settings outweigh every other command's by far.
    Serve(Box<ServeArgs>),
    /// Create or update the store's tables, then exit.
    Migrate(MigrateArgs),
    /// Remove expired sandboxes once (up to 1000), print the report as JSON on stdout, exit.
    ///
    /// Exits 1 if some could not be removed (they stay, and the next pass retries them).
    Cleanup(OneShotArgs),
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
        long = LOG_FORMAT.long,
        env = LOG_FORMAT.env,
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
    #[arg(long = DATA_DIR.long, env = DATA_DIR.env, value_name = "DIR", default_value = "./.sandkeeper")]
    pub(crate) data_dir: PathBuf,

    /// Where the sessions are stored: `postgres://user@host:port/db` for PostgreSQL (needed to
    /// run several replicas), or `sqlite://path/to/file.db`. Default: the SQLite file
    /// `<data-dir>/sandkeeper.db`, created on first start.
    #[arg(long = DATABASE_URL.long, env = DATABASE_URL.env, value_name = "URL", value_parser = values::database_url, hide_env_values = true)]
    pub(crate) database_url: Option<DatabaseUrl>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Docker")]
pub(crate) struct DockerArgs {
    /// The image every sandbox container runs. It must already be present on the engine
    /// (`cargo xtask image` builds the default one; nothing is pulled).
    #[arg(
        long = IMAGE.long,
        env = IMAGE.env,
        value_name = "IMAGE",
        default_value = "sandkeeper/sandbox:latest",
        value_parser = values::non_empty(IMAGE)
    )]
    pub(crate) image: String,

    /// This deployment's id, written into every container's `io.sandkeeper.instance` label.
    /// sandkeeper only ever stops or removes containers that carry its own instance label, so
    /// two deployments on one engine need two ids; the replicas of one deployment share one.
    #[arg(
        long = INSTANCE_ID.long,
        env = INSTANCE_ID.env,
        value_name = "ID",
        default_value = "default",
        value_parser = values::instance_id
    )]
    pub(crate) instance_id: String,

    /// The memory limit of each sandbox, like `512m` or `1g` (binary units: 1m = 1 MiB); no
    /// swap beyond it.
    #[arg(long = MEMORY_LIMIT.long, env = MEMORY_LIMIT.env, value_name = "SIZE", default_value = "512m", value_parser = values::size_at_least(MEMORY_LIMIT, 6 << 20))]
    pub(crate) memory_limit: u64,

    /// The CPU limit of each sandbox, in CPUs (`0.5` is half a core).
    #[arg(long = CPUS.long, env = CPUS.env, value_name = "CPUS", default_value_t = 1.0)]
    pub(crate) cpus: f64,

    /// The most processes and threads one sandbox may hold (a fork bomb stops there).
    #[arg(long = PIDS_LIMIT.long, env = PIDS_LIMIT.env, value_name = "N", default_value_t = 256)]
    pub(crate) pids_limit: u32,

    /// The Docker network mode of the sandboxes. `none` (the default) gives them no network at
    /// all, only loopback; anything else lets sandboxed code reach the network.
    #[arg(long = NETWORK.long, env = NETWORK.env, value_name = "MODE", default_value = "none")]
    pub(crate) network: String,

    /// The OCI runtime of the sandboxes, e.g. `runsc` for gVisor (it must be registered with
    /// the engine). Default: the engine's default runtime.
    #[arg(long = RUNTIME.long, env = RUNTIME.env, value_name = "NAME")]
    pub(crate) runtime: Option<String>,

    /// The uids sandboxes run as, `FIRST-LAST`: each sandbox gets one (as uid and gid) that no
    /// other sandbox on the engine uses, so that per-user kernel limits are not shared. No host
    /// account may use these uids; the range must lie within 65536-2097151.
    #[arg(long = SANDBOX_UID_RANGE.long, env = SANDBOX_UID_RANGE.env, value_name = "FIRST-LAST", default_value = "1000000-1999999", value_parser = values::uid_range)]
    pub(crate) sandbox_uid_range: UidRange,

    /// A Docker engine sandboxes may run on, `NAME=URL[,max=N][,runtime=R]`: a short name
    /// (a-z, 0-9, `_`, `-`), the engine's address as DOCKER_HOST takes it (`unix:///path` or
    /// `tcp://host:port`, TLS as for DOCKER_HOST), at most N sandboxes on it, and the OCI
    /// runtime of its sandboxes (default --runtime). Repeat the flag for each engine; in
    /// SANDKEEPER_ENGINE separate engines with `;`. A new sandbox goes to the engine that is
    /// up and has the most free room. Every replica must be given the same set (each session
    /// records its engine's name). Default: one engine named `default` at DOCKER_HOST.
    #[arg(
        long = ENGINE.long,
        env = ENGINE.env,
        value_name = "NAME=URL[,max=N][,runtime=R]",
        action = clap::ArgAction::Append,
        value_delimiter = super::engines::ENGINE_SEPARATOR,
        value_parser = super::engines::engine_arg,
        help_heading = "Engines"
    )]
    pub(crate) engines: Vec<super::engines::EngineArg>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Maintenance")]
pub(crate) struct SweepArgs {
    /// How old a container with this instance's labels but no session must be before the
    /// maintenance sweep removes it as an orphan. The grace period protects a sandbox that is
    /// being created (its container exists a moment before its session is saved).
    #[arg(long = ORPHAN_GRACE.long, env = ORPHAN_GRACE.env, value_name = "DURATION", default_value = "60s", value_parser = values::duration_at_least(ORPHAN_GRACE, Duration::from_secs(1)))]
    pub(crate) orphan_grace: Duration,

    /// How long the sandboxes of an engine that stopped answering keep their sessions (with
    /// several --engine): after it, they are marked crashed and the chat's next request
    /// creates a sandbox on another engine, with its workspace restored from the last save.
    #[arg(long = ENGINE_LOSS_GRACE.long, env = ENGINE_LOSS_GRACE.env, value_name = "DURATION", default_value = "2m", value_parser = values::duration_at_least(ENGINE_LOSS_GRACE, Duration::from_secs(1)), help_heading = "Engines")]
    pub(crate) engine_loss_grace: Duration,
}

/// `sandkeeper serve`
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// The address the HTTP API listens on (`127.0.0.1:0` picks a free port; the chosen
    /// address is logged as `listening on <addr>`). Without an API token only a loopback
    /// address is accepted.
    #[arg(long = LISTEN.long, env = LISTEN.env, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = values::listen, help_heading = "HTTP API")]
    pub(crate) listen: SocketAddr,

    /// The bearer token every request but /healthz must carry (`Authorization: Bearer
    /// <token>`). Prefer --api-token-file: a flag is visible to other users of the machine.
    #[arg(long = API_TOKEN.long, env = API_TOKEN.env, value_name = "TOKEN", hide_env_values = true, value_parser = values::token(API_TOKEN), conflicts_with = "api_token_file", help_heading = "HTTP API")]
    pub(crate) api_token: Option<ApiToken>,

    /// A file holding the bearer token (surrounding whitespace is ignored).
    #[arg(long = API_TOKEN_FILE.long, env = API_TOKEN_FILE.env, value_name = "PATH", help_heading = "HTTP API")]
    pub(crate) api_token_file: Option<PathBuf>,

    /// How many sandboxes may run at once; a request that would create one more is refused
    /// with 429. The default of 64 keeps the host's processes within reach: each sandbox may
    /// hold --pids-limit processes (256 by default, so 16,384 for 64 sandboxes, below Linux's
    /// usual 32,768 pid_max). Raise it with the host's resources in mind; 0 means unlimited.
    #[arg(
        long = MAX_SANDBOXES.long,
        env = MAX_SANDBOXES.env,
        value_name = "N",
        default_value_t = 64,
        help_heading = "Sandboxes"
    )]
    pub(crate) max_sandboxes: u64,

    /// How many started, never-used sandboxes to keep ready (all replicas of the deployment
    /// together), so that a new chat is answered from this warm pool in milliseconds instead
    /// of waiting for Docker; the chat's TTL and workspace are applied after the claim. Pooled
    /// containers do not count against --max-sandboxes: the host must hold both. 0: no pool.
    #[arg(long = POOL_SIZE.long, env = POOL_SIZE.env, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1024), help_heading = "Sandboxes")]
    pub(crate) pool_size: u64,

    /// A pooled container older than this is replaced by a fresh one (pooled containers made
    /// with another configuration are replaced at once).
    #[arg(long = POOL_MAX_AGE.long, env = POOL_MAX_AGE.env, value_name = "DURATION", default_value = "1h", value_parser = values::duration_at_least(POOL_MAX_AGE, Duration::from_secs(1)), help_heading = "Sandboxes")]
    pub(crate) pool_max_age: Duration,

    /// How long a new sandbox lives before it expires (a request may ask for another TTL with
    /// `{"ttl_seconds": N}`). An expired sandbox is replaced by the next request for its chat
    /// and removed by the cleanup loop.
    #[arg(long = TTL.long, env = TTL.env, value_name = "DURATION", default_value = "5m", value_parser = values::duration_at_least(TTL, Duration::from_secs(1)), help_heading = "Sandboxes")]
    pub(crate) ttl: Duration,

    /// The longest TTL a request may ask for with `ttl_seconds` (on create and keep-alive).
    #[arg(long = MAX_TTL.long, env = MAX_TTL.env, value_name = "DURATION", default_value = "1h", value_parser = values::duration_at_least(MAX_TTL, Duration::from_secs(1)), help_heading = "Sandboxes")]
    pub(crate) max_ttl: Duration,

    /// The longest a sandbox may live, counted from its creation: keep-alives and the sliding
    /// expiry never set an expiry past `created_at + max-lifetime`. At least --max-ttl.
    #[arg(long = MAX_LIFETIME.long, env = MAX_LIFETIME.env, value_name = "DURATION", default_value = "24h", value_parser = values::duration_at_least(MAX_LIFETIME, Duration::from_secs(1)), help_heading = "Sandboxes")]
    pub(crate) max_lifetime: Duration,

    /// How a sandbox's expiry moves after it was created. `fixed`: only a keep-alive
    /// (`POST .../keepalive`) moves it. `sliding`: every exec and file transfer also counts as
    /// activity and pushes it to now + --ttl, also while a long command runs (never past
    /// --max-lifetime).
    #[arg(
        long = TTL_MODE.long,
        env = TTL_MODE.env,
        value_name = "MODE",
        value_enum,
        default_value = "fixed",
        help_heading = "Sandboxes"
    )]
    pub(crate) ttl_mode: TtlMode,

    /// How often the cleanup loop removes expired sandboxes (each pass waits ±10% more or
    /// less, so that replicas drift apart).
    #[arg(long = CLEANUP_INTERVAL.long, env = CLEANUP_INTERVAL.env, value_name = "DURATION", default_value = "10s", value_parser = values::duration_at_least(CLEANUP_INTERVAL, Duration::from_millis(100)), help_heading = "Maintenance")]
    pub(crate) cleanup_interval: Duration,

    /// How often the maintenance sweep runs (±10%); the first one runs in the background at
    /// start. With several replicas a lease in the store lets one of them sweep at a time, and
    /// all together sweep about once per interval (never twice within three quarters of it).
    #[arg(long = MAINTENANCE_INTERVAL.long, env = MAINTENANCE_INTERVAL.env, value_name = "DURATION", default_value = "30s", value_parser = values::duration_at_least(MAINTENANCE_INTERVAL, Duration::from_millis(100)), help_heading = "Maintenance")]
    pub(crate) maintenance_interval: Duration,

    /// Export traces to this OpenTelemetry collector, OTLP over HTTP/protobuf: the base URL,
    /// like `http://127.0.0.1:4318` (spans are posted to `<URL>/v1/traces`; plain HTTP only).
    /// OTEL_EXPORTER_OTLP_ENDPOINT sets it too when neither this flag nor its variable is set.
    /// Default: no traces are exported.
    #[arg(long = OTLP_ENDPOINT.long, env = OTLP_ENDPOINT.env, value_name = "URL", value_parser = values::otlp_endpoint, help_heading = "Observability")]
    pub(crate) otlp_endpoint: Option<OtlpEndpoint>,

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
    pub(crate) workspace: WorkspaceArgs,
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
    #[arg(long = HTTP_HEADER_TIMEOUT.long, env = HTTP_HEADER_TIMEOUT.env, value_name = "DURATION", default_value = "10s", value_parser = values::duration_at_least(HTTP_HEADER_TIMEOUT, Duration::from_millis(100)))]
    pub(crate) http_header_timeout: Duration,

    /// How long a keep-alive connection may stay open without a request before it is closed.
    #[arg(long = HTTP_IDLE_TIMEOUT.long, env = HTTP_IDLE_TIMEOUT.env, value_name = "DURATION", default_value = "60s", value_parser = values::duration_at_least(HTTP_IDLE_TIMEOUT, Duration::from_millis(100)))]
    pub(crate) http_idle_timeout: Duration,

    /// How long a request's whole body may take to arrive, counted from the end of its head;
    /// a slower one is answered 408 `body_timeout` and its connection closed.
    #[arg(long = HTTP_BODY_TIMEOUT.long, env = HTTP_BODY_TIMEOUT.env, value_name = "DURATION", default_value = "60s", value_parser = values::duration_at_least(HTTP_BODY_TIMEOUT, Duration::from_millis(100)))]
    pub(crate) http_body_timeout: Duration,

    /// The most connections open at once. At the limit, a new connection closes the one that
    /// has waited longest without a request in progress (idle, or still sending its head); if
    /// every connection is serving a request, the new one is answered 503
    /// `too_many_connections`. Lowered at start to what the process's open-file limit allows.
    #[arg(long = HTTP_MAX_CONNECTIONS.long, env = HTTP_MAX_CONNECTIONS.env, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) http_max_connections: u32,

    /// The most bytes of request bodies the server holds at once, over all requests (binary
    /// units: 1m = 1 MiB). A request whose body would go beyond it is answered 503
    /// `body_capacity_reached`. At least the largest single body (--file-size-limit, and
    /// --exec-stdin-limit plus 1 MiB).
    #[arg(long = HTTP_BODY_MEMORY_LIMIT.long, env = HTTP_BODY_MEMORY_LIMIT.env, value_name = "SIZE", default_value = "256m", value_parser = values::size_at_least(HTTP_BODY_MEMORY_LIMIT, 1 << 20))]
    pub(crate) http_body_memory_limit: u64,

    /// Without an API token, only requests whose Host is a loopback name (localhost,
    /// 127.0.0.1, [::1], any port) are served, so that a web page cannot reach sandkeeper
    /// through DNS rebinding. This comma-separated list adds host names (without port) that
    /// are served too. Ignored when a token is set.
    #[arg(long = ALLOWED_HOSTS.long, env = ALLOWED_HOSTS.env, value_name = "HOSTS", value_delimiter = ',', value_parser = values::host_name)]
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

sandkeeper_domain::spelling!(TtlMode { Fixed => "fixed", Sliding => "sliding" });

/// The settings of commands and file transfers in sandboxes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Exec and files")]
pub(crate) struct ExecArgs {
    /// How long a command may run when its request has no `timeout_ms`. When it runs out, the
    /// command and every process it started are killed and the answer says `timed_out`.
    #[arg(long = EXEC_TIMEOUT.long, env = EXEC_TIMEOUT.env, value_name = "DURATION", default_value = "30s", value_parser = values::duration_at_least(EXEC_TIMEOUT, Duration::from_millis(1)))]
    pub(crate) exec_timeout: Duration,

    /// The longest `timeout_ms` a request may ask for.
    #[arg(long = EXEC_MAX_TIMEOUT.long, env = EXEC_MAX_TIMEOUT.env, value_name = "DURATION", default_value = "10m", value_parser = values::duration_at_least(EXEC_MAX_TIMEOUT, Duration::from_millis(1)))]
    pub(crate) exec_max_timeout: Duration,

    /// How much of a command's stdout, and separately of its stderr, is returned (binary
    /// units: 1m = 1 MiB); the rest is read and discarded, and the answer says `truncated`.
    #[arg(long = EXEC_OUTPUT_LIMIT.long, env = EXEC_OUTPUT_LIMIT.env, value_name = "SIZE", default_value = "1m", value_parser = values::size_at_least(EXEC_OUTPUT_LIMIT, 1))]
    pub(crate) exec_output_limit: u64,

    /// The most stdin a command may be given; a larger `stdin` is refused with 413.
    #[arg(long = EXEC_STDIN_LIMIT.long, env = EXEC_STDIN_LIMIT.env, value_name = "SIZE", default_value = "16m", value_parser = values::size_at_least(EXEC_STDIN_LIMIT, 1))]
    pub(crate) exec_stdin_limit: u64,

    /// How many commands and file transfers may run at once in one sandbox (per replica); one
    /// more is refused with 429 at once.
    #[arg(long = EXEC_CONCURRENCY.long, env = EXEC_CONCURRENCY.env, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) exec_concurrency: u32,

    /// The largest file that can be uploaded into or downloaded from a sandbox; a larger one is
    /// refused with 413. Files pass through sandkeeper's memory whole.
    #[arg(long = FILE_SIZE_LIMIT.long, env = FILE_SIZE_LIMIT.env, value_name = "SIZE", default_value = "16m", value_parser = values::size_at_least(FILE_SIZE_LIMIT, 1))]
    pub(crate) file_size_limit: u64,

    /// How many background processes may run at once in one sandbox; one more is refused with
    /// 429.
    #[arg(long = MAX_PROCESSES.long, env = MAX_PROCESSES.env, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) max_processes: u32,

    /// How much of each output stream of a background process the sandbox keeps (in its
    /// `/tmp`); beyond it the oldest bytes are dropped.
    #[arg(long = PROCESS_LOG_LIMIT.long, env = PROCESS_LOG_LIMIT.env, value_name = "SIZE", default_value = "16m", value_parser = values::size_at_least(PROCESS_LOG_LIMIT, 4096))]
    pub(crate) process_log_limit: u64,
}

/// `sandkeeper migrate`
#[derive(Debug, Clone, Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// What a one-shot command (`cleanup`, `maintain`) works on: the Docker engine and the store.
#[derive(Debug, Clone, Args)]
pub(crate) struct OneShotArgs {
    #[command(flatten)]
    pub(crate) docker: DockerArgs,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) workspace: WorkspaceArgs,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// `sandkeeper maintain`
#[derive(Debug, Clone, Args)]
pub(crate) struct MaintainArgs {
    #[command(flatten)]
    pub(crate) sweep: SweepArgs,
    #[command(flatten)]
    pub(crate) one_shot: OneShotArgs,
}

/// The command line of a test: `sandkeeper <args>`.
#[cfg(test)]
pub(super) fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("sandkeeper").chain(args.iter().copied()))
}

/// The settings of `sandkeeper serve <args>`.
#[cfg(test)]
pub(super) fn serve(args: &[&str]) -> ServeArgs {
    match parse(&[&["serve"], args].concat()).unwrap().command {
        Command::Serve(args) => *args,
        other => panic!("parsed {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use sandkeeper_adapters_sql::Backend;

    use super::*;

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
        let store = args.store.config();
        assert_eq!(store.url.backend(), Backend::Sqlite);
        assert_eq!(store.url.expose(), "sqlite://./.sandkeeper/sandkeeper.db");
        assert_eq!(store.create_dir, Some(PathBuf::from("./.sandkeeper")));
    }

    #[test]
    fn a_bad_duration_names_the_setting_and_the_value() {
        let error = parse(&["serve", "--ttl", "abc"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let message = error.to_string();
        assert!(message.contains("--ttl: `abc` is not a duration like 30s or 5m"), "{message}");
        let cause = std::error::Error::source(&error).and_then(|cause| cause.downcast_ref());
        assert_eq!(cause.map(|cause: &ConfigError| cause.setting), Some(TTL.into()));
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
    fn a_bad_listen_address_is_named() {
        let message = parse(&["serve", "--listen", "localhost"]).unwrap_err().to_string();
        assert!(message.contains("--listen: `localhost` is not an address"), "{message}");
    }

    #[test]
    fn token_and_token_file_conflict() {
        let error = parse(&["serve", "--api-token", "a", "--api-token-file", "/x"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn database_urls_are_recognised_and_passwords_hidden() {
        let args = serve(&["--database-url", "postgres://app:hunter2@db:5432/sandkeeper"]);
        let store = args.store.config();
        assert_eq!(store.url.backend(), Backend::Postgres);
        assert_eq!(store.url.to_string(), "postgres://app:***@db:5432/sandkeeper");
        assert_eq!(store.create_dir, None);
        assert!(!format!("{args:?}").contains("hunter2"));
        let args =
            serve(&["--database-url", "postgres://app@db/x?sslmode=disable&password=hunter2"]);
        assert_eq!(
            args.store.config().url.to_string(),
            "postgres://app@db/x?sslmode=disable&password=***"
        );
        let message = parse(&["serve", "--database-url", "mysql://x"]).unwrap_err().to_string();
        assert!(message.contains("`mysql://x` is not a database URL"), "{message}");
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
    fn single_exec_and_file_values_are_checked_while_parsing() {
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
    fn the_http_edge_is_bounded_by_default_and_its_single_values_are_checked() {
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
