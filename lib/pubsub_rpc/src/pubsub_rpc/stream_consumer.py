"""Streams mode, the responder's side: entries in, replies stored, published, then acked.

At least once: an entry leaves the group's pending list (XACK) only after its reply is
out, so a consumer that dies or freezes anywhere before that leaves it pending, and
another consumer reclaims it after RPC_STREAM_VISIBILITY (``stream_reclaim``). A reply is
first stored under ``<stored_reply_prefix><requestId>`` (``SET NX PX``), then published,
then the entry acked: a redelivered entry whose reply was stored is answered from the
store without running again (idempotency by requestId), and of two consumers that both
ran one entry (a frozen one woke up) only the first to store publishes. The three
commands are pipelined; only an entry that may have run elsewhere waits for the store's
verdict before publishing.

While an entry's handler runs, its consumer renews its claim every visibility/3 (XCLAIM
JUSTID, only for entries still its own), so a slow but live handler is never stolen and
the visibility timeout can be seconds. Pub/sub requests keep flowing next to this
unchanged (the responder still PSUBSCRIBEs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import hiredis

from . import protocol
from .errors import Backpressure, ConnectionLost, InvalidRequest
from .link import Publisher, link_options
from .protocol import MalformedMessage, Request
from .ratelog import RateLimitedLog
from .stream_reader import Entry, StreamReader

if TYPE_CHECKING:
    from .responder import Responder

log = logging.getLogger(__name__)

SUPERVISOR_RESTART = 1.0  # seconds before a crashed stream task starts again


class StreamCommandError(Exception):
    """Redis answered a stream command with an error (NOPERM, NOGROUP, ...)."""


@dataclass(slots=True)
class StreamStats:
    """Stream entry events (``rpc_server_stream_entries_total{event}``); each entry taken
    is also counted once in ResponderStats.received with one outcome there."""

    read: int = 0  # entries delivered by XREADGROUP
    acked: int = 0  # XACKs that removed an entry from the pending list
    reclaimed: int = 0  # entries taken over from a silent consumer (XAUTOCLAIM)
    answered_from_store: int = 0  # redelivered entries answered with their stored reply, not run
    duplicate_replies: int = 0  # replies not published: another consumer's reply was stored first
    dead_lettered: int = 0  # moved to the dead-letter stream after too many deliveries
    trimmed: int = 0  # pending entries MAXLEN trimmed away before anyone answered them: lost
    frozen: int = 0  # read too late to start (this process was frozen): left pending
    released: int = 0  # unfinished at shutdown: left pending for another consumer


EVENTS = tuple(StreamStats.__slots__)


def entry_payload(fields: list[bytes] | None) -> bytes | None:
    """The request of an entry (field ``r``), or None (trimmed away, or not ours)."""
    if not isinstance(fields, list):
        return None
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"r" and isinstance(fields[i + 1], bytes):
            return fields[i + 1]
    return None


class StreamConsumer:
    """One responder's membership in the consumer group: reader, replies, claim renewal."""

    def __init__(self, responder: Responder, publisher: Publisher) -> None:
        settings = responder.settings
        self.settings = settings
        self._responder = responder
        self._publisher = publisher
        self.consumer = f"{settings.service}.{secrets.token_hex(6)}"
        self.stats = StreamStats()
        self.key = settings.stream_key.encode()
        self.group = settings.stream_group.encode()
        self.me = self.consumer.encode()
        self.channel = settings.request_channel  # stream requests "arrive on" it (reply rules, spans)
        self._stored_prefix = settings.stored_reply_prefix.encode()
        self._ttl_ms = str(max(int(settings.idempotency_ttl * 1000), 1)).encode()
        self.visibility = settings.stream_visibility
        block_ms = min(1000, int(settings.stream_visibility * 1000 / 3), int(settings.liveness_timeout * 1000 / 3))
        self.reader = StreamReader(
            settings.redis_dsn,
            f"{responder.name}-stream",
            stream_key=settings.stream_key,
            group=settings.stream_group,
            consumer=self.consumer,
            free_slots=self.free_slots,
            on_entries=self._on_entries,
            block_ms=block_ms,
            frozen_after=max(block_ms, 1) / 1000 + settings.stream_visibility / 2,
            **link_options(settings),
        )
        # stream id -> its request, from hand-over to the responder until acked or given up:
        # the entries whose claim is renewed while they run.
        self.active: dict[str, Request] = {}
        # Of those, the ones read fresh (not reclaimed): time.monotonic() until which their
        # reply may go out without waiting for the store's verdict. Redis delivered them
        # after the read was sent, so until ``sent + visibility/2`` none has been idle long
        # enough for anyone to reclaim it: no other reply can compete. Reclaimed entries
        # (their first consumer may still be running them) and later replies wait.
        self._fast_until: dict[str, float] = {}
        self._fast_window = settings.stream_visibility / 2
        self._acks: list[bytes] = []  # stream ids to XACK together at the end of this tick
        # Replies refused while the publisher was backpressured: sent once it drains (as
        # many as the entries this consumer holds: it reads no more meanwhile).
        self._deferred: list[tuple[str, bytes, Request]] = []
        publisher.on_backpressure(self._on_backpressure)
        self._released = False
        self._tasks: list[asyncio.Task[None]] = []
        self._log = RateLimitedLog(log)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, connect_timeout: float | None, reclaim: Callable[[], Awaitable[None]]) -> None:
        """Join the group (the reader creates it) and start the supervised reclaim loop
        (``stream_reclaim.Reclaimer.run``) and claim renewal."""
        self._released = False
        self.reader.paused = False
        self.reader.start()
        await self.reader.wait_ready(connect_timeout)
        self._tasks = [
            asyncio.create_task(self._supervise("reclaim", reclaim), name=f"stream-reclaim:{self.consumer}"),
            asyncio.create_task(self._supervise("renew", self._renew_loop), name=f"stream-renew:{self.consumer}"),
        ]
        log.info(
            "%s: consuming %s as %s in group %s",
            self._responder.name,
            self.settings.stream_key,
            self.consumer,
            self.settings.stream_group,
        )

    async def stop_reading(self) -> None:
        """No new entries (reads, reclaims); claims of running ones are still renewed."""
        self.reader.paused = True
        await self._cancel(self._tasks[:1])
        await self.reader.close()

    async def release(self) -> None:
        """Stop answering: whatever is unfinished stays pending, for another consumer."""
        self._released = True
        await self._cancel(self._tasks)
        self._tasks = []

    async def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _supervise(self, what: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` for ever: a crash is logged and the task restarted, never silent."""
        while True:
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: stream %s task failed; restarting it", self._responder.name, what)
                await asyncio.sleep(SUPERVISOR_RESTART)

    # -- entries in ----------------------------------------------------------------------

    def free_slots(self) -> int:
        """Entries worth taking now: free handler slots (a backlog means none)."""
        return self._responder.free_slots()

    def _on_entries(self, entries: list[Entry], frozen: bool) -> None:
        received = self.reader.read_at
        self.stats.read += len(entries)
        if self.reader.paused:  # stopping: a read that was already out; leave them to the others
            self.stats.released += len(entries)
            self.skip(len(entries))
            return
        if frozen:
            self.stats.frozen += len(entries)
            self.skip(len(entries))
            self._log.warning(
                "frozen",
                "%s: %d stream entries read %.1fs+ after asking: this process was frozen; left pending for reclaim",
                self._responder.name,
                len(entries),
                self.visibility / 2,
            )
            return
        fast_until = self.reader.read_sent + self._fast_window
        for entry_id, fields in entries:
            parsed = self.parse(entry_id, fields, received)
            if parsed is not None:
                self.run(*parsed, fast_until=fast_until)

    def skip(self, n: int) -> None:
        """``n`` entries taken but left pending for another consumer (an outcome: dropped)."""
        stats = self._responder.stats
        stats.received += n
        stats.dropped += n
        stats.released += n

    def parse(self, entry_id: bytes, fields: list[bytes] | None, received: float) -> tuple[Request, str] | None:
        """The request of an entry and its reply channel (``""``: a notification), or None
        once the entry has been dealt with (malformed, invalid, refused reply channel: each
        counted, answered where it can be, and acked: bad input never comes back)."""
        responder = self._responder
        stats = responder.stats
        stats.received += 1
        payload = entry_payload(fields)
        try:
            if payload is None:
                raise MalformedMessage("stream entry without an `r` field")
            message = protocol.decode(payload, self.settings.max_message_bytes)
        except MalformedMessage as exc:
            stats.malformed += 1
            stats.dropped += 1
            self._log.warning("malformed", "%s: dropped a malformed stream entry %s: %s", responder.name, entry_id.decode(), exc)
            self.ack(entry_id.decode())
            return None
        try:
            request = protocol.parse_request(message)
        except InvalidRequest as exc:
            responder._on_invalid(self.channel, message, exc, received)
            self.ack(entry_id.decode())
            return None
        request.received = received
        request.stream_id = entry_id.decode()
        if request.request_id is None:
            return request, ""
        reply_channel = responder.channels.reply_channel(request.reply_to, self.channel)
        if reply_channel is None:
            responder._reject_reply_channel(self.channel, request.request_id, request.reply_to, request)
            self.ack(request.stream_id)
            return None
        return request, reply_channel

    def run(self, request: Request, reply_channel: str, fast_until: float = 0.0) -> None:
        """Hand a parsed entry to the responder; ``fast_until``: see ``_fast_until`` (0 for
        a reclaimed entry, which another consumer may still be running)."""
        assert request.stream_id is not None
        self.active[request.stream_id] = request
        if fast_until:
            self._fast_until[request.stream_id] = fast_until
        self._responder._accept(request, self.channel, reply_channel, 0)

    def _on_backpressure(self, on: bool) -> None:
        self.reader.hold(on)
        if not on:
            deferred, self._deferred = self._deferred, []
            for channel, payload, request in deferred:
                try:
                    self.reply(channel, payload, request)
                except ConnectionLost:
                    pass  # forgotten: it stays pending and is redelivered
            if self._acks:
                self._send_acks()

    def _forget(self, stream_id: str) -> None:
        self.active.pop(stream_id, None)
        self._fast_until.pop(stream_id, None)

    # -- replies out -----------------------------------------------------------------------

    def reply(self, channel: str, payload: bytes, request: Request) -> bool:
        """Store the reply (NX), publish it, XACK the entry, in that order on one pipeline.
        An entry that may have run elsewhere too (reclaimed, or held past half the
        visibility timeout) publishes only once the store said it was first. False: not
        sent (the responder is stopping; the entry stays pending). Raises ConnectionLost."""
        stream_id = request.stream_id
        request_id = request.request_id
        assert stream_id is not None and request_id is not None
        if self._released:
            self._forget(stream_id)
            self.stats.released += 1
            self._responder.stats.dropped += 1
            self._responder.stats.released += 1
            return False
        store = (b"SET", self._stored_prefix + request_id.encode(), payload, b"PX", self._ttl_ms, b"NX")
        try:
            if time.monotonic() < self._fast_until.get(stream_id, 0.0):
                self._publisher.execute(self._stored_first, request_id, *store)
                self._publisher.publish_nowait(channel, payload)
                self.ack(stream_id)
            else:
                self._publisher.execute(self._stored, (channel, payload, stream_id, request_id), *store)
        except Backpressure:
            self._deferred.append((channel, payload, request))  # sent when the publisher drains
        except ConnectionLost:
            self._forget(stream_id)  # not renewed any more: it will be redelivered
            raise
        return True

    def _stored_first(self, request_id: str, reply: Any) -> None:
        """The store's verdict on a reply already sent (the fast path)."""
        if reply is None:  # only if this process froze between its check and the write
            self.stats.duplicate_replies += 1
            log.warning("%s: %s was answered twice", self._responder.name, request_id, extra={"requestId": request_id})
        elif isinstance(reply, hiredis.ReplyError):
            self._log.log(
                logging.ERROR, "store", "%s: could not store the reply to %s: %s", self._responder.name, request_id, reply
            )

    def _stored(self, argument: tuple[str, bytes, str, str], reply: Any) -> None:
        channel, payload, stream_id, request_id = argument
        if isinstance(reply, ConnectionLost):
            self._forget(stream_id)  # pending, unanswered: redelivered, run again
            self._log.warning(
                "lost", "%s: reply to %s lost: Redis connection down; it stays pending", self._responder.name, request_id
            )
            return
        if reply is None:  # SET NX refused: another consumer ran it too, and answered first
            self._forget(stream_id)
            self.stats.duplicate_replies += 1
            log.warning(
                "%s: %s ran here and elsewhere (this consumer was frozen past the visibility timeout); "
                "the other reply was first, this one is not sent",
                self._responder.name,
                request_id,
                extra={"requestId": request_id},
            )
            return
        if isinstance(reply, hiredis.ReplyError):  # e.g. OOM: answer anyway, just without the store
            self._log.log(
                logging.ERROR, "store", "%s: could not store the reply to %s: %s", self._responder.name, request_id, reply
            )
        try:
            self._publisher.publish_nowait(channel, payload)
        except ConnectionLost:
            self._forget(stream_id)  # stored but not sent: a redelivery sends the stored one
            return
        self.ack(stream_id)

    def ack(self, stream_id: str) -> None:
        """XACK the entry (answered, expired, or bad input): one XACK per loop tick for
        every entry done in it, queued behind their replies on the same connection."""
        if not self._acks and not self._publisher.backpressured:
            asyncio.get_running_loop().call_soon(self._send_acks)
        self._acks.append(stream_id.encode())

    def _send_acks(self) -> None:
        if self._publisher.backpressured:
            return  # sent when it drains (_on_backpressure)
        ids, self._acks = self._acks, []
        try:
            self._publisher.execute(self._acked, ids, b"XACK", self.key, self.group, *ids)
        except Backpressure:
            self._acks[:0] = ids
        except ConnectionLost:
            self._acked(ids, None)  # they stay pending: redelivered, answered from the store

    def _acked(self, ids: list[bytes], reply: Any) -> None:
        for stream_id in ids:
            self._forget(stream_id.decode())
        if isinstance(reply, int):
            self.stats.acked += reply

    def done(self, request: Request) -> None:
        """A stream request ended without a reply to send (expired, or a notification)."""
        if request.stream_id is not None:
            self.ack(request.stream_id)

    # -- claim renewal ---------------------------------------------------------------------

    async def command(self, *parts: bytes) -> Any:
        """One command on the publisher's pipeline, awaited (bounded). Raises ConnectionLost,
        TimeoutError, or StreamCommandError for an error reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._publisher.execute(_resolve, future, *parts)
        async with asyncio.timeout(max(self.visibility, self.settings.liveness_timeout) * 2):
            reply = await future
        if isinstance(reply, ConnectionLost):
            raise reply
        if isinstance(reply, hiredis.ReplyError):
            raise StreamCommandError(str(reply))
        return reply

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.visibility / 3)
            if self.active:
                try:
                    await self.renew()
                except (ConnectionLost, Backpressure, TimeoutError, StreamCommandError) as exc:
                    self._log.warning("renew", "%s: could not renew stream claims: %s", self._responder.name, exc)

    async def renew(self) -> None:
        """Reset the idle time of the entries this consumer still owns and works on, so no
        one reclaims them; entries another consumer took meanwhile (we were frozen) are left
        alone: XCLAIM would take them back."""
        ids = [stream_id.encode() for stream_id in list(self.active)]
        pending = await asyncio.gather(*(self.command(b"XPENDING", self.key, self.group, i, i, b"1") for i in ids))
        mine = [i for i, rows in zip(ids, pending, strict=True) if rows and rows[0][1] == self.me]
        if mine:
            await self.command(b"XCLAIM", self.key, self.group, self.me, b"0", *mine, b"JUSTID")

    # -- metrics -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self.active)


def _resolve(future: asyncio.Future[Any], reply: Any) -> None:
    if not future.done():
        future.set_result(reply)
