"""Is the Redis at the other end of a connection still answering?

TCP says nothing about a frozen Redis (SIGSTOP, a VM paused, a swap storm) or a half-open
connection (a NAT or a peer that vanished): writes succeed into kernel buffers and no
error ever comes. So each link checks, once per tick (REDIS_LIVENESS_TIMEOUT / 3):

- after a tick of silence it sends a PING;
- when nothing has been received for REDIS_LIVENESS_TIMEOUT while a PING or any command
  (a PUBLISH, a subscription) is waiting for its answer, the connection is dead: it is
  dropped, its waiting calls fail with ``connection_lost`` and it reconnects.

A dead connection is thus noticed at most REDIS_LIVENESS_TIMEOUT plus one tick after the
last byte Redis sent (4 s with the default 3 s); a stall of our own event loop does not
count as Redis's silence. An idle link costs one PING per tick of
silence; a busy one nothing, since any reply counts: the time of the last read
(``Link.read_at``) is already taken once per socket read for the metrics.
"""

from __future__ import annotations

from typing import Protocol

STALL_TICKS = 1.5  # a check this late means the event loop, not Redis, was silent


class Watched(Protocol):
    """What liveness needs from a link."""

    read_at: float  # perf_counter() of the last socket read

    def _expects_reply(self) -> bool: ...

    def _send_ping(self) -> None: ...


class Liveness:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = timeout / 3
        self._since = 0.0  # connected (or reading resumed) at: silence counts from here
        self._ping_at = -float("inf")

    def restart(self, now: float) -> None:
        """A new connection, or reading resumed after a pause: silence starts now."""
        self._since = self._checked_at = now
        self._ping_at = -float("inf")

    def dead(self, link: Watched, now: float) -> bool:
        """One tick: True when the connection must be dropped; sends a PING when due."""
        if now - self._checked_at > STALL_TICKS * self.tick:
            # Our event loop was blocked (a long synchronous handler, a debugger): the
            # silence was ours, and what we wrote at its end has had no time to be answered.
            self._since = now
        self._checked_at = now
        heard = max(link.read_at, self._since)
        silent = now - heard
        ping_waiting = self._ping_at > heard
        if silent >= self.timeout and (ping_waiting or link._expects_reply()):
            return True
        if silent >= self.tick and not ping_waiting:
            link._send_ping()
            self._ping_at = now
        return False
