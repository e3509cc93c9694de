use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sandkeeper_domain::{ContainerId, SessionId, SlotId, Timestamp};
use tokio::sync::{Notify, Semaphore};

use crate::tar::{Entry, files, tar};
use crate::{
    ArchiveError, ArchiveFile, Cause, ContainerExit, ContainerSpec, ContainerState, ExecError,
    ExecOutput, ExecRequest, FileError, ManagedContainer, RuntimeError, SandboxRuntime,
    WorkspacePath, check_archive_file,
};

/// One call the fake runtime received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeCall {
    Create(ContainerSpec),
    Stop(ContainerId),
    Inspect(ContainerId),
    ListManaged,
    Exec(ContainerId, ExecRequest),
    Upload(ContainerId, WorkspacePath, Vec<u8>),
    Download(ContainerId, WorkspacePath, u64),
    WatchExits(Option<Timestamp>),
    ArchiveWorkspace(ContainerId),
    RestoreWorkspace(ContainerId),
    CreatePooled(SlotId),
}

#[derive(Debug, Clone)]
struct FakeContainer {
    state: ContainerState,
    session_id: Option<SessionId>,
    created_at: Timestamp,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<RuntimeCall>,
    containers: BTreeMap<ContainerId, FakeContainer>,
    create_error: Option<RuntimeError>,
    stop_errors: HashMap<ContainerId, RuntimeError>,
    list_error: Option<RuntimeError>,
    exec_results: VecDeque<Result<ExecOutput, ExecError>>,
    files: BTreeMap<(ContainerId, WorkspacePath), Vec<u8>>,
    file_errors: HashMap<WorkspacePath, FileError>,
    watchers: Vec<tokio::sync::mpsc::Sender<ContainerExit>>,
    watch_errors: VecDeque<RuntimeError>,
    archive_errors: VecDeque<ArchiveError>,
    restore_errors: VecDeque<ArchiveError>,
}

/// A container runtime in memory that records every call.
///
/// `create` names the container `container-<session id>` and marks it running; `stop` removes it;
/// `inspect` and `list_managed` read what is there. Failures and a gate that holds `create` open
/// can be scripted.
///
/// `exec`, `upload` and `download` answer [`ExecError::ContainerNotRunning`] /
/// [`FileError::ContainerNotRunning`] for a container that is not there and running. Otherwise
/// `exec` answers the next result queued with [`Self::push_exec_result`] (a successful, silent
/// exit 0 when none is queued) and can be held open with [`Self::hold_execs`]; `upload` keeps
/// the bytes and `download` returns them (`NotFound`, or `TooLarge` beyond the limit), unless a
/// failure was scripted for the path with [`Self::fail_file`].
///
/// `watch_exits` fails with the errors queued by [`Self::fail_watch`], one per call, and
/// otherwise listens until its receiver is closed; [`Self::exit`] stops a container and reports
/// it to every watcher, [`Self::report_exit`] only reports.
///
/// `archive_workspace` is a tar of the container's files (those put or uploaded) and
/// `restore_workspace` checks the archive with [`crate::check_archive`] and replaces them with
/// its regular files; failures can be queued with [`Self::fail_archive`] and
/// [`Self::fail_restore`].
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    gate: Arc<Gate>,
    exec_gate: Arc<ExecGate>,
    watching: Arc<Notify>,
}

#[derive(Debug)]
struct ExecGate {
    enabled: Mutex<bool>,
    held: Mutex<usize>,
    changed: Notify,
    permits: Semaphore,
}

impl Default for ExecGate {
    fn default() -> Self {
        Self {
            enabled: Mutex::new(false),
            held: Mutex::new(0),
            changed: Notify::new(),
            permits: Semaphore::new(0),
        }
    }
}

#[derive(Debug)]
struct Gate {
    enabled: Mutex<bool>,
    create_started: Notify,
    permits: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            enabled: Mutex::new(false),
            create_started: Notify::new(),
            permits: Semaphore::new(0),
        }
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The id the fake gives the container of `session_id`.
    pub fn container_id_for(session_id: SessionId) -> ContainerId {
        ContainerId::new(format!("container-{session_id}")).unwrap()
    }

    /// The id the fake gives the pooled container of `slot_id`.
    pub fn pooled_container_id_for(slot_id: SlotId) -> ContainerId {
        ContainerId::new(format!("pooled-{slot_id}")).unwrap()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<RuntimeCall> {
        self.state().calls.clone()
    }

    /// The specs of every `create` call, in order.
    pub fn create_calls(&self) -> Vec<ContainerSpec> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                RuntimeCall::Create(spec) => Some(spec),
                _ => None,
            })
            .collect()
    }

    /// The container ids of every `stop` call, in order.
    pub fn stop_calls(&self) -> Vec<ContainerId> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                RuntimeCall::Stop(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Every `create` fails with `error` (after being recorded).
    pub fn fail_create(&self, error: RuntimeError) {
        self.state().create_error = Some(error);
    }

    /// `stop` of `container_id` fails with `error` (after being recorded) and keeps it.
    pub fn fail_stop(&self, container_id: ContainerId, error: RuntimeError) {
        self.state().stop_errors.insert(container_id, error);
    }

    /// `list_managed` fails with `error`.
    pub fn fail_list(&self, error: RuntimeError) {
        self.state().list_error = Some(error);
    }

    /// Puts a container in place as if created earlier (a session's, or an orphan).
    pub fn insert_container(
        &self,
        container_id: ContainerId,
        state: ContainerState,
        session_id: Option<SessionId>,
        created_at: Timestamp,
    ) {
        self.state()
            .containers
            .insert(container_id, FakeContainer { state, session_id, created_at });
    }

    /// Changes what `inspect` says of a container (e.g. it exited); `Missing` removes it.
    pub fn set_state(&self, container_id: &ContainerId, state: ContainerState) {
        let mut guard = self.state();
        if state == ContainerState::Missing {
            guard.containers.remove(container_id);
        } else if let Some(container) = guard.containers.get_mut(container_id) {
            container.state = state;
        }
    }

    /// The containers that exist now.
    pub fn container_ids(&self) -> Vec<ContainerId> {
        self.state().containers.keys().cloned().collect()
    }

    /// From now on, `create` records its call, signals [`Self::create_started`] and waits for
    /// [`Self::allow_create`] before returning.
    pub fn hold_creates(&self) {
        *self.gate.enabled.lock().unwrap() = true;
    }

    /// Resolves once a held `create` has started.
    pub async fn create_started(&self) {
        self.gate.create_started.notified().await;
    }

    /// Lets one held `create` finish.
    pub fn allow_create(&self) {
        self.gate.permits.add_permits(1);
    }

    /// The next `exec` (of a running container) answers `result`; results are used in the
    /// order they were queued.
    pub fn push_exec_result(&self, result: Result<ExecOutput, ExecError>) {
        self.state().exec_results.push_back(result);
    }

    /// Every `exec` call so far, in order.
    pub fn exec_calls(&self) -> Vec<(ContainerId, ExecRequest)> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                RuntimeCall::Exec(id, request) => Some((id, request)),
                _ => None,
            })
            .collect()
    }

    /// From now on, `exec` records its call and then waits for [`Self::release_execs`].
    pub fn hold_execs(&self) {
        *self.exec_gate.enabled.lock().unwrap() = true;
    }

    /// Resolves once at least `count` execs are being held.
    pub async fn execs_held(&self, count: usize) {
        loop {
            let changed = self.exec_gate.changed.notified();
            if *self.exec_gate.held.lock().unwrap() >= count {
                return;
            }
            changed.await;
        }
    }

    /// Lets `count` held execs finish.
    pub fn release_execs(&self, count: usize) {
        self.exec_gate.permits.add_permits(count);
    }

    /// Puts a file in a container's workspace, as if written earlier.
    pub fn put_file(&self, container_id: ContainerId, path: WorkspacePath, bytes: Vec<u8>) {
        self.state().files.insert((container_id, path), bytes);
    }

    /// The file at `path` in the container's workspace, if any.
    pub fn file(&self, container_id: &ContainerId, path: &WorkspacePath) -> Option<Vec<u8>> {
        self.state().files.get(&(container_id.clone(), path.clone())).cloned()
    }

    /// `upload` and `download` of `path` (in any container) fail with `error`.
    pub fn fail_file(&self, path: WorkspacePath, error: FileError) {
        self.state().file_errors.insert(path, error);
    }

    /// The container stops running (as if its main process ended) and every watcher is told.
    pub fn exit(&self, container_id: &ContainerId) {
        self.set_state(container_id, ContainerState::Exited);
        let session_id = self.state().containers.get(container_id).and_then(|c| c.session_id);
        self.report_exit(ContainerExit { container_id: container_id.clone(), session_id });
    }

    /// Sends `exit` to every watcher, whatever the container's state.
    pub fn report_exit(&self, exit: ContainerExit) {
        let watchers = self.state().watchers.clone();
        for watcher in watchers {
            // A full or closed channel loses the report, as a lost connection would.
            let _ = watcher.try_send(exit.clone());
        }
    }

    /// The next `watch_exits` call fails at once with `error` (calls fail in the queued order).
    pub fn fail_watch(&self, error: RuntimeError) {
        self.state().watch_errors.push_back(error);
    }

    /// Ends every watch in progress with `error`, as a runtime that went away would.
    pub fn drop_watchers(&self) {
        self.state().watchers.clear();
    }

    /// The `since` of every `watch_exits` call so far, in order.
    pub fn watch_calls(&self) -> Vec<Option<Timestamp>> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                RuntimeCall::WatchExits(since) => Some(since),
                _ => None,
            })
            .collect()
    }

    /// Resolves once at least `count` `watch_exits` calls are listening.
    pub async fn watchers(&self, count: usize) {
        loop {
            let changed = self.watching.notified();
            if self.state().watchers.iter().filter(|w| !w.is_closed()).count() >= count {
                return;
            }
            changed.await;
        }
    }

    /// The next `archive_workspace` calls fail with these errors, one per call.
    pub fn fail_archive(&self, error: ArchiveError) {
        self.state().archive_errors.push_back(error);
    }

    /// The next `restore_workspace` calls fail with these errors, one per call (after the
    /// archive was checked, and without touching the workspace).
    pub fn fail_restore(&self, error: ArchiveError) {
        self.state().restore_errors.push_back(error);
    }

    /// The files in the container's workspace, by path.
    pub fn workspace(&self, container_id: &ContainerId) -> BTreeMap<String, Vec<u8>> {
        self.state()
            .files
            .iter()
            .filter(|((container, _), _)| container == container_id)
            .map(|((_, path), bytes)| (path.as_str().to_owned(), bytes.clone()))
            .collect()
    }

    fn is_running(state: &State, container_id: &ContainerId) -> bool {
        state
            .containers
            .get(container_id)
            .is_some_and(|container| container.state == ContainerState::Running)
    }
}

#[async_trait]
impl SandboxRuntime for FakeRuntime {
    fn pool_fingerprint(&self) -> String {
        "fake".to_owned()
    }

    async fn create_pooled(
        &self,
        slot_id: SlotId,
        created_at: Timestamp,
    ) -> Result<ContainerId, RuntimeError> {
        let error = {
            let mut state = self.state();
            state.calls.push(RuntimeCall::CreatePooled(slot_id));
            state.create_error.clone()
        };
        if let Some(error) = error {
            return Err(error);
        }
        let container_id = Self::pooled_container_id_for(slot_id);
        self.insert_container(container_id.clone(), ContainerState::Running, None, created_at);
        Ok(container_id)
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        let error = {
            let mut state = self.state();
            state.calls.push(RuntimeCall::Create(spec.clone()));
            state.create_error.clone()
        };
        if *self.gate.enabled.lock().unwrap() {
            self.gate.create_started.notify_one();
            self.gate.permits.acquire().await.expect("gate is never closed").forget();
        }
        if let Some(error) = error {
            return Err(error);
        }
        let container_id = Self::container_id_for(spec.session_id);
        self.insert_container(
            container_id.clone(),
            ContainerState::Running,
            Some(spec.session_id),
            spec.created_at,
        );
        Ok(container_id)
    }

    async fn stop(&self, container_id: &ContainerId) -> Result<(), RuntimeError> {
        let mut state = self.state();
        state.calls.push(RuntimeCall::Stop(container_id.clone()));
        if let Some(error) = state.stop_errors.get(container_id) {
            return Err(error.clone());
        }
        state.containers.remove(container_id);
        Ok(())
    }

    async fn inspect(&self, container_id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        let mut state = self.state();
        state.calls.push(RuntimeCall::Inspect(container_id.clone()));
        Ok(state
            .containers
            .get(container_id)
            .map_or(ContainerState::Missing, |container| container.state))
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        let mut state = self.state();
        state.calls.push(RuntimeCall::ListManaged);
        if let Some(error) = &state.list_error {
            return Err(error.clone());
        }
        Ok(state
            .containers
            .iter()
            .map(|(id, container)| ManagedContainer {
                container_id: id.clone(),
                session_id: container.session_id,
                created_at: container.created_at,
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn watch_exits(
        &self,
        since: Option<Timestamp>,
        exits: &tokio::sync::mpsc::Sender<ContainerExit>,
    ) -> Result<(), RuntimeError> {
        {
            let mut state = self.state();
            state.calls.push(RuntimeCall::WatchExits(since));
            if let Some(error) = state.watch_errors.pop_front() {
                return Err(error);
            }
            state.watchers.push(exits.clone());
        }
        self.watching.notify_waiters();
        // Listens until the receiver goes, or until `drop_watchers` forgets this watch.
        loop {
            let dropped = {
                let state = self.state();
                !state.watchers.iter().any(|watcher| watcher.same_channel(exits))
            };
            if dropped {
                return Err(RuntimeError::Unavailable(
                    "the fake runtime dropped its watchers".into(),
                ));
            }
            tokio::select! {
                () = exits.closed() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }

    async fn exec(
        &self,
        container_id: &ContainerId,
        request: &ExecRequest,
    ) -> Result<ExecOutput, ExecError> {
        self.state().calls.push(RuntimeCall::Exec(container_id.clone(), request.clone()));
        if *self.exec_gate.enabled.lock().unwrap() {
            *self.exec_gate.held.lock().unwrap() += 1;
            self.exec_gate.changed.notify_waiters();
            self.exec_gate.permits.acquire().await.expect("gate is never closed").forget();
            *self.exec_gate.held.lock().unwrap() -= 1;
        }
        let mut state = self.state();
        if !Self::is_running(&state, container_id) {
            return Err(ExecError::ContainerNotRunning { container_id: container_id.clone() });
        }
        state.exec_results.pop_front().unwrap_or_else(|| {
            Ok(ExecOutput {
                exit_code: Some(0),
                stdout: Vec::new(),
                stderr: Vec::new(),
                timed_out: false,
                truncated: false,
                duration: Duration::ZERO,
            })
        })
    }

    async fn upload(
        &self,
        container_id: &ContainerId,
        path: &WorkspacePath,
        bytes: &[u8],
    ) -> Result<(), FileError> {
        let mut state = self.state();
        state.calls.push(RuntimeCall::Upload(container_id.clone(), path.clone(), bytes.to_vec()));
        if !Self::is_running(&state, container_id) {
            return Err(FileError::ContainerNotRunning { container_id: container_id.clone() });
        }
        if let Some(error) = state.file_errors.get(path) {
            return Err(error.clone());
        }
        state.files.insert((container_id.clone(), path.clone()), bytes.to_vec());
        Ok(())
    }

    async fn download(
        &self,
        container_id: &ContainerId,
        path: &WorkspacePath,
        limit: u64,
    ) -> Result<Vec<u8>, FileError> {
        let mut state = self.state();
        state.calls.push(RuntimeCall::Download(container_id.clone(), path.clone(), limit));
        if !Self::is_running(&state, container_id) {
            return Err(FileError::ContainerNotRunning { container_id: container_id.clone() });
        }
        if let Some(error) = state.file_errors.get(path) {
            return Err(error.clone());
        }
        let Some(bytes) = state.files.get(&(container_id.clone(), path.clone())) else {
            return Err(FileError::NotFound { path: path.clone() });
        };
        let size = bytes.len() as u64;
        if size > limit {
            return Err(FileError::TooLarge { path: path.clone(), size, limit });
        }
        Ok(bytes.clone())
    }

    /// A tar of the container's files (those put or uploaded), bounded by `limit`.
    async fn archive_workspace(
        &self,
        container_id: &ContainerId,
        limit: u64,
        scratch: &Path,
    ) -> Result<ArchiveFile, ArchiveError> {
        let bytes = {
            let mut state = self.state();
            state.calls.push(RuntimeCall::ArchiveWorkspace(container_id.clone()));
            if !Self::is_running(&state, container_id) {
                return Err(ArchiveError::ContainerNotRunning {
                    container_id: container_id.clone(),
                });
            }
            if let Some(error) = state.archive_errors.pop_front() {
                return Err(error);
            }
            let entries: Vec<Entry> = state
                .files
                .iter()
                .filter(|((container, _), _)| container == container_id)
                .map(|((_, path), bytes)| Entry::file(path.as_str(), bytes))
                .collect();
            tar(&entries)
        };
        if bytes.len() as u64 > limit {
            return Err(ArchiveError::TooLarge { limit });
        }
        ArchiveFile::from_bytes(scratch, &bytes)
            .await
            .map_err(|error| ArchiveError::Local(Cause::new(error)))
    }

    /// Checks the archive, then replaces the container's files with its regular files.
    async fn restore_workspace(
        &self,
        container_id: &ContainerId,
        archive: &ArchiveFile,
    ) -> Result<(), ArchiveError> {
        self.state().calls.push(RuntimeCall::RestoreWorkspace(container_id.clone()));
        check_archive_file(archive.path()).await?;
        let bytes =
            archive.read_all().await.map_err(|error| ArchiveError::Local(Cause::new(error)))?;
        let mut state = self.state();
        if !Self::is_running(&state, container_id) {
            return Err(ArchiveError::ContainerNotRunning { container_id: container_id.clone() });
        }
        if let Some(error) = state.restore_errors.pop_front() {
            return Err(error);
        }
        let restored = files(&bytes).ok_or_else(|| ArchiveError::Tar {
            said: "the fake runtime cannot read this archive".to_owned(),
        })?;
        state.files.retain(|(container, _), _| container != container_id);
        for (path, data) in restored {
            let path = WorkspacePath::parse(&path)
                .map_err(|error| ArchiveError::Tar { said: error.to_string() })?;
            state.files.insert((container_id.clone(), path), data);
        }
        Ok(())
    }
}
