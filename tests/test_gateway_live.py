"""The live view's feeds (`watch`, `stats`, `presence`) from a real gateway, with a real
responder and caller behind it on a real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, Responder, Settings
from pubsub_rpc.presence import beacon_for
from ws_gateway.app import GATEWAY

from .conftest import eventually
from .ws_frames import FrameClient, connect, counters, mint, running_gateway

TOKEN = mint()
BEAT = 0.2  # seconds between heartbeats here: a service goes stale after 0.3 s, gone after 0.6 s


@pytest.fixture
def live_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, presence_interval=BEAT, service="ws_gateway")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def next_matching(
    ws: FrameClient, frame_type: str, check: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The first frame of ``frame_type`` for which ``check`` holds (bounded)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.next(frame_type, timeout)
            if check(frame):
                return frame


def by_kind(frame: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [service for service in frame["services"] if service["kind"] == kind]


async def test_stats_count_the_calls_and_report_p50_and_p99(
    live_settings: Settings, responder: Responder, http: aiohttp.ClientSession
) -> None:
    async with running_gateway(live_settings) as gateway, connect(http, gateway.make_url("/ws"), TOKEN) as ws:
        await ws.send({"type": "watch", "stats": True})
        first = await ws.next("stats")  # at once, before the next tick
        assert first["window"] == 60 and len(first["calls"]) == 60 == len(first["p50"]) == len(first["p99"])
        assert first["minute"]["calls"] == 0 and first["minute"]["p50"] is None
        for n in range(20):
            assert (await ws.call(n, "echo", n))["type"] == "result"
        for n in range(20, 22):
            assert (await ws.call(n, "fail"))["code"] == "handler_error"
        slow = await ws.call(22, "slow", {"ms": 300})
        assert slow["type"] == "result" and slow["ms"] >= 300
        # Whole seconds only: the frame that has them all comes within two ticks.
        stats = await next_matching(ws, "stats", lambda f: f["minute"]["calls"] == 23, timeout=5)
        minute = stats["minute"]
        assert minute["errors"] == 2
        assert sum(stats["calls"]) == 23 and sum(stats["errors"]) == 2
        assert 0 < minute["p50"] < 100  # echo on loopback
        assert 300 * 0.9 <= minute["p99"] <= slow["ms"] * 1.1  # the slow call, within a bucket
        busy = [i for i, count in enumerate(stats["calls"]) if count]
        assert busy and all(stats["p99"][i] is not None for i in busy)
        assert all(stats["p50"][i] is None for i, count in enumerate(stats["calls"]) if not count)
        # Frames keep coming once a second while the socket watches, and stop when it asks.
        tick = await ws.next("stats", timeout=3)
        assert tick["t"] > stats["t"]
        await ws.send({"type": "watch", "stats": False})
        await ws.send({"type": "call", "id": "after", "action": "echo", "data": 1})
        assert (await ws.next("result"))["id"] == "after"
        with pytest.raises(TimeoutError):  # bounded: two ticks without a stats frame
            await ws.next("stats", timeout=2.5)


async def test_one_frame_for_every_watcher_and_no_task_without_them(
    live_settings: Settings, responder: Responder, http: aiohttp.ClientSession
) -> None:
    async with running_gateway(live_settings) as gateway:
        feed = gateway.app[GATEWAY].live
        assert not feed.running
        async with connect(http, gateway.make_url("/ws"), TOKEN) as one, connect(http, gateway.make_url("/ws"), TOKEN) as two:
            for ws in (one, two):
                await ws.send({"type": "watch", "stats": True})
                await ws.next("stats")
            a, b = await one.next("stats", timeout=3), await two.next("stats", timeout=3)
            while a["t"] != b["t"]:  # line them up on the same tick
                if a["t"] < b["t"]:
                    a = await one.next("stats", timeout=3)
                else:
                    b = await two.next("stats", timeout=3)
            assert a == b
            assert feed.running
        await eventually(lambda: not feed.running, 5, "the feed to stop when nobody watches")


async def test_watching_needs_a_token_and_the_live_view_on(
    live_settings: Settings, responder: Responder, http: aiohttp.ClientSession
) -> None:
    async with running_gateway(live_settings) as gateway:
        async with connect(http, gateway.make_url("/ws")) as ws:
            await ws.send({"type": "watch", "stats": True, "presence": True})
            error = await ws.next("error")
            assert error["code"] == "unauthenticated" and error["id"] is None
            await ws.send({"type": "watch", "stats": "yes"})
            assert (await ws.next("error"))["code"] == "bad_frame"
    async with running_gateway(live_settings, gateway_live_view=False) as gateway:
        async with connect(http, gateway.make_url("/ws"), TOKEN) as ws:
            await ws.send({"type": "watch", "stats": True})
            error = await ws.next("error")
            assert error["code"] == "forbidden" and "GATEWAY_LIVE_VIEW" in error["message"]
            assert (await counters(http, gateway))["forbidden"] == 1


async def test_services_appear_with_their_actions_and_disappear(live_settings: Settings, http: aiohttp.ClientSession) -> None:
    responder_settings = dataclasses.replace(live_settings, service="laravel_like_responder")
    # The caller beats every 2 s: stale from 3 s, gone at 6 s, so 1 s ticks see both, with room.
    caller_settings = dataclasses.replace(live_settings, service="node_like_caller", presence_interval=2.0)
    async with running_gateway(live_settings) as gateway, connect(http, gateway.make_url("/ws"), TOKEN) as ws:
        await ws.send({"type": "watch", "presence": True})
        await ws.next("presence")
        # The gateway announces itself on its own connection and hears itself.
        frame = await next_matching(ws, "presence", lambda f: bool(by_kind(f, "gateway")))
        assert by_kind(frame, "gateway")[0]["service"] == "ws_gateway"
        responder = Responder(responder_settings, name="live-responder")
        register(responder)
        async with responder, Caller(caller_settings, name="live-caller") as caller, asyncio.TaskGroup() as beacons:
            responder_beacon = beacons.create_task(beacon_for(responder, "responder").run())
            caller_beacon = beacons.create_task(beacon_for(caller, "caller").run())

            def everyone(f: dict[str, Any]) -> bool:
                return bool(by_kind(f, "responder") and by_kind(f, "caller") and by_kind(f, "gateway"))

            frame = await next_matching(ws, "presence", everyone)
            [shown] = by_kind(frame, "responder")
            assert shown["service"] == "laravel_like_responder" and shown["ready"] is True and shown["state"] == "ready"
            assert {"echo", "sum", "slow", "fail", "actions", "info"} <= set(shown["actions"])
            assert by_kind(frame, "caller")[0]["actions"] == []
            # A service that stops says so: gone at the next tick, not three beats later.
            responder_beacon.cancel()
            frame = await next_matching(ws, "presence", lambda f: not by_kind(f, "responder"), timeout=3)
            assert by_kind(frame, "caller")
            # One that goes silent (its connection gone, so no goodbye) turns stale, then disappears.
            await caller.close()
            frame = await next_matching(
                ws, "presence", lambda f: [s["state"] for s in by_kind(f, "caller")] == ["stale"], timeout=10
            )
            assert by_kind(frame, "caller")[0]["ready"] is False
            await next_matching(ws, "presence", lambda f: not by_kind(f, "caller"), timeout=10)
            caller_beacon.cancel()


async def test_forged_heartbeats_are_counted_and_dropped(
    live_settings: Settings, http: aiohttp.ClientSession, raw_redis: Any
) -> None:
    async with running_gateway(live_settings) as gateway, connect(http, gateway.make_url("/ws"), TOKEN) as ws:
        await ws.send({"type": "watch", "presence": True})
        await ws.next("presence")
        channel = live_settings.presence_channel
        bad = [
            b"not json",
            b"[]",
            b'{"kind": "admin", "service": "x", "instance": "1"}',
            b'{"kind": "caller", "service": "", "instance": "1"}',
        ]
        bad.append(b'{"kind": "caller", "service": "x", "instance": "1", "actions": "all"}')
        bad.append(b'{"kind": "caller", "service": "x", "instance": "1", "interval": 0}')
        bad.append(b"{" + b'"a": 1,' * 5000 + b'"b": 2}')
        for raw in bad:
            await raw_redis.publish(channel, raw)
        await raw_redis.publish(channel, b'{"kind": "caller", "service": "good", "instance": "1", "ready": true, "interval": 1}')
        frame = await next_matching(ws, "presence", lambda f: any(s["service"] == "good" for s in f["services"]))
        assert {s["service"] for s in frame["services"]} <= {"good", "python", "ws_gateway"}
        assert (await counters(http, gateway))["presence_malformed"] == len(bad)
        await ws.send({"type": "call", "id": 1, "action": "echo", "data": "still fine"})
        error = await ws.next("error")  # no responder in this test: the socket still answers
        assert error["id"] == 1 and error["code"] == "no_responder"
