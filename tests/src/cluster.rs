//! A throwaway PostgreSQL cluster of a test's own, made with the repository's `.ci/postgres.sh`
//! on a port of its own: for a test that stops and starts the server (the shared development
//! server must never be stopped by a test), or one that needs it to serve TLS. Stopped, and its
//! files removed, when dropped, also when the test fails.
//!
//! The black-box tests use it from this harness; the SQL adapter's TLS test includes this file
//! (`#[path]`), as the Docker adapter's tests include the image builder of xtask.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The lowest port a private cluster tries; it takes the first free one of a random pick of the
/// `PORTS` above it. Below Linux's ephemeral range (32768 and up), so that no outgoing
/// connection of the machine holds it for a moment.
const BASE_PORT: u16 = 25500;
const PORTS: u16 = 400;

#[derive(Debug)]
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
    tls: bool,
}

impl PrivateCluster {
    /// A fresh cluster on a free port.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_on(test, free_port(), false)
    }

    /// A fresh cluster on a free port that also serves TLS, with a throwaway CA (`ca.pem`) that
    /// signed its certificate and an unrelated one (`other-ca.pem`).
    pub fn start_tls(test: &str) -> Option<Self> {
        Self::start_on(test, free_port(), true)
    }

    /// `None` (after saying why) where this machine cannot run a cluster (no PostgreSQL
    /// binaries, no `openssl` for TLS, not root), unless `SANDKEEPER_REQUIRE_POSTGRES=1`, when
    /// the test fails instead.
    fn start_on(test: &str, port: u16, tls: bool) -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix("sandkeeper-pg-")
            .tempdir()
            .expect("a directory for the cluster");
        let cluster = Self { dir, port, tls };
        let check = cluster.run("check");
        if !check.status.success() {
            let why = String::from_utf8_lossy(&check.stderr);
            let required =
                std::env::var("SANDKEEPER_REQUIRE_POSTGRES").is_ok_and(|value| value == "1");
            assert!(!required, "{test}: SANDKEEPER_REQUIRE_POSTGRES=1 but {}", why.trim());
            println!("skipped {test}: {}", why.trim());
            return None;
        }
        let output = cluster.run("start");
        assert!(
            output.status.success(),
            "{test}: .ci/postgres.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(cluster)
    }

    /// The URL of the `postgres` database.
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL of the `postgres` database at `host`, with `query` (`sslmode=...`).
    pub fn url_with(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    /// The path of the CA file `name` of a TLS cluster (`ca.pem`, `other-ca.pem`, or one that
    /// does not exist).
    pub fn ca(&self, name: &str) -> String {
        self.dir.path().join("tls").join(name).display().to_string()
    }

    /// Stops the server (fast shutdown: sessions are ended, as in a restart by an operator).
    pub fn stop(&self) {
        let output = self.run("stop");
        assert!(output.status.success(), "stop: {}", String::from_utf8_lossy(&output.stderr));
        assert!(port_is_free(self.port), "PostgreSQL still listens on {} after stop", self.port);
    }

    /// Starts the same cluster again, on the same port, with its data.
    pub fn restart(&self) {
        let output = self.run("start");
        assert!(output.status.success(), "start: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// `.ci/postgres.sh <command> <dir>` for this cluster.
    fn run(&self, command: &str) -> Output {
        Command::new("bash")
            .arg(ci_script("postgres.sh"))
            .arg(command)
            .arg(self.dir.path())
            .env("PGPORT", self.port.to_string())
            .env("PGTLS", if self.tls { "1" } else { "0" })
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

/// The repository's `.ci/<name>` (`postgres.sh`, `gvisor.sh`), found from the crate of the test
/// that includes this file.
pub(crate) fn ci_script(name: &str) -> PathBuf {
    let path = Path::new(".ci").join(name);
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join(&path))
        .find(|script| script.is_file())
        .unwrap_or_else(|| panic!("{} in a directory above the crate", path.display()))
}

/// A port no one listens on, from a random place in the cluster's range, so that tests started
/// together rarely try the same one.
fn free_port() -> u16 {
    let offset = (uuid::Uuid::new_v4().as_u128() % u128::from(PORTS)) as u16;
    (0..PORTS)
        .map(|i| BASE_PORT + (offset + i) % PORTS)
        .find(|&port| port_is_free(port))
        .unwrap_or_else(|| panic!("no free port from {BASE_PORT} to {}", BASE_PORT + PORTS - 1))
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}
