"""Presence beacons (pubsub_rpc.presence) on a real redis-server: what a heartbeat says,
the goodbye on the way out, and that Redis trouble never ends the beacon."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import redis.asyncio as aioredis
from pubsub_rpc import Caller, Responder, Settings
from pubsub_rpc.presence import beacon_for

from .conftest import eventually


async def next_beat(pubsub: Any) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            if message is not None:
                return dict(orjson.loads(message["data"]))


async def test_a_responder_announces_its_actions_and_says_goodbye(
    settings: Settings, responder: Responder, raw_redis: aioredis.Redis
) -> None:
    beacon = beacon_for(responder, "responder")
    beacon.interval = 0.1
    async with raw_redis.pubsub() as pubsub:
        await pubsub.subscribe(settings.presence_channel)
        task = asyncio.create_task(beacon.run())
        first, second = await next_beat(pubsub), await next_beat(pubsub)
        assert first["kind"] == "responder" and first["service"] == settings.service and first["ready"] is True
        assert first["instance"] == second["instance"] == beacon.instance and len(beacon.instance) == 8
        assert {"echo", "sum", "info"} <= set(first["actions"]) and first["actions"] == sorted(first["actions"])
        assert second["ts"] >= first["ts"] and "leaving" not in first
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        while (beat := await next_beat(pubsub)).get("leaving") is not True:
            pass
        assert beat["ready"] is False and beat["instance"] == beacon.instance


async def test_the_beacon_waits_out_redis_being_away_and_zero_turns_it_off(settings: Settings, raw_redis: aioredis.Redis) -> None:
    caller = Caller(settings, name="presence-caller")
    beacon = beacon_for(caller, "caller")
    beacon.interval = 0.05
    task = asyncio.create_task(beacon.run())  # not connected yet: it skips beats, never raises
    await eventually(lambda: beacon.skipped >= 3, 5, "beats skipped while not connected")
    assert not task.done() and beacon.sent == 0
    async with caller:
        await eventually(lambda: beacon.sent >= 2, 5, "beats once connected")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    off = beacon_for(Caller(dataclasses.replace(settings, presence_interval=0)), "caller")
    await asyncio.wait_for(off.run(), 1)  # returns at once
