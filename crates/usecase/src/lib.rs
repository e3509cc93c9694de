//! The use cases of sandkeeper, generic over the ports.
//!
//! Architecture invariant: this crate knows the ports and the domain only. It never depends on
//! sqlx, bollard, axum, hyper or an exporter; it emits telemetry through the `tracing` and
//! `metrics` facades, whose backends `adapters-observability` installs.
//!
//! Entering a running sandbox: every use case that works inside one (exec, file transfers, and
//! any to come) gets in through [`SandboxAccess`] (`access.rs`), which owns the live-session
//! lookup, the operation slots, the sliding expiry and the one [`AccessError`].
//!
//! Error labels: wherever a use case labels a failure (the `error.type` span field and metric
//! label, the `error` field of `sandbox_clean_failed`), the value is the error's `kind()`, a short
//! stable name such as `runtime_error` or `store_unavailable`, never its free-form message.

mod access;
mod cleanup;
mod create;
mod delete;
mod engines;
mod exec;
mod exits;
mod files;
mod keepalive;
mod maintenance;
mod pool;
mod processes;
mod queries;
mod telemetry;
mod terminal;
mod workspace;

pub use access::{
    AccessError, DEFAULT_OPERATIONS_PER_SANDBOX, Entered, Operation, SandboxAccess, SandboxSlots,
};
pub use cleanup::{
    CleanupError, CleanupExpiredSandboxes, CleanupFailure, CleanupReport,
    DEFAULT_CLEANUP_BATCH_LIMIT, DEFAULT_CLEANUP_CONCURRENCY,
};
pub use create::{
    CreateOutcome, CreateResult, CreateSandbox, CreateSandboxCommand, CreateSandboxError,
};
pub use delete::{DeleteSandbox, DeleteSandboxError};
pub use engines::RemovalError;
pub use exec::{
    DEFAULT_EXEC_OUTPUT_LIMIT, DEFAULT_EXEC_STDIN_LIMIT, DEFAULT_EXEC_TIMEOUT,
    DEFAULT_MAX_EXEC_TIMEOUT, ExecCommand, ExecInSandbox, ExecInSandboxError, ExecOutcome,
    ExecSettings, PreparedExec,
};
pub use exits::{ExitOutcome, IgnoredExit, RecordContainerExit};
pub use files::{
    DEFAULT_DOWNLOAD_LIMIT, DEFAULT_UPLOAD_LIMIT, DownloadedFile, FileSettings, SandboxFiles,
    SandboxFilesError, UploadedFile,
};
pub use keepalive::{
    DEFAULT_MAX_LIFETIME, KeepAlive, KeepAliveCommand, KeepAliveError, KeepAliveOutcome,
    KeepAliveResult, KeepAliveSettings,
};
pub use maintenance::{
    CleanupOutcome, DEFAULT_ENGINE_LOSS_GRACE, DEFAULT_MAINTENANCE_LEASE_NAME, MaintenanceError,
    MaintenanceReport, MaintenanceSettings, MaintenanceSweep, SweepOutcome,
};
pub use pool::{
    Claimed, DEFAULT_POOL_MAX_AGE, DEFAULT_POOL_REFILL_CONCURRENCY, PoolSettings, PoolStatus,
    RefillReport, WarmPool, WarmPools,
};
pub use processes::{
    DEFAULT_MAX_PROCESSES, DEFAULT_PROCESS_LOG_LIMIT, ProcessSettings, SandboxProcesses,
    SandboxProcessesError, StartedProcess,
};
pub use queries::SandboxQueries;
pub use terminal::{MAX_TERMINAL_SIZE, OpenTerminal, SandboxTerminal, TerminalError};
pub use workspace::{
    CheckpointReport, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_WORKSPACE_RETENTION,
    DEFAULT_WORKSPACE_SIZE, REAP_BATCH, SaveReason, WorkspaceChanges, WorkspaceError,
    WorkspaceRestore, WorkspaceSettings, Workspaces,
};
