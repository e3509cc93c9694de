//! Fresh stores for tests: a SQLite file in a temporary directory, or a PostgreSQL scratch
//! schema that is dropped when the test ends, also when it fails.
#![allow(dead_code)] // each test crate uses a different part of this module

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sandkeeper_adapters_sql::{SqlStore, StoreOptions};
use sandkeeper_domain::EngineName;
use sandkeeper_ports::testkit::contract::{LeaseAging, LeaseSubject, Subject};
use sandkeeper_ports::{LifecycleLocker, SessionRepository};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tempfile::TempDir;

pub(crate) const REQUIRE_POSTGRES: &str = "SANDKEEPER_REQUIRE_POSTGRES";

/// A migrated SQLite store in a file of its own.
pub(crate) struct SqliteFixture {
    pub(crate) store: SqlStore,
    pub(crate) path: std::path::PathBuf,
    // Dropped after the store: the file outlives the pool.
    _dir: TempDir,
}

impl SqliteFixture {
    pub(crate) async fn new() -> Self {
        Self::with_options(StoreOptions::default()).await
    }

    pub(crate) async fn with_options(options: StoreOptions) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("sandkeeper.db");
        let store = SqlStore::connect(&format!("sqlite://{}", path.display()), options)
            .await
            .expect("SQLite store");
        store.migrate().await.expect("SQLite migrations");
        Self { store, path, _dir: dir }
    }

    /// Makes the database and its write-ahead log immutable (`chattr +i`, which refuses writes
    /// even to root) until the guard drops; `None` (after saying why) where that cannot be done.
    pub(crate) fn refuse_writes(&self) -> Option<Immutable> {
        let files = vec![self.path.clone(), self.path.with_extension("db-wal")];
        if !chattr("+i", &files) {
            chattr("-i", &files);
            eprintln!("skipped: `chattr +i` does not work here (it needs root and ext4-like)");
            return None;
        }
        if std::fs::OpenOptions::new().append(true).open(&self.path).is_ok() {
            chattr("-i", &files);
            eprintln!("skipped: `chattr +i` does not refuse writes here");
            return None;
        }
        Some(Immutable(files))
    }

    /// A second connection to the same file, for what the ports cannot do (aging a lease,
    /// reading a query plan).
    pub(crate) async fn raw(&self) -> sqlx::SqliteConnection {
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.path.display()))
            .await
            .expect("raw SQLite connection")
    }
}

/// The PostgreSQL URL to test against, or `None` (after printing why) when the tests should
/// skip. Panics instead when `SANDKEEPER_REQUIRE_POSTGRES=1`.
pub(crate) async fn postgres_url() -> Option<String> {
    let required = std::env::var(REQUIRE_POSTGRES).is_ok_and(|v| v == "1");
    let skip = |why: String| {
        if required {
            panic!("{REQUIRE_POSTGRES}=1 but {why}");
        }
        eprintln!("skipped: PostgreSQL test: {why}");
        None
    };
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => url,
        Ok(url) if !url.is_empty() => {
            return skip("DATABASE_URL is not a postgres:// URL".to_owned());
        }
        _ => {
            return skip(
                "DATABASE_URL is not set (e.g. postgres://postgres@127.0.0.1:55432/postgres)"
                    .to_owned(),
            );
        }
    };
    let options =
        StoreOptions { acquire_timeout: Duration::from_secs(3), ..StoreOptions::default() };
    match SqlStore::connect(&url, options).await {
        Ok(store) => {
            store.close().await;
            Some(url)
        }
        Err(error) => skip(format!("PostgreSQL is unreachable: {error}")),
    }
}

/// A migrated PostgreSQL store on a scratch schema of its own, dropped when this is dropped.
pub(crate) struct PostgresFixture {
    pub(crate) store: SqlStore,
    pub(crate) url: String,
    pub(crate) schema: String,
}

impl PostgresFixture {
    pub(crate) async fn new(url: &str) -> Self {
        Self::with_options(url, StoreOptions::default()).await
    }

    pub(crate) async fn with_options(url: &str, options: StoreOptions) -> Self {
        let store = SqlStore::connect_scratch_schema(url, options).await.expect("scratch schema");
        let schema = store.postgres_schema().expect("a scratch store has a schema").to_owned();
        Self { store, url: url.to_owned(), schema }
    }

    /// Another store on the same schema: another replica.
    pub(crate) async fn replica(&self, options: StoreOptions) -> SqlStore {
        let options = StoreOptions { postgres_schema: Some(self.schema.clone()), ..options };
        SqlStore::connect(&self.url, options).await.expect("replica store")
    }

    /// A connection of the test's own, on the scratch schema.
    pub(crate) async fn raw(&self) -> sqlx::PgConnection {
        raw_postgres(&self.url, Some(&self.schema)).await
    }
}

pub(crate) async fn raw_postgres(url: &str, schema: Option<&str>) -> sqlx::PgConnection {
    let mut options = PgConnectOptions::from_str(url).expect("a PostgreSQL URL");
    if let Some(schema) = schema {
        options = options.options([("search_path", schema)]);
    }
    options.connect().await.expect("raw PostgreSQL connection")
}

impl Drop for PostgresFixture {
    fn drop(&mut self) {
        // Async work cannot run in `drop`; a thread of its own with its own runtime can, also
        // while a failed test unwinds.
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut connection = raw_postgres(&url, None).await;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&mut connection)
                    .await
                    .map(drop)
                    .map_err(std::io::Error::other)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop scratch schema {}: {dropped:?}", self.schema);
        }
    }
}

struct SqliteAging(std::path::PathBuf);

#[async_trait]
impl LeaseAging for SqliteAging {
    async fn age(&self, name: &str, by: Duration) {
        let mut raw = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.0.display()))
            .await
            .unwrap();
        let micros = i64::try_from(by.as_micros()).unwrap();
        sqlx::query(
            "UPDATE maintenance_leases SET lease_expires_at = lease_expires_at - ?2, \
             last_completed_at = last_completed_at - ?2 WHERE name = ?1",
        )
        .bind(name)
        .bind(micros)
        .execute(&mut raw)
        .await
        .unwrap();
    }
}

struct PostgresAging {
    url: String,
    schema: String,
}

#[async_trait]
impl LeaseAging for PostgresAging {
    async fn age(&self, name: &str, by: Duration) {
        let mut raw = raw_postgres(&self.url, Some(&self.schema)).await;
        let by = sqlx::postgres::types::PgInterval {
            months: 0,
            days: 0,
            microseconds: i64::try_from(by.as_micros()).unwrap(),
        };
        sqlx::query(
            "UPDATE maintenance_leases SET lease_expires_at = lease_expires_at - $2, \
             last_completed_at = last_completed_at - $2 WHERE name = $1",
        )
        .bind(name)
        .bind(by)
        .execute(&mut raw)
        .await
        .unwrap();
    }
}

pub(crate) async fn sqlite_repository() -> Subject<dyn SessionRepository> {
    let fixture = SqliteFixture::new().await;
    Subject::keeping(fixture.store.sessions(), fixture)
}

pub(crate) async fn sqlite_leases() -> LeaseSubject {
    let fixture = SqliteFixture::new().await;
    let aging = Arc::new(SqliteAging(fixture.path.clone()));
    LeaseSubject::new(Subject::keeping(fixture.store.leases(), fixture), aging)
}

async fn memory_store() -> SqlStore {
    let store = SqlStore::connect("sqlite::memory:", StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store
}

pub(crate) async fn sqlite_memory_repository() -> Subject<dyn SessionRepository> {
    let store = memory_store().await;
    Subject::keeping(store.sessions(), store)
}

async fn postgres_fixture() -> PostgresFixture {
    let url = std::env::var("DATABASE_URL").expect("checked by postgres_url() first");
    PostgresFixture::new(&url).await
}

pub(crate) async fn postgres_repository() -> Subject<dyn SessionRepository> {
    let fixture = postgres_fixture().await;
    Subject::keeping(fixture.store.sessions(), fixture)
}

pub(crate) async fn postgres_leases() -> LeaseSubject {
    let fixture = postgres_fixture().await;
    let aging =
        Arc::new(PostgresAging { url: fixture.url.clone(), schema: fixture.schema.clone() });
    LeaseSubject::new(Subject::keeping(fixture.store.leases(), fixture), aging)
}

pub(crate) async fn postgres_locker() -> Subject<dyn LifecycleLocker> {
    let fixture = postgres_fixture().await;
    let locker = fixture.store.locker().expect("PostgreSQL has a locker");
    Subject::keeping(locker, fixture)
}

/// Files made immutable by [`SqliteFixture::refuse_writes`], writable again when dropped (also
/// when a test fails).
pub(crate) struct Immutable(Vec<std::path::PathBuf>);

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, files: &[std::path::PathBuf]) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .args(files)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

pub(crate) async fn postgres_workspaces() -> Subject<dyn sandkeeper_ports::WorkspaceStore> {
    let fixture = postgres_fixture().await;
    let store = fixture.store.workspaces().expect("PostgreSQL has a workspace store");
    Subject::keeping(store, fixture)
}

pub(crate) async fn sqlite_pool() -> Subject<dyn sandkeeper_ports::PoolStore> {
    let fixture = SqliteFixture::new().await;
    Subject::keeping(fixture.store.pool(&EngineName::default()), fixture)
}

pub(crate) async fn postgres_pool() -> Subject<dyn sandkeeper_ports::PoolStore> {
    let fixture = postgres_fixture().await;
    Subject::keeping(fixture.store.pool(&EngineName::default()), fixture)
}
