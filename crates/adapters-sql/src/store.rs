//! [`SqlStore`]: the one entry point of this crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sandkeeper_domain::{EngineName, SandboxSession};
use sandkeeper_ports::{
    LifecycleLocker, MaintenanceLeases, PoolStore, Report, SaveError, SessionRepository,
    StoreError, WorkspaceStore,
};
use sqlx::migrate::{MigrateError, Migrator};

use crate::advisory::PgAdvisoryLocker;
use crate::error::{ConnectError, ErrorContext};
use crate::leases::SqlLeases;
use crate::pool::SqlPool;
use crate::postgres::{PgDialect, PgPools};
use crate::sessions::SqlSessions;
use crate::sqlite::SqliteDialect;
use crate::url::{ACCEPTED_URLS, backend_of, password_of, redact_url};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`SqlStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// One SQLite file (or memory): the embedded default, for a single replica.
    Sqlite,
    /// A PostgreSQL server: shared by several replicas.
    Postgres,
}

sandkeeper_domain::spelling!(Backend { Sqlite => "sqlite", Postgres => "postgres" });

/// How a [`SqlStore`] connects. Start from `StoreOptions::default()` and change what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most connections open for queries. An in-memory SQLite store always uses exactly one.
    pub max_connections: u32,
    /// PostgreSQL: most connections held for chat locks, one per chat locked (or awaited) by
    /// this process at a time. A lock waits up to `acquire_timeout` for one of them.
    pub max_lock_connections: u32,
    /// How long to wait for a connection, and for the first one at `connect`, before failing
    /// with "unavailable". Keeps a down database from hanging requests.
    pub acquire_timeout: Duration,
    /// SQLite: how long a write waits for another connection's write lock.
    pub sqlite_busy_timeout: Duration,
    /// SQLite: [`SqlStore::ping`] reports a file that refused the last write as unavailable; when
    /// no write was tried for this long, a ping writes a probe row to find out (at most one
    /// probe per interval).
    pub sqlite_write_probe_interval: Duration,
    /// PostgreSQL: the schema the tables live in, created by [`SqlStore::migrate`] if missing.
    /// `None` uses the server's `search_path` (normally `public`). Letters, digits and `_` only.
    pub postgres_schema: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            max_lock_connections: 32,
            acquire_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
            sqlite_write_probe_interval: Duration::from_secs(5),
            postgres_schema: None,
        }
    }
}

/// The SQL store: sessions, maintenance leases and (on PostgreSQL) the cross-replica chat lock,
/// on SQLite or PostgreSQL as the URL says. Cheap to clone; clones share the pools.
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<ErrorContext>,
    pools: Pools,
    schema: Option<String>,
    /// Made by `connect_scratch_schema`: `drop_scratch_schema` may drop it.
    scratch: bool,
}

enum Pools {
    Sqlite(Arc<SqliteDialect>),
    Postgres { db: Arc<PgDialect>, locker: Arc<PgAdvisoryLocker> },
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend())
            .field("url", &self.inner.ctx.url)
            .field("postgres_schema", &self.inner.schema)
            .finish()
    }
}

impl SqlStore {
    /// Connects to `sqlite://PATH` (created if missing unless the URL says `mode=...`; WAL,
    /// busy timeout and foreign keys on), `sqlite::memory:`, or `postgres://...`, and checks that
    /// the database answers within `options.acquire_timeout`. Does not migrate: call
    /// [`SqlStore::migrate`].
    pub async fn connect(url: &str, options: StoreOptions) -> Result<SqlStore, ConnectError> {
        let masked = redact_url(url.trim());
        let backend = backend_of(url).map_err(|reason| ConnectError::InvalidUrl {
            url: masked.clone(),
            reason,
            accepted: ACCEPTED_URLS,
        })?;
        let ctx = Arc::new(ErrorContext {
            url: masked,
            password: password_of(url.trim()),
            acquire_timeout: options.acquire_timeout,
        });
        // Schemes are case-insensitive; the drivers' parsers are not.
        let url = url.trim();
        let scheme_len = url.find(':').unwrap_or(0);
        let url = format!("{}{}", url[..scheme_len].to_ascii_lowercase(), &url[scheme_len..]);
        let (pools, schema) = match backend {
            Backend::Sqlite => {
                if options.postgres_schema.is_some() {
                    return Err(ConnectError::InvalidOptions {
                        url: ctx.url.clone(),
                        reason: "postgres_schema is for PostgreSQL; leave it unset for SQLite"
                            .to_owned(),
                    });
                }
                let db = crate::sqlite::connect(
                    &url,
                    options.max_connections,
                    options.acquire_timeout,
                    options.sqlite_busy_timeout,
                    options.sqlite_write_probe_interval,
                    ctx.clone(),
                )
                .await?;
                (Pools::Sqlite(Arc::new(db)), None)
            }
            Backend::Postgres => {
                let pools = PgPools {
                    max_connections: options.max_connections,
                    max_lock_connections: options.max_lock_connections,
                    acquire_timeout: options.acquire_timeout,
                    schema: options.postgres_schema.clone(),
                };
                let (db, locker) = crate::postgres::connect(&url, &pools, ctx.clone()).await?;
                let pools = Pools::Postgres { db: Arc::new(db), locker: Arc::new(locker) };
                (pools, options.postgres_schema)
            }
        };
        Ok(SqlStore { inner: Arc::new(Inner { ctx, pools, schema, scratch: false }) })
    }

    /// Connects to PostgreSQL at `url` on a new schema of its own (`sandkeeper_scratch_<uuid>`),
    /// migrated and empty: a database of its own, cheaply, for a test or a benchmark. Drop it
    /// with [`SqlStore::drop_scratch_schema`]. `options.postgres_schema` is ignored.
    pub async fn connect_scratch_schema(
        url: &str,
        options: StoreOptions,
    ) -> Result<SqlStore, ConnectError> {
        let masked = redact_url(url.trim());
        if backend_of(url) != Ok(Backend::Postgres) {
            return Err(ConnectError::InvalidUrl {
                url: masked,
                reason: "a scratch schema needs a postgres:// URL".to_owned(),
                accepted: ACCEPTED_URLS,
            });
        }
        let schema = format!("sandkeeper_scratch_{}", uuid::Uuid::new_v4().simple());
        let options = StoreOptions { postgres_schema: Some(schema), ..options };
        let mut store = Self::connect(url, options).await?;
        if let Err(error) = store.migrate().await {
            let reason = Report(&error).to_string();
            // The schema may exist half-made; it is ours, so remove it.
            let _ = store.drop_schema_now().await;
            return Err(ConnectError::Setup { url: masked, reason });
        }
        Arc::get_mut(&mut store.inner).expect("the store was just made").scratch = true;
        Ok(store)
    }

    /// Drops the schema made by [`SqlStore::connect_scratch_schema`], with everything in it,
    /// and closes the store. Refuses for any other store.
    pub async fn drop_scratch_schema(self) -> Result<(), StoreError> {
        if !self.inner.scratch {
            return Err(StoreError::Failed(format!(
                "the store for `{}` was not made by connect_scratch_schema; refusing to drop its schema",
                self.inner.ctx.url
            ).into()));
        }
        let dropped = self.drop_schema_now().await;
        self.close().await;
        dropped
    }

    async fn drop_schema_now(&self) -> Result<(), StoreError> {
        let (Pools::Postgres { db, .. }, Some(schema)) = (&self.inner.pools, &self.inner.schema)
        else {
            return Ok(());
        };
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&db.pool)
            .await
            .map(|_| ())
            .map_err(|error| self.inner.ctx.store_error(error))
    }

    /// Creates or updates the tables and indexes (migrations embedded in the binary). Safe to
    /// run on every start and from several replicas at once on PostgreSQL.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let ctx = &self.inner.ctx;
        let result = match &self.inner.pools {
            Pools::Sqlite(db) => SQLITE_MIGRATIONS.run(&db.pool).await,
            Pools::Postgres { db, .. } => {
                if let Some(schema) = &self.inner.schema {
                    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                        .execute(&db.pool)
                        .await
                        .map_err(|error| ctx.store_error(error))?;
                }
                POSTGRES_MIGRATIONS.run(&db.pool).await
            }
        };
        result.map_err(|error| migrate_error(ctx, error))
    }

    /// Checks that the database answers and, on SQLite, that it takes writes: `Unavailable`
    /// while the last write (or write probe) was refused. See
    /// [`StoreOptions::sqlite_write_probe_interval`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.inner.pools {
            Pools::Sqlite(db) => db.check().await,
            Pools::Postgres { db, .. } => sqlx::query("SELECT 1")
                .execute(&db.pool)
                .await
                .map(|_| ())
                .map_err(|error| self.inner.ctx.store_error(error)),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.inner.pools {
            Pools::Sqlite(_) => Backend::Sqlite,
            Pools::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The URL the store was made from, with its password masked: fit for logs.
    pub fn url(&self) -> &str {
        &self.inner.ctx.url
    }

    /// The PostgreSQL schema the tables live in, when one was chosen.
    pub fn postgres_schema(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    pub fn sessions(&self) -> Arc<dyn SessionRepository> {
        match &self.inner.pools {
            Pools::Sqlite(db) => Arc::new(SqlSessions::new(Arc::clone(db))),
            Pools::Postgres { db, .. } => Arc::new(SqlSessions::new(Arc::clone(db))),
        }
    }

    pub fn leases(&self) -> Arc<dyn MaintenanceLeases> {
        match &self.inner.pools {
            Pools::Sqlite(db) => Arc::new(SqlLeases::new(Arc::clone(db))),
            Pools::Postgres { db, .. } => Arc::new(SqlLeases::new(Arc::clone(db))),
        }
    }

    /// The slots of `engine`'s warm pool, shared by every replica on the store.
    pub fn pool(&self, engine: &EngineName) -> Arc<dyn PoolStore> {
        match &self.inner.pools {
            Pools::Sqlite(db) => Arc::new(SqlPool::new(Arc::clone(db), engine)),
            Pools::Postgres { db, .. } => Arc::new(SqlPool::new(Arc::clone(db), engine)),
        }
    }

    /// The cross-replica chat lock on PostgreSQL (advisory locks). `None` on SQLite, which
    /// serves one process: use [`ProcessLocalLocker`](sandkeeper_ports::inprocess::ProcessLocalLocker) there. Every call returns the same locker.
    pub fn locker(&self) -> Option<Arc<dyn LifecycleLocker>> {
        match &self.inner.pools {
            Pools::Sqlite(_) => None,
            Pools::Postgres { locker, .. } => Some(Arc::clone(locker) as Arc<dyn LifecycleLocker>),
        }
    }

    /// The workspace archives on PostgreSQL, in bounded chunks (`--workspace-store database`).
    /// `None` on SQLite, which keeps archives in a directory instead.
    pub fn workspaces(&self) -> Option<Arc<dyn WorkspaceStore>> {
        match &self.inner.pools {
            Pools::Sqlite(_) => None,
            Pools::Postgres { db, .. } => {
                Some(Arc::new(crate::workspaces::PgWorkspaces::new(Arc::clone(db))))
            }
        }
    }

    /// Saves many sessions in one transaction (all or none), with the same rules as
    /// [`SessionRepository::save`]: for imports, and to fill a store fast.
    pub async fn save_many(&self, sessions: &[SandboxSession]) -> Result<(), SaveError> {
        match &self.inner.pools {
            Pools::Sqlite(db) => SqlSessions::new(Arc::clone(db)).save_many(sessions).await,
            Pools::Postgres { db, .. } => {
                SqlSessions::new(Arc::clone(db)).save_many(sessions).await
            }
        }
    }

    /// Closes every connection. Later calls fail with `StoreError::Unavailable`.
    pub async fn close(&self) {
        match &self.inner.pools {
            Pools::Sqlite(db) => {
                if let Some(reader) = &db.reader {
                    reader.close();
                }
                db.pool.close().await;
            }
            Pools::Postgres { db, locker } => {
                locker.locks.close().await;
                db.pool.close().await;
            }
        }
    }
}

fn migrate_error(ctx: &ErrorContext, error: MigrateError) -> StoreError {
    let url = &ctx.url;
    match error {
        MigrateError::Execute(error) | MigrateError::ExecuteMigration(error, _) => {
            match ctx.store_error(error) {
                StoreError::Failed(cause) => StoreError::Failed(
                    cause.context(format!("migrating the database at `{url}` failed")),
                ),
                unavailable => unavailable,
            }
        }
        MigrateError::VersionMissing(version) => StoreError::Failed(format!(
            "the database at `{url}` has migration {version}, which this sandkeeper does not know: \
             it was migrated by a newer version; run that version or a newer one"
        ).into()),
        MigrateError::VersionMismatch(version) => StoreError::Failed(format!(
            "migration {version} of the database at `{url}` differs from the one in this \
             sandkeeper; the database was migrated by a different build"
        ).into()),
        MigrateError::Dirty(version) => StoreError::Failed(format!(
            "migration {version} of the database at `{url}` was interrupted and left it \
             half-migrated; repair it by hand, then delete that row from _sqlx_migrations"
        ).into()),
        other => StoreError::Failed(
            ctx.scrub(format!("migrating the database at `{url}` failed: {other}")).into(),
        ),
    }
}
