use std::time::Duration;

use async_trait::async_trait;

use crate::StoreError;

/// A request for a named lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest<'a> {
    /// The lease's name, e.g. `sandbox_lifecycle_maintenance`.
    pub name: &'a str,
    /// Who asks: this process's instance id.
    pub holder: &'a str,
    /// How long the lease is held once won, unless completed or released earlier.
    pub duration: Duration,
    /// Skip when the last successful completion is more recent than this. Zero disables the gate.
    pub min_interval: Duration,
}

/// Named leases that let one of many replicas run a periodic job at a time.
///
/// A lease is read-gated: `try_acquire` returns `Ok(false)` without writing when the lease is
/// held (`lease_expires_at > now`) or was completed less than `min_interval` ago. Otherwise it
/// creates the lease row if missing and takes it with a conditional update that wins only if the
/// lease is still free; it returns `Ok(true)` only if that update changed exactly one row.
#[async_trait]
pub trait MaintenanceLeases: Send + Sync {
    async fn try_acquire(&self, request: &LeaseRequest<'_>) -> Result<bool, StoreError>;

    /// Keeps a lease that `holder` still holds: moves its expiry to `duration` from now, only if
    /// `holder` holds it and it has not expired. Returns whether it did; `false` means the lease
    /// was lost (it ran out, and another may hold it now) and the holder must stop the work it
    /// guards. A holder that names each acquisition uniquely (a token) is fenced: an expired
    /// acquisition can never be renewed, even if nobody took the lease meanwhile.
    async fn renew(&self, name: &str, holder: &str, duration: Duration)
    -> Result<bool, StoreError>;

    /// Records a successful run: clears the holder, sets `last_completed_at = now` and frees the
    /// lease. Does nothing if `holder` no longer holds it.
    async fn complete(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Frees the lease without recording completion (the run failed), so another may retry.
    /// Does nothing if `holder` no longer holds it.
    async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// The state the lease's holders keep between runs (e.g. where the next run resumes),
    /// whoever saved it: `None` until one is saved. It survives restarts and is shared by every
    /// replica of the store.
    async fn load_state(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Replaces the lease's state, only while `holder` holds the lease (unexpired). Returns
    /// whether it did; `false` (nothing written) once the lease is lost.
    async fn save_state(&self, name: &str, holder: &str, state: &str) -> Result<bool, StoreError>;
}
