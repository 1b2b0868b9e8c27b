"""One connected browser: a bounded send queue drained by its own writer task.

Fan-out only ever does ``put_nowait``; a client whose queue is full is too slow and is cut
off (TCP abort: a close frame could not get through its full buffers anyway), so it can
never hold back the others or grow the gateway's memory. The page reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, web

log = logging.getLogger(__name__)


class WsClient:
    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None, max_queued: int, peer: str) -> None:
        self.ws = ws
        self.peer = peer
        self._transport = transport
        self._queue: asyncio.Queue[str] = asyncio.Queue(max_queued)
        self.calls: set[asyncio.Task[None]] = set()
        self.dropped = False
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer:{peer}")

    def send(self, frame: str) -> None:
        if self.dropped:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped = True
            log.warning("%s: %d frames queued, client too slow; disconnecting it", self.peer, self._queue.maxsize)
            self._writer.cancel()
            if self._transport is not None:
                self._transport.abort()

    async def _write_loop(self) -> None:
        while True:
            frame = await self._queue.get()
            await self.ws.send_str(frame)

    async def shutdown(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"server shutdown") -> None:
        for task in self.calls:
            task.cancel()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await self._writer
        if not self.ws.closed and not self.dropped:
            try:
                async with asyncio.timeout(2.0):
                    await self.ws.close(code=code, message=message)
            except (TimeoutError, ConnectionError, RuntimeError):
                if self._transport is not None:
                    self._transport.abort()
