"""A service started while Redis is away waits for it, retrying (unready, counted, logged),
instead of exiting after a few seconds with a traceback; SIGTERM still stops it at once.
The real responder service, in a process of its own."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.error
from pathlib import Path

from pubsub_rpc import Caller

from scripts.redis_process import RedisProcess

from .conftest import eventually
from .live_service import LiveResponder, live_responder, scrape

NAME = "laravel_like_responder"


async def sample(live: LiveResponder, name: str, **labels: str) -> float | None:
    """One metric sample of the running service, or None while /metrics is not up yet."""
    try:
        samples, _ = await asyncio.to_thread(scrape, live.metrics_url, 2.0)
    except (urllib.error.URLError, ConnectionError):
        return None
    return samples.get((name, tuple(sorted(labels.items()))))


async def connect_failures(live: LiveResponder) -> float:
    """The publisher's: a responder's subscriber waits for its publisher before it tries."""
    return await sample(live, "rpc_redis_link_connect_failures_total", link=f"{NAME}-pub") or 0.0


async def test_a_service_started_before_redis_waits_for_it_then_serves(tmp_path: Path) -> None:
    redis = RedisProcess()  # a free port, nothing listening yet
    try:
        with live_responder(redis.url, tmp_path) as live:

            async def retried() -> bool:
                return await connect_failures(live) >= 3

            await eventually(retried, timeout=30, what="three failed connects")
            assert live.process.poll() is None
            assert await sample(live, "rpc_ready", component=NAME) == 0.0
            await redis.start_async()

            async def ready() -> bool:
                return await sample(live, "rpc_ready", component=NAME) == 1.0

            await eventually(ready, timeout=15, what="the service to connect once Redis is up")
            async with Caller(live.settings, name="startup-caller") as caller:
                assert await caller.call("echo", "late but there") == "late but there"
            assert live.process.poll() is None
        assert b"Traceback" not in live.log.read_bytes()
    finally:
        redis.close()


async def test_sigterm_stops_a_service_still_waiting_for_redis(tmp_path: Path) -> None:
    redis = RedisProcess()  # never started
    with live_responder(redis.url, tmp_path) as live:

        async def retried() -> bool:
            return await connect_failures(live) >= 1

        await eventually(retried, timeout=30, what="a failed connect")
        live.process.terminate()
        try:
            code = await asyncio.to_thread(live.process.wait, 10)
        except subprocess.TimeoutExpired:
            raise AssertionError("the service did not stop on SIGTERM while waiting for Redis") from None
        assert code == 0
        log = live.log.read_bytes()
    assert b"Traceback" not in log and b"cannot connect to Redis" in log
