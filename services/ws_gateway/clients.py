"""Connected browsers and how frames reach them.

A frame is encoded once (an event's bytes are shared by every client) and appended to each
client's outbox; once per event-loop tick every client with something queued gets one
``transport.write``: no task, no coroutine and no syscall per frame. A client whose transport
buffers more than ``max_buffer`` bytes is not reading: it is cut off (TCP abort; a close frame
could not get through its full buffers anyway), so one slow client never holds back the others
or grows the gateway's memory. The page reconnects by itself.

Compression is not negotiated (``compress=False`` in app.py), so frames are plain RFC 6455.
"""

from __future__ import annotations

import asyncio
import logging
import struct

from aiohttp import WSCloseCode, web

log = logging.getLogger(__name__)


def text_frame(payload: bytes) -> bytes:
    """A server-to-client text frame (RFC 6455 section 5.2: FIN, opcode 1, unmasked)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class Outbox:
    """Flushes every client that has frames waiting, once per loop tick."""

    def __init__(self) -> None:
        self._dirty: list[WsClient] = []

    def mark(self, client: WsClient) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush)
        self._dirty.append(client)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for client in dirty:
            client.flush()


class WsClient:
    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport, outbox: Outbox, max_buffer: int, peer: str
    ) -> None:
        self.ws = ws
        self.peer = peer
        self.calls: set[asyncio.Future[object]] = set()
        self.dropped = False
        self._transport = transport
        self._outbox = outbox
        self._max_buffer = max_buffer
        self._out: list[bytes] = []

    def send(self, frame: bytes) -> None:
        """Queue an encoded frame (see text_frame); it leaves at the end of this tick."""
        if self.dropped:
            return
        if not self._out:
            self._outbox.mark(self)
        self._out.append(frame)

    def flush(self) -> None:
        data, self._out = b"".join(self._out), []
        if self.dropped or self._transport.is_closing():
            return
        if self._transport.get_write_buffer_size() + len(data) > self._max_buffer:
            self.dropped = True
            log.warning("%s: over %d bytes unsent, client too slow; disconnecting it", self.peer, self._max_buffer)
            self._transport.abort()
            return
        self._transport.write(data)

    async def shutdown(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"server shutdown") -> None:
        for call in self.calls:
            call.cancel()
        if not self.ws.closed and not self.dropped:
            try:
                async with asyncio.timeout(2.0):
                    await self.ws.close(code=code, message=message)
            except (TimeoutError, ConnectionError, RuntimeError):
                self._transport.abort()
