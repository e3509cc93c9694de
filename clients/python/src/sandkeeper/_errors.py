"""The errors of the client: one base class, `SandkeeperError`, and a subclass per kind of
answer a caller handles differently."""

from __future__ import annotations

import json

import httpx

# The longest server text quoted in an error made from an answer that is not sandkeeper's
# envelope (a proxy's page, say).
_QUOTE_LIMIT = 200


class SandkeeperError(Exception):
    """Everything the client raises about a call.

    ``status`` is the HTTP status of the answer (``None`` when no answer came: see
    `TransportError`), ``code`` the stable ``error.code`` of sandkeeper's error envelope
    (``{"error": {"code", "message"}}``), meant for programs, and ``message`` its text, meant
    for people. The client's own codes are ``transport_error`` (no answer) and
    ``invalid_answer`` (an answer that is not what the API documents).
    """

    def __init__(self, message: str, *, status: int | None, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        prefix = f"{self.status} " if self.status is not None else ""
        return f"{prefix}{self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r})"
        )


class InvalidRequest(SandkeeperError):
    """400, 413 or 422: the request was refused as it is (a bad chat id, body, path, command,
    TTL; too large a body, stdin or file). Retrying the same request gives the same answer."""


class Unauthorized(SandkeeperError):
    """401: the bearer token is missing or wrong."""


class Forbidden(SandkeeperError):
    """403: ``permission_denied`` inside the sandbox, or, on a server without a token, a
    ``Host`` or ``Origin`` it does not serve."""


class NotFound(SandkeeperError):
    """404: the chat has no running sandbox (``sandbox_not_found``: ``ensure()`` one first),
    no file is at the path (``file_not_found``), or no such route."""


class Conflict(SandkeeperError):
    """409: the sandbox went away under the call (``sandbox_gone``), the path is not a regular
    file, the sandbox is at its process limit, or the state changed meanwhile; see ``code``."""


class CapacityReached(SandkeeperError):
    """429 ``capacity_reached``: the server runs its maximum of sandboxes; no new one is made."""


class SandboxBusy(SandkeeperError):
    """429 ``sandbox_busy``: the sandbox runs its maximum of commands and transfers; retry."""


class Unavailable(SandkeeperError):
    """503: a dependency of the server (Docker, the store, the image) or the server's own
    capacity for connections or bodies is unavailable for now; retry later."""


class TransportError(SandkeeperError):
    """No answer: the connection failed or timed out. ``status`` is ``None``, ``code`` is
    ``transport_error``, and the `httpx.HTTPError` behind it is ``__cause__``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, code="transport_error")


def invalid_answer(response: httpx.Response, why: str) -> SandkeeperError:
    """The error for an answer that is not what the API documents."""
    return SandkeeperError(
        f"{response.request.method} {response.request.url.path} answered {response.status_code}, "
        f"which is not a sandkeeper answer: {why}",
        status=response.status_code,
        code="invalid_answer",
    )


def error_from_response(response: httpx.Response) -> SandkeeperError:
    """The error an unsuccessful answer stands for, read from sandkeeper's error envelope."""
    status = response.status_code
    code: str | None = None
    message: str | None = None
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        if isinstance(error.get("code"), str) and isinstance(error.get("message"), str):
            code, message = error["code"], error["message"]
    if code is None or message is None:
        text = response.content[:_QUOTE_LIMIT].decode("utf-8", errors="replace")
        code = f"http_{status}"
        message = (
            f"{response.request.method} {response.request.url.path} answered {status} "
            f"without sandkeeper's error body: {text!r}"
        )
    return _class_for(status, code)(message, status=status, code=code)


def _class_for(status: int, code: str) -> type[SandkeeperError]:
    if status in (400, 413, 422):
        return InvalidRequest
    if status == 429:
        return {"capacity_reached": CapacityReached, "sandbox_busy": SandboxBusy}.get(
            code, SandkeeperError
        )
    return {
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        409: Conflict,
        503: Unavailable,
    }.get(status, SandkeeperError)
