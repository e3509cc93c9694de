"""The asyncio client: `AsyncSandkeeper`, its `AsyncSandbox` and the sandbox's `AsyncFiles`,
the same calls as the blocking client's, awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TypeVar
from uuid import UUID

import httpx

from . import _protocol as api
from ._errors import TransportError
from ._models import EnsuredSession, ExecResult, KeptAlive, OutputChunk, Session, UploadedFile
from ._sync import DEFAULT_TIMEOUT
from ._version import USER_AGENT

T = TypeVar("T")


class AsyncSandkeeper:
    """An asyncio client of one sandkeeper server; `Sandkeeper` with every call awaited.

    ``base_url`` is the server's address (``http://127.0.0.1:8080``), ``token`` the bearer
    token of a server started with ``--api-token`` (``None`` for a server without one), and
    ``timeout`` the seconds any call may take; an exec given a ``timeout`` of its own may take
    that long plus 30 seconds, whichever is longer. Use it as an async context manager, or
    await `aclose`, to close its connections.
    """

    def __init__(
        self, base_url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        headers = {"User-Agent": USER_AGENT}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, follow_redirects=False
        )

    def sandbox(self, chat_id: str | UUID) -> AsyncSandbox:
        """The sandbox of a chat (nothing is sent until one of its methods is called)."""
        return AsyncSandbox(self, chat_id)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSandkeeper:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: api.Call[T]) -> T:
        timeout = api.timeout_for(call, self._timeout)
        try:
            response = await self._http.request(
                call.method, call.path, json=call.json, content=call.content, timeout=timeout
            )
        except httpx.HTTPError as error:
            raise TransportError(api.transport_message(call, self.base_url, error)) from error
        return call.parse(response)

    async def _events(self, call: api.Call[ExecResult]) -> AsyncIterator[OutputChunk | ExecResult]:
        """Sends ``call`` asking for Server-Sent Events and reads them as they come."""
        timeout = api.timeout_for(call, self._timeout)
        try:
            async with self._http.stream(
                call.method, call.path, json=call.json, headers=api.EVENT_STREAM, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    call.parse(response)
                reader = api.EventReader(response)
                async for line in response.aiter_lines():
                    item = reader.feed(line)
                    if item is not None:
                        yield item
        except httpx.HTTPError as error:
            raise TransportError(api.transport_message(call, self.base_url, error)) from error


class AsyncSandbox:
    """One chat's sandbox, from `AsyncSandkeeper.sandbox`. Every method is one HTTP call; an
    error answer raises a `SandkeeperError` subclass (``NotFound`` when the chat has no running
    sandbox: call `ensure` first)."""

    def __init__(self, client: AsyncSandkeeper, chat_id: str | UUID) -> None:
        self._client = client
        self.chat_id = str(chat_id)
        self.files = AsyncFiles(client, self.chat_id)

    async def ensure(self, ttl_seconds: int | None = None) -> EnsuredSession:
        """Gets the chat's running sandbox, or creates it (replacing an expired one).
        ``ttl_seconds`` is the lifetime of a sandbox this call creates (default: the server's
        ``--ttl``); a reused sandbox keeps its expiry."""
        return await self._client._send(api.ensure(self.chat_id, ttl_seconds))

    async def info(self) -> Session:
        """The chat's sandbox as the server's store knows it."""
        return await self._client._send(api.info(self.chat_id))

    async def exec(
        self,
        command: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Runs ``command`` (the program and its arguments, never through a shell unless you
        ask for one: ``["sh", "-c", "..."]``) and answers when it ended or its ``timeout``
        (seconds; default the server's ``--exec-timeout``) ran out. ``stdin`` is fed to it,
        ``env`` added to its environment, ``workdir`` is where it starts (absolute, or relative
        to ``/workspace``, the default). A non-zero exit status is no error: read
        `ExecResult.exit_code`."""
        call = api.exec_(
            self.chat_id, command, stdin=stdin, env=env, workdir=workdir, timeout=timeout
        )
        return await self._client._send(call)

    def exec_stream(
        self,
        command: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[OutputChunk | ExecResult]:
        """`Sandbox.exec_stream`, asynchronously: ``async for item in sandbox.exec_stream(...)``."""
        call = api.exec_(
            self.chat_id, command, stdin=stdin, env=env, workdir=workdir, timeout=timeout
        )
        return self._client._events(call)

    async def keepalive(self, ttl_seconds: int | None = None) -> KeptAlive:
        """Moves the expiry to now + ``ttl_seconds`` (default the server's ``--ttl``); never
        earlier than it was, never past ``lifetime_ends_at``."""
        return await self._client._send(api.keepalive(self.chat_id, ttl_seconds))

    async def delete(self) -> None:
        """Stops and removes the sandbox; ``NotFound`` when the chat has none running."""
        await self._client._send(api.delete(self.chat_id))


class AsyncFiles:
    """The files of a sandbox's ``/workspace``, as raw bytes. A path is relative to
    ``/workspace`` and may contain ``/``; the client percent-encodes each segment and the
    server refuses (``InvalidRequest``) anything that would leave ``/workspace``."""

    def __init__(self, client: AsyncSandkeeper, chat_id: str) -> None:
        self._client = client
        self._chat_id = chat_id

    async def write(self, path: str, data: bytes | bytearray | memoryview | str) -> UploadedFile:
        """Writes the file whole (a ``str`` as UTF-8), creating missing directories."""
        return await self._client._send(api.write_file(self._chat_id, path, data))

    async def read(self, path: str) -> bytes:
        """The file's bytes; ``NotFound`` (``file_not_found``) when nothing is there."""
        return await self._client._send(api.read_file(self._chat_id, path))
