use std::time::Duration;

use sandkeeper_domain::{ChatId, ContainerId};

use crate::{Cause, WorkspacePath};

/// An error with a stable kind: a short name that never changes with the wording of its
/// message, used as the `error.type` label of metrics, spans and logs.
pub trait ErrorKind: std::error::Error {
    /// The stable name, e.g. `store_unavailable` or `runtime_error`.
    fn kind(&self) -> &'static str;
}

/// Gives an error enum its stable kind: an inherent `kind()` and [`ErrorKind`]. Each variant
/// is named with its kind (several variants may share one, joined by `|`); the variants after
/// `wraps` hold another error with a kind of its own, and take that error's kind.
///
/// ```
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("")]
/// # pub struct Inner;
/// # impl Inner { fn kind(&self) -> &'static str { "inner" } }
/// #[derive(Debug, thiserror::Error)]
/// pub enum Outer {
///     #[error("busy")]
///     Busy { limit: usize },
///     #[error(transparent)]
///     Inner(#[from] Inner),
/// }
///
/// sandkeeper_ports::error_kind!(Outer { Busy => "busy" } wraps Inner);
/// assert_eq!(Outer::Inner(Inner).kind(), "inner");
/// ```
#[macro_export]
macro_rules! error_kind {
    ($error:ident { $($($variant:ident)|+ => $kind:literal),* $(,)? } $(wraps $($wrapped:ident),+)?) => {
        impl $error {
            /// A short stable name, used as the `error.type` label of metrics and logs.
            pub fn kind(&self) -> &'static str {
                match self {
                    $($(Self::$variant { .. })|+ => $kind,)*
                    $($(Self::$wrapped(error) => error.kind(),)+)?
                }
            }
        }

        impl $crate::ErrorKind for $error {
            fn kind(&self) -> &'static str {
                $error::kind(self)
            }
        }
    };
}

/// A failure of the session store (or of the lock and lease tables that live beside it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached (connection refused, pool timed out, file unreadable).
    #[error("the session store is unavailable")]
    Unavailable(#[source] Cause),
    /// The store answered with an error.
    #[error("the session store failed")]
    Failed(#[source] Cause),
}

error_kind!(StoreError { Unavailable => "store_unavailable", Failed => "store_error" });

/// The failure of [`crate::SessionRepository::save`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveError {
    /// Another session is already running for this chat.
    #[error("chat {chat_id} already has another running session")]
    Conflict { chat_id: ChatId },
    #[error(transparent)]
    Store(#[from] StoreError),
}

error_kind!(SaveError { Conflict => "conflict" } wraps Store);

/// A failure of the container runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime (the Docker engine) could not be reached.
    #[error("the container runtime is unavailable")]
    Unavailable(#[source] Cause),
    /// The configured image does not exist on the engine.
    #[error("image `{image}` is not present on the container engine")]
    ImageMissing { image: String },
    /// The container does not carry this instance's managed labels; sandkeeper never touches it.
    #[error(
        "container {container_id} is not managed by this sandkeeper instance; refusing to touch it"
    )]
    NotManaged { container_id: ContainerId },
    /// A session's row names an engine this process was not given (`known` lists those it
    /// was): the replicas of a deployment disagree on its set of engines.
    #[error(
        "engine `{engine}` is not one of this replica's engines ({known}); every replica must be \
         given the same --engine set"
    )]
    UnknownEngine { engine: String, known: String },
    /// A call did not answer in time.
    #[error("container runtime call `{operation}` timed out after {after:?}")]
    Timeout { operation: &'static str, after: Duration },
    /// Anything else the runtime reported, shown as the runtime said it.
    #[error(transparent)]
    Failed(Cause),
}

error_kind!(RuntimeError {
    Unavailable => "runtime_unavailable",
    ImageMissing => "image_missing",
    NotManaged => "not_managed",
    UnknownEngine => "unknown_engine",
    Timeout => "runtime_timeout",
    Failed => "runtime_error",
});

/// The failure of [`crate::SandboxRuntime::exec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The container does not exist or is not running (it was removed, replaced, or exited),
    /// before the command started or while it ran.
    #[error(
        "container {container_id} is not running: the sandbox was removed, replaced or has stopped"
    )]
    ContainerNotRunning { container_id: ContainerId },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

error_kind!(ExecError { ContainerNotRunning => "container_not_running" } wraps Runtime);

/// The failure of [`crate::SandboxRuntime::upload`] and [`crate::SandboxRuntime::download`].
/// Paths are shown relative to the workspace, as the caller gave them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The container does not exist or is not running.
    #[error(
        "container {container_id} is not running: the sandbox was removed, replaced or has stopped"
    )]
    ContainerNotRunning { container_id: ContainerId },
    /// Nothing exists at the path.
    #[error("no file at `{path}` in /workspace")]
    NotFound { path: WorkspacePath },
    /// Something other than a regular file is at the path (`found` says what: a directory,
    /// a fifo, ...), so it cannot be downloaded or replaced.
    #[error("`{path}` is a {found}, not a regular file")]
    NotARegularFile { path: WorkspacePath, found: String },
    /// The file is larger than the caller's limit; nothing was read.
    #[error("`{path}` is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { path: WorkspacePath, size: u64, limit: u64 },
    /// The path leads, through a symbolic link inside the sandbox, out of the workspace (a link
    /// to nothing is [`FileError::LinkToNowhere`]); nothing was read or written.
    #[error(
        "`{path}` resolves to `{resolved}` through a symbolic link, outside /workspace; only \
         files inside /workspace can be read or written"
    )]
    OutsideWorkspace { path: WorkspacePath, resolved: String },
    /// The path is a symbolic link (or leads through one) to something that does not exist,
    /// or to a loop of links; nothing was read or written. Links are only followed to what
    /// exists inside /workspace.
    #[error(
        "`{path}` leads through a symbolic link to `{target}`, which does not exist (or is a \
         loop of links); only existing files inside /workspace can be reached through a link"
    )]
    LinkToNowhere { path: WorkspacePath, target: String },
    /// The sandbox's user may not read the file, or write or search a directory on the path
    /// (`denied`, relative to the workspace when inside it): its mode forbids it.
    #[error(
        "permission denied for `{path}`: the sandbox's user may not access `{denied}`; change \
         its mode (e.g. with chmod) in the sandbox"
    )]
    PermissionDenied { path: WorkspacePath, denied: String },
    /// The transfer did not finish within its bound inside the sandbox (something in the
    /// sandbox held it up: a file swapped for a FIFO while it was read, processes using all of
    /// the sandbox's CPU); it was killed, and a replaced file was left as it was.
    #[error(
        "the transfer of `{path}` did not finish within {after:?} inside the sandbox and was \
         stopped; something in the sandbox held it up (a FIFO, or processes using all of its \
         CPU)"
    )]
    TimedOut { path: WorkspacePath, after: Duration },
    /// The sandbox has no room for the processes that move the file (`said` is what the
    /// container runtime or the sandbox's shell reported): it is at its limit of processes or
    /// memory. Nothing was replaced.
    #[error(
        "the sandbox has no room to run the transfer of `{path}` ({said}): it is at its limit \
         of processes or memory; end some of its processes (or delete the sandbox) and retry"
    )]
    AtLimit { path: WorkspacePath, said: String },
    /// A directory the path needs exists as something else (e.g. `a` is a file when writing
    /// `a/b`).
    #[error("cannot write `{path}`: `{parent}` exists and is not a directory")]
    ParentNotADirectory { path: WorkspacePath, parent: String },
    /// The sandbox's workspace has no room left for the file; nothing was replaced.
    #[error(
        "cannot write `{path}`: the sandbox's /workspace is full; delete files in it or give \
         sandboxes a larger workspace"
    )]
    WorkspaceFull { path: WorkspacePath },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

error_kind! {
    FileError {
        ContainerNotRunning => "container_not_running",
        NotFound => "file_not_found",
        NotARegularFile => "not_a_regular_file",
        TooLarge => "file_too_large",
        OutsideWorkspace | LinkToNowhere => "outside_workspace",
        PermissionDenied => "permission_denied",
        TimedOut => "transfer_timed_out",
        AtLimit => "sandbox_at_limit",
        ParentNotADirectory => "parent_not_a_directory",
        WorkspaceFull => "workspace_full",
    }
    wraps Runtime
}
