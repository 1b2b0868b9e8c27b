"""The responder registry against a real redis-server and real processes: entries, their
expiry by the reader's clock, pruning, the stale rule after a real freeze (SIGSTOP of a
responder process), and the caller's fail-fast (docs/scale-out.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, CallTimeout, NoResponder, Responder, Settings, UnknownAction

from scripts.redis_process import RedisProcess

from .conftest import eventually
from .live_service import Samples, live_responder, scrape
from .test_competing import Replies

INTERVAL = 0.5  # announce interval of these tests: an entry lives 1.5 s


async def scrape_async(url: str) -> Samples | None:
    try:
        return (await asyncio.to_thread(scrape, url, 2.0))[0]
    except OSError:
        return None


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_responder_announces_its_entry_and_leaves_on_stop(settings: Settings, raw_redis: aioredis.Redis) -> None:
    responder = Responder(settings, name="announcer")
    register(responder)
    async with responder:
        raw = await raw_redis.hget(settings.registry_name, responder.instance)
        assert raw is not None
        entry = orjson.loads(raw)
        assert entry["instance"] == responder.instance
        assert entry["pattern"] == settings.responder_pattern
        assert entry["actions"] == sorted(responder.actions)
        assert entry["claims"] is True and entry["interval"] == settings.announce_interval
        assert abs(entry["ts"] - time.time()) < 30
    assert await raw_redis.hget(settings.registry_name, responder.instance) is None  # HDEL on stop


async def test_entries_expire_by_the_readers_clock_and_long_dead_fields_are_pruned(
    settings: Settings, raw_redis: aioredis.Redis, redis_server: RedisProcess, tmp_path: Path
) -> None:
    quick = dataclasses.replace(settings, announce_interval=INTERVAL, fail_fast=True)
    # A field a responder left 2 minutes ago (it was SIGKILLed, say): pruned by the next start.
    ancient = {"instance": "ancient", "service": "x", "pattern": "*", "actions": ["x"], "interval": 1, "ts": time.time() - 120}
    await raw_redis.hset(quick.registry_name, "ancient", orjson.dumps(ancient))
    # Junk on the channel is counted and ignored.
    async with Caller(quick, name="reader") as caller:
        directory = caller.directory
        assert directory is not None
        await eventually(lambda: directory.loaded, 5, "the registry to load")
        await raw_redis.publish(quick.registry_name, b"{not json")
        await raw_redis.publish(quick.registry_name, orjson.dumps({"event": "beat", "instance": 7}))
        await eventually(lambda: directory.malformed == 2, 5, "the junk to be counted")
        responder = Responder(quick, name="crashing")
        register(responder)
        await responder.start()
        await eventually(lambda: len(directory.live()) == 1, 5, "the entry to arrive")
        assert await raw_redis.hget(quick.registry_name, "ancient") is None  # pruned at the responder's load
        assert directory.verdict(quick.request_channel, "echo") == "ok"
        # A crash: the process's links go without a word (no leave); the entry stays in the hash.
        announcing = responder._replicas._announcing
        assert announcing is not None
        announcing.cancel()
        await responder._subscriber.close()
        await responder._publisher.close()
        gone = time.monotonic()
        await eventually(lambda: not directory.live(), 10, "the silent entry to expire")
        waited = time.monotonic() - gone
        print(f"\nsilent entry expired after {waited:.2f}s (lifetime {3 * INTERVAL:g}s)")
        assert waited >= 3 * INTERVAL - 2 * INTERVAL  # not before its last beat's lifetime (minus a beat)
        assert await raw_redis.hget(quick.registry_name, responder.instance) is not None
        with pytest.raises(NoResponder):
            await caller.call("echo", 1)
        await responder.probe.close()


async def test_fail_fast_on_and_off(settings: Settings, raw_redis: aioredis.Redis) -> None:
    """A listener that announces nothing (a seed-era responder) makes PUBLISH count 1:
    without fail-fast the call waits for its timeout; with it, the call fails at once."""
    silent = raw_redis.pubsub()
    await silent.subscribe(settings.request_channel)
    try:
        async with Caller(settings, name="patient") as caller:
            with pytest.raises(CallTimeout):
                await caller.call("echo", 1, timeout=0.3)
        fast = dataclasses.replace(settings, fail_fast=True)
        async with Caller(fast, name="fast") as caller:
            directory = caller.directory
            assert directory is not None
            await eventually(lambda: directory.loaded, 5, "the registry to load")
            with pytest.raises(NoResponder, match="no live responder"):
                await caller.call("echo", 1, timeout=0.3)
            responder = Responder(fast, name="owner")
            register(responder)
            async with responder:
                await eventually(lambda: directory.verdict(fast.request_channel, "echo") == "ok", 5, "the join")
                assert await caller.call("echo", 2) == 2
                received = responder.stats.received
                with pytest.raises(UnknownAction, match="no live responder serves"):
                    await caller.call("no_such_action", None)
                assert responder.stats.received == received  # failed before publishing
            await eventually(lambda: directory.verdict(fast.request_channel, "echo") == "no_responder", 5, "the leave")
            with pytest.raises(NoResponder):
                await caller.call("echo", 3)
            assert caller.failed_fast == 3
    finally:
        await silent.aclose()


@pytest.mark.timeout(120)
async def test_a_frozen_responder_runs_nothing_it_read_while_frozen(
    redis_server: RedisProcess, raw_redis: aioredis.Redis, tmp_path: Path
) -> None:
    """The stale rule with a real freeze: a responder process SIGSTOPped past its entry's
    lifetime is given up by the other replica, which then runs requests unclaimed; those
    requests wait in the frozen one's socket. Thawed, it must run none of them."""
    env = {"RPC_ANNOUNCE_INTERVAL": str(INTERVAL), "RPC_PROBE_INTERVAL": "60"}  # the stale rule, not the probe
    with live_responder(redis_server.url, tmp_path, **env) as live:
        settings = dataclasses.replace(live.settings, announce_interval=INTERVAL)
        other = Responder(settings, name="other")
        register(other)
        async with other, Caller(settings, name="c") as caller, Replies(raw_redis, caller.reply_channel) as replies:
            await eventually(lambda: len(other.directory.live()) == 1, 30, "the process to join")
            frozen_instance = other.directory.live()[0].instance
            for i in range(20):
                assert await caller.call("echo", i) == i  # claimed: each runs once, on one of them
            before = await scrape_async(live.metrics_url)
            assert before is not None
            os.kill(live.process.pid, signal.SIGSTOP)
            try:
                await eventually(lambda: not other.claiming, 10, "the other replica to give the frozen one up")
                for i in range(50):
                    assert await caller.call("echo", i) == i  # run unclaimed by the other; queued for the frozen one
            finally:
                os.kill(live.process.pid, signal.SIGCONT)
            await eventually(
                lambda: any(e.instance == frozen_instance for e in other.directory.live()), 15, "the thawed one to rejoin"
            )
            await replies.settled(raw_redis)
            after = await scrape_async(live.metrics_url)
            assert after is not None
    replied = value(after, "rpc_server_messages_total", outcome="replied") - value(
        before, "rpc_server_messages_total", outcome="replied"
    )
    stale = value(after, "rpc_server_messages_dropped_total", reason="stale")
    rejoins = value(after, "rpc_server_stale_rejoins_total")
    print(f"\nthawed responder: ran {replied:g} of the 50, dropped {stale:g} as stale, {rejoins:g} stale rejoin(s)")
    assert replied == 0
    assert rejoins >= 1
    assert other.stats.replied >= 50
    assert all(n == 1 for request_id, n in replies.by_id.items() if request_id != "marker")
    assert sum(n for request_id, n in replies.by_id.items() if request_id != "marker") == 70
