//! A session repository that a test scripts call by call.

use async_trait::async_trait;
use sandkeeper_domain::{
    ChatId, ContainerId, EngineName, SandboxSession, SandboxStatus, SessionId, Timestamp,
};

use crate::{SaveError, SessionRepository, StoreError};

/// Writes [`DelegatingRepository`], whose every method goes to `inner()` unless overridden,
/// and the [`SessionRepository`] of every type that implements it, from one list of the port's
/// methods.
macro_rules! delegating_repository {
    ($(#[$doc:meta])* $($method:ident($($arg:ident: $type:ty),*) -> $answer:ty;)*) => {
        $(#[$doc])*
        #[async_trait]
        pub trait DelegatingRepository: Send + Sync {
            /// Where every call that is not overridden goes.
            fn inner(&self) -> &dyn SessionRepository;

            $(
                async fn $method(&self, $($arg: $type),*) -> $answer {
                    self.inner().$method($($arg),*).await
                }
            )*
        }

        #[async_trait]
        impl<T: DelegatingRepository> SessionRepository for T {
            $(
                async fn $method(&self, $($arg: $type),*) -> $answer {
                    DelegatingRepository::$method(self, $($arg),*).await
                }
            )*
        }
    };
}

delegating_repository! {
    /// A repository that hands every call to [`DelegatingRepository::inner`] (usually the
    /// in-memory one) except the calls a test overrides: implement `inner` and the methods to
    /// script (fail, pause, answer a stale snapshot), and the type is a [`SessionRepository`].
    ///
    /// The use-case test suites script stale snapshots, failing saves and reads, and a cleanup
    /// paused between its snapshot and its re-check this way.
    get_running_by_chat(chat_id: ChatId) -> Result<Option<SandboxSession>, StoreError>;
    get(session_id: SessionId) -> Result<Option<SandboxSession>, StoreError>;
    save(session: &SandboxSession) -> Result<(), SaveError>;
    save_within(session: &SandboxSession, max_running: u64) -> Result<bool, SaveError>;
    list_expired(now: Timestamp, limit: usize) -> Result<Vec<SandboxSession>, StoreError>;
    list_after(
        statuses: &[SandboxStatus],
        after: Option<(Timestamp, SessionId)>,
        limit: usize
    ) -> Result<Vec<SandboxSession>, StoreError>;
    count_running() -> Result<u64, StoreError>;
    delete(session_id: SessionId) -> Result<bool, StoreError>;
    delete_terminal(session_id: SessionId) -> Result<bool, StoreError>;
    extend_expiry(session_id: SessionId, expires_at: Timestamp) -> Result<bool, StoreError>;
    transition(
        session_id: SessionId,
        from: SandboxStatus,
        to: SandboxStatus
    ) -> Result<bool, StoreError>;
    mark_workspace_used(session_id: SessionId) -> Result<(), StoreError>;
    workspace_used(session_id: SessionId) -> Result<bool, StoreError>;
    get_by_container(container_id: &ContainerId) -> Result<Option<SandboxSession>, StoreError>;
    count_running_by_engine() -> Result<Vec<(EngineName, u64)>, StoreError>;
}
