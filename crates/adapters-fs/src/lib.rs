//! Workspace archives in a directory (`--workspace-store dir`): one file per chat.
//!
//! `<dir>/<chat id>.workspace` is a 512-byte header (the metadata as `key=value` lines, padded
//! with NUL bytes) followed by the tar archive. A new archive is written to a temporary file in
//! the same directory, synced, renamed over the old one and the directory synced: a crash at
//! any point leaves the old archive or the new one, never a part. The file's modification time
//! is when the archive was last saved or restored, which is what retention judges.
//!
//! The directory serves one process (a single replica on SQLite); several replicas share
//! archives through the database store.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sandkeeper_domain::{ChatId, SessionId, Timestamp};
use sandkeeper_ports::{ArchiveFile, Cause, StoreError, WorkspaceMeta, WorkspaceStore};
use std::io::Seek;

use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

const HEADER: usize = 512;
const MAGIC: &str = "sandkeeper-workspace 1";
const SUFFIX: &str = ".workspace";
/// A temporary file this old was left by a crash (a younger one may be another process's put
/// in progress: a one-shot command beside the server).
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The directory store of workspace archives.
#[derive(Debug)]
pub struct DirWorkspaceStore {
    dir: PathBuf,
    /// Serialises the steps that change which file is in place (rename, mtime, removal), so
    /// that retention never removes an archive saved or restored meanwhile.
    writes: Mutex<()>,
}

impl DirWorkspaceStore {
    /// Opens (and creates, if missing) the directory `dir`, and removes the temporary files a
    /// crash left in it more than an hour ago.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|error| failed(error, format!("creating `{}` failed", dir.display())))?;
        sandkeeper_ports::remove_stale_temporaries(&dir, STALE_TEMPORARY);
        Ok(Self { dir, writes: Mutex::new(()) })
    }

    /// The directory the archives are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, chat_id: ChatId) -> PathBuf {
        self.dir.join(format!("{chat_id}{SUFFIX}"))
    }

    async fn read_header(&self, chat_id: ChatId) -> Result<Option<WorkspaceMeta>, StoreError> {
        let path = self.path_of(chat_id);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(failed(error, format!("opening `{}`", path.display()))),
        };
        header_of(&mut file, chat_id, &path).await.map(Some)
    }
}

fn failed(error: io::Error, doing: impl Into<String>) -> StoreError {
    let cause = Cause::new(error).context(doing);
    StoreError::Failed(cause)
}

fn encode(meta: &WorkspaceMeta) -> [u8; HEADER] {
    let session = meta.session_id.map_or_else(|| "-".to_owned(), |id| id.to_string());
    let text = format!(
        "{MAGIC}\nsession={session}\nsaved_at={}\nsize={}\n",
        meta.saved_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        meta.size_bytes
    );
    let mut header = [0u8; HEADER];
    header[..text.len()].copy_from_slice(text.as_bytes());
    header
}

fn decode(header: &[u8], chat_id: ChatId) -> Option<WorkspaceMeta> {
    let end = header.iter().position(|byte| *byte == 0).unwrap_or(header.len());
    let text = std::str::from_utf8(&header[..end]).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let (mut session, mut saved_at, mut size) = (None, None, None);
    for line in lines {
        let (key, value) = line.split_once('=')?;
        match key {
            "session" if value == "-" => session = Some(None),
            "session" => session = Some(Some(SessionId::parse(value).ok()?)),
            "saved_at" => saved_at = Some(DateTime::parse_from_rfc3339(value).ok()?.to_utc()),
            "size" => size = Some(value.parse().ok()?),
            _ => {}
        }
    }
    Some(WorkspaceMeta { chat_id, size_bytes: size?, saved_at: saved_at?, session_id: session? })
}

async fn header_of(
    file: &mut tokio::fs::File,
    chat_id: ChatId,
    path: &Path,
) -> Result<WorkspaceMeta, StoreError> {
    let mut header = [0u8; HEADER];
    file.read_exact(&mut header)
        .await
        .map_err(|error| failed(error, format!("reading the header of `{}`", path.display())))?;
    let meta = decode(&header, chat_id).ok_or_else(|| {
        StoreError::Failed(Cause::message(format!(
            "`{}` is not a workspace archive of this sandkeeper (its header is unreadable)",
            path.display()
        )))
    })?;
    let length = file
        .metadata()
        .await
        .map_err(|error| failed(error, format!("reading `{}`", path.display())))?
        .len();
    if length != HEADER as u64 + meta.size_bytes {
        return Err(StoreError::Failed(Cause::message(format!(
            "`{}` holds {} bytes of archive, its header says {}",
            path.display(),
            length.saturating_sub(HEADER as u64),
            meta.size_bytes
        ))));
    }
    Ok(meta)
}

fn system_time(at: Timestamp) -> SystemTime {
    SystemTime::from(at)
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

#[async_trait]
impl WorkspaceStore for DirWorkspaceStore {
    async fn put(&self, meta: &WorkspaceMeta, archive: ArchiveFile) -> Result<(), StoreError> {
        let meta = WorkspaceMeta { size_bytes: archive.size(), ..meta.clone() };
        let token = format!("{:x}", uuid_like());
        let temporary = self.dir.join(format!(".put-{}-{token}", meta.chat_id));
        let source = archive.path().to_owned();
        let header = encode(&meta);
        let target = temporary.clone();
        let written = tokio::task::spawn_blocking(move || -> io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::options().write(true).create_new(true).open(&target)?;
            file.write_all(&header)?;
            let copied = io::copy(&mut std::fs::File::open(&source)?, &mut file)?;
            if copied != meta.size_bytes {
                return Err(io::Error::other(format!(
                    "the archive changed while it was stored: {copied} bytes instead of {}",
                    meta.size_bytes
                )));
            }
            file.set_modified(system_time(meta.saved_at))?;
            file.sync_all()
        })
        .await
        .unwrap_or_else(|error| Err(io::Error::other(error)));
        if let Err(error) = written {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(failed(error, format!("writing `{}`", temporary.display())));
        }
        let _writes = self.writes.lock().await;
        let target = self.path_of(meta.chat_id);
        if let Err(error) = tokio::fs::rename(&temporary, &target).await {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(failed(error, format!("renaming into `{}`", target.display())));
        }
        sync_dir(&self.dir)
            .await
            .map_err(|error| failed(error, format!("syncing `{}`", self.dir.display())))
    }

    async fn get(
        &self,
        chat_id: ChatId,
        scratch: &Path,
    ) -> Result<Option<(WorkspaceMeta, ArchiveFile)>, StoreError> {
        let path = self.path_of(chat_id);
        // The open file stays the same archive even if another one is renamed over it.
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(failed(error, format!("opening `{}`", path.display()))),
        };
        let meta = header_of(&mut file, chat_id, &path).await?;
        let scratch_failed = |error| {
            failed(error, format!("copying `{}` to `{}`", path.display(), scratch.display()))
        };
        let (mut archive, copy) = ArchiveFile::create_in(scratch).await.map_err(scratch_failed)?;
        let (mut from, mut into) = (file.into_std().await, copy.into_std().await);
        let copied = tokio::task::spawn_blocking(move || {
            from.seek(io::SeekFrom::Start(HEADER as u64))?;
            io::copy(&mut from, &mut into)
        })
        .await
        .unwrap_or_else(|error| Err(io::Error::other(error)))
        .map_err(scratch_failed)?;
        archive.set_size(copied);
        Ok(Some((meta, archive)))
    }

    async fn meta(&self, chat_id: ChatId) -> Result<Option<WorkspaceMeta>, StoreError> {
        self.read_header(chat_id).await
    }

    async fn delete(&self, chat_id: ChatId) -> Result<bool, StoreError> {
        let _writes = self.writes.lock().await;
        let path = self.path_of(chat_id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(failed(error, format!("removing `{}`", path.display()))),
        }
        sync_dir(&self.dir)
            .await
            .map_err(|error| failed(error, format!("syncing `{}`", self.dir.display())))?;
        Ok(true)
    }

    async fn mark_restored(&self, chat_id: ChatId, at: Timestamp) -> Result<(), StoreError> {
        let _writes = self.writes.lock().await;
        let path = self.path_of(chat_id);
        let file = match std::fs::File::options().write(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(failed(error, format!("opening `{}`", path.display()))),
        };
        let used = file.metadata().and_then(|meta| meta.modified()).ok();
        if used.is_some_and(|used| used >= system_time(at)) {
            return Ok(());
        }
        file.set_modified(system_time(at))
            .map_err(|error| failed(error, format!("touching `{}`", path.display())))
    }

    async fn delete_stale(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ChatId>, StoreError> {
        let _writes = self.writes.lock().await;
        let reading = |error| failed(error, format!("reading `{}`", self.dir.display()));
        let mut entries = tokio::fs::read_dir(&self.dir).await.map_err(reading)?;
        let mut deleted = Vec::new();
        while deleted.len() < limit {
            let Some(entry) = entries.next_entry().await.map_err(reading)? else { break };
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(chat_id) = name.strip_suffix(SUFFIX).and_then(|id| ChatId::parse(id).ok())
            else {
                continue;
            };
            let Ok(modified) = entry.metadata().await.and_then(|meta| meta.modified()) else {
                continue;
            };
            if DateTime::<Utc>::from(modified) >= before {
                continue;
            }
            match tokio::fs::remove_file(entry.path()).await {
                Ok(()) => deleted.push(chat_id),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(failed(error, format!("removing `{}`", entry.path().display())));
                }
            }
        }
        if !deleted.is_empty() {
            sync_dir(&self.dir)
                .await
                .map_err(|error| failed(error, format!("syncing `{}`", self.dir.display())))?;
        }
        Ok(deleted)
    }
}

/// A name for a temporary file nobody else uses at the same time.
fn uuid_like() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let now = SystemTime::now();
    (u128::from(RandomState::new().hash_one(now)) << 64)
        | u128::from(RandomState::new().hash_one(now))
}
