"""Competing responders: one ``SET NX`` per request decides which replica runs it.

Pub/sub delivers every request to every responder whose pattern hears its channel. With
RPC_CLAIMS=auto a responder claims each request that has a requestId while another live
responder is in its registry Directory (pubsub_rpc.registry), and for a grace of three
announce intervals after the last one went; ``always`` claims always, ``off`` never.

A claim is ``SET <claim_prefix><requestId> <instance> NX PX <ttl>`` on the responder's
publisher connection: ``OK`` means run it, nil means another replica has it. All claims of
one event-loop tick leave in one write (the link coalesces writes), so N requests in one
socket read cost one round trip, not N. The key lives until the request's deadline plus
``TTL_SLACK`` (``NO_DEADLINE_TTL`` without a deadline): long enough that no replica can
still be reading the request when it goes, short enough that Redis holds one small key per
request for seconds. Why this is duplicate-free, and its windows: docs/scale-out.md.

Balance: whoever's SET arrives first wins, so left alone the replica that Redis happens to
write to first would win nearly every claim. Each request therefore has a preferred
replica (its requestId's CRC-32 modulo the sorted live claimers, ``members``), which claims
at once; the others send their claims ``DEFER`` seconds later, in one write. The preferred
one wins unless it is slower than that (busy, or dead but not yet expired): then another
takes the request. Views that differ for a moment change only who wins, never how many.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from collections.abc import Callable
from typing import Any

from .errors import ConnectionLost
from .link import Publisher

TTL_SLACK_MS = 10_000
NO_DEADLINE_TTL_MS = 60_000
MIN_TTL_MS = 1_000
MAX_ID_CHARS = 128  # longer request ids are claimed by their digest: keys stay small
MODES = ("auto", "always", "off")
DEFER = 0.002  # seconds a claim waits when another replica is the request's preferred one

OnReply = Callable[[Any, Any], None]


class Claims:
    """The claiming policy of one responder and the SET NX it sends.

    ``until`` (perf_counter) is how long auto mode claims: pushed forward by each other
    responder's beat (its expiry plus ``grace``) and by every (re)join of our own.
    """

    __slots__ = ("floor", "grace", "members", "mode", "own", "until", "_deferred", "_instance", "_prefix", "_publisher", "_timer")

    def __init__(self, publisher: Publisher, prefix: str, instance: str, mode: str, grace: float) -> None:
        if mode not in MODES:
            raise ValueError(f"claims mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.grace = grace
        self.until = -float("inf")
        self.floor = -float("inf")  # our own (re)join plus the grace: never claim less than that
        self._publisher = publisher
        self._prefix = prefix.encode()
        self.own = instance
        self._instance = instance.encode()
        self.members: tuple[str, ...] = (instance,)  # live claimers, sorted, ourselves included
        self._deferred: list[tuple[str, float | None, OnReply, Any]] = []
        self._timer: asyncio.TimerHandle | None = None

    def active(self, now: float) -> bool:
        mode = self.mode
        return mode == "always" or (mode == "auto" and now < self.until)

    def joined(self, now: float) -> None:
        """Our subscription (re)starts: claim for a grace whoever else is there."""
        self.floor = now + self.grace
        self.until = max(self.until, self.floor)

    def settled(self, now: float, others_until: float) -> None:
        """The join is done and the registry loaded: claim while the others found there
        are alive (and a grace after), or not at all when there are none. Nobody can be
        missing from that view: whoever joined before our registry subscription is in the
        hash we loaded after it, whoever joins later is heard before its requests."""
        self.floor = now
        self.until = others_until + self.grace if others_until > now else now

    def heard(self, expires: float) -> None:
        """Another responder joined or beat: claim until it has been gone for the grace."""
        until = expires + self.grace
        if until > self.until:
            self.until = until

    def left(self, others_until: float, now: float) -> None:
        """Another responder left (it hears no more requests): claim while the rest are
        alive, and for a grace after."""
        self.until = max(self.floor, max(others_until, now) + self.grace)

    def claim(self, request_id: str, deadline_ms: float | None, on_reply: OnReply, argument: Any) -> None:
        """Claim now if we are the request's preferred replica, else in DEFER seconds;
        ``on_reply(argument, b"OK" | None | error)``, ConnectionLost included."""
        members = self.members
        if len(members) > 1 and members[zlib.crc32(request_id.encode(errors="surrogatepass")) % len(members)] != self.own:
            self._deferred.append((request_id, deadline_ms, on_reply, argument))
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(DEFER, self.flush)
            return
        self._send_or_fail(request_id, deadline_ms, on_reply, argument)

    def flush(self) -> None:
        """Send the deferred claims now (the timer, and a stopping responder)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deferred, self._deferred = self._deferred, []
        for claim in deferred:
            self._send_or_fail(*claim)

    def _send_or_fail(self, request_id: str, deadline_ms: float | None, on_reply: OnReply, argument: Any) -> None:
        try:
            self.send(request_id, deadline_ms, on_reply, argument)
        except ConnectionLost as exc:
            on_reply(argument, exc)

    def send(self, request_id: str, deadline_ms: float | None, on_reply: OnReply, argument: Any) -> None:
        """SET NX PX, pipelined; ``on_reply(argument, b"OK" | None | error)``.
        Raises ConnectionLost when the publisher is down."""
        if deadline_ms is None:
            ttl = NO_DEADLINE_TTL_MS
        else:
            ttl = max(int(deadline_ms - time.time() * 1000) + TTL_SLACK_MS, MIN_TTL_MS)
        key = request_id.encode(errors="surrogatepass")
        if len(key) > MAX_ID_CHARS:
            key = hashlib.blake2b(key).hexdigest().encode()
        self._publisher.execute(on_reply, argument, b"SET", self._prefix + key, self._instance, b"NX", b"PX", b"%d" % ttl)
