//! What the contract suites cannot see: connecting by URL, error messages, migrations, the
//! indexes the scans use, and the chat lock across two replicas.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, TimeZone, Utc};
use sandkeeper_adapters_sql::{Backend, ConnectError, SqlStore, StoreOptions};
use sandkeeper_domain::{ChatId, ContainerId, SandboxSession, SandboxStatus, SessionId};
use sandkeeper_ports::{Report, SaveError, SessionRepository, StoreError};
use sqlx::Row;
use support::{PostgresFixture, SqliteFixture, postgres_url, raw_postgres};

fn session(n: u128, chat: u128, status: SandboxStatus) -> SandboxSession {
    let created_at = Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap();
    SandboxSession {
        session_id: SessionId::parse(&format!("{:032x}", 0x5e55_u128 << 112 | n)).unwrap(),
        chat_id: ChatId::parse(&format!("{:032x}", 0xc4a7_u128 << 112 | chat)).unwrap(),
        container_id: ContainerId::new(format!("container-{n}")).unwrap(),
        status,
        created_at,
        expires_at: created_at + TimeDelta::minutes(5),
        engine: sandkeeper_domain::EngineName::default(),
    }
}

fn fast() -> StoreOptions {
    StoreOptions { acquire_timeout: Duration::from_secs(2), ..StoreOptions::default() }
}

// ---- URLs and connection errors ----

/// The report of a refused connection, which never shows the URL's password (`hunter2`).
fn masked_report(error: &ConnectError) -> String {
    let message = Report(error).to_string();
    assert!(!message.contains("hunter2"), "{message}");
    message
}

#[tokio::test]
async fn an_unknown_scheme_is_refused_naming_what_is_accepted_without_the_password() {
    let error = SqlStore::connect("mysql://app:hunter2@db.example/app", fast()).await.unwrap_err();
    assert!(matches!(error, ConnectError::InvalidUrl { .. }), "{error:?}");
    let message = masked_report(&error);
    assert!(message.contains("`mysql://app:***@db.example/app`"), "{message}");
    assert!(message.contains("scheme `mysql` is not supported"), "{message}");
    assert!(message.contains("sqlite://") && message.contains("postgres://"), "{message}");
}

#[tokio::test]
async fn a_path_without_a_scheme_is_refused() {
    let error = SqlStore::connect("/var/lib/sandkeeper/store.db", fast()).await.unwrap_err();
    assert!(Report(&error).to_string().contains("has no scheme"), "{error}");
}

#[tokio::test]
async fn a_malformed_postgres_url_is_refused_without_the_password() {
    let error = SqlStore::connect("postgres://app:hunter2@localhost:notaport/app", fast())
        .await
        .unwrap_err();
    assert!(matches!(error, ConnectError::InvalidUrl { .. }), "{error:?}");
    let message = masked_report(&error);
    assert!(message.contains("postgres://app:***@localhost:notaport/app"), "{message}");
}

#[tokio::test]
async fn a_refused_postgres_connection_fails_fast_naming_the_masked_url() {
    // Nothing listens on port 1 of the loopback interface.
    let url = "postgres://app:hunter2@127.0.0.1:1/app";
    let started = Instant::now();
    let error = SqlStore::connect(url, fast()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert!(matches!(error, ConnectError::Unreachable { .. }), "{error:?}");
    let message = masked_report(&error);
    assert!(message.contains("`postgres://app:***@127.0.0.1:1/app`"), "{message}");
}

#[tokio::test]
async fn a_postgres_server_that_never_answers_fails_within_the_acquire_timeout() {
    // Accepts connections (the kernel's backlog does) but never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://app:hunter2@{}/app", silent.local_addr().unwrap());
    let started = Instant::now();
    let options = StoreOptions { acquire_timeout: Duration::from_millis(500), ..fast() };
    let error = SqlStore::connect(&url, options).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(matches!(error, ConnectError::Unreachable { .. }), "{error:?}");
    assert!(masked_report(&error).contains("no answer within 500ms"), "{error}");
}

#[tokio::test]
async fn a_postgres_schema_name_that_needs_quoting_is_refused() {
    let options = StoreOptions { postgres_schema: Some("Robert'); DROP".to_owned()), ..fast() };
    let error = SqlStore::connect("postgres://app@127.0.0.1:1/app", options).await.unwrap_err();
    assert!(matches!(error, ConnectError::InvalidOptions { .. }), "{error:?}");
    assert!(Report(&error).to_string().contains("postgres_schema `Robert'); DROP`"), "{error}");
}

// ---- SQLite ----

#[tokio::test]
async fn a_sqlite_file_is_created_on_first_use_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    // Schemes are case-insensitive.
    let store = SqlStore::connect(&format!("SQLite://{}", path.display()), fast()).await.unwrap();
    assert!(path.exists(), "the file is created");
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(store.locker().is_none(), "SQLite uses the process-local locker");
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut SqliteFixtureRaw::open(&path).await)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
}

/// A raw connection to a SQLite file.
struct SqliteFixtureRaw;

impl SqliteFixtureRaw {
    async fn open(path: &std::path::Path) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap()
    }
}

#[tokio::test]
async fn a_sqlite_file_in_a_missing_directory_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/store.db?mode=rwc", dir.path().display());
    let error = SqlStore::connect(&url, fast()).await.unwrap_err();
    assert!(matches!(error, ConnectError::Unreachable { .. }), "{error:?}");
    assert!(Report(&error).to_string().contains("does its directory exist"), "{error}");
    assert!(Report(&error).to_string().contains(&url), "{error}");
}

#[tokio::test]
async fn migrations_run_twice_and_data_survives_a_restart() {
    let fixture = SqliteFixture::new().await;
    let saved = session(1, 1, SandboxStatus::Running);
    fixture.store.sessions().save(&saved).await.unwrap();
    fixture.store.migrate().await.unwrap();
    fixture.store.close().await;
    let url = format!("sqlite://{}", fixture.path.display());
    let reopened = SqlStore::connect(&url, fast()).await.unwrap();
    reopened.migrate().await.unwrap();
    assert_eq!(reopened.sessions().get(saved.session_id).await.unwrap(), Some(saved));
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_version_is_refused_saying_so() {
    let fixture = SqliteFixture::new().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', TRUE, x'00', 0)",
    )
    .execute(&mut fixture.raw().await)
    .await
    .unwrap();
    let error = fixture.store.migrate().await.unwrap_err();
    assert!(matches!(error, StoreError::Failed(_)), "{error:?}");
    assert!(Report(&error).to_string().contains("migration 99990101000000"), "{error}");
    assert!(Report(&error).to_string().contains("migrated by a newer version"), "{error}");
}

#[tokio::test]
async fn an_in_memory_sqlite_store_keeps_its_data_between_calls() {
    let store = SqlStore::connect("sqlite::memory:", fast()).await.unwrap();
    store.migrate().await.unwrap();
    let saved = session(1, 1, SandboxStatus::Running);
    store.sessions().save(&saved).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.sessions().get_running_by_chat(saved.chat_id).await.unwrap(), Some(saved));
}

#[tokio::test]
async fn a_chat_lookup_sees_rows_written_from_outside_and_names_a_broken_row() {
    let fixture = SqliteFixture::new().await;
    let sessions = fixture.store.sessions();
    let saved = session(1, 1, SandboxStatus::Running);
    // Warm the lookup's own connections first: what another process writes next must show.
    assert_eq!(sessions.get_running_by_chat(saved.chat_id).await.unwrap(), None);
    let mut outside = fixture.raw().await;
    let insert = |session_id: String, created_at: &'static str| {
        sqlx::query(
            "INSERT INTO sandbox_sessions \
             (session_id, chat_id, container_id, status, created_at, expires_at, engine) \
             VALUES (?1, ?2, 'container-1', 'running', ?3, 1, 'default')",
        )
        .bind(session_id)
        .bind(saved.chat_id.to_string())
        .bind(created_at)
    };
    insert(saved.session_id.to_string(), "1775131200000000").execute(&mut outside).await.unwrap();
    let found = sessions.get_running_by_chat(saved.chat_id).await.unwrap().unwrap();
    assert_eq!(found.session_id, saved.session_id);
    assert_eq!(found.created_at, saved.created_at);

    sqlx::query("DELETE FROM sandbox_sessions").execute(&mut outside).await.unwrap();
    assert_eq!(sessions.get_running_by_chat(saved.chat_id).await.unwrap(), None);

    insert("not-a-uuid".to_owned(), "1775131200000000").execute(&mut outside).await.unwrap();
    let error = sessions.get_running_by_chat(saved.chat_id).await.unwrap_err();
    assert!(matches!(error, StoreError::Failed(_)), "{error:?}");
    assert!(
        Report(&error).to_string().contains("session_id `not-a-uuid` in the store is not a UUID"),
        "{error}"
    );

    sqlx::query("DELETE FROM sandbox_sessions").execute(&mut outside).await.unwrap();
    insert(saved.session_id.to_string(), "yesterday").execute(&mut outside).await.unwrap();
    let error = sessions.get_running_by_chat(saved.chat_id).await.unwrap_err();
    assert!(matches!(error, StoreError::Failed(_)), "{error:?}");
    assert!(Report(&error).to_string().contains("row could not be read"), "{error}");
}

#[tokio::test]
async fn a_closed_store_reports_unavailable() {
    let fixture = SqliteFixture::new().await;
    fixture.store.close().await;
    let error = fixture.store.sessions().count_running().await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let chat = session(1, 1, SandboxStatus::Running).chat_id;
    let error = fixture.store.sessions().get_running_by_chat(chat).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(matches!(fixture.store.ping().await, Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn a_sqlite_store_opens_at_once_beside_a_writer_and_its_writes_wait_then_fail_unavailable() {
    let fixture = SqliteFixture::new().await;
    let mut writer = fixture.raw().await;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut writer).await.unwrap();

    // A new connection checks that it may write without waiting for the lock.
    let options = StoreOptions { sqlite_busy_timeout: Duration::from_millis(300), ..fast() };
    let started = Instant::now();
    let url = format!("sqlite://{}", fixture.path.display());
    let second = SqlStore::connect(&url, options).await.unwrap();
    assert_eq!(second.sessions().count_running().await.unwrap(), 0, "reads go on");
    assert!(started.elapsed() < Duration::from_secs(1), "waited {:?}", started.elapsed());

    let error = second.sessions().save(&session(1, 1, SandboxStatus::Running)).await.unwrap_err();
    assert!(matches!(error, SaveError::Store(StoreError::Unavailable(_))), "{error:?}");
    sqlx::query("ROLLBACK").execute(&mut writer).await.unwrap();
    second.sessions().save(&session(1, 1, SandboxStatus::Running)).await.unwrap();
}

fn refusing(probe_interval: Duration) -> StoreOptions {
    StoreOptions {
        sqlite_busy_timeout: Duration::from_millis(200),
        // Room for a busy machine to open a connection: only a refused write must fail here.
        acquire_timeout: Duration::from_secs(5),
        sqlite_write_probe_interval: probe_interval,
        ..StoreOptions::default()
    }
}

#[tokio::test]
async fn a_sqlite_store_whose_last_write_was_refused_fails_its_ping_until_a_write_goes_through() {
    // No probe is due for an hour: only real writes tell the ping about the file.
    let fixture = SqliteFixture::with_options(refusing(Duration::from_secs(3600))).await;
    let sessions = fixture.store.sessions();
    sessions.save(&session(1, 1, SandboxStatus::Running)).await.unwrap();
    fixture.store.ping().await.unwrap();
    let Some(read_only) = fixture.refuse_writes() else {
        return;
    };

    let error = sessions.save(&session(2, 2, SandboxStatus::Running)).await.unwrap_err();
    assert!(matches!(error, SaveError::Store(StoreError::Unavailable(_))), "{error:?}");
    let error = fixture.store.ping().await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(Report(&error).to_string().contains("refuses writes"), "{}", Report(&error));
    assert_eq!(sessions.count_running().await.unwrap(), 1, "reads go on");

    drop(read_only);
    sessions.save(&session(2, 2, SandboxStatus::Running)).await.unwrap();
    fixture.store.ping().await.unwrap();
}

#[tokio::test]
async fn a_sqlite_file_that_stops_taking_writes_while_idle_is_found_by_the_ping_and_so_is_its_return()
 {
    let fixture = SqliteFixture::with_options(refusing(Duration::ZERO)).await;
    fixture.store.ping().await.unwrap();
    let Some(read_only) = fixture.refuse_writes() else {
        return;
    };
    let error = fixture.store.ping().await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");

    drop(read_only);
    fixture.store.ping().await.unwrap();
    assert_eq!(fixture.store.sessions().count_running().await.unwrap(), 0);
}

#[tokio::test]
async fn a_write_probe_that_waits_for_another_writer_counts_as_refused_until_it_goes_through() {
    let fixture = SqliteFixture::with_options(StoreOptions {
        sqlite_write_probe_interval: Duration::ZERO,
        ..fast()
    })
    .await;
    fixture.store.ping().await.unwrap();
    let mut writer = fixture.raw().await;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut writer).await.unwrap();

    let error = fixture.store.ping().await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(Report(&error).to_string().contains("did not go through"), "{}", Report(&error));

    sqlx::query("ROLLBACK").execute(&mut writer).await.unwrap();
    fixture.store.ping().await.unwrap();
}

/// Two replicas each try to save 20 running sessions (of chats of their own) at once under a
/// limit of 5: exactly 5 are admitted across both.
async fn race_at_the_limit(a: Arc<dyn SessionRepository>, b: Arc<dyn SessionRepository>) {
    const LIMIT: u64 = 5;
    let saves: Vec<_> = (1..=40u128)
        .map(|n| {
            let repo = if n % 2 == 0 { Arc::clone(&a) } else { Arc::clone(&b) };
            tokio::spawn(async move {
                repo.save_within(&session(n, n, SandboxStatus::Running), LIMIT).await
            })
        })
        .collect();
    let mut admitted = 0;
    for save in saves {
        if save.await.unwrap().unwrap() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, LIMIT, "admitted across both replicas");
    assert_eq!(a.count_running().await.unwrap(), LIMIT);
    assert_eq!(b.count_running().await.unwrap(), LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_racing_creates_at_the_capacity_limit_never_go_past_it() {
    let Some(url) = postgres_url().await else { return };
    let fixture = PostgresFixture::new(&url).await;
    let replica = fixture.replica(fast()).await;
    race_at_the_limit(fixture.store.sessions(), replica.sessions()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_stores_racing_creates_at_the_capacity_limit_never_go_past_it() {
    let fixture = SqliteFixture::new().await;
    let url = format!("sqlite://{}", fixture.path.display());
    let second = SqlStore::connect(&url, StoreOptions::default()).await.unwrap();
    race_at_the_limit(fixture.store.sessions(), second.sessions()).await;
}

/// `EXPLAIN QUERY PLAN` of a statement, one line per step.
async fn sqlite_plan(fixture: &SqliteFixture, sql: &str) -> String {
    let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(&mut fixture.raw().await)
        .await
        .unwrap();
    rows.iter().map(|row| row.get::<String, _>("detail")).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn sqlite_scans_use_their_indexes() {
    let fixture = SqliteFixture::new().await;
    let expiry = sqlite_plan(
        &fixture,
        "SELECT * FROM sandbox_sessions WHERE status = 'running' AND expires_at <= 1 \
         ORDER BY expires_at, session_id LIMIT 250",
    )
    .await;
    assert!(expiry.contains("INDEX sandbox_sessions_running_by_expiry"), "{expiry}");
    assert!(!expiry.contains("TEMP B-TREE"), "no sort: the index gives the order\n{expiry}");

    for status in ["running", "stopped", "crashed"] {
        let by_status = sqlite_plan(
            &fixture,
            &format!(
                "SELECT * FROM sandbox_sessions WHERE status = '{status}' \
                 ORDER BY created_at, session_id LIMIT 250"
            ),
        )
        .await;
        let index = format!("INDEX sandbox_sessions_{status}_by_created");
        assert!(by_status.contains(&index), "{by_status}");
        assert!(!by_status.contains("TEMP B-TREE"), "{by_status}");
    }

    let by_chat = sqlite_plan(
        &fixture,
        "SELECT * FROM sandbox_sessions WHERE chat_id = 'x' AND status = 'running'",
    )
    .await;
    assert!(by_chat.contains("INDEX sandbox_sessions_one_running_per_chat"), "{by_chat}");

    // A keep-alive is one row found by its key, never a scan of the table.
    let extend = sqlite_plan(
        &fixture,
        "UPDATE sandbox_sessions SET expires_at = 2 \
         WHERE session_id = 'x' AND status = 'running' AND expires_at < 2",
    )
    .await;
    assert!(extend.starts_with("SEARCH sandbox_sessions"), "{extend}");
    assert!(!extend.contains("SCAN"), "{extend}");
}

// ---- save_many ----

async fn save_many_is_all_or_nothing(store: &SqlStore) {
    let batch: Vec<_> = (1..=2500).map(|n| session(n, n, SandboxStatus::Running)).collect();
    store.save_many(&batch).await.unwrap();
    assert_eq!(store.sessions().count_running().await.unwrap(), 2500);

    // One bad row (a second running session for chat 7) and nothing of the batch is written.
    let mut bad: Vec<_> = (3001..=3010).map(|n| session(n, n, SandboxStatus::Running)).collect();
    bad.push(session(3011, 7, SandboxStatus::Running));
    let error = store.save_many(&bad).await.unwrap_err();
    assert_eq!(
        error,
        SaveError::Conflict { chat_id: session(0, 7, SandboxStatus::Running).chat_id }
    );
    assert_eq!(store.sessions().count_running().await.unwrap(), 2500);
    assert_eq!(store.sessions().get(bad[0].session_id).await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_save_many_is_all_or_nothing() {
    save_many_is_all_or_nothing(&SqliteFixture::new().await.store).await;
}

#[tokio::test]
async fn postgres_save_many_is_all_or_nothing() {
    let Some(url) = postgres_url().await else { return };
    save_many_is_all_or_nothing(&PostgresFixture::new(&url).await.store).await;
}

// ---- PostgreSQL ----

#[tokio::test]
async fn postgres_store_errors_never_show_the_password() {
    let Some(url) = postgres_url().await else { return };
    let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://"))
    else {
        unreachable!("postgres_url gives postgres URLs")
    };
    // The dev and CI servers trust local connections, so any password gets in.
    let (user, host) = rest.split_once('@').unwrap();
    let user = user.split(':').next().unwrap();
    let with_password = format!("postgres://{user}:hunter2@{host}");
    let fixture = PostgresFixture::new(&with_password).await;
    assert!(fixture.store.url().contains(":***@"), "{}", fixture.store.url());
    assert!(!format!("{:?}", fixture.store).contains("hunter2"));
    sqlx::query("DROP TABLE sandbox_sessions").execute(&mut fixture.raw().await).await.unwrap();
    let error = fixture.store.sessions().count_running().await.unwrap_err();
    assert!(matches!(error, StoreError::Failed(_)), "{error:?}");
    assert!(!Report(&error).to_string().contains("hunter2"), "{error}");
}

#[tokio::test]
async fn postgres_scratch_schemas_are_dropped_and_only_they_can_be() {
    let Some(url) = postgres_url().await else { return };
    let store = SqlStore::connect_scratch_schema(&url, fast()).await.unwrap();
    let schema = store.postgres_schema().unwrap().to_owned();
    store.migrate().await.unwrap();
    store.drop_scratch_schema().await.unwrap();
    let mut raw = raw_postgres(&url, None).await;
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
    )
    .bind(&schema)
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(left, 0);

    let plain = SqlStore::connect(&url, fast()).await.unwrap();
    let refused = plain.drop_scratch_schema().await.unwrap_err();
    assert!(
        Report(&refused).to_string().contains("not made by connect_scratch_schema"),
        "{refused}"
    );
}

fn chat(n: u128) -> ChatId {
    ChatId::parse(&format!("{:032x}", 0x10c4_u128 << 112 | n)).unwrap()
}

/// A replica whose connections carry a name of their own (`<prefix>_<uuid>`), to find its
/// locks: the name and the store.
async fn named_replica(prefix: &str) -> (String, SqlStore) {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let url = std::env::var("DATABASE_URL").unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}application_name={name}");
    (name, SqlStore::connect(&url, fast()).await.unwrap())
}

async fn advisory_locks_held_by(url: &str, application_name: &str) -> i64 {
    let mut raw = raw_postgres(url, None).await;
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1",
    )
    .bind(application_name)
    .fetch_one(&mut raw)
    .await
    .unwrap()
}

async fn eventually_zero(url: &str, application_name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = advisory_locks_held_by(url, application_name).await;
        if held == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{held} advisory locks of {application_name} remain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_chat_lock_serialises_one_chat_across_replicas_but_not_two_chats() {
    let Some(url) = postgres_url().await else { return };
    let fixture = PostgresFixture::new(&url).await;
    let (name_a, replica_a) = named_replica("lock_a").await;
    let replica_b = fixture.replica(fast()).await;
    let (locker_a, locker_b) = (replica_a.locker().unwrap(), replica_b.locker().unwrap());

    let held = locker_a.lock(chat(1)).await.unwrap();
    assert_eq!(advisory_locks_held_by(&url, &name_a).await, 1, "the lock is on the server");
    let waiting = tokio::spawn({
        let locker_b = locker_b.clone();
        async move { locker_b.lock(chat(1)).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "replica b must wait for replica a's lock");
    let other_chat = tokio::time::timeout(Duration::from_secs(5), locker_b.lock(chat(2)))
        .await
        .expect("another chat's lock does not wait")
        .unwrap();
    drop(other_chat);
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("replica b gets the lock once replica a released it")
        .unwrap()
        .unwrap();
    eventually_zero(&url, &name_a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_cancelled_waiter_on_another_replica_does_not_keep_the_lock() {
    let Some(url) = postgres_url().await else { return };
    let fixture = PostgresFixture::new(&url).await;
    let (name_b, replica_b) = named_replica("lock_b").await;
    let locker_a = fixture.store.locker().unwrap();
    let locker_b = replica_b.locker().unwrap();

    let held = locker_a.lock(chat(1)).await.unwrap();
    // Replica b waits on the server, then gives up.
    let abandoned = tokio::time::timeout(Duration::from_millis(300), locker_b.lock(chat(1))).await;
    assert!(abandoned.is_err(), "the waiter should have timed out");
    drop(held);
    // Had b's abandoned wait been granted, a would never get the lock back.
    let again = tokio::time::timeout(Duration::from_secs(5), locker_a.lock(chat(1)))
        .await
        .expect("the lock is free: the abandoned wait did not take it")
        .unwrap();
    assert_eq!(advisory_locks_held_by(&url, &name_b).await, 0);
    drop(again);
    let by_b = tokio::time::timeout(Duration::from_secs(5), locker_b.lock(chat(1)))
        .await
        .expect("b can still lock the chat")
        .unwrap();
    drop(by_b);
    eventually_zero(&url, &name_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_chat_locks_are_released_when_guards_drop_in_other_tasks() {
    let Some(url) = postgres_url().await else { return };
    let (name, store) = named_replica("lock_c").await;
    let locker = store.locker().unwrap();
    let guards: Vec<_> = futures_lock_many(&locker, 5).await;
    assert_eq!(advisory_locks_held_by(&url, &name).await, 5);
    for guard in guards {
        tokio::spawn(async move { drop(guard) }).await.unwrap();
    }
    eventually_zero(&url, &name).await;
}

async fn futures_lock_many(
    locker: &std::sync::Arc<dyn sandkeeper_ports::LifecycleLocker>,
    chats: u128,
) -> Vec<sandkeeper_ports::ChatLockGuard> {
    let mut guards = Vec::new();
    for n in 1..=chats {
        guards.push(locker.lock(chat(n)).await.unwrap());
    }
    guards
}

#[tokio::test]
async fn postgres_leases_are_judged_by_the_database_clock() {
    let Some(url) = postgres_url().await else { return };
    let fixture = PostgresFixture::new(&url).await;
    let request = sandkeeper_ports::LeaseRequest {
        name: "sweep",
        holder: "replica-a",
        duration: Duration::from_secs(10),
        min_interval: Duration::from_secs(30),
    };
    assert!(fixture.store.leases().try_acquire(&request).await.unwrap());
    // The deadline is the server's now() plus the duration, whatever this process's clock says.
    let row = sqlx::query(
        "SELECT holder, extract(epoch FROM lease_expires_at - now())::float8 AS left \
         FROM maintenance_leases WHERE name = 'sweep'",
    )
    .fetch_one(&mut fixture.raw().await)
    .await
    .unwrap();
    assert_eq!(row.get::<Option<String>, _>("holder").as_deref(), Some("replica-a"));
    let left: f64 = row.get("left");
    assert!((8.0..=10.0).contains(&left), "{left}s left on the server's clock");
}
