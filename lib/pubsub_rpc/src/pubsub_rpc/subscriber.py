"""SUBSCRIBE/PSUBSCRIBE on every connect, and a handler called for each message.

A subscription that Redis refuses (an ACL without the channel) or does not confirm within
REDIS_LIVENESS_TIMEOUT drops the connection: the link reconnects with backoff and asks
again, instead of sitting connected and deaf until someone restarts the process. Ready
means every subscription is confirmed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import hiredis

from .connection import Link
from .ratelog import RateLimitedLog
from .writes import command

log = logging.getLogger("pubsub_rpc.link")
_bad_input_log = RateLimitedLog(log)

MessageHandler = Callable[[str, bytes], None]
BadChannelHandler = Callable[[bytes, str], None]


class Subscriber(Link):
    """SUBSCRIBE/PSUBSCRIBE on connect (and on every reconnect); calls ``handler(channel,
    data)`` for each message, synchronously, in the read loop: handlers must not block."""

    def __init__(
        self,
        redis_url: str,
        name: str,
        handler: MessageHandler,
        channels: Iterable[str] = (),
        patterns: Iterable[str] = (),
        max_channel_bytes: int = 0,
        on_bad_channel: BadChannelHandler | None = None,
        probe_channel: str = "",
        **options: Any,
    ) -> None:
        super().__init__(redis_url, name, **options)
        self._handler = handler
        # With a pattern subscription anyone may pick the channel name: names longer than
        # this (0 = no limit) or not UTF-8 go to ``on_bad_channel(name, reason)`` instead.
        self._max_channel_bytes = max_channel_bytes or 1 << 62
        self._on_bad_channel = on_bad_channel
        self._channels = [c.encode() for c in channels]
        self._patterns = [p.encode() for p in patterns]
        self._pending_confirmations = 0
        # The data-path probe's channel (pubsub_rpc.probe): SUBSCRIBEd in a command of its
        # own (an ACL may grant it in a selector of its own), its messages go to on_probe.
        self._probe = probe_channel.encode()
        self.on_probe: Callable[[bytes], None] = lambda nonce: None
        self._subscribed_callbacks: list[Callable[[], None]] = []
        self._refusal_log = RateLimitedLog(log, interval=30.0)
        # Side channels (add_side_channel): name -> callback, each SUBSCRIBEd in a command of
        # its own, before the patterns; their messages bypass the handler.
        self._side: dict[bytes, Callable[[bytes], None]] = {}
        # Awaited on every (re)connect after the channels are confirmed and before PSUBSCRIBE
        # is sent (pubsub_rpc.registry: a responder announces its join there, so its peers
        # hear it before any request it can hear). Raising drops the connection.
        self.before_patterns: Callable[[], Awaitable[None]] | None = None
        self._held: list[bytes] = []  # patterns waiting for before_patterns
        self._gate_task: asyncio.Task[None] | None = None
        self.on_disconnect(self._cancel_gate)

    def add_side_channel(self, channel: str, callback: Callable[[bytes], None]) -> None:
        """Also SUBSCRIBE ``channel`` (a command of its own: an ACL may grant it in a selector),
        confirmed before the patterns are sent; its messages go to ``callback(data)``."""
        self._side[channel.encode()] = callback

    def on_subscribed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time every subscription is confirmed (connect, reconnect)."""
        self._subscribed_callbacks.append(callback)

    # -- Link hooks ------------------------------------------------------------------

    def _on_connected(self) -> None:
        self._held = self._patterns if self.before_patterns is not None else []
        patterns = [] if self._held else self._patterns
        self._pending_confirmations = len(self._channels) + len(patterns) + len(self._side) + (1 if self._probe else 0)
        if self._channels:
            self._write(command(b"SUBSCRIBE", *self._channels))
        for side in self._side:
            self._write(command(b"SUBSCRIBE", side))
        if self._probe:
            self._write(command(b"SUBSCRIBE", self._probe))
        if patterns:
            self._write(command(b"PSUBSCRIBE", *patterns))
        if not self._pending_confirmations:
            self._confirmed()

    def _confirmed(self) -> None:
        """Every subscription sent so far is confirmed: open the gate, or be ready."""
        if self._held:
            self._gate_task = asyncio.create_task(self._open_gate(), name=f"gate:{self.name}")
            return
        log.info("%s: subscribed to %s", self.name, b", ".join(self._channels + self._patterns).decode())
        self.ready.set()
        for callback in self._subscribed_callbacks:
            callback()

    async def _open_gate(self) -> None:
        try:
            await self.before_patterns()  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: could not prepare the pattern subscription; reconnecting", self.name)
            self.drop("gate")
            return
        patterns, self._held = self._held, []
        self._pending_confirmations = len(patterns)
        self._write(command(b"PSUBSCRIBE", *patterns))

    def _cancel_gate(self) -> None:
        if self._gate_task is not None:
            self._gate_task.cancel()
            self._gate_task = None

    def _send_ping(self) -> None:
        self._write(command(b"PING"))

    def _expects_reply(self) -> bool:
        return self._pending_confirmations > 0

    def _on_reply(self, reply: object) -> None:
        if not isinstance(reply, list):
            if isinstance(reply, hiredis.ReplyError):
                # e.g. an ACL that forbids the channel: say so loudly, then ask again later.
                self._refusal_log.log(
                    logging.ERROR, "refused", "%s: Redis refused a subscription: %s; retrying with backoff", self.name, reply
                )
                self.drop("refused")
            return
        kind = reply[0]
        if kind == b"message":
            if reply[1] == self._probe:
                self.on_probe(reply[2])
                return
            if self._side:
                side = self._side.get(reply[1])
                if side is not None:
                    side(reply[2])
                    return
            self._dispatch(reply[1], reply[2])
        elif kind == b"pmessage":
            self._dispatch(reply[2], reply[3])
        elif kind in (b"subscribe", b"psubscribe"):
            self._pending_confirmations -= 1
            if self._pending_confirmations == 0:
                self._confirmed()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if len(channel) > self._max_channel_bytes:
            self._bad_channel(channel, f"channel name longer than {self._max_channel_bytes} bytes")
            return
        try:
            name = channel.decode()
        except UnicodeDecodeError:
            self._bad_channel(channel, "channel name is not valid UTF-8")
            return
        try:
            self._handler(name, data)
        except Exception:
            # A handler bug must not take the subscription down with it.
            log.exception("%s: message handler failed", self.name)

    def _bad_channel(self, channel: bytes, reason: str) -> None:
        if self._on_bad_channel is not None:
            self._on_bad_channel(channel, reason)
        else:
            _bad_input_log.warning("bad-channel", "%s: dropped a message: %s", self.name, reason)
