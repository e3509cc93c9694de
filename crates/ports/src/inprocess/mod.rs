//! In-process implementations of the ports: real, complete implementations for a single
//! process. The process-local locker serves a single replica in production; the in-memory
//! repository and leases serve tests and embedders that need no persistence.

use std::sync::{Mutex, MutexGuard, PoisonError};

mod leases;
mod locker;
mod pool;
mod repository;
mod workspaces;

pub use leases::InMemoryLeases;
pub use locker::ProcessLocalLocker;
pub use pool::InMemoryPoolStore;
pub use repository::InMemorySessionRepository;
pub use workspaces::InMemoryWorkspaceStore;

/// Locks `mutex`, also when a thread panicked while holding it. For state of this process whose
/// every change under the lock is one step (one insert, one remove, one field assignment), so
/// that a panic cannot leave it half-changed and a poisoned lock is still safe to use.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
