use std::fmt;

use async_trait::async_trait;
use sandkeeper_domain::ChatId;

use crate::StoreError;

/// Proof that the caller holds a chat's lifecycle lock. The lock is released when it is dropped,
/// on every path, including a cancelled future.
pub struct ChatLockGuard {
    _held: Box<dyn Send>,
}

impl ChatLockGuard {
    /// Wraps whatever releases the lock when dropped.
    pub fn new(held: impl Send + 'static) -> Self {
        Self { _held: Box::new(held) }
    }
}

impl fmt::Debug for ChatLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChatLockGuard")
    }
}

/// Serialises lifecycle changes of one chat's sandbox (create, replace, cleanup, delete).
///
/// Locks of different chats never wait for each other. `lock` waits until the chat's lock is
/// free; it returns [`StoreError`] only when a lock backed by a store cannot reach it.
#[async_trait]
pub trait LifecycleLocker: Send + Sync {
    async fn lock(&self, chat_id: ChatId) -> Result<ChatLockGuard, StoreError>;
}
