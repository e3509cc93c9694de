"""A code-running tool for a chat agent, on sandkeeper's Python client.

An agent framework calls `run_code(chat_id, code)` when its model asks to run code: the chat's
sandbox is created on first use (and handed back after), the code is written into its
``/workspace`` and run there, and the output comes back as one text the model can read. Files the
code writes stay in the sandbox for the next call of the same chat, until the sandbox expires.

Run it by hand against a server (``cargo xtask run``):

    echo 'echo hello from $(uname -s)' | python examples/python/run_code.py --language sh
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Any, Literal

from sandkeeper import Sandkeeper, SandkeeperError

Language = Literal["python", "sh"]

# What a model is told about the tool (the JSON-schema shape that function-calling APIs take).
TOOL_SPEC: dict[str, Any] = {
    "name": "run_code",
    "description": (
        "Run code in this conversation's own sandbox (no network; files in the working "
        "directory persist between calls) and return its output and exit status."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "The program to run."},
            "language": {"type": "string", "enum": ["python", "sh"]},
        },
        "required": ["code"],
    },
}

PROGRAMS: dict[Language, tuple[str, str]] = {
    "python": ("python3", "main.py"),
    "sh": ("sh", "main.sh"),
}
OUTPUT_LIMIT = 8000
"""Characters of output handed back to the model; a model's context is precious."""


def run_code(
    client: Sandkeeper,
    chat_id: str,
    code: str,
    language: Language = "python",
    *,
    timeout: float = 30.0,
) -> str:
    """Runs ``code`` in the chat's sandbox and returns what a model should read: the output,
    then a last line with the exit status (or the timeout). Failures of the service come back as
    text too, so that the agent can tell the model rather than crash."""
    program, filename = PROGRAMS[language]
    sandbox = client.sandbox(chat_id)
    try:
        sandbox.ensure()
        if language == "python" and not sandbox.exec(["sh", "-c", "command -v python3"]).ok:
            return (
                "python3 is not installed in this sandbox's image; "
                "use language 'sh', or serve an image with Python"
            )
        sandbox.files.write(filename, code)
        result = sandbox.exec([program, filename], timeout=timeout)
    except SandkeeperError as error:
        return f"[the sandbox service failed: {error}]"
    output = result.stdout + result.stderr
    if len(output) > OUTPUT_LIMIT:
        output = output[:OUTPUT_LIMIT] + "\n[... output cut]"
    if result.truncated:
        output += "\n[... the sandbox cut the output]"
    if result.timed_out:
        status = f"[timed out after {timeout:g} s and was stopped]"
    else:
        status = f"[exit status {result.exit_code}]"
    if output and not output.endswith("\n"):
        output += "\n"
    return output + status


def main() -> None:
    parser = argparse.ArgumentParser(description="Run code from stdin in a chat's sandbox.")
    parser.add_argument(
        "--url", default=os.environ.get("SANDKEEPER_URL", "http://127.0.0.1:8080")
    )
    parser.add_argument("--token", default=os.environ.get("SANDKEEPER_TOKEN"))
    parser.add_argument("--chat", default=str(uuid.uuid4()), help="default: a new chat")
    parser.add_argument("--language", choices=["python", "sh"], default="python")
    arguments = parser.parse_args()
    language: Language = "sh" if arguments.language == "sh" else "python"
    with Sandkeeper(arguments.url, token=arguments.token) as client:
        print(run_code(client, arguments.chat, sys.stdin.read(), language))


if __name__ == "__main__":
    main()
