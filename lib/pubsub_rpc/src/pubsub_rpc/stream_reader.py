"""Streams mode: the consumer-group read loop, on a connection of its own.

``XREADGROUP ... BLOCK`` holds its connection until entries come or the block ends, so it
cannot share the publisher's pipeline. The reader asks only for as many entries as there
are free handler slots: nothing sits read but not started, which keeps the window a paused
process can hold entries hostage small. BLOCK stays at most 1 s: the read returns (an
empty answer) at least every second, so the connection is never silent long enough for
the liveness check, and a PING is never queued behind a blocked read (``_send_ping`` does
nothing while a read is outstanding: the read's own answer is the proof of life).

A read answered much later than it was sent (more than BLOCK plus half the visibility
timeout) means this process was frozen (``docker pause``, SIGSTOP, a stalled loop): by now
other consumers may have reclaimed its entries, so they are handed on as *frozen* and not
started (they stay pending, and are reclaimed like any other).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis

from .link import Link

log = logging.getLogger(__name__)

MAX_BLOCK_MS = 1000
IDLE_RECHECK = 0.02  # seconds between looks for a free slot while every slot is taken
RETRY_AFTER_ERROR = 1.0  # seconds before reading again after an error reply

# (entry id, fields: [b"r", payload, ...] or None for an entry trimmed away)
Entry = tuple[bytes, list[bytes] | None]
EntriesHandler = Callable[[list[Entry], bool], None]


class StreamReader(Link):
    """Creates the group (MKSTREAM) on every connect, then reads ``>`` in a loop.

    ``on_entries(entries, frozen)`` gets each non-empty answer, synchronously; ``frozen``
    says it came too late to be started. ``free_slots()`` bounds each read's COUNT.
    """

    def __init__(
        self,
        redis_url: str,
        name: str,
        *,
        stream_key: str,
        group: str,
        consumer: str,
        free_slots: Callable[[], int],
        on_entries: EntriesHandler,
        block_ms: int,
        frozen_after: float,
        **link_options: Any,
    ) -> None:
        super().__init__(redis_url, name, **link_options)
        self._key = stream_key.encode()
        self._group = group.encode()
        self._consumer = consumer.encode()
        self._free_slots = free_slots
        self._on_entries = on_entries
        self._block = str(min(max(block_ms, 1), MAX_BLOCK_MS)).encode()
        self._frozen_after = frozen_after  # seconds a read may take before its answer counts as frozen
        self._expected: deque[str] = deque()  # what each command sent is: "group", "read" or "ping"
        self.read_sent = 0.0  # time.monotonic() when the last read left (its entries came after)
        self._reading = False  # a read is outstanding
        self._recheck: asyncio.TimerHandle | None = None
        self.paused = False  # set while stopping: no new reads
        self.held = False  # set while replies cannot be sent (the publisher is backpressured)
        self.errors = 0
        self.on_disconnect(self._forget)

    # -- the loop ----------------------------------------------------------------------

    def _on_connected(self) -> None:
        self._expected.clear()
        self._reading = False
        self._send("group", b"XGROUP", b"CREATE", self._key, self._group, b"0", b"MKSTREAM")

    def _send(self, kind: str, *parts: bytes) -> None:
        self._expected.append(kind)
        self._write(b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)]))

    def _read(self) -> None:
        """Ask for as many entries as there are free slots; with none, look again shortly."""
        self._recheck = None
        if self._reading or not self.ready.is_set() or self.paused or self.held:
            return
        count = self._free_slots()
        if count <= 0:
            self._recheck = asyncio.get_running_loop().call_later(IDLE_RECHECK, self._read)
            return
        self._reading = True
        self.read_sent = time.monotonic()
        self._send(
            "read",
            b"XREADGROUP",
            b"GROUP",
            self._group,
            self._consumer,
            b"COUNT",
            str(count).encode(),
            b"BLOCK",
            self._block,
            b"STREAMS",
            self._key,
            b">",
        )

    def hold(self, on: bool) -> None:
        """Take no new entries while ``on`` (Redis keeps them for the other consumers)."""
        self.held = on
        if not on:
            self._read()

    def _read_later(self, delay: float) -> None:
        if self._recheck is None:
            self._recheck = asyncio.get_running_loop().call_later(delay, self._read)

    def _on_reply(self, reply: object) -> None:
        kind = self._expected.popleft() if self._expected else "ping"
        if kind == "group":
            if isinstance(reply, hiredis.ReplyError) and not str(reply).startswith("BUSYGROUP"):
                # e.g. NOPERM: say so loudly and stay not-ready (the responder is not ready).
                self.errors += 1
                log.error("%s: cannot create consumer group: %s", self.name, reply)
                self._read_later(RETRY_AFTER_ERROR)
                return
            self.ready.set()
            self._read()
        elif kind == "read":
            self._reading = False
            late = time.monotonic() - self.read_sent > self._frozen_after
            if isinstance(reply, hiredis.ReplyError):
                self.errors += 1
                if str(reply).startswith("NOGROUP"):  # the stream was deleted (or Redis lost it)
                    log.warning("%s: consumer group gone (%s); creating it again", self.name, reply)
                    self.ready.clear()
                    self._send("group", b"XGROUP", b"CREATE", self._key, self._group, b"0", b"MKSTREAM")
                else:
                    log.error("%s: XREADGROUP refused: %s", self.name, reply)
                    self._read_later(RETRY_AFTER_ERROR)
                return
            if isinstance(reply, list):
                for _key, entries in reply:
                    if entries:
                        try:
                            self._on_entries(entries, late)
                        except Exception:  # a bug must not stop the reading
                            log.exception("%s: stream entries handler failed", self.name)
            self._read()
        # a PONG needs nothing: any answer is proof of life

    def _send_ping(self) -> None:
        if not self._reading:  # a blocked read answers within BLOCK: that is the ping
            self._send("ping", b"PING")

    def _expects_reply(self) -> bool:
        # A blocked XREADGROUP counts: Redis answers it within BLOCK (a nil at worst).
        return bool(self._expected)

    def _forget(self) -> None:
        """The connection dropped: what was outstanding on it is gone (entries a lost read
        delivered stay pending in the group, and are reclaimed)."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        self._reading = False
        self._expected.clear()
