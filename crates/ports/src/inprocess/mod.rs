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

/// State of this process behind a mutex, changed one step at a time, never across an await
/// (see [`lock`]).
#[derive(Debug, Default)]
pub struct Locked<T>(Mutex<T>);

impl<T> Locked<T> {
    pub fn new(state: T) -> Self {
        Self(Mutex::new(state))
    }

    /// Runs `f` on the state, locked while `f` runs.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut lock(&self.0))
    }
}

/// Locks `mutex`, also when a thread panicked while holding it. For state of this process whose
/// every change under the lock is one step (one insert, one remove, one field assignment), so
/// that a panic cannot leave it half-changed and a poisoned lock is still safe to use.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
