//! Background processes, kept in the sandbox itself: under [`ROOT`] (in `/tmp`, a tmpfs of the
//! sandbox, outside `/workspace`), one directory per process, owned by the sandbox's user, holds
//! what it was started with (`meta`), its supervisor's PID, the session and mark of the exec
//! that started it (for the kill), its standard input (a FIFO), and its output: each stream
//! a directory of segment files named by the offset of their first byte, the oldest removed
//! once the stream holds more than the log limit, so offsets stay absolute. A supervisor
//! (`processes/supervise.sh`) runs the command, records its output and writes its exit status;
//! nothing of it lives in sandkeeper's memory, so a process outlives its client and a restart
//! of sandkeeper, and ends with its sandbox. The scripts are POSIX sh using only what busybox,
//! bash and dash with coreutils all have (`dd`, `wc`, `tail`, `head`, `mkfifo`, `date`).
//! See `docs/exec.md`.

use std::time::Duration;

use sandkeeper_domain::Timestamp;
use sandkeeper_ports::{
    ExecError, LogSlice, ProcessError, ProcessInfo, ProcessLogs, ProcessSpec, ProcessState,
    RuntimeError, WORKSPACE_DIR,
};

use crate::shell::{Command, Outcome, Sandbox, exec_mark};

/// Where the processes' directories are, in the sandbox.
pub(crate) const ROOT: &str = "/tmp/.sandkeeper/processes";

/// Starts the supervisor in the background after checking the bound and making the process's
/// directory. Exit 75: too many processes run.
const START: &str = include_str!("processes/start.sh");
/// Runs the command, records its output within the log limit, writes its exit status.
const SUPERVISE: &str = include_str!("processes/supervise.sh");
/// Lists the processes, or reads one's state and output from offsets. Exit 3: no such process.
const READ: &str = include_str!("processes/read.sh");
/// Writes to a process's stdin, closes it, or prepares its kill. Exit 3: no such process.
const CONTROL: &str = include_str!("processes/control.sh");

/// Exit status of a script that found no such process.
const NOT_FOUND: i64 = 3;
/// Exit status of the start script when the sandbox runs its most processes already.
const TOO_MANY: i64 = 75;
/// The most bytes a listing may have (its processes' commands included).
const LIST_LIMIT: usize = 8 * 1024 * 1024;
const STDERR_LIMIT: usize = 4096;
/// How often a read is tried again when a segment was dropped while it was read.
const READ_ATTEMPTS: usize = 3;

/// A process id: 16 hex digits, drawn at random.
fn new_process_id() -> String {
    exec_mark()[..16].to_owned()
}

/// Whether `id` can name a process (anything else names none, and never a path).
pub(crate) fn is_process_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

fn not_found(process_id: &str) -> ProcessError {
    ProcessError::NotFound { process_id: process_id.to_owned() }
}

/// Runs one of the scripts as the sandbox's user, bounded by the call timeout.
async fn script(
    sandbox: &Sandbox<'_>,
    argv: Vec<String>,
    env: Vec<String>,
    stdin: Option<&[u8]>,
    stdout_limit: usize,
) -> Result<Outcome, ProcessError> {
    let command = Command {
        argv: &argv,
        env,
        workdir: "/tmp",
        stdin,
        timeout: sandbox.client.call_timeout(),
        stdout_limit,
        stderr_limit: STDERR_LIMIT,
        forward: None,
    };
    let outcome = sandbox.run(command).await?;
    if outcome.timed_out || !outcome.started {
        return Err(failed(&argv[3], &outcome, "did not finish in time"));
    }
    Ok(outcome)
}

fn failed(name: &str, outcome: &Outcome, what: &str) -> ProcessError {
    let said = String::from_utf8_lossy(&outcome.stderr.kept).trim().to_owned();
    ProcessError::Runtime(RuntimeError::Failed(
        format!("the sandbox's {name} {what} (exit code {:?}): {said}", outcome.exit_code).into(),
    ))
}

fn argv(body: &str, name: &str, args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), body.to_owned(), name.to_owned()];
    argv.extend(args);
    argv
}

/// Seconds with a fraction, as `sleep` takes them.
fn seconds(duration: Duration) -> String {
    format!("{}.{:03}", duration.as_secs(), duration.subsec_millis())
}

pub(crate) async fn start(
    sandbox: &Sandbox<'_>,
    spec: &ProcessSpec,
) -> Result<ProcessInfo, ProcessError> {
    let process_id = new_process_id();
    let meta = serde_json::json!({
        "command": spec.command,
        "started_at_ms": spec.started_at.timestamp_millis(),
    });
    let timeout = spec.timeout.map_or_else(|| "0".to_owned(), seconds);
    let args = [
        ROOT.to_owned(),
        process_id.clone(),
        spec.max_processes.to_string(),
        meta.to_string(),
        SUPERVISE.to_owned(),
        spec.log_limit.to_string(),
        timeout,
        spec.workdir.clone().unwrap_or_else(|| WORKSPACE_DIR.to_owned()),
    ];
    let argv =
        argv(START, "sandkeeper-process-start", args.into_iter().chain(spec.command.clone()));
    let env = spec.env.iter().map(|(name, value)| format!("{name}={value}")).collect();
    let outcome = script(sandbox, argv, env, None, STDERR_LIMIT).await?;
    match outcome.exit_code {
        Some(0) => {}
        Some(TOO_MANY) => return Err(ProcessError::TooMany { limit: spec.max_processes }),
        _ => return Err(failed("process start", &outcome, "failed")),
    }
    if let Some(bytes) = spec.stdin.as_deref().filter(|bytes| !bytes.is_empty()) {
        stdin(sandbox, &process_id, bytes).await?;
    }
    Ok(ProcessInfo {
        process_id,
        command: spec.command.clone(),
        started_at: spec.started_at,
        state: ProcessState::Running,
        exit_code: None,
        ended_at: None,
    })
}

pub(crate) async fn list(sandbox: &Sandbox<'_>) -> Result<Vec<ProcessInfo>, ProcessError> {
    let args = [ROOT.to_owned(), "0".to_owned(), "list".to_owned()];
    let outcome =
        script(sandbox, argv(READ, "sandkeeper-process-read", args), Vec::new(), None, LIST_LIMIT)
            .await?;
    if outcome.exit_code != Some(0) {
        return Err(failed("process listing", &outcome, "failed"));
    }
    let text = String::from_utf8_lossy(&outcome.stdout.kept);
    let mut processes = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(process_id) = line.strip_prefix("P ") else { continue };
        let (Some(state), Some(meta)) = (lines.next(), lines.next()) else { break };
        let Some((state, exit_code, ended_at)) = parse_state(state) else { continue };
        let Some((command, started_at)) = meta.strip_prefix("M ").and_then(parse_meta) else {
            continue;
        };
        processes.push(ProcessInfo {
            process_id: process_id.to_owned(),
            command,
            started_at,
            state,
            exit_code,
            ended_at,
        });
    }
    processes.sort_by(|a, b| (a.started_at, &a.process_id).cmp(&(b.started_at, &b.process_id)));
    Ok(processes)
}

/// `S <state> <exit code or -> <ended, epoch seconds, or ->`.
fn parse_state(line: &str) -> Option<(ProcessState, Option<i64>, Option<Timestamp>)> {
    let mut fields = line.strip_prefix("S ")?.split(' ');
    let state = ProcessState::from_spelling(fields.next()?)?;
    let exit_code = fields.next()?.parse().ok();
    let ended_at =
        fields.next()?.parse::<i64>().ok().and_then(|secs| Timestamp::from_timestamp(secs, 0));
    Some((state, exit_code, ended_at))
}

fn parse_meta(meta: &str) -> Option<(Vec<String>, Timestamp)> {
    let value: serde_json::Value = serde_json::from_str(meta).ok()?;
    let command = serde_json::from_value(value.get("command")?.clone()).ok()?;
    let started_at = Timestamp::from_timestamp_millis(value.get("started_at_ms")?.as_i64()?)?;
    Some((command, started_at))
}

pub(crate) async fn logs(
    sandbox: &Sandbox<'_>,
    process_id: &str,
    offsets: (u64, u64),
    limit: usize,
) -> Result<ProcessLogs, ProcessError> {
    if !is_process_id(process_id) {
        return Err(not_found(process_id));
    }
    let args = [
        ROOT.to_owned(),
        limit.to_string(),
        "logs".to_owned(),
        process_id.to_owned(),
        offsets.0.to_string(),
        offsets.1.to_string(),
    ];
    let argv = argv(READ, "sandkeeper-process-read", args);
    let bound = limit.saturating_mul(2).saturating_add(4096);
    let mut last = None;
    for _ in 0..READ_ATTEMPTS {
        let outcome = script(sandbox, argv.clone(), Vec::new(), None, bound).await?;
        match outcome.exit_code {
            Some(0) => {}
            Some(NOT_FOUND) => return Err(not_found(process_id)),
            _ => return Err(failed("process log reader", &outcome, "failed")),
        }
        // A segment dropped while it was read leaves the answer short: read again.
        match parse_logs(&outcome.stdout.kept) {
            Some(logs) => return Ok(logs),
            None => last = Some(outcome),
        }
    }
    let outcome = last.expect("at least one attempt");
    Err(failed("process log reader", &outcome, "answered what could not be read"))
}

/// The reader's answer: the state line, then for stdout (`O`) and stderr (`E`) a line
/// `<tag> <first kept> <end> <offset> <length>` followed by that many bytes.
fn parse_logs(bytes: &[u8]) -> Option<ProcessLogs> {
    let (line, mut rest) = split_line(bytes)?;
    let (state, exit_code, _) = parse_state(line)?;
    let mut slices = [LogSlice::default(), LogSlice::default()];
    for (tag, slice) in ["O", "E"].into_iter().zip(&mut slices) {
        let (line, after) = split_line(rest)?;
        let mut fields = line.strip_prefix(tag)?.trim_start().split(' ');
        let mut number = || fields.next()?.parse::<u64>().ok();
        let (first_kept, end, offset, length) = (number()?, number()?, number()?, number()?);
        let length = usize::try_from(length).ok()?;
        if after.len() < length {
            return None;
        }
        let (data, after) = after.split_at(length);
        *slice = LogSlice { bytes: data.to_vec(), offset, first_kept, end };
        rest = after;
    }
    if !rest.is_empty() {
        return None;
    }
    let [stdout, stderr] = slices;
    Some(ProcessLogs { state, exit_code, stdout, stderr })
}

fn split_line(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = bytes.iter().position(|&byte| byte == b'\n')?;
    Some((std::str::from_utf8(&bytes[..end]).ok()?, &bytes[end + 1..]))
}

/// Runs the control script on one process.
async fn control(
    sandbox: &Sandbox<'_>,
    process_id: &str,
    action: &str,
    stdin: Option<&[u8]>,
) -> Result<Outcome, ProcessError> {
    if !is_process_id(process_id) {
        return Err(not_found(process_id));
    }
    let args = [format!("{ROOT}/{process_id}"), action.to_owned()];
    let argv = argv(CONTROL, "sandkeeper-process-control", args);
    let outcome = script(sandbox, argv, Vec::new(), stdin, STDERR_LIMIT).await?;
    match outcome.exit_code {
        Some(0) => Ok(outcome),
        Some(NOT_FOUND) => Err(not_found(process_id)),
        _ => Err(failed("process control", &outcome, "failed")),
    }
}

pub(crate) async fn stdin(
    sandbox: &Sandbox<'_>,
    process_id: &str,
    bytes: &[u8],
) -> Result<(), ProcessError> {
    if bytes.is_empty() {
        control(sandbox, process_id, "close", None).await?;
    } else {
        control(sandbox, process_id, "stdin", Some(bytes)).await?;
    }
    Ok(())
}

pub(crate) async fn kill(sandbox: &Sandbox<'_>, process_id: &str) -> Result<(), ProcessError> {
    let outcome = control(sandbox, process_id, "kill", None).await?;
    let said = String::from_utf8_lossy(&outcome.stdout.kept);
    let mut fields = said.split_whitespace();
    let (Some(session), Some(mark)) = (fields.next(), fields.next()) else {
        return Err(failed("process control", &outcome, "did not name the process's session"));
    };
    let session: u32 =
        session.parse().map_err(|_| failed("process control", &outcome, "named no session"))?;
    sandbox.kill_session(session, mark).await.map_err(|error| match error {
        ExecError::ContainerNotRunning { container_id } => {
            ProcessError::ContainerNotRunning { container_id }
        }
        ExecError::Runtime(error) => ProcessError::Runtime(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readers_answer_is_parsed_and_a_short_one_is_refused() {
        let answer = b"S exited 3 1796534054\nO 10 25 12 5\nhelloE 0 2 0 2\nhi";
        let logs = parse_logs(answer).unwrap();
        assert_eq!((logs.state, logs.exit_code), (ProcessState::Exited, Some(3)));
        assert_eq!(logs.stdout.bytes, b"hello");
        assert_eq!((logs.stdout.first_kept, logs.stdout.end, logs.stdout.offset), (10, 25, 12));
        assert_eq!(logs.stdout.next_offset(), 17);
        assert_eq!(logs.stderr.bytes, b"hi");
        assert!(parse_logs(b"S running - -\nO 0 9 0 5\nhelE 0 0 0 0\n").is_none());
        assert_eq!(parse_state("S killed - -"), Some((ProcessState::Killed, None, None)));
    }

    #[test]
    fn only_sixteen_hex_digits_name_a_process() {
        assert!(is_process_id(&new_process_id()));
        for bad in
            ["", "../../etc/passwd", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0"]
        {
            assert!(!is_process_id(bad), "{bad}");
        }
    }
}
