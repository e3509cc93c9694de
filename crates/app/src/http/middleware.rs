//! What every request goes through: a span and metrics, then bearer authentication.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use super::error::ApiError;
use crate::config::ApiToken;

/// The only route that answers without a token: a process supervisor must be able to ask
/// whether the process is up without holding a secret.
const OPEN_PATH: &str = "/healthz";

/// One span per request (method, route, status, latency) and the HTTP metrics. Headers are never
/// recorded (the `Authorization` header carries the token); `traceparent` and `tracestate` only
/// give the span its parent.
pub(crate) async fn trace_requests(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    // The route template, not the path: chat ids would make the label set unbounded.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    // At debug level: the finished line below carries what an operator needs at info. At info,
    // this span (created, entered at every poll, its fields formatted into every line beneath
    // it) and its line cost a reuse about a fifth of its throughput (docs/benchmarks.md).
    let span =
        tracing::debug_span!("http.request", http.request.method = %method, http.route = %route);
    // A caller's W3C trace context makes this span, and so every span beneath it, part of the
    // caller's trace (only when traces are exported).
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    sandkeeper_adapters_observability::set_remote_parent(
        &span,
        header("traceparent"),
        header("tracestate"),
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    // Microsecond precision is plenty for a log line.
    let latency_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    macro_rules! finished {
        ($level:expr) => {
            tracing::event!(
                $level,
                http.request.method = %method,
                http.route = %route,
                http.response.status_code = status,
                latency_ms,
                "request_finished"
            )
        };
    }
    if is_probe(&route) {
        finished!(tracing::Level::DEBUG);
    } else {
        finished!(tracing::Level::INFO);
    }
    let status = status.to_string();
    let method = method_label(&method);
    metrics::counter!(
        "http.server.requests.total",
        "method" => method,
        "route" => route.clone(),
        "status" => status.clone(),
    )
    .increment(1);
    metrics::histogram!(
        "http.server.request.duration.seconds",
        "method" => method,
        "route" => route,
        "status" => status,
    )
    .record(elapsed.as_secs_f64());
    response
}

/// The method as a metric label: one of the methods HTTP defines, or `_OTHER`. Any token is a
/// method to HTTP, and a label per token would let any client, even one without the token, grow
/// the metrics without bound.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] =
        ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    // Methods are case-sensitive: `get` is not `GET`.
    KNOWN.into_iter().find(|known| *known == method).unwrap_or("_OTHER")
}

fn is_probe(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

/// Bearer authentication, compared in constant time. Without a configured token every request
/// passes (the server then listens on loopback only).
pub(crate) async fn require_token(
    State(token): State<Option<Arc<ApiToken>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token else {
        return next.run(request).await;
    };
    if request.uri().path() == OPEN_PATH {
        return next.run(request).await;
    }
    match bearer(request.headers()).or_else(|| websocket_bearer(request.headers())) {
        None => ApiError::unauthorized(
            "missing bearer token: send the header `Authorization: Bearer <token>`",
        )
        .into_response(),
        Some(given) if bool::from(given.ct_eq(expected.as_bytes())) => next.run(request).await,
        Some(_) => ApiError::unauthorized("the bearer token is not valid").into_response(),
    }
}

/// The token a WebSocket client that cannot set headers (a browser) offers as the subprotocol
/// `bearer.<token>` in `Sec-WebSocket-Protocol`, beside `sandkeeper` (the one the server
/// selects). Only on a WebSocket upgrade.
fn websocket_bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let upgrade = headers.get(header::UPGRADE)?.as_bytes();
    if !upgrade.eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .find_map(|protocol| protocol.strip_prefix(b"bearer."))
        .filter(|token| !token.is_empty())
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_other_schemes_ignored() {
        assert_eq!(bearer(&headers("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn methods_outside_http_are_one_metric_label() {
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"] {
            assert_eq!(method_label(method), method);
        }
        for method in ["get", "Put", "PROPFIND", "M-SEARCH", "X1", "X2"] {
            assert_eq!(method_label(method), "_OTHER", "{method}");
        }
    }
}
