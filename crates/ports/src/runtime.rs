use std::time::Duration;

use async_trait::async_trait;
use sandkeeper_domain::spelling;
use sandkeeper_domain::{ChatId, ContainerId, SessionId, SlotId, Timestamp};

use std::path::Path;

use crate::processes::{ProcessError, ProcessInfo, ProcessLogs, ProcessSpec};
use crate::terminal::Terminal;
use crate::{ArchiveError, ArchiveFile, ExecError, FileError, RuntimeError, WorkspacePath};

/// What the runtime needs to create a session's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub session_id: SessionId,
    pub chat_id: ChatId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What the runtime says about a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Running,
    /// It exists but is not running (exited, dead, created and never started).
    Exited,
    /// The runtime does not know it.
    Missing,
}

/// A container that carries this instance's managed labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    pub container_id: ContainerId,
    /// The session label, if it is present and a valid UUID.
    pub session_id: Option<SessionId>,
    pub created_at: Timestamp,
}

/// A managed container of this instance that stopped running, as the runtime reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerExit {
    pub container_id: ContainerId,
    /// The session label, if it is present and a valid UUID.
    pub session_id: Option<SessionId>,
}

/// A command to run in a sandbox, and the bounds it runs within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The program and its arguments (`["sh", "-c", "echo hi"]`); never empty. The program is
    /// looked up in the sandbox's `PATH`.
    pub command: Vec<String>,
    /// Bytes fed to the command's standard input, which is then closed. `None`: no input at
    /// all (the command reads end-of-file at once).
    pub stdin: Option<Vec<u8>>,
    /// Variables added to the sandbox's environment.
    pub env: Vec<(String, String)>,
    /// The directory the command starts in; `None` is [`crate::WORKSPACE_DIR`].
    pub workdir: Option<String>,
    /// How long the command (and everything it started) may run before it is killed.
    pub timeout: Duration,
    /// The most bytes kept of stdout, and separately of stderr. Output beyond it is read and
    /// discarded (the command is never blocked on a full pipe) and `truncated` is set.
    pub output_limit: usize,
}

impl ExecRequest {
    /// No stdin, no extra environment, in the workspace.
    pub fn new(command: Vec<String>, timeout: Duration, output_limit: usize) -> Self {
        Self { command, stdin: None, env: Vec::new(), workdir: None, timeout, output_limit }
    }
}

/// How a command ended and what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit status; `None` when it did not finish (it timed out).
    pub exit_code: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The timeout expired. When set, the command and every process it started in its
    /// session have been killed and are gone.
    pub timed_out: bool,
    /// stdout or stderr produced more than `output_limit` bytes; the rest was discarded.
    pub truncated: bool,
    /// From the start of the command until its output ended, or until its timeout expired.
    pub duration: Duration,
}

/// The container runtime (Docker in production).
///
/// Every method returns [`RuntimeError::Unavailable`] when the runtime cannot be reached and
/// [`RuntimeError::Timeout`] when a call does not answer in time.
#[async_trait]
pub trait SandboxRuntime: Send + Sync {
    /// Creates and starts the session's container, labelled as managed by this instance.
    /// If it cannot be started, nothing is left behind. Returns the container's id.
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError>;

    /// Stops and removes the container. Idempotent: a missing container is success.
    /// MUST return [`RuntimeError::NotManaged`] (and leave it alone) for a container without
    /// this instance's managed labels.
    async fn stop(&self, container_id: &ContainerId) -> Result<(), RuntimeError>;

    /// Whether the container is running, exited or missing.
    async fn inspect(&self, container_id: &ContainerId) -> Result<ContainerState, RuntimeError>;

    /// Every container carrying this instance's managed labels, running or not.
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError>;

    /// Succeeds when the runtime answers.
    async fn ping(&self) -> Result<(), RuntimeError>;

    /// Reports the exits of this instance's managed containers as they happen: each one that
    /// stops running (its main process ended, was killed, or the container was removed while
    /// running) is sent to `exits`. With `since`, the exits from that time on that the runtime
    /// still remembers are reported first; with `None`, only those from now on.
    ///
    /// - Runs until the report ends: returns `Ok(())` once `exits` is closed (nobody listens
    ///   any more), and an error when the runtime cannot be reached or stops reporting; the
    ///   caller then watches again (with `since`, so that what happened meanwhile is not lost).
    /// - An exit may be reported more than once, and the containers sandkeeper removes itself
    ///   are reported too: the receiver must check each one against the store.
    ///
    /// The default implementation, for runtimes that cannot report exits, fails with
    /// `RuntimeError::Failed("watching container exits is not supported by this runtime".into())`.
    async fn watch_exits(
        &self,
        since: Option<Timestamp>,
        exits: &tokio::sync::mpsc::Sender<ContainerExit>,
    ) -> Result<(), RuntimeError> {
        let _ = (since, exits);
        Err(unsupported("watching container exits is not supported by this runtime"))
    }

    /// Runs a command in the container, as the container's user, and waits for it.
    ///
    /// - MUST return [`ExecError::ContainerNotRunning`] when the container is missing or not
    ///   running, before or during the run.
    /// - MUST kill the command and every process it started when `request.timeout` expires,
    ///   and answer `timed_out` only once they are gone; when that cannot be confirmed, it
    ///   returns an error instead.
    /// - MUST keep at most `request.output_limit` bytes of stdout and of stderr, and keep
    ///   reading (and discarding) past that, so the command is never blocked on its output.
    /// - MUST return within `request.timeout` plus a bounded grace for engine calls and cleanup.
    ///
    /// The default implementation, for runtimes that cannot run commands, fails with
    /// `RuntimeError::Failed("exec is not supported by this runtime".into())`.
    async fn exec(
        &self,
        container_id: &ContainerId,
        request: &ExecRequest,
    ) -> Result<ExecOutput, ExecError> {
        let _ = (container_id, request);
        Err(unsupported("exec is not supported by this runtime"))
    }

    /// Writes `bytes` to `path` in the container's workspace, as the container's user: missing
    /// parent directories are created, an existing regular file is replaced whole (never left
    /// half-written).
    ///
    /// Symbolic links inside the sandbox are followed, and MUST NOT lead out of the workspace:
    /// such a path fails with [`FileError::OutsideWorkspace`] and nothing is written. Also
    /// MUST return [`FileError::NotARegularFile`] when a directory (or other non-file) is at
    /// `path`, [`FileError::ParentNotADirectory`] when a needed directory is a file, and
    /// [`FileError::ContainerNotRunning`] when the container is missing or stopped.
    ///
    /// The default implementation fails with `RuntimeError::Failed("file upload is not
    /// supported by this runtime".into())`.
    async fn upload(
        &self,
        container_id: &ContainerId,
        path: &WorkspacePath,
        bytes: &[u8],
    ) -> Result<(), FileError> {
        let _ = (container_id, path, bytes);
        Err(unsupported("file upload is not supported by this runtime"))
    }

    /// Reads the regular file at `path` in the container's workspace.
    ///
    /// MUST return [`FileError::NotFound`] when nothing is there, [`FileError::NotARegularFile`]
    /// for a directory or other non-file, [`FileError::TooLarge`] (without reading it) when it
    /// is larger than `limit` bytes, [`FileError::OutsideWorkspace`] when symbolic links lead
    /// out of the workspace, and [`FileError::ContainerNotRunning`] as for `upload`.
    ///
    /// The default implementation fails with `RuntimeError::Failed("file download is not
    /// supported by this runtime".into())`.
    async fn download(
        &self,
        container_id: &ContainerId,
        path: &WorkspacePath,
        limit: u64,
    ) -> Result<Vec<u8>, FileError> {
        let _ = (container_id, path, limit);
        Err(unsupported("file download is not supported by this runtime"))
    }

    /// Archives the container's `/workspace` as a tar, made inside the sandbox as its user,
    /// into a new temporary file in `scratch` (see [`ArchiveFile`]).
    ///
    /// MUST return [`ArchiveError::TooLarge`] (and keep nothing) when the archive exceeds
    /// `limit` bytes, and [`ArchiveError::ContainerNotRunning`] when the container is missing
    /// or stopped. The archive is complete when this returns `Ok`.
    ///
    /// The default implementation fails with `RuntimeError::Failed("workspace archives are
    /// not supported by this runtime".into())`.
    async fn archive_workspace(
        &self,
        container_id: &ContainerId,
        limit: u64,
        scratch: &Path,
    ) -> Result<ArchiveFile, ArchiveError> {
        let _ = (container_id, limit, scratch);
        Err(unsupported("workspace archives are not supported by this runtime"))
    }

    /// Replaces the content of the container's `/workspace` with `archive`, extracted inside
    /// the sandbox as its user, never on the host.
    ///
    /// MUST check the archive with [`crate::check_archive`] first and return
    /// [`ArchiveError::Invalid`] without touching the workspace when it is refused. Returns
    /// [`ArchiveError::WorkspaceFull`] when it does not fit, and
    /// [`ArchiveError::ContainerNotRunning`] as for `archive_workspace`.
    ///
    /// The default implementation fails like `archive_workspace`'s.
    async fn restore_workspace(
        &self,
        container_id: &ContainerId,
        archive: &ArchiveFile,
    ) -> Result<(), ArchiveError> {
        let _ = (container_id, archive);
        Err(unsupported("workspace archives are not supported by this runtime"))
    }

    /// Runs a command like [`Self::exec`], and sends its output to `output` as it is produced,
    /// each piece in the order it was read, at most `request.output_limit` bytes of each stream
    /// in all (the same bytes [`Self::exec`] would return). The returned [`ExecOutput`] then
    /// holds no output bytes: they were sent.
    ///
    /// - Everything [`Self::exec`] MUST do, it MUST do here too.
    /// - MUST kill the command and every process it started, as on a timeout, when nobody
    ///   receives the output any more (the receiver of `output` was dropped), and then answer
    ///   as for a timeout.
    ///
    /// The default implementation, for runtimes that cannot stream, runs [`Self::exec`] and
    /// sends its whole output when it has ended.
    async fn exec_streamed(
        &self,
        container_id: &ContainerId,
        request: &ExecRequest,
        output: &OutputSender,
    ) -> Result<ExecOutput, ExecError> {
        let mut result = self.exec(container_id, request).await?;
        for (stream, bytes) in [
            (OutputStream::Stdout, std::mem::take(&mut result.stdout)),
            (OutputStream::Stderr, std::mem::take(&mut result.stderr)),
        ] {
            if !bytes.is_empty() {
                let _ = output.send(OutputChunk { stream, bytes });
            }
        }
        Ok(result)
    }

    /// Starts a background process (see [`crate::processes`]) as the container's user and
    /// answers once it has started; it then runs on without the caller.
    ///
    /// - MUST keep its output and status in the container, so that they can be read back by a
    ///   later call, also of another process of sandkeeper.
    /// - MUST keep at most `spec.log_limit` bytes of each output stream, dropping the oldest.
    /// - MUST refuse with [`ProcessError::TooMany`] when `spec.max_processes` already run.
    /// - MUST return [`ProcessError::ContainerNotRunning`] when the container is not running.
    async fn start_process(
        &self,
        container_id: &ContainerId,
        spec: &ProcessSpec,
    ) -> Result<ProcessInfo, ProcessError> {
        let _ = (container_id, spec);
        Err(unsupported(NO_PROCESSES))
    }

    /// Every background process the container keeps, running or ended, oldest first.
    async fn list_processes(
        &self,
        container_id: &ContainerId,
    ) -> Result<Vec<ProcessInfo>, ProcessError> {
        let _ = container_id;
        Err(unsupported(NO_PROCESSES))
    }

    /// The state of a process and up to `limit` bytes of each output stream from the given
    /// offsets (an offset before what is still kept reads from the first byte kept; one past
    /// the end reads nothing). [`ProcessError::NotFound`] for an unknown process.
    async fn process_logs(
        &self,
        container_id: &ContainerId,
        process_id: &str,
        offsets: (u64, u64),
        limit: usize,
    ) -> Result<ProcessLogs, ProcessError> {
        let _ = (container_id, process_id, offsets, limit);
        Err(unsupported(NO_PROCESSES))
    }

    /// Writes `bytes` to the process's standard input; empty `bytes` close it.
    async fn process_stdin(
        &self,
        container_id: &ContainerId,
        process_id: &str,
        bytes: &[u8],
    ) -> Result<(), ProcessError> {
        let _ = (container_id, process_id, bytes);
        Err(unsupported(NO_PROCESSES))
    }

    /// Kills the process and every process it started; answers once they are gone. A process
    /// that has ended already is no error (what it left running is killed).
    async fn kill_process(
        &self,
        container_id: &ContainerId,
        process_id: &str,
    ) -> Result<(), ProcessError> {
        let _ = (container_id, process_id);
        Err(unsupported(NO_PROCESSES))
    }

    /// Opens an interactive shell on a pseudo-terminal of `cols` x `rows` characters in the
    /// container, as the container's user, in the workspace. The shell runs until it exits
    /// (the terminal's output then ends) or the terminal's input is dropped (the shell and
    /// everything it started are then killed, as on an exec's timeout).
    ///
    /// - MUST return [`ExecError::ContainerNotRunning`] when the container is not running.
    ///
    /// The default implementation fails with `RuntimeError::Failed("terminals are not
    /// supported by this runtime".into())`.
    async fn open_terminal(
        &self,
        container_id: &ContainerId,
        cols: u16,
        rows: u16,
    ) -> Result<Terminal, ExecError> {
        let _ = (container_id, cols, rows);
        Err(unsupported("terminals are not supported by this runtime"))
    }

    /// Names the configuration new containers are made with (image, limits, runtime,
    /// network, everything that shapes a container): two runtimes give the same name only if
    /// their containers would be alike. A pooled container made under another name is not
    /// handed out. The default, for runtimes without a pool, is `""`.
    fn pool_fingerprint(&self) -> String {
        String::new()
    }

    /// Creates and starts a container for the warm pool: like [`Self::create`]'s, but with no
    /// chat or session yet (its labels say it is pooled, and carry the configuration's
    /// [`Self::pool_fingerprint`]). Whichever chat claims it later is recorded in the store.
    /// A container that could not start is removed before this returns.
    ///
    /// The default implementation, for runtimes without a pool, fails with
    /// `RuntimeError::Failed("a warm pool is not supported by this runtime".into())`.
    async fn create_pooled(
        &self,
        slot_id: SlotId,
        created_at: Timestamp,
    ) -> Result<ContainerId, RuntimeError> {
        let _ = (slot_id, created_at);
        Err(unsupported("a warm pool is not supported by this runtime"))
    }
}

/// The error of a runtime that cannot do what the default implementation of a
/// [`SandboxRuntime`] method was asked: a [`RuntimeError::Failed`] with `message`.
fn unsupported<E: From<RuntimeError>>(message: &'static str) -> E {
    RuntimeError::Failed(message.into()).into()
}

/// What a runtime that cannot run background processes answers to every call about them.
const NO_PROCESSES: &str = "background processes are not supported by this runtime";

/// Which of a command's output streams a piece of output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

spelling!(OutputStream { Stdout => "stdout", Stderr => "stderr" });

/// A piece of a command's output, as the runtime read it (it may end in the middle of a
/// UTF-8 character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: OutputStream,
    pub bytes: Vec<u8>,
}

/// Where [`SandboxRuntime::exec_streamed`] sends output. Unbounded: what it carries is bounded
/// by the request's `output_limit` per stream, and the command is never held up by a slow
/// reader.
pub type OutputSender = tokio::sync::mpsc::UnboundedSender<OutputChunk>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime that implements only what it must, like the test wrappers of older code.
    struct Minimal;

    #[async_trait]
    impl SandboxRuntime for Minimal {
        async fn create(&self, _: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
            unimplemented!()
        }
        async fn stop(&self, _: &ContainerId) -> Result<(), RuntimeError> {
            unimplemented!()
        }
        async fn inspect(&self, _: &ContainerId) -> Result<ContainerState, RuntimeError> {
            unimplemented!()
        }
        async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
            unimplemented!()
        }
        async fn ping(&self) -> Result<(), RuntimeError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_runtime_without_exec_or_files_says_so() {
        let id = ContainerId::new("c").unwrap();
        let path = WorkspacePath::parse("a").unwrap();
        let request = ExecRequest::new(vec!["true".into()], Duration::from_secs(1), 10);
        assert_eq!(
            Minimal.exec(&id, &request).await,
            Err(ExecError::Runtime(RuntimeError::Failed(
                "exec is not supported by this runtime".into()
            )))
        );
        assert_eq!(
            Minimal.upload(&id, &path, b"x").await,
            Err(FileError::Runtime(RuntimeError::Failed(
                "file upload is not supported by this runtime".into()
            )))
        );
        let (exits, _receiver) = tokio::sync::mpsc::channel(1);
        assert_eq!(
            Minimal.watch_exits(None, &exits).await,
            Err(RuntimeError::Failed(
                "watching container exits is not supported by this runtime".into()
            ))
        );
        assert_eq!(
            Minimal.download(&id, &path, 1).await,
            Err(FileError::Runtime(RuntimeError::Failed(
                "file download is not supported by this runtime".into()
            )))
        );
    }
}
