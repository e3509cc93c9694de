//! Python virtual environments under the target directory, for the Python tools the tests use
//! (Schemathesis, the Python client's test tools).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes a fresh virtual environment at `venv` (emptied first if one is there) and returns its
/// `bin` directory.
pub(crate) fn create(venv: &Path) -> Result<PathBuf, String> {
    let created = Command::new("python3").args(["-m", "venv", "--clear"]).arg(venv).status();
    match created {
        Ok(status) if status.success() => Ok(venv.join("bin")),
        Ok(status) => Err(format!(
            "`python3 -m venv {}` failed ({status}); install Debian's `python3-venv`",
            venv.display()
        )),
        Err(error) => Err(format!("cannot run python3 ({error}); install Debian's `python3-venv`")),
    }
}
