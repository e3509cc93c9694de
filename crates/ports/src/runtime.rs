use async_trait::async_trait;
use sandkeeper_domain::{ChatId, ContainerId, SessionId, Timestamp};

use crate::RuntimeError;

/// What the runtime needs to create a session's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub session_id: SessionId,
    pub chat_id: ChatId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What the runtime says about a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Running,
    /// It exists but is not running (exited, dead, created and never started).
    Exited,
    /// The runtime does not know it.
    Missing,
}

/// A container that carries this instance's managed labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    pub container_id: ContainerId,
    /// The session label, if it is present and a valid UUID.
    pub session_id: Option<SessionId>,
    pub created_at: Timestamp,
}

/// The container runtime (Docker in production).
///
/// Every method returns [`RuntimeError::Unavailable`] when the runtime cannot be reached and
/// [`RuntimeError::Timeout`] when a call does not answer in time.
#[async_trait]
pub trait SandboxRuntime: Send + Sync {
    /// Creates and starts the session's container, labelled as managed by this instance.
    /// If it cannot be started, nothing is left behind. Returns the container's id.
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError>;

    /// Stops and removes the container. Idempotent: a missing container is success.
    /// MUST return [`RuntimeError::NotManaged`] (and leave it alone) for a container without
    /// this instance's managed labels.
    async fn stop(&self, container_id: &ContainerId) -> Result<(), RuntimeError>;

    /// Whether the container is running, exited or missing.
    async fn inspect(&self, container_id: &ContainerId) -> Result<ContainerState, RuntimeError>;

    /// Every container carrying this instance's managed labels, running or not.
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError>;

    /// Succeeds when the runtime answers.
    async fn ping(&self) -> Result<(), RuntimeError>;
}
