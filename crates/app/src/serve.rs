//! `sandkeeper serve`: the HTTP API and the background loops, until SIGINT or SIGTERM.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sandkeeper_adapters_observability::Telemetry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Failure;
use crate::config::ServeConfig;
use crate::config::setting::{API_TOKEN, API_TOKEN_FILE, HTTP_MAX_CONNECTIONS, LISTEN};
use crate::http::server;
use crate::http::{self, AppState};
use crate::loops;
use crate::services::Services;
use crate::wiring::{self, StartError};

/// How long in-flight requests may take to finish after a shutdown signal. Every request is
/// bounded by the store's and Docker's own timeouts; this is the backstop.
const REQUEST_GRACE: Duration = Duration::from_secs(60);
/// How long a running background pass may take to finish after a shutdown signal.
const LOOP_GRACE: Duration = Duration::from_secs(30);
/// How long the spans still queued may take to reach the trace collector at shutdown.
const TRACE_FLUSH_GRACE: Duration = Duration::from_secs(5);

pub(crate) async fn serve(config: ServeConfig, telemetry: Telemetry) -> Result<(), Failure> {
    let (engines, endpoints) = wiring::engines(&config.engines)?;
    let store = wiring::open_store(&config.store).await?;
    let services = Arc::new(Services::new(
        wiring::ports(&store, engines, &config.services).await?,
        &config.services,
    ));
    let traces = telemetry.clone();
    let metrics: Arc<dyn Fn() -> String + Send + Sync> =
        Arc::new(move || telemetry.render_metrics());
    let app = http::router(
        AppState::new(Arc::clone(&services), metrics, config.services.keep_alive.max_ttl),
        config.api_token.clone(),
        config.edge.clone(),
    );

    let signal = shutdown_signal()?;
    let listener = TcpListener::bind(config.listen).await.map_err(|error| {
        StartError(format!("{LISTEN}: cannot listen on `{}`: {error}", config.listen))
    })?;
    let address = listener
        .local_addr()
        .map_err(|error| StartError(format!("{LISTEN}: cannot read the bound address: {error}")))?;
    if config.api_token.is_none() {
        tracing::warn!(
            "authentication is off: no {API_TOKEN} or {API_TOKEN_FILE} is set, so sandkeeper \
             listens on a loopback address only"
        );
    }
    tracing::info!(
        instance_id = %config.docker.instance_id,
        image = %config.docker.image,
        docker = %endpoints.join(", "),
        ttl = %humantime::format_duration(config.services.keep_alive.default_ttl),
        ttl_mode = config.services.ttl_mode.as_str(),
        "sandkeeper started"
    );
    tracing::info!("listening on {address}");
    let mut connections = config.connections;
    if let Some((cap, open_files)) = server::cap_for_open_file_limit(connections.max_connections) {
        tracing::warn!(
            open_file_limit = open_files,
            max_connections = cap,
            "{HTTP_MAX_CONNECTIONS} {} does not fit in the process's open-file limit; using {cap} \
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

    // Cancelled on a signal: the server stops accepting and the loops stop.
    let shutdown = CancellationToken::new();
    let loop_tasks = loops::spawn(Arc::clone(&services), config.loops, &shutdown);
    let mut server = tokio::spawn(server::serve(listener, app, connections, shutdown.clone()));

    tokio::select! {
        signal = signal => {
            tracing::info!(signal, "shutting down: no new connections, finishing in-flight requests");
        }
        finished = &mut server => {
            // The server only returns on its own if it failed.
            shutdown.cancel();
            let reason = match finished {
                Ok(()) => "the HTTP server stopped".to_owned(),
                Err(error) => format!("the HTTP server task failed: {error}"),
            };
            store.close().await;
            return Err(StartError(reason).into());
        }
    }

    shutdown.cancel();
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
    if !traces.flush_traces(TRACE_FLUSH_GRACE).await {
        tracing::warn!(
            grace = %humantime::format_duration(TRACE_FLUSH_GRACE),
            "the trace collector did not take the last spans in time; they are dropped"
        );
    }
    tracing::info!("sandkeeper stopped; running sandboxes stay and are reused after a restart");
    Ok(())
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
