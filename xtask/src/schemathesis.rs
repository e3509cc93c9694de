//! Schemathesis, the external API tester that the black-box suite runs against
//! `docs/openapi.yaml`: installed from PyPI, at a pinned version, into a virtual environment in
//! the target directory, once.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The version the suite was written against; a newer one may add checks.
const VERSION: &str = "4.32.5";

/// The path of a `schemathesis` binary of [`VERSION`], installing it first if needed.
pub(crate) fn ensure(target: &Path) -> Result<PathBuf, String> {
    let venv = target.join("schemathesis");
    let binary = venv.join("bin").join("schemathesis");
    if installed_version(&binary).as_deref() == Some(VERSION) {
        return Ok(binary);
    }
    eprintln!("xtask: installing schemathesis {VERSION} into {}", venv.display());
    let bin = crate::venv::create(&venv)?;
    let pip = bin.join("pip");
    let status = Command::new(&pip)
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("schemathesis=={VERSION}"))
        .status()
        .map_err(|error| format!("cannot run {}: {error}", pip.display()))?;
    if !status.success() {
        return Err(format!(
            "`pip install schemathesis=={VERSION}` failed ({status}); PyPI must be reachable"
        ));
    }
    match installed_version(&binary) {
        Some(version) if version == VERSION => Ok(binary),
        other => Err(format!(
            "{} reports version {other:?} after installing {VERSION}",
            binary.display()
        )),
    }
}

/// What `schemathesis --version` says (`schemathesis, version 4.32.5`), if it runs.
fn installed_version(binary: &Path) -> Option<String> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    output.status.success().then(|| text.trim().rsplit(' ').next().unwrap_or_default().to_owned())
}
