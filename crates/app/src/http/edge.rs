//! What every request is held to before a handler sees it: without a token, a loopback Host and
//! no foreign browser origin; and for every request, a body that arrives in time and fits in
//! what the server holds of all bodies together. A body a handler did not read whole is
//! drained, up to a bound, so that a client that writes its whole body before reading gets the
//! answer rather than a reset connection.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use super::ApiError;
use super::body::shorten;

/// The bounds of every request, from the command line.
#[derive(Debug, Clone)]
pub(crate) struct EdgeSettings {
    /// How long a request's whole body may take, from the end of its head.
    pub(crate) body_timeout: Duration,
    /// The bytes of request bodies held at once, over all requests.
    pub(crate) body_memory_limit: usize,
    /// The largest body any route accepts: what is drained of an unread body at most.
    pub(crate) largest_body: usize,
    /// Host names served without a token beside the loopback ones.
    pub(crate) allowed_hosts: Vec<String>,
}

/// What the edge middleware shares between requests.
#[derive(Debug)]
pub(crate) struct Edge {
    settings: EdgeSettings,
    /// Whether a token is required (then Host and Origin are not checked).
    token_set: bool,
    /// Bytes of request bodies held now.
    held: AtomicUsize,
}

impl Edge {
    pub(crate) fn new(settings: EdgeSettings, token_set: bool) -> Self {
        Self { settings, token_set, held: AtomicUsize::new(0) }
    }

    fn reserve(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.settings.body_memory_limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The only route served whatever the Host: a supervisor may probe under any name.
const OPEN_PATH: &str = "/healthz";

/// The middleware: Host and Origin without a token, then the body's bounds.
pub(crate) async fn guard_requests(
    State(edge): State<Arc<Edge>>,
    request: Request,
    next: Next,
) -> Response {
    if !edge.token_set && request.uri().path() != OPEN_PATH {
        if let Err(error) = check_host_and_origin(request.headers(), &edge.settings.allowed_hosts) {
            return error.into_response();
        }
    }
    // A request without a body (most of them: GET, a PUT of a sandbox with no TTL) has nothing
    // to bound, time or drain.
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // A client that waits for `100 Continue` has sent no body yet: nothing to drain.
    let drain = !parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|expect| expect.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let tracked = Arc::new(Tracked::default());
    let deadline = Instant::now() + edge.settings.body_timeout;
    let body = Body::new(EdgeBody {
        inner: Some(body),
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        deadline_at: deadline,
        edge: Arc::clone(&edge),
        tracked: Arc::clone(&tracked),
        received: 0,
        drain,
        ended: false,
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    edge.release(tracked.reserved.swap(0, Ordering::AcqRel));
    if tracked.timed_out.load(Ordering::Acquire) {
        let mut response = ApiError::with_status(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} (the server's --http-body-timeout); \
                 send it faster or in smaller parts",
                humantime::format_duration(edge.settings.body_timeout)
            ),
        )
        .into_response();
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    if tracked.over_capacity.load(Ordering::Acquire) {
        let mut response = ApiError::with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            "body_capacity_reached",
            format!(
                "the server already holds {} bytes of request bodies (its \
                 --http-body-memory-limit) and cannot take this one now; retry shortly",
                edge.settings.body_memory_limit
            ),
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    response
}

/// What happened to one request's body.
#[derive(Debug, Default)]
struct Tracked {
    /// Bytes counted against the server's body memory for this request.
    reserved: AtomicUsize,
    timed_out: AtomicBool,
    over_capacity: AtomicBool,
}

/// A request body held to its deadline and to the server's body memory, drained when dropped
/// unread.
struct EdgeBody {
    inner: Option<Body>,
    deadline: Pin<Box<Sleep>>,
    deadline_at: Instant,
    edge: Arc<Edge>,
    tracked: Arc<Tracked>,
    /// Bytes received so far.
    received: usize,
    drain: bool,
    ended: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct EdgeBodyError(&'static str);

impl EdgeBody {
    /// Counts the body up to `total` bytes against the server's body memory.
    fn account(&mut self, total: usize) -> bool {
        let reserved = self.tracked.reserved.load(Ordering::Acquire);
        if total <= reserved {
            return true;
        }
        if !self.edge.reserve(total - reserved) {
            self.tracked.over_capacity.store(true, Ordering::Release);
            return false;
        }
        self.tracked.reserved.store(total, Ordering::Release);
        true
    }
}

impl http_body::Body for EdgeBody {
    type Data = Bytes;
    type Error = EdgeBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, EdgeBodyError>>> {
        let this = &mut *self;
        let Some(hint) = this.inner.as_ref().map(http_body::Body::size_hint) else {
            return Poll::Ready(None);
        };
        if this.received == 0 && this.tracked.reserved.load(Ordering::Acquire) == 0 {
            // A declared length is counted at once, so that a body that cannot fit is refused
            // before any of it is held.
            let declared = hint.exact().and_then(|n| usize::try_from(n).ok());
            let declared = declared.unwrap_or(0).min(this.edge.settings.largest_body);
            if declared > 0 && !this.account(declared) {
                return Poll::Ready(Some(Err(EdgeBodyError(
                    "the server's body memory is exhausted",
                ))));
            }
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let total = this.received.saturating_add(data.len());
                    this.received = total;
                    if !this.account(total) {
                        return Poll::Ready(Some(Err(EdgeBodyError(
                            "the server's body memory is exhausted",
                        ))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => {
                this.ended = true;
                Poll::Ready(Some(Err(EdgeBodyError("the request body could not be read"))))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.tracked.timed_out.store(true, Ordering::Release);
                    // A client this slow is not waited for any longer: no drain.
                    this.drain = false;
                    return Poll::Ready(Some(Err(EdgeBodyError(
                        "the request body did not arrive in time",
                    ))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for EdgeBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else { return };
        if self.ended || !self.drain || http_body::Body::is_end_stream(&inner) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        // Read and discard what the client still sends, up to the largest body any route
        // accepts and until the body's deadline (at least a little while), so that its answer
        // is read rather than lost to a reset. Nothing of it is held.
        let limit = self.edge.settings.largest_body.saturating_sub(self.received);
        let until = self.deadline_at.max(Instant::now() + Duration::from_secs(2));
        runtime.spawn(drain(inner, limit, until));
    }
}

async fn drain(mut body: Body, limit: usize, until: Instant) {
    let _ = tokio::time::timeout_at(until, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                if seen > limit {
                    break;
                }
            }
        }
    })
    .await;
}

/// Without a token: the Host must be a loopback name (or an allowed one) and a browser's
/// Origin, if any, a loopback (or allowed) origin.
fn check_host_and_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    // The header's text when it is present and not served.
    let refused = |name: header::HeaderName, served: fn(&str, &[String]) -> bool| {
        let text = String::from_utf8_lossy(headers.get(name)?.as_bytes());
        (!served(&text, allowed)).then_some(text)
    };
    if let Some(host) = refused(header::HOST, host_is_served) {
        return Err(ApiError::with_status(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!(
                "Host `{}` is not a loopback name: without an API token sandkeeper serves only \
                 requests to localhost, 127.0.0.1 or [::1], so that no web page can reach it \
                 through DNS rebinding; set --api-token-file (or --api-token) and send the \
                 token, or add the name to --allowed-hosts",
                shorten(&host)
            ),
        ));
    }
    if let Some(origin) = refused(header::ORIGIN, origin_is_served) {
        return Err(ApiError::with_status(
            StatusCode::FORBIDDEN,
            "cross_origin_refused",
            format!(
                "a browser request from origin `{}` is refused: without an API token \
                 sandkeeper serves only requests from loopback origins, so that no web page \
                 can run commands through it; set --api-token-file (or --api-token) and send \
                 the token from your application's server instead",
                shorten(&origin)
            ),
        ));
    }
    Ok(())
}

/// A Host header value (`name`, `name:port`, `[v6]:port`) names a loopback or allowed host.
fn host_is_served(value: &str, allowed: &[String]) -> bool {
    let value = value.trim();
    let name = if let Some(rest) = value.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, port))
                if port.is_empty() || port.strip_prefix(':').is_some_and(valid_port) =>
            {
                return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
            }
            _ => return false,
        }
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => value,
        }
    };
    // Compared without allocating: this runs on every request without a token.
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || allowed.iter().any(|allowed| allowed.eq_ignore_ascii_case(name))
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// An Origin (`scheme://host[:port]`) of a loopback or allowed host over http or https.
fn origin_is_served(value: &str, allowed: &[String]) -> bool {
    let value = value.trim();
    let Some((scheme, authority)) = value.split_once("://") else { return false };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return false;
    }
    !authority.is_empty() && !authority.contains('/') && host_is_served(authority, allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_served_and_others_not() {
        let none: &[String] = &[];
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.1.2.3:9",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(host_is_served(host, none), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8080",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "10.0.0.1",
            "[::2]:80",
            "[::1]x",
            "localhost:abc",
            "",
        ] {
            assert!(!host_is_served(host, none), "{host}");
        }
        let allowed = ["sandkeeper.internal".to_owned()];
        assert!(host_is_served("sandkeeper.internal:8080", &allowed));
    }

    #[test]
    fn only_loopback_origins_are_served() {
        let none: &[String] = &[];
        for origin in ["http://localhost:3000", "https://127.0.0.1", "http://[::1]:8080"] {
            assert!(origin_is_served(origin, none), "{origin}");
        }
        for origin in
            ["http://attacker.example", "null", "file://", "http://localhost/x", "ftp://localhost"]
        {
            assert!(!origin_is_served(origin, none), "{origin}");
        }
    }
}
