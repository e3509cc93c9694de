//! [`SqlStore`]: the one entry point of this crate.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sandkeeper_domain::{SandboxSession, SandboxStatus};
use sandkeeper_ports::inprocess::ProcessLocalLocker;
use sandkeeper_ports::{
    LifecycleLocker, MaintenanceLeases, Report, SaveError, SessionRepository, StoreError,
};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgPool, SqlitePool};

use crate::advisory::PgAdvisoryLocker;
use crate::error::{ConnectError, ErrorContext};
use crate::postgres::{PgLeases, PgSessions};
use crate::sqlite::{SqliteLeases, SqliteSessions};
use crate::sqlite_inline::InlineReader;
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

impl Backend {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    Sqlite { pool: SqlitePool, reader: Option<Arc<InlineReader>> },
    Postgres { queries: PgPool, locker: Arc<PgAdvisoryLocker> },
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
        match backend {
            Backend::Sqlite => connect_sqlite(&url, &options, ctx).await,
            Backend::Postgres => connect_postgres(&url, &options, ctx).await,
        }
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
        let (Pools::Postgres { queries, .. }, Some(schema)) =
            (&self.inner.pools, &self.inner.schema)
        else {
            return Ok(());
        };
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(queries)
            .await
            .map(|_| ())
            .map_err(|error| self.inner.ctx.store_error(error))
    }

    /// Creates or updates the tables and indexes (migrations embedded in the binary). Safe to
    /// run on every start and from several replicas at once on PostgreSQL.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let ctx = &self.inner.ctx;
        let result = match &self.inner.pools {
            Pools::Sqlite { pool, .. } => SQLITE_MIGRATIONS.run(pool).await,
            Pools::Postgres { queries, .. } => {
                if let Some(schema) = &self.inner.schema {
                    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                        .execute(queries)
                        .await
                        .map_err(|error| ctx.store_error(error))?;
                }
                POSTGRES_MIGRATIONS.run(queries).await
            }
        };
        result.map_err(|error| migrate_error(ctx, error))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let result = match &self.inner.pools {
            Pools::Sqlite { pool, .. } => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            Pools::Postgres { queries, .. } => {
                sqlx::query("SELECT 1").execute(queries).await.map(|_| ())
            }
        };
        result.map_err(|error| self.inner.ctx.store_error(error))
    }

    pub fn backend(&self) -> Backend {
        match self.inner.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
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
        let ctx = Arc::clone(&self.inner.ctx);
        match &self.inner.pools {
            Pools::Sqlite { pool, reader } => {
                Arc::new(SqliteSessions { pool: pool.clone(), reader: reader.clone(), ctx })
            }
            Pools::Postgres { queries, .. } => Arc::new(PgSessions { pool: queries.clone(), ctx }),
        }
    }

    pub fn leases(&self) -> Arc<dyn MaintenanceLeases> {
        let ctx = Arc::clone(&self.inner.ctx);
        match &self.inner.pools {
            Pools::Sqlite { pool, .. } => Arc::new(SqliteLeases { pool: pool.clone(), ctx }),
            Pools::Postgres { queries, .. } => Arc::new(PgLeases { pool: queries.clone(), ctx }),
        }
    }

    /// The cross-replica chat lock on PostgreSQL (advisory locks). `None` on SQLite, which
    /// serves one process: use [`ProcessLocalLocker`] there. Every call returns the same locker.
    pub fn locker(&self) -> Option<Arc<dyn LifecycleLocker>> {
        match &self.inner.pools {
            Pools::Sqlite { .. } => None,
            Pools::Postgres { locker, .. } => Some(Arc::clone(locker) as Arc<dyn LifecycleLocker>),
        }
    }

    /// Saves many sessions in one transaction (all or none), with the same rules as
    /// [`SessionRepository::save`]: for imports, and to fill a store fast.
    pub async fn save_many(&self, sessions: &[SandboxSession]) -> Result<(), SaveError> {
        let ctx = Arc::clone(&self.inner.ctx);
        match &self.inner.pools {
            Pools::Sqlite { pool, .. } => {
                let reader = None;
                SqliteSessions { pool: pool.clone(), reader, ctx }.save_many(sessions).await
            }
            Pools::Postgres { queries, .. } => {
                PgSessions { pool: queries.clone(), ctx }.save_many(sessions).await
            }
        }
    }

    /// Closes every connection. Later calls fail with `StoreError::Unavailable`.
    pub async fn close(&self) {
        match &self.inner.pools {
            Pools::Sqlite { pool, reader } => {
                if let Some(reader) = reader {
                    reader.close();
                }
                pool.close().await;
            }
            Pools::Postgres { queries, locker } => {
                locker.locks.close().await;
                queries.close().await;
            }
        }
    }
}

/// Which chat made a batch conflict: a running session whose chat already has another running
/// session, in the store or earlier in the batch.
pub(crate) async fn conflict_in_batch(
    repository: &dyn SessionRepository,
    sessions: &[SandboxSession],
) -> SaveError {
    let running = || sessions.iter().filter(|s| s.status == SandboxStatus::Running);
    for (n, session) in running().enumerate() {
        let twice_in_batch = running().take(n).any(|earlier| {
            earlier.chat_id == session.chat_id && earlier.session_id != session.session_id
        });
        let in_store = match repository.get_running_by_chat(session.chat_id).await {
            Ok(found) => found.is_some_and(|other| other.session_id != session.session_id),
            Err(error) => return SaveError::Store(error),
        };
        if twice_in_batch || in_store {
            return SaveError::Conflict { chat_id: session.chat_id };
        }
    }
    SaveError::Store(StoreError::Failed(
        "a batch of sessions conflicted with a running session saved concurrently"
            .to_owned()
            .into(),
    ))
}

async fn connect_sqlite(
    url: &str,
    options: &StoreOptions,
    ctx: Arc<ErrorContext>,
) -> Result<SqlStore, ConnectError> {
    let invalid = |reason: String| ConnectError::InvalidUrl {
        url: ctx.url.clone(),
        reason,
        accepted: ACCEPTED_URLS,
    };
    if options.postgres_schema.is_some() {
        return Err(ConnectError::InvalidOptions {
            url: ctx.url.clone(),
            reason: "postgres_schema is for PostgreSQL; leave it unset for SQLite".to_owned(),
        });
    }
    let mut connect = SqliteConnectOptions::from_str(url)
        .map_err(|error| invalid(ctx.scrub(error.to_string())))?;
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let in_memory = url.contains(":memory:") || query.split('&').any(|p| p == "mode=memory");
    if !query.split('&').any(|pair| pair.starts_with("mode=")) {
        connect = connect.create_if_missing(true);
    }
    connect = connect.busy_timeout(options.sqlite_busy_timeout).foreign_keys(true);
    // A connection to a local file does not go stale, so it is not pinged when taken from the
    // pool: each ping is a round trip to the connection's worker thread, as costly as a short
    // query itself.
    let mut pool = SqlitePoolOptions::new()
        .acquire_timeout(options.acquire_timeout)
        .test_before_acquire(false);
    if in_memory {
        // Each connection to an in-memory database that closes for good loses it; and a shared
        // cache locks whole tables without waiting for the busy timeout. One connection, kept.
        pool = pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
    } else {
        // WAL lets readers run beside the one writer; NORMAL sync is durable against a crash of
        // the process (not of the machine's power), at a fraction of FULL's cost.
        connect =
            connect.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal);
        pool = pool.max_connections(options.max_connections.max(1));
        if !query.split('&').any(|pair| pair == "mode=ro") {
            let busy_timeout = options.sqlite_busy_timeout;
            pool = pool.after_connect(move |connection, _| {
                Box::pin(crate::sqlite::refuse_read_only(connection, busy_timeout))
            });
        }
    }
    let reader = (!in_memory).then(|| Arc::new(InlineReader::new(connect.get_filename())));
    let file = connect.get_filename().display().to_string();
    let pool = pool.connect_with(connect).await.map_err(|error| {
        let mut reason = ctx.scrub(error.to_string());
        if !in_memory {
            reason.push_str(&format!(
                " (file `{file}`: does its directory exist and is it writable? \
                 Add ?mode=rwc to create a missing file)"
            ));
        }
        ConnectError::Unreachable { url: ctx.url.clone(), reason }
    })?;
    Ok(SqlStore {
        inner: Arc::new(Inner {
            ctx,
            pools: Pools::Sqlite { pool, reader },
            schema: None,
            scratch: false,
        }),
    })
}

async fn connect_postgres(
    url: &str,
    options: &StoreOptions,
    ctx: Arc<ErrorContext>,
) -> Result<SqlStore, ConnectError> {
    let mut connect =
        PgConnectOptions::from_str(url).map_err(|error| ConnectError::InvalidUrl {
            url: ctx.url.clone(),
            reason: ctx.scrub(error.to_string()),
            accepted: ACCEPTED_URLS,
        })?;
    if connect.get_application_name().is_none() {
        connect = connect.application_name("sandkeeper");
    }
    if let Some(schema) = &options.postgres_schema {
        if !is_plain_identifier(schema) {
            return Err(ConnectError::InvalidOptions {
                url: ctx.url.clone(),
                reason: format!(
                    "postgres_schema `{schema}` must be 1 to 63 lower-case letters, digits or `_`, \
                     not starting with a digit"
                ),
            });
        }
        connect = connect.options([("search_path", schema.as_str())]);
    }
    // One direct connection first: the pool would retry a refused connection until its timeout
    // and then report only "timed out", while this reports why (refused, unknown database,
    // authentication failed).
    match tokio::time::timeout(options.acquire_timeout, connect.connect()).await {
        Err(_) => {
            return Err(ConnectError::Unreachable {
                url: ctx.url.clone(),
                reason: format!(
                    "no answer within {:?}; is the server running and reachable?",
                    options.acquire_timeout
                ),
            });
        }
        Ok(Err(error)) => {
            return Err(ConnectError::Unreachable {
                url: ctx.url.clone(),
                reason: ctx.scrub(error.to_string()),
            });
        }
        Ok(Ok(probe)) => {
            let _ = probe.close().await;
        }
    }
    let queries = PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_lazy_with(connect.clone());
    // min_connections stays 0: a lock's connection may be detached and dropped outside a
    // runtime, where a pool refilling itself could not spawn its task.
    let locks = PgPoolOptions::new()
        .max_connections(options.max_lock_connections.max(1))
        .min_connections(0)
        .acquire_timeout(options.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_lazy_with(connect);
    let locker = Arc::new(PgAdvisoryLocker {
        locks,
        control: queries.clone(),
        local: ProcessLocalLocker::new(),
        ctx: Arc::clone(&ctx),
    });
    Ok(SqlStore {
        inner: Arc::new(Inner {
            ctx,
            pools: Pools::Postgres { queries, locker },
            schema: options.postgres_schema.clone(),
            scratch: false,
        }),
    })
}

fn is_plain_identifier(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
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
