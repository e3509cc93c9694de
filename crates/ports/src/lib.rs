//! The ports of sandkeeper: the traits the use cases are written against, with their
//! error contracts, and the in-process implementations of them.
//!
//! Architecture invariant: this crate knows nothing of SQL, Docker, HTTP or any exporter.
//! Adapters implement these traits and translate their own errors into the ones here,
//! so that use cases never see a foreign error type.

/// `Debug` for a type that holds ports (trait objects, which have none): it shows the named
/// fields (its settings, say) and marks the rest as left out.
///
/// ```
/// struct Service { settings: u32, store: std::sync::Arc<dyn Send + Sync> }
///
/// sandkeeper_ports::debug_fields!(Service { settings });
/// let service = Service { settings: 7, store: std::sync::Arc::new(()) };
/// assert_eq!(format!("{service:?}"), "Service { settings: 7, .. }");
/// ```
#[macro_export]
macro_rules! debug_fields {
    ($type:ident { $($field:ident),* $(,)? }) => {
        impl ::std::fmt::Debug for $type {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($type))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

mod archive;
mod cause;
mod clock;
mod engines;
mod errors;
pub mod inprocess;
mod leases;
mod locker;
mod pool;
pub mod processes;
mod repository;
mod runtime;
pub mod tar;
mod terminal;
#[cfg(feature = "testkit")]
pub mod testkit;
mod workspace;
mod workspace_store;

pub use archive::{
    ArchiveFile, ArchiveSummary, InvalidArchive, check_archive, check_archive_file,
    remove_stale_temporaries,
};
pub use cause::{Cause, Report};
pub use clock::{Clock, SystemClock};
pub use engines::{Engine, EngineSpec, Engines, Placement, PlacementError};
pub use errors::{ErrorKind, ExecError, FileError, RuntimeError, SaveError, StoreError};
pub use leases::{LeaseRequest, MaintenanceLeases};
pub use locker::{ChatLockGuard, LifecycleLocker};
pub use pool::{PoolCounts, PoolSlot, PoolStore, SlotState};
pub use processes::{LogSlice, ProcessError, ProcessInfo, ProcessLogs, ProcessSpec, ProcessState};
pub use repository::SessionRepository;
pub use runtime::{
    ContainerExit, ContainerSpec, ContainerState, ExecOutput, ExecRequest, ManagedContainer,
    OutputChunk, OutputSender, OutputStream, SandboxRuntime,
};
pub use terminal::{Terminal, TerminalInput};
pub use workspace::{PathError, PathRule, WORKSPACE_DIR, WorkspacePath};
pub use workspace_store::{ArchiveError, WorkspaceMeta, WorkspaceStore};
