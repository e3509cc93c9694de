"""The blocking client: `Sandkeeper`, its `Sandbox` and the sandbox's `Files`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

import httpx

from . import _protocol as api
from ._models import EnsuredSession, ExecResult, KeptAlive, OutputChunk, Session, UploadedFile

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")


class Sandkeeper(api.ClientBase[httpx.Client]):
    """A client of one sandkeeper server.

    ``base_url`` is the server's address (``http://127.0.0.1:8080``), ``token`` the bearer
    token of a server started with ``--api-token`` (``None`` for a server without one), and
    ``timeout`` the seconds any call may take; an exec given a ``timeout`` of its own may take
    that long plus 30 seconds, whichever is longer. Use it as a context manager, or call
    `close`, to close its connections.
    """

    _http_client = httpx.Client

    def sandbox(self, chat_id: str | UUID) -> Sandbox:
        """The sandbox of a chat (nothing is sent until one of its methods is called)."""
        return Sandbox(self, chat_id)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Sandkeeper:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: api.Call[T]) -> T:
        with self._answered(call):
            response = self._http.send(self._request(call))
        return call.parse(response)

    def _events(self, call: api.Call[ExecResult]) -> Iterator[OutputChunk | ExecResult]:
        """Sends ``call`` asking for Server-Sent Events and reads them as they come."""
        with self._answered(call):
            request = self._request(call, api.EVENT_STREAM)
            with closing(self._http.send(request, stream=True)) as response:
                if response.status_code != 200:
                    response.read()
                    call.parse(response)
                reader = api.EventReader(response)
                for line in response.iter_lines():
                    item = reader.feed(line)
                    if item is not None:
                        yield item


class Sandbox:
    """One chat's sandbox, from `Sandkeeper.sandbox`. Every method is one HTTP call; an error
    answer raises a `SandkeeperError` subclass (``NotFound`` when the chat has no running
    sandbox: call `ensure` first)."""

    def __init__(self, client: Sandkeeper, chat_id: str | UUID) -> None:
        self._client = client
        self.chat_id = str(chat_id)
        self.files = Files(client, self.chat_id)

    def ensure(self, ttl_seconds: int | None = None) -> EnsuredSession:
        """Gets the chat's running sandbox, or creates it (replacing an expired one).
        ``ttl_seconds`` is the lifetime of a sandbox this call creates (default: the server's
        ``--ttl``); a reused sandbox keeps its expiry."""
        return self._client._send(api.ensure(self.chat_id, ttl_seconds))

    def info(self) -> Session:
        """The chat's sandbox as the server's store knows it."""
        return self._client._send(api.info(self.chat_id))

    def exec(self, command: Sequence[str], **options: Unpack[api.ExecOptions]) -> ExecResult:
        """Runs ``command`` (the program and its arguments, never through a shell unless you
        ask for one: ``["sh", "-c", "..."]``) and answers when it ended or its ``timeout``
        (seconds; default the server's ``--exec-timeout``) ran out. ``stdin`` is fed to it,
        ``env`` added to its environment, ``workdir`` is where it starts (absolute, or relative
        to ``/workspace``, the default). A non-zero exit status is no error: read
        `ExecResult.exit_code`."""
        return self._client._send(api.exec_(self.chat_id, command, **options))

    def exec_stream(
        self, command: Sequence[str], **options: Unpack[api.ExecOptions]
    ) -> Iterator[OutputChunk | ExecResult]:
        """Runs ``command`` like `exec`, and yields its output while it runs: an `OutputChunk`
        for each piece of stdout or stderr as it is produced, then the `ExecResult` (whose
        ``stdout`` and ``stderr`` are empty: they were yielded). Stopping the iteration (or
        closing it) disconnects, and the server then kills the command."""
        return self._client._events(api.exec_(self.chat_id, command, **options))

    def keepalive(self, ttl_seconds: int | None = None) -> KeptAlive:
        """Moves the expiry to now + ``ttl_seconds`` (default the server's ``--ttl``); never
        earlier than it was, never past ``lifetime_ends_at``."""
        return self._client._send(api.keepalive(self.chat_id, ttl_seconds))

    def delete(self) -> None:
        """Stops and removes the sandbox; ``NotFound`` when the chat has none running."""
        self._client._send(api.delete(self.chat_id))


class Files:
    """The files of a sandbox's ``/workspace``, as raw bytes. A path is relative to
    ``/workspace`` and may contain ``/``; the client percent-encodes each segment and the
    server refuses (``InvalidRequest``) anything that would leave ``/workspace``."""

    def __init__(self, client: Sandkeeper, chat_id: str) -> None:
        self._client = client
        self._chat_id = chat_id

    def write(self, path: str, data: bytes | bytearray | memoryview | str) -> UploadedFile:
        """Writes the file whole (a ``str`` as UTF-8), creating missing directories."""
        return self._client._send(api.write_file(self._chat_id, path, data))

    def read(self, path: str) -> bytes:
        """The file's bytes; ``NotFound`` (``file_not_found``) when nothing is there."""
        return self._client._send(api.read_file(self._chat_id, path))
