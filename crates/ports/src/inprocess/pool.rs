use std::collections::HashMap;

use async_trait::async_trait;
use sandkeeper_domain::{ContainerId, SlotId, Timestamp};

use super::Locked;
use crate::{PoolCounts, PoolSlot, PoolStore, SlotState, StoreError};

/// The warm pool's slots kept in a map in this process (one replica, or tests).
#[derive(Debug, Default)]
pub struct InMemoryPoolStore {
    slots: Locked<HashMap<SlotId, PoolSlot>>,
}

impl InMemoryPoolStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn counts_in(slots: &HashMap<SlotId, PoolSlot>, fingerprint: &str) -> PoolCounts {
    let mut counts = PoolCounts::default();
    for slot in slots.values().filter(|slot| slot.fingerprint == fingerprint) {
        match slot.state {
            SlotState::Starting => counts.starting += 1,
            SlotState::Ready => counts.ready += 1,
            SlotState::Claimed => counts.claimed += 1,
        }
    }
    counts
}

#[async_trait]
impl PoolStore for InMemoryPoolStore {
    async fn reserve(
        &self,
        slot_id: SlotId,
        fingerprint: &str,
        target: u64,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        Ok(self.slots.with(|slots| {
            let counts = counts_in(slots, fingerprint);
            if counts.starting + counts.ready >= target || slots.contains_key(&slot_id) {
                return false;
            }
            slots.insert(
                slot_id,
                PoolSlot {
                    slot_id,
                    fingerprint: fingerprint.to_owned(),
                    state: SlotState::Starting,
                    container_id: None,
                    created_at: now,
                    changed_at: now,
                },
            );
            true
        }))
    }

    async fn mark_ready(
        &self,
        slot_id: SlotId,
        container_id: &ContainerId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        Ok(self.slots.with(|slots| match slots.get_mut(&slot_id) {
            Some(slot) if slot.state == SlotState::Starting => {
                slot.state = SlotState::Ready;
                slot.container_id = Some(container_id.clone());
                slot.changed_at = now;
                true
            }
            _ => false,
        }))
    }

    async fn claim(
        &self,
        fingerprint: &str,
        now: Timestamp,
    ) -> Result<Option<PoolSlot>, StoreError> {
        Ok(self.slots.with(|slots| {
            let oldest = slots
                .values()
                .filter(|slot| slot.state == SlotState::Ready && slot.fingerprint == fingerprint)
                .min_by_key(|slot| (slot.created_at, slot.slot_id))
                .map(|slot| slot.slot_id)?;
            let slot = slots.get_mut(&oldest)?;
            slot.state = SlotState::Claimed;
            slot.changed_at = now;
            Some(slot.clone())
        }))
    }

    async fn remove(&self, slot_id: SlotId, state: SlotState) -> Result<bool, StoreError> {
        Ok(self.slots.with(|slots| {
            if slots.get(&slot_id).is_some_and(|slot| slot.state == state) {
                slots.remove(&slot_id);
                true
            } else {
                false
            }
        }))
    }

    async fn find_by_container(
        &self,
        container_id: &ContainerId,
    ) -> Result<Option<PoolSlot>, StoreError> {
        Ok(self.slots.with(|slots| {
            slots.values().find(|slot| slot.container_id.as_ref() == Some(container_id)).cloned()
        }))
    }

    async fn list(&self) -> Result<Vec<PoolSlot>, StoreError> {
        let mut slots: Vec<PoolSlot> = self.slots.with(|slots| slots.values().cloned().collect());
        slots.sort_by_key(|slot| (slot.created_at, slot.slot_id));
        Ok(slots)
    }

    async fn counts(&self, fingerprint: &str) -> Result<PoolCounts, StoreError> {
        Ok(self.slots.with(|slots| counts_in(slots, fingerprint)))
    }
}
