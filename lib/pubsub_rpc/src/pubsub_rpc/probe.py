"""Data-path readiness: prove, every few seconds, that a published message comes back.

A subscription confirmed once says nothing about now: after a failover, a proxy restart or
an ``UNSUBSCRIBE`` nobody meant, a connection can stay up, answer PINGs and hear nothing
(Centrifugo shipped exactly that bug). So each Caller and Responder subscribes a channel
of its own, ``<channel>.probe.<service>.<random>``, and its publisher sends a random nonce
there every ``interval / 4`` seconds. ``ok`` is true while a nonce (or, on a healthy
link, the subscription's confirmation) arrived within the last ``interval`` seconds; when
none has, the link is deaf: readiness turns false, the subscriber's connection is dropped
(counted as a liveness failure, reason ``probe``) and it reconnects and resubscribes. After
that, only a nonce that comes back makes it ready again: a link deaf for good (an ACL that
refuses the probe's PUBLISH, a proxy that delivers nothing) stays unready instead of
flapping ready for an interval after every reconnect.

The clock only runs while both connections are up and flowing: a publisher that is down
or backpressured cannot send nonces (and says so itself), and a subscriber whose reading a
backpressured responder paused cannot hear them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque

from .errors import Backpressure, ConnectionLost
from .link import Publisher, Subscriber
from .ratelog import RateLimitedLog

log = logging.getLogger(__name__)
TICKS_PER_INTERVAL = 4
NONCES_KEPT = 2 * TICKS_PER_INTERVAL


def probe_channel(prefix: str, service: str) -> str:
    return f"{prefix}{service}.{secrets.token_hex(8)}"


class Probe:
    def __init__(self, subscriber: Subscriber, publisher: Publisher, channel: str, interval: float) -> None:
        self.channel = channel
        self.interval = interval
        self._subscriber = subscriber
        self._publisher = publisher
        self._nonces: deque[bytes] = deque(maxlen=NONCES_KEPT)
        self.last_seen = -float("inf")  # time.monotonic() of the last nonce back (or subscription)
        self._since = -float("inf")  # ...or of the last (re)subscription or publisher outage
        self.deaf = False  # since the last drop for deafness, until a nonce comes back
        self.sent = 0
        self.received = 0
        self._task: asyncio.Task[None] | None = None
        self._log = RateLimitedLog(log, interval=60.0)
        subscriber.on_probe = self._on_nonce
        subscriber.on_subscribed(self._on_subscribed)

    @property
    def ok(self) -> bool:
        return not self.deaf and time.monotonic() - self.last_seen <= self.interval

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"probe:{self.channel}")
        self._task.add_done_callback(_crashed)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_subscribed(self) -> None:
        self._since = time.monotonic()
        if not self.deaf:
            self.last_seen = self._since

    def _on_nonce(self, nonce: bytes) -> None:
        if nonce in self._nonces:  # only ours: anything else on the channel proves nothing
            self.received += 1
            self.last_seen = self._since = time.monotonic()
            self.deaf = False

    async def _run(self) -> None:
        tick = self.interval / TICKS_PER_INTERVAL
        while True:
            await asyncio.sleep(tick)
            self.check()

    def check(self) -> None:
        """One tick: declare the link deaf if nothing came back in time, else send a nonce."""
        subscriber, publisher = self._subscriber, self._publisher
        if not subscriber.ready.is_set():
            return  # reconnecting: it resubscribes, and that resets the clock
        now = time.monotonic()
        if not publisher.ready.is_set() or publisher.backpressured or subscriber.reading_paused:
            self._since = now  # no nonce can be sent, or read back: stop the clock
            return
        if now - max(self.last_seen, self._since) > self.interval:
            self.deaf = True
            log.warning(
                "%s: deaf: no probe came back on %s within %gs; dropping the connection to resubscribe",
                subscriber.name,
                self.channel,
                self.interval,
            )
            subscriber.drop("probe")
            return
        nonce = secrets.token_hex(8).encode()
        self._nonces.append(nonce)
        try:
            publisher.publish_request(self.channel, nonce, self._published, None)
        except (ConnectionLost, Backpressure):
            return
        self.sent += 1

    def _published(self, _: None, receivers: int | Exception) -> None:
        if isinstance(receivers, Exception):  # e.g. an ACL without the probe channel
            self._log.warning("refused", "%s: probe PUBLISH on %s failed: %s", self._publisher.name, self.channel, receivers)


def _crashed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("probe task died; readiness will turn false", exc_info=task.exception())
