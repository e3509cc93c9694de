//! Background processes in a chat's sandbox: started by one call, then listed, read, fed and
//! killed by later ones, while they run on by themselves. What they are and print is kept by
//! the runtime in the sandbox (`SandboxRuntime::start_process` and the methods after it), not
//! here, so that they outlive the client and sandkeeper itself. Every call enters the sandbox
//! through [`SandboxAccess`] with [`Operation::Process`], like any other operation.

use std::time::Duration;

use sandkeeper_domain::{ChatId, SandboxSession};
use sandkeeper_ports::error_kind;
use sandkeeper_ports::{ProcessError, ProcessInfo, ProcessLogs, ProcessSpec};
use tracing::Instrument;

use crate::access::{AccessError, Entered, Operation, SandboxAccess};
use crate::exec::{
    ExecCommand, ExecInSandboxError, check_command, check_env, check_stdin, resolve_workdir,
};
use crate::telemetry::{record_result, usecase_span};

/// Counter `sandbox.process.total{action, result=ok|error}`.
const PROCESS_TOTAL: &str = "sandbox.process.total";

/// How many processes may run at once in one sandbox unless configured.
pub const DEFAULT_MAX_PROCESSES: usize = 16;
/// How many bytes of each output stream of a process are kept unless configured.
pub const DEFAULT_PROCESS_LOG_LIMIT: u64 = 16 * 1024 * 1024;

/// The bounds of [`SandboxProcesses`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSettings {
    /// The most processes running at once in a sandbox.
    pub max_processes: usize,
    /// The most bytes kept of each output stream of a process; older bytes are dropped.
    pub log_limit: u64,
    /// The most bytes of each stream one read of the logs returns.
    pub read_limit: usize,
    /// The most bytes of stdin one call may write.
    pub stdin_limit: usize,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        Self {
            max_processes: DEFAULT_MAX_PROCESSES,
            log_limit: DEFAULT_PROCESS_LOG_LIMIT,
            read_limit: crate::DEFAULT_EXEC_OUTPUT_LIMIT,
            stdin_limit: crate::DEFAULT_EXEC_STDIN_LIMIT,
        }
    }
}

/// Why a call about processes failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxProcessesError {
    /// The command to start is unusable, as it would be for an exec (nothing was touched).
    #[error(transparent)]
    Request(ExecInSandboxError),
    #[error("the sandbox has no process `{process_id}`; list them with GET .../processes")]
    NotFound { process_id: String },
    #[error(
        "{limit} processes already run in this sandbox (the server's --max-processes); wait for \
         one to end, or kill one"
    )]
    TooMany { limit: usize },
    #[error(transparent)]
    Access(#[from] AccessError),
}

error_kind! {
    SandboxProcessesError { NotFound => "process_not_found", TooMany => "too_many_processes" }
    wraps Request, Access
}

/// A process started, and the sandbox it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedProcess {
    pub session: SandboxSession,
    pub process: ProcessInfo,
}

/// Background processes of the chats' sandboxes (`docs/exec.md`).
#[derive(Debug, Clone)]
pub struct SandboxProcesses {
    access: SandboxAccess,
    settings: ProcessSettings,
}

impl SandboxProcesses {
    /// Give it the same `access` as [`crate::ExecInSandbox`], so that its calls share the
    /// bound per sandbox and the sliding expiry.
    pub fn new(access: SandboxAccess, settings: ProcessSettings) -> Self {
        Self { access, settings }
    }

    pub fn settings(&self) -> &ProcessSettings {
        &self.settings
    }

    /// Starts `command` (the body of an exec: its `timeout`, when given, ends the process)
    /// and answers once it runs.
    pub async fn start(
        &self,
        command: ExecCommand,
    ) -> Result<StartedProcess, SandboxProcessesError> {
        let chat_id = command.chat_id;
        let spec = self.spec(command).map_err(SandboxProcessesError::Request)?;
        self.call("start", chat_id, async |entered: &Entered| {
            let container = &entered.session().container_id;
            let process = entered.runtime().start_process(container, &spec).await?;
            Ok(StartedProcess { session: entered.session().clone(), process })
        })
        .await
    }

    /// Every process of the chat's sandbox, oldest first.
    pub async fn list(&self, chat_id: ChatId) -> Result<Vec<ProcessInfo>, SandboxProcessesError> {
        self.call("list", chat_id, async |entered: &Entered| {
            entered.runtime().list_processes(&entered.session().container_id).await
        })
        .await
    }

    /// One process of the chat's sandbox.
    pub async fn get(
        &self,
        chat_id: ChatId,
        process_id: &str,
    ) -> Result<ProcessInfo, SandboxProcessesError> {
        let processes = self.list(chat_id).await?;
        processes
            .into_iter()
            .find(|process| process.process_id == process_id)
            .ok_or_else(|| SandboxProcessesError::NotFound { process_id: process_id.to_owned() })
    }

    /// The process's state and its output from the given offsets (stdout, stderr), at most
    /// the read limit of each.
    pub async fn logs(
        &self,
        chat_id: ChatId,
        process_id: &str,
        offsets: (u64, u64),
    ) -> Result<ProcessLogs, SandboxProcessesError> {
        let limit = self.settings.read_limit;
        self.call("logs", chat_id, async |entered: &Entered| {
            let container = &entered.session().container_id;
            entered.runtime().process_logs(container, process_id, offsets, limit).await
        })
        .await
    }

    /// Writes `bytes` to the process's stdin; empty `bytes` close it.
    pub async fn stdin(
        &self,
        chat_id: ChatId,
        process_id: &str,
        bytes: &[u8],
    ) -> Result<(), SandboxProcessesError> {
        check_stdin(Some(bytes), self.settings.stdin_limit)
            .map_err(SandboxProcessesError::Request)?;
        self.call("stdin", chat_id, async |entered: &Entered| {
            let container = &entered.session().container_id;
            entered.runtime().process_stdin(container, process_id, bytes).await
        })
        .await
    }

    /// Kills the process and everything it started.
    pub async fn kill(
        &self,
        chat_id: ChatId,
        process_id: &str,
    ) -> Result<(), SandboxProcessesError> {
        self.call("kill", chat_id, async |entered: &Entered| {
            entered.runtime().kill_process(&entered.session().container_id, process_id).await
        })
        .await
    }

    /// Enters the chat's sandbox and runs `work` in it, with the span, the metric and the
    /// mapping of the runtime's errors every call shares.
    async fn call<T>(
        &self,
        action: &'static str,
        chat_id: ChatId,
        work: impl AsyncFnOnce(&Entered) -> Result<T, ProcessError>,
    ) -> Result<T, SandboxProcessesError> {
        let span = usecase_span!(
            chat: chat_id,
            "usecase.sandbox_processes",
            process.action = action,
        );
        let outcome = async {
            let entered = self.access.enter(chat_id, Operation::Process).await?;
            entered.run(work(&entered)).await.map_err(|error| match error {
                ProcessError::NotFound { process_id } => {
                    SandboxProcessesError::NotFound { process_id }
                }
                ProcessError::TooMany { limit } => SandboxProcessesError::TooMany { limit },
                ProcessError::ContainerNotRunning { .. } => entered.gone().into(),
                ProcessError::Runtime(error) => AccessError::Runtime(error).into(),
            })
        }
        .instrument(span.clone())
        .await;
        let result = record_result(&span, outcome.as_ref(), |_| "ok");
        metrics::counter!(PROCESS_TOTAL, "action" => action, "result" => result).increment(1);
        outcome
    }

    fn spec(&self, command: ExecCommand) -> Result<ProcessSpec, ExecInSandboxError> {
        check_command(&command.command)?;
        check_env(&command.env)?;
        let workdir = command.workdir.as_deref().map(resolve_workdir).transpose()?;
        if command.timeout.is_some_and(|timeout| timeout < Duration::from_millis(1)) {
            return Err(ExecInSandboxError::Invalid {
                field: "timeout",
                reason: "must be more than zero".to_owned(),
            });
        }
        check_stdin(command.stdin.as_deref(), self.settings.stdin_limit)?;
        Ok(ProcessSpec {
            command: command.command,
            stdin: command.stdin,
            env: command.env,
            workdir,
            timeout: command.timeout,
            log_limit: self.settings.log_limit,
            max_processes: self.settings.max_processes,
            started_at: self.access.now(),
        })
    }
}
