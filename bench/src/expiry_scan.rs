//! The expiry scan at 100k rows against the same scan at 1k rows (target: ratio <= 2).
//!
//! Both stores hold the same number of expired sessions (more than the scan's limit), so both
//! scans return the same rows and the ratio shows only what the other rows cost the scan: with
//! the partial index on running sessions by expiry, nothing.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, TimeZone, Utc};
use sandkeeper_adapters_sql::{SqlStore, StoreOptions};
use sandkeeper_domain::{ChatId, ContainerId, SandboxSession, SandboxStatus, SessionId, Timestamp};
use uuid::Uuid;

use crate::report::{Row, Summary};

/// The scan's limit in production: the maintenance sweep's default rows per phase.
const SCAN_LIMIT: usize = 250;
/// Expired running sessions in each store: more than one scan takes.
const EXPIRED: usize = 300;
const SMALL: usize = 1_000;
const LARGE: usize = 100_000;
const WARM_UP: usize = 20;
const SAMPLES: usize = 300;
const GOAL: f64 = 2.0;

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    let mut rows = vec![sqlite().await?];
    rows.push(match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => postgres(&url).await?,
        _ => Row::failed(
            "expiry scan, 100k vs 1k rows (PostgreSQL)",
            "DATABASE_URL is not set: set it to a postgres:// URL to measure PostgreSQL too",
        ),
    });
    Ok(rows)
}

async fn sqlite() -> Result<Row, String> {
    let dir = tempfile::tempdir().map_err(|error| format!("temporary directory: {error}"))?;
    let open = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    let small = SqlStore::connect(&open("1k.db"), StoreOptions::default())
        .await
        .map_err(|error| error.to_string())?;
    let large = SqlStore::connect(&open("100k.db"), StoreOptions::default())
        .await
        .map_err(|error| error.to_string())?;
    let row = measure("SQLite", &small, &large).await;
    small.close().await;
    large.close().await;
    row
}

async fn postgres(url: &str) -> Result<Row, String> {
    let small = SqlStore::connect_scratch_schema(url, StoreOptions::default())
        .await
        .map_err(|error| error.to_string())?;
    let large = match SqlStore::connect_scratch_schema(url, StoreOptions::default()).await {
        Ok(large) => large,
        Err(error) => {
            let _ = small.drop_scratch_schema().await;
            return Err(error.to_string());
        }
    };
    let row = measure("PostgreSQL", &small, &large).await;
    // Dropped whatever happened, so that no scratch schema outlives the run.
    let dropped = (small.drop_scratch_schema().await, large.drop_scratch_schema().await);
    if let (Err(error), _) | (_, Err(error)) = dropped {
        eprintln!("bench: could not drop a scratch schema: {error}");
    }
    row
}

async fn measure(backend: &str, small: &SqlStore, large: &SqlStore) -> Result<Row, String> {
    let now = Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap();
    for store in [small, large] {
        store.migrate().await.map_err(|error| error.to_string())?;
    }
    let filled = Instant::now();
    small.save_many(&sessions(SMALL, now)).await.map_err(|error| error.to_string())?;
    large.save_many(&sessions(LARGE, now)).await.map_err(|error| error.to_string())?;
    let fill = filled.elapsed();

    let (small_scan, large_scan) = (small.sessions(), large.sessions());
    for _ in 0..WARM_UP {
        for scan in [&small_scan, &large_scan] {
            scan.list_expired(now, SCAN_LIMIT).await.map_err(|error| error.to_string())?;
        }
    }
    let (mut small_times, mut large_times) = (Vec::new(), Vec::new());
    // Interleaved, so that a slow moment of the machine hits both sides alike.
    for _ in 0..SAMPLES {
        for (scan, times) in [(&small_scan, &mut small_times), (&large_scan, &mut large_times)] {
            let started = Instant::now();
            let found =
                scan.list_expired(now, SCAN_LIMIT).await.map_err(|error| error.to_string())?;
            times.push(started.elapsed());
            if found.len() != SCAN_LIMIT {
                return Err(format!("the scan found {} rows, expected {SCAN_LIMIT}", found.len()));
            }
        }
    }
    let (small_summary, large_summary) = (Summary::of(&small_times), Summary::of(&large_times));
    let ratio = ratio(large_summary.median, small_summary.median);
    Ok(Row::ratio_at_most(
        format!("expiry scan, 100k vs 1k rows ({backend})"),
        ratio,
        2,
        GOAL,
        format!(
            "list_expired(now, {SCAN_LIMIT}) with {EXPIRED} expired rows in each store, \
             {SAMPLES} samples each, medians compared; 1k: {small_summary}; \
             100k: {large_summary}; both filled in {fill:.1?}"
        ),
    ))
}

fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64().max(f64::EPSILON)
}

/// `total` sessions, each of its own chat: `EXPIRED` expired running ones, then nine in ten of
/// the rest running and not expired, the others stopped or crashed.
fn sessions(total: usize, now: Timestamp) -> Vec<SandboxSession> {
    (0..total)
        .map(|n| {
            let age = TimeDelta::seconds(i64::try_from(n % 3_600).unwrap_or(0));
            let (status, expires_at) = if n < EXPIRED {
                (SandboxStatus::Running, now - TimeDelta::seconds(1) - age)
            } else if n % 10 == 0 {
                (SandboxStatus::Stopped, now - age)
            } else if n % 10 == 1 {
                (SandboxStatus::Crashed, now - age)
            } else {
                (SandboxStatus::Running, now + TimeDelta::seconds(1) + age / 12)
            };
            let session_id = SessionId::from_uuid(Uuid::new_v4());
            SandboxSession {
                session_id,
                chat_id: ChatId::from_uuid(Uuid::new_v4()),
                container_id: ContainerId::new(format!("bench-{session_id}")).expect("not empty"),
                status,
                created_at: expires_at - TimeDelta::minutes(5),
                expires_at,
                engine: sandkeeper_domain::EngineName::default(),
            }
        })
        .collect()
}
