//! `SandboxRuntime::exec`: a caller's command run in its sandbox by [`crate::shell`], and its
//! outcome as the port describes it. What the wrapper and the timeout's killer do is told
//! there, and in `docs/exec.md`.

use sandkeeper_ports::{
    ExecError, ExecOutput, ExecRequest, OutputSender, RuntimeError, WORKSPACE_DIR,
};

use crate::shell::{Command, Sandbox};

/// Refuses a request that names no program, before the engine is contacted.
pub(crate) fn check(request: &ExecRequest) -> Result<(), ExecError> {
    if request.command.first().is_none_or(String::is_empty) {
        return Err(ExecError::Runtime(RuntimeError::Failed(
            "the command is empty; name a program to run".into(),
        )));
    }
    Ok(())
}

/// Runs `request` in `sandbox` and reports how it ended. With `forward`, the output is sent
/// there as it is read (and the answer holds none); else it is kept for the answer.
pub(crate) async fn exec(
    sandbox: &Sandbox<'_>,
    request: &ExecRequest,
    forward: Option<&OutputSender>,
) -> Result<ExecOutput, ExecError> {
    let env = request.env.iter().map(|(name, value)| format!("{name}={value}")).collect();
    let command = Command {
        argv: &request.command,
        env,
        workdir: request.workdir.as_deref().unwrap_or(WORKSPACE_DIR),
        stdin: request.stdin.as_deref(),
        timeout: request.timeout,
        stdout_limit: request.output_limit,
        stderr_limit: request.output_limit,
        forward,
    };
    let outcome = sandbox.run(command).await?;
    let truncated = outcome.stdout.truncated() || outcome.stderr.truncated();
    Ok(ExecOutput {
        exit_code: outcome.exit_code,
        stdout: outcome.stdout.kept,
        stderr: outcome.stderr.kept,
        timed_out: outcome.timed_out,
        truncated,
        duration: outcome.duration,
    })
}
