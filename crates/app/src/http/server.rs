//! The accept loop and the connections: what a client can hold of the server before any of its
//! requests is answered.
//!
//! Each connection is served by hyper's HTTP/1 server in a task of its own, watched for three
//! things: a request head that takes longer than the header timeout (counted from the
//! connection's opening, or from the first byte of a keep-alive connection's next request), a
//! keep-alive connection idle for longer than the idle timeout, and eviction. The number of
//! open connections is capped: at the cap a new connection closes the one that has gone longest
//! without a request in progress, so that clients that only hold connections open (idle, or
//! sending their head a byte at a time) can never keep a real request from being served.
//!
//! Without the cap such connections would be held forever; once they took every file descriptor
//! the process may open, `accept` would fail with EMFILE and every new connection, `/healthz`
//! included, would wait in the kernel's backlog.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The timeouts and the cap of the HTTP edge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionSettings {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// File descriptors kept for everything but client connections: the store, the Docker
/// engine, logs, and the connections being accepted and refused at the cap.
const RESERVED_DESCRIPTORS: u64 = 128;

/// The connection cap the process's open-file limit allows: `wanted`, or less when the soft
/// limit of open files (from `/proc/self/limits`) leaves too little room beside
/// [`RESERVED_DESCRIPTORS`]. `None` when `wanted` fits.
pub(crate) fn cap_for_open_file_limit(wanted: usize) -> Option<(usize, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse::<u64>()
        .ok()?;
    let room = usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
    (room < wanted).then_some((room.max(1), soft))
}

/// The state one connection shares with its watcher and the accept loop.
#[derive(Debug)]
struct Connection {
    state: Mutex<ConnectionState>,
    /// Something the watcher waits on changed: a request began or ended, a head began.
    changed: Notify,
    /// The accept loop asks this connection to close (it is at the cap).
    evict: Notify,
    evicting: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct ConnectionState {
    /// Requests whose answer has not been fully written.
    in_flight: usize,
    /// When the last request ended (or the connection opened).
    idle_since: Instant,
    /// When the first byte of a head arrived while no request was in progress.
    head_started: Option<Instant>,
    /// Whether a request was ever served: until then, the header timeout runs from the opening.
    served: bool,
}

impl Connection {
    fn new() -> Self {
        Self {
            state: Mutex::new(ConnectionState {
                in_flight: 0,
                idle_since: Instant::now(),
                head_started: None,
                served: false,
            }),
            changed: Notify::new(),
            evict: Notify::new(),
            evicting: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, ConnectionState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bytes_read(&self) {
        let mut state = self.state();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    fn request_began(self: &Arc<Self>) -> RequestGuard {
        let mut state = self.state();
        state.in_flight += 1;
        state.head_started = None;
        state.served = true;
        drop(state);
        self.changed.notify_one();
        RequestGuard(Arc::clone(self))
    }

    /// When the connection must close if nothing changes before; `None` while a request is in
    /// progress (the body timeout and the handlers' own bounds cover that time).
    fn deadline(&self, settings: &ConnectionSettings) -> Option<Instant> {
        let state = self.state();
        if state.in_flight > 0 {
            return None;
        }
        Some(match (state.head_started, state.served) {
            (Some(started), _) => started + settings.header_timeout,
            (None, false) => state.idle_since + settings.header_timeout,
            (None, true) => state.idle_since + settings.idle_timeout,
        })
    }

    /// Since when the connection has had no request in progress; `None` while one is.
    fn waiting_since(&self) -> Option<Instant> {
        let state = self.state();
        (state.in_flight == 0 && !self.evicting.load(Ordering::Relaxed)).then_some(state.idle_since)
    }
}

/// Counts one request as in progress on its connection until the answer has been written.
#[derive(Debug)]
struct RequestGuard(Arc<Connection>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
        drop(state);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in progress until it is written whole.
struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive.
struct Watched {
    stream: TcpStream,
    connection: Arc<Connection>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.connection.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The open connections, by number.
#[derive(Debug, Default)]
struct Registry {
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    next: AtomicU64,
    /// Told whenever a connection closed.
    removed: Notify,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn insert(&self, connection: Arc<Connection>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut connections = self.lock();
        connections.insert(id, connection);
        metrics::gauge!("http.server.connections.open").set(connections.len() as f64);
        id
    }

    fn remove(&self, id: u64) {
        let mut connections = self.lock();
        connections.remove(&id);
        metrics::gauge!("http.server.connections.open").set(connections.len() as f64);
        drop(connections);
        self.removed.notify_waiters();
    }

    /// Below `cap` connections, closing those that have gone longest without a request in
    /// progress as needed. False when every connection is serving a request.
    async fn make_room(&self, cap: usize) -> bool {
        for _ in 0..8 {
            if self.len() < cap {
                return true;
            }
            let removed = self.removed.notified();
            if !self.evict_one() {
                return false;
            }
            // The connection closes in its own task, at once unless a request began on it
            // meanwhile (then another is asked).
            let _ = tokio::time::timeout(Duration::from_millis(250), removed).await;
        }
        self.len() < cap
    }

    /// Asks the connection that has gone longest without a request in progress to close.
    /// False when every connection is serving a request.
    fn evict_one(&self) -> bool {
        let connections = self.lock();
        let oldest = connections
            .values()
            .filter_map(|connection| connection.waiting_since().map(|since| (since, connection)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, connection)) => {
                connection.evicting.store(true, Ordering::Relaxed);
                connection.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then lets the connections finish
/// their requests (idle ones close at once) and returns when the last one has closed.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    stop: CancellationToken,
) {
    let registry = Arc::new(Registry::default());
    let mut accept_errors_logged = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                // Answers go out as soon as they are written: with Nagle's algorithm a small
                // answer can wait for the client's acknowledgement of the previous one.
                let _ = stream.set_nodelay(true);
                stream
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) =>
            {
                // The client gave up before its connection was accepted.
                continue;
            }
            Err(error) => {
                // Out of file descriptors (EMFILE, ENFILE), most likely: free one if a
                // connection waits for nothing, and try again shortly. Said once until an
                // accept succeeds again.
                if !accept_errors_logged {
                    tracing::warn!(
                        error = %error,
                        open_connections = registry.len(),
                        "cannot accept a connection; closing an idle one and retrying"
                    );
                    accept_errors_logged = true;
                }
                if matches!(error.raw_os_error(), Some(23 | 24)) {
                    registry.evict_one();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        accept_errors_logged = false;
        if !registry.make_room(settings.max_connections).await {
            closed("refused");
            tokio::spawn(refuse(stream, settings.max_connections));
            continue;
        }
        let connection = Arc::new(Connection::new());
        let id = registry.insert(Arc::clone(&connection));
        let registry = Arc::clone(&registry);
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, Arc::clone(&connection), settings, stop).await;
            registry.remove(id);
        });
    }
    drop(listener);
    loop {
        let removed = registry.removed.notified();
        if registry.len() == 0 {
            break;
        }
        removed.await;
    }
}

/// Counts a connection the server closed (or refused) by itself, by why.
fn closed(reason: &'static str) {
    metrics::counter!("http.server.connections.closed.total", "reason" => reason).increment(1);
}

/// Answers 503 on a connection beyond the cap (every open one is serving a request), then
/// closes it. Bounded: a client that does not read gets the connection closed after a second.
async fn refuse(mut stream: TcpStream, cap: usize) {
    let body = serde_json::json!({
        "error": {
            "code": "too_many_connections",
            "message": format!(
                "the server has {cap} connections open (its --http-max-connections), each \
                 serving a request; retry shortly"
            ),
        }
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    connection: Arc<Connection>,
    settings: ConnectionSettings,
    stop: CancellationToken,
) {
    let service = {
        let connection = Arc::clone(&connection);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = connection.request_began();
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(Body::new)).await?;
                Ok::<_, Infallible>(
                    response.map(|inner| Body::new(GuardedBody { inner, _guard: guard })),
                )
            }
        })
    };
    let io = TokioIo::new(Watched { stream, connection: Arc::clone(&connection) });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // Timeouts are the watcher's below; hyper's own would need its timer.
        .header_read_timeout(None)
        .serve_connection(io, service)
        // A terminal's WebSocket leaves this loop once upgraded; its handler owns it then.
        .with_upgrades();
    tokio::pin!(served);
    let mut stopping = stop.is_cancelled();
    if stopping {
        served.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = connection.deadline(&settings);
        let sleep = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
                return;
            }
            () = sleep => {
                // Nothing in progress and the deadline passed: the client was too slow with
                // its head, or idle too long. Dropping the connection closes it.
                if connection.deadline(&settings).is_some_and(|due| due <= Instant::now()) {
                    let state = *connection.state();
                    let reason = if state.head_started.is_some() || !state.served {
                        "header_timeout"
                    } else {
                        "idle_timeout"
                    };
                    closed(reason);
                    return;
                }
            }
            () = connection.changed.notified() => {}
            () = connection.evict.notified() => {
                if connection.state().in_flight == 0 {
                    closed("evicted");
                    return;
                }
                connection.evicting.store(false, Ordering::Relaxed);
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}
