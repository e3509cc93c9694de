"""What the client sends and how it reads answers, without a server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import sandkeeper
from sandkeeper import (
    CapacityReached,
    Conflict,
    InvalidRequest,
    NotFound,
    SandboxBusy,
    SandkeeperError,
    Unauthorized,
    Unavailable,
)
from sandkeeper import _protocol as api

CHAT = "6f1c2a4e-8d3b-4f5a-9c7e-0b1d2e3f4a5b"


def answer(status: int, body: Any, method: str = "GET", path: str = "/v1/x") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, request=httpx.Request(method, f"http://h{path}"))


def test_every_public_name_is_importable_from_the_package() -> None:
    for name in sandkeeper.__all__:
        assert hasattr(sandkeeper, name), name


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("main.py", "main.py"),
        ("src/main.py", "src/main.py"),
        ("my dir/naïve #1?.txt", "my%20dir/na%C3%AFve%20%231%3F.txt"),
        ("100%/a+b=c&d", "100%25/a%2Bb%3Dc%26d"),
        ("../etc/passwd", "%2E%2E/etc/passwd"),
        ("a/./b", "a/%2E/b"),
        ("/etc/passwd", "%2Fetc/passwd"),
        ("a//b", "a//b"),
    ],
)
def test_a_file_path_is_percent_encoded_segment_by_segment(path: str, route: str) -> None:
    assert api.file_path(CHAT, path) == f"/v1/chats/{CHAT}/sandbox/files/{route}"


def test_httpx_sends_the_encoded_path_unchanged() -> None:
    path = api.file_path(CHAT, "../a/./b")
    request = httpx.Client(base_url="http://127.0.0.1:1").build_request("GET", path)
    assert request.url.raw_path.decode() == path


def test_a_chat_id_is_one_segment() -> None:
    assert api.chat_path("a/b c") == "/v1/chats/a%2Fb%20c/sandbox"


def test_an_exec_timeout_is_sent_in_whole_milliseconds_rounded_up() -> None:
    call = api.exec_(CHAT, ["true"], stdin=None, env=None, workdir=None, timeout=1.0001)
    assert call.json == {"command": ["true"], "timeout_ms": 1001}
    assert call.wait is not None and call.wait > 1.0001
    plain = api.exec_(CHAT, ("ls", "-l"), stdin="x", env={"A": "1"}, workdir="d", timeout=None)
    assert plain.json == {"command": ["ls", "-l"], "stdin": "x", "env": {"A": "1"}, "workdir": "d"}
    assert plain.wait is None


def test_an_error_answer_raises_its_class() -> None:
    cases = [
        (400, "invalid_chat_id", InvalidRequest),
        (413, "file_too_large", InvalidRequest),
        (401, "unauthorized", Unauthorized),
        (404, "sandbox_not_found", NotFound),
        (409, "sandbox_gone", Conflict),
        (429, "capacity_reached", CapacityReached),
        (429, "sandbox_busy", SandboxBusy),
        (503, "docker_unavailable", Unavailable),
        (500, "internal", SandkeeperError),
    ]
    for status, code, kind in cases:
        with pytest.raises(SandkeeperError) as raised:
            api.info(CHAT).parse(answer(status, {"error": {"code": code, "message": "why"}}))
        assert type(raised.value) is kind, (status, code)
        assert (raised.value.status, raised.value.code, raised.value.message) == (
            status,
            code,
            "why",
        )
        assert str(raised.value) == f"{status} {code}: why"


def test_an_error_without_the_envelope_keeps_the_status() -> None:
    with pytest.raises(Unavailable) as raised:
        api.info(CHAT).parse(answer(503, b"<html>bad gateway</html>"))
    assert raised.value.status == 503
    assert raised.value.code == "http_503"
    assert "bad gateway" in raised.value.message


def test_an_answer_that_is_not_the_documented_shape_is_an_invalid_answer() -> None:
    session = {
        "session_id": "s",
        "chat_id": CHAT,
        "container_id": "c",
        "status": "running",
        "created_at": "2026-04-02T12:00:00.000Z",
        "expires_at": "2026-04-02T12:05:00.000Z",
        "engine": "default",
    }
    parsed = api.info(CHAT).parse(answer(200, session))
    assert parsed.expires_at.isoformat() == "2026-04-02T12:05:00+00:00"
    assert parsed.engine == "default"
    for broken in (
        {**session, "status": "paused"},
        {**session, "expires_at": "soon"},
        {k: v for k, v in session.items() if k != "chat_id"},
        [session],
    ):
        with pytest.raises(SandkeeperError) as raised:
            api.info(CHAT).parse(answer(200, broken))
        assert raised.value.code == "invalid_answer"
    exec_answer = {
        "exit_code": True,
        "stdout": "",
        "stderr": "",
        "timed_out": False,
        "truncated": False,
        "duration_ms": 1,
        "session_id": "s",
    }
    call = api.exec_(CHAT, ["true"], stdin=None, env=None, workdir=None, timeout=None)
    with pytest.raises(SandkeeperError, match="exit_code"):
        call.parse(answer(200, exec_answer))
    assert call.parse(answer(200, {**exec_answer, "exit_code": None})).exit_code is None
