//! A private, throwaway PostgreSQL cluster that a test may stop and start again, made with the
//! repository's `.ci/postgres.sh` on a port of its own. The shared development server must never
//! be stopped by a test, hence a cluster per test.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The lowest port tried; the cluster takes the first free one of a random pick above it.
const BASE_PORT: u16 = 55500;

#[derive(Debug)]
pub(crate) struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/postgres.sh")
}

fn required() -> bool {
    std::env::var("SANDKEEPER_REQUIRE_POSTGRES").is_ok_and(|value| value == "1")
}

/// Why this machine cannot run a private cluster, if it cannot.
fn unavailable_because() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    let is_root = uid.is_some_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if !is_root {
        return Some(
            "a private PostgreSQL cluster needs root (to run initdb as `postgres`)".into(),
        );
    }
    let found = Command::new("sh")
        .args(["-c", "command -v initdb || ls /usr/lib/postgresql/*/bin/initdb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        return Some("initdb is not installed (Debian package `postgresql`)".into());
    }
    let user = Command::new("id").arg("postgres").stdout(Stdio::null()).status();
    if !user.is_ok_and(|status| status.success()) {
        return Some("there is no `postgres` user to run the cluster as".into());
    }
    None
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl PrivateCluster {
    /// Starts a fresh cluster, or says why it cannot: skipped with a message, unless
    /// `SANDKEEPER_REQUIRE_POSTGRES=1`, when it panics.
    pub(crate) fn start(test: &str) -> Option<Self> {
        if let Some(why) = unavailable_because() {
            assert!(!required(), "{test}: SANDKEEPER_REQUIRE_POSTGRES=1 but {why}");
            println!("skipped {test}: {why}");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("sandkeeper-pg-")
            .tempdir()
            .expect("a directory for the cluster");
        let offset = (uuid::Uuid::new_v4().as_u128() % 400) as u16;
        let port = (0..400)
            .map(|i| BASE_PORT + (offset + i) % 400)
            .find(|&port| port_is_free(port))
            .expect("a free port from 55500 to 55899");
        let cluster = Self { dir, port };
        let output = cluster.run("start");
        assert!(
            output.status.success(),
            "{test}: .ci/postgres.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(cluster)
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: sessions are ended, as in a restart by an operator).
    pub(crate) fn stop(&self) {
        let output = self.run("stop");
        assert!(output.status.success(), "stop: {}", String::from_utf8_lossy(&output.stderr));
        assert!(port_is_free(self.port), "PostgreSQL still listens on {} after stop", self.port);
    }

    /// Starts the same cluster again, on the same port, with its data.
    pub(crate) fn restart(&self) {
        let output = self.run("start");
        assert!(output.status.success(), "start: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn run(&self, command: &str) -> Output {
        Command::new("bash")
            .arg(script())
            .arg(command)
            .arg(self.dir.path())
            .env("PGPORT", self.port.to_string())
            .stdin(Stdio::null())
            .output()
            .expect(".ci/postgres.sh runs")
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.run("stop");
    }
}
