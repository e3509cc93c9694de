"""The asyncio client: `AsyncSandkeeper`, its `AsyncSandbox` and the sandbox's `AsyncFiles`,
the same calls as the blocking client's, awaited; each method does what the blocking one of
the same name documents."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

import httpx

from . import _protocol as api
from ._models import EnsuredSession, ExecResult, KeptAlive, OutputChunk, Session, UploadedFile

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")


class AsyncSandkeeper(api.ClientBase[httpx.AsyncClient]):
    """An asyncio client of one sandkeeper server; `Sandkeeper` (the same arguments) with
    every call awaited. Use it as an async context manager, or await `aclose`, to close its
    connections."""

    _http_client = httpx.AsyncClient

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
        with self._answered(call):
            response = await self._http.send(self._request(call))
        return call.parse(response)

    async def _events(self, call: api.Call[ExecResult]) -> AsyncIterator[OutputChunk | ExecResult]:
        """Sends ``call`` asking for Server-Sent Events and reads them as they come."""
        with self._answered(call):
            request = self._request(call, api.EVENT_STREAM)
            async with aclosing(await self._http.send(request, stream=True)) as response:
                if response.status_code != 200:
                    await response.aread()
                    call.parse(response)
                reader = api.EventReader(response)
                async for line in response.aiter_lines():
                    item = reader.feed(line)
                    if item is not None:
                        yield item


class AsyncSandbox:
    """One chat's sandbox, from `AsyncSandkeeper.sandbox`: `Sandbox` with every call awaited
    (an error answer raises a `SandkeeperError` subclass, ``NotFound`` when the chat has no
    running sandbox: call `ensure` first)."""

    def __init__(self, client: AsyncSandkeeper, chat_id: str | UUID) -> None:
        self._client = client
        self.chat_id = str(chat_id)
        self.files = AsyncFiles(client, self.chat_id)

    async def ensure(self, ttl_seconds: int | None = None) -> EnsuredSession:
        """`Sandbox.ensure`, awaited."""
        return await self._client._send(api.ensure(self.chat_id, ttl_seconds))

    async def info(self) -> Session:
        """`Sandbox.info`, awaited."""
        return await self._client._send(api.info(self.chat_id))

    async def exec(self, command: Sequence[str], **options: Unpack[api.ExecOptions]) -> ExecResult:
        """`Sandbox.exec`, awaited."""
        return await self._client._send(api.exec_(self.chat_id, command, **options))

    def exec_stream(
        self, command: Sequence[str], **options: Unpack[api.ExecOptions]
    ) -> AsyncIterator[OutputChunk | ExecResult]:
        """`Sandbox.exec_stream`, asynchronously: ``async for item in sandbox.exec_stream(...)``."""
        return self._client._events(api.exec_(self.chat_id, command, **options))

    async def keepalive(self, ttl_seconds: int | None = None) -> KeptAlive:
        """`Sandbox.keepalive`, awaited."""
        return await self._client._send(api.keepalive(self.chat_id, ttl_seconds))

    async def delete(self) -> None:
        """`Sandbox.delete`, awaited."""
        await self._client._send(api.delete(self.chat_id))


class AsyncFiles:
    """`Files` with every call awaited: the files of a sandbox's ``/workspace``, as raw
    bytes."""

    def __init__(self, client: AsyncSandkeeper, chat_id: str) -> None:
        self._client = client
        self._chat_id = chat_id

    async def write(self, path: str, data: bytes | bytearray | memoryview | str) -> UploadedFile:
        """`Files.write`, awaited."""
        return await self._client._send(api.write_file(self._chat_id, path, data))

    async def read(self, path: str) -> bytes:
        """`Files.read`, awaited."""
        return await self._client._send(api.read_file(self._chat_id, path))
