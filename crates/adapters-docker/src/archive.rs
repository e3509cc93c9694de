//! Workspace archives: `/workspace` as a tar, made and extracted inside the sandbox by its
//! own user through [`crate::shell`], streamed to and from a temporary file on the host. The
//! host never extracts anything; it only reads the archive's headers
//! ([`sandkeeper_ports::check_archive`]) before a restore.
//!
//! Both scripts need only `tar` (`c`, `x`, `-f -`), `rm -rf` and the shell: busybox and GNU tar
//! alike.

use std::path::Path;
use std::time::Duration;

use sandkeeper_ports::{
    ArchiveError, ArchiveFile, Cause, ExecError, RuntimeError, WORKSPACE_DIR, check_archive_file,
};
use tokio::io::AsyncWriteExt;

use crate::client::EngineLoss;
use crate::shell::{Command, Outcome, Sandbox, Spill};

/// How long archiving or restoring a workspace may take inside the sandbox.
pub(crate) const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(300);
const STDERR_LIMIT: usize = 16 * 1024;

/// Empties `/workspace` (hidden entries too), as the sandbox's user.
const CLEAR: &str = r#"clear() {
  for entry in /workspace/* /workspace/.[!.]* /workspace/..?*; do
    if [ -e "$entry" ] || [ -L "$entry" ]; then rm -rf "$entry" || return 1; fi
  done
}
"#;

/// Writes the workspace as a tar to stdout. GNU tar exits 1 when a file changed or went away
/// while it was read (a command or a transfer still writing, such as an upload's temporary
/// file renamed under it): the archive is whole and readable, with the files as they were
/// read, so that is success; busybox tar says nothing then. Any other failure is one.
const ARCHIVE: &str = r#"cd /workspace || exit 1
tar -cf - .
status=$?
if [ "$status" -eq 1 ] && tar --version 2>/dev/null | grep -q 'GNU tar'; then
  exit 0
fi
exit "$status"
"#;

/// Replaces the workspace's content with the tar on stdin; on failure, leaves it empty.
const RESTORE: &str = r#"clear || exit 1
cd /workspace || exit 1
if ! tar -xf -; then
  status=$?
  cd / && clear
  exit "$status"
fi
"#;

impl EngineLoss for ArchiveError {
    fn engine_lost(&self) -> bool {
        matches!(self, Self::Runtime(RuntimeError::Unavailable(_)))
    }
}

fn local(error: std::io::Error) -> ArchiveError {
    ArchiveError::Local(Cause::new(error))
}

pub(crate) fn from_exec(error: ExecError) -> ArchiveError {
    match error {
        ExecError::ContainerNotRunning { container_id } => {
            ArchiveError::ContainerNotRunning { container_id }
        }
        ExecError::Runtime(error) => ArchiveError::Runtime(error),
    }
}

fn said(outcome: &Outcome) -> String {
    let text = String::from_utf8_lossy(&outcome.stderr.kept).trim().to_owned();
    if text.is_empty() { "it gave no reason".to_owned() } else { text }
}

fn command<'a>(argv: &'a [String], stdin: Option<&'a [u8]>) -> Command<'a> {
    Command {
        argv,
        env: Vec::new(),
        workdir: WORKSPACE_DIR,
        stdin,
        timeout: ARCHIVE_TIMEOUT,
        stdout_limit: 0,
        stderr_limit: STDERR_LIMIT,
        forward: None,
    }
}

fn script(body: &str, name: &str) -> Vec<String> {
    vec!["/bin/sh".to_owned(), "-c".to_owned(), format!("{CLEAR}{body}"), name.to_owned()]
}

/// The script ran to its end (or the error that says why not).
fn ended(outcome: &Outcome, doing: &str) -> Result<(), ArchiveError> {
    if outcome.timed_out {
        return Err(ArchiveError::Runtime(RuntimeError::Timeout {
            operation: if doing == "archiving" { "workspace_archive" } else { "workspace_restore" },
            after: ARCHIVE_TIMEOUT,
        }));
    }
    if !outcome.started {
        return Err(ArchiveError::Runtime(RuntimeError::Failed(
            format!("{doing} the workspace could not start in the sandbox: {}", said(outcome))
                .into(),
        )));
    }
    Ok(())
}

/// Archives the sandbox's `/workspace` into a new temporary file in `scratch`.
pub(crate) async fn archive(
    sandbox: &Sandbox<'_>,
    limit: u64,
    scratch: &Path,
) -> Result<ArchiveFile, ArchiveError> {
    let (mut archive, file) = ArchiveFile::create_in(scratch).await.map_err(local)?;
    let mut spill = Spill::new(file, limit);
    let argv = script(ARCHIVE, "sandkeeper-archive");
    let outcome = sandbox
        .run_streaming(command(&argv, None), None, Some(&mut spill))
        .await
        .map_err(from_exec)?;
    ended(&outcome, "archiving")?;
    if spill.over {
        return Err(ArchiveError::TooLarge { limit });
    }
    if let Some(error) = spill.error.take() {
        return Err(local(error));
    }
    if outcome.exit_code != Some(0) {
        return Err(ArchiveError::Tar { said: said(&outcome) });
    }
    // A scratch file, not the durable copy: the workspace store syncs its own, so a crash
    // before that loses nothing that was promised, and no sync is paid here.
    spill.file.flush().await.map_err(local)?;
    archive.set_size(spill.total);
    Ok(archive)
}

/// Replaces the sandbox's `/workspace` with `archive`, once the archive has been checked.
pub(crate) async fn restore(
    sandbox: &Sandbox<'_>,
    archive: &ArchiveFile,
) -> Result<(), ArchiveError> {
    check_archive_file(archive.path()).await?;
    let file = archive.open().await.map_err(local)?;
    let argv = script(RESTORE, "sandkeeper-restore");
    let outcome =
        sandbox.run_streaming(command(&argv, None), Some(file), None).await.map_err(from_exec)?;
    ended(&outcome, "restoring")?;
    match outcome.exit_code {
        Some(0) => Ok(()),
        _ if said(&outcome).contains("No space left on device") => Err(ArchiveError::WorkspaceFull),
        _ => Err(ArchiveError::Tar { said: said(&outcome) }),
    }
}
