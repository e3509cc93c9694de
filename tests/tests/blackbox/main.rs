//! Black-box tests of the `sandkeeper` binary: each starts the real server (or runs a command)
//! with a fresh data dir and instance id, and checks what a user would see.

mod api;
mod chaos;
mod cli;
mod docker;
mod engines;
mod exec;
mod faults;
mod fuzz;
mod hardening;
mod isolation;
mod otlp;
mod pool;
mod postgres;
mod processes;
mod python;
mod readiness;
mod replicas;
mod schemathesis;
mod streams;
mod terminal;
mod tls;
mod workspaces;
