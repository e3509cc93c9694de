"""The agent tool of examples/python against a real server (on the busybox image: a shell, no
Python)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest

from conftest import REPOSITORY, Server
from sandkeeper import Sandkeeper

sys.path.insert(0, str(REPOSITORY / "examples" / "python"))

from run_code import TOOL_SPEC, run_code  # noqa: E402


@pytest.fixture
def client(server: Server) -> Iterator[Sandkeeper]:
    with Sandkeeper(server.url) as client:
        yield client


def test_run_code_returns_the_output_and_exit_status(client: Sandkeeper, chat_id: str) -> None:
    answer = run_code(client, chat_id, "echo hello; echo oops >&2; exit 4", "sh")
    assert answer == "hello\noops\n[exit status 4]"


def test_files_persist_between_calls_of_one_chat(client: Sandkeeper, chat_id: str) -> None:
    assert run_code(client, chat_id, "echo 41 > state.txt", "sh") == "[exit status 0]"
    answer = run_code(client, chat_id, "echo $(( $(cat state.txt) + 1 ))", "sh")
    assert answer == "42\n[exit status 0]"
    # Another chat has a sandbox of its own.
    other = run_code(client, str(uuid.uuid4()), "cat state.txt", "sh")
    assert "No such file" in other and other.endswith("[exit status 1]")


def test_a_runaway_program_is_stopped(client: Sandkeeper, chat_id: str) -> None:
    answer = run_code(client, chat_id, "echo begun; while :; do :; done", "sh", timeout=1)
    assert answer == "begun\n[timed out after 1 s and was stopped]"


def test_python_on_an_image_without_it_says_so(client: Sandkeeper, chat_id: str) -> None:
    answer = run_code(client, chat_id, "print('hi')")
    assert answer.startswith("python3 is not installed in this sandbox's image")


def test_a_failing_service_is_reported_as_text(server: Server) -> None:
    with Sandkeeper(server.url) as client:
        answer = run_code(client, "not-a-chat", "echo hi", "sh")
    assert answer.startswith("[the sandbox service failed: 400 invalid_chat_id:")


def test_the_tool_spec_names_the_function_and_its_arguments() -> None:
    assert TOOL_SPEC["name"] == run_code.__name__
    assert TOOL_SPEC["parameters"]["required"] == ["code"]
