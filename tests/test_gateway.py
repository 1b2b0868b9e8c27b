"""ws_gateway over real WebSockets, with the real responder behind it."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from laravel_like_responder.actions import register
from pubsub_rpc import Responder, Settings
from ws_gateway.app import GATEWAY, create_app

from bench.wsclient import client_frame
from scripts.redis_process import RedisProcess

from .conftest import eventually
from .ws_frames import connect, counters, gateway_settings, mint, running_gateway

TOKEN = mint()


@pytest.fixture
async def gateway(settings: Settings, responder: Responder) -> AsyncIterator[TestServer]:
    async with running_gateway(settings) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_round_trip_over_websocket(gateway: TestServer, http: aiohttp.ClientSession) -> None:
    async with connect(http, gateway.make_url("/ws"), TOKEN) as ws:
        hello = await ws.next("hello")
        assert hello["maxCalls"] > 0
        await ws.send({"type": "call", "id": "c1", "action": "sum", "data": [1, 2, 3]})
        result = await ws.next("result")
        assert result["id"] == "c1" and result["result"] == 6 and result["ms"] >= 0
        await ws.send({"type": "call", "id": 2, "action": "fail"})
        error = await ws.next("error")
        assert error["id"] == 2 and error["code"] == "handler_error"
        await ws.send({"type": "call", "id": 3, "action": "slow", "data": {"ms": 2000}, "timeout": 0.1})
        error = await ws.next("error")
        assert error["id"] == 3 and error["code"] == "timeout"


async def test_bad_frames_get_error_frames_and_the_connection_stays(gateway: TestServer, http: aiohttp.ClientSession) -> None:
    async with connect(http, gateway.make_url("/ws"), TOKEN) as ws:
        for bad in [
            "not json",
            "[1]",
            '{"type": "subscribe"}',
            '{"type": "call", "action": "echo"}',
            '{"type": "call", "id": 1}',
            '{"type": "call", "id": ' + "[" * 300 + "]" * 300 + ', "action": "echo"}',
            '{"type": "call", "id": 5, "action": "echo", "data": ' + "[" * 300 + "]" * 300 + "}",
            '{"type": "call", "id": 6, "action": "echo", "data": ' + "[" * 30000 + "]" * 30000 + "}",
        ]:
            await ws.ws.send_str(bad)
            error = await ws.next("error")
            assert error["code"] == "bad_frame" and error["message"]
        await ws.ws.send_bytes(b"\x00\x01")
        assert (await ws.next("error"))["code"] == "bad_frame"
        await ws.send({"type": "call", "id": "ok", "action": "echo", "data": "alive"})
        assert (await ws.next("result"))["result"] == "alive"


async def test_pushes_reach_every_client(gateway: TestServer, http: aiohttp.ClientSession, responder: Responder) -> None:
    async with connect(http, gateway.make_url("/ws"), TOKEN) as one, connect(http, gateway.make_url("/ws"), TOKEN) as two:
        await one.next("ready")
        await two.next("ready")
        await responder.push("configs", {"locale": "en"})
        for ws in (one, two):
            event = await ws.next("event")
            assert event["action"] == "configs" and event["data"] == {"locale": "en"}


async def test_other_sites_cannot_open_the_socket(gateway: TestServer, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(gateway.make_url("/ws"), headers={"Origin": "http://evil.example"})
    assert info.value.status == 403
    async with connect(http, gateway.make_url("/ws"), TOKEN, headers={"Origin": f"http://{gateway.host}:{gateway.port}"}) as ws:
        assert (await ws.next("hello"))["type"] == "hello"


async def test_health_endpoints(gateway: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(gateway.make_url("/healthz")) as response:
        assert response.status == 200
    async with http.get(gateway.make_url("/readyz")) as response:
        assert response.status == 200 and (await response.json())["redis"] == "subscribed"
    async with http.get(gateway.make_url("/")) as response:
        assert response.status == 200 and "Redis RPC round trip" in await response.text()


async def test_gateway_started_before_redis_gets_ready_with_it(
    settings: Settings, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    redis = RedisProcess()  # a free port with nothing listening yet
    late = gateway_settings(settings, redis_url=redis.url)
    server = TestServer(create_app(late), host="127.0.0.1")
    await server.start_server()
    try:
        async with http.get(server.make_url("/readyz")) as response:
            assert response.status == 503

        caller = server.app[GATEWAY].caller

        def each_link_failed_twice() -> bool:
            return all(link.connect_failures >= 2 for link in (caller._subscriber, caller._publisher))

        # Redis starts only after each link has failed and retried: the retry path is tested.
        await eventually(each_link_failed_twice, what="each gateway link to fail to connect twice")
        await redis.start_async()
        try:

            async def ready() -> bool:
                async with http.get(server.make_url("/readyz")) as response:
                    return response.status == 200

            await eventually(ready, timeout=15, what="the gateway to connect once Redis is up")
            responder = Responder(late)
            register(responder)
            async with responder, connect(http, server.make_url("/ws"), TOKEN) as ws:
                assert (await ws.call(1, "sum", [2, 3]))["result"] == 5
        finally:
            await asyncio.to_thread(redis.close)
    finally:
        await server.close()


def open_stalled_websocket(host: str, port: int, token: str) -> socket.socket:
    """A client that completes the handshake, authenticates and then never reads: the slowest possible."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response.split(b"\r\n")[0]
    sock.sendall(client_frame(orjson.dumps({"type": "auth", "token": token})))
    return sock


async def authenticated_twice(http: aiohttp.ClientSession, gateway: TestServer) -> bool:
    return (await counters(http, gateway))["authenticated"] >= 2


async def test_a_slow_client_does_not_delay_another(
    gateway: TestServer, http: aiohttp.ClientSession, responder: Responder
) -> None:
    assert gateway.port is not None
    stalled = await asyncio.to_thread(open_stalled_websocket, gateway.host, gateway.port, TOKEN)
    try:
        async with connect(http, gateway.make_url("/ws"), TOKEN) as fast:
            await fast.next("ready")
            await eventually(
                lambda: authenticated_twice(http, gateway),
                what="both clients authenticated",
            )
            big = {"blob": "x" * 200_000}
            for n in range(40):  # far more than the stalled socket's buffers and send queue hold
                await responder.push("bulk", {"n": n, **big})
                event = await fast.next("event")
                assert event["data"]["n"] == n
            # Every event above arrived while the stalled socket held its buffers full, and a
            # call still gets its answer: no head-of-line blocking (speed is the bench's claim).
            await fast.send({"type": "call", "id": 1, "action": "echo", "data": "quick"})
            assert (await fast.next("result"))["result"] == "quick"

            async def stalled_client_dropped() -> bool:
                async with http.get(gateway.make_url("/readyz")) as response:
                    return (await response.json())["clients"] == 1

            await eventually(stalled_client_dropped, what="the stalled client to be disconnected")
    finally:
        stalled.close()


async def test_a_frame_larger_than_the_send_buffer_reaches_a_fast_client(
    gateway: TestServer, http: aiohttp.ClientSession, responder: Responder
) -> None:
    async with connect(http, gateway.make_url("/ws"), TOKEN, max_msg_size=0) as ws:
        await ws.next("ready")
        big = "x" * 900_000  # over three times GATEWAY_SEND_BUFFER (256 KiB in these tests)
        for n in range(5):
            await responder.push("bulk", [n, big])  # a list: not merged, so under RPC_MAX_MESSAGE_BYTES
            event = await ws.next("event")
            assert event["data"] == [n, big]
        assert (await ws.call(1, "echo", "still here"))["result"] == "still here"
        assert (await counters(http, gateway))["slow_dropped"] == 0


async def test_nothing_is_sent_after_the_close_frame(
    gateway: TestServer, http: aiohttp.ClientSession, responder: Responder
) -> None:
    """The close frame is the last frame: pushes and replies due after it are not written."""
    async with connect(http, gateway.make_url("/ws"), TOKEN) as ws:
        await ws.next("ready")
        for n in range(20):
            await ws.send({"type": "call", "id": n, "action": "slow", "data": {"ms": 50}})
        await ws.send({"type": "auth", "token": mint(sub="someone-else")})  # refused: closes 4001
        for n in range(20):
            await responder.push("late", {"n": n})
        after_close: list[aiohttp.WSMessage] = []
        async with asyncio.timeout(10):
            while True:
                message = await ws.ws.receive()
                if message.type is aiohttp.WSMsgType.CLOSE:
                    break
            assert message.data == 4001
            # aiohttp's client answers the close and reads until EOF: anything here came after it.
            while (message := await ws.ws.receive()).type not in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                after_close.append(message)
        assert after_close == []
