"""The start-up demo: a few calls whose results, errors and latencies read like a story."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from pubsub_rpc import Caller, NoResponder, RpcError
from pubsub_rpc.logs import call_fields

log = logging.getLogger("node_like_caller")

STEPS: list[tuple[str, Any, float | None]] = [
    ("actions", None, None),
    ("configs", None, None),
    ("echo", {"hello": "world"}, None),
    ("sum", [1, 2, 3.5], None),
    ("sum", "not a list", None),  # invalid_request
    ("fail", None, None),  # handler_error
    ("does_not_exist", None, None),  # unknown_action
    ("slow", {"ms": 1500}, 0.5),  # timeout
]


def _short(value: Any, limit: int = 120) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def wait_for_responder(caller: Caller, deadline: float = 60.0) -> None:
    """At start-up the responder may not be subscribed yet; ask until it answers."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            await caller.call("actions", timeout=2.0)
            return
        except (NoResponder, RpcError) as exc:
            if time.monotonic() > give_up:
                raise
            log.info("waiting for a responder (%s)", exc.code)
            await asyncio.sleep(0.5)


async def run_scenario(caller: Caller) -> None:
    await wait_for_responder(caller)
    log.info("demo: %d calls through Redis", len(STEPS))
    for action, data, timeout in STEPS:
        started = time.perf_counter()
        try:
            result = await caller.call(action, data, timeout=timeout)
        except RpcError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            fields = call_fields(action=action, caller=caller.settings.source, code=exc.code, duration_ms=elapsed)
            log.info("  %-15s %-22s -> %s: %s (%.2f ms)", action, _short(data, 22), exc.code, exc.message, elapsed, extra=fields)
        else:
            elapsed = (time.perf_counter() - started) * 1000
            fields = call_fields(action=action, caller=caller.settings.source, code="ok", duration_ms=elapsed)
            log.info("  %-15s %-22s -> ok %s (%.2f ms)", action, _short(data, 22), _short(result), elapsed, extra=fields)


async def call_peer_forever(caller: Caller, interval: float) -> None:
    """Call a seed-protocol responder (the `peers` profile's PHP container) every ``interval``
    seconds and log what came back: our caller against a real Laravel-style peer."""
    rounds = 0
    while True:
        rounds += 1
        numbers = [rounds, 1, 2]
        started = time.perf_counter()
        try:
            result = await caller.call("sum", numbers)
        except RpcError as exc:
            log.warning("peer %s: sum %s -> %s: %s", caller.name, numbers, exc.code, exc.message)
        else:
            elapsed = (time.perf_counter() - started) * 1000
            log.info("peer %s: sum %s -> %s (%.2f ms)", caller.name, numbers, _short(result), elapsed)
        await asyncio.sleep(interval)
