"""All configuration, read from the environment in one place (``Settings.from_env()``).

Every service calls ``from_env()`` once in its ``main()``; library classes take the
resulting object (or explicit arguments), never ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _bool(value: str) -> bool:
    if value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if value.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    # env name, default and meaning of each field are listed in ENV below and in the README.
    redis_url: str = "redis://localhost:6379/0"
    channel: str = "laravel_database_general"
    request_suffix: str = "_sender"
    responder_pattern: str = "*_sender"
    source: str = "python"
    call_timeout: float = 5.0
    private_replies: bool = True
    max_concurrency: int = 256
    max_backlog: int = 10_000
    max_message_bytes: int = 1_048_576
    drain_timeout: float = 8.0
    health_check_interval: float = 15.0
    push_interval: float = 10.0
    heartbeat_file: str = ""
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_send_buffer: int = 1_048_576
    gateway_max_calls_per_client: int = 256
    gateway_max_timeout: float = 30.0
    gateway_allowed_origins: str = ""
    log_level: str = "INFO"

    @property
    def request_channel(self) -> str:
        return self.channel + self.request_suffix

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: Any) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); ``defaults`` are a service's own
        defaults, used where the environment says nothing."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults)
        for field in dataclasses.fields(cls):
            name = ENV[field.name][0]
            if name in environ:
                raw = environ[name]
                try:
                    values[field.name] = _bool(raw) if field.type == "bool" else _CAST[field.type](raw)
                except ValueError as exc:
                    raise ValueError(f"{name}={raw!r}: {exc}") from None
        settings = cls(**values)
        if "responder_pattern" not in values and settings.request_suffix != "_sender":
            settings = dataclasses.replace(settings, responder_pattern="*" + settings.request_suffix)
        return settings


_CAST = {"str": str, "int": int, "float": float}

# field -> (environment variable, meaning). The README's configuration table mirrors this.
ENV: dict[str, tuple[str, str]] = {
    "redis_url": ("REDIS_URL", "Redis DSN (redis:// or rediss://, with user:password@ for ACL)"),
    "channel": ("RPC_CHANNEL", "reply/push channel; requests go to this name + RPC_REQUEST_SUFFIX"),
    "request_suffix": ("RPC_REQUEST_SUFFIX", "suffix that makes the request channel"),
    "responder_pattern": ("RPC_RESPONDER_PATTERN", "pattern the responder PSUBSCRIBEs (default '*' + suffix)"),
    "source": ("RPC_SOURCE", "the `source` field this process writes"),
    "call_timeout": ("RPC_CALL_TIMEOUT", "default seconds a call waits for its reply"),
    "private_replies": ("RPC_PRIVATE_REPLIES", "callers ask for replies on their own channel (replyTo)"),
    "max_concurrency": ("RPC_MAX_CONCURRENCY", "requests a responder runs at once"),
    "max_backlog": ("RPC_MAX_BACKLOG", "requests queued beyond that before replying `overloaded`"),
    "max_message_bytes": ("RPC_MAX_MESSAGE_BYTES", "larger messages are dropped as malformed"),
    "drain_timeout": ("RPC_DRAIN_TIMEOUT", "seconds a stopping responder lets in-flight requests finish"),
    "health_check_interval": ("REDIS_HEALTH_CHECK_INTERVAL", "idle seconds before a PING checks the connection"),
    "push_interval": ("PUSH_INTERVAL", "seconds between the responder's `configs` pushes (0 = off)"),
    "heartbeat_file": ("HEARTBEAT_FILE", "file touched while healthy, for container health checks"),
    "gateway_host": ("GATEWAY_HOST", "address the gateway binds"),
    "gateway_port": ("GATEWAY_PORT", "port the gateway binds"),
    "gateway_send_buffer": ("GATEWAY_SEND_BUFFER", "bytes a WebSocket may leave unsent before it is dropped as too slow"),
    "gateway_max_calls_per_client": ("GATEWAY_MAX_CALLS_PER_CLIENT", "calls one WebSocket may have in flight"),
    "gateway_max_timeout": ("GATEWAY_MAX_TIMEOUT", "upper bound on a browser call's timeout, seconds"),
    "gateway_allowed_origins": (
        "GATEWAY_ALLOWED_ORIGINS",
        "extra browser origins allowed on /ws, comma-separated ('*' = any); same-origin always is",
    ),
    "log_level": ("LOG_LEVEL", "logging level"),
}
