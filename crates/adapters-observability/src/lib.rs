//! sandkeeper's telemetry backends.
//!
//! The use cases emit spans, events and metrics through the `tracing` and `metrics` facades only.
//! This crate installs what receives them: [`init`] is called once by the binary (a log
//! subscriber, the Prometheus recorder and, when asked, the OTLP trace exporter); [`capture`] records everything in memory for tests.
//!
//! Architecture invariant: nothing here knows about sandboxes; metric and span names belong to
//! the use cases.

pub mod capture;
mod init;
mod otlp;

pub use init::{
    InitError, LogFormat, Telemetry, TelemetryConfig, UnknownLogFormat, flush_logs, init,
};
pub use otlp::{
    ExporterError, InvalidEndpoint, OtlpEndpoint, SPANS_DROPPED_METRIC, set_remote_parent,
};
