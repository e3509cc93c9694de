//! PostgreSQL over TLS: the URL's `sslmode` and `sslrootcert` decide whether the connection is
//! encrypted and whose certificate is trusted, with rustls (no OpenSSL in sandkeeper).
//!
//! The test starts a PostgreSQL server of its own with `ssl=on` (`.ci/postgres.sh` with
//! `PGTLS=1`, on a free port) and a throwaway CA made by `openssl` at test time. Without the
//! PostgreSQL binaries or `openssl` it says it skipped; with `SANDKEEPER_REQUIRE_POSTGRES=1` it
//! fails instead.

// The black-box harness's private cluster, without depending on the harness.
#[path = "../../../tests/src/cluster.rs"]
#[allow(dead_code, unreachable_pub)]
mod cluster;

use std::time::Duration;

use cluster::PrivateCluster;
use sandkeeper_adapters_sql::{ConnectError, SqlStore, StoreOptions};
use sqlx::{Connection, Row};

fn options() -> StoreOptions {
    StoreOptions { acquire_timeout: Duration::from_secs(10), ..StoreOptions::default() }
}

/// Whether the server sees the test's own connection on this URL as encrypted.
async fn encrypted(url: &str) -> bool {
    let mut connection = sqlx::PgConnection::connect(url).await.expect("a raw connection");
    let row = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .expect("pg_stat_ssl");
    let ssl: bool = row.get(0);
    connection.close().await.ok();
    ssl
}

async fn refused(url: &str) -> String {
    match SqlStore::connect(url, options()).await {
        Ok(_) => panic!("{url} connected although the certificate is not to be trusted"),
        Err(error) => {
            assert!(matches!(error, ConnectError::Unreachable { .. }), "{error:?}");
            error.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_and_sslrootcert_decide_encryption_and_trust() {
    let Some(server) =
        PrivateCluster::start_tls("sslmode_and_sslrootcert_decide_encryption_and_trust")
    else {
        return;
    };
    let port = server.port();
    let ca = server.ca("ca.pem");
    let other_ca = server.ca("other-ca.pem");

    // verify-full with the CA that signed the server's certificate: the store works, encrypted.
    for host in ["127.0.0.1", "localhost"] {
        let url = server.url_with(host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        let store = SqlStore::connect(&url, options()).await.expect("verify-full with the CA");
        store.migrate().await.expect("migrations over TLS");
        store.ping().await.expect("a store call over TLS");
        assert_eq!(store.sessions().count_running().await.expect("count over TLS"), 0);
        store.close().await;
        assert!(encrypted(&url).await, "{url} is not encrypted");
    }

    // A CA that did not sign it: refused, saying the certificate was not trusted.
    for mode in ["verify-full", "verify-ca"] {
        let url = server.url_with("127.0.0.1", &format!("sslmode={mode}&sslrootcert={other_ca}"));
        let message = refused(&url).await;
        assert!(message.contains("certificate was not trusted"), "{mode}: {message}");
        assert!(message.contains("sslrootcert"), "{mode}: {message}");
        assert!(message.contains(&format!(":{port}/postgres")), "names the database: {message}");
    }

    // A CA file that is not there is named, before any connection is tried.
    let missing = server.ca("absent.pem");
    let url = server.url_with("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={missing}"));
    match SqlStore::connect(&url, options()).await {
        Err(error @ ConnectError::InvalidUrl { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&format!("sslrootcert `{missing}` cannot be read")),
                "{message}"
            );
        }
        other => panic!("a missing sslrootcert gave {:?}", other.map(|_| "a store")),
    }

    // require encrypts without verifying: the test CA is in no trust store, yet it connects.
    let url = server.url_with("127.0.0.1", "sslmode=require");
    let store = SqlStore::connect(&url, options()).await.expect("require connects unverified");
    store.ping().await.expect("a store call with sslmode=require");
    store.close().await;
    assert!(encrypted(&url).await, "sslmode=require is not encrypted");

    // disable talks in the clear.
    let url = server.url_with("127.0.0.1", "sslmode=disable");
    let store = SqlStore::connect(&url, options()).await.expect("disable connects");
    store.ping().await.expect("a store call with sslmode=disable");
    store.close().await;
    assert!(!encrypted(&url).await, "sslmode=disable is encrypted");
}
