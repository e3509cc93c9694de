use std::fmt;
use std::io::BufWriter;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::otlp::{ExporterError, OtlpEndpoint, SPANS_DROPPED_METRIC, Traces};

/// Buckets (in seconds) of every histogram whose name ends in `seconds`: from a fast reuse
/// (milliseconds) to a slow container start (tens of seconds).
const LATENCY_BUCKETS_SECONDS: [f64; 13] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Histogram samples wait in the recorder until the next scrape or upkeep; without scrapes,
/// upkeep keeps them from piling up.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Log lines queued for the writer's thread at most. The queue is allocated whole at start,
/// about 40 bytes a line; the library's default (128,000 lines) would be 5 MiB of the server's
/// memory for nothing.
const LOG_QUEUE_LINES: usize = 4096;

/// The log writer's thread, until [`flush_logs`] stops it.
static LOG_WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event; coloured when standard error is a terminal.
    #[default]
    Human,
    /// One JSON object per line, event fields at the top level, for log collectors.
    Json,
}

sandkeeper_domain::spelling!(LogFormat { Human => "human", Json => "json" } else UnknownLogFormat);

/// A log format spelling that is neither `human` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log format `{0}` is not one of human, json")]
pub struct UnknownLogFormat(pub String);

/// What [`init`] installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// The log filter used when `RUST_LOG` is unset or empty, in `RUST_LOG` syntax.
    pub default_filter: String,
    /// Where to export traces (OTLP over HTTP); `None` exports none.
    pub otlp_endpoint: Option<OtlpEndpoint>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Human,
            default_filter: "info".to_owned(),
            otlp_endpoint: None,
        }
    }
}

/// Telemetry could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{setting} `{value}` is not a valid log filter ({reason}); use e.g. `info` or `warn,sandkeeper=debug`"
    )]
    InvalidFilter { setting: &'static str, value: String, reason: String },
    #[error("a log subscriber is already installed in this process; install telemetry only once")]
    SubscriberAlreadySet,
    #[error("the Prometheus metrics recorder could not be installed: {0}")]
    MetricsRecorder(String),
    #[error(transparent)]
    TraceExporter(#[from] ExporterError),
    #[error("the metrics upkeep thread could not be started: {0}")]
    UpkeepThread(#[source] std::io::Error),
}

/// The installed telemetry. Keep it for the life of the process to serve `/metrics`.
#[derive(Clone)]
pub struct Telemetry {
    prometheus: PrometheusHandle,
    traces: Option<Traces>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Every metric recorded so far, in the Prometheus text format. Metric names are rendered
    /// with dots replaced by underscores: `sandbox.create.total` becomes `sandbox_create_total`.
    pub fn render_metrics(&self) -> String {
        self.prometheus.render()
    }

    /// Exports the spans still queued, waiting at most `timeout`; `false` if they were not all
    /// out in time. Call it at shutdown. Without a trace exporter it returns `true` at once.
    pub async fn flush_traces(&self, timeout: Duration) -> bool {
        match &self.traces {
            Some(traces) => traces.flush(timeout).await,
            None => true,
        }
    }
}

/// Installs the process-wide log subscriber and the Prometheus metrics recorder, and the trace
/// exporter when `config.otlp_endpoint` is set.
///
/// Call it once, at start, inside the Tokio runtime (the trace exporter runs on it). The log filter comes from `RUST_LOG`, else from
/// `config.default_filter`. No HTTP listener is started: the app serves
/// [`Telemetry::render_metrics`] on its own `/metrics` route.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, InitError> {
    let filter = log_filter(std::env::var("RUST_LOG").ok(), &config.default_filter)?;
    let ansi = std::io::stderr().is_terminal();
    // Lines are formatted where they are logged and written by a thread of their own, as many
    // at a time as have queued up: one write per line on the request path took a tenth of the
    // server's time under a load of reuses (docs/benchmarks.md). Never lossy: when the writer
    // falls behind, the loggers wait, as they did when they wrote themselves.
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(false)
        .thread_name("sandkeeper-log")
        .finish(BufWriter::new(std::io::stderr()));
    let traces = config.otlp_endpoint.as_ref().map(Traces::start).transpose()?;
    let tracer = traces.as_ref().map(Traces::tracer);
    log_subscriber(config.log_format, filter, writer, ansi, tracer)
        .try_init()
        .map_err(|_| InitError::SubscriberAlreadySet)?;
    *LOG_WRITER.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(guard);

    let prometheus = prometheus_builder()?
        .install_recorder()
        .map_err(|error| InitError::MetricsRecorder(error.to_string()))?;
    let upkeep = prometheus.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        })
        .map_err(InitError::UpkeepThread)?;
    if traces.is_some() {
        // Shown at 0 from the start, so that an alert on it has a series to watch.
        for reason in ["queue_full", "export_failed"] {
            metrics::counter!(SPANS_DROPPED_METRIC, "reason" => reason).increment(0);
        }
    }
    Ok(Telemetry { prometheus, traces })
}

/// Writes out every log line still queued and stops the log writer. Call it last, just before
/// the process exits: lines logged after it are dropped.
pub fn flush_logs() {
    let guard = LOG_WRITER.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    drop(guard);
}

fn log_filter(rust_log: Option<String>, default_filter: &str) -> Result<EnvFilter, InitError> {
    let (setting, value) = match rust_log {
        Some(value) if !value.trim().is_empty() => ("RUST_LOG", value),
        _ => ("the default log filter", default_filter.to_owned()),
    };
    EnvFilter::try_new(&value).map_err(|error| InitError::InvalidFilter {
        setting,
        value,
        reason: error.to_string(),
    })
}

/// What the trace exporter receives: sandkeeper's own spans down to debug (the request's span is
/// at debug, so that logs at info do not pay for it) and its events at info and above (they
/// become the span's events). Never a dependency's: the exporter's own HTTP client would trace
/// its exports.
fn trace_filter() -> FilterFn {
    filter_fn(|metadata| {
        let level = if metadata.is_span() { tracing::Level::DEBUG } else { tracing::Level::INFO };
        metadata.target().starts_with("sandkeeper") && *metadata.level() <= level
    })
}

/// The log output, filtered by `filter`, and the trace exporter's layer when a `tracer` is
/// given. Without a tracer, `filter` is the whole subscriber's, as it was before traces existed:
/// what it refuses is never built. With one, each layer has its own filter (the exporter takes
/// the `debug` request span that the logs at `info` leave out).
fn log_subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match tracer {
        None => Box::new(Registry::default().with(filter).with(log_output(format, writer, ansi))),
        Some(tracer) => {
            let traces = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(trace_filter());
            Box::new(
                Registry::default()
                    .with(log_output(format, writer, ansi).with_filter(filter))
                    .with(traces),
            )
        }
    }
}

fn log_output<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Human => {
            tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    }
}

fn prometheus_builder() -> Result<PrometheusBuilder, InitError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("seconds".to_owned()), &LATENCY_BUCKETS_SECONDS)
        .map_err(|error| InitError::MetricsRecorder(error.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn log_with(format: LogFormat, emit: impl FnOnce()) -> String {
        let buffer = SharedBuffer::default();
        let writer = buffer.clone();
        let filter = log_filter(None, "info").unwrap();
        let subscriber = log_subscriber(format, filter, move || writer.clone(), false, None);
        tracing::subscriber::with_default(subscriber, emit);
        buffer.text()
    }

    #[test]
    fn json_format_writes_one_json_object_per_event_with_fields_at_the_top() {
        let output = log_with(LogFormat::Json, || {
            let span = tracing::info_span!("usecase.create_sandbox", chat.id = "chat-1");
            span.in_scope(|| tracing::info!(session_id = "s-1", "sandbox_created"));
            tracing::debug!("filtered out by the default filter");
        });
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 1, "{output}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(event["message"], "sandbox_created");
        assert_eq!(event["session_id"], "s-1");
        assert_eq!(event["level"], "INFO");
        assert_eq!(event["span"]["name"], "usecase.create_sandbox");
        assert_eq!(event["span"]["chat.id"], "chat-1");
    }

    #[tokio::test]
    async fn with_traces_the_logs_keep_their_filter_and_the_exporter_takes_sandkeepers_spans() {
        let exported = crate::otlp::RecordedSpans::default();
        let traces = Traces::with_exporter(exported.clone());
        let buffer = SharedBuffer::default();
        let writer = buffer.clone();
        let filter = log_filter(None, "info").unwrap();
        let subscriber = log_subscriber(
            LogFormat::Json,
            filter,
            move || writer.clone(),
            false,
            Some(traces.tracer()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::debug_span!(target: "sandkeeper::http", "http.request");
            request.in_scope(|| {
                tracing::info_span!(target: "sandkeeper_usecase", "usecase.create_sandbox")
                    .in_scope(|| tracing::info!(target: "sandkeeper_usecase", "sandbox_created"));
                tracing::info_span!(target: "hyper_util::client", "dependency").in_scope(|| {});
            });
        });
        assert!(traces.flush(Duration::from_secs(30)).await);
        let output = buffer.text();
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 1, "{output}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(event["span"]["name"], "usecase.create_sandbox", "the debug span is not logged");
        let spans = exported.0.lock().unwrap();
        let mut names: Vec<&str> = spans.iter().map(|span| span.name.as_ref()).collect();
        names.sort_unstable();
        assert_eq!(names, ["http.request", "usecase.create_sandbox"]);
        let create = spans.iter().find(|span| span.name == "usecase.create_sandbox").unwrap();
        assert_eq!(create.events.len(), 1, "the event inside it is a span event");
    }

    #[test]
    fn human_format_writes_plain_text() {
        let output = log_with(LogFormat::Human, || tracing::warn!(chat_id = "c-1", "sandbox_x"));
        assert!(output.contains("WARN"), "{output}");
        assert!(output.contains("sandbox_x chat_id=\"c-1\""), "{output}");
        assert!(serde_json::from_str::<serde_json::Value>(output.trim()).is_err(), "{output}");
        assert!(!output.contains('\u{1b}'), "no colour codes when not on a terminal: {output}");
    }

    #[test]
    fn rust_log_wins_over_the_default_filter_and_bad_filters_are_named() {
        assert_eq!(log_filter(Some("debug".into()), "info").unwrap().to_string(), "debug");
        assert_eq!(log_filter(Some(" ".into()), "warn").unwrap().to_string(), "warn");
        let error = log_filter(Some("sandkeeper=loud".into()), "info").unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("RUST_LOG `sandkeeper=loud` is not a valid log filter"),
            "{message}"
        );
    }

    #[test]
    fn log_format_parses_its_spellings() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("human".parse::<LogFormat>(), Ok(LogFormat::Human));
        let error = "yaml".parse::<LogFormat>().unwrap_err();
        assert_eq!(error.to_string(), "log format `yaml` is not one of human, json");
    }

    #[test]
    fn prometheus_renders_dotted_names_with_underscores() {
        let recorder = prometheus_builder().unwrap().build_recorder();
        let telemetry = Telemetry { prometheus: recorder.handle(), traces: None };
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("sandbox.create.total", "result" => "created").increment(2);
            metrics::gauge!("sandbox.active.count").set(3.0);
            metrics::histogram!("sandbox.create.duration.seconds", "result" => "created")
                .record(0.2);
        });
        let text = telemetry.render_metrics();
        assert!(text.contains("sandbox_create_total{result=\"created\"} 2"), "{text}");
        assert!(text.contains("sandbox_active_count 3"), "{text}");
        assert!(
            text.contains(
                "sandbox_create_duration_seconds_bucket{result=\"created\",le=\"0.25\"} 1"
            ),
            "latency histograms have buckets: {text}"
        );
        assert!(!text.contains("sandbox.create"), "{text}");
    }
}
