"""The asyncio client against a real server (each test runs its own event loop)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from conftest import Server
from sandkeeper import (
    AsyncSandkeeper,
    ExecResult,
    InvalidRequest,
    NotFound,
    OutputChunk,
    SandkeeperError,
    Unauthorized,
)


def test_ensure_exec_files_keepalive_and_delete(server: Server, chat_id: str) -> None:
    async def scenario() -> None:
        async with AsyncSandkeeper(server.url) as client:
            sandbox = client.sandbox(chat_id)
            created = await sandbox.ensure(ttl_seconds=60)
            assert created.result == "created"
            reused = await sandbox.ensure()
            assert reused.result == "reused" and reused.session_id == created.session_id
            assert (await sandbox.info()).session_id == created.session_id

            result = await sandbox.exec(
                ["sh", "-c", 'read line; echo "$line $NAME from $(pwd)"; echo warn >&2; exit 2'],
                stdin="hello\n",
                env={"NAME": "async"},
                workdir="/tmp",
            )
            assert (result.exit_code, result.stdout, result.stderr) == (
                2,
                "hello async from /tmp\n",
                "warn\n",
            )
            assert not result.timed_out

            streamed = [
                item
                async for item in sandbox.exec_stream(
                    ["sh", "-c", "echo one; sleep 1; printf 'two\\377'; exit 4"]
                )
            ]
            end = streamed[-1]
            assert isinstance(end, ExecResult) and end.exit_code == 4
            chunks = [item for item in streamed if isinstance(item, OutputChunk)]
            assert chunks[0] == OutputChunk("stdout", b"one\n")
            assert b"".join(chunk.data for chunk in chunks) == b"one\ntwo\xff"

            timed_out = await sandbox.exec(["sleep", "30"], timeout=0.5)
            assert timed_out.timed_out and timed_out.exit_code is None

            data = b"\x00\x01\xfe\xff binary \xc3\x28"
            written = await sandbox.files.write("data/a b+c.bin", data)
            assert written.size == len(data)
            assert await sandbox.files.read("data/a b+c.bin") == data
            with pytest.raises(NotFound) as missing:
                await sandbox.files.read("data/none.bin")
            assert missing.value.code == "file_not_found"

            kept = await sandbox.keepalive(ttl_seconds=600)
            assert kept.result == "extended" and kept.expires_at > created.expires_at

            await sandbox.delete()
            with pytest.raises(NotFound) as gone:
                await sandbox.info()
            assert gone.value.code == "sandbox_not_found"
        assert server.containers() == [] or created.container_id not in server.containers()

    asyncio.run(scenario())


def test_commands_run_at_once_in_one_sandbox(server: Server, chat_id: str) -> None:
    async def scenario() -> None:
        async with AsyncSandkeeper(server.url) as client:
            sandbox = client.sandbox(chat_id)
            await sandbox.ensure()
            results = await asyncio.gather(
                *(sandbox.exec(["sh", "-c", f"echo {n}"]) for n in range(4))
            )
            assert [r.stdout for r in results] == [f"{n}\n" for n in range(4)]
            await sandbox.delete()

    asyncio.run(scenario())


def test_errors_are_the_same_as_the_blocking_clients(server: Server, token_server: Server) -> None:
    async def scenario() -> None:
        async with AsyncSandkeeper(server.url) as client:
            with pytest.raises(InvalidRequest) as refused:
                await client.sandbox("not-a-chat").ensure()
            assert (refused.value.status, refused.value.code) == (400, "invalid_chat_id")
        async with AsyncSandkeeper(token_server.url) as client:
            with pytest.raises(Unauthorized) as unauthorized:
                await client.sandbox(uuid.uuid4()).ensure()
            assert unauthorized.value.status == 401
            assert isinstance(unauthorized.value, SandkeeperError)
        async with AsyncSandkeeper(token_server.url, token=token_server.token) as client:
            sandbox = client.sandbox(uuid.uuid4())
            assert (await sandbox.ensure()).result == "created"
            await sandbox.delete()

    asyncio.run(scenario())
