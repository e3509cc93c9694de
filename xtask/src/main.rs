//! sandkeeper's development tasks, run as `cargo xtask <task>`.
//!
//! Each task is a small function that shells out to cargo, docker or the test binaries, so that
//! the README's commands and CI run exactly the same steps.

mod deps;
mod gvisor;
mod image;
mod pyclient;
mod schemathesis;
mod venv;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use image::Image;

const USAGE: &str = "\
usage: cargo xtask <task> [args]

tasks:
  test     run every test this machine can run (unit, contract, SQLite always; PostgreSQL when
           DATABASE_URL is set; Docker when an engine answers; Schemathesis against
           docs/openapi.yaml, installed from PyPI into target/schemathesis on first use). With
           SANDKEEPER_REQUIRE_DOCKER=1 / SANDKEEPER_REQUIRE_POSTGRES=1 /
           SANDKEEPER_REQUIRE_SCHEMATHESIS=1 a test that cannot have them fails instead of
           skipping. With Docker it builds every image below and, after the full run on the
           default image, runs the black-box tests of what runs inside a sandbox (exec, files,
           timeouts, streams, processes, terminal, workspaces) again on the bash and
           python images, and under gVisor on the engine SANDKEEPER_GVISOR_HOST names (a
           DOCKER_HOST URL; `.ci/gvisor.sh start DIR` starts one; SANDKEEPER_REQUIRE_GVISOR=1
           fails without it). Then the Python client: its pinned tools installed from PyPI into
           target/pyclient-venv, its wheel built, mypy --strict, and its pytest suite against
           the built binary (clients/python/README.md).
  lint     rustfmt check, clippy with warnings denied, the crate dependency rule, and cargo-deny
           (bans, licenses, sources) when it is installed
  image    build sandbox images without a registry (add --force to rebuild):
             image            the default, sandkeeper/sandbox:latest (static busybox)
             image bash       sandkeeper/bash:latest (the default plus bash-static as /bin/sh)
             image python     sandkeeper/python:bookworm (Debian bookworm by debootstrap with
                              python3, venv, pip and procps; needs root; the mirror is apt's, or
                              SANDKEEPER_DEBIAN_MIRROR)
             image all        the three
  run      build the image if missing and start `sandkeeper serve` with its defaults
           (extra args are passed to `sandkeeper serve`)
  bench    run the benchmarks (release build) and write docs/benchmarks.md; the exec benchmark
           also runs on sandkeeper/python:bookworm when that image can be built
  chaos    the crash-consistency run: SIGKILL the server at random moments under load, recover,
           and check that the store and Docker agree (docs/reliability.md). Needs Docker. Args:
           --cycles N (default 12), --chats M (default 6), --seed S (printed by every run; also
           SANDKEEPER_CHAOS_SEED). `cargo xtask test` runs a 3-cycle form of it.
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match task {
        "test" => test(rest),
        "lint" => lint(),
        "image" => image::task(rest),
        "run" => run(rest),
        "bench" => bench(rest),
        "chaos" => chaos(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown task `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {task}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn cargo() -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.current_dir(root());
    command
}

/// Runs a command, failing with its rendering when it does not succeed.
fn run_checked(command: &mut Command) -> Result<(), String> {
    eprintln!("$ {}", render(command));
    let status = command.status().map_err(|e| format!("cannot start {}: {e}", render(command)))?;
    if status.success() { Ok(()) } else { Err(format!("`{}` failed ({status})", render(command))) }
}

fn render(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

fn required(variable: &str) -> bool {
    env::var(variable).is_ok_and(|value| value == "1")
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The black-box suites of what runs inside a sandbox (sandkeeper's scripts under the image's
/// shell and tools), run again on each image of the matrix: commands, file transfers and
/// timeouts, streamed output, background processes, the terminal, workspace archives.
pub(crate) const INSIDE_SANDBOX_SUITES: [&str; 5] =
    ["exec::", "streams::", "processes::", "terminal::", "workspaces::"];

fn test(extra: &[String]) -> Result<(), String> {
    // The images the black-box exec tests run on again after the full run.
    let mut matrix = Vec::new();
    if docker_answers() {
        let id = Image::Sandbox.build(false)?;
        eprintln!("xtask test: Docker answers; sandbox image {id}");
        for image in [Image::Bash, Image::Python] {
            match image.build(false) {
                Ok(id) => {
                    eprintln!("xtask test: image {} {id}", image.tag());
                    matrix.push(image);
                }
                Err(error) if required("SANDKEEPER_REQUIRE_DOCKER") => {
                    return Err(format!(
                        "SANDKEEPER_REQUIRE_DOCKER=1 but image {} cannot be built: {error}",
                        image.tag()
                    ));
                }
                Err(error) => eprintln!(
                    "xtask test: image {} cannot be built, the tests on it will skip: {error}",
                    image.tag()
                ),
            }
        }
    } else if required("SANDKEEPER_REQUIRE_DOCKER") {
        return Err(
            "SANDKEEPER_REQUIRE_DOCKER=1 but no Docker engine answers `docker version`".into()
        );
    } else {
        eprintln!("xtask test: no Docker engine answers: the Docker tests will say they skipped");
    }
    match env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => {
            eprintln!("xtask test: PostgreSQL tests use DATABASE_URL");
        }
        _ if required("SANDKEEPER_REQUIRE_POSTGRES") => {
            return Err(
                "SANDKEEPER_REQUIRE_POSTGRES=1 but DATABASE_URL is not a postgres:// URL".into()
            );
        }
        _ => eprintln!(
            "xtask test: DATABASE_URL is not set: the PostgreSQL tests will say they skipped"
        ),
    }
    let mut full = cargo();
    match schemathesis::ensure(&root().join("target")) {
        Ok(binary) => {
            full.env("SANDKEEPER_SCHEMATHESIS", binary);
        }
        Err(message) if required("SANDKEEPER_REQUIRE_SCHEMATHESIS") => return Err(message),
        Err(message) => eprintln!("xtask test: {message}: the Schemathesis test will skip"),
    }
    let mut failed = Vec::new();
    eprintln!("xtask test: the full run, on the default image {}", image::IMAGE);
    if let Err(error) = run_checked(
        full.args(["test", "--workspace", "--all-features", "--no-fail-fast"]).args(extra),
    ) {
        failed.push(error);
    }
    for image in matrix {
        eprintln!(
            "xtask test: the black-box tests of what runs inside a sandbox on image {}",
            image.tag()
        );
        // The same feature set as the full run, so nothing is compiled again.
        let pass = run_checked(
            cargo()
                .args(["test", "--workspace", "--all-features", "--no-fail-fast"])
                .args(["--test", "blackbox", "--"])
                .args(INSIDE_SANDBOX_SUITES)
                .env("SANDKEEPER_TEST_IMAGE", image.tag()),
        );
        if let Err(error) = pass {
            failed.push(format!("on image {}: {error}", image.tag()));
        }
    }
    if let Err(error) = gvisor::pass() {
        failed.push(error);
    }
    eprintln!("xtask test: the Python client (clients/python) against the built binary");
    if let Err(error) = pyclient::check(&root()) {
        failed.push(format!("the Python client: {error}"));
    }
    if failed.is_empty() { Ok(()) } else { Err(failed.join("\n")) }
}

fn lint() -> Result<(), String> {
    run_checked(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_checked(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    deps::check(&root())?;
    eprintln!("xtask lint: the crate dependency rule holds");
    let deny_installed = Command::new("cargo")
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if deny_installed {
        run_checked(cargo().args(["deny", "check", "bans", "licenses", "sources"]))?;
    } else {
        eprintln!("xtask lint: cargo-deny is not installed; skipping bans/licenses/sources");
    }
    Ok(())
}

fn run(extra: &[String]) -> Result<(), String> {
    image::build_image(false)?;
    run_checked(
        cargo()
            .args([
                "run",
                "--release",
                "--package",
                "sandkeeper-app",
                "--bin",
                "sandkeeper",
                "--",
                "serve",
            ])
            .args(extra),
    )
}

fn bench(extra: &[String]) -> Result<(), String> {
    if docker_answers() {
        Image::Sandbox.build(false)?;
        if let Err(error) = Image::Python.build(false) {
            eprintln!(
                "xtask bench: {} cannot be built, the exec benchmark leaves it out: {error}",
                Image::Python.tag()
            );
        }
    } else {
        eprintln!("xtask bench: no Docker engine answers: the Docker benchmarks will fail to run");
    }
    if !env::var("DATABASE_URL").is_ok_and(|url| url.starts_with("postgres")) {
        eprintln!(
            "xtask bench: DATABASE_URL is not a postgres:// URL: the PostgreSQL expiry scan is \
             left out"
        );
    }
    // The API benchmarks drive the release binary, built from this tree first.
    run_checked(cargo().args([
        "build",
        "--release",
        "--package",
        "sandkeeper-app",
        "--bin",
        "sandkeeper",
    ]))?;
    // Extra args are benchmark names to run alone (see `--help`); such a partial run prints
    // its table but leaves docs/benchmarks.md as it was.
    let out = root().join("docs/benchmarks.md");
    let mut bench = cargo();
    bench.args(["run", "--release", "--package", "sandkeeper-bench", "--", "--out"]).arg(out);
    // The gVisor benchmark's engine, started for this run unless one is named.
    let gvisor_engine = gvisor::bench_engine();
    if let Some(engine) = &gvisor_engine {
        bench.env(gvisor::HOST_VARIABLE, &engine.host);
    }
    run_checked(bench.args(extra))
}

fn chaos(extra: &[String]) -> Result<(), String> {
    if !docker_answers() {
        return Err("no Docker engine answers `docker version`: the chaos run needs one".into());
    }
    image::build_image(false)?;
    run_checked(cargo().args(["build", "--package", "sandkeeper-app", "--bin", "sandkeeper"]))?;
    // The chaos binary finds the server next to itself in the same target directory.
    run_checked(
        cargo().args(["run", "--package", "sandkeeper-tests", "--bin", "chaos", "--"]).args(extra),
    )
}
