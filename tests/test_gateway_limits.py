"""What one client may cost: connections, rate, calls in flight, frame size, idle sockets.
Each limit answers with an error frame or a documented close code, and counts."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pubsub_rpc import Responder, Settings

from .conftest import eventually
from .ws_frames import connect, counters, mint, running_gateway

TOKEN = mint()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_connection_caps_close_with_1013(settings: Settings, responder: Responder, http: aiohttp.ClientSession) -> None:
    async with running_gateway(settings, gateway_max_connections=3, gateway_max_connections_per_ip=2) as server:
        url = server.make_url("/ws")
        async with connect(http, url, TOKEN) as one, connect(http, url, TOKEN) as two:
            await one.next("ready")
            await two.next("ready")
            async with connect(http, url, TOKEN) as third:
                assert await third.closed() == 1013  # a third from the same address
            assert (await counters(http, server))["refused_per_ip"] == 1
        async with connect(http, url, TOKEN) as again:  # slots come back when sockets close
            assert (await again.next("ready"))["type"] == "ready"
    async with running_gateway(settings, gateway_max_connections=1) as server:
        async with connect(http, server.make_url("/ws"), TOKEN) as one:
            await one.next("ready")
            async with connect(http, server.make_url("/ws"), TOKEN) as two:
                assert await two.closed() == 1013
            assert (await counters(http, server))["refused_total"] == 1


async def test_rate_limit_answers_rate_limited_then_closes_4008(
    settings: Settings, responder: Responder, http: aiohttp.ClientSession
) -> None:
    async with running_gateway(settings, gateway_rate_limit=0.001, gateway_rate_burst=5) as server:
        async with connect(http, server.make_url("/ws")) as ws:
            await ws.auth(TOKEN)  # the auth frame takes one token of the five
            await ws.next("ready")
            for n in range(10):
                await ws.send({"type": "call", "id": n, "action": "echo", "data": n})
            answers = [await ws.next_frame() for _ in range(10)]
            results = [a for a in answers if a["type"] == "result"]
            limited = [a for a in answers if a["type"] == "error" and a["code"] == "rate_limited"]
            assert len(results) == 4 and len(limited) == 6
            assert {a["id"] for a in limited} == set(range(4, 10))  # each refusal names its call
            for n in range(300):  # a client that ignores rate_limited is cut off
                await ws.send({"type": "call", "id": n, "action": "echo"})
            assert await ws.closed() == 4008
        numbers = await counters(http, server)
        assert numbers["abuse_closed"] == 1 and numbers["rate_limited"] >= 6


async def test_calls_in_flight_are_capped(settings: Settings, responder: Responder, http: aiohttp.ClientSession) -> None:
    async with running_gateway(settings, gateway_max_calls_per_client=2) as server:
        async with connect(http, server.make_url("/ws"), TOKEN) as ws:
            for n in range(3):
                await ws.send({"type": "call", "id": n, "action": "slow", "data": {"ms": 300}})
            assert (await ws.next("error"))["code"] == "overloaded"
            assert {(await ws.next("result"))["id"] for _ in range(2)} == {0, 1}
        assert (await counters(http, server))["overloaded"] == 1


async def test_oversized_frames_close_with_1009(settings: Settings, responder: Responder, http: aiohttp.ClientSession) -> None:
    async with running_gateway(settings, gateway_max_frame_bytes=1024) as server:
        async with connect(http, server.make_url("/ws"), TOKEN) as ws:
            await ws.next("ready")
            await ws.send({"type": "call", "id": 1, "action": "echo", "data": "x" * 2000})
            assert await ws.closed() == 1009
        await eventually(lambda: counters_at_least(http, server, "protocol_closed", 1), what="the close to be counted")


async def counters_at_least(http: aiohttp.ClientSession, server: TestServer, name: str, value: int) -> bool:
    return (await counters(http, server))[name] >= value


def handshake_and_go_silent(host: str, port: int) -> socket.socket:
    """Upgrades, then neither reads nor answers pings."""
    sock = socket.create_connection((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pubsub-rpc.v1, "
        f"bearer.{TOKEN}\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response.split(b"\r\n")[0] and TOKEN.encode() not in response
    return sock


async def test_a_silent_client_is_dropped_at_the_idle_timeout(
    settings: Settings, responder: Responder, http: aiohttp.ClientSession
) -> None:
    async with running_gateway(settings, gateway_idle_timeout=0.6) as server:
        silent = await asyncio.to_thread(handshake_and_go_silent, server.host, server.port)
        try:
            async with connect(http, server.make_url("/ws"), TOKEN) as alive:
                await alive.next("ready")
                # aiohttp's client answers pings while it reads, as a browser always does.
                reading = asyncio.create_task(alive.next("result", timeout=30))
                await eventually(lambda: counters_at_least(http, server, "idle_closed", 1), what="the silent client dropped")
                await alive.send({"type": "call", "id": 1, "action": "echo", "data": "still open"})
                assert (await reading)["result"] == "still open"
        finally:
            silent.close()
