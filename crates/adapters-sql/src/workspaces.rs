//! Workspace archives in PostgreSQL (`--workspace-store database`), in bounded chunks, so
//! that every replica can restore every chat. See the migration `*_workspace_archives.sql`
//! for how a new archive replaces the old one only once complete.
//!
//! SQLite has no database workspace store: a single replica keeps its archives in a
//! directory (`sandkeeper-adapters-fs`), which the configuration chooses on SQLite.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use sandkeeper_domain::{ChatId, SessionId, Timestamp};
use sandkeeper_ports::{ArchiveFile, Cause, StoreError, WorkspaceMeta, WorkspaceStore};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::postgres::PgDialect;

/// The most bytes in one chunk row, and so held in memory per transfer.
pub(crate) const CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks of an unnamed generation older than this are an upload cut short.
const ORPHAN_AGE: &str = "1 hour";
/// The most orphan chunks removed per sweep.
const ORPHAN_BATCH: i64 = 256;

pub(crate) struct PgWorkspaces {
    db: Arc<PgDialect>,
}

impl PgWorkspaces {
    pub(crate) fn new(db: Arc<PgDialect>) -> Self {
        Self { db }
    }

    fn error(&self, error: sqlx::Error) -> StoreError {
        self.db.ctx.store_error(error)
    }

    async fn forget_generation(&self, generation: Uuid) {
        let _ = sqlx::query("DELETE FROM workspace_chunks WHERE generation = $1")
            .bind(generation)
            .execute(&self.db.pool)
            .await;
    }

    async fn write_chunks(
        &self,
        generation: Uuid,
        archive: &ArchiveFile,
    ) -> Result<u64, StoreError> {
        let local = |error: std::io::Error| {
            StoreError::Failed(Cause::new(error).context("reading the archive to store failed"))
        };
        let mut file = archive.open().await.map_err(local)?;
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut seq: i32 = 0;
        let mut total = 0u64;
        loop {
            let mut filled = 0;
            while filled < CHUNK_BYTES {
                let read = file.read(&mut buffer[filled..]).await.map_err(local)?;
                if read == 0 {
                    break;
                }
                filled += read;
            }
            // An empty archive still has one (empty) chunk, so that a reader finds its row.
            if filled == 0 && seq > 0 {
                break;
            }
            sqlx::query("INSERT INTO workspace_chunks (generation, seq, data) VALUES ($1, $2, $3)")
                .bind(generation)
                .bind(seq)
                .bind(&buffer[..filled])
                .execute(&self.db.pool)
                .await
                .map_err(|error| self.error(error))?;
            total += filled as u64;
            seq += 1;
            if filled < CHUNK_BYTES {
                break;
            }
        }
        Ok(total)
    }

    async fn switch(&self, meta: &WorkspaceMeta, generation: Uuid) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        let previous: Option<Uuid> = sqlx::query_scalar(
            "SELECT generation FROM workspace_archives WHERE chat_id = $1 FOR UPDATE",
        )
        .bind(meta.chat_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO workspace_archives \
             (chat_id, generation, size_bytes, saved_at, session_id, used_at) \
             VALUES ($1, $2, $3, $4, $5, $4) \
             ON CONFLICT (chat_id) DO UPDATE SET generation = EXCLUDED.generation, \
             size_bytes = EXCLUDED.size_bytes, saved_at = EXCLUDED.saved_at, \
             session_id = EXCLUDED.session_id, used_at = EXCLUDED.used_at",
        )
        .bind(meta.chat_id.as_uuid())
        .bind(generation)
        .bind(i64::try_from(meta.size_bytes).unwrap_or(i64::MAX))
        .bind(meta.saved_at)
        .bind(meta.session_id.map(|id| *id.as_uuid()))
        .execute(&mut *tx)
        .await?;
        if let Some(previous) = previous {
            delete_chunks(&mut tx, previous).await?;
        }
        tx.commit().await
    }
}

/// Deletes the chunks of an archive's generation.
async fn delete_chunks(conn: &mut PgConnection, generation: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM workspace_chunks WHERE generation = $1")
        .bind(generation)
        .execute(conn)
        .await?;
    Ok(())
}

fn meta_from_row(chat_id: ChatId, row: &PgRow) -> Result<WorkspaceMeta, sqlx::Error> {
    let size: i64 = row.try_get("size_bytes")?;
    let session: Option<Uuid> = row.try_get("session_id")?;
    Ok(WorkspaceMeta {
        chat_id,
        size_bytes: u64::try_from(size).unwrap_or(0),
        saved_at: row.try_get("saved_at")?,
        session_id: session.map(SessionId::from_uuid),
    })
}

#[async_trait]
impl WorkspaceStore for PgWorkspaces {
    async fn put(&self, meta: &WorkspaceMeta, archive: ArchiveFile) -> Result<(), StoreError> {
        let generation = Uuid::new_v4();
        let written = self.write_chunks(generation, &archive).await;
        let size = match written {
            Ok(size) => size,
            Err(error) => {
                self.forget_generation(generation).await;
                return Err(error);
            }
        };
        let meta = WorkspaceMeta { size_bytes: size, ..meta.clone() };
        if let Err(error) = self.switch(&meta, generation).await {
            self.forget_generation(generation).await;
            return Err(self.error(error));
        }
        Ok(())
    }

    async fn get(
        &self,
        chat_id: ChatId,
        scratch: &Path,
    ) -> Result<Option<(WorkspaceMeta, ArchiveFile)>, StoreError> {
        let local = |error: std::io::Error| {
            StoreError::Failed(
                Cause::new(error).context("writing the archive to a temporary file failed"),
            )
        };
        // One statement: one snapshot, so a replacement committed meanwhile is not mixed in.
        let mut rows = sqlx::query(
            "SELECT a.size_bytes, a.saved_at, a.session_id, c.data \
             FROM workspace_archives a JOIN workspace_chunks c ON c.generation = a.generation \
             WHERE a.chat_id = $1 ORDER BY c.seq",
        )
        .bind(chat_id.as_uuid())
        .fetch(&self.db.pool);
        let mut found: Option<(WorkspaceMeta, ArchiveFile, tokio::fs::File)> = None;
        let mut written = 0u64;
        while let Some(row) = rows.try_next().await.map_err(|error| self.error(error))? {
            if found.is_none() {
                let meta = meta_from_row(chat_id, &row).map_err(|error| self.error(error))?;
                let (archive, file) = ArchiveFile::create_in(scratch).await.map_err(local)?;
                found = Some((meta, archive, file));
            }
            let Some((_, _, file)) = found.as_mut() else { unreachable!() };
            let data: &[u8] = row.try_get("data").map_err(|error| self.error(error))?;
            file.write_all(data).await.map_err(local)?;
            written += data.len() as u64;
        }
        let Some((meta, mut archive, mut file)) = found else { return Ok(None) };
        file.flush().await.map_err(local)?;
        if written != meta.size_bytes {
            return Err(StoreError::Failed(Cause::message(format!(
                "the stored archive of chat {chat_id} has {written} bytes, its row says {}",
                meta.size_bytes
            ))));
        }
        archive.set_size(written);
        Ok(Some((meta, archive)))
    }

    async fn meta(&self, chat_id: ChatId) -> Result<Option<WorkspaceMeta>, StoreError> {
        let row = sqlx::query(
            "SELECT size_bytes, saved_at, session_id FROM workspace_archives WHERE chat_id = $1",
        )
        .bind(chat_id.as_uuid())
        .fetch_optional(&self.db.pool)
        .await
        .map_err(|error| self.error(error))?;
        row.map(|row| meta_from_row(chat_id, &row)).transpose().map_err(|error| self.error(error))
    }

    async fn delete(&self, chat_id: ChatId) -> Result<bool, StoreError> {
        let deleted = async {
            let mut tx = self.db.pool.begin().await?;
            let generation: Option<Uuid> = sqlx::query_scalar(
                "DELETE FROM workspace_archives WHERE chat_id = $1 RETURNING generation",
            )
            .bind(chat_id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(generation) = generation {
                delete_chunks(&mut tx, generation).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(generation.is_some())
        };
        deleted.await.map_err(|error| self.error(error))
    }

    async fn mark_restored(&self, chat_id: ChatId, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE workspace_archives SET used_at = GREATEST(used_at, $2) WHERE chat_id = $1",
        )
        .bind(chat_id.as_uuid())
        .bind(at)
        .execute(&self.db.pool)
        .await
        .map(|_| ())
        .map_err(|error| self.error(error))
    }

    async fn delete_stale(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ChatId>, StoreError> {
        let deleted = async {
            let mut tx = self.db.pool.begin().await?;
            let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
                "DELETE FROM workspace_archives WHERE chat_id IN ( \
                   SELECT chat_id FROM workspace_archives WHERE used_at < $1 \
                   ORDER BY used_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 AND used_at < $1 RETURNING chat_id, generation",
            )
            .bind(before)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
            let generations: Vec<Uuid> = rows.iter().map(|(_, generation)| *generation).collect();
            sqlx::query("DELETE FROM workspace_chunks WHERE generation = ANY($1)")
                .bind(&generations)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "DELETE FROM workspace_chunks WHERE (generation, seq) IN ( \
                   SELECT c.generation, c.seq FROM workspace_chunks c \
                   WHERE c.written_at < now() - interval '{ORPHAN_AGE}' AND NOT EXISTS ( \
                     SELECT 1 FROM workspace_archives a WHERE a.generation = c.generation) \
                   LIMIT {ORPHAN_BATCH})"
            ))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(
                rows.into_iter().map(|(chat, _)| ChatId::from_uuid(chat)).collect(),
            )
        };
        deleted.await.map_err(|error| self.error(error))
    }
}
