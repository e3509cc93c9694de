//! `SandboxRuntime::open_terminal`: an interactive shell on a pseudo-terminal (a Docker exec
//! with a TTY), run under the same wrapper as every command, so that when the terminal is
//! dropped its shell and everything it started are killed the way a timed-out command is
//! (the wrapper's PID header comes first on the terminal's output, and is taken off it before
//! the terminal is handed out).

use bollard::container::LogOutput;
use bollard::query_parameters::ResizeExecOptionsBuilder;
use futures::StreamExt;
use sandkeeper_ports::{ExecError, Report, Terminal, TerminalInput, WORKSPACE_DIR};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::shell::{Output, Sandbox, exec_mark, wrapped};

/// The shell: bash where the image has it, else `sh`, both interactive.
const SHELL: &str = "[ -x /bin/bash ] && exec /bin/bash -i; exec /bin/sh -i";
/// Pieces of output or input held between the engine and the client.
const BUFFERED: usize = 64;
/// The longest header line: ten digits, a carriage return and a newline.
const HEADER_MAX: usize = 12;

/// Starts the shell and, once it runs, hands its [`Terminal`] to `ready`; then carries bytes
/// both ways until the shell exits or the terminal is dropped (then kills the shell).
pub(crate) async fn run(
    sandbox: &Sandbox<'_>,
    size: (u16, u16),
    ready: oneshot::Sender<Result<Terminal, ExecError>>,
) {
    let mark = exec_mark();
    let cmd = wrapped(&mark, WORKSPACE_DIR, &["/bin/sh".into(), "-c".into(), SHELL.into()]);
    let env = vec!["TERM=xterm-256color".to_owned()];
    let started = sandbox.client.bounded("exec_start", sandbox.attach(cmd, env, true, true));
    let (exec_id, mut output, mut input) = match started.await {
        Ok(Ok(started)) => started,
        Ok(Err(error)) => return drop(ready.send(Err(error))),
        Err(error) => return drop(ready.send(Err(ExecError::Runtime(error)))),
    };
    resize(sandbox, &exec_id, size).await;
    // The header is read before anyone can type: the terminal echoes what is typed, and an echo
    // ahead of the header would hide the PID that the kill needs. A wrapper that says nothing
    // within the engine call timeout fails the open.
    let (pid, shown) =
        match sandbox.client.bounded("exec_start", header(sandbox, &mut output)).await {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => return drop(ready.send(Err(error))),
            Err(error) => return drop(ready.send(Err(ExecError::Runtime(error)))),
        };
    let (output_sender, output_receiver) = mpsc::channel(BUFFERED);
    let (input_sender, mut input_receiver) = mpsc::channel(BUFFERED);
    let terminal = Terminal { output: output_receiver, input: input_sender };
    if ready.send(Ok(terminal)).is_ok()
        && (shown.is_empty() || output_sender.send(shown).await.is_ok())
    {
        loop {
            tokio::select! {
                frame = output.next() => match frame {
                    Some(Ok(LogOutput::Console { message } | LogOutput::StdOut { message } | LogOutput::StdErr { message })) => {
                        if output_sender.send(message.to_vec()).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Err(error)) => {
                        tracing::debug!(error = %Report(&error), "a terminal's output broke off");
                        return;
                    }
                    // The shell exited: dropping the output's sender ends the terminal.
                    None => return,
                },
                typed = input_receiver.recv() => match typed {
                    Some(TerminalInput::Bytes(bytes)) => {
                        if input.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    Some(TerminalInput::Resize { cols, rows }) => {
                        resize(sandbox, &exec_id, (cols, rows)).await;
                    }
                    None => break,
                },
            }
        }
    }
    // Nobody uses the terminal any more: its shell, and what it started, are killed.
    match pid {
        Some(pid) => {
            if let Err(error) = sandbox.kill_session(pid, &mark).await {
                tracing::warn!(error = %Report(&error), "a closed terminal's shell could not be confirmed killed");
            }
        }
        None => tracing::warn!(container = %sandbox.container,
            "a closed terminal's shell gave no PID header; it is left to end with its sandbox"),
    }
}

/// Reads the wrapper's PID header off the start of the output: the PID (`None` when the first
/// line is not a header, which is then shown) and what came after it in the same frames.
async fn header(
    sandbox: &Sandbox<'_>,
    output: &mut Output,
) -> Result<(Option<u32>, Vec<u8>), ExecError> {
    let mut line = Vec::new();
    while !line.ends_with(b"\n") && line.len() < HEADER_MAX {
        match output.next().await {
            Some(Ok(
                LogOutput::Console { message }
                | LogOutput::StdOut { message }
                | LogOutput::StdErr { message },
            )) => line.extend_from_slice(&message),
            Some(Ok(LogOutput::StdIn { .. })) => {}
            Some(Err(error)) => return Err(sandbox.engine_failure(error).await),
            None => break,
        }
    }
    let end = line.iter().position(|&b| b == b'\n').map_or(line.len(), |at| at + 1);
    match parse_header(&line[..end]) {
        Some(pid) => Ok((Some(pid), line.split_off(end))),
        None => Ok((None, line)),
    }
}

async fn resize(sandbox: &Sandbox<'_>, exec_id: &str, (cols, rows): (u16, u16)) {
    let options = ResizeExecOptionsBuilder::new().h(i32::from(rows)).w(i32::from(cols)).build();
    let resized =
        sandbox.client.bounded("exec_resize", sandbox.docker.resize_exec(exec_id, options));
    match resized.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(error = %Report(&error), "a terminal could not be resized")
        }
        Err(error) => tracing::debug!(error = %Report(&error), "a terminal could not be resized"),
    }
}

/// The wrapper's PID header as a terminal shows it: ten digits, then `\r\n` (or `\n`).
fn parse_header(line: &[u8]) -> Option<u32> {
    let digits = line.strip_suffix(b"\n")?;
    let digits = digits.strip_suffix(b"\r").unwrap_or(digits);
    if digits.len() != 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_header_is_read_with_the_terminals_carriage_return() {
        assert_eq!(super::parse_header(b"0000000042\r\n"), Some(42));
        assert_eq!(super::parse_header(b"0000000042\n"), Some(42));
        assert_eq!(super::parse_header(b"sh: oops\r\n"), None);
    }
}
