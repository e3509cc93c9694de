//! The harness of the durable-workspace tests: the use cases over fakes, sharing one
//! in-memory workspace store, a fake runtime and a manual clock.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use sandkeeper_domain::{ChatId, SandboxSession, SessionId, Timestamp};
use sandkeeper_ports::inprocess::{
    InMemorySessionRepository, InMemoryWorkspaceStore, ProcessLocalLocker,
};
use sandkeeper_ports::tar::{Entry, tar};
use sandkeeper_ports::testkit::{FakeRuntime, ManualClock};
use sandkeeper_ports::{
    ArchiveError, ArchiveFile, Cause, RuntimeError, WorkspaceMeta, WorkspacePath, WorkspaceStore,
};
use sandkeeper_usecase::{
    CleanupExpiredSandboxes, CreateSandbox, CreateSandboxCommand, DeleteSandbox, Operation,
    SandboxAccess, SandboxSlots, WorkspaceRestore, WorkspaceSettings, Workspaces,
};

pub(crate) const TTL: Duration = Duration::from_secs(300);

pub(crate) fn chat() -> ChatId {
    ChatId::from_uuid(*SessionId::new_v4().as_uuid())
}

pub(crate) fn start() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap()
}

pub(crate) fn path(path: &str) -> WorkspacePath {
    WorkspacePath::parse(path).unwrap()
}

pub(crate) struct Harness {
    pub(crate) runtime: Arc<FakeRuntime>,
    pub(crate) repository: Arc<InMemorySessionRepository>,
    pub(crate) store: Arc<InMemoryWorkspaceStore>,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) workspaces: Workspaces,
    pub(crate) create: CreateSandbox,
    pub(crate) delete: DeleteSandbox,
    pub(crate) cleanup: CleanupExpiredSandboxes,
    /// How the operations inside a sandbox enter it (and mark its workspace used and changed).
    pub(crate) access: SandboxAccess,
    pub(crate) scratch: tempfile::TempDir,
}

impl Harness {
    pub(crate) fn new() -> Self {
        let runtime = Arc::new(FakeRuntime::new());
        let repository = Arc::new(InMemorySessionRepository::new());
        let store = Arc::new(InMemoryWorkspaceStore::new());
        let clock = Arc::new(ManualClock::new(start()));
        let locker = Arc::new(ProcessLocalLocker::new());
        let scratch = tempfile::tempdir().unwrap();
        let settings = WorkspaceSettings {
            size_limit: 1024 * 1024,
            scratch_dir: scratch.path().to_owned(),
            retention: Duration::from_secs(7 * 24 * 3600),
        };
        let workspaces = Workspaces::new(
            store.clone(),
            runtime.clone(),
            repository.clone(),
            locker.clone(),
            clock.clone(),
            settings,
        );
        let some = Some(workspaces.clone());
        let create = CreateSandbox::new(
            repository.clone(),
            locker.clone(),
            runtime.clone(),
            clock.clone(),
            TTL,
        )
        .with_workspaces(some.clone());
        let delete = DeleteSandbox::new(repository.clone(), locker.clone(), runtime.clone())
            .with_workspaces(some.clone());
        let cleanup = CleanupExpiredSandboxes::new(
            repository.clone(),
            locker,
            runtime.clone(),
            clock.clone(),
        )
        .with_workspaces(some);
        let access = SandboxAccess::new(
            repository.clone(),
            runtime.clone(),
            clock.clone(),
            SandboxSlots::new(4),
        )
        .with_workspace_changes(workspaces.changes().clone());
        Self {
            runtime,
            repository,
            store,
            clock,
            workspaces,
            create,
            delete,
            cleanup,
            access,
            scratch,
        }
    }

    pub(crate) async fn create(
        &self,
        chat_id: ChatId,
    ) -> (SandboxSession, Option<WorkspaceRestore>) {
        let outcome = self.create.execute(CreateSandboxCommand::new(chat_id)).await.unwrap();
        (outcome.session, outcome.workspace)
    }

    /// Writes a file into the sandbox's workspace as an upload would: entering the sandbox
    /// first, which marks its workspace used and changed.
    pub(crate) async fn write(&self, session: &SandboxSession, name: &str, bytes: &[u8]) {
        let entered = self.access.enter(session.chat_id, Operation::Upload).await.unwrap();
        self.runtime.put_file(session.container_id.clone(), path(name), bytes.to_vec());
        drop(entered);
    }

    /// A new chat's sandbox, with `name` written into its workspace.
    pub(crate) async fn sandbox_with_file(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> (ChatId, SandboxSession) {
        let chat_id = chat();
        let (session, _) = self.create(chat_id).await;
        self.write(&session, name, bytes).await;
        (chat_id, session)
    }

    pub(crate) fn files(&self, session: &SandboxSession) -> Vec<(String, Vec<u8>)> {
        self.runtime.workspace(&session.container_id).into_iter().collect()
    }

    pub(crate) async fn stored(&self, chat_id: ChatId) -> Option<WorkspaceMeta> {
        self.store.meta(chat_id).await.unwrap()
    }

    pub(crate) async fn put_stored(&self, chat_id: ChatId, bytes: &[u8]) -> WorkspaceMeta {
        let meta = WorkspaceMeta {
            chat_id,
            size_bytes: bytes.len() as u64,
            saved_at: start(),
            session_id: None,
        };
        let file = ArchiveFile::from_bytes(self.scratch.path(), bytes).await.unwrap();
        self.store.put(&meta, file).await.unwrap();
        meta
    }

    /// Stores an archive for `chat_id` that holds `name` and nothing else.
    pub(crate) async fn put_stored_file(
        &self,
        chat_id: ChatId,
        name: &str,
        bytes: &[u8],
    ) -> WorkspaceMeta {
        self.put_stored(chat_id, &tar(&[Entry::file(name, bytes)])).await
    }

    pub(crate) fn scratch_is_empty(&self) -> bool {
        std::fs::read_dir(self.scratch.path()).map(|dir| dir.count() == 0).unwrap_or(true)
    }
}

/// What [`Harness::files`] answers for a workspace that holds `name` and nothing else.
pub(crate) fn only_file(name: &str, bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![(name.to_owned(), bytes.to_vec())]
}

pub(crate) fn unavailable() -> ArchiveError {
    ArchiveError::Runtime(RuntimeError::Unavailable(Cause::message("engine down")))
}
