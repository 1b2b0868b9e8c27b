"""Log lines: JSON that parses, call fields on call lines, and no credentials ever."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis as redis_sync
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, CallTimeout, NoResponder, Responder, Settings
from pubsub_rpc.logs import JsonFormatter, TextFormatter, call_fields, redact

from scripts.redis_process import RedisProcess

ROOT = Path(__file__).resolve().parent.parent


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("pubsub_rpc.test", logging.INFO, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_line_carries_the_call_fields() -> None:
    fields = call_fields(request_id="abc", action="sum", caller="ws_gateway", code="ok", duration_ms=1.23456)
    line = orjson.loads(JsonFormatter().format(record("answered %s", "sum", **fields)))
    assert line["msg"] == "answered sum"
    assert (line["requestId"], line["action"], line["caller"], line["code"], line["durationMs"]) == (
        "abc",
        "sum",
        "ws_gateway",
        "ok",
        1.235,
    )
    assert line["level"] == "INFO" and line["ts"].endswith("Z")


def test_text_line_shows_the_call_fields_after_the_message() -> None:
    text = TextFormatter().format(record("answered", **call_fields(request_id="abc", action="sum")))
    assert text.endswith("answered [requestId=abc action=sum]")


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_a_dsn_password_is_masked_in_any_message(formatter: logging.Formatter) -> None:
    out = formatter.format(record("cannot connect to %s", "redis://gateway:s3cr3t-pass@redis:6379/0"))
    assert "s3cr3t-pass" not in out
    assert "redis://gateway:***@redis:6379/0" in out


def test_redact_leaves_a_dsn_without_password_alone() -> None:
    assert redact("redis://redis:6379/0") == "redis://redis:6379/0"


def test_a_service_started_with_log_format_json_writes_only_json_lines() -> None:
    """The real responder process, started and stopped: every line it prints parses."""
    with RedisProcess() as redis:
        redis_sync.Redis.from_url(redis.url).config_set("requirepass", "the-real-one")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT / "lib/pubsub_rpc/src")]),
            "REDIS_URL": redis.url,
            "REDIS_PASSWORD": "the-real-one",
            "LOG_FORMAT": "json",
            "PUSH_INTERVAL": "0",
            "RPC_CHANNEL": "logs_test_general",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "laravel_like_responder"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert process.stdout is not None
        first = process.stdout.readline()  # the first line: it has connected, or failed to
        process.terminate()
        rest, _ = process.communicate(timeout=30)
    lines = [first, *rest.splitlines()]
    parsed = [orjson.loads(line) for line in lines if line.strip()]
    assert parsed, "the service logged nothing"
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in parsed)
    assert any(b"subscribed" in line for line in lines), "it never connected with the password"
    assert not any(b"the-real-one" in line for line in lines)


async def test_a_callers_timeout_and_no_responder_lines_carry_the_call_fields(
    caplog: pytest.LogCaptureFixture, settings: Settings
) -> None:
    responder = Responder(settings, name="logs-responder")
    register(responder)
    caplog.set_level(logging.INFO)
    async with responder, Caller(settings, name="logs-caller") as caller:
        with pytest.raises(CallTimeout):
            await caller.call("slow", {"ms": 2000}, timeout=0.1)
    async with Caller(dataclasses.replace(settings, channel=settings.channel + "_nobody"), name="lonely") as lonely:
        with pytest.raises(NoResponder):
            await lonely.call("sum", [1])
    by_code = {record.__dict__.get("code"): record for record in caplog.records if record.__dict__.get("requestId")}
    timeout, nobody = by_code["timeout"], by_code["no_responder"]
    assert (timeout.__dict__["action"], timeout.__dict__["caller"]) == ("slow", settings.source)
    assert timeout.__dict__["durationMs"] >= 100 and len(timeout.__dict__["requestId"]) == 32
    assert nobody.__dict__["action"] == "sum" and nobody.levelno == logging.WARNING
