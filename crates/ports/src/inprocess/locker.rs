use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sandkeeper_domain::ChatId;
use tokio::sync::Mutex as AsyncMutex;

use super::lock;
use crate::{ChatLockGuard, LifecycleLocker, StoreError};

/// A lock per chat, for one process.
///
/// The table maps a chat to its lock only while someone holds or waits for it: the last one out
/// removes the entry, so the table never grows with the number of chats ever seen. The table's own
/// mutex is held only to look up or update an entry, never across an await.
#[derive(Debug, Clone, Default)]
pub struct ProcessLocalLocker {
    table: Arc<Mutex<HashMap<ChatId, Entry>>>,
}

#[derive(Debug)]
struct Entry {
    lock: Arc<AsyncMutex<()>>,
    users: usize,
}

/// One holder or waiter of a chat's lock. Dropping it (also when a waiting future is cancelled)
/// removes the chat's entry if it was the last.
struct Registration {
    table: Arc<Mutex<HashMap<ChatId, Entry>>>,
    chat_id: ChatId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        if let Some(entry) = table.get_mut(&self.chat_id) {
            entry.users -= 1;
            if entry.users == 0 {
                table.remove(&self.chat_id);
            }
        }
    }
}

impl ProcessLocalLocker {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many chats currently have a holder or a waiter.
    pub fn active_chats(&self) -> usize {
        lock(&self.table).len()
    }
}

#[async_trait]
impl LifecycleLocker for ProcessLocalLocker {
    async fn lock(&self, chat_id: ChatId) -> Result<ChatLockGuard, StoreError> {
        let lock = {
            let mut table = lock(&self.table);
            let entry = table
                .entry(chat_id)
                .or_insert_with(|| Entry { lock: Arc::new(AsyncMutex::new(())), users: 0 });
            entry.users += 1;
            Arc::clone(&entry.lock)
        };
        let registration = Registration { table: Arc::clone(&self.table), chat_id };
        let held = lock.lock_owned().await;
        // Field order matters: the mutex guard is released before the registration is dropped.
        Ok(ChatLockGuard::new((held, registration)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn chat(n: u8) -> ChatId {
        ChatId::parse(&format!("{n:02}{}", "1".repeat(30))).unwrap()
    }

    #[tokio::test]
    async fn second_locker_of_a_chat_waits_until_the_first_releases() {
        let locker = ProcessLocalLocker::new();
        let first = locker.lock(chat(1)).await.unwrap();
        let second = tokio::spawn({
            let locker = locker.clone();
            async move { locker.lock(chat(1)).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the second lock must wait for the first");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second).await.unwrap().unwrap().unwrap();
        assert_eq!(locker.active_chats(), 0);
    }

    #[tokio::test]
    async fn different_chats_do_not_wait_for_each_other() {
        let locker = ProcessLocalLocker::new();
        let _first = locker.lock(chat(1)).await.unwrap();
        let other = tokio::time::timeout(Duration::from_secs(5), locker.lock(chat(2))).await;
        assert!(other.is_ok(), "a lock on another chat must not wait");
        assert_eq!(locker.active_chats(), 2);
    }

    #[tokio::test]
    async fn entries_are_removed_when_unused_even_after_a_cancelled_wait() {
        let locker = ProcessLocalLocker::new();
        let held = locker.lock(chat(1)).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(20), locker.lock(chat(1))).await;
        assert!(waiting.is_err(), "the wait should have timed out");
        assert_eq!(locker.active_chats(), 1);
        drop(held);
        assert_eq!(locker.active_chats(), 0);
    }
}
