//! A second Docker engine of a test's own, beside the shared one, made with the repository's
//! `.ci/gvisor.sh` (its own socket, data root and exec root, no bridge, no iptables, gVisor's
//! `runsc` registered as a runtime), for the tests of a deployment over several engines. It can
//! be killed as a crash would (`kill -9` of its dockerd) and started again on the same
//! directories; it is stopped, and its files removed, when dropped, also when the test fails.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a killed engine may take to stop answering.
const KILL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct PrivateEngine {
    dir: tempfile::TempDir,
    host: String,
}

impl PrivateEngine {
    /// A fresh engine with `images` copied from the shared engine into it. `None` (after
    /// saying why) where this machine cannot run one (not root, no `dockerd`, no `runsc`),
    /// unless `SANDKEEPER_REQUIRE_GVISOR=1` or `SANDKEEPER_REQUIRE_DOCKER=1`, when the test
    /// fails instead.
    pub fn start(test: &str, images: &[&str]) -> Option<Self> {
        if let Some(why) = missing_prerequisite() {
            let required = ["SANDKEEPER_REQUIRE_GVISOR", "SANDKEEPER_REQUIRE_DOCKER"]
                .iter()
                .any(|variable| std::env::var(variable).is_ok_and(|value| value == "1"));
            assert!(!required, "{test}: a second Docker engine is required but {why}");
            println!("skipped {test}: {why}");
            return None;
        }
        // A short path: a unix socket's path is limited to about 100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("sk-engine-")
            .tempdir_in("/tmp")
            .expect("a directory for the engine");
        let host = format!("unix://{}/docker.sock", dir.path().display());
        let engine = Self { dir, host };
        engine.start_again();
        let output = engine.run("load", images);
        assert!(
            output.status.success(),
            "{test}: .ci/gvisor.sh load failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(engine)
    }

    /// The engine's address, as `DOCKER_HOST` and `--engine` take it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Kills its dockerd with SIGKILL, as a crash of the host's engine would, and waits until
    /// the engine no longer answers.
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("docker.pid"))
            .expect("the engine's pid file");
        let killed = Command::new("kill").args(["-9", pid.trim()]).status().expect("kill runs");
        assert!(killed.success(), "kill -9 {} failed", pid.trim());
        let started = Instant::now();
        while self.answers() {
            assert!(started.elapsed() < KILL_TIMEOUT, "the killed engine still answers");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Until its parent reaps it, the dead dockerd's pid still exists, and a dockerd started
        // on the same pid file refuses to start.
        let process = Path::new("/proc").join(pid.trim());
        while process.exists() {
            assert!(started.elapsed() < KILL_TIMEOUT, "the killed dockerd was never reaped");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the engine again on the same directories (its containers are still there).
    pub fn start_again(&self) {
        let output = self.run("start", &[]);
        assert!(
            output.status.success(),
            ".ci/gvisor.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Whether the engine answers `docker version`.
    pub fn answers(&self) -> bool {
        self.docker(&["version", "--format", "{{.Server.Version}}"]).status.success()
    }

    /// The ids of the containers on this engine that carry `label` (`key=value`): running
    /// ones, or all with `all`.
    pub fn containers(&self, label: &str, all: bool) -> Vec<String> {
        let filter = format!("label={label}");
        let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
        if all {
            args.push("-a");
        }
        let output = self.docker(&args);
        assert!(output.status.success(), "docker ps: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).split_whitespace().map(str::to_owned).collect()
    }

    /// `docker <args>` against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .output()
            .expect("the docker CLI runs")
    }

    /// `.ci/gvisor.sh <command> <dir> <args>` for this engine.
    fn run(&self, command: &str, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(crate::cluster::ci_script("gvisor.sh"))
            .arg(command)
            .arg(self.dir.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect(".ci/gvisor.sh runs")
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        let _ = self.run("stop", &[]);
    }
}

/// Why no engine can be started here, if so.
fn missing_prerequisite() -> Option<String> {
    let root = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        return Some("starting a Docker engine needs root".into());
    }
    for tool in ["dockerd", "runsc"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            return Some(format!(
                "`{tool}` is not installed (.ci/gvisor.sh installs Debian's runsc; dockerd comes \
                 with Docker)"
            ));
        }
    }
    None
}
