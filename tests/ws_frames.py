"""A WebSocket client for tests: authenticates, waits for a frame of a given type, skips pushes.

Tokens: ``mint(secret, sub, ...)`` signs an HS256 token as a real app's backend would;
``demo_token(http, base_url)`` asks a demo-mode gateway for one (what the page does).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import jwt

# For tests only: 64 characters, above the 32-byte minimum the gateway enforces.
TEST_SECRET = "test-secret-for-the-gateway-tests-only-0123456789abcdef0123456789"
SAMPLE_ACTIONS = "configs,echo,sum,slow,fail,actions"


def mint(
    secret: str = TEST_SECRET,
    sub: str = "tester",
    actions: Iterable[str] = ("*",),
    ttl: float = 300.0,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A signed token (``secret`` is the HS secret or a private key for RS/ES)."""
    body: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl), "actions": list(actions), **claims}
    return jwt.encode(body, secret, algorithm=algorithm)


async def demo_token(http: aiohttp.ClientSession, base_url: Any) -> str:
    async with http.get(f"{str(base_url).rstrip('/')}/demo/token") as response:
        response.raise_for_status()
        return str((await response.json())["token"])


class FrameClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._backlog: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_json(frame)

    async def auth(self, token: str) -> None:
        await self.send({"type": "auth", "token": token})

    async def next_frame(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while not self._backlog:
                self._backlog.append(json.loads(await self.ws.receive_str()))
        return self._backlog.pop(0)

    async def next(self, frame_type: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next frame of ``frame_type`` (and with the given fields), skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next_frame(timeout)
                if frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items()):
                    return frame

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; the code in its close frame (None: no close frame)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.ws.receive()
                if message.type is aiohttp.WSMsgType.CLOSE:
                    return int(message.data)
                if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                    return None

    async def call(self, call_id: int | str, action: str, data: Any = None, timeout: float | None = None) -> dict[str, Any]:
        await self.send({"type": "call", "id": call_id, "action": action, "data": data, "timeout": timeout})
        async with asyncio.timeout(15):
            while True:
                frame = await self.next_frame(15)
                if frame.get("id") == call_id and frame["type"] in ("result", "error"):
                    return frame


DEMO = "demo"  # connect(..., token=DEMO): ask the gateway's /demo/token (demo mode only)


@asynccontextmanager
async def connect(http: aiohttp.ClientSession, url: Any, token: str | None = None, **kwargs: Any) -> AsyncIterator[FrameClient]:
    """Open ``url``; with ``token``, send the auth frame at once (frames are handled in
    order, so calls may follow without waiting for `ready`; hello and ready stay queued).
    ``token=DEMO`` fetches a demo token from the same gateway first."""
    if token == DEMO:
        base = str(url).replace("ws://", "http://", 1).replace("wss://", "https://", 1).rsplit("/ws", 1)[0]
        token = await demo_token(http, base)
    async with http.ws_connect(url, **kwargs) as ws:
        client = FrameClient(ws)
        if token is not None:
            await client.auth(token)
        yield client


def gateway_settings(settings: Any, **overrides: Any) -> Any:
    """The test settings plus what a secured gateway needs (a secret, the sample allow-list)."""
    import dataclasses

    values: dict[str, Any] = {
        "gateway_jwt_secret": TEST_SECRET,
        "gateway_allowed_actions": SAMPLE_ACTIONS,
        "gateway_send_buffer": 256 * 1024,
    }
    values.update(overrides)
    return dataclasses.replace(settings, **values)


@asynccontextmanager
async def running_gateway(settings: Any, **overrides: Any) -> AsyncIterator[Any]:
    """A real gateway (aiohttp TestServer on 127.0.0.1), ready once Redis is subscribed."""
    from aiohttp.test_utils import TestServer
    from ws_gateway.app import create_app

    server = TestServer(create_app(gateway_settings(settings, **overrides)), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 10
            while True:
                async with http.get(server.make_url("/readyz")) as response:
                    if response.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise AssertionError("gateway not ready within 10s")
                await asyncio.sleep(0.01)
        yield server
    finally:
        await server.close()


async def counters(http: aiohttp.ClientSession, server: Any) -> dict[str, int]:
    async with http.get(server.make_url("/readyz")) as response:
        return dict((await response.json())["counters"])
