//! The one way into a chat's running sandbox, for every use case that works inside one (exec,
//! file transfers, and whatever comes next: archiving the workspace, background processes, a
//! terminal).
//!
//! [`SandboxAccess::enter`] finds the chat's live session, takes one of the sandbox's operation
//! slots and hands back an [`Entered`] sandbox; [`Entered::run`] runs the work while keeping the
//! sandbox alive (sliding expiry); [`Entered::gone`] is the answer when the runtime finds the
//! container no longer running. Every failure to get in, or to stay in, is one [`AccessError`];
//! a use case's own error enum wraps it and keeps only what is specific to that use case.
//!
//! A new use case inside a sandbox is then a few lines:
//!
//! ```text
//! let entered = self.access.enter(chat_id, Operation::Exec).await?;
//! let container = &entered.session().container_id;
//! let output = entered
//!     .run(self.access.runtime().exec(container, &request))
//!     .await
//!     .map_err(|error| match error {
//!         ExecError::ContainerNotRunning { .. } => entered.gone(),
//!         ExecError::Runtime(error) => AccessError::Runtime(error),
//!     })?;
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use sandkeeper_domain::{ChatId, SandboxSession, SessionId, Timestamp};
use sandkeeper_ports::debug_fields;
use sandkeeper_ports::error_kind;
use sandkeeper_ports::inprocess::lock;
use sandkeeper_ports::{
    Clock, Engines, RuntimeError, SandboxRuntime, SessionRepository, StoreError,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Span;
use tracing::field::display;

use crate::keepalive::KeepAlive;
use crate::workspace::WorkspaceChanges;

/// How many operations (execs, file transfers...) may run at once in one sandbox.
pub const DEFAULT_OPERATIONS_PER_SANDBOX: usize = 8;

/// What enters a sandbox. It names the operation in the metrics' `operation` label where a
/// use case has one, and in the message of [`AccessError::SandboxGone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A command run to its end ([`crate::ExecInSandbox`]).
    Exec,
    /// A file written into the workspace ([`crate::SandboxFiles::upload`]).
    Upload,
    /// A file read from the workspace ([`crate::SandboxFiles::download`]).
    Download,
    /// A call about background processes ([`crate::SandboxProcesses`]).
    Process,
    /// An interactive terminal, for as long as it is open ([`crate::SandboxTerminal`]).
    Terminal,
}

impl Operation {
    /// The spelling used in telemetry: `exec`, `upload`, `download`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Upload => "upload",
            Self::Download => "download",
            Self::Process => "process",
            Self::Terminal => "terminal",
        }
    }

    /// What the operation is called in a message: "the command", "the transfer".
    const fn noun(self) -> &'static str {
        match self {
            Self::Exec => "the command",
            Self::Upload | Self::Download => "the transfer",
            Self::Process => "the call about its processes",
            Self::Terminal => "the terminal",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// Why an operation could not enter a chat's sandbox, or could not finish in it because the
/// sandbox went away. The same for every use case that works inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The chat has no running sandbox, or only an expired one (which is as good as gone: the
    /// next cleanup removes it, the next get-or-create replaces it, and it is never entered).
    #[error("chat {chat_id} has no running sandbox; create one first (get-or-create), then retry")]
    NoSandbox { chat_id: ChatId },
    /// As many operations as allowed are already running in this sandbox.
    #[error(
        "the sandbox of chat {chat_id} is busy: {limit} operations are already running in it; \
         retry when one has finished"
    )]
    Busy { chat_id: ChatId, limit: usize },
    /// The sandbox went away before or while the operation ran: it was deleted, replaced after
    /// it expired, removed by the cleanup, or its container stopped. What the operation did is
    /// lost.
    #[error(
        "the sandbox of chat {chat_id} (session {session_id}) stopped running before {operation} \
         finished; it was deleted, replaced or cleaned up; get-or-create a sandbox and retry"
    )]
    SandboxGone { chat_id: ChatId, session_id: SessionId, operation: Operation },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

error_kind! {
    AccessError { NoSandbox => "no_sandbox", Busy => "busy", SandboxGone => "sandbox_gone" }
    wraps Store, Runtime
}

/// The way into the chats' running sandboxes, shared by every use case that works inside one
/// (build it once and give each the same clone: they then share the operation slots).
///
/// The chat's lifecycle lock is not taken: it would serialise the chat's operations and hold up
/// get-or-create for as long as one runs. So the sandbox may be deleted, replaced or cleaned up
/// while an operation runs in it; the runtime then finds its container not running, which is
/// [`Entered::gone`].
#[derive(Clone)]
pub struct SandboxAccess {
    repository: Arc<dyn SessionRepository>,
    engines: Engines,
    clock: Arc<dyn Clock>,
    slots: SandboxSlots,
    sliding_expiry: Option<KeepAlive>,
    workspace_changes: Option<WorkspaceChanges>,
}

impl fmt::Debug for SandboxAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxAccess")
            .field("slots", &self.slots)
            .field("sliding_expiry", &self.sliding_expiry.is_some())
            .finish_non_exhaustive()
    }
}

impl SandboxAccess {
    /// `slots` bounds the operations running at once in each sandbox, all use cases together.
    pub fn new(
        repository: Arc<dyn SessionRepository>,
        engines: impl Into<Engines>,
        clock: Arc<dyn Clock>,
        slots: SandboxSlots,
    ) -> Self {
        let engines = engines.into();
        Self { repository, engines, clock, slots, sliding_expiry: None, workspace_changes: None }
    }

    /// Durable workspaces: every command and upload marks its sandbox changed (when it starts
    /// and when it ends), for the next checkpoint.
    pub fn with_workspace_changes(mut self, changes: WorkspaceChanges) -> Self {
        self.workspace_changes = Some(changes);
        self
    }

    /// Sliding expiry: every operation counts as activity, and its sandbox is kept alive while
    /// it runs (see [`Entered::run`]). Without this the expiry stays where it is.
    pub fn with_sliding_expiry(mut self, keep_alive: KeepAlive) -> Self {
        self.sliding_expiry = Some(keep_alive);
        self
    }

    pub fn slots(&self) -> &SandboxSlots {
        &self.slots
    }

    /// The time now, by the clock sessions are judged by.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Enters the chat's running sandbox for `operation`: reads its live session (a missing or
    /// expired one is [`AccessError::NoSandbox`]), records `session.id` and `container.id` on
    /// the current span, and takes one of the sandbox's operation slots (all taken is
    /// [`AccessError::Busy`], at once, never queued). The slot is held until the [`Entered`]
    /// is dropped.
    pub async fn enter(
        &self,
        chat_id: ChatId,
        operation: Operation,
    ) -> Result<Entered, AccessError> {
        let session = live_session(self.repository.as_ref(), chat_id, self.clock.now())
            .await?
            .ok_or(AccessError::NoSandbox { chat_id })?;
        let span = Span::current();
        span.record("session.id", display(session.session_id));
        span.record("container.id", display(&session.container_id));
        // A sandbox on an engine that is down answers at once that it is unavailable.
        let runtime = Arc::clone(self.engines.runtime_of(&session)?);
        let slot = self
            .slots
            .try_acquire(session.session_id)
            .ok_or(AccessError::Busy { chat_id, limit: self.slots.per_sandbox() })?;
        // A background process or a terminal may write into the workspace at any time while
        // it runs; each call about one marks the sandbox changed, like a command.
        let changes = match operation {
            Operation::Exec | Operation::Upload | Operation::Process | Operation::Terminal => {
                self.workspace_changes.clone()
            }
            Operation::Download => None,
        };
        if let Some(changes) = &changes {
            // Before the operation can write, the store learns that the sandbox was used (once
            // per sandbox and process): a sandbox never used is removed without an archive.
            if changes.first_use(session.session_id) {
                if let Err(error) = self.repository.mark_workspace_used(session.session_id).await {
                    changes.forget(session.session_id);
                    return Err(error.into());
                }
            }
        }
        let changes = changes.map(|changes| ChangeMark::new(changes, &session));
        Ok(Entered {
            session,
            runtime,
            operation,
            sliding_expiry: self.sliding_expiry.clone(),
            _slot: slot,
            _changes: changes,
        })
    }
}

/// A sandbox entered for one operation: its session, and the operation's slot, given back when
/// this is dropped.
pub struct Entered {
    session: SandboxSession,
    runtime: Arc<dyn SandboxRuntime>,
    operation: Operation,
    sliding_expiry: Option<KeepAlive>,
    _slot: Slot,
    _changes: Option<ChangeMark>,
}

/// Marks a sandbox's workspace changed when an operation that may change it starts, and again
/// when it ends (so that a checkpoint taken while it ran is not the last).
struct ChangeMark {
    changes: WorkspaceChanges,
    session: SandboxSession,
}

impl ChangeMark {
    fn new(changes: WorkspaceChanges, session: &SandboxSession) -> Self {
        changes.mark(session);
        Self { changes, session: session.clone() }
    }
}

impl Drop for ChangeMark {
    fn drop(&mut self) {
        self.changes.mark(&self.session);
    }
}

debug_fields!(Entered { session, operation });

impl Entered {
    /// The session the operation runs in.
    pub fn session(&self) -> &SandboxSession {
        &self.session
    }

    /// The runtime of the engine the sandbox runs on.
    pub fn runtime(&self) -> &dyn SandboxRuntime {
        self.runtime.as_ref()
    }

    /// Gives the slot back and keeps the session (e.g. for the use case's answer).
    pub fn into_session(self) -> SandboxSession {
        self.session
    }

    /// Runs `work` in the sandbox. With sliding expiry the sandbox is kept alive while it runs
    /// ([`KeepAlive::while_active`]: pushed when it starts, every third of the TTL, and when it
    /// ends); without, this is `work.await`.
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        match &self.sliding_expiry {
            Some(keep_alive) => keep_alive.while_active(&self.session, work).await,
            None => work.await,
        }
    }

    /// Records one use of the sandbox now, for work that goes on beyond [`Self::run`] (with
    /// sliding expiry: one push of the expiry, as [`Self::run`] does at each end; without,
    /// nothing). A push that fails is logged, never returned.
    pub async fn record_use(&self) {
        if let Some(keep_alive) = &self.sliding_expiry {
            keep_alive.push(&self.session).await;
        }
    }

    /// The answer when the runtime finds the sandbox's container not running (its
    /// `ContainerNotRunning`): the sandbox went away before or under the operation.
    pub fn gone(&self) -> AccessError {
        AccessError::SandboxGone {
            chat_id: self.session.chat_id,
            session_id: self.session.session_id,
            operation: self.operation,
        }
    }
}

/// The chat's running session if it has not expired at `now`. An expired session is treated as
/// gone: it is about to be removed by the cleanup or replaced by get-or-create.
pub(crate) async fn live_session(
    repository: &dyn SessionRepository,
    chat_id: ChatId,
    now: Timestamp,
) -> Result<Option<SandboxSession>, StoreError> {
    Ok(repository.get_running_by_chat(chat_id).await?.filter(|session| !session.is_expired(now)))
}

/// A bound on the operations running at once in each sandbox, shared by the use cases that
/// run them (through [`SandboxAccess`]). Beyond it they are refused at once, not queued: a
/// caller whose sandbox is busy hears so and can retry.
///
/// It counts per process: with several replicas, each allows this many. A sandbox's entry
/// lives only while an operation in it runs, so the table never grows with the number of
/// sandboxes that ever existed.
#[derive(Clone)]
pub struct SandboxSlots {
    inner: Arc<SlotTable>,
}

struct SlotTable {
    per_sandbox: usize,
    sandboxes: Mutex<HashMap<SessionId, Arc<Semaphore>>>,
}

impl fmt::Debug for SandboxSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxSlots")
            .field("per_sandbox", &self.inner.per_sandbox)
            .field("busy_sandboxes", &self.busy_sandboxes())
            .finish()
    }
}

impl Default for SandboxSlots {
    fn default() -> Self {
        Self::new(DEFAULT_OPERATIONS_PER_SANDBOX)
    }
}

impl SandboxSlots {
    /// `per_sandbox` operations at once in each sandbox (at least one).
    pub fn new(per_sandbox: usize) -> Self {
        let per_sandbox = per_sandbox.max(1);
        Self { inner: Arc::new(SlotTable { per_sandbox, sandboxes: Mutex::new(HashMap::new()) }) }
    }

    pub fn per_sandbox(&self) -> usize {
        self.inner.per_sandbox
    }

    /// How many sandboxes have an operation running now.
    pub fn busy_sandboxes(&self) -> usize {
        self.table().len()
    }

    /// A slot in the sandbox of `session_id`, or `None` when all are taken.
    fn try_acquire(&self, session_id: SessionId) -> Option<Slot> {
        let mut table = self.table();
        let semaphore = table
            .entry(session_id)
            .or_insert_with(|| Arc::new(Semaphore::new(self.inner.per_sandbox)));
        let permit = Arc::clone(semaphore).try_acquire_owned().ok()?;
        Some(Slot { slots: self.clone(), session_id, permit: Some(permit) })
    }

    /// The table is never held across an await, and a panic while holding it cannot leave
    /// it inconsistent (every change is one map operation).
    fn table(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<Semaphore>>> {
        lock(&self.inner.sandboxes)
    }
}

/// One running operation's place in its sandbox; given back on drop.
struct Slot {
    slots: SandboxSlots,
    session_id: SessionId,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut table = self.slots.table();
        // Every permit holds a reference to the semaphore, and permits are only taken under
        // the table's lock; so when the table's is the only reference left, nothing runs in
        // this sandbox and nobody is about to.
        if table.get(&self.session_id).is_some_and(|semaphore| Arc::strong_count(semaphore) == 1) {
            table.remove(&self.session_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_sandbox_and_forgotten_when_unused() {
        let slots = SandboxSlots::new(2);
        let (a, b) = (SessionId::new_v4(), SessionId::new_v4());
        let first = slots.try_acquire(a).unwrap();
        let second = slots.try_acquire(a).unwrap();
        assert!(slots.try_acquire(a).is_none(), "a third in the same sandbox is refused");
        let other = slots.try_acquire(b).unwrap();
        assert_eq!(slots.busy_sandboxes(), 2);

        drop(first);
        let third = slots.try_acquire(a).expect("a freed slot is reusable");
        drop((second, third, other));
        assert_eq!(slots.busy_sandboxes(), 0, "no entry outlives its operations");
    }

    #[test]
    fn a_bound_of_zero_still_lets_one_operation_run() {
        let slots = SandboxSlots::new(0);
        assert_eq!(slots.per_sandbox(), 1);
        assert!(slots.try_acquire(SessionId::new_v4()).is_some());
    }

    #[test]
    fn the_gone_message_names_what_was_running() {
        let gone = |operation| {
            AccessError::SandboxGone {
                chat_id: ChatId::parse("11111111-1111-1111-1111-111111111111").unwrap(),
                session_id: SessionId::new_v4(),
                operation,
            }
            .to_string()
        };
        assert!(gone(Operation::Exec).contains("before the command finished"));
        assert!(gone(Operation::Upload).contains("before the transfer finished"));
        assert!(gone(Operation::Download).contains("before the transfer finished"));
    }
}
