//! sandkeeper's container runtime on Docker: the [`SandboxRuntime`] port implemented with
//! bollard.
//!
//! - Connects like the docker CLI (`DOCKER_HOST`, else `/var/run/docker.sock`), lazily: the
//!   engine may be down when sandkeeper starts, and the API version is negotiated on first use.
//! - Every call is bounded by [`DockerConfig::call_timeout`]; an unreachable engine fails fast
//!   with `RuntimeError::Unavailable` naming the endpoint.
//! - Every container is named `sandkeeper-<session id>` and labelled with [`LABEL_MANAGED`],
//!   [`LABEL_INSTANCE`], [`LABEL_SESSION`], [`LABEL_CHAT`], [`LABEL_EXPIRES_AT`] and
//!   [`LABEL_UID`], and [`LABEL_ENGINE`] (the engine's name in the deployment: the containers
//!   listed and watched are only those of this engine); nothing without the managed and
//!   instance labels is ever stopped or removed. A container of the warm pool is named
//!   `sandkeeper-pool-<slot id>` and carries [`LABEL_POOL`] and [`LABEL_POOL_CONFIG`] instead of
//!   the session, chat and expiry labels.
//! - Each sandbox runs as a uid of its own, taken from [`DockerConfig::uid_range`].
//! - The engine keeps no log of a sandbox's output (log driver `none`).
//! - Containers are hardened by default; `docs/security.md` lists each setting.
//!
//! API boundary: no bollard type crosses this crate's public interface; engine errors are
//! translated into [`sandkeeper_ports::RuntimeError`] here.
//!
//! [`SandboxRuntime`]: sandkeeper_ports::SandboxRuntime

mod archive;
mod client;
mod config;
mod exec;
mod files;
mod processes;
mod runtime;
mod shell;
mod terminal;

pub use client::DURATION_METRIC;
pub use config::{
    ConfigError, DEFAULT_CALL_TIMEOUT, DEFAULT_CPUS, DEFAULT_DOCKER_HOST, DEFAULT_IMAGE,
    DEFAULT_MEMORY_BYTES, DEFAULT_NETWORK_MODE, DEFAULT_PIDS_LIMIT, DEFAULT_TMP_SIZE_BYTES,
    DEFAULT_UID_RANGE, DEFAULT_WORKSPACE_SIZE_BYTES, DockerConfig, MAX_SANDBOX_UID,
    MIN_SANDBOX_UID, UidRange,
};
pub use runtime::{
    DockerRuntime, LABEL_CHAT, LABEL_ENGINE, LABEL_EXPIRES_AT, LABEL_INSTANCE, LABEL_MANAGED,
    LABEL_POOL, LABEL_POOL_CONFIG, LABEL_SESSION, LABEL_UID,
};
