//! `sandkeeper serve`: the HTTP API and the background loops, until SIGINT or SIGTERM.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sandkeeper_adapters_observability::Telemetry;
use sandkeeper_usecase::{ExecSettings, FileSettings};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Failure;
use crate::config::ServeConfig;
use crate::http::server::{self, ConnectionSettings};
use crate::http::{self, AppState, EdgeSettings};
use crate::loops::{self, LoopSettings, Shutdown};
use crate::services::{OperationSettings, ServiceSettings, Services};
use crate::wiring::{self, StartError};

/// How long in-flight requests may take to finish after a shutdown signal. Every request is
/// bounded by the store's and Docker's own timeouts; this is the backstop.
const REQUEST_GRACE: Duration = Duration::from_secs(60);
/// How long a running background pass may take to finish after a shutdown signal.
const LOOP_GRACE: Duration = Duration::from_secs(30);

/// The share of `--maintenance-interval` that must pass since the last completed sweep before a
/// periodic sweep runs again. Below 1 so that the jitter of one replica's own loop (±10%) never
/// makes it skip its turn, while replicas together still sweep about once per interval.
const SWEEP_MIN_INTERVAL_SHARE: f64 = 0.75;

pub(crate) async fn serve(config: ServeConfig, telemetry: Telemetry) -> Result<(), Failure> {
    let runtime = wiring::docker_runtime(&config.docker)?;
    let docker_endpoint = runtime.endpoint().to_owned();
    let store = wiring::open_store(&config.store).await?;
    let settings = ServiceSettings {
        ttl: config.ttl,
        max_sandboxes: config.max_sandboxes,
        instance_id: config.docker.instance_id.clone(),
        orphan_grace: config.orphan_grace,
        sweep_min_interval: config.maintenance_interval.mul_f64(SWEEP_MIN_INTERVAL_SHARE),
        operations: operation_settings(&config),
    };
    let services = Arc::new(Services::new(wiring::ports(&store, runtime), &settings));
    let metrics: Arc<dyn Fn() -> String + Send + Sync> =
        Arc::new(move || telemetry.render_metrics());
    let app = http::router(
        AppState::new(Arc::clone(&services), metrics, config.max_ttl),
        config.api_token.clone(),
        edge_settings(&config),
    );

    let signal = shutdown_signal()?;
    let listener = TcpListener::bind(config.listen).await.map_err(|error| {
        StartError(format!("--listen: cannot listen on `{}`: {error}", config.listen))
    })?;
    let address = listener
        .local_addr()
        .map_err(|error| StartError(format!("--listen: cannot read the bound address: {error}")))?;
    if config.api_token.is_none() {
        tracing::warn!(
            "authentication is off: no --api-token or --api-token-file is set, so sandkeeper \
             listens on a loopback address only"
        );
    }
    tracing::info!(
        instance_id = %config.docker.instance_id,
        image = %config.docker.image,
        docker = %docker_endpoint,
        ttl = %humantime::format_duration(config.ttl),
        ttl_mode = config.ttl_mode.as_str(),
        "sandkeeper started"
    );
    tracing::info!("listening on {address}");
    let mut connections = ConnectionSettings {
        header_timeout: config.http.http_header_timeout,
        idle_timeout: config.http.http_idle_timeout,
        max_connections: config.http.http_max_connections as usize,
    };
    if let Some((cap, open_files)) = server::cap_for_open_file_limit(connections.max_connections) {
        tracing::warn!(
            open_file_limit = open_files,
            max_connections = cap,
            "--http-max-connections {} does not fit in the process's open-file limit; using {cap} \
             (raise the limit, e.g. LimitNOFILE= or ulimit -n, to allow more)",
            connections.max_connections
        );
        connections.max_connections = cap;
    }

    // Said once at start, so that an operator sees at once why requests will answer 503. The
    // server does not wait: it serves what it can and recovers by itself.
    let startup_check = Arc::clone(&services);
    tokio::spawn(async move {
        let readiness = startup_check.readiness().await;
        if let Err(why) = &readiness.docker {
            tracing::warn!(
                docker = %why,
                "Docker is unreachable; sandbox requests answer 503 until it is back"
            );
        }
        if let Err(why) = &readiness.store {
            tracing::warn!(store = %why, "the store is unreachable; requests answer 503 until it is back");
        }
    });

    let shutdown = Shutdown::new();
    let loop_tasks = loops::spawn(
        Arc::clone(&services),
        LoopSettings {
            cleanup_interval: config.cleanup_interval,
            maintenance_interval: config.maintenance_interval,
        },
        &shutdown,
    );

    let (stop_accepting, stopped) = watch::channel(false);
    let mut server = tokio::spawn(server::serve(listener, app, connections, stopped));

    tokio::select! {
        signal = signal => {
            tracing::info!(signal, "shutting down: no new connections, finishing in-flight requests");
        }
        finished = &mut server => {
            // The server only returns on its own if it failed.
            shutdown.trigger();
            let reason = match finished {
                Ok(()) => "the HTTP server stopped".to_owned(),
                Err(error) => format!("the HTTP server task failed: {error}"),
            };
            store.close().await;
            return Err(StartError(reason).into());
        }
    }

    let _ = stop_accepting.send(true);
    shutdown.trigger();
    match tokio::time::timeout(REQUEST_GRACE, &mut server).await {
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(
                grace = %humantime::format_duration(REQUEST_GRACE),
                "in-flight requests did not finish in time; stopping anyway"
            );
            server.abort();
        }
    }
    for task in loop_tasks {
        if tokio::time::timeout(LOOP_GRACE, task).await.is_err() {
            tracing::warn!("a background pass did not finish in time; stopping anyway");
        }
    }
    store.close().await;
    tracing::info!("sandkeeper stopped; running sandboxes stay and are reused after a restart");
    Ok(())
}

/// What the router bounds of every request: the body's time and the bytes of all bodies, and
/// which hosts are served without a token.
fn edge_settings(config: &ServeConfig) -> EdgeSettings {
    let bytes = |size: u64| usize::try_from(size).unwrap_or(usize::MAX);
    let exec_body = bytes(config.exec.exec_stdin_limit).saturating_add(1 << 20);
    EdgeSettings {
        body_timeout: config.http.http_body_timeout,
        body_memory_limit: bytes(config.http.http_body_memory_limit),
        largest_body: bytes(config.exec.file_size_limit).max(exec_body),
        allowed_hosts: config.http.allowed_hosts.clone(),
    }
}

/// Exec, file and expiry settings from the command line.
fn operation_settings(config: &ServeConfig) -> OperationSettings {
    let exec = &config.exec;
    let bytes = |size: u64| usize::try_from(size).unwrap_or(usize::MAX);
    OperationSettings {
        max_ttl: config.max_ttl,
        max_lifetime: config.max_lifetime,
        ttl_mode: config.ttl_mode,
        exec: ExecSettings {
            default_timeout: exec.exec_timeout,
            max_timeout: exec.exec_max_timeout,
            output_limit: bytes(exec.exec_output_limit),
            stdin_limit: bytes(exec.exec_stdin_limit),
        },
        files: FileSettings {
            upload_limit: exec.file_size_limit,
            download_limit: exec.file_size_limit,
        },
        per_sandbox: exec.exec_concurrency as usize,
    }
}

/// Installs the SIGINT and SIGTERM handlers now (so that a signal that comes right after start
/// is not lost to the default action) and resolves with the name of the first one.
fn shutdown_signal() -> Result<impl Future<Output = &'static str>, StartError> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind, name: &str| {
        signal(kind)
            .map_err(|error| StartError(format!("cannot install the {name} handler: {error}")))
    };
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}
