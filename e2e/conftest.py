"""The compose stack, brought up once per session by pytest-docker, torn down with volumes.

pytest-docker's defaults assume Compose v2 (`docker compose`, `up --build --wait`,
tests/docker-compose.yml); these fixtures work with v2 and with docker-compose 1.29.
The stack runs as its own project on a free port, so it never touches `make up`'s. It uses
the checkout's git-ignored .secrets/ (Redis ACL passwords, JWT key), created here if missing,
as `make up` does.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.make_secrets import DEFAULT_CHANNEL, JWT_FILE, ensure_secrets
from scripts.redis_process import free_port

ROOT = Path(__file__).resolve().parent.parent
# E2E_PROJECT lets two checkouts run their suites side by side on one Docker engine.
PROJECT = os.environ.get("E2E_PROJECT", "pubsub-rpc-e2e")
SECRETS = ROOT / ".secrets"
ALL_PROFILES = "--profile peers --profile observability --profile ha"


def _compose_command() -> str:
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    return "docker compose" if v2 else "docker-compose"


def _load_image_overrides() -> None:
    """What `make e2e` exports, for a bare `pytest e2e` too. A variable the Makefile exported
    empty counts as unset: on a fresh clone the bootstrap writes these files during the same
    `make e2e` that already read them (empty) at parse time."""
    for env_file in (ROOT / ".images.env", ROOT / ".images.peers.env", ROOT / ".images.observability.env"):
        if env_file.exists():
            for line in env_file.read_text().splitlines():
                key, _, value = line.partition("=")
                if key and value and not os.environ.get(key):
                    os.environ[key] = value


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return _compose_command()


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(ROOT / "compose.yaml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return PROJECT


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    _load_image_overrides()
    ensure_secrets(SECRETS, os.environ.get("RPC_CHANNEL") or DEFAULT_CHANNEL)  # compose mounts them
    os.environ["GATEWAY_PORT"] = str(free_port())
    os.environ["PUSH_INTERVAL"] = "1"
    # As `make up` does: the page in Chromium gets its token from /demo/token. Tests that
    # act as a real app's backend sign their own with Stack.jwt_secret instead.
    os.environ.setdefault("GATEWAY_DEMO_MODE", "true")
    # The `peers` profile too (Node.js and PHP containers speaking the seed's protocol), so
    # the mixed round trips run in the same session; node_like_caller calls the PHP peer.
    # And the `observability` profile: Prometheus scraping every service (its port is free too).
    os.environ["COMPOSE_PROFILES"] = "peers,observability"
    os.environ["PROMETHEUS_PORT"] = str(free_port())
    os.environ["RPC_PEER_CHANNEL"] = "laravel_database_php"
    os.environ["RPC_PEER_INTERVAL"] = "1"
    os.environ["PEER_INTERVAL"] = "1"
    # `--wait` is v2-only; readiness is awaited below with a deadline instead.
    return [f"{ALL_PROFILES} down -v --remove-orphans", "up --build -d"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return [f"{ALL_PROFILES} down -v --remove-orphans"]


class Stack:
    """The running project, driven the way a user would: compose commands and the port."""

    def __init__(self, compose: str) -> None:
        self._compose = compose.split() + ["-f", str(ROOT / "compose.yaml"), "-p", PROJECT]
        self.gateway = f"http://127.0.0.1:{os.environ['GATEWAY_PORT']}"
        self.ws_url = self.gateway.replace("http", "ws", 1) + "/ws"
        self.prometheus = f"http://127.0.0.1:{os.environ['PROMETHEUS_PORT']}"
        # The gateway's HS256 key (compose mounts it as GATEWAY_JWT_SECRET_FILE).
        self.jwt_secret = (SECRETS / JWT_FILE).read_text().strip()

    def compose(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._compose + list(args), capture_output=True, text=True, check=check, timeout=timeout)

    def container_id(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def health(self, service: str) -> str:
        container = self.container_id(service)
        if not container:
            return "absent"
        fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        return subprocess.run(["docker", "inspect", "-f", fmt, container], capture_output=True, text=True).stdout.strip()

    def exit_code(self, service: str) -> str:
        container = self.container_id(service)
        return subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", container], capture_output=True, text=True
        ).stdout.strip()

    def all_healthy(self) -> bool:
        return all(self.health(s) == "healthy" for s in ("redis", "laravel_like_responder", "node_like_caller", "ws_gateway"))

    def wait(self, condition, timeout: float = 90, what: str = "the stack") -> float:
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout:
                logs = self.compose("logs", "--tail=40", check=False).stdout
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")
            time.sleep(0.25)
        return time.monotonic() - started

    def python(self, service: str, code: str) -> subprocess.CompletedProcess[str]:
        """Run ``code`` with the service's Python inside its container, on the private network."""
        return self.compose("exec", "-T", service, "python", "-c", code, check=False)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", "node_like_caller", "python", "-m", "node_like_caller", "call", *args, check=False)


def gateway_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def stack_session(docker_services, docker_compose_command: str) -> Stack:
    stack = Stack(docker_compose_command)
    docker_services.wait_until_responsive(check=lambda: gateway_ready(stack.gateway), timeout=180.0, pause=0.5)
    stack.wait(stack.all_healthy, timeout=120, what="every container to be healthy")
    return stack


@pytest.fixture
def stack(stack_session: Stack) -> Iterator[Stack]:
    """Each test starts from a healthy stack, whatever the one before it restarted."""
    if not stack_session.all_healthy():
        stack_session.compose("up", "-d")
    stack_session.wait(stack_session.all_healthy, what="every container to be healthy")
    yield stack_session
