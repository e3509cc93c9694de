//! The use cases of sandkeeper, generic over the ports.
//!
//! Architecture invariant: this crate knows the ports and the domain only. It never depends on
//! sqlx, bollard, axum, hyper or an exporter; it emits telemetry through the `tracing` and
//! `metrics` facades, whose backends `adapters-observability` installs.
