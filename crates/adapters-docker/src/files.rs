//! Files in and out of a sandbox's workspace, through an exec that runs as the sandbox's user.
//!
//! Docker's archive API cannot be used: `/workspace` is a tmpfs mounted inside the container,
//! which the engine's archive endpoints do not see (a PUT into it fails with "container rootfs
//! is marked read-only", a GET answers "Could not find the file"). An exec also has the right
//! privileges by construction: it writes as the sandbox's user, so it can never touch what
//! that user could not, and symbolic links are resolved by the kernel inside the container.
//!
//! Each transfer is one POSIX sh script run by [`crate::shell`] under its wrapper (so it has a timeout that
//! kills it; a transfer that runs out of it is [`FileError::TimedOut`], the sandbox's doing, not
//! the engine's). The script resolves the path with every existing symbolic link followed
//! (`readlink -f`), refuses it unless the result stays inside `/workspace`, and reports what
//! it found through its exit status:
//!
//! | status | meaning |
//! |---|---|
//! | 70 | not found (stderr: nothing) |
//! | 71 | resolves outside `/workspace` (stderr: where to) |
//! | 72 | not a regular file (stderr: what it is, from `stat -c %F`) |
//! | 73 | too large (stderr: the size) |
//! | 74 | a needed directory is something else (stderr: its resolved path) |
//! | 75 | the upload arrived incomplete (stderr: bytes received) |
//! | 76 | the sandbox's user may not read the file or write the directory (stderr: its path) |
//! | 77 | the path is a symbolic link to nothing, or a loop (stderr: the link's target) |

use sandkeeper_ports::{ExecError, FileError, RuntimeError, WORKSPACE_DIR, WorkspacePath};

use crate::shell::{Command, Outcome, Sandbox};

const NOT_FOUND: i64 = 70;
const OUTSIDE: i64 = 71;
const NOT_A_FILE: i64 = 72;
const TOO_LARGE: i64 = 73;
const PARENT_NOT_A_DIRECTORY: i64 = 74;
const INCOMPLETE: i64 = 75;
const PERMISSION_DENIED: i64 = 76;
const LINK_TO_NOWHERE: i64 = 77;

/// The scripts' messages are short; anything longer is an unexpected tool's chatter.
const STDERR_LIMIT: usize = 16 * 1024;

/// Sets `resolved` to the deepest existing part of the path with every symbolic link
/// followed, and `rest` to the missing remainder; exits 77 if that part is a link to nowhere
/// (or a loop), 71 if `resolved` is outside the workspace, and 76 if `resolved` is a directory
/// the sandbox's user may not search while the path goes on below it.
const RESOLVE: &str = r#"fail() { printf '%s' "$2" >&2; exit "$1"; }
resolve() {
  probe=$1
  rest=
  while [ ! -e "$probe" ] && [ ! -L "$probe" ]; do
    rest=/${probe##*/}$rest
    probe=${probe%/*}
    [ -n "$probe" ] || fail 70 ''
  done
  [ -e "$probe" ] || fail 77 "$(readlink "$probe")"
  resolved=$(readlink -f "$probe") && [ -n "$resolved" ] || fail 71 "$(readlink "$probe")"
  case $resolved in /workspace|/workspace/*) ;; *) fail 71 "$resolved$rest" ;; esac
  if [ -n "$rest" ] && [ -d "$resolved" ] && [ ! -x "$resolved" ]; then fail 76 "$resolved"; fi
}
"#;

/// `$1` the path relative to the workspace, `$2` the size limit. Writes the file to stdout.
const DOWNLOAD: &str = r#"path=$1
limit=$2
resolve "/workspace/$path"
[ -z "$rest" ] || exit 70
[ -f "$resolved" ] || fail 72 "$(stat -c %F "$resolved")"
[ -r "$resolved" ] || fail 76 "$resolved"
size=$(stat -c %s "$resolved") || exit 1
[ "$size" -le "$limit" ] || fail 73 "$size"
exec cat "$resolved"
"#;

/// `$1` the path relative to the workspace, `$2` the expected size. Reads the file from
/// stdin into a temporary file beside the target and renames it over the target only when
/// every byte arrived, so a target is never left half-written. A failed upload removes the
/// temporary file and the directories it created.
///
/// The temporary file has a name nobody can predict (96 random bits, drawn inside the sandbox
/// after the script started, so not even its command line tells it) and is created and opened
/// once, exclusively: with `set -C` (noclobber) a shell opens a file that does not exist with
/// `O_CREAT|O_EXCL`, which follows no symbolic link, and `command exec` keeps that one open
/// file for `cat` without the shell exiting when the create fails (dash, bash and ash alike).
/// Nothing planted in the directory can redirect or hold up the bytes.
const UPLOAD: &str = r#"path=$1
size=$2
resolve "/workspace/$path"
final=$resolved$rest
if [ -z "$rest" ]; then
  [ -f "$final" ] || fail 72 "$(stat -c %F "$final")"
elif [ ! -d "$resolved" ]; then
  fail 74 "$resolved"
fi
dir=${final%/*}
tmp=
tidy() {
  [ -z "$tmp" ] || rm -f "$tmp"
  made=$dir
  while [ "${#made}" -gt "${#resolved}" ]; do
    rmdir "$made" 2>/dev/null || break
    made=${made%/*}
  done
}
if [ -n "${rest%/*}" ] && ! said=$(mkdir -p "$dir" 2>&1); then
  tidy
  [ -w "$resolved" ] || fail 76 "$resolved"
  printf '%s' "$said" >&2
  exit 1
fi
token=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
[ "${#token}" = 24 ] || { tidy; printf 'cannot draw a random name from /dev/urandom' >&2; exit 1; }
set -C
if ! { command exec 3>"$dir/.sandkeeper-upload.$token"; } 2>/dev/null; then
  tidy
  [ -w "$dir" ] || fail 76 "$dir"
  printf 'cannot create a temporary file in %s' "$dir" >&2
  exit 1
fi
tmp=$dir/.sandkeeper-upload.$token
if ! cat >&3; then tidy; exit 1; fi
exec 3>&-
written=$(stat -c %s "$tmp") || { tidy; exit 1; }
[ "$written" = "$size" ] || { tidy; fail 75 "$written"; }
mv -f -T "$tmp" "$final" || { tidy; exit 1; }
"#;

/// Writes `bytes` to `path` in the sandbox's workspace.
pub(crate) async fn upload(
    sandbox: &Sandbox<'_>,
    path: &WorkspacePath,
    bytes: &[u8],
) -> Result<(), FileError> {
    let argv = script(UPLOAD, "sandkeeper-upload", path, bytes.len() as u64);
    let outcome = transfer(sandbox, path, &argv, Some(bytes), 0).await?;
    match outcome.exit_code {
        Some(0) => Ok(()),
        Some(INCOMPLETE) => Err(FileError::Runtime(RuntimeError::Failed(
            format!(
                "the upload of `{path}` was cut short: {} of {} bytes arrived; the file was not \
                 changed",
                detail(&outcome),
                bytes.len()
            )
            .into(),
        ))),
        code => Err(file_error(path, code, &outcome, "writing")),
    }
}

/// Reads `path` from the sandbox's workspace, if it is at most `limit` bytes.
pub(crate) async fn download(
    sandbox: &Sandbox<'_>,
    path: &WorkspacePath,
    limit: u64,
) -> Result<Vec<u8>, FileError> {
    let argv = script(DOWNLOAD, "sandkeeper-download", path, limit);
    let keep = usize::try_from(limit).unwrap_or(usize::MAX);
    let outcome = transfer(sandbox, path, &argv, None, keep).await?;
    match outcome.exit_code {
        // The file grew between the size check and the read.
        Some(0) if outcome.stdout.truncated() => {
            Err(FileError::TooLarge { path: path.clone(), size: outcome.stdout.total, limit })
        }
        Some(0) => Ok(outcome.stdout.kept),
        Some(TOO_LARGE) => Err(FileError::TooLarge {
            path: path.clone(),
            size: detail(&outcome).parse().unwrap_or(limit.saturating_add(1)),
            limit,
        }),
        code => Err(file_error(path, code, &outcome, "reading")),
    }
}

/// A command's failure as a transfer's: the same container, the same runtime.
pub(crate) fn from_exec(error: ExecError) -> FileError {
    match error {
        ExecError::ContainerNotRunning { container_id } => {
            FileError::ContainerNotRunning { container_id }
        }
        ExecError::Runtime(error) => FileError::Runtime(error),
    }
}

/// Runs a transfer's script, bounded by the call timeout like any engine call, and returns how
/// it ended once it ran to its end.
async fn transfer(
    sandbox: &Sandbox<'_>,
    path: &WorkspacePath,
    argv: &[String],
    stdin: Option<&[u8]>,
    stdout_limit: usize,
) -> Result<Outcome, FileError> {
    let command = Command {
        argv,
        env: Vec::new(),
        workdir: WORKSPACE_DIR,
        stdin,
        timeout: sandbox.client.call_timeout(),
        stdout_limit,
        stderr_limit: STDERR_LIMIT,
        forward: None,
    };
    let outcome = sandbox.run(command).await.map_err(from_exec)?;
    if outcome.timed_out {
        // The engine answered; the sandbox held the script up.
        let after = sandbox.client.call_timeout();
        return Err(FileError::TimedOut { path: path.clone(), after });
    }
    if !outcome.started {
        return Err(at_limit(path, &outcome));
    }
    Ok(outcome)
}

/// The transfer's script never ran in a container that still runs (the runtime said why, on
/// the exec's output), or could not start its own processes: the sandbox has no room left.
fn at_limit(path: &WorkspacePath, outcome: &Outcome) -> FileError {
    let said = [&outcome.stdout.kept, &outcome.stderr.kept]
        .iter()
        .map(|bytes| String::from_utf8_lossy(bytes).trim().to_owned())
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let said =
        if said.is_empty() { "the container runtime gave no reason".to_owned() } else { said };
    FileError::AtLimit { path: path.clone(), said }
}

fn script(body: &str, name: &str, path: &WorkspacePath, number: u64) -> Vec<String> {
    vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!("{RESOLVE}{body}"),
        name.to_owned(),
        path.as_str().to_owned(),
        number.to_string(),
    ]
}

/// What the script said on stderr, as text.
fn detail(outcome: &Outcome) -> String {
    String::from_utf8_lossy(&outcome.stderr.kept).trim().to_owned()
}

/// A resolved path inside the workspace as the caller would write it (`dir/file`).
fn relative(resolved: &str) -> String {
    resolved
        .strip_prefix(WORKSPACE_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|rest| !rest.is_empty())
        .map_or_else(|| resolved.to_owned(), str::to_owned)
}

/// The error a script's exit status stands for.
fn file_error(
    path: &WorkspacePath,
    code: Option<i64>,
    outcome: &Outcome,
    doing: &str,
) -> FileError {
    let path = path.clone();
    let said = detail(outcome);
    match code {
        Some(NOT_FOUND) => FileError::NotFound { path },
        Some(OUTSIDE) => FileError::OutsideWorkspace {
            path,
            resolved: if said.is_empty() { "an unresolvable target".to_owned() } else { said },
        },
        Some(NOT_A_FILE) => FileError::NotARegularFile { path, found: said },
        Some(PARENT_NOT_A_DIRECTORY) => {
            FileError::ParentNotADirectory { path, parent: relative(&said) }
        }
        Some(PERMISSION_DENIED) => FileError::PermissionDenied { path, denied: relative(&said) },
        Some(LINK_TO_NOWHERE) => FileError::LinkToNowhere { path, target: said },
        _ if said.contains("No space left on device") => FileError::WorkspaceFull { path },
        // Every shell says so when fork fails (EAGAIN at the pids limit, ENOMEM at the memory
        // limit): "can't fork", "Cannot fork", "fork: retry".
        _ if said.contains("fork") => at_limit(&path, outcome),
        _ => FileError::Runtime(RuntimeError::Failed(
            format!(
                "{doing} `{path}` in the sandbox failed (exit status {}): {said}",
                code.map_or_else(|| "unknown".to_owned(), |code| code.to_string())
            )
            .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_paths_are_shown_relative_to_the_workspace() {
        assert_eq!(relative("/workspace/a/b"), "a/b");
        assert_eq!(relative("/workspace"), "/workspace");
        assert_eq!(relative("/etc"), "/etc");
        assert_eq!(relative("/workspaces/a"), "/workspaces/a");
    }
}
