//! In-process implementations of the ports: real, complete implementations for a single
//! process. The process-local locker serves a single replica in production; the in-memory
//! repository and leases serve tests and embedders that need no persistence.

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
