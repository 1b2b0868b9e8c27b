"""The chaos suite's compose project: compose.yaml + e2e/compose.chaos.yaml, 3 responders and
2 gateways, its own project name and ports, so it never touches the main e2e stack.

Faults are injected the way an operator's bad day does: ``docker kill -s KILL`` (no restart
policy applies to a killed container, so it stays dead until started again), ``docker
pause`` (every process frozen, TCP still accepted by the kernel: a half-open peer) and
``docker stop``/``start``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from pubsub_rpc import Settings
from pubsub_rpc.protocol import encode_request

from scripts.make_secrets import DEFAULT_CHANNEL, JWT_FILE, ensure_secrets, password_file
from scripts.redis_process import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ROOT / ".secrets"
RESPONDERS = 3
GATEWAYS = 2
RESPONDER = "laravel_like_responder"
GATEWAY = "ws_gateway"
SERVICES = ("redis", RESPONDER, GATEWAY)
VISIBILITY = 3.0  # RPC_STREAM_VISIBILITY in the chaos stack (the library's default)
# Inherited from the main e2e fixtures' os.environ changes, and wrong for this project.
NOT_INHERITED = ("COMPOSE_PROFILES", "GATEWAY_PORT", "PROMETHEUS_PORT", "RPC_PEER_CHANNEL", "RPC_TRANSPORT")


def _two_free_ports() -> int:
    """A port P with P+1 free too: the gateways' published range."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


class ChaosStack:
    """The running project, driven through compose and the docker CLI."""

    def __init__(self, compose: str, project: str) -> None:
        ensure_secrets(SECRETS, os.environ.get("RPC_CHANNEL") or DEFAULT_CHANNEL)
        gateway_port = _two_free_ports()
        self.redis_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        self.env.update(
            GATEWAY_PORT=f"{gateway_port}-{gateway_port + GATEWAYS - 1}",
            CHAOS_REDIS_PORT=str(self.redis_port),
            RPC_STREAM_VISIBILITY=str(VISIBILITY),
            GATEWAY_DEMO_MODE="true",
            PUSH_INTERVAL="1",
        )
        files = ["-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "e2e" / "compose.chaos.yaml")]
        self._compose = compose.split() + files + ["-p", project]
        self.project = project
        self.jwt_secret = (SECRETS / JWT_FILE).read_text().strip()
        self.transport = ""

    # -- compose and docker -------------------------------------------------------------

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = self._compose + list(args)
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=True, timeout=timeout)

    def up(self, transport: str, build: bool = False) -> float:
        """Start (or recreate, if the transport changed) the stack; wait until all healthy.
        Returns the seconds it took."""
        started = time.monotonic()
        if transport != self.transport:
            self.env["RPC_TRANSPORT"] = transport
            scale = ["--scale", f"{RESPONDER}={RESPONDERS}", "--scale", f"{GATEWAY}={GATEWAYS}"]
            self.compose("up", "-d", *(["--build"] if build else []), *scale, *SERVICES, timeout=600)
            self.transport = transport
        self.heal()
        return time.monotonic() - started

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", timeout=180)

    def containers(self, service: str) -> list[str]:
        """Container ids of ``service``, every state, in replica order."""
        ids = self.compose("ps", "-a", "-q", service).stdout.split()
        numbers = docker("inspect", "-f", '{{index .Config.Labels "com.docker.compose.container-number"}}', *ids).split()
        return [cid for _, cid in sorted(zip(map(int, numbers), ids, strict=True))]

    def everything(self) -> list[str]:
        return [cid for service in SERVICES for cid in self.containers(service)]

    def states(self, ids: list[str]) -> dict[str, str]:
        """id -> "running healthy", "paused healthy", "exited none", ..."""
        fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        return dict(zip(ids, docker("inspect", "-f", fmt, *ids).splitlines(), strict=True))

    def name(self, cid: str) -> str:
        """The container's name without the project: laravel_like_responder_2."""
        return docker("inspect", "-f", "{{.Name}}", cid).strip().lstrip("/").removeprefix(self.project + "_")

    def lives(self) -> dict[str, str]:
        """id -> "<restart count> <started at> <status>": unchanged means no process exited."""
        ids = self.everything()
        fmt = "{{.RestartCount}} {{.State.StartedAt}} {{.State.Status}}"
        return dict(zip(ids, docker("inspect", "-f", fmt, *ids).splitlines(), strict=True))

    def heal(self, timeout: float = 90) -> None:
        """Undo any test's faults: unpause, start what is stopped, wait until all healthy."""
        ids = self.everything()
        for cid, state in self.states(ids).items():
            if state.startswith("paused"):
                docker("unpause", cid)
            elif not state.startswith("running"):
                docker("start", cid)
        wait_for(lambda: all(s == "running healthy" for s in self.states(ids).values()), timeout, "every container healthy")

    def wait_healthy(self, ids: list[str], timeout: float = 60) -> tuple[float, dict[str, str]]:
        """Seconds until all of ``ids`` are healthy, and which were not at first (name -> state)."""
        started = time.monotonic()
        unhealthy = {self.name(cid): state for cid, state in self.states(ids).items() if state != "running healthy"}
        wait_for(lambda: all(s == "running healthy" for s in self.states(ids).values()), timeout, "containers healthy")
        return time.monotonic() - started, unhealthy

    # -- endpoints ----------------------------------------------------------------------

    def gateway_urls(self) -> list[str]:
        """http://127.0.0.1:<port> of each gateway replica."""
        urls = []
        for cid in self.containers(GATEWAY):
            published = docker("port", cid, "8080/tcp").split()[0]  # 127.0.0.1:41801
            urls.append(f"http://{published}")
        return urls

    def settings(self, user: str = "caller", **overrides: object) -> Settings:
        """Library settings for a host process that reaches the stack's Redis as ``user``
        (``caller`` replies on <channel>.reply.node_like_caller.*, the ACL's confinement)."""
        values: dict[str, object] = {
            "redis_url": f"redis://127.0.0.1:{self.redis_port}/0",
            "redis_username": user,
            "redis_password": self.password(user),
            "service": "node_like_caller",
            "transport": self.transport,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def password(self, user: str) -> str:
        return (SECRETS / password_file(user)).read_text().strip()

    def redis(self, user: str = "caller") -> redis.Redis:
        return redis.Redis(
            port=self.redis_port, username=user, password=self.password(user), socket_timeout=1, socket_connect_timeout=1
        )

    def redis_answers(self) -> bool:
        """A PING from the host gets PONG (Redis up, not frozen)."""
        client = self.redis()
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def responders_listening(self) -> int:
        """How many clients a request on the request channel reaches (PUBLISH's answer): every
        responder whose subscriber is back. The request is an `echo` whose reply goes nowhere."""
        settings = self.settings()
        reply_to = f"{settings.reply_prefix}{settings.service}.chaos-{secrets.token_hex(8)}"
        payload = encode_request("echo", None, secrets.token_hex(16), "chaos", reply_to)
        client = self.redis()
        try:
            return int(client.publish(settings.request_channel, payload))
        except (redis.RedisError, OSError):
            return 0
        finally:
            client.close()

    def stream_length(self) -> int:
        """XLEN of the request stream, as the responder user (the only one allowed to)."""
        client = self.redis("responder")
        try:
            return int(client.xlen(self.settings("responder").stream_key))
        finally:
            client.close()


def docker(*args: str, timeout: float = 60) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=timeout).stdout


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started
