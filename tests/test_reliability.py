"""Redis going away, overload and shutdown: failures are named and nothing hangs."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, ConnectionLost, Overloaded, Responder, Settings, Unavailable

from scripts.redis_process import RedisProcess

from .conftest import eventually


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server this test may kill and restart (on the same port)."""
    with RedisProcess() as server:
        yield server


@pytest.fixture
def own_settings(own_redis: RedisProcess, settings: Settings) -> Settings:
    return dataclasses.replace(settings, redis_url=own_redis.url)


async def test_redis_restart_under_running_caller_and_responder(own_redis: RedisProcess, own_settings: Settings) -> None:
    responder = Responder(own_settings)
    register(responder)
    async with responder, Caller(own_settings) as caller:
        assert await caller.call("echo", 1) == 1
        in_flight = asyncio.create_task(caller.call("slow", {"ms": 3000}, timeout=10))
        await eventually(lambda: caller.pending_count == 1, what="the slow call to be pending")

        await own_redis.stop_async()
        # ConnectionLost (not CallTimeout) is the proof that it failed when the link dropped,
        # not after its 10 s timeout; how fast is the benchmark's and e2e's business.
        with pytest.raises(ConnectionLost):
            await in_flight
        await eventually(lambda: not caller.ready, what="the caller to notice")
        with pytest.raises(ConnectionLost):
            await caller.call("echo", 2)  # while Redis is down: fail fast, no hang

        await own_redis.start_async()
        await eventually(lambda: caller.ready and responder.ready, timeout=15, what="both to reconnect and resubscribe")
        assert await caller.call("echo", 3) == 3


def each_link_failed(caller: Caller, times: int) -> bool:
    """Both of a Caller's links failed to connect ``times`` times (and said so, once:
    connect failures are logged at most once per link per 30 s)."""
    return all(link.connect_failures >= times for link in (caller._subscriber, caller._publisher))


async def test_caller_started_before_redis_retries_then_connects(
    own_redis: RedisProcess, own_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await own_redis.stop_async()
    caller = Caller(own_settings, name="early-caller")
    starting = asyncio.create_task(caller.start(connect_timeout=30))
    try:
        # Redis comes back only once each link has demonstrably failed and retried, so what
        # passes below is the retry path, not a first attempt that happened to succeed.
        await eventually(lambda: each_link_failed(caller, 2), what="two failed connects per link")
        for kind in ("sub", "pub"):
            said = [r for r in caplog.records if r.getMessage().startswith(f"early-caller-{kind}: cannot connect to Redis")]
            assert said and said[0].name == "pubsub_rpc.link"
        assert not starting.done() and not caller.ready
        await own_redis.start_async()
        await asyncio.wait_for(starting, 30)
        assert caller.ready
    finally:
        starting.cancel()
        await caller.close()


async def test_overloaded_when_cap_and_backlog_are_full(settings: Settings) -> None:
    tight = dataclasses.replace(settings, max_concurrency=1, max_backlog=1)
    responder = Responder(tight)
    register(responder)
    async with responder, Caller(tight) as caller:
        first = asyncio.create_task(caller.call("slow", {"ms": 500}))
        second = asyncio.create_task(caller.call("slow", {"ms": 10}))
        await eventually(lambda: responder.in_flight == 2, what="one running, one queued")
        with pytest.raises(Overloaded):
            await caller.call("slow", {"ms": 10})
        assert await first == {"sleptMs": 500}
        assert await second == {"sleptMs": 10}
        assert responder.stats.overloaded == 1


async def test_stop_finishes_in_flight_requests(settings: Settings) -> None:
    responder = Responder(settings)
    register(responder)
    async with Caller(settings) as caller:
        await responder.start()
        calls = [asyncio.create_task(caller.call("slow", {"ms": 300})) for _ in range(5)]
        await eventually(lambda: responder.in_flight == 5, what="five requests in flight")
        await responder.stop()
        assert await asyncio.gather(*calls) == [{"sleptMs": 300}] * 5


async def test_stop_answers_unavailable_after_the_drain_deadline(settings: Settings) -> None:
    short = dataclasses.replace(settings, drain_timeout=0.2)
    responder = Responder(short)
    register(responder)
    async with Caller(short) as caller:
        await responder.start()
        call = asyncio.create_task(caller.call("slow", {"ms": 5000}))
        await eventually(lambda: responder.in_flight == 1, what="the request in flight")
        await responder.stop()
        with pytest.raises(Unavailable):
            await call
