//! The warm pool's records: started, never-used containers that a create claims.
//!
//! The store is the truth about a pooled container, as it is about a session's: Docker cannot
//! change a container's labels after it is created, so a pooled container carries no chat or
//! session label, and which chat a claimed one serves is its session row's
//! `container_id`. A slot goes `starting` (reserved, its container being made) -> `ready`
//! (its container runs, nobody uses it) -> `claimed` (a create took it and is saving the
//! chat's session) -> removed (the session row now names the container).

use async_trait::async_trait;
use sandkeeper_domain::spelling;
use sandkeeper_domain::{ContainerId, SlotId, Timestamp};

use crate::StoreError;

/// Where a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// Reserved; its container is being created and started (no container id yet).
    Starting,
    /// Its container runs and waits for a chat.
    Ready,
    /// A create took it and is recording the chat's session.
    Claimed,
}

spelling!(SlotState { Starting => "starting", Ready => "ready", Claimed => "claimed" });

/// One place in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSlot {
    pub slot_id: SlotId,
    /// The configuration the container was (or is being) made with, as the runtime names it
    /// ([`crate::SandboxRuntime::pool_fingerprint`]).
    pub fingerprint: String,
    pub state: SlotState,
    /// `None` while `Starting`.
    pub container_id: Option<ContainerId>,
    /// When the slot was reserved: its age, for `--pool-max-age`, counts from here.
    pub created_at: Timestamp,
    /// When the slot last changed state.
    pub changed_at: Timestamp,
}

/// How many slots of one configuration there are, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub starting: u64,
    pub ready: u64,
    pub claimed: u64,
}

/// The pool's records, shared by every replica on the store.
///
/// Every change is conditional in the store itself, so that replicas racing on one slot never
/// both win: at most one claim takes a ready slot, and a slot leaves a state only once.
#[async_trait]
pub trait PoolStore: Send + Sync {
    /// Reserves a `Starting` slot for `fingerprint` at `now`, only while fewer than `target`
    /// slots of that fingerprint are `Starting` or `Ready`. Returns whether it did. Racing
    /// reservations (also of other replicas) never take the count past `target`.
    async fn reserve(
        &self,
        slot_id: SlotId,
        fingerprint: &str,
        target: u64,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records the started container of a `Starting` slot and makes it `Ready`. Returns `false`
    /// (and changes nothing) when the slot is gone or not `Starting`: the caller must then
    /// remove the container, which nobody else knows.
    async fn mark_ready(
        &self,
        slot_id: SlotId,
        container_id: &ContainerId,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Takes the oldest `Ready` slot of `fingerprint` and makes it `Claimed`, atomically: two
    /// claims (of one replica or several) never get the same slot. `None` when none is ready.
    async fn claim(
        &self,
        fingerprint: &str,
        now: Timestamp,
    ) -> Result<Option<PoolSlot>, StoreError>;

    /// Deletes the slot only if it is in `state`. Returns whether it did.
    async fn remove(&self, slot_id: SlotId, state: SlotState) -> Result<bool, StoreError>;

    /// The slot holding `container_id`, in whatever state.
    async fn find_by_container(
        &self,
        container_id: &ContainerId,
    ) -> Result<Option<PoolSlot>, StoreError>;

    /// Every slot, oldest first.
    async fn list(&self) -> Result<Vec<PoolSlot>, StoreError>;

    /// The slots of `fingerprint`, by state.
    async fn counts(&self, fingerprint: &str) -> Result<PoolCounts, StoreError>;
}
