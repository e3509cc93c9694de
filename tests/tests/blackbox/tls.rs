//! The binary against a PostgreSQL server that serves TLS: a database URL whose `sslrootcert`
//! does not trust the server's certificate stops the start, saying so.
//!
//! The server is one of the test's own (`.ci/postgres.sh` with `PGTLS=1`, port 55473) with a
//! throwaway CA made by `openssl`. Without the PostgreSQL binaries or `openssl` the test says it
//! skipped; with `SANDKEEPER_REQUIRE_POSTGRES=1` it fails instead.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use sandkeeper_tests::TestEnv;
use tempfile::TempDir;

const PORT: u16 = 55473;

/// A PostgreSQL server with `ssl=on`, stopped (and its files removed) when dropped.
struct TlsPostgres {
    dir: TempDir,
}

impl TlsPostgres {
    fn start(test: &str) -> Option<Self> {
        let required = std::env::var("SANDKEEPER_REQUIRE_POSTGRES").is_ok_and(|value| value == "1");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let check = script("check", &dir);
        if !check.status.success() {
            let why = String::from_utf8_lossy(&check.stderr);
            assert!(!required, "{test}: SANDKEEPER_REQUIRE_POSTGRES=1 but {}", why.trim());
            println!("skipped {test}: {}", why.trim());
            return None;
        }
        let server = Self { dir };
        let out = script("start", &server.dir);
        assert!(
            out.status.success(),
            "the TLS PostgreSQL server did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(server)
    }

    fn url(&self, ca: &str) -> String {
        let ca = self.dir.path().join("tls").join(ca);
        format!(
            "postgres://postgres@127.0.0.1:{PORT}/postgres?sslmode=verify-full&sslrootcert={}",
            ca.display()
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        script("stop", &self.dir);
    }
}

/// `.ci/postgres.sh <command> <dir>` for the TLS server on [`PORT`].
fn script(command: &str, dir: &TempDir) -> Output {
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/postgres.sh"))
        .args([command, &dir.path().display().to_string()])
        .env("PGTLS", "1")
        .env("PGPORT", PORT.to_string())
        .output()
        .expect("run .ci/postgres.sh")
}

fn run(env: &TestEnv, subcommand: &str, args: &[&str]) -> Output {
    let mut command = env.command(subcommand);
    command.args(args).stdin(Stdio::null());
    command.output().expect("sandkeeper runs")
}

#[test]
fn a_database_certificate_from_an_untrusted_ca_stops_the_start() {
    let test = "a_database_certificate_from_an_untrusted_ca_stops_the_start";
    let Some(server) = TlsPostgres::start(test) else {
        return;
    };
    let env = TestEnv::new();

    // The CA that signed the server's certificate: the binary talks to the database over TLS.
    let trusted = run(&env, "migrate", &["--database-url", &server.url("ca.pem")]);
    let text = String::from_utf8_lossy(&trusted.stderr);
    assert_eq!(trusted.status.code(), Some(0), "migrate with the right CA:\n{text}");

    // Another CA: the start fails with exit 1, naming the setting and the untrusted certificate.
    let refused = run(
        &env,
        "serve",
        &["--listen", "127.0.0.1:0", "--database-url", &server.url("other-ca.pem")],
    );
    let text = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "serve with another CA:\n{text}");
    let last = text.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: --database-url: "),
        "the last words name the setting:\n{text}"
    );
    assert!(last.contains("certificate was not trusted"), "and the reason:\n{text}");
    assert!(last.contains("sslrootcert"), "and the URL parameter to look at:\n{text}");
}
