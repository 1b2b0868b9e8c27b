"""A WebSocket client for tests: waits for a frame of a given type, skipping pushes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp


class FrameClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._backlog: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_json(frame)

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

    async def call(self, call_id: int | str, action: str, data: Any = None, timeout: float | None = None) -> dict[str, Any]:
        await self.send({"type": "call", "id": call_id, "action": action, "data": data, "timeout": timeout})
        async with asyncio.timeout(15):
            while True:
                frame = await self.next_frame(15)
                if frame.get("id") == call_id and frame["type"] in ("result", "error"):
                    return frame


@asynccontextmanager
async def connect(http: aiohttp.ClientSession, url: Any, **kwargs: Any) -> AsyncIterator[FrameClient]:
    async with http.ws_connect(url, **kwargs) as ws:
        yield FrameClient(ws)
