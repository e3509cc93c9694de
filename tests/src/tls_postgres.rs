//! A PostgreSQL server of a test's own that serves TLS: `.ci/postgres.sh` with `PGTLS=1` on a
//! port of the test's choosing, with a throwaway CA (`ca.pem`) that signed the server's
//! certificate and an unrelated one (`other-ca.pem`). Stopped, and its files removed, when
//! dropped, also when the test fails.
//!
//! The binary's TLS test uses it from this harness; the SQL adapter's TLS test includes this
//! file (`#[path]`), as the Docker adapter's tests include the image builder of xtask.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

#[derive(Debug)]
pub struct TlsPostgres {
    dir: TempDir,
    port: u16,
}

impl TlsPostgres {
    /// The server on `port`; `None` (after saying why) where it cannot be had here (no
    /// PostgreSQL binaries, no `openssl`, not root), unless `SANDKEEPER_REQUIRE_POSTGRES=1`,
    /// when the test fails instead.
    pub fn start(test: &str, port: u16) -> Option<Self> {
        let server = Self { dir: tempfile::tempdir().expect("a temporary directory"), port };
        let check = server.script("check");
        if !check.status.success() {
            let why = String::from_utf8_lossy(&check.stderr);
            let required =
                std::env::var("SANDKEEPER_REQUIRE_POSTGRES").is_ok_and(|value| value == "1");
            assert!(!required, "{test}: SANDKEEPER_REQUIRE_POSTGRES=1 but {}", why.trim());
            println!("skipped {test}: {}", why.trim());
            return None;
        }
        let out = server.script("start");
        assert!(
            out.status.success(),
            "the TLS PostgreSQL server did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(server)
    }

    /// The path of the CA file `name` (`ca.pem`, `other-ca.pem`, or one that does not exist).
    pub fn ca(&self, name: &str) -> String {
        self.dir.path().join("tls").join(name).display().to_string()
    }

    /// The URL of the server's `postgres` database at `host`, with `query` (`sslmode=...`).
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    /// `.ci/postgres.sh <command> <dir>` for this server.
    fn script(&self, command: &str) -> Output {
        Command::new("bash")
            .arg(script_path())
            .args([command, &self.dir.path().display().to_string()])
            .env("PGTLS", "1")
            .env("PGPORT", self.port.to_string())
            .output()
            .expect("run .ci/postgres.sh")
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        self.script("stop");
    }
}

/// `.ci/postgres.sh`, found from the crate of the test that includes this file.
fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join(".ci/postgres.sh"))
        .find(|script| script.is_file())
        .expect(".ci/postgres.sh in a directory above the crate")
}
