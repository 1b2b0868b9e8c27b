"""Long-lived Redis connections with a lean hot path, reconnecting on their own.

redis-py opens each connection (DSN parsing, TLS, AUTH/ACL, SELECT, client name); after the
handshake we take the transport over with a small ``asyncio.Protocol``: hiredis parses every
message a read returns, in ``data_received``, with no task wake-up per read, and all writes
of one event-loop tick leave in one ``write()``. That is what lets one Python process do
tens of thousands of calls a second (see bench/); a task and a parser round per message, as
``PubSub.listen()`` costs, does not.

A link reconnects forever with capped exponential backoff. While it is down it is not
``ready``; whatever was waiting on it fails with ``ConnectionLost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from time import perf_counter
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import RedisError

from .errors import ConnectionLost
from .ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_bad_input_log = RateLimitedLog(log)

READ_SIZE = 1 << 16
HEADER_CACHE_SIZE = 1024  # channels whose PUBLISH header a publisher keeps ready
BACKOFF_INITIAL = 0.05
BACKOFF_MAX = 2.0


def connection_pool(redis_url: str, name: str) -> ConnectionPool:
    # RESP2 keeps pub/sub messages plain arrays; keepalive catches dead peers the OS notices.
    return ConnectionPool.from_url(redis_url, protocol=2, socket_connect_timeout=3, socket_keepalive=True, client_name=name)


def link_options(settings: Any) -> dict[str, Any]:
    """The keyword arguments every Link takes from Settings (timeouts, buffer bounds)."""
    return {"health_check_interval": settings.health_check_interval}


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class Link:
    """One connection, its read loop and its reconnect loop. Subclasses handle replies."""

    def __init__(self, redis_url: str, name: str, health_check_interval: float = 15.0) -> None:
        self.name = name
        self._pool = connection_pool(redis_url, name)
        self._health_check_interval = health_check_interval
        self.ready = asyncio.Event()
        self._transport: asyncio.WriteTransport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._task: asyncio.Task[None] | None = None
        self._disconnect_callbacks: list[Callable[[], None]] = []
        self._got_data = False  # since the watchdog last looked
        # perf_counter() when the current read arrived: one clock read per socket read, shared
        # by every message in it (the metrics' timestamps).
        self.read_at = 0.0
        self.reading = False  # True while the messages of one read are being handled
        # Called after each read's messages (the responder bins that read's latencies at once).
        self.on_read_end: Callable[[], None] | None = None
        # Plain ints for the metrics (pubsub_rpc.metrics reads them at scrape time).
        self.connects = 0
        self.liveness_failures: dict[str, int] = {"ping": 0, "probe": 0}

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"link:{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._pool.disconnect()

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        self._disconnect_callbacks.append(callback)

    @property
    def reconnects(self) -> int:
        return max(self.connects - 1, 0)

    def drop(self, reason: str) -> None:
        """Abort the connection (it reconnects and, for a subscriber, resubscribes), counted
        as a liveness failure: for a connection that is up but no longer does its job."""
        self.liveness_failures[reason] = self.liveness_failures.get(reason, 0) + 1
        if self._transport is not None:
            self._transport.abort()

    async def wait_ready(self, timeout: float | None) -> None:
        """Wait until connected (and subscribed); ``None`` waits as long as it takes."""
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            raise ConnectionLost(
                f"{self.name}: not ready within {timeout}s (Redis unreachable, or a subscription refused: see the log)"
            ) from None

    async def _run(self) -> None:
        delay = BACKOFF_INITIAL
        while True:
            connection: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await connection.connect()  # type: ignore[no-untyped-call]
            except (OSError, RedisError) as exc:
                log.warning("%s: cannot connect to Redis (%s); retrying in %.2fs", self.name, exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_INITIAL
            self.connects += 1
            try:
                # redis-py keeps its StreamWriter private; after the handshake its transport is ours.
                await self._serve(connection._writer.transport)  # type: ignore[union-attr,arg-type]
            except (OSError, RedisError, hiredis.ProtocolError, EOFError) as exc:
                log.warning("%s: connection to Redis lost (%s); reconnecting", self.name, str(exc) or type(exc).__name__)
            finally:
                self._disconnected()
                with contextlib.suppress(Exception):
                    await connection.disconnect(nowait=True)

    async def _serve(self, transport: asyncio.Transport) -> None:
        protocol = _LinkProtocol(self, asyncio.get_running_loop().create_future())
        transport.set_protocol(protocol)  # from here on, bytes go to our parser, not redis-py's
        self._transport = transport
        self._got_data = True
        self._on_connected()
        watchdog = asyncio.create_task(self._watchdog(transport), name=f"watchdog:{self.name}")
        try:
            await protocol.closed
        finally:
            watchdog.cancel()
            transport.abort()

    async def _watchdog(self, transport: asyncio.WriteTransport) -> None:
        """PING when idle; a connection silent for two intervals is half-open, so drop it."""
        while True:
            await asyncio.sleep(self._health_check_interval)
            if self._got_data:
                self._got_data = False
                continue
            self._send_ping()
            await asyncio.sleep(self._health_check_interval)
            if not self._got_data:
                log.warning("%s: no answer to PING; dropping the connection", self.name)
                self.liveness_failures["ping"] += 1
                transport.abort()
                return

    def _disconnected(self) -> None:
        self.ready.clear()
        self._transport = None
        self._out.clear()
        for callback in self._disconnect_callbacks:
            callback()

    # -- writing ---------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Queue bytes for the socket; everything queued in one loop tick goes out together."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._transport is not None and self._out:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    # -- for subclasses --------------------------------------------------------------

    def _on_connected(self) -> None:
        raise NotImplementedError

    def _on_reply(self, reply: object) -> None:
        raise NotImplementedError

    def _send_ping(self) -> None:
        raise NotImplementedError


class _LinkProtocol(asyncio.Protocol):
    """Feeds a link's bytes to hiredis and hands over each complete reply, synchronously."""

    def __init__(self, link: Link, closed: asyncio.Future[None]) -> None:
        self._link = link
        self._parser = hiredis.Reader()
        self.closed = closed

    def data_received(self, data: bytes) -> None:
        link = self._link
        link._got_data = True
        link.read_at = perf_counter()
        link.reading = True
        try:
            self._parser.feed(data)
            reply = self._parser.gets()
            while reply is not False:
                link._on_reply(reply)
                reply = self._parser.gets()
        except hiredis.ProtocolError as exc:
            self._close(exc)
        finally:
            link.reading = False
        if link.on_read_end is not None:
            link.on_read_end()

    def eof_received(self) -> bool:
        self._close(EOFError("closed by the server"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._close(exc or EOFError("connection closed"))

    def _close(self, exc: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_exception(exc)


class _RawReply:
    """Marks an ``execute`` waiter: its callback gets the raw reply, error replies included."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[Any, Any], None]) -> None:
        self.callback = callback


class Publisher(Link):
    """Pipelined PUBLISH: many in flight on one connection, answers matched in order."""

    def __init__(self, redis_url: str, name: str, health_check_interval: float = 15.0) -> None:
        super().__init__(redis_url, name, health_check_interval)
        # One entry per command sent, answered in order: None (nobody waits), a Future for
        # the receiver count, or (callback, argument) called with the count or the error.
        self._waiters: deque[Any] = deque()
        # channel -> encoded PUBLISH header. Bounded: reply channels come and go with
        # callers (and attackers can name thousands), so it is emptied when full; the
        # channels still in use are back in it after their next message.
        self._headers: dict[str, bytes] = {}

    def publish(self, channel: str, payload: bytes) -> asyncio.Future[int]:
        """Send PUBLISH now; the future gets the receiver count. Raises ConnectionLost if down."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._send(channel, payload, future)
        return future

    def publish_nowait(self, channel: str, payload: bytes) -> None:
        """PUBLISH without wanting the count (replies, pushes). Raises ConnectionLost if down."""
        self._send(channel, payload, None)

    def publish_request(
        self, channel: str, payload: bytes, on_count: Callable[[Any, int | Exception], None], argument: Any
    ) -> None:
        """PUBLISH, then ``on_count(argument, receivers_or_error)`` when Redis answers.
        Cheaper than a count future plus a done-callback: this runs once per call."""
        self._send(channel, payload, (on_count, argument))

    def execute(self, on_reply: Callable[[Any, Any], None], argument: Any, *parts: bytes) -> None:
        """Send any command, pipelined with the PUBLISHes; ``on_reply(argument, reply)``
        gets its reply (a ``hiredis.ReplyError`` for an error reply) or ConnectionLost.
        Raises ConnectionLost if down. For claims, registry and stream commands."""
        if self._transport is None:
            raise ConnectionLost(f"{self.name}: not connected to Redis")
        self._waiters.append((_RawReply(on_reply), argument))
        self._write(_command(*parts))

    async def drain(self) -> None:
        """Wait until every PUBLISH sent so far has been answered (or the link dropped)."""
        if self._waiters and self.ready.is_set():
            marker: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._waiters.append(marker)
            self._write(_command(b"PING"))
            with contextlib.suppress(ConnectionLost):
                await marker

    def _send(self, channel: str, payload: bytes, future: Any) -> None:
        if self._transport is None:
            raise ConnectionLost(f"{self.name}: not connected to Redis")
        header = self._headers.get(channel)
        if header is None:
            encoded = channel.encode()
            header = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(encoded), encoded)
            if len(self._headers) >= HEADER_CACHE_SIZE:
                self._headers.clear()
            self._headers[channel] = header
        self._waiters.append(future)
        self._write(b"%s$%d\r\n%s\r\n" % (header, len(payload), payload))

    def _on_connected(self) -> None:
        self.ready.set()

    def _send_ping(self) -> None:
        self._waiters.append(None)
        self._write(_command(b"PING"))

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
            if type(waiter) is tuple:
                callback = waiter[0].callback if type(waiter[0]) is _RawReply else waiter[0]
                callback(waiter[1], lost)
            elif waiter is not None and not waiter.done():
                waiter.set_exception(lost)


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
        health_check_interval: float = 15.0,
        max_channel_bytes: int = 0,
        on_bad_channel: BadChannelHandler | None = None,
        probe_channel: str = "",
    ) -> None:
        super().__init__(redis_url, name, health_check_interval)
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
        # Side channels (add_side_channel): name -> callback, each SUBSCRIBEd in a command of
        # its own, before the patterns; their messages bypass the handler.
        self._side: dict[bytes, Callable[[bytes], None]] = {}
        # Awaited on every (re)connect after the channels are confirmed and before PSUBSCRIBE
        # is sent (pubsub_rpc.registry: a responder announces its join there, so its peers
        # hear it before any request it can hear). Raising drops the connection.
        self.before_patterns: Callable[[], Awaitable[None]] | None = None
        self._held: list[bytes] = []  # patterns waiting for before_patterns
        self._gate: asyncio.Task[None] | None = None
        self.on_disconnect(self._cancel_gate)

    def add_side_channel(self, channel: str, callback: Callable[[bytes], None]) -> None:
        """Also SUBSCRIBE ``channel`` (a command of its own: an ACL may grant it in a selector),
        confirmed before the patterns are sent; its messages go to ``callback(data)``."""
        self._side[channel.encode()] = callback

    def on_subscribed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time every subscription is confirmed (connect, reconnect)."""
        self._subscribed_callbacks.append(callback)

    def _on_connected(self) -> None:
        self._held = self._patterns if self.before_patterns is not None else []
        patterns = [] if self._held else self._patterns
        self._pending_confirmations = len(self._channels) + len(patterns) + len(self._side) + (1 if self._probe else 0)
        if self._channels:
            self._write(_command(b"SUBSCRIBE", *self._channels))
        for side in self._side:
            self._write(_command(b"SUBSCRIBE", side))
        if self._probe:
            self._write(_command(b"SUBSCRIBE", self._probe))
        if patterns:
            self._write(_command(b"PSUBSCRIBE", *patterns))
        if not self._pending_confirmations:
            self._confirmed()

    def _confirmed(self) -> None:
        """Every subscription sent so far is confirmed: open the gate, or be ready."""
        if self._held:
            self._gate = asyncio.create_task(self._open_gate(), name=f"gate:{self.name}")
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
        self._write(_command(b"PSUBSCRIBE", *patterns))

    def _cancel_gate(self) -> None:
        if self._gate is not None:
            self._gate.cancel()
            self._gate = None

    def _send_ping(self) -> None:
        self._write(_command(b"PING"))

    def _on_reply(self, reply: object) -> None:
        if not isinstance(reply, list):
            if isinstance(reply, hiredis.ReplyError):
                # e.g. an ACL that forbids the channel: say so loudly, stay not-ready.
                log.error("%s: Redis refused a subscription: %s", self.name, reply)
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
