//! Background processes: commands that run in a sandbox beyond the call that started them,
//! whose output and status are kept in the sandbox itself (so they survive a client that goes
//! away and a restart of sandkeeper), read back by [`crate::SandboxRuntime::list_processes`]
//! and [`crate::SandboxRuntime::process_logs`].

use std::time::Duration;

use sandkeeper_domain::spelling;
use sandkeeper_domain::{ContainerId, Timestamp};

use crate::RuntimeError;

/// A process to start, already checked by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The program and its arguments; never empty.
    pub command: Vec<String>,
    /// Bytes written to the process's standard input once it has started; its standard input
    /// stays open for more until it is closed.
    pub stdin: Option<Vec<u8>>,
    pub env: Vec<(String, String)>,
    /// The directory the process starts in; `None` is [`crate::WORKSPACE_DIR`].
    pub workdir: Option<String>,
    /// When set, the process and what it started are killed once it has run this long.
    pub timeout: Option<Duration>,
    /// The most bytes kept of each of its output streams; older bytes are dropped first.
    pub log_limit: u64,
    /// The most processes running at once in the sandbox, this one included.
    pub max_processes: usize,
    pub started_at: Timestamp,
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessState {
    Running,
    /// It ended by itself; its exit code is known.
    Exited,
    /// It was killed (deleted, timed out, or it died without a trace).
    Killed,
}

spelling!(ProcessState { Running => "running", Exited => "exited", Killed => "killed" });

/// What the sandbox keeps about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub process_id: String,
    pub command: Vec<String>,
    pub started_at: Timestamp,
    pub state: ProcessState,
    /// Known once it exited.
    pub exit_code: Option<i64>,
    /// Known once it ended (to the second), unless it died without a trace.
    pub ended_at: Option<Timestamp>,
}

/// A piece of one output stream of a process. Offsets count every byte the stream ever
/// carried, also those dropped since (the log keeps only its newest bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSlice {
    pub bytes: Vec<u8>,
    /// The offset of `bytes[0]`.
    pub offset: u64,
    /// The first offset still kept: what lies before was dropped.
    pub first_kept: u64,
    /// The end of what the stream had carried when it was read.
    pub end: u64,
}

impl LogSlice {
    /// The offset to read from next time.
    pub fn next_offset(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// A process's state and a piece of each of its output streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessLogs {
    pub state: ProcessState,
    pub exit_code: Option<i64>,
    pub stdout: LogSlice,
    pub stderr: LogSlice,
}

/// Why a call about background processes failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    #[error("no process `{process_id}` in this sandbox")]
    NotFound { process_id: String },
    #[error("{limit} processes are already running in this sandbox")]
    TooMany { limit: usize },
    #[error("container {container_id} is not running")]
    ContainerNotRunning { container_id: ContainerId },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<crate::ExecError> for ProcessError {
    fn from(error: crate::ExecError) -> Self {
        match error {
            crate::ExecError::ContainerNotRunning { container_id } => {
                Self::ContainerNotRunning { container_id }
            }
            crate::ExecError::Runtime(error) => Self::Runtime(error),
        }
    }
}
