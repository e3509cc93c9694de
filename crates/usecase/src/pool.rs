//! The warm pool (`docs/pool.md`): started, never-used sandboxes that a create claims, so that
//! a new chat is answered without waiting for Docker.
//!
//! The pool's slots live in the store ([`PoolStore`]), shared by every replica: a claim takes
//! one atomically, and refills reserve places there first, so that replicas together never
//! start more than the target. Docker cannot relabel a container, so a pooled container has no
//! chat or session label: once claimed, its session row (found by container id) is the only
//! record of which chat it serves.
//!
//! Each engine of the deployment keeps a pool of its own ([`WarmPools`]): a create claims from
//! the pool of the engine it was placed on, so that the claimed container runs where the
//! session says it does.
//!
//! [`WarmPool::refill`] is one pass of the background work: it recycles what must not be
//! handed out any more (older than the maximum age, made with another configuration, beyond a
//! lowered target), frees places whose start or claim was abandoned (a replica died), and
//! starts containers for the missing places, a bounded number at a time.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, select_all};
use sandkeeper_domain::{ContainerId, EngineName, SlotId, Timestamp};
use sandkeeper_ports::{
    Clock, ContainerState, Engines, PoolCounts, PoolSlot, PoolStore, Report, SandboxRuntime,
    SessionRepository, SlotState, StoreError,
};
use tokio::sync::Notify;

/// Gauge `sandbox.pool.ready`: ready slots of the current configuration, every engine's.
const POOL_READY: &str = "sandbox.pool.ready";
/// Counter `sandbox.pool.claim.total{result=hit|miss}`: creates answered from the pool, or not.
const POOL_CLAIM_TOTAL: &str = "sandbox.pool.claim.total";

/// How many pooled containers one replica starts at a time.
pub const DEFAULT_POOL_REFILL_CONCURRENCY: usize = 2;
/// The age past which a ready pooled container is recycled.
pub const DEFAULT_POOL_MAX_AGE: Duration = Duration::from_secs(3600);

/// How the pool behaves. [`PoolSettings::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// How many started, never-used sandboxes each engine keeps (all replicas together).
    /// 0: no pool.
    pub size: u64,
    /// A ready pooled container older than this is recycled.
    pub max_age: Duration,
    /// How many containers one replica starts at a time.
    pub refill_concurrency: usize,
    /// A place reserved this long ago and still starting was abandoned (its replica died):
    /// the place is freed, and its container, if any, is reaped as an orphan.
    pub starting_timeout: Duration,
    /// A place claimed this long ago and still not settled was abandoned: its container is
    /// removed unless a session row names it.
    pub claim_timeout: Duration,
}

impl PoolSettings {
    pub fn new(size: u64) -> Self {
        Self {
            size,
            max_age: DEFAULT_POOL_MAX_AGE,
            refill_concurrency: DEFAULT_POOL_REFILL_CONCURRENCY,
            starting_timeout: Duration::from_secs(30),
            claim_timeout: Duration::from_secs(30),
        }
    }
}

/// What `GET /v1/pool` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub target: u64,
    pub ready: u64,
    pub starting: u64,
}

/// A pooled container that a create took. It must be [`WarmPool::settle`]d once its session
/// is saved, or [`WarmPool::discard`]ed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub slot_id: SlotId,
    pub container_id: ContainerId,
}

/// What one [`WarmPool::refill`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefillReport {
    /// Containers started and made ready.
    pub started: u64,
    /// Ready containers removed: too old, another configuration, or beyond the target.
    pub recycled: u64,
    /// Abandoned starting or claimed places freed.
    pub abandoned: u64,
    /// Steps that failed (left for the next pass).
    pub errors: u64,
}

/// The warm pool of one deployment. Cheap to clone; clones share one pool.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn PoolStore>,
    runtime: Arc<dyn SandboxRuntime>,
    sessions: Arc<dyn SessionRepository>,
    clock: Arc<dyn Clock>,
    settings: PoolSettings,
    fingerprint: String,
    /// Woken by a claim, so that the refill starts at once.
    claimed: Notify,
}

impl fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmPool")
            .field("settings", &self.inner.settings)
            .field("fingerprint", &self.inner.fingerprint)
            .finish_non_exhaustive()
    }
}

impl WarmPool {
    pub fn new(
        store: Arc<dyn PoolStore>,
        runtime: Arc<dyn SandboxRuntime>,
        sessions: Arc<dyn SessionRepository>,
        clock: Arc<dyn Clock>,
        settings: PoolSettings,
    ) -> Self {
        let fingerprint = runtime.pool_fingerprint();
        Self {
            inner: Arc::new(Inner {
                store,
                runtime,
                sessions,
                clock,
                settings,
                fingerprint,
                claimed: Notify::new(),
            }),
        }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// The store of the pool's slots (the maintenance sweep reads it).
    pub fn store(&self) -> &Arc<dyn PoolStore> {
        &self.inner.store
    }

    /// Takes a ready pooled container, or `None` (a miss: the caller creates one) when the
    /// pool is off, empty, or the store fails. A claimed container that is not running any more
    /// is removed and the next one tried.
    pub async fn claim(&self) -> Option<Claimed> {
        let inner = &self.inner;
        if inner.settings.size == 0 {
            return None;
        }
        let claimed = self.claim_running().await;
        let result = if claimed.is_some() { "hit" } else { "miss" };
        metrics::counter!(POOL_CLAIM_TOTAL, "result" => result).increment(1);
        inner.claimed.notify_one();
        claimed
    }

    async fn claim_running(&self) -> Option<Claimed> {
        let inner = &self.inner;
        // A dead container is rare (the exit watcher frees its place); two tries bound the wait.
        for _ in 0..2 {
            let slot = match inner.store.claim(&inner.fingerprint, inner.clock.now()).await {
                Ok(Some(slot)) => slot,
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(error = error.kind(), error.message = %Report(&error),
                        "pool_claim_failed");
                    return None;
                }
            };
            let Some(container_id) = slot.container_id.clone() else {
                // A claimed slot always has a container; a row that says otherwise is dropped.
                let _ = inner.store.remove(slot.slot_id, SlotState::Claimed).await;
                continue;
            };
            let claimed = Claimed { slot_id: slot.slot_id, container_id };
            match inner.runtime.inspect(&claimed.container_id).await {
                Ok(ContainerState::Running) => return Some(claimed),
                Ok(state) => {
                    tracing::info!(container_id = %claimed.container_id, container_state = ?state,
                        "pool_container_dead");
                    self.discard(&claimed).await;
                }
                Err(error) => {
                    tracing::warn!(container_id = %claimed.container_id,
                        error = error.kind(), error.message = %Report(&error),
                        "pool_claim_inspect_failed");
                    self.discard(&claimed).await;
                    return None;
                }
            }
        }
        None
    }

    /// The claimed container's session is saved: its place in the pool is freed.
    pub async fn settle(&self, claimed: &Claimed) {
        if let Err(error) = self.inner.store.remove(claimed.slot_id, SlotState::Claimed).await {
            // The refill frees it later: a session row names the container.
            tracing::warn!(slot_id = %claimed.slot_id, error = error.kind(),
                error.message = %Report(&error), "pool_settle_failed");
        }
    }

    /// A claimed container that will not serve: it is removed, then its place freed. If the
    /// removal fails the place stays claimed, and the refill retries once it was abandoned.
    pub async fn discard(&self, claimed: &Claimed) {
        let inner = &self.inner;
        if let Err(error) = inner.runtime.stop(&claimed.container_id).await {
            tracing::warn!(container_id = %claimed.container_id, error = error.kind(),
                error.message = %Report(&error), "pool_discard_failed");
            return;
        }
        let _ = inner.store.remove(claimed.slot_id, SlotState::Claimed).await;
    }

    /// A pooled container stopped by itself: a ready one's place is freed and the container
    /// removed, so that it is never handed out. Returns whether the container was a ready one.
    pub async fn forget_exited(&self, container_id: &ContainerId) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let Some(slot) = inner.store.find_by_container(container_id).await? else {
            return Ok(false);
        };
        if slot.state != SlotState::Ready
            || !inner.store.remove(slot.slot_id, SlotState::Ready).await?
        {
            return Ok(false);
        }
        self.remove_container(container_id, "pool_container_exited").await;
        Ok(true)
    }

    /// The target and the slots of the current configuration.
    pub async fn status(&self) -> Result<PoolStatus, StoreError> {
        let counts = self.inner.store.counts(&self.inner.fingerprint).await?;
        Ok(PoolStatus {
            target: self.inner.settings.size,
            ready: counts.ready,
            starting: counts.starting,
        })
    }

    /// Resolves when a claim happened since the last call (the refill loop waits on it).
    pub async fn claimed(&self) {
        self.inner.claimed.notified().await;
    }

    /// One pass: recycle, free abandoned places, then start containers for the missing places,
    /// at most [`PoolSettings::refill_concurrency`] at a time. Fails only when the store cannot
    /// list the slots; other failures are counted and left for the next pass.
    pub async fn refill(&self) -> Result<RefillReport, StoreError> {
        let inner = &self.inner;
        let mut report = RefillReport::default();
        let slots = inner.store.list().await?;
        self.recycle(&slots, &mut report).await;

        let counts = inner.store.counts(&inner.fingerprint).await?;
        let missing = inner.settings.size.saturating_sub(counts.starting + counts.ready);
        let batch = missing.min(inner.settings.refill_concurrency.max(1) as u64);
        if batch > 0 {
            let started = join_all((0..batch).map(|_| self.start_one())).await;
            for outcome in started {
                match outcome {
                    Some(true) => report.started += 1,
                    Some(false) => {}
                    None => report.errors += 1,
                }
            }
        }
        if report != RefillReport::default() {
            tracing::debug!(
                started = report.started,
                recycled = report.recycled,
                abandoned = report.abandoned,
                errors = report.errors,
                "pool_refilled"
            );
        }
        Ok(report)
    }

    /// Whether a pass left places to fill (the loop then goes on at once).
    pub async fn is_short(&self) -> bool {
        let inner = &self.inner;
        match inner.store.counts(&inner.fingerprint).await {
            Ok(PoolCounts { starting, ready, .. }) => starting + ready < inner.settings.size,
            Err(_) => false,
        }
    }

    async fn recycle(&self, slots: &[PoolSlot], report: &mut RefillReport) {
        let inner = &self.inner;
        let now = inner.clock.now();
        let older = |at: Timestamp, bound: Duration| {
            chrono::TimeDelta::from_std(bound).is_ok_and(|bound| now - at > bound)
        };
        // Ready slots of the current configuration beyond the target go, the oldest first:
        // the newest `room` of the fresh ones are kept.
        let starting = slots
            .iter()
            .filter(|slot| slot.fingerprint == inner.fingerprint)
            .filter(|slot| slot.state == SlotState::Starting)
            .count() as u64;
        let room =
            usize::try_from(inner.settings.size.saturating_sub(starting)).unwrap_or(usize::MAX);
        let kept: HashSet<SlotId> = slots
            .iter()
            .rev()
            .filter(|slot| slot.state == SlotState::Ready && slot.fingerprint == inner.fingerprint)
            .filter(|slot| !older(slot.created_at, inner.settings.max_age))
            .take(room)
            .map(|slot| slot.slot_id)
            .collect();
        for slot in slots {
            match slot.state {
                SlotState::Ready => {
                    if kept.contains(&slot.slot_id) {
                        continue;
                    }
                    match inner.store.remove(slot.slot_id, SlotState::Ready).await {
                        Ok(true) => {
                            if let Some(container_id) = &slot.container_id {
                                self.remove_container(container_id, "pool_container_recycled")
                                    .await;
                            }
                            report.recycled += 1;
                        }
                        Ok(false) => {} // claimed meanwhile
                        Err(_) => report.errors += 1,
                    }
                }
                SlotState::Starting if older(slot.changed_at, inner.settings.starting_timeout) => {
                    match inner.store.remove(slot.slot_id, SlotState::Starting).await {
                        Ok(changed) => report.abandoned += u64::from(changed),
                        Err(_) => report.errors += 1,
                    }
                }
                SlotState::Claimed if older(slot.changed_at, inner.settings.claim_timeout) => {
                    match self.free_abandoned_claim(slot).await {
                        Ok(()) => report.abandoned += 1,
                        Err(()) => report.errors += 1,
                    }
                }
                SlotState::Starting | SlotState::Claimed => {}
            }
        }
    }

    /// A claim that never settled: if a session row names the container, it serves that chat
    /// and only the place is freed; otherwise the container is removed first.
    async fn free_abandoned_claim(&self, slot: &PoolSlot) -> Result<(), ()> {
        let inner = &self.inner;
        if let Some(container_id) = &slot.container_id {
            let serves = inner.sessions.get_by_container(container_id).await.map_err(drop)?;
            if serves.is_none() {
                inner.runtime.stop(container_id).await.map_err(drop)?;
            }
        }
        inner.store.remove(slot.slot_id, SlotState::Claimed).await.map(drop).map_err(drop)
    }

    /// Reserves a place and starts its container. `Some(true)`: one more ready; `Some(false)`:
    /// the pool was full already (another replica filled it); `None`: a failure.
    async fn start_one(&self) -> Option<bool> {
        let inner = &self.inner;
        let slot_id = SlotId::new_v4();
        let now = inner.clock.now();
        match inner.store.reserve(slot_id, &inner.fingerprint, inner.settings.size, now).await {
            Ok(true) => {}
            Ok(false) => return Some(false),
            Err(error) => {
                tracing::warn!(error = error.kind(), error.message = %Report(&error),
                    "pool_reserve_failed");
                return None;
            }
        }
        let container_id = match inner.runtime.create_pooled(slot_id, now).await {
            Ok(container_id) => container_id,
            Err(error) => {
                tracing::warn!(slot_id = %slot_id, error = error.kind(),
                    error.message = %Report(&error), "pool_container_create_failed");
                let _ = inner.store.remove(slot_id, SlotState::Starting).await;
                return None;
            }
        };
        match inner.store.mark_ready(slot_id, &container_id, inner.clock.now()).await {
            Ok(true) => Some(true),
            outcome => {
                // The place went meanwhile (abandoned, drained) or the store failed: nobody
                // knows the container but us.
                self.remove_container(&container_id, "pool_container_unrecorded").await;
                let _ = inner.store.remove(slot_id, SlotState::Starting).await;
                outcome.is_ok().then_some(false)
            }
        }
    }

    /// Removes a container the pool no longer records; a failure leaves it to the sweep,
    /// which reaps it as an orphan.
    async fn remove_container(&self, container_id: &ContainerId, event: &'static str) {
        match self.inner.runtime.stop(container_id).await {
            Ok(()) => tracing::info!(container_id = %container_id, reason = event,
                "pool_container_removed"),
            Err(error) => tracing::warn!(container_id = %container_id, reason = event,
                error = error.kind(), error.message = %Report(&error),
                "pool_container_remove_failed"),
        }
    }
}

/// The warm pools of a deployment: one per engine, each with [`PoolSettings::size`] of that
/// engine's containers. Cheap to clone; clones share the pools.
#[derive(Clone)]
pub struct WarmPools {
    engines: Engines,
    settings: PoolSettings,
    /// In the order of `engines`.
    pools: Arc<[WarmPool]>,
}

impl fmt::Debug for WarmPools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.pools.iter()).finish()
    }
}

impl WarmPools {
    /// A pool for each engine, its slots in `store_of(engine)`.
    pub fn new(
        engines: &Engines,
        store_of: impl Fn(&EngineName) -> Arc<dyn PoolStore>,
        sessions: Arc<dyn SessionRepository>,
        clock: Arc<dyn Clock>,
        settings: PoolSettings,
    ) -> Self {
        let pools: Arc<[WarmPool]> = engines
            .iter()
            .map(|engine| {
                WarmPool::new(
                    store_of(engine.name()),
                    Arc::clone(engine.runtime()),
                    Arc::clone(&sessions),
                    Arc::clone(&clock),
                    settings.clone(),
                )
            })
            .collect();
        Self { engines: engines.clone(), settings, pools }
    }

    /// The settings every engine's pool has.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// The pool of `engine`.
    pub fn of(&self, engine: &EngineName) -> Option<&WarmPool> {
        self.engines.iter().position(|known| known.name() == engine).map(|at| &self.pools[at])
    }

    /// Each engine's pool, with its engine's name; sets the ready gauge to the total.
    pub async fn status(&self) -> Result<Vec<(EngineName, PoolStatus)>, StoreError> {
        let mut statuses = Vec::with_capacity(self.pools.len());
        for (engine, pool) in self.engines.iter().zip(self.pools.iter()) {
            statuses.push((engine.name().clone(), pool.status().await?));
        }
        let ready: u64 = statuses.iter().map(|(_, status)| status.ready).sum();
        metrics::gauge!(POOL_READY).set(ready as f64);
        Ok(statuses)
    }

    /// One refill pass of every engine's pool but those of engines that are down (their
    /// places wait until they answer again). Fails when the store cannot list a pool's slots.
    pub async fn refill(&self) -> Result<RefillReport, StoreError> {
        let mut total = RefillReport::default();
        for (engine, pool) in self.engines.iter().zip(self.pools.iter()) {
            if engine.is_avoided() {
                continue;
            }
            let report = pool.refill().await?;
            total.started += report.started;
            total.recycled += report.recycled;
            total.abandoned += report.abandoned;
            total.errors += report.errors;
        }
        let _ = self.status().await;
        Ok(total)
    }

    /// Whether a pool of an engine that is up has places to fill.
    pub async fn is_short(&self) -> bool {
        for (engine, pool) in self.engines.iter().zip(self.pools.iter()) {
            if !engine.is_avoided() && pool.is_short().await {
                return true;
            }
        }
        false
    }

    /// Resolves when a claim happened in any pool since its last call.
    pub async fn claimed(&self) {
        if self.pools.is_empty() {
            return std::future::pending().await;
        }
        select_all(self.pools.iter().map(|pool| Box::pin(pool.claimed()))).await;
    }

    /// Whether a pool slot records the container (it is then never an orphan).
    pub async fn holds(&self, container_id: &ContainerId) -> Result<bool, StoreError> {
        for pool in self.pools.iter() {
            if pool.store().find_by_container(container_id).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// [`WarmPool::forget_exited`] in the pool that holds the container.
    pub async fn forget_exited(&self, container_id: &ContainerId) -> Result<bool, StoreError> {
        for pool in self.pools.iter() {
            if pool.forget_exited(container_id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
