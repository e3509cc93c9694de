"""What the server answers, as typed, immutable dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

SandboxStatus = Literal["running", "stopped", "crashed"]
"""A session's status: ``crashed`` is a running session whose container was found gone."""

EnsureOutcome = Literal["created", "reused", "replaced"]
"""What `Sandbox.ensure` did: made a new sandbox, handed back the running one, or replaced an
expired one with a new one."""

KeepAliveOutcome = Literal["extended", "unchanged"]
"""What `Sandbox.keepalive` did: moved the expiry later, or left it (the sandbox already lived
that long, or it reached ``lifetime_ends_at``)."""


@dataclass(frozen=True)
class Session:
    """One sandbox's lifetime, as ``GET /v1/chats/{chat_id}/sandbox`` answers it."""

    session_id: str
    """A new id for every sandbox: a replaced sandbox gets a new one."""
    chat_id: str
    """The chat's UUID in canonical form (lower case, hyphenated)."""
    container_id: str
    status: SandboxStatus
    created_at: datetime
    """Aware, in UTC."""
    expires_at: datetime
    """Aware, in UTC: from then on (the boundary included) the sandbox is expired."""
    engine: str
    """The Docker engine the sandbox runs on (the server's ``--engine``; ``default`` without)."""


@dataclass(frozen=True)
class EnsuredSession(Session):
    """The session `Sandbox.ensure` got, with what the call did."""

    result: EnsureOutcome

    @property
    def created(self) -> bool:
        """Whether the call made a new sandbox (``created`` or ``replaced``): its
        ``/workspace`` is empty."""
        return self.result != "reused"


@dataclass(frozen=True)
class KeptAlive(Session):
    """The session after `Sandbox.keepalive`."""

    result: KeepAliveOutcome
    lifetime_ends_at: datetime
    """``created_at`` + the server's ``--max-lifetime``: no keep-alive moves the expiry past it."""


@dataclass(frozen=True)
class OutputChunk:
    """A piece of a streamed command's output (`Sandbox.exec_stream`), as it was produced:
    whole UTF-8 characters, or bytes that are not UTF-8, exactly as the command wrote them."""

    stream: Literal["stdout", "stderr"]
    data: bytes


@dataclass(frozen=True)
class ExecResult:
    """How a command ended. The server answers it whatever the command's exit status."""

    exit_code: int | None
    """The exit status; ``None`` when the command timed out. 127: no such program, 126: not
    executable (or the workdir does not exist), 128 + n: killed by signal n."""
    stdout: str
    """What it printed, as text: bytes that are not UTF-8 show as U+FFFD."""
    stderr: str
    timed_out: bool
    """The timeout ran out: the command and every process it started are gone."""
    truncated: bool
    """stdout or stderr was longer than the server's ``--exec-output-limit``; the rest was
    dropped."""
    duration_ms: int
    session_id: str
    """The sandbox the command ran in."""

    @property
    def ok(self) -> bool:
        """Whether the command ran to its end with exit status 0."""
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True)
class UploadedFile:
    """A file `Files.write` put into the sandbox."""

    path: str
    """Relative to ``/workspace``."""
    size: int
    """Bytes written."""
    session_id: str
