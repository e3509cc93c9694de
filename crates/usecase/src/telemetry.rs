//! Telemetry shared by the use cases. Metric and span names are part of sandkeeper's contract.

use sandkeeper_ports::{ErrorKind, Report, SessionRepository};
use tracing::Span;
use tracing::field::display;

/// Gauge: how many sessions the store holds as running.
pub(crate) const ACTIVE_COUNT: &str = "sandbox.active.count";

/// An `INFO` span of a use case: `name`, the caller's fields, and the fields every use case
/// records when it ends, declared `Empty`: `sandbox.result` and those [`record_error`] fills in
/// (`error`, `error.type`, `otel.status_code`). `parent: span,` may come first, as in
/// [`tracing::info_span!`]. `chat: chat_id,` first makes it the span of a call about a chat's
/// sandbox: it also declares `chat.id`, and the `session.id` and `container.id` of the sandbox
/// it finds, recorded once found (as `SandboxAccess::enter` does).
macro_rules! usecase_span {
    (parent: $parent:expr, $($rest:tt)*) => {
        $crate::telemetry::usecase_span!(@span [parent: $parent,] $($rest)*)
    };
    (chat: $chat:expr, $name:expr $(, $($fields:tt)*)?) => {
        $crate::telemetry::usecase_span!(
            @span []
            $name,
            chat.id = %$chat,
            session.id = ::tracing::field::Empty,
            container.id = ::tracing::field::Empty,
            $($($fields)*)?
        )
    };
    (@span [$($parent:tt)*] $name:expr $(, $($fields:tt)*)?) => {
        ::tracing::info_span!(
            $($parent)*
            $name,
            sandbox.result = ::tracing::field::Empty,
            error = ::tracing::field::Empty,
            "error.type" = ::tracing::field::Empty,
            otel.status_code = ::tracing::field::Empty,
            $($($fields)*)?
        )
    };
    ($($rest:tt)*) => {
        $crate::telemetry::usecase_span!(@span [] $($rest)*)
    };
}
pub(crate) use usecase_span;

/// Records a failure on `span` the way every use case does: the message with its causes, its
/// stable kind and the OpenTelemetry error status. The span must declare `error`, `error.type` and
/// `otel.status_code` (as `Empty`).
pub(crate) fn record_error<E: ErrorKind>(span: &Span, error: &E) {
    span.record("error", display(Report(error)));
    span.record("error.type", error.kind());
    span.record("otel.status_code", "ERROR");
}

/// Records how a use case's call ended on its span and returns that `sandbox.result`: what
/// `ok` names a success, or `error` for a failure, recorded with [`record_error`]. The caller
/// counts the call under the same result.
pub(crate) fn record_result<T, E: ErrorKind>(
    span: &Span,
    outcome: Result<T, &E>,
    ok: impl FnOnce(T) -> &'static str,
) -> &'static str {
    let result = match outcome {
        Ok(value) => ok(value),
        Err(error) => {
            record_error(span, error);
            "error"
        }
    };
    span.record("sandbox.result", result);
    result
}

/// Sets [`ACTIVE_COUNT`] from the store. When the store cannot count, the gauge keeps its last
/// value rather than showing a made-up one.
pub(crate) async fn refresh_active_count(repository: &dyn SessionRepository) {
    match repository.count_running().await {
        Ok(count) => metrics::gauge!(ACTIVE_COUNT).set(count as f64),
        Err(error) => {
            tracing::debug!(error = %Report(&error), "sandbox.active.count not refreshed: store unreadable");
        }
    }
}
