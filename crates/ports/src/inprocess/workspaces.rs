use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use sandkeeper_domain::{ChatId, Timestamp};

use super::Locked;
use crate::{ArchiveFile, Cause, StoreError, WorkspaceMeta, WorkspaceStore};

/// Workspace archives held in memory: for use-case tests and embedders without persistence.
#[derive(Default)]
pub struct InMemoryWorkspaceStore {
    archives: Locked<HashMap<ChatId, Stored>>,
}

struct Stored {
    meta: WorkspaceMeta,
    bytes: Vec<u8>,
    used_at: Timestamp,
}

debug_fields!(InMemoryWorkspaceStore {});

impl InMemoryWorkspaceStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn io_failed(error: std::io::Error) -> StoreError {
    StoreError::Failed(Cause::new(error).context("a workspace archive could not be moved"))
}

#[async_trait]
impl WorkspaceStore for InMemoryWorkspaceStore {
    async fn put(&self, meta: &WorkspaceMeta, archive: ArchiveFile) -> Result<(), StoreError> {
        let bytes = archive.read_all().await.map_err(io_failed)?;
        let meta = WorkspaceMeta { size_bytes: bytes.len() as u64, ..meta.clone() };
        self.archives.with(|archives| {
            archives.insert(meta.chat_id, Stored { used_at: meta.saved_at, meta, bytes })
        });
        Ok(())
    }

    async fn get(
        &self,
        chat_id: ChatId,
        scratch: &Path,
    ) -> Result<Option<(WorkspaceMeta, ArchiveFile)>, StoreError> {
        let Some((meta, bytes)) = self.archives.with(|archives| {
            archives.get(&chat_id).map(|stored| (stored.meta.clone(), stored.bytes.clone()))
        }) else {
            return Ok(None);
        };
        let file = ArchiveFile::from_bytes(scratch, &bytes).await.map_err(io_failed)?;
        Ok(Some((meta, file)))
    }

    async fn meta(&self, chat_id: ChatId) -> Result<Option<WorkspaceMeta>, StoreError> {
        Ok(self.archives.with(|archives| archives.get(&chat_id).map(|stored| stored.meta.clone())))
    }

    async fn delete(&self, chat_id: ChatId) -> Result<bool, StoreError> {
        Ok(self.archives.with(|archives| archives.remove(&chat_id).is_some()))
    }

    async fn mark_restored(&self, chat_id: ChatId, at: Timestamp) -> Result<(), StoreError> {
        self.archives.with(|archives| {
            if let Some(stored) = archives.get_mut(&chat_id) {
                stored.used_at = stored.used_at.max(at);
            }
        });
        Ok(())
    }

    async fn delete_stale(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ChatId>, StoreError> {
        Ok(self.archives.with(|archives| {
            let mut stale: Vec<(Timestamp, ChatId)> = archives
                .iter()
                .filter(|(_, stored)| stored.used_at < before)
                .map(|(chat, stored)| (stored.used_at, *chat))
                .collect();
            stale.sort();
            stale.truncate(limit);
            stale
                .into_iter()
                .map(|(_, chat)| {
                    archives.remove(&chat);
                    chat
                })
                .collect()
        }))
    }
}
