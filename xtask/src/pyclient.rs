//! The Python client (`clients/python`), checked the way a user gets it: the pinned tools of
//! `clients/python/requirements-dev.txt` installed from PyPI into a virtual environment in the
//! target directory (again only when that file changes), the wheel built and installed,
//! `mypy --strict` on the package, its tests and the example of `examples/python`, and the
//! pytest suite against the `sandkeeper` binary of this build.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, run_checked};

/// Checks the client against the binary of this build; the first failing step is the error.
pub(crate) fn check(root: &Path) -> Result<(), String> {
    // The binary as the full test run builds it (with the same features, so that after that run
    // nothing is compiled again): up to date, or built now when this runs alone.
    run_checked(cargo().args(["test", "--workspace", "--all-features", "--no-run"]))?;
    let binary = root.join("target").join("debug").join("sandkeeper");
    let client = root.join("clients").join("python");
    let target = root.join("target");
    let python = ensure_venv(&target.join("pyclient-venv"), &client.join("requirements-dev.txt"))?;

    let dist = target.join("pyclient-dist");
    if dist.exists() {
        fs::remove_dir_all(&dist).map_err(|e| format!("cannot empty {}: {e}", dist.display()))?;
    }
    run_checked(
        python_in(&python, &client)
            .args(["-m", "build", "--wheel", "--no-isolation", "--outdir"])
            .arg(&dist)
            .arg("."),
    )?;
    let wheel = wheel_in(&dist)?;
    run_checked(
        python_in(&python, &client)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(["--no-deps", "--force-reinstall"])
            .arg(&wheel),
    )?;
    // In clients/python, so that its pyproject.toml's [tool.mypy] and [tool.pytest] apply.
    run_checked(
        python_in(&python, &client)
            .args(["-m", "mypy", "--strict", "--cache-dir"])
            .arg(target.join("pyclient-mypy-cache"))
            .args(["src/sandkeeper", "tests"])
            .arg(root.join("examples").join("python")),
    )?;
    run_checked(
        python_in(&python, &client)
            .args(["-m", "pytest", "-p", "no:cacheprovider"])
            .env("SANDKEEPER_BIN", &binary),
    )
}

/// `python` run in `dir`, writing no bytecode into the source tree.
fn python_in(python: &Path, dir: &Path) -> Command {
    let mut command = Command::new(python);
    command.current_dir(dir).env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// The venv's python, creating the venv and installing `requirements` first unless the venv
/// was made from the same requirements (a copy of them is kept inside it).
fn ensure_venv(venv: &Path, requirements: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin").join("python");
    let wanted = fs::read_to_string(requirements)
        .map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
    let stamp = venv.join("requirements-dev.txt");
    if python.is_file() && fs::read_to_string(&stamp).is_ok_and(|had| had == wanted) {
        return Ok(python);
    }
    eprintln!("xtask: installing the Python client's tools into {}", venv.display());
    crate::venv::create(venv)?;
    run_checked(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(requirements),
    )
    .map_err(|error| format!("{error}; PyPI must be reachable"))?;
    fs::write(&stamp, wanted).map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(python)
}

/// The one wheel `python -m build` wrote into `dist`.
fn wheel_in(dist: &Path) -> Result<PathBuf, String> {
    let entries = fs::read_dir(dist).map_err(|e| format!("cannot read {}: {e}", dist.display()))?;
    let wheels: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .collect();
    match wheels.as_slice() {
        [wheel] => Ok(wheel.clone()),
        other => Err(format!("expected one wheel in {}, found {other:?}", dist.display())),
    }
}
