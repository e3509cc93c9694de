use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sandkeeper_domain::Timestamp;

use super::Locked;
use crate::{Clock, LeaseRequest, MaintenanceLeases, StoreError};

/// Named leases kept in this process, judged by the given clock. They coordinate tasks of one
/// process only; replicas share leases through the SQL store.
pub struct InMemoryLeases {
    clock: Arc<dyn Clock>,
    leases: Locked<HashMap<String, Lease>>,
}

#[derive(Debug, Clone)]
struct Lease {
    holder: Option<String>,
    lease_expires_at: Timestamp,
    last_completed_at: Option<Timestamp>,
    state: Option<String>,
}

debug_fields!(InMemoryLeases {});

impl InMemoryLeases {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, leases: Locked::new(HashMap::new()) }
    }

    /// Frees the lease if `holder` holds it (a lease held by another is left alone), and
    /// records the completion of a run when `completed`.
    fn let_go(&self, name: &str, holder: &str, completed: bool) {
        let now = self.clock.now();
        self.leases.with(|leases| {
            if let Some(lease) =
                leases.get_mut(name).filter(|l| l.holder.as_deref() == Some(holder))
            {
                lease.holder = None;
                lease.lease_expires_at = now;
                if completed {
                    lease.last_completed_at = Some(now);
                }
            }
        });
    }
}

fn to_delta(duration: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

// Saturating: a caller's "forever" (`Duration::MAX`) must not overflow the instant and panic.
fn plus(at: Timestamp, duration: std::time::Duration) -> Timestamp {
    at.checked_add_signed(to_delta(duration)).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

fn minus(at: Timestamp, duration: std::time::Duration) -> Timestamp {
    at.checked_sub_signed(to_delta(duration)).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

#[async_trait]
impl MaintenanceLeases for InMemoryLeases {
    async fn try_acquire(&self, request: &LeaseRequest<'_>) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let recent_cutoff = minus(now, request.min_interval);
        Ok(self.leases.with(|leases| {
            let lease = leases.entry(request.name.to_owned()).or_insert(Lease {
                holder: None,
                lease_expires_at: now,
                last_completed_at: None,
                state: None,
            });
            let held = lease.lease_expires_at > now;
            let recently_done = lease.last_completed_at.is_some_and(|done| done > recent_cutoff);
            if held || recently_done {
                return false;
            }
            lease.holder = Some(request.holder.to_owned());
            lease.lease_expires_at = plus(now, request.duration);
            true
        }))
    }

    async fn renew(
        &self,
        name: &str,
        holder: &str,
        duration: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        Ok(self.leases.with(|leases| match leases.get_mut(name) {
            Some(lease)
                if lease.holder.as_deref() == Some(holder) && lease.lease_expires_at > now =>
            {
                lease.lease_expires_at = plus(now, duration);
                true
            }
            _ => false,
        }))
    }

    async fn complete(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.let_go(name, holder, true);
        Ok(())
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.let_go(name, holder, false);
        Ok(())
    }

    async fn load_state(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.leases.with(|leases| leases.get(name).and_then(|lease| lease.state.clone())))
    }

    async fn save_state(&self, name: &str, holder: &str, state: &str) -> Result<bool, StoreError> {
        let now = self.clock.now();
        Ok(self.leases.with(|leases| match leases.get_mut(name) {
            Some(lease)
                if lease.holder.as_deref() == Some(holder) && lease.lease_expires_at > now =>
            {
                lease.state = Some(state.to_owned());
                true
            }
            _ => false,
        }))
    }
}
