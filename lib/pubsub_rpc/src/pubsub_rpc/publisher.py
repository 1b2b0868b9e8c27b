"""Pipelined PUBLISH (and any other command) on one connection, replies matched in order.

Redis answers the commands of a connection in the order they were sent, so each command
sent appends its waiter to a deque and each reply pops the oldest: no ids, no lookups.
When the connection drops, every waiter fails with ``ConnectionLost``. New work is
refused at once while the link is down (``ConnectionLost``) or backpressured
(``Backpressure``): nothing is queued that a timed-out call would leave behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis

from .connection import Link
from .errors import ConnectionLost
from .writes import command

log = logging.getLogger("pubsub_rpc.link")

HEADER_CACHE_SIZE = 1024  # channels whose PUBLISH header a publisher keeps ready


class _RawReply:
    """Marks an ``execute`` waiter: its callback gets the raw reply, error replies included."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[Any, Any], None]) -> None:
        self.callback = callback


class Publisher(Link):
    """Pipelined PUBLISH: many in flight on one connection, answers matched in order."""

    def __init__(self, redis_url: str, name: str, **options: Any) -> None:
        super().__init__(redis_url, name, **options)
        # One entry per command sent, answered in order: None (nobody waits), a Future for
        # the receiver count, or (callback, argument) called with the count or the error.
        self._waiters: deque[Any] = deque()
        # channel -> encoded PUBLISH header. Bounded: reply channels come and go with
        # callers (and attackers can name thousands), so it is emptied when full; the
        # channels still in use are back in it after their next message.
        self._headers: dict[str, bytes] = {}

    def publish(self, channel: str, payload: bytes) -> asyncio.Future[int]:
        """Send PUBLISH now; the future gets the receiver count. Raises ConnectionLost if
        down, Backpressure if backpressured."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._send(channel, payload, future, True)
        return future

    def publish_nowait(self, channel: str, payload: bytes) -> None:
        """PUBLISH without wanting the count (replies, pushes). Raises ConnectionLost if
        down; sent even when backpressured: a responder's replies are bounded by the
        requests it took, and it stops taking more meanwhile (Responder)."""
        self._send(channel, payload, None, False)

    def publish_request(
        self, channel: str, payload: bytes, on_count: Callable[[Any, int | Exception], None], argument: Any
    ) -> None:
        """PUBLISH, then ``on_count(argument, receivers_or_error)`` when Redis answers.
        Cheaper than a count future plus a done-callback: this runs once per call.
        Raises ConnectionLost if down, Backpressure if backpressured."""
        self._send(channel, payload, (on_count, argument), True)

    def execute(self, on_reply: Callable[[Any, Any], None], argument: Any, *parts: bytes) -> None:
        """Send any command, pipelined with the PUBLISHes; ``on_reply(argument, reply)``
        gets its reply (a ``hiredis.ReplyError`` for an error reply) or ConnectionLost.
        Raises ConnectionLost if down, Backpressure if backpressured. For claims,
        registry and stream commands."""
        if self._blocked:
            raise self._refusal()
        self._waiters.append((_RawReply(on_reply), argument))
        self._write(command(*parts))

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every PUBLISH sent so far has been answered (or the link dropped),
        at most ``timeout`` seconds (default: the liveness timeout, after which a link
        that did not answer is dropped anyway)."""
        if self._waiters and self.ready.is_set():
            marker: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._waiters.append(marker)
            self._write(command(b"PING"))
            with contextlib.suppress(ConnectionLost, TimeoutError):
                async with asyncio.timeout(self.liveness_timeout if timeout is None else timeout):
                    await marker

    def _send(self, channel: str, payload: bytes, waiter: Any, refuse_backpressured: bool) -> None:
        if self._blocked and (refuse_backpressured or self._transport is None):
            raise self._refusal()
        header = self._headers.get(channel)
        if header is None:
            encoded = channel.encode()
            header = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(encoded), encoded)
            if len(self._headers) >= HEADER_CACHE_SIZE:
                self._headers.clear()
            self._headers[channel] = header
        self._waiters.append(waiter)
        self._write(b"%s$%d\r\n%s\r\n" % (header, len(payload), payload))

    # -- Link hooks ------------------------------------------------------------------

    def _on_connected(self) -> None:
        self.ready.set()

    def _send_ping(self) -> None:
        self._waiters.append(None)
        self._write(command(b"PING"))

    def _expects_reply(self) -> bool:
        return bool(self._waiters)

    def _on_reply(self, reply: object) -> None:
        waiter = self._waiters.popleft()
        if type(waiter) is tuple:
            on_count, argument = waiter
            if type(on_count) is _RawReply:
                on_count.callback(argument, reply)
                return
            on_count(
                argument, ConnectionLost(f"Redis refused PUBLISH: {reply}") if isinstance(reply, hiredis.ReplyError) else reply
            )
            return
        if waiter is None or waiter.done():
            if isinstance(reply, hiredis.ReplyError):
                log.error("%s: Redis refused a command: %s", self.name, reply)
            return
        if isinstance(reply, hiredis.ReplyError):
            waiter.set_exception(ConnectionLost(f"Redis refused PUBLISH: {reply}"))
        else:
            waiter.set_result(reply if isinstance(reply, int) else 0)

    def _disconnected(self) -> None:
        waiters, self._waiters = self._waiters, deque()
        super()._disconnected()
        lost = ConnectionLost(f"{self.name}: connection to Redis lost")
        for waiter in waiters:
            try:
                if type(waiter) is tuple:
                    callback = waiter[0].callback if type(waiter[0]) is _RawReply else waiter[0]
                    callback(waiter[1], lost)
                elif waiter is not None and not waiter.done():
                    waiter.set_exception(lost)
            except Exception:
                log.exception("%s: a reply callback failed", self.name)
