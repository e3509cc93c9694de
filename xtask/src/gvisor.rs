//! The gVisor pass of `cargo xtask test`: the black-box tests of what runs inside a sandbox
//! (commands, files and timeouts, streamed output, background processes, the terminal, workspace
//! archives) again, with the sandboxes under gVisor's `runsc` on the engine that `SANDKEEPER_GVISOR_HOST` names (a
//! `DOCKER_HOST` URL; `.ci/gvisor.sh` starts such an engine beside the first one).

use std::env;

use crate::image::{self, Image};
use crate::{INSIDE_SANDBOX_SUITES, cargo, required, run_checked};

/// The variable that names the engine with `runsc` registered.
pub(crate) const HOST_VARIABLE: &str = "SANDKEEPER_GVISOR_HOST";

/// Runs the pass when an engine is named; without one it says that it skipped, or fails with
/// `SANDKEEPER_REQUIRE_GVISOR=1`.
pub(crate) fn pass() -> Result<(), String> {
    let Some(host) = env::var(HOST_VARIABLE).ok().filter(|host| !host.is_empty()) else {
        if required("SANDKEEPER_REQUIRE_GVISOR") {
            return Err(format!(
                "SANDKEEPER_REQUIRE_GVISOR=1 but {HOST_VARIABLE} names no engine (start one with \
                 `.ci/gvisor.sh start DIR`, which prints its URL)"
            ));
        }
        eprintln!(
            "xtask test: {HOST_VARIABLE} is not set: the tests under gVisor are left out \
             (`.ci/gvisor.sh start DIR` starts an engine for them)"
        );
        return Ok(());
    };
    let tag = Image::Sandbox.tag();
    image::copy_to_engine(tag, &host)?;
    eprintln!(
        "xtask test: the black-box tests of what runs inside a sandbox under gVisor ({host})"
    );
    run_checked(
        cargo()
            .args(["test", "--workspace", "--all-features", "--no-fail-fast"])
            .args(["--test", "blackbox", "--"])
            .args(INSIDE_SANDBOX_SUITES)
            .env("DOCKER_HOST", &host)
            .env("SANDKEEPER_TEST_IMAGE", tag)
            .env("SANDKEEPER_TEST_RUNTIME", "runsc"),
    )
    .map_err(|error| format!("under gVisor: {error}"))
}

/// The engine the gVisor benchmark runs on: the one `SANDKEEPER_GVISOR_HOST` names, else one
/// started here with `.ci/gvisor.sh` and stopped when dropped. `None` (said why) when neither.
pub(crate) fn bench_engine() -> Option<BenchEngine> {
    if let Some(host) = env::var(HOST_VARIABLE).ok().filter(|host| !host.is_empty()) {
        return Some(BenchEngine { host, started_in: None });
    }
    let dir = std::env::temp_dir().join(format!("sandkeeper-bench-gvisor-{}", std::process::id()));
    let script = crate::root().join(".ci/gvisor.sh");
    let started = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(&dir)
        .stderr(std::process::Stdio::inherit())
        .output();
    match started {
        Ok(output) if output.status.success() => {
            let host = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let engine = BenchEngine { host, started_in: Some(dir) };
            match image::copy_to_engine(Image::Sandbox.tag(), &engine.host) {
                Ok(()) => Some(engine),
                Err(error) => {
                    eprintln!("xtask bench: the gVisor benchmark is left out: {error}");
                    None
                }
            }
        }
        Ok(output) => {
            eprintln!(
                "xtask bench: {} could not start an engine ({})",
                script.display(),
                output.status
            );
            None
        }
        Err(error) => {
            eprintln!("xtask bench: cannot run {}: {error}", script.display());
            None
        }
    }
}

/// An engine with `runsc` registered, for the benchmark.
pub(crate) struct BenchEngine {
    pub(crate) host: String,
    /// The directory of the engine this process started (and stops when dropped).
    started_in: Option<std::path::PathBuf>,
}

impl Drop for BenchEngine {
    fn drop(&mut self) {
        if let Some(dir) = &self.started_in {
            let _ = std::process::Command::new("bash")
                .arg(crate::root().join(".ci/gvisor.sh"))
                .arg("stop")
                .arg(dir)
                .status();
        }
    }
}
