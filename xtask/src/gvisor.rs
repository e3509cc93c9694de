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
