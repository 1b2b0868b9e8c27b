"""The two links of one Redis Cluster master: SSUBSCRIBE and SPUBLISH (cluster mode).

Same Link machinery as single-Redis mode (reconnect, liveness, write coalescing,
back-pressure), other commands. A shard channel lives on the master owning its slot, so
``pubsub_rpc.cluster`` keeps one ``ShardSubscriber`` and one ``ShardPublisher`` per master
in use, never one per channel or slot.

``ShardSubscriber`` sends one ``SSUBSCRIBE`` per channel (one command may not span
slots: CROSSSLOT), so replies map to channels in order. A channel stops being ours here
in two ways, both reported to ``on_lost(channel, reason, redirect)``: the server sends an
unsolicited ``sunsubscribe`` (its slot moved away: Redis drops the shard's subscribers)
or answers ``SSUBSCRIBE`` with ``MOVED slot host:port`` (the slot map we used was stale).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis

from .connection import Link
from .publisher import Publisher
from .topology import parse_redirect
from .writes import command

log = logging.getLogger("pubsub_rpc.link")

# on_lost(channel, reason, (slot, "host:port") from a MOVED, or None)
LostHandler = Callable[[str, str, tuple[int, str] | None], None]


class ShardSubscriber(Link):
    """SSUBSCRIBE to a set of channels on one master; ``handler(channel, data, read_at)``
    per message, synchronously in the read loop. Ready: every channel confirmed."""

    def __init__(
        self, redis_url: str, name: str, handler: Callable[[str, bytes, float], None], on_lost: LostHandler, **options: Any
    ) -> None:
        super().__init__(redis_url, name, **options)
        self._handler = handler
        self._on_lost = on_lost
        self.channels: set[bytes] = set()  # wanted here (resubscribed on every connect)
        self.confirmed: set[bytes] = set()
        self._pending: deque[bytes] = deque()  # SSUBSCRIBEs sent, in order, unanswered
        self.on_confirmed: Callable[[], None] = lambda: None
        self.moves = 0  # channels lost to a slot move (sunsubscribe or MOVED)

    def add(self, channel: str) -> None:
        encoded = channel.encode()
        if encoded in self.channels:
            return
        self.channels.add(encoded)
        if self._transport is not None:
            self.ready.clear()
            self._ssubscribe(encoded)

    def _ssubscribe(self, channel: bytes) -> None:
        self._pending.append(channel)
        self._write(command(b"SSUBSCRIBE", channel))

    # -- Link hooks ------------------------------------------------------------------

    def _on_connected(self) -> None:
        for channel in self.channels:
            self._ssubscribe(channel)
        if not self._pending:
            self.ready.set()

    def _send_ping(self) -> None:
        self._write(command(b"PING"))

    def _expects_reply(self) -> bool:
        return bool(self._pending)

    def _on_reply(self, reply: object) -> None:
        if isinstance(reply, list):
            kind = reply[0]
            if kind == b"smessage":
                try:
                    self._handler(reply[1].decode(), reply[2], self.read_at)
                except Exception:  # a handler bug must not take the subscription down
                    log.exception("%s: message handler failed", self.name)
            elif kind == b"ssubscribe":
                if self._pending and self._pending[0] == reply[1]:
                    self._pending.popleft()
                if reply[1] in self.channels:
                    self.confirmed.add(reply[1])
                if not self._pending and self.confirmed == self.channels:
                    self.ready.set()
                self.on_confirmed()
            elif kind == b"sunsubscribe":  # we never send SUNSUBSCRIBE: the slot moved away
                self._lose(reply[1], "its slot moved to another node (unsolicited sunsubscribe)", None)
            return
        if isinstance(reply, hiredis.ReplyError) and self._pending:
            redirect = parse_redirect(reply)
            channel = self._pending.popleft()
            self._lose(channel, f"SSUBSCRIBE refused: {reply}", redirect)
            if redirect is None:  # an ACL refusal, say: not ours to fix by moving
                log.error("%s: Redis refused SSUBSCRIBE %s: %s", self.name, channel.decode(errors="replace"), reply)
        elif isinstance(reply, hiredis.ReplyError):
            log.error("%s: Redis refused a command: %s", self.name, reply)

    def _lose(self, channel: bytes, reason: str, redirect: tuple[int, str] | None) -> None:
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        self.confirmed.discard(channel)
        self.moves += 1
        if not self._pending and self.confirmed == self.channels:
            self.ready.set()
        self._on_lost(channel.decode(), reason, redirect)

    def _disconnected(self) -> None:
        self._pending.clear()
        self.confirmed.clear()
        super()._disconnected()


class ShardPublisher(Publisher):
    """SPUBLISH on one master, pipelined like PUBLISH; each reply goes raw (a count, a
    ``MOVED`` error, or ConnectionLost when the link drops) to the waiter's callback."""

    def spublish(self, channel: str, payload: bytes, waiter: tuple[Any, Any], refuse_backpressured: bool = True) -> None:
        """``waiter`` is ``(publisher._RawReply(callback), argument)``: built once by the
        caller of this, not per message. Raises ConnectionLost if down, Backpressure if
        backpressured and ``refuse_backpressured``."""
        if self._blocked and (refuse_backpressured or self._transport is None):
            raise self._refusal()
        header = self._headers.get(channel)
        if header is None:
            encoded = channel.encode()
            header = b"*3\r\n$8\r\nSPUBLISH\r\n$%d\r\n%s\r\n" % (len(encoded), encoded)
            if len(self._headers) >= 1024:
                self._headers.clear()
            self._headers[channel] = header
        self._waiters.append(waiter)
        self._write(b"%s$%d\r\n%s\r\n" % (header, len(payload), payload))
