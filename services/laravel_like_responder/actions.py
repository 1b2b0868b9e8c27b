"""The sample actions. Each is a plain or async function registered on a Responder;
copy this file's shape for your own actions."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import platform
import socket
import time
from typing import Any

from pubsub_rpc import InvalidRequest, Responder, current_request
from pubsub_rpc.logs import call_fields

STARTED_AT = time.time()
MAX_SLOW_MS = 60_000
MAX_TAG_CHARS = 100
# This process among the replicas of a scaled service: the container's host name.
REPLICA = socket.gethostname()
log = logging.getLogger("laravel_like_responder.work")


def main_configs() -> dict[str, Any]:
    """What the seed's MainConfigsController would return: app-wide settings."""
    return {
        "appName": "pubsub-rpc demo",
        "locale": "en",
        "currency": "EUR",
        "features": {"websocketBridge": True, "privateReplies": True},
        "uptimeSeconds": round(time.time() - STARTED_AT, 1),
    }


def register(responder: Responder) -> None:
    @responder.action("configs", "The application's main configs (the seed's example action)")
    def configs(data: Any) -> dict[str, Any]:
        return main_configs()

    @responder.action("echo", "Return `data` unchanged")
    def echo(data: Any) -> Any:
        return data

    @responder.action("sum", 'Add numbers: data is a list of numbers, or {"numbers": [...]}')
    def total(data: Any) -> float | int:
        numbers = data.get("numbers") if isinstance(data, dict) else data
        if not isinstance(numbers, list) or not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
            raise InvalidRequest("sum expects a list of numbers, e.g. [1, 2.5, 3]")
        result = sum(numbers)
        if isinstance(result, float) and not math.isfinite(result):
            raise InvalidRequest("sum overflowed")
        return result

    @responder.action("slow", "Sleep for data.ms milliseconds (default 1000), then answer; for timeout demos")
    async def slow(data: Any) -> dict[str, int]:
        ms = data.get("ms", 1000) if isinstance(data, dict) else 1000
        if not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= MAX_SLOW_MS:
            raise InvalidRequest(f'slow expects {{"ms": 0..{MAX_SLOW_MS}}}')
        await asyncio.sleep(ms / 1000)
        return {"sleptMs": ms}

    @responder.action("work", 'Demo/test load: sleep data.ms, log each run with data.tag, answer {"replica", "tag"}')
    async def work(data: Any) -> dict[str, str]:
        ms, tag = _work_arguments(data)
        _log_run("work started", tag)
        await asyncio.sleep(ms / 1000)
        _log_run("work done", tag)
        return {"replica": REPLICA, "tag": tag}

    @responder.action("fail", "Always raise, to show a handler_error reply")
    def fail(data: Any) -> None:
        raise RuntimeError("this action fails on purpose")

    @responder.action("actions", "List the actions this responder serves, with descriptions")
    def actions(data: Any) -> list[dict[str, str]]:
        return responder.describe()

    @responder.action("info", "Responder name, Python version and request counters")
    def info(data: Any) -> dict[str, Any]:
        # Every ResponderStats counter, camelCased (received, replied, errors, dropped, ...).
        counters = {_camel(name): value for name, value in dataclasses.asdict(responder.stats).items()}
        return {
            "name": responder.name,
            "python": platform.python_version(),
            **counters,
            "inFlight": responder.in_flight,
            "backlogBytes": responder.backlog_bytes,
        }


def _work_arguments(data: Any) -> tuple[int, str]:
    ms = data.get("ms", 0) if isinstance(data, dict) else None
    tag = data.get("tag", "") if isinstance(data, dict) else None
    if not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= MAX_SLOW_MS:
        raise InvalidRequest(f'work expects {{"ms": 0..{MAX_SLOW_MS}, "tag": "..."}}')
    if not isinstance(tag, str) or len(tag) > MAX_TAG_CHARS:
        raise InvalidRequest(f"work expects a string tag of at most {MAX_TAG_CHARS} characters")
    return ms, tag


def _log_run(what: str, tag: str) -> None:
    """One line per start and per end of a run, written before anything else can fail: the
    chaos suite (e2e/test_chaos.py) counts runs per tag in every replica's log, so a run is
    on record even if the replica is SIGKILLed right after."""
    request = current_request()
    request_id = request.request_id if request is not None else None
    log.info("%s tag=%s replica=%s", what, tag, REPLICA, extra=call_fields(request_id, "work"))


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)
