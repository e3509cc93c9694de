//! The cross-replica chat lock: a PostgreSQL session-level advisory lock per chat.
//!
//! Each held (or awaited) lock occupies one connection of a pool of its own, so that lock
//! holders can never starve the queries they make while holding the lock. Waiters of one chat
//! in one process first queue on a process-local lock, so that a busy chat costs one
//! connection per replica, not one per waiter.
//!
//! Release on every path:
//! - the guard is dropped: a task unlocks and returns the connection to the pool; if the unlock
//!   cannot run, the connection is closed, which ends the session and with it every lock it held;
//! - the waiting future is dropped (cancelled, timed out): the server-side wait is cancelled
//!   with `pg_cancel_backend` and the connection is closed, so no abandoned waiter can take the
//!   lock later and keep it.

use std::sync::Arc;

use async_trait::async_trait;
use sandkeeper_domain::ChatId;
use sandkeeper_ports::inprocess::ProcessLocalLocker;
use sandkeeper_ports::{ChatLockGuard, LifecycleLocker, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use crate::error::ErrorContext;

/// Mixed into every key, so that sandkeeper's keys do not meet another application's keys for
/// the same chat. Changing it (or the hash) makes replicas of different versions use different
/// locks for one chat: never change it in a rolling upgrade.
const KEY_NAMESPACE: &[u8] = b"sandkeeper/chat-lifecycle/v1";

/// The advisory lock key of a chat: 64-bit FNV-1a over the namespace and the UUID's 16 bytes.
/// A fixed, documented hash (not `std`'s hasher, whose output may change between Rust
/// releases) so that every replica, whatever it was built with, computes the same key.
pub(crate) fn advisory_key(chat_id: ChatId) -> i64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for byte in KEY_NAMESPACE.iter().chain(chat_id.as_uuid().as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

pub(crate) struct PgAdvisoryLocker {
    /// Connections that hold or wait for locks, and nothing else.
    pub(crate) locks: PgPool,
    /// The store's query pool, used to cancel an abandoned wait.
    pub(crate) control: PgPool,
    pub(crate) local: ProcessLocalLocker,
    pub(crate) ctx: Arc<ErrorContext>,
}

#[async_trait]
impl LifecycleLocker for PgAdvisoryLocker {
    async fn lock(&self, chat_id: ChatId) -> Result<ChatLockGuard, StoreError> {
        let local = self.local.lock(chat_id).await?;
        let key = advisory_key(chat_id);
        let connection = self.locks.acquire().await.map_err(|error| self.ctx.store_error(error))?;
        let mut pending =
            PendingLock { connection: Some(connection), pid: None, control: self.control.clone() };

        // Uncontended (the common case): one round trip. The backend's pid is what a cancel
        // of the blocking wait below needs.
        let (locked, pid): (bool, i32) =
            sqlx::query_as("SELECT pg_try_advisory_lock($1), pg_backend_pid()")
                .bind(key)
                .fetch_one(pending.connection())
                .await
                .map_err(|error| self.ctx.store_error(error))?;
        pending.pid = Some(pid);
        if !locked {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(key)
                .execute(pending.connection())
                .await
                .map_err(|error| self.ctx.store_error(error))?;
        }
        let held = HeldLock { connection: pending.take(), key };
        // Tuple fields drop in order: the advisory lock is released before the local one.
        Ok(ChatLockGuard::new((held, local)))
    }
}

/// A connection on its way to holding a lock. Dropped before `take` (the future was cancelled
/// or a query failed), it may be waiting on the server or even hold the lock: cancel the wait
/// and close the connection rather than return it to the pool.
struct PendingLock {
    connection: Option<PoolConnection<Postgres>>,
    pid: Option<i32>,
    control: PgPool,
}

impl PendingLock {
    fn connection(&mut self) -> &mut sqlx::PgConnection {
        self.connection.as_deref_mut().expect("the connection is taken only by `take`")
    }

    fn take(&mut self) -> Option<PoolConnection<Postgres>> {
        self.connection.take()
    }
}

impl Drop for PendingLock {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let connection = connection.detach();
        let (Some(pid), Ok(runtime)) = (self.pid, tokio::runtime::Handle::try_current()) else {
            // Closing the socket ends the session; a wait still queued on the server ends when
            // it is granted and the server finds the client gone.
            drop(connection);
            return;
        };
        let control = self.control.clone();
        runtime.spawn(async move {
            // Cancel while our connection is still open, so the pid cannot belong to anyone else.
            if let Err(error) =
                sqlx::query("SELECT pg_cancel_backend($1)").bind(pid).execute(&control).await
            {
                tracing::warn!(%error, pid, "could not cancel an abandoned chat lock wait");
            }
            drop(connection);
        });
    }
}

/// A connection holding a chat's advisory lock until this is dropped.
struct HeldLock {
    connection: Option<PoolConnection<Postgres>>,
    key: i64,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        let key = self.key;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drop(connection.detach());
            return;
        };
        runtime.spawn(async move {
            let unlocked: Result<bool, _> = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .fetch_one(&mut *connection)
                .await;
            match unlocked {
                // Back to the pool, holding nothing.
                Ok(true) => drop(connection),
                Ok(false) => {
                    tracing::warn!(key, "a chat lock was no longer held when released");
                    drop(connection.detach());
                }
                Err(error) => {
                    tracing::warn!(%error, key, "could not unlock a chat lock; closing its connection");
                    drop(connection.detach());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_across_builds_and_differ_between_chats() {
        let chat = |id: &str| ChatId::parse(id).unwrap();
        let one = advisory_key(chat("11111111-1111-1111-1111-111111111111"));
        let two = advisory_key(chat("11111111-1111-1111-1111-111111111112"));
        // Pinned: a change here splits the lock between replicas of different versions.
        assert_eq!(one, advisory_key(chat("11111111111111111111111111111111")));
        // Computed independently (FNV-1a 64 of the namespace and the 16 bytes, as i64).
        assert_eq!(one, -2_021_408_637_917_391_577);
        assert_ne!(one, two);
    }
}
