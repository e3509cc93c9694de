//! The binary against a PostgreSQL server that serves TLS: a database URL whose `sslrootcert`
//! does not trust the server's certificate stops the start, saying so.
//!
//! The server is one of the test's own (`.ci/postgres.sh` with `PGTLS=1`, on a free port) with a
//! throwaway CA made by `openssl`. Without the PostgreSQL binaries or `openssl` the test says it
//! skipped; with `SANDKEEPER_REQUIRE_POSTGRES=1` it fails instead.

use std::process::{Output, Stdio};

use sandkeeper_tests::{PrivateCluster, TestEnv, or_skip, test_name};

/// The URL of `server` that trusts only the CA file `ca` (`verify-full`).
fn url(server: &PrivateCluster, ca: &str) -> String {
    server.url_with("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", server.ca(ca)))
}

fn run(env: &TestEnv, subcommand: &str, args: &[&str]) -> Output {
    let mut command = env.command(subcommand);
    command.args(args).stdin(Stdio::null());
    command.output().expect("sandkeeper runs")
}

#[test]
fn a_database_certificate_from_an_untrusted_ca_stops_the_start() {
    let server = or_skip!(PrivateCluster::start_tls(&test_name()));
    let env = TestEnv::new();

    // The CA that signed the server's certificate: the binary talks to the database over TLS.
    let trusted = run(&env, "migrate", &["--database-url", &url(&server, "ca.pem")]);
    let text = String::from_utf8_lossy(&trusted.stderr);
    assert_eq!(trusted.status.code(), Some(0), "migrate with the right CA:\n{text}");

    // Another CA: the start fails with exit 1, naming the setting and the untrusted certificate.
    let refused = run(
        &env,
        "serve",
        &["--listen", "127.0.0.1:0", "--database-url", &url(&server, "other-ca.pem")],
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
