//! The domain of sandkeeper: what a sandbox session is and the rules it obeys.
//!
//! Architecture invariant: this crate performs no IO, has no async code and never reads
//! the clock. Time is always passed in by the caller.

mod engine;
mod ids;
mod session;

pub use engine::{ENGINE_NAME_MAX, EngineName, EngineNameError};
pub use ids::{ChatId, ContainerId, IdError, SessionId, SlotId};
pub use session::{SandboxSession, SandboxStatus, StatusError};

/// Timestamps are always UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
