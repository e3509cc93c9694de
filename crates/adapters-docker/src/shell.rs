//! Running a command in a sandbox, as the sandbox's user, with a timeout that really ends it:
//! what both the commands of [`crate::exec`] and the transfers of [`crate::files`] run on.
//!
//! Docker has no API to kill an exec. So every command runs under a tiny shell wrapper that
//! first writes its own PID, fixed-width, to stderr (the adapter strips it), then marks the
//! command's environment with a random token of its own (`SANDKEEPER_EXEC_ID`), changes to
//! the working directory and `exec`s the command. runc starts every exec'd process as the leader of
//! a new session and process group, so that PID is also the session id and the process group id
//! of the command and of everything it starts, and every process it starts inherits the mark.
//! When the timeout expires, a second exec kills (SIGKILL) every process in that session or
//! process group, every process whose environment carries the mark (which catches processes
//! that started a session of their own and were orphaned to PID 1: double-forked daemons), and
//! every descendant of one, and repeats until a scan of `/proc` finds none left. Only then does
//! the adapter answer `timed_out`; if that cannot be confirmed it answers an error. A timeout that
//! expires before the wrapper's header arrived still answers `timed_out`: the output is read on
//! until the header comes (and the kill proceeds) or the output ends.
//!
//! The wrapper and the killer are POSIX sh using only what dash, bash and busybox ash all accept
//! (each constant says where they differ), so the image's `/bin/sh` may be any of them. When the
//! wrapper never ran (no header) and the container is not running, a delete won a race with the
//! exec: that is [`ExecError::ContainerNotRunning`], never the runtime's complaint as output.
//! See `docs/exec.md`.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures::{Stream, StreamExt};
use sandkeeper_domain::ContainerId;
use sandkeeper_ports::{
    Cause, ExecError, OutputChunk, OutputSender, OutputStream, Report, RuntimeError,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::client::{Client, is_conflict, is_not_found};

/// How long killing a timed-out command may take, retries included. A sandbox at its pids
/// limit may refuse the killer's exec for a moment; it is retried until this runs out.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// After the kill, how long the command's output may take to end (the engine closes it once
/// the processes holding it are gone). What arrives in that time is still returned.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long the engine may keep reporting an exec as running after its output ended.
const EXIT_CODE_WAIT: Duration = Duration::from_secs(2);
/// How long a container may still be reported running after an exec in it was killed by its
/// removal.
const CONTAINER_EXIT_WAIT: Duration = Duration::from_secs(1);
/// The exit status of a process killed by SIGKILL, as the engine reports it (128 + 9).
const SIGKILLED: i64 = 137;
/// The killer's output is only read for diagnostics.
const DIAGNOSTIC_LIMIT: usize = 4096;

/// `$0` of the wrapper, which shell error messages start with.
const WRAPPER_NAME: &str = "sandkeeper-exec";
/// The environment variable that marks every process of one command (the wrapper and the
/// killer spell it out): the wrapper sets it to a token drawn for that command, and every
/// process the command starts inherits it, whatever session or process group it moves to. A
/// process can only shed it by `exec`ing with an environment without it.
#[cfg(test)]
const EXEC_MARK: &str = "SANDKEEPER_EXEC_ID";
/// The wrapper: `$1` is the command's mark (`SANDKEEPER_EXEC_ID`), `$2` the working directory,
/// the rest is the command. The PID header is written before anything else can write to stderr,
/// and `exec` keeps the command in the wrapper's process, so the PID stays that of the session
/// leader.
///
/// Only POSIX sh is used, and only what dash, bash and busybox ash all accept: `exec` takes no
/// `--` in dash (it would run a program named `--`), while bash and ash read a program named
/// like `-n` as an option of `exec`. So a program name that begins with `-` is refused here
/// (exit 127, as for a program that cannot be found); the API refuses it before this.
const WRAPPER: &str = r#"printf '%010d\n' "$$" >&2
SANDKEEPER_EXEC_ID=$1
export SANDKEEPER_EXEC_ID
cd -- "$2" 2>/dev/null || { printf 'sandkeeper: cannot enter the working directory %s\n' "$2" >&2; exit 126; }
shift 2
case $1 in -*) printf 'sandkeeper: cannot run a program whose name begins with "-": %s\n' "$1" >&2; exit 127 ;; esac
exec "$@""#;
/// Ten digits and a newline.
const PID_HEADER_LEN: usize = 11;

/// The command line of `argv` run under the wrapper with `mark`, in `workdir`.
pub(crate) fn wrapped(mark: &str, workdir: &str, argv: &[String]) -> Vec<String> {
    let mut cmd = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        WRAPPER.to_owned(),
        WRAPPER_NAME.to_owned(),
        mark.to_owned(),
        workdir.to_owned(),
    ];
    cmd.extend(argv.iter().cloned());
    cmd
}

/// `$1` is the PID of a timed-out command's session leader, `$2` the command's mark
/// (`SANDKEEPER_EXEC_ID`). First stops (SIGSTOP) its process group in one system call, so that
/// nothing in it can fork, exit or orphan a child while the killer looks, and a fork bomb stops
/// competing for the CPU. Then kills (SIGKILL) the group, every process whose session or
/// process group is that PID, every process whose environment carries the mark, and every
/// descendant of one of them, and scans again, until none is left (exit 0) or 50 rounds have
/// passed (exit 1). A PID cannot be reused while a live process still has it as its session or
/// group id, and the mark is drawn at random for each command, so nothing outside the command
/// is ever matched: not PID 1, and not the processes of another command running beside it as
/// the same user. The environment of a process of another user (PID 1, the keeper) cannot be
/// read, and is not looked at.
///
/// Only shell builtins run in the loop except `sleep` between later rounds, and the shell never
/// forks (no subshell, command substitution, pipe or here-document, which dash and ash feed
/// through a forked writer once it outgrows a pipe), so it works in a sandbox at its pids limit
/// once the killer itself has started. `/proc/PID/stat` is read whole: the process name in it
/// may hold newlines and `) `, so the fields are taken after the last `) `, which the kernel
/// writes right after the name. `/proc/PID/environ` is read the same way; dash, bash and ash
/// all drop the NUL bytes between its variables, so the mark is looked for in the variables
/// run together (the token is of fixed length, so another token never matches it). `kill
/// -KILL -PGID` is the one spelling of a group kill that dash, bash and ash all accept (dash
/// refuses `kill -s KILL -PGID`, ash `kill -s KILL -- -PGID`).
const KILLER: &str = r#"target=$1
mark=$2
case $target in ''|*[!0-9]*|0|1) exit 2 ;; esac
case $mark in ''|*[!0-9a-f]*) exit 2 ;; esac
kill -STOP "-$target" 2>/dev/null
round=0
while :; do
  table=
  marked=' '
  for entry in /proc/[0-9]*; do
    line=
    part=
    while IFS= read -r part; do
      line="$line$part
"
    done 2>/dev/null < "$entry/stat"
    line=$line$part
    pid=${line%% *}
    case $pid in ''|*[!0-9]*) continue ;; esac
    case $line in *') '*) ;; *) continue ;; esac
    set -- ${line##*') '}
    [ "$1" = Z ] && continue
    table="$table $pid $2 $3 $4"
    [ "$3" = "$target" ] || [ "$4" = "$target" ] || [ "$pid" = 1 ] || [ "$pid" = "$$" ] && continue
    line=
    part=
    while IFS= read -r part; do
      line=$line$part
    done 2>/dev/null < "$entry/environ"
    case $line$part in *"SANDKEEPER_EXEC_ID=$mark"*) marked="$marked$pid " ;; esac
  done
  doomed=' '
  grew=1
  while [ "$grew" = 1 ]; do
    grew=0
    set -- $table
    while [ "$#" -ge 4 ]; do
      pid=$1 parent=$2 group=$3 session=$4
      shift 4
      [ "$pid" = 1 ] && continue
      case $doomed in *" $pid "*) continue ;; esac
      if [ "$session" != "$target" ] && [ "$group" != "$target" ]; then
        case $marked$doomed in *" $pid "*|*" $parent "*) ;; *) continue ;; esac
      fi
      doomed="$doomed$pid "
      grew=1
    done
  done
  [ "$doomed" = ' ' ] && exit 0
  kill -KILL "-$target" $doomed 2>/dev/null
  round=$((round + 1))
  [ "$round" -lt 50 ] || exit 1
  [ "$round" -lt 3 ] || sleep 0.1 2>/dev/null
done"#;

/// A token for one command's mark (`SANDKEEPER_EXEC_ID`): 128 bits in hex, drawn from the
/// process's random hash keys (seeded by the operating system, different for every draw), so
/// that no two commands, in this process or another replica, share one.
pub(crate) fn exec_mark() -> String {
    let keys = (RandomState::new(), RandomState::new());
    let now = std::time::SystemTime::now();
    format!("{:016x}{:016x}", keys.0.hash_one(now), keys.1.hash_one(now))
}

/// One command to run, already validated by the caller.
pub(crate) struct Command<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: Vec<String>,
    pub(crate) workdir: &'a str,
    pub(crate) stdin: Option<&'a [u8]>,
    pub(crate) timeout: Duration,
    pub(crate) stdout_limit: usize,
    pub(crate) stderr_limit: usize,
    /// Where the output goes as it is read, instead of being kept; the command is killed as
    /// on a timeout when nobody receives it any more.
    pub(crate) forward: Option<&'a OutputSender>,
}

/// How a command ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Whether the wrapper ran: without it, nothing of the command started and the output
    /// holds the container runtime's reason.
    pub(crate) started: bool,
    pub(crate) exit_code: Option<i64>,
    pub(crate) stdout: Sink,
    pub(crate) stderr: Sink,
    pub(crate) timed_out: bool,
    pub(crate) duration: Duration,
}

/// The buffer of a streamed transfer's file, each way.
const SPILL_BUFFER: usize = 1 << 20;

/// Where a streamed command's stdout goes instead of a [`Sink`]: a file, up to `limit` bytes;
/// beyond it the rest is read and discarded, and `over` is set.
#[derive(Debug)]
pub(crate) struct Spill {
    /// Buffered: each write to a `tokio::fs::File` is a trip to the blocking pool.
    pub(crate) file: tokio::io::BufWriter<tokio::fs::File>,
    pub(crate) limit: u64,
    /// Every byte seen, written or not.
    pub(crate) total: u64,
    pub(crate) over: bool,
    /// The first write that failed; what follows is discarded.
    pub(crate) error: Option<std::io::Error>,
}

impl Spill {
    pub(crate) fn new(file: tokio::fs::File, limit: u64) -> Self {
        let file = tokio::io::BufWriter::with_capacity(SPILL_BUFFER, file);
        Self { file, limit, total: 0, over: false, error: None }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.total > self.limit {
            self.over = true;
        }
        if self.over || self.error.is_some() {
            return;
        }
        if let Err(error) = self.file.write_all(bytes).await {
            self.error = Some(error);
        }
    }
}

/// Keeps the first `limit` bytes of a stream (or sends them on, when forwarding) and counts
/// the rest.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub(crate) kept: Vec<u8>,
    limit: usize,
    /// Bytes kept or sent on.
    accepted: usize,
    /// Every byte seen, accepted or not.
    pub(crate) total: u64,
    forward: Option<(OutputStream, OutputSender)>,
}

impl Sink {
    fn new(limit: usize) -> Self {
        Self { kept: Vec::new(), limit, accepted: 0, total: 0, forward: None }
    }

    /// A sink that sends what it accepts to `forward` instead of keeping it.
    fn forwarding(limit: usize, stream: OutputStream, forward: Option<&OutputSender>) -> Self {
        Self { forward: forward.map(|sender| (stream, sender.clone())), ..Self::new(limit) }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.limit.saturating_sub(self.accepted);
        let accepted = &bytes[..bytes.len().min(room)];
        if accepted.is_empty() {
            return;
        }
        self.accepted += accepted.len();
        match &self.forward {
            // A receiver that went away is noticed by `pump`, which ends the command.
            Some((stream, sender)) => {
                let _ = sender.send(OutputChunk { stream: *stream, bytes: accepted.to_vec() });
            }
            None => self.kept.extend_from_slice(accepted),
        }
    }

    pub(crate) fn truncated(&self) -> bool {
        self.total > self.accepted as u64
    }
}

/// Splits the wrapper's PID header off the front of stderr.
#[derive(Debug)]
enum PidHeader {
    Pending(Vec<u8>),
    Found(u32),
    Absent,
}

impl PidHeader {
    /// Takes the bytes that belong to the header; returns the rest, which is the command's.
    fn feed<'a>(&mut self, bytes: &'a [u8], stderr: &mut Sink) -> &'a [u8] {
        let Self::Pending(buffer) = self else { return bytes };
        let wanted = PID_HEADER_LEN - buffer.len();
        let (head, rest) = bytes.split_at(bytes.len().min(wanted));
        buffer.extend_from_slice(head);
        if buffer.len() == PID_HEADER_LEN {
            *self = match parse_pid_header(buffer) {
                Some(pid) => Self::Found(pid),
                None => {
                    // Not the wrapper speaking (it could not start): all of it is stderr.
                    stderr.push(buffer);
                    Self::Absent
                }
            };
        }
        rest
    }

    /// At the end of the output, a partial header is just stderr.
    fn finish(&mut self, stderr: &mut Sink) {
        if let Self::Pending(buffer) = self {
            stderr.push(buffer);
            *self = Self::Absent;
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Self::Found(pid) => Some(*pid),
            _ => None,
        }
    }
}

fn parse_pid_header(header: &[u8]) -> Option<u32> {
    let (digits, newline) = header.split_at(PID_HEADER_LEN - 1);
    if newline != b"\n" || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

pub(crate) type Output =
    std::pin::Pin<Box<dyn Stream<Item = Result<LogOutput, BollardError>> + Send>>;
pub(crate) type Input = std::pin::Pin<Box<dyn AsyncWrite + Send>>;

/// How reading a command's output stopped.
enum End {
    /// The output ended: the command and everything holding its output are done.
    Finished,
    TimedOut,
    /// With [`Until::Header`]: the wrapper's header was read, or what came instead.
    HeaderSettled,
    /// Nobody receives the forwarded output any more.
    Abandoned,
    Broken(BollardError),
}

/// A running sandbox as its commands see it: the engine, the container, and the user its
/// commands run as.
pub(crate) struct Sandbox<'a> {
    pub(crate) client: &'a Client,
    pub(crate) docker: &'a Docker,
    pub(crate) container: &'a ContainerId,
    /// `uid:gid`, or `None` for the container's configured user.
    pub(crate) user: Option<String>,
    /// How often a running command checks that its container still runs, or `None` when the
    /// end of its output says so (see [`LIVENESS_INTERVAL`]).
    pub(crate) liveness: Option<Duration>,
}

/// How often a command checks that its container still runs, under a runtime other than the
/// engine's default. Under gVisor's `runsc` the output stream of an exec may stay open after
/// its container was killed or removed, until the command's own timeout; the check ends the
/// wait instead. Under the default runtime (`runc`) the stream ends with the container, and
/// no check is made.
pub(crate) const LIVENESS_INTERVAL: Duration = Duration::from_secs(1);

/// How long a command with this timeout may run beyond its engine calls: its timeout, then
/// the killing of what it left and the draining of its output.
pub(crate) fn runs_for(timeout: Duration) -> Duration {
    timeout.saturating_add(KILL_TIMEOUT).saturating_add(DRAIN_GRACE)
}

impl Sandbox<'_> {
    /// Runs `command` in the container under the wrapper, bounded as described in the module
    /// documentation.
    pub(crate) async fn run(&self, command: Command<'_>) -> Result<Outcome, ExecError> {
        self.run_streaming(command, None, None).await
    }

    /// [`Sandbox::run`], with stdin read from `stdin_file` (when `command.stdin` is `None`)
    /// and stdout written to `spill` instead of the outcome's sink: for transfers too large to
    /// hold in memory.
    pub(crate) async fn run_streaming(
        &self,
        command: Command<'_>,
        stdin_file: Option<tokio::fs::File>,
        mut spill: Option<&mut Spill>,
    ) -> Result<Outcome, ExecError> {
        let mark = exec_mark();
        let cmd = wrapped(&mark, command.workdir, command.argv);
        let (exec_id, mut output, mut input) = self
            .client
            .bounded(
                "exec_start",
                self.attach(
                    cmd,
                    command.env,
                    command.stdin.is_some() || stdin_file.is_some(),
                    false,
                ),
            )
            .await??;

        let started = Instant::now();
        let mut stdout =
            Sink::forwarding(command.stdout_limit, OutputStream::Stdout, command.forward);
        let mut stderr =
            Sink::forwarding(command.stderr_limit, OutputStream::Stderr, command.forward);
        let mut header = PidHeader::Pending(Vec::with_capacity(PID_HEADER_LEN));
        let deadline = tokio::time::Instant::now() + command.timeout;
        let end = {
            let feed = async {
                // A command that exits without reading all of it breaks the pipe; that
                // is its business, not an error of the exec.
                if let Some(bytes) = command.stdin {
                    let _ = input.write_all(bytes).await;
                    let _ = input.shutdown().await;
                } else if let Some(file) = stdin_file {
                    let mut file = tokio::io::BufReader::with_capacity(SPILL_BUFFER, file);
                    let _ = tokio::io::copy_buf(&mut file, &mut input).await;
                    let _ = input.shutdown().await;
                }
            };
            let mut sinks = Sinks {
                stdout: &mut stdout,
                stderr: &mut stderr,
                header: &mut header,
                spill: spill.as_deref_mut(),
            };
            let pumped = pump(&mut output, feed, deadline, &mut sinks, Until::End, command.forward);
            match self.liveness {
                None => pumped.await,
                Some(every) => tokio::select! {
                    end = pumped => end,
                    () = self.stopped(every) => {
                        return Err(ExecError::ContainerNotRunning {
                            container_id: self.container.clone(),
                        });
                    }
                },
            }
        };

        match end {
            End::Finished => {
                header.finish(&mut stderr);
                if header.pid().is_none() {
                    // The wrapper never ran: what the output holds is the runtime's complaint.
                    // When the container went away meanwhile (a delete racing this call),
                    // that is what the caller must hear, not the runtime's text.
                    if self.stops_soon().await? {
                        return Err(ExecError::ContainerNotRunning {
                            container_id: self.container.clone(),
                        });
                    }
                }
                let exit_code = self.exit_code(&exec_id).await?;
                Ok(Outcome {
                    started: header.pid().is_some(),
                    exit_code,
                    stdout,
                    stderr,
                    timed_out: false,
                    duration: started.elapsed(),
                })
            }
            End::Broken(error) => Err(self.engine_failure(error).await),
            End::TimedOut | End::HeaderSettled | End::Abandoned => {
                if matches!(end, End::Abandoned) {
                    tracing::info!(container = %self.container,
                        "nobody receives a streamed command's output any more; killing it");
                }
                let duration = started.elapsed();
                let mut sinks =
                    Sinks { stdout: &mut stdout, stderr: &mut stderr, header: &mut header, spill };
                self.end_timed_out(&mut output, &mut sinks, command.timeout, &mark).await?;
                header.finish(&mut stderr);
                let started = header.pid().is_some();
                Ok(Outcome { started, exit_code: None, stdout, stderr, timed_out: true, duration })
            }
        }
    }

    /// Ends a command whose timeout expired: kills everything it started (see [`KILLER`])
    /// while reading what is left of its output. The timeout may expire before the wrapper's
    /// PID header arrived (a timeout of a millisecond, a busy engine): then the output is read
    /// on, for up to [`KILL_TIMEOUT`], until the header arrives (and the kill proceeds as
    /// usual) or the output ends (nothing is left to kill). Only a header that never comes
    /// within that bound, or an engine that fails, is an error.
    async fn end_timed_out(
        &self,
        output: &mut Output,
        sinks: &mut Sinks<'_>,
        timeout: Duration,
        mark: &str,
    ) -> Result<(), ExecError> {
        if matches!(sinks.header, PidHeader::Pending(_)) {
            let until = tokio::time::Instant::now() + KILL_TIMEOUT;
            let nothing = std::future::pending::<()>();
            match pump(output, nothing, until, sinks, Until::Header, None).await {
                End::HeaderSettled => {}
                End::Finished => {
                    sinks.header.finish(sinks.stderr);
                    return self.ended_without_wrapper(sinks).await;
                }
                End::Broken(error) => {
                    return Err(self.engine_failure(error).await);
                }
                End::TimedOut | End::Abandoned => {
                    if !self.is_running().await? {
                        return Err(ExecError::ContainerNotRunning {
                            container_id: self.container.clone(),
                        });
                    }
                    return Err(ExecError::Runtime(RuntimeError::Failed(
                        format!(
                            "the command's timeout of {timeout:?} expired, and its process had not \
                         started {KILL_TIMEOUT:?} later in container {container}, so there was \
                         nothing to kill; the sandbox may be out of processes or memory",
                            container = self.container
                        )
                        .into(),
                    )));
                }
            }
        }
        let Some(pid) = sinks.header.pid() else {
            // The runtime answered instead of the wrapper: nothing of the command runs. Its
            // output ends on its own.
            let until = tokio::time::Instant::now() + DRAIN_GRACE;
            let nothing = std::future::pending::<()>();
            return match pump(output, nothing, until, sinks, Until::End, None).await {
                End::Broken(error) => Err(self.engine_failure(error).await),
                _ => self.ended_without_wrapper(sinks).await,
            };
        };
        // The output is drained while the killer runs: an engine with a full, unread output
        // pipe does not finish the exec, and holds up the killer's.
        let drain_until = tokio::time::Instant::now() + KILL_TIMEOUT + DRAIN_GRACE;
        let nothing = std::future::pending::<()>();
        let drain = pump(output, nothing, drain_until, sinks, Until::End, None);
        let kill = self.kill_session(pid, mark);
        tokio::pin!(drain, kill);
        let mut drained = false;
        let killed = loop {
            tokio::select! {
                killed = &mut kill => break killed,
                _ = &mut drain, if !drained => drained = true,
            }
        };
        killed?;
        if !drained {
            let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;
        }
        Ok(())
    }

    /// A timed-out exec whose output ended without the wrapper's header: the wrapper never
    /// ran, so nothing is left to kill, unless the container itself went away.
    async fn ended_without_wrapper(&self, sinks: &Sinks<'_>) -> Result<(), ExecError> {
        if sinks.header.pid().is_none() && self.stops_soon().await? {
            return Err(ExecError::ContainerNotRunning { container_id: self.container.clone() });
        }
        Ok(())
    }

    /// Creates and starts an exec with its output attached (and its input, with `stdin`); with
    /// `tty`, on a pseudo-terminal.
    pub(crate) async fn attach(
        &self,
        cmd: Vec<String>,
        env: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> Result<(String, Output, Input), ExecError> {
        let user = self.user.clone();
        let config = ExecConfig {
            user,
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            env: (!env.is_empty()).then_some(env),
            cmd: Some(cmd),
            ..Default::default()
        };
        let created = match self.docker.create_exec(self.container.as_str(), config).await {
            Ok(created) => created,
            Err(error) => return Err(self.refused(error).await),
        };
        let options = StartExecOptions { detach: false, tty, output_capacity: None };
        match self.docker.start_exec(&created.id, Some(options)).await {
            Ok(StartExecResults::Attached { output, input }) => Ok((created.id, output, input)),
            Ok(StartExecResults::Detached) => Err(ExecError::Runtime(RuntimeError::Failed(
                "the Docker engine started the exec detached although its output was requested"
                    .to_owned()
                    .into(),
            ))),
            Err(error) => Err(self.refused(error).await),
        }
    }

    /// The engine refuses execs in a missing (404) or stopped or paused (409) container, and
    /// answers 500 for one whose removal is in progress ("is not running: Removal In
    /// Progress"): whatever it answered, a container that is not running is what the caller
    /// must hear about.
    async fn refused(&self, error: BollardError) -> ExecError {
        if is_not_found(&error) || is_conflict(&error) {
            return ExecError::ContainerNotRunning { container_id: self.container.clone() };
        }
        match self.is_running().await {
            Ok(false) => ExecError::ContainerNotRunning { container_id: self.container.clone() },
            _ => ExecError::Runtime(self.client.translate(error)),
        }
    }

    /// The exit code of a finished exec. A command killed by a signal may have been killed
    /// by the removal of its container, which the caller must hear about as such.
    async fn exit_code(&self, exec_id: &str) -> Result<Option<i64>, ExecError> {
        let waited = Instant::now();
        let code = loop {
            let inspected =
                self.client.bounded("exec_inspect", self.docker.inspect_exec(exec_id)).await?;
            match inspected {
                Ok(inspect)
                    if inspect.running == Some(true) && waited.elapsed() < EXIT_CODE_WAIT =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(inspect) => break inspect.exit_code,
                // Execs vanish with their container.
                Err(error) if is_not_found(&error) => break None,
                Err(error) => return Err(ExecError::Runtime(self.client.translate(error))),
            }
        };
        // Removing a container SIGKILLs everything in it (137), and the engine may report the
        // exec's end a moment before the container's.
        if code.is_none_or(|code| code == SIGKILLED) && self.stops_soon().await? {
            return Err(ExecError::ContainerNotRunning { container_id: self.container.clone() });
        }
        Ok(code)
    }

    /// Whether the container is not running, or stops within [`CONTAINER_EXIT_WAIT`].
    async fn stops_soon(&self) -> Result<bool, ExecError> {
        let waited = Instant::now();
        loop {
            if !self.is_running().await? {
                return Ok(true);
            }
            if waited.elapsed() >= CONTAINER_EXIT_WAIT {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The output broke off: because the container went away, or because the engine did.
    pub(crate) async fn engine_failure(&self, error: BollardError) -> ExecError {
        match self.stops_soon().await {
            Ok(true) => ExecError::ContainerNotRunning { container_id: self.container.clone() },
            Ok(false) => ExecError::Runtime(self.client.translate(error)),
            Err(error) => error,
        }
    }

    /// Ends once the container is seen not running, checking every `every`; an engine that
    /// does not answer a check is not taken for a stopped container.
    async fn stopped(&self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Ok(false) = self.is_running().await {
                return;
            }
        }
    }

    async fn is_running(&self) -> Result<bool, ExecError> {
        match self
            .client
            .bounded("inspect", self.docker.inspect_container(self.container.as_str(), None))
            .await?
        {
            Ok(found) => Ok(found.state.and_then(|state| state.running).unwrap_or(false)),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(ExecError::Runtime(self.client.translate(error))),
        }
    }

    /// Kills the session of a timed-out command (see [`KILLER`]), retrying until the killer
    /// confirms that nothing of it is left or [`KILL_TIMEOUT`] runs out.
    pub(crate) async fn kill_session(&self, pid: u32, mark: &str) -> Result<(), ExecError> {
        let started = Instant::now();
        let mut last_failure = Cause::message("the killer did not run");
        while started.elapsed() < KILL_TIMEOUT {
            let remaining = KILL_TIMEOUT.saturating_sub(started.elapsed());
            match tokio::time::timeout(remaining, self.kill_once(pid, mark)).await {
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(failure))) => last_failure = Cause::message(failure),
                Ok(Err(ExecError::ContainerNotRunning { container_id })) => {
                    return Err(ExecError::ContainerNotRunning { container_id });
                }
                Ok(Err(error)) => last_failure = Cause::new(error),
                Err(_) => {
                    last_failure = Cause::message(format!(
                        "the killer did not finish within {KILL_TIMEOUT:?}"
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !self.is_running().await? {
            return Err(ExecError::ContainerNotRunning { container_id: self.container.clone() });
        }
        tracing::warn!(container = %self.container, pid, failure = %Report(&last_failure),
            "could not confirm that a timed-out command was killed");
        Err(ExecError::Runtime(RuntimeError::Failed(last_failure.context(format!(
            "the command timed out, and its processes (session {pid}) could not be confirmed \
             killed in container {container} within {KILL_TIMEOUT:?}",
            container = self.container
        )))))
    }

    /// One run of the killer: `None` when it confirmed that nothing is left, else why not.
    async fn kill_once(&self, pid: u32, mark: &str) -> Result<Option<String>, ExecError> {
        let cmd = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            KILLER.to_owned(),
            "sandkeeper-kill".to_owned(),
            pid.to_string(),
            mark.to_owned(),
        ];
        let (exec_id, mut output, _input) =
            self.client.bounded("exec_start", self.attach(cmd, Vec::new(), false, false)).await??;
        let mut stdout = Sink::new(DIAGNOSTIC_LIMIT);
        let mut stderr = Sink::new(DIAGNOSTIC_LIMIT);
        let mut header = PidHeader::Absent;
        let deadline = tokio::time::Instant::now() + KILL_TIMEOUT;
        let nothing = std::future::pending::<()>();
        let mut sinks =
            Sinks { stdout: &mut stdout, stderr: &mut stderr, header: &mut header, spill: None };
        match pump(&mut output, nothing, deadline, &mut sinks, Until::End, None).await {
            End::Finished => {}
            End::TimedOut | End::HeaderSettled | End::Abandoned => {
                return Ok(Some("the killer itself did not finish".to_owned()));
            }
            End::Broken(error) => return Err(self.engine_failure(error).await),
        }
        match self.exit_code(&exec_id).await? {
            Some(0) => Ok(None),
            code => Ok(Some(format!(
                "the killer exited with {code:?}: {}",
                String::from_utf8_lossy(&stderr.kept).trim()
            ))),
        }
    }
}

/// Where a command's output goes: the two sinks, and the wrapper's header split off stderr.
struct Sinks<'a> {
    stdout: &'a mut Sink,
    stderr: &'a mut Sink,
    header: &'a mut PidHeader,
    /// When set, stdout goes here instead of `stdout`.
    spill: Option<&'a mut Spill>,
}

/// What [`pump`] waits for, besides its deadline.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The end of the output.
    End,
    /// The wrapper's header being read (or known not to come), or the end of the output.
    Header,
}

/// Reads output frames into the sinks until the output ends, it breaks, `deadline`, or (with
/// [`Until::Header`]) the header is settled; meanwhile drives `feed` (which writes stdin)
/// until it is done. With `abandon`, also stops when nobody receives from it any more.
async fn pump(
    output: &mut Output,
    feed: impl Future<Output = ()>,
    deadline: tokio::time::Instant,
    sinks: &mut Sinks<'_>,
    until: Until,
    abandon: Option<&OutputSender>,
) -> End {
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    tokio::pin!(feed);
    let abandoned = async {
        match abandon {
            Some(sender) => sender.closed().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(abandoned);
    let mut feeding = true;
    loop {
        if until == Until::Header && !matches!(sinks.header, PidHeader::Pending(_)) {
            return End::HeaderSettled;
        }
        // The timer comes first: a command that never stops writing must still time out.
        tokio::select! {
            biased;
            () = &mut timer => return End::TimedOut,
            () = &mut abandoned => return End::Abandoned,
            frame = output.next() => match frame {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    match sinks.spill.as_deref_mut() {
                        Some(spill) => spill.write(&message).await,
                        None => sinks.stdout.push(&message),
                    }
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    let rest = sinks.header.feed(&message, sinks.stderr);
                    sinks.stderr.push(rest);
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(error)) => return End::Broken(error),
                None => return End::Finished,
            },
            () = &mut feed, if feeding => feeding = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_gets_a_mark_of_its_own_that_the_killer_accepts() {
        let marks: std::collections::HashSet<String> = (0..1000).map(|_| exec_mark()).collect();
        assert_eq!(marks.len(), 1000);
        for mark in marks {
            assert_eq!(mark.len(), 32, "{mark}");
            assert!(mark.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')), "{mark}");
        }
        assert!(WRAPPER.contains(&format!("\n{EXEC_MARK}=$1\nexport {EXEC_MARK}\n")));
        assert!(KILLER.contains(&format!("\"{EXEC_MARK}=$mark\"")));
    }

    #[test]
    fn a_sink_keeps_the_first_bytes_and_counts_all() {
        let mut sink = Sink::new(5);
        sink.push(b"abc");
        assert!(!sink.truncated());
        sink.push(b"defg");
        sink.push(b"hij");
        assert_eq!(sink.kept, b"abcde");
        assert_eq!(sink.total, 10);
        assert!(sink.truncated());
    }

    #[test]
    fn the_pid_header_is_split_off_across_frames() {
        let mut stderr = Sink::new(100);
        let mut header = PidHeader::Pending(Vec::new());
        let rest = header.feed(b"00000", &mut stderr);
        assert_eq!(rest, b"");
        let rest = header.feed(b"00042\noops", &mut stderr);
        assert_eq!(rest, b"oops");
        assert_eq!(header.pid(), Some(42));
        assert_eq!(header.feed(b"more", &mut stderr), b"more");
        assert_eq!(stderr.kept, b"");
    }

    #[test]
    fn stderr_that_is_not_a_header_is_kept_whole() {
        let mut stderr = Sink::new(100);
        let mut header = PidHeader::Pending(Vec::new());
        let rest = header.feed(b"OCI runtime exec failed", &mut stderr);
        stderr.push(rest);
        assert_eq!(header.pid(), None);
        assert_eq!(stderr.kept, b"OCI runtime exec failed");

        let mut stderr = Sink::new(100);
        let mut header = PidHeader::Pending(Vec::new());
        let rest = header.feed(b"short", &mut stderr);
        stderr.push(rest);
        header.finish(&mut stderr);
        assert_eq!(stderr.kept, b"short");
    }
}
