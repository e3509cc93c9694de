"""The API without input and output: each call as a `Call` (the request to send and how to read
its answer), shared by the sync and the async client, which only send them."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, Literal, TypedDict, TypeVar, get_args
from urllib.parse import quote
from uuid import UUID

import httpx

from ._errors import TransportError, error_from_response, invalid_answer
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
from ._version import USER_AGENT

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
"""Seconds a call may take, unless it is an exec with a longer timeout of its own."""

EXEC_ANSWER_MARGIN = 30.0
"""Seconds an exec's answer may take beyond the command's timeout: the server kills what is
left of the command and checks it is gone before it answers."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the reading of its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Mapping[str, Any] | None = None
    content: bytes | None = None
    wait: float | None = None
    """Seconds the answer may take at least (an exec's timeout and margin); the client's own
    timeout applies when it is longer."""


EVENT_STREAM = {"Accept": "text/event-stream"}
"""The header that asks an exec for its output as Server-Sent Events while it runs."""


H = TypeVar("H", httpx.Client, httpx.AsyncClient)


class ClientBase(Generic[H]):
    """What the blocking and the asyncio client share besides sending: their arguments, the
    server's address, the headers of every request, each call's request with its timeout and
    the error of a call that got no answer. ``H`` is the httpx client that sends."""

    _http_client: Callable[..., H]
    """`httpx.Client` or `httpx.AsyncClient`."""

    def __init__(
        self, base_url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        headers = {"User-Agent": USER_AGENT}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._http: H = self._http_client(
            base_url=self.base_url, headers=headers, timeout=timeout, follow_redirects=False
        )

    def _request(self, call: Call[Any], headers: Mapping[str, str] | None = None) -> httpx.Request:
        """The request of ``call``, with a longer read timeout than the client's when the
        call's answer may take longer."""
        timeout = httpx.Timeout(self._timeout)
        if call.wait is not None and call.wait > self._timeout:
            timeout = httpx.Timeout(self._timeout, read=call.wait)
        return self._http.build_request(
            call.method,
            call.path,
            json=call.json,
            content=call.content,
            headers=headers,
            timeout=timeout,
        )

    @contextmanager
    def _answered(self, call: Call[Any]) -> Iterator[None]:
        """Turns httpx's failure to get ``call`` an answer into a `TransportError`."""
        try:
            yield
        except httpx.HTTPError as error:
            raise TransportError(
                f"{call.method} {self.base_url}{call.path} got no answer: "
                f"{type(error).__name__}: {error}"
            ) from error


class EventReader:
    """Reads a streamed exec's Server-Sent Events, line by line: `OutputChunk` for each
    ``stdout`` and ``stderr`` event, the `ExecResult` of the ``exit`` event; an ``error`` event
    raises the error it carries."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._name = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> OutputChunk | ExecResult | None:
        if line == "":
            name, data = self._name, "\n".join(self._data)
            self._name, self._data = "message", []
            return self._event(name, data) if data else None
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        return None

    def _event(self, name: str, data: str) -> OutputChunk | ExecResult | None:
        if name in ("stdout", "stderr"):
            stream: Literal["stdout", "stderr"] = "stdout" if name == "stdout" else "stderr"
            payload = json.loads(data)
            if isinstance(payload.get("text"), str):
                return OutputChunk(stream, payload["text"].encode())
            return OutputChunk(stream, base64.b64decode(payload["base64"]))
        answer = httpx.Response(
            200 if name == "exit" else 409 if '"sandbox_gone"' in data else 500,
            content=data.encode(),
            request=self._response.request,
        )
        if name == "exit":
            return _exec_result(answer)
        if name == "error":
            raise error_from_response(answer)
        return None


def chat_path(chat_id: str | UUID) -> str:
    """``/v1/chats/{chat_id}/sandbox``, the id percent-encoded whole, so that whatever it is
    reaches the server as one segment, which judges it."""
    return f"/v1/chats/{quote(str(chat_id), safe='')}/sandbox"


def file_path(chat_id: str | UUID, path: str) -> str:
    """The route of a file: each segment of ``path`` percent-encoded on its own (``/``
    separates them), ``.`` and ``..`` too, so that no HTTP library resolves them: the server
    refuses them with ``invalid_path``. A leading ``/`` is sent encoded, so that the server
    sees (and refuses) an absolute path rather than an empty segment."""
    if path.startswith("/"):
        head, rest = "%2F", path[1:]
    else:
        head, rest = "", path
    encoded = "/".join(_segment(segment) for segment in rest.split("/"))
    return f"{chat_path(chat_id)}/files/{head}{encoded}"


def _segment(segment: str) -> str:
    if segment in (".", ".."):
        return segment.replace(".", "%2E")
    return quote(segment, safe="")


def ttl_body(ttl_seconds: int | None) -> dict[str, Any] | None:
    return None if ttl_seconds is None else {"ttl_seconds": ttl_seconds}


def ensure(chat_id: str | UUID, ttl_seconds: int | None) -> Call[EnsuredSession]:
    return Call("PUT", chat_path(chat_id), _ensured, json=ttl_body(ttl_seconds))


def info(chat_id: str | UUID) -> Call[Session]:
    return Call("GET", chat_path(chat_id), _session)


def delete(chat_id: str | UUID) -> Call[None]:
    return Call("DELETE", chat_path(chat_id), _no_content)


def keepalive(chat_id: str | UUID, ttl_seconds: int | None) -> Call[KeptAlive]:
    return Call(
        "POST", f"{chat_path(chat_id)}/keepalive", _kept_alive, json=ttl_body(ttl_seconds)
    )


class ExecOptions(TypedDict, total=False):
    """What an exec takes besides its command, each optional (`Sandbox.exec` says what each
    one does)."""

    stdin: str | None
    env: Mapping[str, str] | None
    workdir: str | None
    timeout: float | None


def exec_(
    chat_id: str | UUID, command: Sequence[str], **options: Unpack[ExecOptions]
) -> Call[ExecResult]:
    if isinstance(command, (str, bytes)):
        raise TypeError(
            "command is the program and its arguments as a list of strings, e.g. "
            "['sh', '-c', 'echo hi']: sandkeeper never runs it through a shell unless asked"
        )
    stdin, env, workdir = options.get("stdin"), options.get("env"), options.get("workdir")
    timeout = options.get("timeout")
    body: dict[str, Any] = {"command": list(command)}
    if stdin is not None:
        body["stdin"] = stdin
    if env is not None:
        body["env"] = dict(env)
    if workdir is not None:
        body["workdir"] = workdir
    wait = None
    if timeout is not None:
        # The server counts whole milliseconds; a fraction rounds up, so a command is never
        # given less than was asked. Zero or a negative value is the server's to refuse.
        body["timeout_ms"] = math.ceil(timeout * 1000)
        wait = max(timeout, 0.0) + EXEC_ANSWER_MARGIN
    return Call("POST", f"{chat_path(chat_id)}/exec", _exec_result, json=body, wait=wait)


def write_file(chat_id: str | UUID, path: str, data: bytes | bytearray | memoryview | str) -> (
    Call[UploadedFile]
):
    content = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return Call("PUT", file_path(chat_id, path), _uploaded, content=content)


def read_file(chat_id: str | UUID, path: str) -> Call[bytes]:
    return Call("GET", file_path(chat_id, path), _file_bytes)


# --- Reading answers -------------------------------------------------------------------------


def _checked(response: httpx.Response) -> httpx.Response:
    if not response.is_success:
        raise error_from_response(response)
    return response


def _object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = _checked(response).json()
    except ValueError as error:
        raise invalid_answer(response, f"the body is not JSON ({error})") from None
    if not isinstance(body, dict):
        raise invalid_answer(response, "the body is not a JSON object")
    return body


class _Fields:
    """Typed reads of an answer's fields; a missing or mistyped one is an `invalid_answer`."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.body = _object(response)

    def _get(self, name: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = self.body.get(name)
        # bool is an int to Python, never to the API.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise invalid_answer(self.response, f"`{name}` is {value!r}, not {what}")
        return value

    def text(self, name: str) -> str:
        value: str = self._get(name, str, "a string")
        return value

    def integer(self, name: str) -> int:
        value: int = self._get(name, int, "an integer")
        return value

    def optional_integer(self, name: str) -> int | None:
        if self.body.get(name) is None:
            if name not in self.body:
                raise invalid_answer(self.response, f"`{name}` is missing")
            return None
        return self.integer(name)

    def flag(self, name: str) -> bool:
        value: bool = self._get(name, bool, "a boolean")
        return value

    def time(self, name: str) -> datetime:
        text = self.text(name)
        try:
            # RFC 3339 in UTC with a `Z`, which fromisoformat reads only from Python 3.11 on.
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise invalid_answer(self.response, f"`{name}` is {text!r}, not a time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed

    def one_of(self, name: str, allowed: Any) -> Any:
        value = self.text(name)
        choices = get_args(allowed)
        if value not in choices:
            raise invalid_answer(self.response, f"`{name}` is {value!r}, not one of {choices}")
        return value


def _session_fields(fields: _Fields) -> dict[str, Any]:
    status: SandboxStatus = fields.one_of("status", SandboxStatus)
    return {
        "session_id": fields.text("session_id"),
        "chat_id": fields.text("chat_id"),
        "container_id": fields.text("container_id"),
        "status": status,
        "created_at": fields.time("created_at"),
        "expires_at": fields.time("expires_at"),
        "engine": fields.text("engine"),
    }


def _session(response: httpx.Response) -> Session:
    return Session(**_session_fields(_Fields(response)))


def _ensured(response: httpx.Response) -> EnsuredSession:
    fields = _Fields(response)
    result: EnsureOutcome = fields.one_of("result", EnsureOutcome)
    return EnsuredSession(**_session_fields(fields), result=result)


def _kept_alive(response: httpx.Response) -> KeptAlive:
    fields = _Fields(response)
    result: KeepAliveOutcome = fields.one_of("result", KeepAliveOutcome)
    return KeptAlive(
        **_session_fields(fields),
        result=result,
        lifetime_ends_at=fields.time("lifetime_ends_at"),
    )


def _exec_result(response: httpx.Response) -> ExecResult:
    fields = _Fields(response)
    return ExecResult(
        exit_code=fields.optional_integer("exit_code"),
        stdout=fields.text("stdout"),
        stderr=fields.text("stderr"),
        timed_out=fields.flag("timed_out"),
        truncated=fields.flag("truncated"),
        duration_ms=fields.integer("duration_ms"),
        session_id=fields.text("session_id"),
    )


def _uploaded(response: httpx.Response) -> UploadedFile:
    fields = _Fields(response)
    return UploadedFile(
        path=fields.text("path"), size=fields.integer("size"), session_id=fields.text("session_id")
    )


def _file_bytes(response: httpx.Response) -> bytes:
    return _checked(response).content


def _no_content(response: httpx.Response) -> None:
    _checked(response)
