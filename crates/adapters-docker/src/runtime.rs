use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::EventMessage;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HostConfig,
    HostConfigLogConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, ListContainersOptions, RemoveContainerOptions,
};
use chrono::{SecondsFormat, TimeZone, Utc};
use futures::StreamExt;
use sandkeeper_domain::Timestamp;
use sandkeeper_domain::{ContainerId, SessionId, SlotId};
use sandkeeper_ports::{
    ArchiveError, ArchiveFile, Cause, ContainerExit, ContainerSpec, ContainerState, ExecError,
    ExecOutput, ExecRequest, FileError, ManagedContainer, OutputSender, ProcessError, ProcessInfo,
    ProcessLogs, ProcessSpec, Report, RuntimeError, SandboxRuntime, Terminal, WorkspacePath,
};

use crate::client::{Client, EngineLoss, is_conflict, is_not_found};
use crate::config::{ConfigError, DockerConfig, workspace_owner_options};
use crate::shell::{LIVENESS_INTERVAL, Sandbox, runs_for};
use crate::{archive, exec, files, processes, terminal};

/// Marks a container as created by sandkeeper (value `true`).
pub const LABEL_MANAGED: &str = "io.sandkeeper.managed";
/// The deployment that owns the container ([`DockerConfig::instance_id`]).
pub const LABEL_INSTANCE: &str = "io.sandkeeper.instance";
pub const LABEL_SESSION: &str = "io.sandkeeper.session";
pub const LABEL_CHAT: &str = "io.sandkeeper.chat";
/// When the session expires, in RFC 3339 (UTC, seconds).
pub const LABEL_EXPIRES_AT: &str = "io.sandkeeper.expires-at";
/// The engine of the deployment the container runs on ([`DockerConfig::engine`]).
pub const LABEL_ENGINE: &str = "io.sandkeeper.engine";
/// The uid (and gid) the sandbox runs as, from [`DockerConfig::uid_range`].
pub const LABEL_UID: &str = "io.sandkeeper.uid";
/// Marks a container made for the warm pool (value `true`). It has no session or chat label:
/// which chat claimed it is in the store (its session row's container id).
pub const LABEL_POOL: &str = "io.sandkeeper.pool";
/// The configuration a pooled container was made with ([`DockerRuntime::fingerprint`]).
pub const LABEL_POOL_CONFIG: &str = "io.sandkeeper.pool.config";

const WORKSPACE: &str = "/workspace";
const TMP: &str = "/tmp";

/// The [`SandboxRuntime`] on a Docker engine, through bollard.
///
/// Cloning is cheap and clones share one connection.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

/// The container lifecycle and what it remembers; the engine is reached through [`Client`],
/// commands and transfers through [`crate::exec`] and [`crate::files`].
#[derive(Debug)]
struct Inner {
    config: DockerConfig,
    client: Client,
    /// The uids of sandboxes this process is creating right now, not yet visible in a listing.
    creating_uids: Mutex<HashSet<u32>>,
    /// The uid each sandbox's commands run as, by container id: recorded at create, read from
    /// the container's label the first time otherwise (after a restart, or another replica's
    /// sandbox), forgotten at removal.
    command_uids: Mutex<HashMap<String, u32>>,
    /// The name of the configuration containers are made with; see [`DockerRuntime::fingerprint`].
    fingerprint: String,
}

/// More remembered uids than sandboxes can run at once on any engine; past it the memory is
/// cleared (and refilled from labels), so containers removed behind this process's back cannot
/// grow it.
const COMMAND_UIDS_HELD: usize = 65_536;

impl DockerRuntime {
    /// Validates the configuration and prepares the client. The engine is not contacted: it is
    /// reached (and the API version negotiated) on the first call, and again after it was lost,
    /// so sandkeeper can start while Docker is down and recover by itself.
    pub fn new(config: DockerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let endpoint = config.resolve_docker_host()?;
        let client = Client::new(endpoint, config.call_timeout);
        let (creating_uids, command_uids) = (Mutex::default(), Mutex::default());
        let mut inner =
            Inner { config, client, creating_uids, command_uids, fingerprint: String::new() };
        inner.fingerprint = inner.fingerprint();
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The name of the configuration this runtime makes containers with: a hash of the
    /// container's whole definition (image, command, limits, runtime, network, user,
    /// mounts...) without its labels and its uid, so that any setting that shapes a container
    /// changes it. Written to each pooled container's `io.sandkeeper.pool.config` label.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// The engine address in use (`unix:///var/run/docker.sock`, `tcp://...`).
    pub fn endpoint(&self) -> &str {
        self.inner.client.endpoint()
    }

    pub fn config(&self) -> &DockerConfig {
        &self.inner.config
    }

    /// The name of a pooled container: `sandkeeper-pool-<slot id>`.
    pub fn pooled_container_name(slot_id: &SlotId) -> String {
        format!("sandkeeper-pool-{slot_id}")
    }

    /// The name of a session's container: `sandkeeper-<session id>`.
    pub fn container_name(session_id: &SessionId) -> String {
        format!("sandkeeper-{session_id}")
    }
}

#[async_trait]
impl SandboxRuntime for DockerRuntime {
    fn pool_fingerprint(&self) -> String {
        self.inner.fingerprint.clone()
    }

    async fn create_pooled(
        &self,
        slot_id: SlotId,
        created_at: Timestamp,
    ) -> Result<ContainerId, RuntimeError> {
        let _ = created_at;
        let inner = &self.inner;
        let result =
            inner.client.call("create", |docker| inner.create_pooled(docker, slot_id)).await;
        if let Err(RuntimeError::Timeout { .. }) = result {
            remove_in_background(inner, Self::pooled_container_name(&slot_id));
        }
        result
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        let inner = &self.inner;
        let result = inner.client.call("create", |docker| inner.create(docker, spec)).await;
        if let Err(RuntimeError::Timeout { .. }) = result {
            remove_in_background(inner, Self::container_name(&spec.session_id));
        }
        result
    }

    async fn stop(&self, container_id: &ContainerId) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        inner.client.call("stop", |docker| inner.remove(docker, container_id.as_str())).await
    }

    async fn inspect(&self, container_id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        let inner = &self.inner;
        inner
            .client
            .call("inspect", |docker| async move {
                match docker.inspect_container(container_id.as_str(), None).await {
                    Ok(found) => Ok(state_of(&found)),
                    Err(error) if is_not_found(&error) => Ok(ContainerState::Missing),
                    Err(error) => Err(inner.client.translate(error)),
                }
            })
            .await
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        let inner = &self.inner;
        inner.client.call("list_managed", |docker| inner.list_managed(docker)).await
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        inner
            .client
            .call("ping", |docker| async move {
                docker.ping().await.map(drop).map_err(|error| inner.client.translate(error))
            })
            .await
    }

    /// Follows the engine's event stream, filtered to the `die` events of this instance's
    /// managed containers (the engine sends one whenever a container's main process ends,
    /// including when sandkeeper force-removes a running container).
    async fn watch_exits(
        &self,
        since: Option<Timestamp>,
        exits: &tokio::sync::mpsc::Sender<ContainerExit>,
    ) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        let docker = inner.client.connected("watch_exits").await?;
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("event".to_owned(), vec!["die".to_owned()]),
            (
                "label".to_owned(),
                vec![
                    format!("{LABEL_MANAGED}=true"),
                    format!("{LABEL_INSTANCE}={}", inner.config.instance_id),
                ],
            ),
        ]);
        let since =
            since.map(|at| format!("{}.{:09}", at.timestamp(), at.timestamp_subsec_nanos()));
        let options = EventsOptions { since, until: None, filters: Some(filters) };
        let mut events = docker.events(Some(options));
        loop {
            let next = tokio::select! {
                () = exits.closed() => return Ok(()),
                next = events.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    let engine = &inner.config.engine;
                    let ours = event
                        .actor
                        .as_ref()
                        .is_some_and(|actor| of_engine(actor.attributes.as_ref(), engine));
                    if let Some(exit) = exit_of(event).filter(|_| ours) {
                        tracing::debug!(container = %exit.container_id, "container exited");
                        if exits.send(exit).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Some(Err(error)) => {
                    let error = inner.client.translate(error);
                    return Err(inner.client.lost(error).await);
                }
                None => {
                    return Err(inner
                        .client
                        .lost(RuntimeError::Unavailable(
                            format!(
                                "the Docker engine at {} ended its event stream",
                                inner.client.endpoint()
                            )
                            .into(),
                        ))
                        .await);
                }
            }
        }
    }

    async fn exec(
        &self,
        container_id: &ContainerId,
        request: &ExecRequest,
    ) -> Result<ExecOutput, ExecError> {
        self.inner.exec(container_id, request, None).await
    }

    async fn upload(
        &self,
        container_id: &ContainerId,
        path: &WorkspacePath,
        bytes: &[u8],
    ) -> Result<(), FileError> {
        let transfer = async |sandbox: &Sandbox<'_>| files::upload(sandbox, path, bytes).await;
        self.inner.transfer("upload", container_id, transfer).await
    }

    async fn download(
        &self,
        container_id: &ContainerId,
        path: &WorkspacePath,
        limit: u64,
    ) -> Result<Vec<u8>, FileError> {
        let transfer = async |sandbox: &Sandbox<'_>| files::download(sandbox, path, limit).await;
        self.inner.transfer("download", container_id, transfer).await
    }

    async fn archive_workspace(
        &self,
        container_id: &ContainerId,
        limit: u64,
        scratch: &Path,
    ) -> Result<ArchiveFile, ArchiveError> {
        let run = async |sandbox: &Sandbox<'_>| archive::archive(sandbox, limit, scratch).await;
        self.inner
            .in_sandbox_for(
                "workspace_archive",
                container_id,
                archive::ARCHIVE_TIMEOUT,
                archive::from_exec,
                run,
            )
            .await
    }

    async fn restore_workspace(
        &self,
        container_id: &ContainerId,
        file: &ArchiveFile,
    ) -> Result<(), ArchiveError> {
        let run = async |sandbox: &Sandbox<'_>| archive::restore(sandbox, file).await;
        self.inner
            .in_sandbox_for(
                "workspace_restore",
                container_id,
                archive::ARCHIVE_TIMEOUT,
                archive::from_exec,
                run,
            )
            .await
    }

    async fn exec_streamed(
        &self,
        container_id: &ContainerId,
        request: &ExecRequest,
        output: &OutputSender,
    ) -> Result<ExecOutput, ExecError> {
        self.inner.exec(container_id, request, Some(output)).await
    }

    async fn start_process(
        &self,
        container_id: &ContainerId,
        spec: &ProcessSpec,
    ) -> Result<ProcessInfo, ProcessError> {
        let start = async |sandbox: &Sandbox<'_>| processes::start(sandbox, spec).await;
        self.inner.in_sandbox("process_start", container_id, ProcessError::from, start).await
    }

    async fn list_processes(
        &self,
        container_id: &ContainerId,
    ) -> Result<Vec<ProcessInfo>, ProcessError> {
        let list = async |sandbox: &Sandbox<'_>| processes::list(sandbox).await;
        self.inner.in_sandbox("process_list", container_id, ProcessError::from, list).await
    }

    async fn process_logs(
        &self,
        container_id: &ContainerId,
        process_id: &str,
        offsets: (u64, u64),
        limit: usize,
    ) -> Result<ProcessLogs, ProcessError> {
        let read = async |sandbox: &Sandbox<'_>| {
            processes::logs(sandbox, process_id, offsets, limit).await
        };
        self.inner.in_sandbox("process_logs", container_id, ProcessError::from, read).await
    }

    async fn process_stdin(
        &self,
        container_id: &ContainerId,
        process_id: &str,
        bytes: &[u8],
    ) -> Result<(), ProcessError> {
        let write =
            async |sandbox: &Sandbox<'_>| processes::stdin(sandbox, process_id, bytes).await;
        self.inner.in_sandbox("process_stdin", container_id, ProcessError::from, write).await
    }

    async fn kill_process(
        &self,
        container_id: &ContainerId,
        process_id: &str,
    ) -> Result<(), ProcessError> {
        let kill = async |sandbox: &Sandbox<'_>| processes::kill(sandbox, process_id).await;
        self.inner.in_sandbox("process_kill", container_id, ProcessError::from, kill).await
    }

    async fn open_terminal(
        &self,
        container_id: &ContainerId,
        cols: u16,
        rows: u16,
    ) -> Result<Terminal, ExecError> {
        let inner = Arc::clone(&self.inner);
        let container = container_id.clone();
        let (ready, started) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let docker = match inner.client.get().await {
                Ok(docker) => docker,
                Err(error) => return drop(ready.send(Err(ExecError::Runtime(error)))),
            };
            match inner.sandbox(&docker, &container).await {
                Ok(sandbox) => terminal::run(&sandbox, (cols, rows), ready).await,
                Err(error) => drop(ready.send(Err(error))),
            }
        });
        let bound = self.inner.config.call_timeout.saturating_mul(3);
        match tokio::time::timeout(bound, started).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ExecError::Runtime(RuntimeError::Failed(
                "the terminal's task ended before its shell started".into(),
            ))),
            Err(_) => Err(ExecError::Runtime(RuntimeError::Timeout {
                operation: "terminal",
                after: bound,
            })),
        }
    }
}

impl Inner {
    /// The one way a caller's command runs: its output kept for the answer, or sent to
    /// `forward` as it is read.
    async fn exec(
        &self,
        container_id: &ContainerId,
        request: &ExecRequest,
        forward: Option<&OutputSender>,
    ) -> Result<ExecOutput, ExecError> {
        exec::check(request)?;
        self.client
            .long_call("exec", runs_for(request.timeout), |docker| async move {
                let sandbox = self.sandbox(&docker, container_id).await?;
                exec::exec(&sandbox, request, forward).await
            })
            .await
    }

    async fn create(
        &self,
        docker: Docker,
        spec: &ContainerSpec,
    ) -> Result<ContainerId, RuntimeError> {
        let name = DockerRuntime::container_name(&spec.session_id);
        let uid = self.reserve_uid(&docker).await?;
        let id = match self
            .create_container(&docker, &name, self.body(session_labels(spec), uid.0))
            .await?
        {
            Created::New(id) => id,
            Created::NameTaken => match self.existing(&docker, &name, spec).await? {
                Existing::Running(id) => return container_id(id),
                Existing::Removed => {
                    match self
                        .create_container(&docker, &name, self.body(session_labels(spec), uid.0))
                        .await?
                    {
                        Created::New(id) => id,
                        Created::NameTaken => {
                            return Err(RuntimeError::Failed(format!(
                                "container name {name} was taken again while creating the sandbox of \
                             session {}; another process is creating it concurrently",
                                spec.session_id
                            ).into()));
                        }
                    }
                }
            },
        };
        self.start_or_discard(&docker, &id, &name).await?;
        self.remember_uid(&id, uid.0);
        container_id(id)
    }

    async fn create_pooled(
        &self,
        docker: Docker,
        slot_id: SlotId,
    ) -> Result<ContainerId, RuntimeError> {
        let name = DockerRuntime::pooled_container_name(&slot_id);
        let uid = self.reserve_uid(&docker).await?;
        let labels = [
            (LABEL_POOL.to_owned(), "true".to_owned()),
            (LABEL_POOL_CONFIG.to_owned(), self.fingerprint.clone()),
        ];
        // A slot id is new for each attempt: a name taken is someone else's container.
        let id = match self.create_container(&docker, &name, self.body(labels, uid.0)).await? {
            Created::New(id) => id,
            Created::NameTaken => {
                return Err(RuntimeError::Failed(
                    format!("a container named {name} already exists").into(),
                ));
            }
        };
        self.start_or_discard(&docker, &id, &name).await?;
        self.remember_uid(&id, uid.0);
        container_id(id)
    }

    /// Starts a container just created; one that cannot start is removed.
    async fn start_or_discard(
        &self,
        docker: &Docker,
        id: &str,
        name: &str,
    ) -> Result<(), RuntimeError> {
        if let Err(error) = docker.start_container(id, None).await {
            let cause = self.client.translate(error);
            self.discard(docker, id).await;
            return Err(match cause {
                RuntimeError::Failed(cause) => RuntimeError::Failed(cause.context(format!(
                    "container {name} was created but could not start, so it was removed"
                ))),
                other => other,
            });
        }
        Ok(())
    }

    /// See [`DockerRuntime::fingerprint`]: FNV-1a (stable across builds, hosts and processes)
    /// of the definition's JSON with its keys sorted (the body holds hash maps, whose order
    /// differs from one process to the next), without labels, for a fixed uid.
    fn fingerprint(&self) -> String {
        let mut body = self.body([], 0);
        body.labels = None;
        let json = serde_json::to_value(&body).map(sorted).unwrap_or_default().to_string();
        let json = json.as_bytes();
        let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    fn remember_uid(&self, container: &str, uid: u32) {
        let mut uids = self.command_uids.lock().unwrap_or_else(|p| p.into_inner());
        if uids.len() >= COMMAND_UIDS_HELD {
            uids.clear();
        }
        uids.insert(container.to_owned(), uid);
    }

    fn forget_uid(&self, container: &str) {
        self.command_uids.lock().unwrap_or_else(|p| p.into_inner()).remove(container);
    }

    /// Runs a file transfer in the container's sandbox, bounded like a command whose timeout
    /// is the call timeout.
    async fn transfer<T>(
        &self,
        operation: &'static str,
        container: &ContainerId,
        run: impl AsyncFnOnce(&Sandbox<'_>) -> Result<T, FileError>,
    ) -> Result<T, FileError> {
        self.in_sandbox(operation, container, files::from_exec, run).await
    }

    /// Runs `run` in the container, bounded like a transfer; `lift` says what a failure to
    /// get into the container is in the caller's error.
    async fn in_sandbox<T, E: From<RuntimeError> + EngineLoss>(
        &self,
        operation: &'static str,
        container: &ContainerId,
        lift: fn(ExecError) -> E,
        run: impl AsyncFnOnce(&Sandbox<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.in_sandbox_for(operation, container, self.config.call_timeout, lift, run).await
    }

    /// [`Self::in_sandbox`] for work whose own timeout is `timeout` (an archive's).
    async fn in_sandbox_for<T, E: From<RuntimeError> + EngineLoss>(
        &self,
        operation: &'static str,
        container: &ContainerId,
        timeout: Duration,
        lift: fn(ExecError) -> E,
        run: impl AsyncFnOnce(&Sandbox<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.client
            .long_call(operation, runs_for(timeout), |docker| async move {
                let sandbox = self.sandbox(&docker, container).await.map_err(lift)?;
                run(&sandbox).await
            })
            .await
    }

    /// The container as its commands see it, with the user they run as.
    async fn sandbox<'a>(
        &'a self,
        docker: &'a Docker,
        container: &'a ContainerId,
    ) -> Result<Sandbox<'a>, ExecError> {
        let user = self.command_user(docker, container).await?;
        let liveness = self.config.runtime.is_some().then_some(LIVENESS_INTERVAL);
        Ok(Sandbox { client: &self.client, docker, container, user, liveness })
    }

    /// The `user` every exec in the container runs as: the sandbox's uid and gid. `None` for a
    /// container without the label (made before sandboxes had uids of their own), whose
    /// commands run as its configured user.
    async fn command_user(
        &self,
        docker: &Docker,
        container: &ContainerId,
    ) -> Result<Option<String>, ExecError> {
        let known = self
            .command_uids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(container.as_str())
            .copied();
        let uid = match known {
            Some(uid) => Some(uid),
            None => {
                let found = match docker.inspect_container(container.as_str(), None).await {
                    Ok(found) => found,
                    Err(error) if is_not_found(&error) => {
                        return Err(ExecError::ContainerNotRunning {
                            container_id: container.clone(),
                        });
                    }
                    Err(error) => return Err(ExecError::Runtime(self.client.translate(error))),
                };
                let uid = label(&found, LABEL_UID).and_then(|uid| uid.parse::<u32>().ok());
                if let Some(uid) = uid {
                    self.remember_uid(container.as_str(), uid);
                }
                uid
            }
        };
        Ok(uid.map(|uid| format!("{uid}:{uid}")))
    }

    /// A uid of the configured range that no managed container on the engine (of any instance:
    /// they share the kernel's per-user limits) and no create in flight in this process uses,
    /// picked at random so that replicas creating at the same moment rarely pick the same one.
    /// Held until the returned reservation is dropped, by then the container carries its label.
    async fn reserve_uid(&self, docker: &Docker) -> Result<UidReservation<'_>, RuntimeError> {
        let listed = self.list(docker, vec![format!("{LABEL_MANAGED}=true")]).await?;
        let used: HashSet<u32> = listed
            .iter()
            .filter_map(|summary| summary.labels.as_ref()?.get(LABEL_UID)?.parse().ok())
            .collect();
        let range = self.config.uid_range;
        let mut creating = self.creating_uids.lock().unwrap_or_else(|p| p.into_inner());
        let taken = |uid: u32| used.contains(&uid) || creating.contains(&uid);
        let random = RandomState::new().hash_one(std::time::SystemTime::now());
        // Random probes find a free uid at once unless the range is nearly full; then a walk
        // from a random start finds the last free ones.
        let start = u32::try_from(random % range.len()).unwrap_or(0);
        let probes = (0..16u64).map(|i| {
            let offset = RandomState::new().hash_one(random.wrapping_add(i)) % range.len();
            range.first + u32::try_from(offset).unwrap_or(0)
        });
        let walk = (0..range.len()).map(|i| {
            let offset = (u64::from(start) + i) % range.len();
            range.first + u32::try_from(offset).unwrap_or(0)
        });
        let uid = probes.chain(walk).find(|&uid| !taken(uid)).ok_or_else(|| {
            RuntimeError::Failed(format!(
                "every uid of the sandbox uid range {range} is in use by a managed container on \
                 the engine"
            ).into())
        })?;
        creating.insert(uid);
        Ok(UidReservation(uid, &self.creating_uids))
    }

    async fn create_container(
        &self,
        docker: &Docker,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<Created, RuntimeError> {
        let options = CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() };
        match docker.create_container(Some(options), body).await {
            Ok(created) => Ok(Created::New(created.id)),
            // "No such image: ..."; other 404s (a missing network on newer engines) keep their
            // own message.
            Err(error) if is_not_found(&error) && mentions_image(&error) => {
                Err(RuntimeError::ImageMissing { image: self.config.image.clone() })
            }
            Err(error) if is_conflict(&error) => Ok(Created::NameTaken),
            Err(error) => Err(self.client.translate(error)),
        }
    }

    /// A retried create finds the container of its first attempt: a running one of ours is the
    /// answer; one that never started is replaced; someone else's is left alone.
    async fn existing(
        &self,
        docker: &Docker,
        name: &str,
        spec: &ContainerSpec,
    ) -> Result<Existing, RuntimeError> {
        let found = match docker.inspect_container(name, None).await {
            Ok(found) => found,
            // Removed between our create and this inspect: the name is free again.
            Err(error) if is_not_found(&error) => return Ok(Existing::Removed),
            Err(error) => return Err(self.client.translate(error)),
        };
        let id = found.id.clone().unwrap_or_else(|| name.to_owned());
        let session = label(&found, LABEL_SESSION);
        if !self.is_ours(&found) || session != Some(spec.session_id.to_string().as_str()) {
            return Err(RuntimeError::Failed(
                format!(
                    "a container named {name} ({id}) already exists and is not this instance's \
                 container for session {}",
                    spec.session_id
                )
                .into(),
            ));
        }
        if state_of(&found) == ContainerState::Running {
            tracing::debug!(container = %id, "create found the running container of an earlier attempt");
            return Ok(Existing::Running(id));
        }
        self.force_remove(docker, &id).await?;
        Ok(Existing::Removed)
    }

    /// Removes a container that carries this instance's labels; refuses any other.
    async fn remove(&self, docker: Docker, target: &str) -> Result<(), RuntimeError> {
        let found = match docker.inspect_container(target, None).await {
            Ok(found) => found,
            Err(error) if is_not_found(&error) => return Ok(()),
            Err(error) => return Err(self.client.translate(error)),
        };
        if !self.is_ours(&found) {
            let container_id = ContainerId::new(found.id.unwrap_or_else(|| target.to_owned()))
                .map_err(|error| RuntimeError::Failed(Cause::new(error)))?;
            return Err(RuntimeError::NotManaged { container_id });
        }
        let id = found.id.as_deref().unwrap_or(target);
        let removed = self.force_remove(&docker, id).await;
        if removed.is_ok() {
            self.forget_uid(id);
        }
        removed
    }

    /// Kills and removes at once, with its anonymous volumes: a sandbox is disposable, so there is
    /// no point in `docker stop`'s grace period.
    async fn force_remove(&self, docker: &Docker, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions { force: true, v: true, link: false };
        match docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            // "removal of container ... is already in progress": someone else is doing our job.
            Err(error) if is_conflict(&error) => Ok(()),
            Err(error) => Err(self.client.translate(error)),
        }
    }

    /// Best effort after a failed start; the maintenance sweep reaps what this misses.
    async fn discard(&self, docker: &Docker, id: &str) {
        if let Err(error) = self.force_remove(docker, id).await {
            tracing::warn!(container = %id, error = %Report(&error),
                "could not remove a container that failed to start");
        }
    }

    /// Every container on the engine, running or not, that carries all of `labels`.
    async fn list(
        &self,
        docker: &Docker,
        labels: Vec<String>,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let filters = HashMap::from([("label".to_owned(), labels)]);
        let options =
            ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        docker.list_containers(Some(options)).await.map_err(|error| self.client.translate(error))
    }

    async fn list_managed(&self, docker: Docker) -> Result<Vec<ManagedContainer>, RuntimeError> {
        let labels = vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_INSTANCE}={}", self.config.instance_id),
        ];
        let summaries = self.list(&docker, labels).await?;
        let engine = &self.config.engine;
        let listed_at = Utc::now();
        Ok(summaries
            .into_iter()
            .filter(|summary| of_engine(summary.labels.as_ref(), engine))
            .filter_map(|summary| {
                let container_id = ContainerId::new(summary.id?).ok()?;
                let session_id = session_of(summary.labels.as_ref());
                // The engine lists creation times in whole seconds, cut down. Taken as they are,
                // a container would look up to a second older than it is, and the orphan grace
                // would shrink by as much (to nothing at the 1 s minimum: a sandbox between its
                // container's start and its row's save could be reaped). So the end of that
                // second is used, or the listing time if that is sooner: never before the
                // container really was created. The engine always reports a creation time; a
                // container without one is treated as the oldest possible, which only makes it
                // a candidate for reaping sooner.
                let created_at = summary
                    .created
                    .and_then(|seconds| Utc.timestamp_opt(seconds.checked_add(1)?, 0).single())
                    .map(|end_of_second| end_of_second.min(listed_at))
                    .unwrap_or_default();
                Some(ManagedContainer { container_id, session_id, created_at })
            })
            .collect())
    }

    fn is_ours(&self, found: &ContainerInspectResponse) -> bool {
        label(found, LABEL_MANAGED) == Some("true")
            && label(found, LABEL_INSTANCE) == Some(self.config.instance_id.as_str())
    }

    /// A sandbox's container: labelled as managed by this instance with `labels` added,
    /// hardened as configured, running as `uid`.
    fn body(
        &self,
        labels: impl IntoIterator<Item = (String, String)>,
        uid: u32,
    ) -> ContainerCreateBody {
        let config = &self.config;
        let mut labels: HashMap<String, String> = labels.into_iter().collect();
        labels.extend([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_INSTANCE.to_owned(), config.instance_id.clone()),
            (LABEL_UID.to_owned(), uid.to_string()),
            (LABEL_ENGINE.to_owned(), config.engine.clone()),
        ]);
        let tmpfs = HashMap::from([
            (
                TMP.to_owned(),
                format!("rw,nosuid,nodev,noexec,size={},mode=1777", config.tmp_size_bytes),
            ),
            (
                WORKSPACE.to_owned(),
                format!(
                    "rw,nosuid,nodev,exec,size={},{}",
                    config.workspace_size_bytes,
                    workspace_owner_options(uid)
                ),
            ),
        ]);
        let memory = i64::try_from(config.memory_bytes).unwrap_or(i64::MAX);
        let host_config = HostConfig {
            network_mode: Some(config.network_mode.clone()),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: (!config.cap_add.is_empty()).then(|| config.cap_add.clone()),
            security_opt: config.no_new_privileges.then(|| vec!["no-new-privileges".to_owned()]),
            readonly_rootfs: Some(config.read_only_root),
            tmpfs: Some(tmpfs),
            pids_limit: Some(i64::from(config.pids_limit)),
            memory: Some(memory),
            // Equal to the memory limit: no swap on top of it.
            memory_swap: Some(memory),
            nano_cpus: Some((config.cpus * 1e9).round() as i64),
            init: Some(config.init),
            runtime: config.runtime.clone(),
            privileged: Some(false),
            publish_all_ports: Some(false),
            // What a sandbox prints to its main process's output is kept nowhere: with the
            // engine's default driver it would fill the engine's disk and cost it CPU.
            log_config: Some(HostConfigLogConfig { typ: Some("none".to_owned()), config: None }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(config.image.clone()),
            cmd: config.command.clone(),
            // The main process runs as the keeper uid, the commands as the sandbox's (see
            // `UidRange::keeper`).
            user: Some(format!("{keeper}:{keeper}", keeper = config.uid_range.keeper())),
            // The uid has no entry in the image's /etc/passwd, which is where HOME would
            // come from; execs inherit it.
            env: Some(vec![format!("HOME={WORKSPACE}")]),
            working_dir: Some(WORKSPACE.to_owned()),
            labels: Some(labels),
            tty: Some(false),
            open_stdin: Some(false),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// `value` with the keys of every object in sorted order.
/// Removes the container `name` once the engine answers. The engine may finish a create after
/// we gave up on it: this way a timed-out create leaves nothing behind (the maintenance sweep is
/// the backstop).
fn remove_in_background(inner: &Arc<Inner>, name: String) {
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        if let Err(error) = inner.client.call("stop", |docker| inner.remove(docker, &name)).await {
            tracing::warn!(container = %name, error = %Report(&error),
                "could not remove the container of a timed-out create");
        }
    });
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// The labels that tie a session's container to its session and chat.
fn session_labels(spec: &ContainerSpec) -> [(String, String); 3] {
    [
        (LABEL_SESSION.to_owned(), spec.session_id.to_string()),
        (LABEL_CHAT.to_owned(), spec.chat_id.to_string()),
        (LABEL_EXPIRES_AT.to_owned(), spec.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
    ]
}

/// A uid held for a create in flight; released when dropped.
struct UidReservation<'a>(u32, &'a Mutex<HashSet<u32>>);

impl Drop for UidReservation<'_> {
    fn drop(&mut self) {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

enum Created {
    New(String),
    NameTaken,
}

enum Existing {
    Running(String),
    Removed,
}

/// The exit an engine event reports, if it is a container's with a usable id.
fn exit_of(event: EventMessage) -> Option<ContainerExit> {
    let actor = event.actor?;
    let container_id = ContainerId::new(actor.id?).ok()?;
    let session_id = session_of(actor.attributes.as_ref());
    Some(ContainerExit { container_id, session_id })
}

/// Whether a container with these labels (or an event's attributes) belongs to `engine`: it
/// carries the engine's name, or, for the engine `default`, no engine label at all (containers
/// made before a deployment had engines, or by hand with only the managed labels).
fn of_engine(labels: Option<&HashMap<String, String>>, engine: &str) -> bool {
    match labels.and_then(|labels| labels.get(LABEL_ENGINE)) {
        Some(named) => named == engine,
        None => engine == "default",
    }
}

/// The session a container's labels (or an event's attributes, which carry them) name.
fn session_of(labels: Option<&HashMap<String, String>>) -> Option<SessionId> {
    SessionId::parse(labels?.get(LABEL_SESSION)?).ok()
}

fn mentions_image(error: &bollard::errors::Error) -> bool {
    matches!(error, bollard::errors::Error::DockerResponseServerError { message, .. }
        if message.to_ascii_lowercase().contains("image"))
}

fn container_id(id: String) -> Result<ContainerId, RuntimeError> {
    ContainerId::new(id).map_err(|error| {
        RuntimeError::Failed(
            Cause::new(error).context("the Docker engine returned an unusable container id"),
        )
    })
}

fn label<'a>(found: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    found.config.as_ref()?.labels.as_ref()?.get(key).map(String::as_str)
}

/// Running means running now: paused or restarting containers cannot serve a chat.
fn state_of(found: &ContainerInspectResponse) -> ContainerState {
    let state = found.state.as_ref();
    let flag = |get: fn(&bollard::models::ContainerState) -> Option<bool>| {
        state.and_then(get).unwrap_or(false)
    };
    if flag(|s| s.running) && !flag(|s| s.paused) && !flag(|s| s.restarting) {
        ContainerState::Running
    } else {
        ContainerState::Exited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_belongs_to_the_engine_it_names_and_an_unnamed_one_to_default() {
        let labels = |engine: Option<&str>| {
            let mut labels = HashMap::from([(LABEL_MANAGED.to_owned(), "true".to_owned())]);
            if let Some(engine) = engine {
                labels.insert(LABEL_ENGINE.to_owned(), engine.to_owned());
            }
            labels
        };
        assert!(of_engine(Some(&labels(Some("a"))), "a"));
        assert!(!of_engine(Some(&labels(Some("a"))), "b"));
        assert!(!of_engine(Some(&labels(Some("a"))), "default"));
        assert!(of_engine(Some(&labels(None)), "default"));
        assert!(!of_engine(Some(&labels(None)), "a"));
        assert!(of_engine(None, "default"));
    }
}
