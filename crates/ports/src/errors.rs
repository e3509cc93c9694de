use std::time::Duration;

use sandkeeper_domain::{ChatId, ContainerId};

/// A failure of the session store (or of the lock and lease tables that live beside it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached (connection refused, pool timed out, file unreadable).
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    /// The store answered with an error.
    #[error("the session store failed: {0}")]
    Failed(String),
}

impl StoreError {
    /// A short stable name, used as the `error.type` label of metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "store_unavailable",
            Self::Failed(_) => "store_error",
        }
    }
}

/// The failure of [`crate::SessionRepository::save`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveError {
    /// Another session is already running for this chat.
    #[error("chat {chat_id} already has another running session")]
    Conflict { chat_id: ChatId },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SaveError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conflict { .. } => "conflict",
            Self::Store(error) => error.kind(),
        }
    }
}

/// A failure of the container runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime (the Docker engine) could not be reached.
    #[error("the container runtime is unavailable: {0}")]
    Unavailable(String),
    /// The configured image does not exist on the engine.
    #[error(
        "image `{image}` is not present on the container engine; build it with `cargo xtask image` or set --image"
    )]
    ImageMissing { image: String },
    /// The container does not carry this instance's managed labels; sandkeeper never touches it.
    #[error(
        "container {container_id} is not managed by this sandkeeper instance; refusing to touch it"
    )]
    NotManaged { container_id: ContainerId },
    /// A call did not answer in time.
    #[error("container runtime call `{operation}` timed out after {after:?}")]
    Timeout { operation: &'static str, after: Duration },
    /// Anything else the runtime reported. The message is shown as is.
    #[error("{0}")]
    Failed(String),
}

impl RuntimeError {
    /// A short stable name, used as the `error.type` label of metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "runtime_unavailable",
            Self::ImageMissing { .. } => "image_missing",
            Self::NotManaged { .. } => "not_managed",
            Self::Timeout { .. } => "runtime_timeout",
            Self::Failed(_) => "runtime_error",
        }
    }
}
