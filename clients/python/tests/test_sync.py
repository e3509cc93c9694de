"""The blocking client against a real server."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from datetime import timedelta, timezone

import httpx
import pytest

from conftest import Server
from sandkeeper import (
    EnsuredSession,
    ExecResult,
    InvalidRequest,
    KeptAlive,
    NotFound,
    OutputChunk,
    Sandbox,
    Sandkeeper,
    SandkeeperError,
    TransportError,
    Unauthorized,
)


@pytest.fixture
def client(server: Server) -> Iterator[Sandkeeper]:
    with Sandkeeper(server.url) as client:
        yield client


@pytest.fixture
def sandbox(client: Sandkeeper, chat_id: str) -> Iterator[Sandbox]:
    """A running sandbox of the test's own chat, deleted at the end."""
    sandbox = client.sandbox(chat_id)
    sandbox.ensure()
    yield sandbox
    with suppress(NotFound):
        sandbox.delete()


def test_ensure_creates_a_sandbox_then_hands_the_same_one_back(
    client: Sandkeeper, chat_id: str
) -> None:
    sandbox = client.sandbox(chat_id)
    first = sandbox.ensure()
    assert isinstance(first, EnsuredSession)
    assert first.result == "created" and first.created
    assert first.chat_id == chat_id
    assert first.status == "running"
    assert first.created_at.tzinfo == timezone.utc
    assert first.expires_at > first.created_at

    again = sandbox.ensure()
    assert again.result == "reused" and not again.created
    assert again.session_id == first.session_id
    assert again.container_id == first.container_id
    assert (first.engine, again.engine) == ("default", "default")
    assert again.expires_at == first.expires_at

    info = sandbox.info()
    assert info.session_id == first.session_id
    assert info.status == "running"
    sandbox.delete()


def test_ensure_gives_a_new_sandbox_the_ttl_asked_for(client: Sandkeeper, chat_id: str) -> None:
    session = client.sandbox(chat_id).ensure(ttl_seconds=600)
    assert session.expires_at - session.created_at == timedelta(seconds=600)
    client.sandbox(chat_id).delete()


def test_any_spelling_of_a_chat_uuid_names_the_same_sandbox(client: Sandkeeper) -> None:
    chat = uuid.uuid4()
    created = client.sandbox(chat).ensure()
    assert created.chat_id == str(chat)
    reused = client.sandbox(str(chat).upper()).ensure()
    assert reused.result == "reused" and reused.session_id == created.session_id
    client.sandbox(chat.hex).delete()


def test_exec_reports_output_and_exit_code(sandbox: Sandbox) -> None:
    result = sandbox.exec(["sh", "-c", "echo hello; echo oops >&2; exit 3"])
    assert isinstance(result, ExecResult)
    assert result.exit_code == 3 and not result.ok
    assert result.stdout == "hello\n"
    assert result.stderr == "oops\n"
    assert not result.timed_out and not result.truncated
    assert result.duration_ms >= 0
    assert result.session_id == sandbox.info().session_id


def test_exec_stream_yields_output_while_the_command_runs_then_its_result(
    sandbox: Sandbox,
) -> None:
    script = "echo first; sleep 2; printf '\\342\\202'; sleep 1; printf '\\254\\377'; echo oops >&2; exit 3"
    started = time.monotonic()
    items = sandbox.exec_stream(["sh", "-c", script])
    first = next(items)
    assert first == OutputChunk("stdout", b"first\n")
    assert time.monotonic() - started < 2, "the first line came only at the end"
    rest = list(items)
    result = rest[-1]
    assert isinstance(result, ExecResult)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "", "")
    chunks = [item for item in rest if isinstance(item, OutputChunk)]
    assert b"".join(c.data for c in chunks if c.stream == "stdout") == "€".encode() + b"\xff"
    assert b"".join(c.data for c in chunks if c.stream == "stderr") == b"oops\n"
    assert OutputChunk("stdout", "€".encode()) in chunks, "the euro sign came whole"


def test_exec_stream_refusals_are_errors(client: Sandkeeper) -> None:
    with pytest.raises(NotFound) as missing:
        list(client.sandbox(str(uuid.uuid4())).exec_stream(["true"]))
    assert missing.value.code == "sandbox_not_found"


def test_exec_feeds_stdin_env_and_workdir(sandbox: Sandbox) -> None:
    assert sandbox.exec(["mkdir", "-p", "sub/dir"]).ok
    result = sandbox.exec(
        ["sh"],
        stdin='echo "$((6 * 7)) $GREETING"; pwd; cat -',
        env={"GREETING": "hi there"},
        workdir="sub/dir",
    )
    assert result.ok, result
    assert result.stdout == "42 hi there\n/workspace/sub/dir\n"

    piped = sandbox.exec(["cat"], stdin="line one\nline two ✓\n")
    assert piped.stdout == "line one\nline two ✓\n"


def test_a_command_past_its_timeout_is_reported_timed_out(sandbox: Sandbox) -> None:
    result = sandbox.exec(["sh", "-c", "echo started; sleep 60 & sleep 60"], timeout=1)
    assert result.timed_out
    assert result.exit_code is None and not result.ok
    assert result.stdout == "started\n"
    assert sandbox.exec(["true"]).ok


def test_an_exec_may_take_its_own_timeout_beyond_the_clients(
    server: Server, chat_id: str
) -> None:
    with Sandkeeper(server.url, timeout=1) as client:
        sandbox = client.sandbox(chat_id)
        sandbox.ensure()
        # The command outlasts the client's timeout of 1 s, but not its own.
        result = sandbox.exec(["sh", "-c", "sleep 2; echo done"], timeout=20)
        assert result.ok and result.stdout == "done\n"
        sandbox.delete()


def test_a_missing_program_exits_127(sandbox: Sandbox) -> None:
    assert sandbox.exec(["no-such-program"]).exit_code == 127


def test_the_command_must_be_a_list(sandbox: Sandbox) -> None:
    with pytest.raises(TypeError, match="list of strings"):
        sandbox.exec("echo hi")


def test_a_bad_exec_field_is_an_invalid_request(sandbox: Sandbox) -> None:
    with pytest.raises(InvalidRequest) as refused:
        sandbox.exec(["true"], timeout=0)
    assert refused.value.status == 400
    assert refused.value.code == "invalid_timeout"
    with pytest.raises(InvalidRequest) as refused:
        sandbox.exec(["true"], env={"NOT-A-NAME": "x"})
    assert refused.value.code == "invalid_env"


def test_files_round_trip_bytes_that_are_not_utf8_under_a_path_to_percent_encode(
    sandbox: Sandbox,
) -> None:
    data = bytes(range(256)) + b"\xff\xfe\x00\x80 not utf-8"
    path = "my dir/naïve #1?%20&=.bin"
    written = sandbox.files.write(path, data)
    assert written.path == path
    assert written.size == len(data)
    assert sandbox.files.read(path) == data
    # The file is under that very name inside the sandbox.
    listed = sandbox.exec(["find", "my dir", "-type", "f"])
    assert listed.stdout == "my dir/naïve #1?%20&=.bin\n"
    size = sandbox.exec(["sh", "-c", 'wc -c < "my dir/naïve #1?%20&=.bin"'])
    assert size.stdout.strip() == str(len(data))


def test_a_file_written_as_text_is_utf8(sandbox: Sandbox) -> None:
    sandbox.files.write("notes/a.txt", "grüße\n")
    assert sandbox.files.read("notes/a.txt") == "grüße\n".encode()
    assert sandbox.exec(["cat", "notes/a.txt"]).stdout == "grüße\n"


def test_a_file_the_command_wrote_can_be_read(sandbox: Sandbox) -> None:
    assert sandbox.exec(["sh", "-c", "printf 'made inside' > out.txt"]).ok
    assert sandbox.files.read("out.txt") == b"made inside"


def test_paths_out_of_the_workspace_are_refused(sandbox: Sandbox) -> None:
    for path in ["../etc/passwd", "a/../../etc/passwd", "/etc/passwd", "./x", "a//b"]:
        with pytest.raises(InvalidRequest) as refused:
            sandbox.files.read(path)
        assert refused.value.code == "invalid_path", path
        with pytest.raises(InvalidRequest) as refused:
            sandbox.files.write(path, b"x")
        assert refused.value.code == "invalid_path", path


def test_a_missing_file_is_not_found(sandbox: Sandbox) -> None:
    with pytest.raises(NotFound) as missing:
        sandbox.files.read("missing.txt")
    assert missing.value.status == 404
    assert missing.value.code == "file_not_found"
    assert "missing.txt" in missing.value.message


def test_keepalive_moves_the_expiry_later_and_never_back(client: Sandkeeper, chat_id: str) -> None:
    sandbox = client.sandbox(chat_id)
    created = sandbox.ensure(ttl_seconds=60)
    extended = sandbox.keepalive(ttl_seconds=900)
    assert isinstance(extended, KeptAlive)
    assert extended.result == "extended"
    assert extended.session_id == created.session_id
    assert extended.expires_at > created.expires_at
    assert extended.lifetime_ends_at > extended.expires_at
    assert sandbox.info().expires_at == extended.expires_at

    shorter = sandbox.keepalive(ttl_seconds=60)
    assert shorter.result == "unchanged"
    assert shorter.expires_at == extended.expires_at
    sandbox.delete()


def test_delete_removes_the_sandbox(client: Sandkeeper, server: Server, chat_id: str) -> None:
    sandbox = client.sandbox(chat_id)
    session = sandbox.ensure()
    assert session.container_id in server.containers()
    sandbox.delete()
    assert session.container_id not in server.containers()

    with pytest.raises(NotFound) as gone:
        sandbox.info()
    assert gone.value.code == "sandbox_not_found"
    with pytest.raises(NotFound):
        sandbox.delete()
    with pytest.raises(NotFound):
        sandbox.exec(["true"])

    # After a delete, ensure creates a new sandbox.
    again = sandbox.ensure()
    assert again.result == "created" and again.session_id != session.session_id
    sandbox.delete()


def test_a_chat_without_a_sandbox_is_not_found(client: Sandkeeper, chat_id: str) -> None:
    sandbox = client.sandbox(chat_id)
    for call in (sandbox.info, lambda: sandbox.exec(["true"]), sandbox.keepalive):
        with pytest.raises(NotFound) as missing:
            call()
        assert missing.value.code == "sandbox_not_found"


@pytest.mark.parametrize("bad", ["not-a-chat", "a/b", " 6f1c2a4e-8d3b-4f5a-9c7e-0b1d2e3f4a5b", "%"])
def test_a_bad_chat_id_is_an_invalid_request(client: Sandkeeper, bad: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        client.sandbox(bad).ensure()
    assert refused.value.status == 400
    assert refused.value.code == "invalid_chat_id"
    assert "not a UUID" in refused.value.message or "whitespace" in refused.value.message


def test_a_ttl_out_of_range_is_an_invalid_request(client: Sandkeeper, chat_id: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        client.sandbox(chat_id).ensure(ttl_seconds=0)
    assert refused.value.code == "invalid_ttl"
    with pytest.raises(NotFound):
        client.sandbox(chat_id).info()


def test_a_server_with_a_token_refuses_a_client_without_it(
    token_server: Server, chat_id: str
) -> None:
    assert token_server.token is not None
    for token in (None, "wrong"):
        with Sandkeeper(token_server.url, token=token) as client:
            with pytest.raises(Unauthorized) as refused:
                client.sandbox(chat_id).ensure()
            assert refused.value.status == 401
            assert refused.value.code == "unauthorized"
            assert isinstance(refused.value, SandkeeperError)
    assert token_server.containers() == []

    with Sandkeeper(token_server.url, token=token_server.token) as client:
        sandbox = client.sandbox(chat_id)
        assert sandbox.ensure().result == "created"
        assert sandbox.exec(["echo", "authorised"]).stdout == "authorised\n"
        sandbox.delete()


def test_no_answer_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now.
    with Sandkeeper(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(TransportError) as failed:
            client.sandbox(uuid.uuid4()).info()
    assert isinstance(failed.value, SandkeeperError)
    assert failed.value.status is None
    assert failed.value.code == "transport_error"
    assert isinstance(failed.value.__cause__, httpx.ConnectError)


def test_a_closed_client_sends_nothing(server: Server, chat_id: str) -> None:
    with Sandkeeper(server.url) as client:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        client.sandbox(chat_id).ensure()
