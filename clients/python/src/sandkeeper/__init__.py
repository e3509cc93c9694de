"""A typed client of sandkeeper, the manager of one code-execution sandbox per chat.

    from sandkeeper import Sandkeeper

    with Sandkeeper("http://127.0.0.1:8080") as client:
        sandbox = client.sandbox("6f1c2a4e-8d3b-4f5a-9c7e-0b1d2e3f4a5b")
        sandbox.ensure()
        sandbox.files.write("main.sh", "echo hello")
        print(sandbox.exec(["sh", "main.sh"]).stdout)

`AsyncSandkeeper` is the same client for asyncio. Every failure is a `SandkeeperError`: an
error answer of the server one of its subclasses by status, no answer at all a
`TransportError`.
"""

from ._async import AsyncFiles, AsyncSandbox, AsyncSandkeeper
from ._errors import (
    CapacityReached,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    SandboxBusy,
    SandkeeperError,
    TransportError,
    Unauthorized,
    Unavailable,
)
from ._models import (
    EnsuredSession,
    EnsureOutcome,
    ExecResult,
    KeepAliveOutcome,
    KeptAlive,
    OutputChunk,
    SandboxStatus,
    Session,
    UploadedFile,
)
from ._sync import Files, Sandbox, Sandkeeper
from ._version import __version__

__all__ = [
    "AsyncFiles",
    "AsyncSandbox",
    "AsyncSandkeeper",
    "CapacityReached",
    "Conflict",
    "EnsureOutcome",
    "EnsuredSession",
    "ExecResult",
    "Files",
    "Forbidden",
    "InvalidRequest",
    "KeepAliveOutcome",
    "KeptAlive",
    "NotFound",
    "OutputChunk",
    "SandboxBusy",
    "SandboxStatus",
    "Sandbox",
    "Sandkeeper",
    "SandkeeperError",
    "Session",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UploadedFile",
    "__version__",
]
