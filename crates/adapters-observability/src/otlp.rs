//! Traces over OTLP (HTTP/protobuf): the spans of the `tracing` facade, exported to a collector.
//!
//! Spans are handed to a bounded queue as they end and exported in batches by a task of their
//! own, so that a request never waits for the collector: when the queue is full (the collector
//! is slow or down), the span is dropped and counted in `otlp.spans.dropped.total`
//! (`reason="queue_full"`); a batch the collector refuses is counted there too
//! (`reason="export_failed"`). An incoming W3C `traceparent` header makes a span the child of
//! the caller's ([`set_remote_parent`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The counter of spans that never reached the collector, by `reason`.
pub const SPANS_DROPPED_METRIC: &str = "otlp.spans.dropped.total";

/// The path the collector receives traces on, under the base URL.
const TRACES_PATH: &str = "/v1/traces";

/// Spans waiting for export at most; one more is dropped. A span is a few hundred bytes.
const QUEUE_SPANS: usize = 2048;
/// Spans sent in one request at most.
const BATCH_SPANS: usize = 512;
/// How long an ended span waits for more to fill its batch.
const BATCH_DELAY: Duration = Duration::from_secs(2);
/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether traces are exported: without an exporter, no header is even parsed.
static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// The base URL of an OTLP/HTTP collector, like `http://127.0.0.1:4318`: traces go to
/// `<base>/v1/traces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    base: String,
}

/// A base URL the exporter cannot send to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a collector URL like http://127.0.0.1:4318 ({reason})")]
pub struct InvalidEndpoint {
    pub value: String,
    pub reason: String,
}

impl OtlpEndpoint {
    /// Checks a base URL: `http://host[:port][/path]`, without query or fragment. Only plain
    /// HTTP: this build has no TLS stack for the exporter (send to a collector or agent on a
    /// trusted network, e.g. on the same host).
    pub fn parse(value: &str) -> Result<Self, InvalidEndpoint> {
        let invalid =
            |reason: &str| InvalidEndpoint { value: value.to_owned(), reason: reason.into() };
        let trimmed = value.trim();
        let uri: http::Uri = trimmed
            .parse()
            .map_err(|error: http::uri::InvalidUri| invalid(&format!("not a URL: {error}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported: traces are sent over plain HTTP, to a collector on \
                     a trusted network",
                ));
            }
            Some(_) => return Err(invalid("the scheme must be http")),
            None => return Err(invalid("the scheme is missing: write http://host:port")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("the host is missing"))?;
        if authority.host().is_empty() {
            return Err(invalid("the host is missing"));
        }
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        if uri.query().is_some() || trimmed.contains('#') {
            return Err(invalid("a query or fragment is not allowed"));
        }
        let path = uri.path().trim_end_matches('/');
        Ok(Self { base: format!("http://{authority}{path}") })
    }

    /// The URL the spans are posted to.
    pub fn traces_url(&self) -> String {
        format!("{}{TRACES_PATH}", self.base)
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// The exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the OTLP trace exporter could not be built: {0}")]
pub struct ExporterError(String);

/// The running export: the provider that makes the spans and the queue's control channel.
#[derive(Clone)]
pub(crate) struct Traces {
    provider: SdkTracerProvider,
    control: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl fmt::Debug for Traces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traces").finish_non_exhaustive()
    }
}

impl Traces {
    /// Starts the export task (on the current Tokio runtime) and the provider that feeds it.
    pub(crate) fn start(endpoint: &OtlpEndpoint) -> Result<Self, ExporterError> {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.traces_url())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|error| ExporterError(error.to_string()))?;
        Ok(Self::with_exporter(exporter))
    }

    pub(crate) fn with_exporter<E: SpanExporter + 'static>(mut exporter: E) -> Self {
        let resource = Resource::builder_empty().with_service_name("sandkeeper").build();
        exporter.set_resource(&resource);
        let (spans_tx, spans_rx) = mpsc::channel(QUEUE_SPANS);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        tokio::spawn(export_loop(exporter, spans_rx, control_rx));
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(QueueProcessor { queue: spans_tx })
            .build();
        TRACES_ON.store(true, Ordering::Relaxed);
        Self { provider, control: control_tx }
    }

    pub(crate) fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        self.provider.tracer("sandkeeper")
    }

    /// Exports every span queued so far; `false` if that took longer than `timeout`.
    pub(crate) async fn flush(&self, timeout: Duration) -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        if self.control.send(done_tx).is_err() {
            return true;
        }
        matches!(tokio::time::timeout(timeout, done_rx).await, Ok(Ok(())))
    }
}

/// Makes `span` a child of the caller's span named by a W3C `traceparent` header (and its
/// `tracestate`), when traces are exported and the header is valid. Call it before the span is
/// first entered.
pub fn set_remote_parent(
    span: &tracing::Span,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) {
    if !TRACES_ON.load(Ordering::Relaxed) {
        return;
    }
    let Some(traceparent) = traceparent else { return };
    let carrier = Carrier { traceparent, tracestate };
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        // Fails only for a span that is disabled or already started: it keeps its own trace.
        let _ = span.set_parent(context);
    }
}

struct Carrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Hands every ended span to the export queue without waiting: a full queue drops it.
#[derive(Debug)]
struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            metrics::counter!(SPANS_DROPPED_METRIC, "reason" => "queue_full").increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // The export task flushes on its own schedule; `Traces::flush` waits for it.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    mut control: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let mut batch = Vec::with_capacity(BATCH_SPANS);
    let mut tick = tokio::time::interval(BATCH_DELAY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = spans.recv() => {
                let Some(span) = span else { break };
                batch.push(span);
                if batch.len() >= BATCH_SPANS {
                    export(&exporter, &mut batch).await;
                }
            }
            _ = tick.tick() => export(&exporter, &mut batch).await,
            done = control.recv() => {
                let Some(done) = done else { break };
                while let Ok(span) = spans.try_recv() {
                    batch.push(span);
                    if batch.len() >= BATCH_SPANS {
                        export(&exporter, &mut batch).await;
                    }
                }
                export(&exporter, &mut batch).await;
                let _ = done.send(());
            }
        }
    }
    export(&exporter, &mut batch).await;
}

async fn export<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(BATCH_SPANS));
    let count = spans.len() as u64;
    if let Err(error) = exporter.export(spans).await {
        metrics::counter!(SPANS_DROPPED_METRIC, "reason" => "export_failed").increment(count);
        tracing::debug!(error = %error, spans = count, "otlp_export_failed");
    }
}

/// An exporter that keeps every span it is given: the tests of this crate read what was
/// exported from it.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordedSpans(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<SpanData>>>);

#[cfg(test)]
impl SpanExporter for RecordedSpans {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_base_urls_over_plain_http() {
        let endpoint = OtlpEndpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(endpoint.traces_url(), "http://127.0.0.1:4318/v1/traces");
        let endpoint = OtlpEndpoint::parse(" http://collector:4318/otlp/ ").unwrap();
        assert_eq!(endpoint.traces_url(), "http://collector:4318/otlp/v1/traces");
        for (value, reason) in [
            ("https://collector:4318", "https is not supported"),
            ("collector:4318", "scheme"),
            ("ftp://collector", "the scheme must be http"),
            ("http://", "not a URL"),
            ("http://u:p@collector:4318", "credentials"),
            ("http://collector:4318/?a=b", "query"),
            ("not a url", "not a URL"),
        ] {
            let error = OtlpEndpoint::parse(value).unwrap_err();
            assert!(error.to_string().contains(reason), "{value}: {error}");
            assert!(error.to_string().starts_with(&format!("`{value}` is not a collector URL")));
        }
    }

    #[test]
    fn spans_that_find_the_queue_full_are_dropped_and_counted() {
        use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // A queue of one span that nobody drains: an exporter stuck on a dead collector.
        let (queue, mut waiting) = mpsc::channel(1);
        let provider =
            SdkTracerProvider::builder().with_span_processor(QueueProcessor { queue }).build();
        let tracer = provider.tracer("test");
        metrics::with_local_recorder(&recorder, || {
            for name in ["first", "second", "third"] {
                tracer.start(name).end();
            }
        });
        assert_eq!(waiting.try_recv().unwrap().name, "first", "the first span was queued");
        let text = handle.render();
        assert!(text.contains("otlp_spans_dropped_total{reason=\"queue_full\"} 2"), "{text}");
    }

    #[tokio::test]
    async fn a_flush_exports_the_queued_spans_with_the_callers_trace() {
        use tracing_subscriber::layer::SubscriberExt;
        let recorded = RecordedSpans::default();
        let traces = Traces::with_exporter(recorded.clone());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(traces.tracer()));
        let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller_span = "00f067aa0ba902b7";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http.request", http.route = "/x");
            set_remote_parent(&span, Some(&format!("00-{caller_trace}-{caller_span}-01")), None);
            span.in_scope(|| {
                tracing::info_span!("usecase.create_sandbox", chat.id = "c-1").in_scope(|| {})
            });
        });
        assert!(traces.flush(Duration::from_secs(30)).await);
        let spans = recorded.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 2, "{spans:?}");
        let request = spans.iter().find(|span| span.name == "http.request").unwrap();
        let create = spans.iter().find(|span| span.name == "usecase.create_sandbox").unwrap();
        assert_eq!(request.span_context.trace_id().to_string(), caller_trace);
        assert_eq!(request.parent_span_id.to_string(), caller_span);
        assert_eq!(create.span_context.trace_id().to_string(), caller_trace);
        assert_eq!(create.parent_span_id, request.span_context.span_id());
        assert!(
            create
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "chat.id" && kv.value.as_str() == "c-1"),
            "{:?}",
            create.attributes
        );
    }
}
