//! Running a command in a chat's sandbox.

use std::time::{Duration, Instant};

use sandkeeper_domain::{ChatId, SandboxSession};
use sandkeeper_ports::debug_fields;
use sandkeeper_ports::error_kind;
use sandkeeper_ports::{
    ExecError, ExecOutput, ExecRequest, OutputSender, WORKSPACE_DIR, WorkspacePath,
};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::access::{AccessError, Entered, Operation, SandboxAccess};
use crate::telemetry::{record_result, usecase_span};

/// Counter `sandbox.exec.total{result=ok|timeout|error}`. `ok` means the command ran to its
/// end, whatever its exit code; `error` covers every refusal and failure.
const EXEC_TOTAL: &str = "sandbox.exec.total";
/// Histogram `sandbox.exec.duration.seconds{result}`: how long a whole call took.
const EXEC_DURATION: &str = "sandbox.exec.duration.seconds";

/// How long a command may run when the caller does not say.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest timeout a caller may ask for.
pub const DEFAULT_MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How much of stdout, and separately of stderr, is kept.
pub const DEFAULT_EXEC_OUTPUT_LIMIT: usize = 1024 * 1024;
/// The most bytes of stdin a command may be given.
pub const DEFAULT_EXEC_STDIN_LIMIT: usize = 16 * 1024 * 1024;

/// The most arguments a command may have, and their total size: far above what people type,
/// well below the kernel's limit on a process's arguments.
const MAX_ARGS: usize = 4096;
const MAX_ARGS_BYTES: usize = 256 * 1024;
/// The kernel's bound on one argument or one environment string, its terminating NUL included
/// (`MAX_ARG_STRLEN`, 32 pages): a longer one makes `execve` fail with E2BIG inside the sandbox.
/// The totals above (with the variables' bytes and the wrapper sandkeeper adds) stay far below
/// the kernel's `ARG_MAX` of 2 MiB at Docker's default 8 MiB stack.
const MAX_ARG_STRLEN: usize = 131_072;
const MAX_ENV_VARS: usize = 256;
const MAX_ENV_BYTES: usize = 64 * 1024;
const MAX_WORKDIR_LEN: usize = 4096;

/// The bounds of [`ExecInSandbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecSettings {
    /// The timeout of a command that does not ask for one.
    pub default_timeout: Duration,
    /// The longest timeout a command may ask for; more is refused.
    pub max_timeout: Duration,
    /// How many bytes of stdout, and separately of stderr, are returned; the rest is discarded
    /// and the output marked truncated.
    pub output_limit: usize,
    /// The most bytes of stdin accepted.
    pub stdin_limit: usize,
}

impl Default for ExecSettings {
    fn default() -> Self {
        Self {
            default_timeout: DEFAULT_EXEC_TIMEOUT,
            max_timeout: DEFAULT_MAX_EXEC_TIMEOUT,
            output_limit: DEFAULT_EXEC_OUTPUT_LIMIT,
            stdin_limit: DEFAULT_EXEC_STDIN_LIMIT,
        }
    }
}

/// A command to run in a chat's sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    pub chat_id: ChatId,
    /// The program and its arguments, e.g. `["sh", "-c", "echo hi"]`. Never run through a
    /// shell by sandkeeper: ask for one if you want one.
    pub command: Vec<String>,
    /// Fed to the command's standard input, which is then closed. `None`: no input.
    pub stdin: Option<Vec<u8>>,
    /// Variables added to the sandbox's environment for this command.
    pub env: Vec<(String, String)>,
    /// Where the command starts: an absolute path, or a path relative to `/workspace`.
    /// `None` is `/workspace`.
    pub workdir: Option<String>,
    /// `None` is the deployment's default.
    pub timeout: Option<Duration>,
}

impl ExecCommand {
    /// No stdin, no extra environment, in `/workspace`, with the default timeout.
    pub fn new(chat_id: ChatId, command: Vec<String>) -> Self {
        Self { chat_id, command, stdin: None, env: Vec::new(), workdir: None, timeout: None }
    }
}

/// The sandbox the command ran in, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub session: SandboxSession,
    /// `timed_out` set means the command and every process it started were killed.
    pub output: ExecOutput,
}

/// Why [`ExecInSandbox`] did not run the command, or could not tell how it ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecInSandboxError {
    /// The request itself is unusable (nothing was touched); the message names the field.
    #[error("exec request field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// More stdin than the deployment accepts (nothing was touched).
    #[error("stdin of {size} bytes is larger than the limit of {limit} bytes")]
    StdinTooLarge { size: usize, limit: usize },
    /// No running sandbox, a busy one, one that went away under the command (its output is
    /// lost), or the store or the runtime failed.
    #[error(transparent)]
    Access(#[from] AccessError),
}

error_kind! {
    ExecInSandboxError { Invalid => "invalid_request", StdinTooLarge => "stdin_too_large" }
    wraps Access
}

impl ExecInSandboxError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { field, reason: reason.into() }
    }
}

/// Runs a command in a chat's running sandbox (`docs/exec.md`), entered through
/// [`SandboxAccess`]: no chat lock is taken, so the sandbox may be deleted, replaced or cleaned
/// up while the command runs; the call then fails with [`AccessError::SandboxGone`].
#[derive(Debug, Clone)]
pub struct ExecInSandbox {
    access: SandboxAccess,
    settings: ExecSettings,
}

impl ExecInSandbox {
    /// Give [`crate::SandboxFiles`] the same `access` so that commands and transfers share the
    /// bound per sandbox (and the sliding expiry).
    pub fn new(access: SandboxAccess, settings: ExecSettings) -> Self {
        Self { access, settings }
    }

    pub fn settings(&self) -> &ExecSettings {
        &self.settings
    }

    pub async fn execute(&self, command: ExecCommand) -> Result<ExecOutcome, ExecInSandboxError> {
        self.prepare(command).await?.run(None).await
    }

    /// The first half of [`Self::execute`]: checks the command and enters the sandbox (taking
    /// one of its slots), so that a refusal is known before anything runs; the command runs
    /// when [`PreparedExec::run`] is called. A streamed exec answers its refusals here, and
    /// sends the output of the run as it comes.
    pub async fn prepare(&self, command: ExecCommand) -> Result<PreparedExec, ExecInSandboxError> {
        let span = usecase_span!(
            chat: command.chat_id,
            "usecase.exec_in_sandbox",
            exec.exit_code = Empty,
            exec.timed_out = Empty,
            exec.truncated = Empty,
        );
        let started = Instant::now();
        let chat_id = command.chat_id;
        let entering = async {
            let request = self.request(command)?;
            let entered = self.access.enter(chat_id, Operation::Exec).await?;
            Ok((request, entered))
        };
        match entering.instrument(span.clone()).await {
            Ok((request, entered)) => Ok(PreparedExec { request, entered, span, started }),
            Err(error) => {
                finish(&span, started, Err(&error));
                Err(error)
            }
        }
    }

    /// Checks the command against the rules and the settings; nothing is touched before.
    fn request(&self, command: ExecCommand) -> Result<ExecRequest, ExecInSandboxError> {
        check_command(&command.command)?;
        check_env(&command.env)?;
        let workdir = command.workdir.as_deref().map(resolve_workdir).transpose()?;
        let timeout = command.timeout.unwrap_or(self.settings.default_timeout);
        if timeout.is_zero() {
            return Err(ExecInSandboxError::invalid("timeout", "must be more than zero"));
        }
        if timeout > self.settings.max_timeout {
            return Err(ExecInSandboxError::invalid(
                "timeout",
                format!(
                    "{timeout:?} is longer than the maximum of {:?}",
                    self.settings.max_timeout
                ),
            ));
        }
        check_stdin(command.stdin.as_deref(), self.settings.stdin_limit)?;
        Ok(ExecRequest {
            command: command.command,
            stdin: command.stdin,
            env: command.env,
            workdir,
            timeout,
            output_limit: self.settings.output_limit,
        })
    }
}

/// A checked command in an entered sandbox, ready to run (see [`ExecInSandbox::prepare`]).
/// Dropping it without running it gives the slot back.
pub struct PreparedExec {
    request: ExecRequest,
    entered: Entered,
    span: Span,
    started: Instant,
}

debug_fields!(PreparedExec { request, entered });

impl PreparedExec {
    /// Runs the command and waits for it. With `output`, its output is sent there as it is
    /// produced (within the same caps) and the outcome holds none; when nobody receives it any
    /// more, the command is killed as on a timeout. Without, the outcome holds the output.
    pub async fn run(
        self,
        output: Option<&OutputSender>,
    ) -> Result<ExecOutcome, ExecInSandboxError> {
        let (span, started) = (self.span.clone(), self.started);
        let outcome = self.execute(output, &span).instrument(span.clone()).await;
        finish(&span, started, outcome.as_ref().map(|outcome| &outcome.output));
        outcome
    }

    async fn execute(
        self,
        output: Option<&OutputSender>,
        span: &Span,
    ) -> Result<ExecOutcome, ExecInSandboxError> {
        let Self { request, entered, .. } = self;
        let container = &entered.session().container_id;
        let runtime = entered.runtime();
        let result = match output {
            Some(output) => {
                let exec = runtime.exec_streamed(container, &request, output);
                entered.run(exec).await
            }
            None => entered.run(runtime.exec(container, &request)).await,
        };
        let output = result.map_err(|error| match error {
            ExecError::ContainerNotRunning { .. } => entered.gone(),
            ExecError::Runtime(error) => AccessError::Runtime(error),
        })?;
        let session = entered.into_session();
        if let Some(code) = output.exit_code {
            span.record("exec.exit_code", code);
        }
        span.record("exec.timed_out", output.timed_out);
        span.record("exec.truncated", output.truncated);
        if output.timed_out {
            tracing::info!(
                chat_id = %session.chat_id,
                session_id = %session.session_id,
                container_id = %session.container_id,
                timeout_ms = u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX),
                "sandbox_exec_timed_out"
            );
        }
        Ok(ExecOutcome { session, output })
    }
}

/// Ends an exec's span and counts it.
fn finish(span: &Span, started: Instant, outcome: Result<&ExecOutput, &ExecInSandboxError>) {
    let result =
        record_result(span, outcome, |output| if output.timed_out { "timeout" } else { "ok" });
    metrics::counter!(EXEC_TOTAL, "result" => result).increment(1);
    metrics::histogram!(EXEC_DURATION, "result" => result).record(started.elapsed().as_secs_f64());
}

/// Refuses more stdin than `limit` bytes.
pub(crate) fn check_stdin(stdin: Option<&[u8]>, limit: usize) -> Result<(), ExecInSandboxError> {
    match stdin {
        Some(stdin) if stdin.len() > limit => {
            Err(ExecInSandboxError::StdinTooLarge { size: stdin.len(), limit })
        }
        _ => Ok(()),
    }
}

pub(crate) fn check_command(command: &[String]) -> Result<(), ExecInSandboxError> {
    let invalid = |reason: String| Err(ExecInSandboxError::invalid("command", reason));
    match command.first() {
        None => return invalid("is empty; give the program and its arguments".into()),
        Some(program) if program.is_empty() => {
            return invalid("names no program: its first element is empty".into());
        }
        // A shell's `exec` would read it as an option (or, in dash, `--` as the program).
        Some(program) if program.starts_with('-') => {
            return invalid(format!(
                "names the program `{program}`, which begins with `-` and would be read as an \
                 option; give its path instead (e.g. `./{program}`)"
            ));
        }
        Some(_) => {}
    }
    if command.len() > MAX_ARGS {
        return invalid(format!("has {} elements, more than {MAX_ARGS}", command.len()));
    }
    let bytes: usize = command.iter().map(String::len).sum();
    if bytes > MAX_ARGS_BYTES {
        return invalid(format!(
            "is {bytes} bytes long, more than the {MAX_ARGS_BYTES} bytes allowed for all arguments \
             together; pass large input as stdin or a file"
        ));
    }
    if let Some((index, arg)) =
        command.iter().enumerate().find(|(_, arg)| arg.len() >= MAX_ARG_STRLEN)
    {
        return invalid(format!(
            "element {index} is {} bytes long; one argument can be at most {} bytes (the \
             kernel's MAX_ARG_STRLEN of {MAX_ARG_STRLEN} bytes, its terminating NUL included); \
             pass large input as stdin or a file",
            arg.len(),
            MAX_ARG_STRLEN - 1
        ));
    }
    if let Some(index) = command.iter().position(|arg| arg.contains('\0')) {
        return invalid(format!("element {index} contains a NUL byte"));
    }
    Ok(())
}

pub(crate) fn check_env(env: &[(String, String)]) -> Result<(), ExecInSandboxError> {
    let invalid = |reason: String| Err(ExecInSandboxError::invalid("env", reason));
    if env.len() > MAX_ENV_VARS {
        return invalid(format!("has {} variables, more than {MAX_ENV_VARS}", env.len()));
    }
    let bytes: usize = env.iter().map(|(name, value)| name.len() + value.len()).sum();
    if bytes > MAX_ENV_BYTES {
        return invalid(format!(
            "is {bytes} bytes long, more than the {MAX_ENV_BYTES} bytes allowed for all names and \
             values together"
        ));
    }
    for (name, value) in env {
        let mut chars = name.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            return invalid(format!(
                "variable name `{}` must be letters, digits and `_`, not starting with a digit",
                name.escape_debug()
            ));
        }
        if value.contains('\0') {
            return invalid(format!("the value of `{name}` contains a NUL byte"));
        }
    }
    Ok(())
}

/// An absolute directory as given; a relative one under `/workspace`, by the path rule.
pub(crate) fn resolve_workdir(workdir: &str) -> Result<String, ExecInSandboxError> {
    let invalid = |reason: String| Err(ExecInSandboxError::invalid("workdir", reason));
    if workdir.len() > MAX_WORKDIR_LEN {
        return invalid(format!("is longer than {MAX_WORKDIR_LEN} bytes"));
    }
    if workdir.chars().any(char::is_control) {
        return invalid("contains a NUL byte or another control character".into());
    }
    if workdir.starts_with('/') {
        return Ok(workdir.to_owned());
    }
    match WorkspacePath::parse(workdir) {
        Ok(path) => Ok(path.absolute()),
        Err(error) => invalid(format!(
            "{}; give an absolute directory or one relative to {WORKSPACE_DIR}",
            error.reason
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_workdir_is_under_the_workspace_and_an_escape_is_refused() {
        assert_eq!(resolve_workdir("src/app").unwrap(), "/workspace/src/app");
        assert_eq!(resolve_workdir("/tmp").unwrap(), "/tmp");
        for bad in ["../etc", "a//b", "a\0b"] {
            let error = resolve_workdir(bad).unwrap_err();
            assert!(matches!(error, ExecInSandboxError::Invalid { field: "workdir", .. }), "{bad}");
        }
    }
}
