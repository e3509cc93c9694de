//! In-memory capture of spans, events and metrics, for tests.
//!
//! [`Capture::install`] makes the current thread send everything emitted through the
//! `tracing` and `metrics` facades into memory, until the [`Capture`] is dropped. It is
//! per-thread, so tests run in parallel without seeing each other's telemetry; async tests use
//! `#[tokio::test]` (a current-thread runtime), which also runs spawned tasks on that thread.
//!
//! Spans keep the fields given when they were created apart from the fields recorded later, so
//! a test can tell "named at creation" from "recorded at this stage" and can assert that a field
//! was never recorded at all. Metric operations are kept in the order they happened, so a test
//! can read every value a gauge was set to, not only the last.
//!
//! Set `TEST_LOG=1` to also print the captured events to the test's output.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A field's value as it was given to `tracing`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// Strings, and anything given with `%` (Display) or `?` (Debug).
    Str(String),
    /// Every integer type.
    Int(i128),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(value) => f.write_str(value),
            Self::Int(value) => write!(f, "{value}"),
            Self::Float(value) => write!(f, "{value}"),
            Self::Bool(value) => write!(f, "{value}"),
        }
    }
}

impl From<&str> for FieldValue {
    fn from(value: &str) -> Self {
        Self::Str(value.to_owned())
    }
}

impl From<String> for FieldValue {
    fn from(value: String) -> Self {
        Self::Str(value)
    }
}

impl From<bool> for FieldValue {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

impl From<f64> for FieldValue {
    fn from(value: f64) -> Self {
        Self::Float(value)
    }
}

macro_rules! int_field_value {
    ($($int:ty),*) => {$(
        impl From<$int> for FieldValue {
            fn from(value: $int) -> Self {
                Self::Int(i128::from(value))
            }
        }
    )*};
}
int_field_value!(i32, i64, u32, u64);

impl From<usize> for FieldValue {
    fn from(value: usize) -> Self {
        Self::Int(value as i128)
    }
}

/// Field names to values.
pub type Fields = BTreeMap<String, FieldValue>;

/// A span as the code under test built it.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedSpan {
    /// The span's position in [`Capture::spans`]; `parent` refers to it.
    pub index: usize,
    pub name: String,
    pub target: String,
    /// The fields given a value when the span was created (fields declared `Empty` are absent).
    pub created: Fields,
    /// The fields recorded after creation; the latest value of each.
    pub recorded: Fields,
    pub parent: Option<usize>,
}

impl CapturedSpan {
    /// The field's current value, whether given at creation or recorded later.
    pub fn field(&self, name: &str) -> Option<&FieldValue> {
        self.recorded.get(name).or_else(|| self.created.get(name))
    }

    /// Whether the field ever got a value.
    pub fn has_field(&self, name: &str) -> bool {
        self.field(name).is_some()
    }

    /// The error recorded on the span (its `error` field), if any.
    pub fn error(&self) -> Option<&FieldValue> {
        self.field("error")
    }
}

/// An event (a log line) as the code under test emitted it.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedEvent {
    pub level: Level,
    pub target: String,
    pub message: String,
    /// Every field except the message.
    pub fields: Fields,
    /// The span the event was emitted in, as an index into [`Capture::spans`].
    pub span: Option<usize>,
}

/// One operation on a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricOp {
    CounterIncrement(u64),
    CounterAbsolute(u64),
    GaugeSet(f64),
    GaugeIncrement(f64),
    GaugeDecrement(f64),
    HistogramRecord(f64),
}

/// One operation on a metric, with the metric's name and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub op: MetricOp,
}

impl MetricRecord {
    /// Whether every `(key, value)` in `labels` is among the record's labels.
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(key, value)| self.labels.iter().any(|(k, v)| k == key && v == value))
    }
}

#[derive(Debug, Default)]
struct TraceLog {
    spans: Vec<CapturedSpan>,
    events: Vec<CapturedEvent>,
}

type MetricLog = Mutex<Vec<MetricRecord>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide what was captured before the panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything emitted on this thread since [`Capture::install`], until dropped.
pub struct Capture {
    trace: Arc<Mutex<TraceLog>>,
    metrics: Arc<MetricLog>,
    _tracing: tracing::subscriber::DefaultGuard,
    _metrics: metrics::LocalRecorderGuard<'static>,
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

impl Capture {
    /// Starts capturing on the current thread.
    pub fn install() -> Self {
        let trace = Arc::new(Mutex::new(TraceLog::default()));
        let metrics = Arc::new(MetricLog::default());

        let print = std::env::var_os("TEST_LOG")
            .is_some()
            .then(|| tracing_subscriber::fmt::layer().with_test_writer());
        let subscriber =
            Registry::default().with(CaptureLayer { log: Arc::clone(&trace) }).with(print);
        let tracing_guard = tracing::subscriber::set_default(subscriber);

        // The thread-local metrics guard borrows its recorder, and a struct cannot own both.
        // So the recorder is leaked: it is one weak pointer per capture, and what it records
        // is owned by this `Capture` and freed with it.
        let recorder: &'static RecordingRecorder =
            Box::leak(Box::new(RecordingRecorder { log: Arc::downgrade(&metrics) }));
        let metrics_guard = metrics::set_default_local_recorder(recorder);

        Self { trace, metrics, _tracing: tracing_guard, _metrics: metrics_guard }
    }

    /// Every span so far, in creation order.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        lock(&self.trace).spans.clone()
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<CapturedEvent> {
        lock(&self.trace).events.clone()
    }

    /// The first span named `name` whose creation fields include `created` and whose later
    /// recorded fields include `recorded`.
    ///
    /// # Panics
    /// When there is none, listing the spans that were captured.
    pub fn find_span(
        &self,
        name: &str,
        created: &[(&str, FieldValue)],
        recorded: &[(&str, FieldValue)],
    ) -> CapturedSpan {
        let includes = |fields: &Fields, expected: &[(&str, FieldValue)]| {
            expected.iter().all(|(key, value)| fields.get(*key) == Some(value))
        };
        let spans = self.spans();
        let found = spans.iter().find(|span| {
            span.name == name
                && includes(&span.created, created)
                && includes(&span.recorded, recorded)
        });
        match found {
            Some(span) => span.clone(),
            None => panic!(
                "missing span {name} created with {created:?} and recorded with {recorded:?}; \
                 captured spans: {spans:#?}"
            ),
        }
    }

    /// Every metric operation so far, in order.
    pub fn metrics(&self) -> Vec<MetricRecord> {
        lock(&self.metrics).clone()
    }

    /// Whether the counter `name` was incremented by exactly `value` in one call, with labels
    /// that include `labels`.
    pub fn counter_incremented(&self, name: &str, value: u64, labels: &[(&str, &str)]) -> bool {
        self.metrics().iter().any(|record| {
            record.name == name
                && record.op == MetricOp::CounterIncrement(value)
                && record.has_labels(labels)
        })
    }

    /// # Panics
    /// When [`Self::counter_incremented`] is false, listing the metric operations.
    pub fn assert_counter_incremented(&self, name: &str, value: u64, labels: &[(&str, &str)]) {
        assert!(
            self.counter_incremented(name, value, labels),
            "missing increment of {name} by {value} with labels {labels:?}; metrics: {:#?}",
            self.metrics()
        );
    }

    /// The sum of every increment of the counter `name` with labels that include `labels`.
    pub fn counter_total(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.metrics()
            .iter()
            .filter(|record| record.name == name && record.has_labels(labels))
            .map(|record| match record.op {
                MetricOp::CounterIncrement(value) => value,
                _ => 0,
            })
            .sum()
    }

    /// Every value the gauge `name` was set to, in order.
    pub fn gauge_values(&self, name: &str) -> Vec<f64> {
        self.metrics()
            .into_iter()
            .filter(|record| record.name == name)
            .filter_map(|record| match record.op {
                MetricOp::GaugeSet(value) => Some(value),
                _ => None,
            })
            .collect()
    }

    /// Every value recorded into the histogram `name` with labels that include `labels`.
    pub fn histogram_values(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.metrics()
            .into_iter()
            .filter(|record| record.name == name && record.has_labels(labels))
            .filter_map(|record| match record.op {
                MetricOp::HistogramRecord(value) => Some(value),
                _ => None,
            })
            .collect()
    }
}

#[derive(Default)]
struct FieldVisitor(Fields);

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: FieldValue) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, FieldValue::Int(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        let value = i128::try_from(value)
            .map_or_else(|_| FieldValue::Str(value.to_string()), FieldValue::Int);
        self.put(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// The position of a span in the trace log, kept in the span's extensions because span ids
/// are reused once a span closes.
struct SpanIndex(usize);

struct CaptureLayer {
    log: Arc<Mutex<TraceLog>>,
}

impl CaptureLayer {
    fn index_of<S>(span: Option<tracing_subscriber::registry::SpanRef<'_, S>>) -> Option<usize>
    where
        S: for<'a> LookupSpan<'a>,
    {
        span.and_then(|span| span.extensions().get::<SpanIndex>().map(|index| index.0))
    }
}

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut visitor = FieldVisitor::default();
        attrs.record(&mut visitor);
        let Some(span) = ctx.span(id) else { return };
        let parent = Self::index_of(span.parent());
        let index = {
            let mut log = lock(&self.log);
            let index = log.spans.len();
            log.spans.push(CapturedSpan {
                index,
                name: attrs.metadata().name().to_owned(),
                target: attrs.metadata().target().to_owned(),
                created: visitor.0,
                recorded: Fields::new(),
                parent,
            });
            index
        };
        span.extensions_mut().insert(SpanIndex(index));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(index) = Self::index_of(ctx.span(id)) else { return };
        let mut visitor = FieldVisitor::default();
        values.record(&mut visitor);
        if let Some(span) = lock(&self.log).spans.get_mut(index) {
            span.recorded.extend(visitor.0);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let mut fields = visitor.0;
        let message =
            fields.remove("message").map(|message| message.to_string()).unwrap_or_default();
        let span = Self::index_of(ctx.event_span(event));
        lock(&self.log).events.push(CapturedEvent {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message,
            fields,
            span,
        });
    }
}

struct RecordingRecorder {
    log: Weak<MetricLog>,
}

struct MetricHandle {
    name: String,
    labels: Vec<(String, String)>,
    log: Weak<MetricLog>,
}

impl MetricHandle {
    fn push(&self, op: MetricOp) {
        if let Some(log) = self.log.upgrade() {
            lock(&log).push(MetricRecord {
                name: self.name.clone(),
                labels: self.labels.clone(),
                op,
            });
        }
    }
}

impl CounterFn for MetricHandle {
    fn increment(&self, value: u64) {
        self.push(MetricOp::CounterIncrement(value));
    }
    fn absolute(&self, value: u64) {
        self.push(MetricOp::CounterAbsolute(value));
    }
}

impl GaugeFn for MetricHandle {
    fn increment(&self, value: f64) {
        self.push(MetricOp::GaugeIncrement(value));
    }
    fn decrement(&self, value: f64) {
        self.push(MetricOp::GaugeDecrement(value));
    }
    fn set(&self, value: f64) {
        self.push(MetricOp::GaugeSet(value));
    }
}

impl HistogramFn for MetricHandle {
    fn record(&self, value: f64) {
        self.push(MetricOp::HistogramRecord(value));
    }
}

impl RecordingRecorder {
    fn handle(&self, key: &Key) -> Arc<MetricHandle> {
        Arc::new(MetricHandle {
            name: key.name().to_owned(),
            labels: key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect(),
            log: Weak::clone(&self.log),
        })
    }
}

impl Recorder for RecordingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}

#[cfg(test)]
mod tests {
    use tracing::field::Empty;

    use super::*;

    #[test]
    fn spans_keep_creation_fields_apart_from_recorded_ones_and_absent_fields_stay_absent() {
        let capture = Capture::install();
        let root =
            tracing::info_span!("root", chat.id = "chat-1", session.id = Empty, count = 3_u64);
        root.record("session.id", "session-1");
        let child = tracing::info_span!(parent: &root, "child", container.id = Empty);
        child.in_scope(|| tracing::warn!(chat_id = %"chat-1", attempt = 2, "something_happened"));

        let found = capture.find_span(
            "root",
            &[("chat.id", "chat-1".into()), ("count", 3_u64.into())],
            &[("session.id", "session-1".into())],
        );
        assert!(!found.created.contains_key("session.id"), "declared Empty at creation");
        assert_eq!(found.field("session.id"), Some(&"session-1".into()));
        let child = capture.find_span("child", &[], &[]);
        assert!(!child.has_field("container.id"), "never recorded: {child:?}");
        assert_eq!(child.parent, Some(found.index));

        let events = capture.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].level, Level::WARN);
        assert_eq!(events[0].message, "something_happened");
        assert_eq!(events[0].fields.get("chat_id"), Some(&"chat-1".into()));
        assert_eq!(events[0].fields.get("attempt"), Some(&FieldValue::Int(2)));
        assert_eq!(events[0].span, Some(child.index));
    }

    #[test]
    #[should_panic(expected = "missing span root")]
    fn find_span_fails_when_a_recorded_field_was_only_given_at_creation() {
        let capture = Capture::install();
        let _span = tracing::info_span!("root", chat.id = "chat-1");
        capture.find_span("root", &[], &[("chat.id", "chat-1".into())]);
    }

    #[test]
    fn metrics_are_kept_in_order_with_their_labels() {
        let capture = Capture::install();
        metrics::gauge!("sandbox.active.count").set(2.0);
        metrics::counter!("sandbox.create.total", "result" => "created").increment(1);
        metrics::gauge!("sandbox.active.count").set(1.0);
        metrics::histogram!("sandbox.create.duration.seconds", "result" => "created").record(0.5);

        assert_eq!(capture.gauge_values("sandbox.active.count"), vec![2.0, 1.0]);
        capture.assert_counter_incremented("sandbox.create.total", 1, &[("result", "created")]);
        assert!(!capture.counter_incremented("sandbox.create.total", 1, &[("result", "reused")]));
        assert_eq!(capture.counter_total("sandbox.create.total", &[]), 1);
        assert_eq!(
            capture.histogram_values("sandbox.create.duration.seconds", &[("result", "created")]),
            vec![0.5]
        );
    }

    #[test]
    fn capture_ends_when_dropped_and_sees_only_its_own_thread() {
        let capture = Capture::install();
        std::thread::spawn(|| {
            metrics::counter!("elsewhere").increment(1);
            tracing::info!("elsewhere");
        })
        .join()
        .unwrap();
        assert!(capture.metrics().is_empty());
        assert!(capture.events().is_empty());
        drop(capture);

        let second = Capture::install();
        tracing::info!("after");
        assert_eq!(second.events().len(), 1);
    }
}
