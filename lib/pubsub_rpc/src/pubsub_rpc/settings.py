"""All configuration, read from the environment in one place (``Settings.from_env()``).

Every service calls ``from_env()`` once in its ``main()``; library classes take the
resulting object (or explicit arguments), never ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from . import settings_checks as check
from .settings_checks import SettingsError

__all__ = ["ENV", "RULES", "Settings", "SettingsError"]


def _bool(value: str) -> bool:
    if value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if value.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    # env name, default and meaning of each field are listed in ENV below and in the README.
    redis_url: str = field(default="redis://localhost:6379/0", repr=False)  # may hold a password
    redis_username: str = ""
    redis_password: str = field(default="", repr=False)
    sentinels: str = ""
    sentinel_master: str = ""
    sentinel_username: str = ""
    sentinel_password: str = field(default="", repr=False)
    channel: str = "laravel_database_general"
    request_suffix: str = "_sender"
    responder_pattern: str = "*_sender"
    source: str = "python"
    service: str = "python"
    reply_namespace: str = ""
    user_namespace: str = ""
    call_timeout: float = 5.0
    private_replies: bool = True
    max_concurrency: int = 256
    max_backlog: int = 10_000
    max_backlog_bytes: int = 67_108_864
    max_message_bytes: int = 1_048_576
    max_channel_bytes: int = 256
    drain_timeout: float = 8.0
    liveness_timeout: float = 3.0
    connect_timeout: float = 3.0
    max_write_buffer: int = 8_388_608
    transport: str = "pubsub"
    claims: str = "auto"
    announce_interval: float = 1.0
    fail_fast: bool = False
    stream_maxlen: int = 100_000
    stream_visibility: float = 3.0
    stream_max_deliveries: int = 3
    stream_group: str = "responders"
    idempotency_ttl: float = 60.0
    redis_cluster: bool = False
    push_interval: float = 10.0
    peer_channel: str = ""
    peer_interval: float = 5.0
    heartbeat_file: str = ""
    probe_interval: float = 5.0
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    presence_interval: float = 2.0
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_send_buffer: int = 1_048_576
    gateway_max_calls_per_client: int = 256
    gateway_max_timeout: float = 30.0
    gateway_allowed_origins: str = ""
    gateway_allowed_hosts: str = "localhost,127.0.0.1,[::1]"
    gateway_allowed_actions: str = ""
    gateway_demo_mode: bool = False
    gateway_jwt_secret: str = field(default="", repr=False)
    gateway_jwt_public_key: str = field(default="", repr=False)
    gateway_jwt_algorithms: str = ""
    gateway_jwt_audience: str = ""
    gateway_jwt_issuer: str = ""
    gateway_demo_token_ttl: float = 300.0
    gateway_auth_timeout: float = 5.0
    gateway_idle_timeout: float = 60.0
    gateway_max_connections: int = 10_000
    gateway_max_connections_per_ip: int = 100
    gateway_rate_limit: float = 200.0
    gateway_rate_burst: int = 1_000
    gateway_max_frame_bytes: int = 65_536
    gateway_live_view: bool = True
    log_level: str = "INFO"
    log_format: str = "text"

    def __post_init__(self) -> None:
        """Every Settings is valid (``RULES`` below): a bad value fails here, naming the variable."""
        check.validate(self, RULES, ENV)

    @property
    def request_channel(self) -> str:
        return self.channel + self.request_suffix

    @property
    def redis_dsn(self) -> str:
        """``redis_url`` with REDIS_USERNAME / REDIS_PASSWORD put in, for the connection pool."""
        if not (self.redis_username or self.redis_password):
            return self.redis_url
        parts = urlsplit(self.redis_url)
        user = quote(self.redis_username or unquote(parts.username or ""), safe="")
        password = quote(self.redis_password or unquote(parts.password or ""), safe="")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def reply_prefix(self) -> str:
        """Every private reply channel starts with this; responders reply nowhere else."""
        return self.reply_namespace or self.channel + ".reply."

    @property
    def user_prefix(self) -> str:
        """Per-user push channels: ``<user_prefix><sub>``, read only by gateways."""
        return self.user_namespace or self.channel + ".user."

    @property
    def probe_prefix(self) -> str:
        """Data-path probes: each process publishes to ``<probe_prefix><service>.<random>``,
        a channel it subscribes itself (``pubsub_rpc.probe``)."""
        return self.channel + ".probe."

    @property
    def presence_channel(self) -> str:
        """Where services announce themselves every ``presence_interval`` (pubsub_rpc.presence)."""
        return self.channel + ".presence"

    @property
    def registry_name(self) -> str:
        """The responder registry: a hash of live responders (field = instance) and the
        channel their joins, heartbeats and leaves are announced on (same name)."""
        return self.channel + ".responders"

    @property
    def claim_prefix(self) -> str:
        """Competing responders claim a request with ``SET <claim_prefix><requestId> NX``."""
        return self.channel + ".claim."

    @property
    def stream_key(self) -> str:
        """Streams mode: the request stream of this channel. The hash tag keeps the stream,
        its dead letters and its stored replies in one Redis Cluster slot."""
        return "{" + self.request_channel + "}.stream"

    @property
    def dead_letter_key(self) -> str:
        return "{" + self.request_channel + "}.dead"

    @property
    def stored_reply_prefix(self) -> str:
        """Streams mode: replies kept for idempotency, ``<prefix><requestId>``."""
        return "{" + self.request_channel + "}.done."

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: Any) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); ``defaults`` are a service's own
        defaults, used where the environment says nothing."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults)
        for spec in dataclasses.fields(cls):
            name = ENV[spec.name][0]
            try:
                raw = _read(environ, name)
            except ValueError as exc:
                raise SettingsError(str(exc)) from None
            if raw is not None:
                try:
                    values[spec.name] = _bool(raw) if spec.type == "bool" else _CAST[str(spec.type)](raw)
                except ValueError:
                    shown = "<secret>" if not spec.repr else repr(raw)
                    raise SettingsError(f"{name}={shown}: {_EXPECTED[str(spec.type)]}") from None
        suffix = values.get("request_suffix", "_sender")
        if "responder_pattern" not in values and suffix != "_sender":
            values["responder_pattern"] = "*" + suffix
        return cls(**values)


_CAST = {"str": str, "int": int, "float": float}
_EXPECTED = {"int": "must be an integer", "float": "must be a number", "bool": "must be true or false (1/0, yes/no, on/off)"}

# Secrets may come from a file instead (Docker secrets): NAME_FILE=/run/secrets/x.
SECRET_FILE_VARS = frozenset(
    {"REDIS_URL", "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD", "GATEWAY_JWT_SECRET", "GATEWAY_JWT_PUBLIC_KEY"}
)


def _read(environ: Mapping[str, str], name: str) -> str | None:
    """The variable's value, or the content of the file ``NAME_FILE`` names (not both)."""
    file_name = environ.get(name + "_FILE") if name in SECRET_FILE_VARS else None
    if file_name is None:
        return environ.get(name)
    if name in environ:
        raise ValueError(f"set {name} or {name}_FILE, not both")
    try:
        return Path(file_name).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{name}_FILE={file_name!r}: cannot read it ({exc.strerror})") from None


# field -> (environment variable, meaning). The README's configuration table mirrors this.
ENV: dict[str, tuple[str, str]] = {
    "redis_url": ("REDIS_URL", "Redis DSN (redis:// or rediss://, with user:password@ for ACL); or REDIS_URL_FILE"),
    "redis_username": ("REDIS_USERNAME", "ACL user name (overrides the DSN's)"),
    "redis_password": ("REDIS_PASSWORD", "ACL password (overrides the DSN's); or REDIS_PASSWORD_FILE"),
    "sentinels": (
        "REDIS_SENTINELS",
        "Sentinel mode: the sentinels, host:port,host:port (with REDIS_SENTINEL_MASTER; REDIS_URL keeps credentials, db, TLS)",
    ),
    "sentinel_master": ("REDIS_SENTINEL_MASTER", "Sentinel mode: the master's name in the sentinels' configuration"),
    "sentinel_username": ("REDIS_SENTINEL_USERNAME", "ACL user on the sentinels themselves (empty = none)"),
    "sentinel_password": ("REDIS_SENTINEL_PASSWORD", "password on the sentinels; or REDIS_SENTINEL_PASSWORD_FILE"),
    "channel": ("RPC_CHANNEL", "reply/push channel; requests go to this name + RPC_REQUEST_SUFFIX"),
    "request_suffix": ("RPC_REQUEST_SUFFIX", "suffix that makes the request channel"),
    "responder_pattern": ("RPC_RESPONDER_PATTERN", "pattern the responder PSUBSCRIBEs (default '*' + suffix)"),
    "source": ("RPC_SOURCE", "the `source` field this process writes"),
    "service": ("RPC_SERVICE", "service name in caller ids: replies come on <reply prefix><service>.<random>"),
    "reply_namespace": ("RPC_REPLY_NAMESPACE", "prefix of private reply channels (default <channel>.reply.)"),
    "user_namespace": ("RPC_USER_NAMESPACE", "prefix of per-user push channels (default <channel>.user.)"),
    "call_timeout": ("RPC_CALL_TIMEOUT", "default seconds a call waits for its reply"),
    "private_replies": ("RPC_PRIVATE_REPLIES", "callers ask for replies on their own channel (replyTo)"),
    "max_concurrency": ("RPC_MAX_CONCURRENCY", "requests a responder runs at once"),
    "max_backlog": ("RPC_MAX_BACKLOG", "requests queued beyond that before replying `overloaded`"),
    "max_backlog_bytes": ("RPC_MAX_BACKLOG_BYTES", "bytes of queued requests beyond which the responder replies `overloaded`"),
    "max_message_bytes": ("RPC_MAX_MESSAGE_BYTES", "larger messages are dropped as malformed"),
    "max_channel_bytes": ("RPC_MAX_CHANNEL_BYTES", "longer request or reply channel names are dropped"),
    "drain_timeout": ("RPC_DRAIN_TIMEOUT", "seconds a stopping responder lets in-flight requests finish"),
    "liveness_timeout": (
        "REDIS_LIVENESS_TIMEOUT",
        "seconds without any answer from Redis before a connection counts as dead: dropped, its calls fail `connection_lost`",
    ),
    "connect_timeout": ("REDIS_CONNECT_TIMEOUT", "seconds one connection attempt (TCP, TLS, AUTH, HELLO) may take"),
    "max_write_buffer": (
        "REDIS_MAX_WRITE_BUFFER",
        "bytes a Redis connection may hold unsent; above it new calls fail at once with `backpressure`",
    ),
    "transport": ("RPC_TRANSPORT", "`pubsub` (at most once, the seed's way) or `streams` (at least once, for v1 traffic)"),
    "claims": (
        "RPC_CLAIMS",
        "competing responders claim each request so one runs it: `auto` (while others are alive), `always`, `off`",
    ),
    "announce_interval": (
        "RPC_ANNOUNCE_INTERVAL",
        "seconds between a responder's registry heartbeats (actions served); an entry lives 3 intervals",
    ),
    "fail_fast": (
        "RPC_FAIL_FAST",
        "callers fail at once with no_responder / unknown_action when the registry has no live responder for the action",
    ),
    "stream_maxlen": ("RPC_STREAM_MAXLEN", "streams mode: approximate bound on the request stream's length"),
    "stream_visibility": (
        "RPC_STREAM_VISIBILITY",
        "streams mode: seconds a request may stay pending with a silent consumer before another reclaims it",
    ),
    "stream_max_deliveries": (
        "RPC_STREAM_MAX_DELIVERIES",
        "streams mode: deliveries after which a request goes to the dead-letter stream",
    ),
    "stream_group": ("RPC_STREAM_GROUP", "streams mode: the responders' consumer group"),
    "idempotency_ttl": ("RPC_IDEMPOTENCY_TTL", "streams mode: seconds a reply is kept to answer a redelivered request"),
    "redis_cluster": (
        "REDIS_CLUSTER",
        "Redis Cluster mode: v1 requests and replies on sharded pub/sub (SPUBLISH/SSUBSCRIBE); REDIS_URL names any node",
    ),
    "push_interval": ("PUSH_INTERVAL", "seconds between the responder's `configs` pushes (0 = off)"),
    "peer_channel": ("RPC_PEER_CHANNEL", "node_like_caller also calls a seed-protocol peer on this base channel (empty = off)"),
    "peer_interval": ("RPC_PEER_INTERVAL", "seconds between those calls"),
    "heartbeat_file": ("HEARTBEAT_FILE", "file touched while healthy, for container health checks"),
    "probe_interval": (
        "RPC_PROBE_INTERVAL",
        "seconds within which a self-published probe must come back, else the link is deaf: unready, reconnected",
    ),
    "metrics_port": ("METRICS_PORT", "port of the responder's and caller's Prometheus /metrics (0 = off)"),
    "metrics_host": ("METRICS_HOST", "address /metrics binds"),
    "presence_interval": (
        "RPC_PRESENCE_INTERVAL",
        "seconds between a service's presence heartbeats on <channel>.presence (0 = off); gone after 3 missed",
    ),
    "gateway_host": ("GATEWAY_HOST", "address the gateway binds"),
    "gateway_port": ("GATEWAY_PORT", "port the gateway binds"),
    "gateway_send_buffer": ("GATEWAY_SEND_BUFFER", "bytes a WebSocket may leave unsent before it is dropped as too slow"),
    "gateway_max_calls_per_client": ("GATEWAY_MAX_CALLS_PER_CLIENT", "calls one WebSocket may have in flight"),
    "gateway_max_timeout": ("GATEWAY_MAX_TIMEOUT", "upper bound on a browser call's timeout, seconds"),
    "gateway_allowed_origins": (
        "GATEWAY_ALLOWED_ORIGINS",
        "extra browser origins allowed on /ws, comma-separated ('*' = any); same-origin always is",
    ),
    "gateway_allowed_hosts": ("GATEWAY_ALLOWED_HOSTS", "Host names the gateway answers (DNS-rebinding guard), comma-separated"),
    "gateway_allowed_actions": ("GATEWAY_ALLOWED_ACTIONS", "actions browsers may call, comma-separated (empty = none)"),
    "gateway_demo_mode": ("GATEWAY_DEMO_MODE", "mint demo tokens for the page at /demo/token (never in production)"),
    "gateway_jwt_secret": ("GATEWAY_JWT_SECRET", "HS256 secret that signs browser tokens; or GATEWAY_JWT_SECRET_FILE"),
    "gateway_jwt_public_key": ("GATEWAY_JWT_PUBLIC_KEY", "PEM public key for RS256/ES256 tokens; or GATEWAY_JWT_PUBLIC_KEY_FILE"),
    "gateway_jwt_algorithms": ("GATEWAY_JWT_ALGORITHMS", "JWT algorithms (default HS256 with a secret, RS256,ES256 with a key)"),
    "gateway_jwt_audience": ("GATEWAY_JWT_AUDIENCE", "required `aud` claim (empty = not checked)"),
    "gateway_jwt_issuer": ("GATEWAY_JWT_ISSUER", "required `iss` claim (empty = not checked)"),
    "gateway_demo_token_ttl": ("GATEWAY_DEMO_TOKEN_TTL", "lifetime of demo tokens, seconds"),
    "gateway_auth_timeout": ("GATEWAY_AUTH_TIMEOUT", "seconds a new WebSocket has to authenticate"),
    "gateway_idle_timeout": ("GATEWAY_IDLE_TIMEOUT", "seconds without a frame or pong before a WebSocket is closed"),
    "gateway_max_connections": ("GATEWAY_MAX_CONNECTIONS", "WebSockets open at once, in total"),
    "gateway_max_connections_per_ip": ("GATEWAY_MAX_CONNECTIONS_PER_IP", "WebSockets open at once from one address"),
    "gateway_rate_limit": ("GATEWAY_RATE_LIMIT", "calls per second one WebSocket may make (token bucket)"),
    "gateway_rate_burst": ("GATEWAY_RATE_BURST", "calls one WebSocket may make at once above the rate"),
    "gateway_max_frame_bytes": ("GATEWAY_MAX_FRAME_BYTES", "largest WebSocket frame accepted from a client"),
    "gateway_live_view": (
        "GATEWAY_LIVE_VIEW",
        "authenticated sockets may watch live call stats and the services alive (the page's live view)",
    ),
    "log_level": ("LOG_LEVEL", "logging level"),
    "log_format": ("LOG_FORMAT", "`text` (readable) or `json` (one object per line; the images' default)"),
}

# field -> the rule its value must pass at start-up (pubsub_rpc.settings_checks). A new
# field with a range gets a line here; the cross-field checks are in settings_checks.
RULES: dict[str, check.Rule] = {
    "redis_url": check.url_scheme("redis", "rediss", "unix"),
    "sentinels": check.host_port_list,
    "channel": check.non_empty,
    "request_suffix": check.non_empty,
    "responder_pattern": check.non_empty,
    "service": check.non_empty,
    "call_timeout": check.seconds(),
    "max_concurrency": check.integer_at_least(1),
    "max_backlog": check.integer_at_least(1),
    "max_backlog_bytes": check.integer_at_least(1),
    "max_message_bytes": check.integer_at_least(1),
    "max_channel_bytes": check.integer_at_least(1),
    "drain_timeout": check.seconds(),
    "push_interval": check.seconds(zero_means_off=True),
    "liveness_timeout": check.seconds(),
    "connect_timeout": check.seconds(),
    "max_write_buffer": check.integer_at_least(65_536),
    "transport": check.one_of("pubsub", "streams"),
    "claims": check.one_of("auto", "always", "off"),
    "announce_interval": check.seconds(),
    "stream_maxlen": check.integer_at_least(100),
    "stream_visibility": check.seconds(),
    "stream_max_deliveries": check.integer_at_least(1),
    "stream_group": check.non_empty,
    "idempotency_ttl": check.seconds(),
    "peer_interval": check.seconds(),
    "probe_interval": check.seconds(),
    "metrics_port": check.port_or_off,
    "metrics_host": check.non_empty,
    "presence_interval": check.seconds(zero_means_off=True),
    "gateway_port": check.port,
    "gateway_send_buffer": check.integer_at_least(1),
    "gateway_max_calls_per_client": check.integer_at_least(1),
    "gateway_max_timeout": check.seconds(),
    "gateway_demo_token_ttl": check.seconds(),
    "gateway_auth_timeout": check.seconds(),
    "gateway_idle_timeout": check.seconds(),
    "gateway_max_connections": check.integer_at_least(1),
    "gateway_max_connections_per_ip": check.integer_at_least(1),
    "gateway_rate_limit": check.seconds(),
    "gateway_rate_burst": check.integer_at_least(1),
    "gateway_max_frame_bytes": check.integer_at_least(1),
    "log_level": check.log_level,
    "log_format": check.one_of("text", "json"),
}
