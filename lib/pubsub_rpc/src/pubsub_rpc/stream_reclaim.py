"""Streams mode: taking over entries a dead or frozen consumer left pending.

Every visibility/2 seconds, ``XAUTOCLAIM`` moves entries idle for longer than
RPC_STREAM_VISIBILITY to this consumer (as many as it has free slots; the cursor is
followed across sweeps). Live consumers renew their entries' idle time while handlers run
(``StreamConsumer.renew``), so only the entries of a consumer that stopped answering
qualify. For each one taken:

- its delivery count (XPENDING) above RPC_STREAM_MAX_DELIVERIES: dead-lettered (below);
- a reply stored under its requestId: that reply is published again and the entry acked,
  without running the handler (it ran, its consumer died before the XACK);
- otherwise it runs here, like a fresh entry.

Entries MAXLEN trimmed away while pending (Redis 7 reports their ids) are lost: counted
and logged.

Dead-lettering without Lua is made race-safe by XACK first: only the consumer whose XACK
removed the entry (answer 1) writes the dead letter and answers the caller
``dead_lettered``, so two consumers never both do. The price is a crash window between
that XACK and the ``XADD`` to the dead-letter stream: a consumer dying exactly there loses
the dead letter (the caller times out instead of getting ``dead_lettered``). The other
order (XADD first) would trade that for duplicate dead letters, which is worse for
whoever replays them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from time import perf_counter
from typing import Any

from .errors import Backpressure, ConnectionLost, DeadLettered
from .ratelog import RateLimitedLog
from .stream_consumer import StreamCommandError, StreamConsumer, entry_payload

log = logging.getLogger(__name__)

MAX_ROUNDS = 10  # XAUTOCLAIM calls per sweep at most (each scans up to 10 x COUNT entries)


class Reclaimer:
    def __init__(self, consumer: StreamConsumer) -> None:
        self.c = consumer
        settings = consumer.settings
        self._visibility_ms = str(max(int(settings.stream_visibility * 1000), 1)).encode()
        self._max_deliveries = settings.stream_max_deliveries
        self._dead = settings.dead_letter_key.encode()
        self._maxlen = str(settings.stream_maxlen).encode()
        self._stored_prefix = settings.stored_reply_prefix.encode()
        self._cursor = b"0-0"
        self._log = RateLimitedLog(log)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.c.visibility / 2)
            try:
                await self.sweep()
            except (ConnectionLost, Backpressure, TimeoutError, StreamCommandError) as exc:
                self._log.warning("sweep", "%s: stream reclaim sweep failed: %s", self.c.consumer, exc)

    async def sweep(self) -> None:
        c = self.c
        for _ in range(MAX_ROUNDS):
            slots = c.free_slots()
            if slots <= 0 or c.reader.paused or c.reader.held or not c.reader.ready.is_set():
                return
            reply = await c.command(
                b"XAUTOCLAIM", c.key, c.group, c.me, self._visibility_ms, self._cursor, b"COUNT", str(slots).encode()
            )
            self._cursor = reply[0]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                self._trimmed(len(deleted), [i.decode() for i in deleted[:5]])
            entries = [entry for entry in reply[1] if entry]
            if entries:
                await self._take(entries)
            if self._cursor == b"0-0":
                return

    def _trimmed(self, n: int, some: list[str]) -> None:
        self.c.stats.trimmed += n
        log.error(
            "%s: %d pending stream entries were trimmed away (RPC_STREAM_MAXLEN) before anyone answered them: "
            "lost (their callers time out); e.g. %s",
            self.c.consumer,
            n,
            ", ".join(some),
        )

    async def _take(self, entries: list[Any]) -> None:
        c = self.c
        received = perf_counter()
        ids = [entry[0] for entry in entries]
        rows = await asyncio.gather(*(c.command(b"XPENDING", c.key, c.group, i, i, b"1") for i in ids))
        for (entry_id, fields), row in zip(entries, rows, strict=True):
            if not row or row[0][1] != c.me:
                continue  # acked or taken by another consumer since
            if entry_id.decode() in c.active:
                continue  # our own, still running (its renewals failed while Redis was away): it will answer
            deliveries = int(row[0][3])
            c.stats.reclaimed += 1
            if entry_payload(fields) is None:  # Redis 6.2 reports trimmed entries this way
                self._trimmed(1, [entry_id.decode()])
                c.ack(entry_id.decode())
                continue
            if deliveries > self._max_deliveries:
                await self._dead_letter(entry_id, fields, deliveries, received)
                continue
            parsed = c.parse(entry_id, fields, received)
            if parsed is None:
                continue
            request, reply_channel = parsed
            log.warning(
                "%s: reclaimed %s (delivery %d): its consumer went silent for %.1fs",
                c.consumer,
                request.request_id,
                deliveries,
                c.visibility,
                extra={"requestId": request.request_id, "action": request.action},
            )
            if request.request_id is not None:
                stored = await c.command(b"GET", self._stored_prefix + request.request_id.encode())
                if isinstance(stored, bytes):
                    self._answer_from_store(entry_id.decode(), request.request_id, reply_channel, stored)
                    continue
            c.run(request, reply_channel)

    def _answer_from_store(self, stream_id: str, request_id: str, reply_channel: str, stored: bytes) -> None:
        """It ran already (its consumer died before the XACK): send that reply, not run it."""
        c = self.c
        stats = c._responder.stats
        try:
            c._responder.publisher.publish_nowait(reply_channel, stored)
        except ConnectionLost:
            stats.lost_replies += 1
            stats.dropped += 1
            return  # still pending: the next redelivery tries again
        stats.replied += 1
        c.stats.answered_from_store += 1
        log.info("%s: %s answered from its stored reply, not run again", c.consumer, request_id, extra={"requestId": request_id})
        c.ack(stream_id)

    async def _dead_letter(self, entry_id: bytes, fields: list[bytes], deliveries: int, received: float) -> None:
        c = self.c
        if await c.command(b"XACK", c.key, c.group, entry_id) != 1:
            return  # another consumer answered or dead-lettered it meanwhile
        c.stats.acked += 1
        reason = f"delivered {deliveries} times without an answer (RPC_STREAM_MAX_DELIVERIES={self._max_deliveries})"
        payload = entry_payload(fields) or b""
        try:
            await c.command(
                b"XADD",
                self._dead,
                b"MAXLEN",
                b"~",
                self._maxlen,
                b"*",
                b"r",
                payload,
                b"id",
                entry_id,
                b"deliveries",
                str(deliveries).encode(),
                b"reason",
                reason.encode(),
                b"consumer",
                c.me,
                b"at",
                str(int(time.time() * 1000)).encode(),
            )
        except StreamCommandError as exc:
            log.error("%s: could not write the dead letter of %s: %s", c.consumer, entry_id.decode(), exc)
        c.stats.dead_lettered += 1
        parsed = c.parse(entry_id, fields, received)  # counts it received; bad input was acked already
        if parsed is None:
            return
        request, reply_channel = parsed
        log.error(
            "%s: %s dead-lettered to %s: %s",
            c.consumer,
            request.request_id,
            c.settings.dead_letter_key,
            reason,
            extra={"requestId": request.request_id, "action": request.action},
        )
        if request.request_id is None:
            c._responder.stats.dropped += 1
            return
        c._responder._send_error(request.action, request.request_id, reply_channel, DeadLettered(reason))
