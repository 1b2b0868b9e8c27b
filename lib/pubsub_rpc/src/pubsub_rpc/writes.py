"""Write coalescing and back-pressure for a Link.

Every command queued during one event-loop tick leaves in a single ``transport.write()``
(one syscall for hundreds of PUBLISHes). What the transport cannot hand to the kernel
stays in its buffer; once that buffer, including the tick's batch just written, passes
REDIS_MAX_WRITE_BUFFER, asyncio calls ``pause_writing`` and the link is ``backpressured``
until it drains below a quarter of the mark (``resume_writing``). Meanwhile new calls fail
with ``Backpressure`` instead of queueing: memory stays bounded by the mark plus one tick's
writes, and a call that gave up holds nothing in a queue of ours.

The hot path pays what it paid before this module: one attribute test (``_blocked``,
true when down or backpressured) and a list append per command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .errors import Backpressure, ConnectionLost, RpcError
from .ratelog import RateLimitedLog

log = logging.getLogger("pubsub_rpc.link")  # the link layer logs under one name
_pressure_log = RateLimitedLog(log, interval=10.0)


def command(*parts: bytes) -> bytes:
    """A command in RESP: ``command(b"SET", key, value)``."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class Writes:
    """Mixin for Link: ``_write`` coalesces, ``backpressured`` says when to refuse work."""

    name: str
    _transport: asyncio.Transport | None

    def _init_writes(self, max_write_buffer: int) -> None:
        self.max_write_buffer = max_write_buffer
        self._out: list[bytes] = []
        self._flush_scheduled = False
        # The loop of the current connection: asyncio.get_running_loop() is a getpid()
        # system call on CPython 3.11 (about 0.2 us), too dear once per tick.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.backpressured = False
        # True while new work must be refused (not connected, or backpressured): the one
        # test the hot path makes.
        self._blocked = True
        self.backpressure_events = 0  # times the high-water mark was crossed (metrics)
        self._backpressure_callbacks: list[Callable[[bool], None]] = []

    def on_backpressure(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` when the link becomes backpressured, ``callback(False)``
        when it drains (or drops: a new connection starts with an empty buffer)."""
        self._backpressure_callbacks.append(callback)

    def _write(self, data: bytes) -> None:
        """Queue bytes for the socket; everything queued in one loop tick goes out together."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._transport is not None and self._out:
            # May call pause_writing (-> _writing_paused) synchronously.
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _refusal(self) -> RpcError:
        """The error for work refused while ``_blocked``."""
        if self._transport is None:
            return ConnectionLost(f"{self.name}: not connected to Redis")
        return Backpressure(
            f"{self.name}: {self._transport.get_write_buffer_size():,} bytes wait to be sent to Redis, over "
            f"REDIS_MAX_WRITE_BUFFER={self.max_write_buffer:,}: Redis or the network is slower than the calls"
        )

    # -- called by the link and its protocol ------------------------------------------

    def _writes_connected(self, transport: asyncio.Transport) -> None:
        transport.set_write_buffer_limits(high=self.max_write_buffer)
        self._loop = asyncio.get_running_loop()
        self._blocked = False

    def _writes_disconnected(self) -> None:
        self._out.clear()
        self._blocked = True
        if self.backpressured:
            self.backpressured = False
            self._tell_backpressure(False)

    def _writing_paused(self) -> None:
        self.backpressured = True
        self._blocked = True
        self.backpressure_events += 1
        _pressure_log.warning(
            "paused",
            "%s: over REDIS_MAX_WRITE_BUFFER=%d bytes unsent to Redis; new calls fail with `backpressure` until it drains",
            self.name,
            self.max_write_buffer,
        )
        self._tell_backpressure(True)

    def _writing_resumed(self) -> None:
        self.backpressured = False
        self._blocked = self._transport is None
        self._tell_backpressure(False)

    def _tell_backpressure(self, on: bool) -> None:
        for callback in self._backpressure_callbacks:
            try:
                callback(on)
            except Exception:
                log.exception("%s: back-pressure callback failed", self.name)
