"""Settings are validated at start-up: every bad value is named with its allowed range, and
every service stops at once (exit 2, one line, no traceback) instead of misbehaving."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pubsub_rpc.settings import ENV, RULES, Settings, SettingsError

SERVICES = Path(__file__).resolve().parent.parent / "services"

# (environment, variable the message must name, words it must contain)
BAD: list[tuple[dict[str, str], str, str]] = [
    ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL=<secret>", "redis:// or rediss:// or unix://"),
    ({"REDIS_URL": "localhost:6379"}, "REDIS_URL=<secret>", "must start with"),
    ({"RPC_CHANNEL": ""}, "RPC_CHANNEL=''", "must not be empty"),
    ({"RPC_REQUEST_SUFFIX": ""}, "RPC_REQUEST_SUFFIX=''", "must not be empty"),
    ({"RPC_RESPONDER_PATTERN": " "}, "RPC_RESPONDER_PATTERN=' '", "must not be empty"),
    ({"RPC_SERVICE": ""}, "RPC_SERVICE=''", "must not be empty"),
    ({"RPC_CALL_TIMEOUT": "0"}, "RPC_CALL_TIMEOUT=0.0", "seconds > 0"),
    ({"RPC_CALL_TIMEOUT": "-1"}, "RPC_CALL_TIMEOUT=-1.0", "seconds > 0"),
    ({"RPC_CALL_TIMEOUT": "nan"}, "RPC_CALL_TIMEOUT=nan", "seconds > 0"),
    ({"RPC_CALL_TIMEOUT": "inf"}, "RPC_CALL_TIMEOUT=inf", "seconds > 0"),
    ({"RPC_CALL_TIMEOUT": "soon"}, "RPC_CALL_TIMEOUT='soon'", "must be a number"),
    ({"RPC_MAX_CONCURRENCY": "0"}, "RPC_MAX_CONCURRENCY=0", "integer >= 1"),
    ({"RPC_MAX_CONCURRENCY": "2.5"}, "RPC_MAX_CONCURRENCY='2.5'", "must be an integer"),
    ({"RPC_MAX_BACKLOG": "0"}, "RPC_MAX_BACKLOG=0", "integer >= 1"),
    ({"RPC_MAX_BACKLOG_BYTES": "-5"}, "RPC_MAX_BACKLOG_BYTES=-5", "integer >= 1"),
    ({"RPC_MAX_MESSAGE_BYTES": "0"}, "RPC_MAX_MESSAGE_BYTES=0", "integer >= 1"),
    ({"RPC_MAX_CHANNEL_BYTES": "0"}, "RPC_MAX_CHANNEL_BYTES=0", "integer >= 1"),
    ({"RPC_MAX_CHANNEL_BYTES": "20"}, "RPC_MAX_CHANNEL_BYTES=20", "length of this service's reply channels"),
    ({"RPC_DRAIN_TIMEOUT": "0"}, "RPC_DRAIN_TIMEOUT=0.0", "seconds > 0"),
    ({"REDIS_LIVENESS_TIMEOUT": "0"}, "REDIS_LIVENESS_TIMEOUT=0.0", "seconds > 0"),
    ({"REDIS_CONNECT_TIMEOUT": "-1"}, "REDIS_CONNECT_TIMEOUT=-1.0", "seconds > 0"),
    ({"REDIS_MAX_WRITE_BUFFER": "1000"}, "REDIS_MAX_WRITE_BUFFER=1000", "integer >= 65536"),
    ({"RPC_TRANSPORT": "kafka"}, "RPC_TRANSPORT='kafka'", "pubsub, streams"),
    ({"RPC_CLAIMS": "sometimes"}, "RPC_CLAIMS='sometimes'", "auto, always, off"),
    ({"RPC_ANNOUNCE_INTERVAL": "0"}, "RPC_ANNOUNCE_INTERVAL=0.0", "seconds > 0"),
    ({"RPC_STREAM_MAXLEN": "10"}, "RPC_STREAM_MAXLEN=10", "integer >= 100"),
    ({"RPC_STREAM_VISIBILITY": "0"}, "RPC_STREAM_VISIBILITY=0.0", "seconds > 0"),
    ({"RPC_STREAM_MAX_DELIVERIES": "0"}, "RPC_STREAM_MAX_DELIVERIES=0", "integer >= 1"),
    ({"RPC_STREAM_GROUP": ""}, "RPC_STREAM_GROUP=''", "must not be empty"),
    ({"RPC_IDEMPOTENCY_TTL": "0"}, "RPC_IDEMPOTENCY_TTL=0.0", "seconds > 0"),
    ({"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER='maybe'", "must be true or false"),
    ({"REDIS_CLUSTER": "true", "REDIS_URL": "unix:///tmp/r.sock"}, "REDIS_CLUSTER=true", "host:port"),
    ({"REDIS_CLUSTER": "true", "RPC_TRANSPORT": "streams"}, "REDIS_CLUSTER=true", "pub/sub traffic only"),
    (
        {"REDIS_CLUSTER": "true", "REDIS_SENTINELS": "s:26379", "REDIS_SENTINEL_MASTER": "m"},
        "REDIS_SENTINELS with REDIS_CLUSTER=true",
        "choose one",
    ),
    ({"PUSH_INTERVAL": "-1"}, "PUSH_INTERVAL=-1.0", "seconds >= 0 (0 = off)"),
    ({"RPC_PEER_INTERVAL": "0"}, "RPC_PEER_INTERVAL=0.0", "seconds > 0"),
    ({"RPC_PRESENCE_INTERVAL": "-1"}, "RPC_PRESENCE_INTERVAL=-1.0", "seconds >= 0 (0 = off)"),
    ({"GATEWAY_LIVE_VIEW": "maybe"}, "GATEWAY_LIVE_VIEW='maybe'", "true or false"),
    ({"RPC_PRIVATE_REPLIES": "maybe"}, "RPC_PRIVATE_REPLIES='maybe'", "true or false"),
    ({"GATEWAY_PORT": "0"}, "GATEWAY_PORT=0", "port number in 1..65535"),
    ({"GATEWAY_PORT": "65536"}, "GATEWAY_PORT=65536", "port number in 1..65535"),
    ({"GATEWAY_SEND_BUFFER": "0"}, "GATEWAY_SEND_BUFFER=0", "integer >= 1"),
    ({"GATEWAY_MAX_CALLS_PER_CLIENT": "0"}, "GATEWAY_MAX_CALLS_PER_CLIENT=0", "integer >= 1"),
    ({"GATEWAY_MAX_TIMEOUT": "0"}, "GATEWAY_MAX_TIMEOUT=0.0", "seconds > 0"),
    ({"GATEWAY_DEMO_TOKEN_TTL": "0"}, "GATEWAY_DEMO_TOKEN_TTL=0.0", "seconds > 0"),
    ({"GATEWAY_AUTH_TIMEOUT": "-2"}, "GATEWAY_AUTH_TIMEOUT=-2.0", "seconds > 0"),
    ({"GATEWAY_IDLE_TIMEOUT": "0"}, "GATEWAY_IDLE_TIMEOUT=0.0", "seconds > 0"),
    ({"GATEWAY_MAX_CONNECTIONS": "0"}, "GATEWAY_MAX_CONNECTIONS=0", "integer >= 1"),
    ({"GATEWAY_MAX_CONNECTIONS_PER_IP": "0"}, "GATEWAY_MAX_CONNECTIONS_PER_IP=0", "integer >= 1"),
    ({"GATEWAY_RATE_LIMIT": "0"}, "GATEWAY_RATE_LIMIT=0.0", "> 0"),
    ({"GATEWAY_RATE_BURST": "0"}, "GATEWAY_RATE_BURST=0", "integer >= 1"),
    ({"GATEWAY_MAX_FRAME_BYTES": "0"}, "GATEWAY_MAX_FRAME_BYTES=0", "integer >= 1"),
    ({"RPC_PROBE_INTERVAL": "0"}, "RPC_PROBE_INTERVAL=0.0", "seconds > 0"),
    ({"METRICS_PORT": "-1"}, "METRICS_PORT=-1", "1..65535, or 0 (off)"),
    ({"METRICS_PORT": "65536"}, "METRICS_PORT=65536", "1..65535, or 0 (off)"),
    ({"METRICS_HOST": ""}, "METRICS_HOST=''", "must not be empty"),
    ({"RPC_RESPONDER_PATTERN": "*.probe.*"}, "RPC_RESPONDER_PATTERN='*.probe.*'", "a probe channel"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud'", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml'", "one of text, json"),
    # Sentinel mode: a list of host:port, the master's name with it, and a TCP REDIS_URL.
    ({"REDIS_SENTINELS": "s1:26379,s2"}, "REDIS_SENTINELS='s1:26379,s2'", "host:port"),
    ({"REDIS_SENTINELS": "s1:0", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS='s1:0'", "host:port"),
    ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINEL_MASTER=''", "set both (Sentinel mode) or neither"),
    ({"REDIS_SENTINEL_MASTER": "mymaster"}, "REDIS_SENTINELS=''", "set both (Sentinel mode) or neither"),
    (
        {"REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "unix:///tmp/r.sock"},
        "REDIS_URL=<secret>",
        "Sentinel mode needs redis:// or rediss://",
    ),
    # The responder's pattern must never hear what it publishes itself.
    ({"RPC_REQUEST_SUFFIX": ""}, "RPC_RESPONDER_PATTERN='*'", "push channel"),
    ({"RPC_RESPONDER_PATTERN": "laravel_*"}, "RPC_RESPONDER_PATTERN='laravel_*'", "push channel"),
    ({"RPC_RESPONDER_PATTERN": "*.reply.*"}, "RPC_RESPONDER_PATTERN='*.reply.*'", "a reply channel"),
    ({"RPC_REPLY_NAMESPACE": "r:", "RPC_RESPONDER_PATTERN": "r:*"}, "RPC_RESPONDER_PATTERN='r:*'", "a reply channel"),
    ({"RPC_RESPONDER_PATTERN": "*.presence"}, "RPC_RESPONDER_PATTERN='*.presence'", "the presence channel"),
    ({"RPC_RESPONDER_PATTERN": "*.responders"}, "RPC_RESPONDER_PATTERN='*.responders'", "the responder registry channel"),
    ({"RPC_USER_NAMESPACE": "u_", "RPC_RESPONDER_PATTERN": "u_*"}, "RPC_RESPONDER_PATTERN='u_*'", "per-user push channel"),
    ({"RPC_REPLY_NAMESPACE": "x.", "RPC_USER_NAMESPACE": "x.u."}, "RPC_REPLY_NAMESPACE='x.'", "must differ"),
]


@pytest.mark.parametrize(("environ", "named", "allowed"), BAD, ids=[" ".join(f"{k}={v}" for k, v in b[0].items()) for b in BAD])
def test_a_bad_value_is_refused_naming_the_variable_and_its_range(environ: dict[str, str], named: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(environ)
    message = str(info.value)
    assert named in message and allowed in message, message
    assert "\n" not in message


def test_every_rule_is_exercised_above() -> None:
    """A rule added without a test case here fails this test, so none goes untested."""
    tested = {name for environ, _, _ in BAD for name in environ}
    untested = {ENV[field][0] for field in RULES} - tested
    assert not untested, f"add a bad value for {sorted(untested)} to BAD"


def test_defaults_and_edges_of_each_range_are_accepted() -> None:
    Settings()
    Settings.from_env({})
    edges = {
        "GATEWAY_PORT": "1",
        "PUSH_INTERVAL": "0",
        "RPC_MAX_CONCURRENCY": "1",
        "RPC_MAX_BACKLOG": "1",
        "RPC_CALL_TIMEOUT": "0.001",
        "LOG_LEVEL": "debug",
        "REDIS_URL": "rediss://h:6380/0",
    }
    settings = Settings.from_env(edges)
    assert settings.gateway_port == 1 and settings.push_interval == 0
    assert Settings.from_env({"GATEWAY_PORT": "65535", "REDIS_URL": "unix:///tmp/redis.sock"}).gateway_port == 65535


def test_sentinel_mode_accepts_a_list_and_keeps_its_password_out_of_repr(tmp_path: Path) -> None:
    secret = tmp_path / "sentinel.password"
    secret.write_text("s3cret\n")
    environ = {
        "REDIS_SENTINELS": "sentinel-1:26379, [::1]:26380",
        "REDIS_SENTINEL_MASTER": "mymaster",
        "REDIS_SENTINEL_USERNAME": "services",
        "REDIS_SENTINEL_PASSWORD_FILE": str(secret),
    }
    settings = Settings.from_env(environ)
    assert settings.sentinel_password == "s3cret" and "s3cret" not in repr(settings)


def test_a_custom_suffix_derives_a_pattern_that_passes() -> None:
    settings = Settings.from_env({"RPC_REQUEST_SUFFIX": "_req"})
    assert settings.responder_pattern == "*_req"


def test_secrets_never_appear_in_the_message() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"REDIS_URL": "http://user:hunter2@127.0.0.1:6379"})
    assert "hunter2" not in str(info.value)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(SettingsError, match=r"RPC_MAX_CONCURRENCY=0: must be an integer >= 1"):
        Settings(max_concurrency=0)


@pytest.mark.parametrize("service", ["laravel_like_responder", "node_like_caller", "ws_gateway"])
def test_a_service_with_a_bad_setting_stops_at_start_with_one_line(service: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(SERVICES), "RPC_REQUEST_SUFFIX": "", "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"{service}: configuration error: ")
    assert "RPC_REQUEST_SUFFIX=''" in lines[0] and "RPC_RESPONDER_PATTERN='*'" in lines[0]
