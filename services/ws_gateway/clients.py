"""Connected browsers and how frames reach them.

A frame is encoded once (an event's bytes are shared by every client) and appended to each
client's outbox; once per event-loop tick every client with something queued gets one
``transport.write``: no task, no coroutine and no syscall per frame.

Slow clients: ``max_buffer`` bounds what a client leaves *unread*, not the size of a frame.
If the transport still holds more than ``max_buffer`` bytes from earlier writes when new
frames are due, the client is not reading: it is cut off (TCP abort; a close frame could
not get through its full buffers anyway), so one slow client never holds back the others or
grows the gateway's memory beyond about ``max_buffer`` plus one tick's frames. A single
frame larger than ``max_buffer`` still reaches a client that keeps up.

Once a close has begun nothing more is queued or written: a Close frame is the last frame.
Compression is not negotiated (``compress=False`` in app.py), so frames are plain RFC 6455.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, web

if TYPE_CHECKING:
    from .auth import Identity
    from .limits import Counters, TokenBucket

log = logging.getLogger(__name__)
CLOSE_TIMEOUT = 2.0  # seconds a close handshake may take before the TCP connection is aborted


SHORT_HEADERS = [bytes((0x81, size)) for size in range(126)]  # payloads under 126 bytes
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def text_frame(payload: bytes) -> bytes:
    """A server-to-client text frame (RFC 6455 section 5.2: FIN, opcode 1, unmasked)."""
    size = len(payload)
    if size < 126:
        return SHORT_HEADERS[size] + payload
    if size < 1 << 16:
        return _HEADER_16(0x81, 126, size) + payload
    return _HEADER_64(0x81, 127, size) + payload


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
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        outbox: Outbox,
        max_buffer: int,
        peer: str,
        bucket: TokenBucket,
        counters: Counters,
    ) -> None:
        self.ws = ws
        self.peer = peer
        self.calls: set[asyncio.Future[object]] = set()
        self.identity: Identity | None = None
        self.bucket = bucket
        self.dropped = False
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None  # auth deadline, then token expiry
        self._counters = counters
        self._transport = transport
        self._outbox = outbox
        self._max_buffer = max_buffer
        self._out: list[bytes] = []
        self._close_task: asyncio.Task[None] | None = None

    def send(self, frame: bytes) -> None:
        """Queue an encoded frame (see text_frame); it leaves at the end of this tick."""
        if self.dropped or self.closing:
            return
        self._counters.frames_out += 1
        if not self._out:
            self._outbox.mark(self)
        self._out.append(frame)

    def flush(self) -> None:
        data, self._out = b"".join(self._out), []
        if self.dropped or self.closing or self.ws.closed or self._transport.is_closing():
            return
        if self._transport.get_write_buffer_size() > self._max_buffer:
            self.dropped = True
            self._counters.slow_dropped += 1
            log.warning("%s: over %d bytes unread, client too slow; disconnecting it", self.peer, self._max_buffer)
            self._transport.abort()
            return
        self._transport.write(data)

    def set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` after ``delay`` seconds (replaces the previous deadline)."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(max(0.0, delay), callback)

    def close_soon(self, code: int, reason: str) -> None:
        """Start closing from a callback; the connection's handler awaits it (shutdown)."""
        if self.closing or self.dropped:
            return
        self.closing = True
        self._out.clear()
        self._close_task = asyncio.create_task(self._close(code, reason), name=f"close:{self.peer}")

    async def _close(self, code: int, reason: str) -> None:
        for call in self.calls:
            call.cancel()
        if self.ws.closed:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=reason.encode()[:120])
        except (TimeoutError, ConnectionError, RuntimeError):
            self._transport.abort()

    async def shutdown(self, code: int = WSCloseCode.GOING_AWAY, reason: str = "server shutdown") -> None:
        """Close (unless already closing) and wait until the close is done."""
        if self.timer is not None:
            self.timer.cancel()
        self.close_soon(code, reason)
        if self._close_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._close_task
        for call in self.calls:
            call.cancel()
