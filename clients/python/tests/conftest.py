"""Starts the real ``sandkeeper serve`` for the tests, as the Rust black-box harness does: on a
free loopback port (``--listen 127.0.0.1:0``, the address read from its ``listening on`` log
line), with a temporary ``--data-dir`` and an instance id of its own, so that the containers it
makes carry a label of their own and are all removed at the end, also when a test failed.

The binary is ``$SANDKEEPER_BIN``, else ``target/debug/sandkeeper`` of the repository (``cargo
build -p sandkeeper-app``). The tests need the Docker engine and the image
``sandkeeper/sandbox:latest`` (``cargo xtask image``): without an engine they skip, unless
``SANDKEEPER_REQUIRE_DOCKER=1``, when they fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[3]
IMAGE = os.environ.get("SANDKEEPER_TEST_IMAGE", "sandkeeper/sandbox:latest")
INSTANCE_LABEL = "io.sandkeeper.instance"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
LISTENING = re.compile(r"listening on ([^\s\",]+)")


def binary() -> Path:
    """``$SANDKEEPER_BIN`` (relative to the working directory), else the repository's
    ``target/debug/sandkeeper``."""
    given = os.environ.get("SANDKEEPER_BIN")
    return Path(given).resolve() if given else REPOSITORY / "target" / "debug" / "sandkeeper"


def docker_ok(*args: str) -> bool:
    try:
        done = subprocess.run(["docker", *args], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def require_docker() -> None:
    """Skips the test without a Docker engine, or fails it when SANDKEEPER_REQUIRE_DOCKER=1;
    fails it when the engine lacks the sandbox image."""
    if not docker_ok("version", "--format", "{{.Server.Version}}"):
        reason = "no Docker engine answers `docker version`"
        if os.environ.get("SANDKEEPER_REQUIRE_DOCKER") == "1":
            pytest.fail(f"SANDKEEPER_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    if not docker_ok("image", "inspect", IMAGE):
        pytest.fail(
            f"the sandbox image `{IMAGE}` is not on the Docker engine: build it with "
            "`cargo xtask image`",
            pytrace=False,
        )


@dataclass
class Server:
    """A running ``sandkeeper serve``."""

    url: str
    token: str | None
    instance_id: str
    process: subprocess.Popen[str]
    logs: list[str] = field(default_factory=list)

    def containers(self) -> list[str]:
        """The ids of every container of this server's instance, running or not."""
        done = subprocess.run(
            ["docker", "ps", "-aq", "--no-trunc"]
            + ["--filter", f"label={INSTANCE_LABEL}={self.instance_id}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.split()


def start_server(data_dir: Path, token: str | None = None) -> Server:
    require_docker()
    path = binary()
    if not path.is_file():
        pytest.fail(
            f"the sandkeeper binary is missing at {path}: build it with "
            "`cargo build -p sandkeeper-app`, or point SANDKEEPER_BIN at it",
            pytrace=False,
        )
    # No SANDKEEPER_* setting of the caller's shell leaks into the server.
    env = {name: value for name, value in os.environ.items() if not name.startswith("SANDKEEPER_")}
    env.setdefault("RUST_LOG", "info")
    if token is not None:
        env["SANDKEEPER_API_TOKEN"] = token
    instance_id = f"py-{uuid.uuid4().hex[:16]}"
    process = subprocess.Popen(
        [
            str(path),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--instance-id",
            instance_id,
            "--image",
            IMAGE,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    logs: list[str] = []
    address: list[str] = []
    listening = threading.Event()

    def read_logs() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            logs.append(line)
            found = LISTENING.search(line)
            if found and not address:
                address.append(found.group(1))
                listening.set()
        listening.set()  # the process ended: stop waiting

    threading.Thread(target=read_logs, daemon=True).start()
    if not listening.wait(START_TIMEOUT) or not address:
        process.kill()
        process.wait()
        pytest.fail(
            f"sandkeeper serve did not log `listening on` within {START_TIMEOUT} s "
            f"(exit status {process.poll()}):\n{''.join(logs)}",
            pytrace=False,
        )
    return Server(f"http://{address[0]}", token, instance_id, process, logs)


def stop_server(server: Server) -> None:
    """SIGTERM, then the removal of every container of the instance (a stopped server leaves
    its sandboxes for its next start; the tests have none)."""
    server.process.terminate()
    try:
        server.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    leftovers = server.containers()
    if leftovers:
        subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True, check=False)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server without a token for the whole run."""
    running = start_server(tmp_path_factory.mktemp("sandkeeper-data"))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server that requires a bearer token."""
    running = start_server(
        tmp_path_factory.mktemp("sandkeeper-token-data"), token=f"t-{uuid.uuid4().hex}"
    )
    yield running
    stop_server(running)


@pytest.fixture
def chat_id() -> str:
    """A chat of the test's own."""
    return str(uuid.uuid4())
