"""One long-lived Redis connection that reconnects on its own, whatever happens to it.

redis-py opens each connection (DSN parsing, TLS, AUTH/ACL, SELECT, client name); the whole
handshake is bounded by REDIS_CONNECT_TIMEOUT, since a frozen Redis accepts TCP (the kernel
does that) and then never answers. After the handshake we take the transport over with a
small ``asyncio.Protocol``: hiredis parses every message a read returns, in
``data_received``, with no task wake-up per read (``PubSub.listen()`` costs a task and a
parser round per message; this is what lets one process do tens of thousands of calls a
second, see bench/).

The link task reconnects forever with capped, jittered exponential backoff (reset only by
a connection that became ready, so a refused subscription backs off too). While it is down
the link is not ``ready`` and whatever waited on it fails with ``ConnectionLost``. The task
is supervised twice: an unexpected exception while connected is logged with its traceback
and the loop reconnects; should the task itself end, a done-callback logs it and starts it
again. Only ``close()`` stops it.

Where to connect is REDIS_URL's host, unless a ``Resolver`` picks the node on each connect
and vouches for it after the handshake (Sentinel mode: pubsub_rpc.sentinel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

import hiredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from .errors import ConnectionLost
from .liveness import Liveness
from .ratelog import RateLimitedLog
from .writes import Writes

log = logging.getLogger("pubsub_rpc.link")  # the link layer logs under one name

BACKOFF_INITIAL = 0.05
BACKOFF_MAX = 1.0  # a Redis back after an outage is found within about a second
CLOSE_TIMEOUT = 2.0  # seconds close() and a connection's clean-up may take
GATE_LOG_INTERVAL = 30.0
CONNECT_LOG_INTERVAL = 30.0  # one "cannot connect" line per link per outage and interval


class Resolver(Protocol):
    """Where a link connects, when that is not fixed (Sentinel mode, pubsub_rpc.sentinel):
    ``connect`` picks the address, runs the redis-py handshake and vouches for the node,
    all within REDIS_CONNECT_TIMEOUT; raising a RedisError refuses it, with backoff."""

    def attach(self, link: Link) -> None: ...

    async def detach(self, link: Link) -> None: ...

    async def connect(self, link: Link, connection: AbstractConnection) -> None: ...


class LinkDropped(Exception):
    """We closed the connection on purpose (dead, deaf, refused, ...); the reason says why."""


# What a lost or failing connection raises; anything else is a bug, logged with a traceback.
LINK_ERRORS = (OSError, RedisError, hiredis.ProtocolError, EOFError, LinkDropped)


def connection_pool(redis_url: str, name: str, connect_timeout: float) -> ConnectionPool:
    # RESP2 keeps pub/sub messages plain arrays; keepalive catches dead peers the OS notices.
    # socket_timeout bounds each handshake read (after it, the transport is ours).
    return ConnectionPool.from_url(
        redis_url,
        protocol=2,
        socket_connect_timeout=connect_timeout,
        socket_timeout=connect_timeout,
        socket_keepalive=True,
        client_name=name,
    )


class Link(Writes):
    """One connection, its read loop and its reconnect loop. Subclasses handle replies."""

    def __init__(
        self,
        redis_url: str,
        name: str,
        *,
        liveness_timeout: float = 3.0,
        connect_timeout: float = 3.0,
        max_write_buffer: int = 8_388_608,
        resolver: Resolver | None = None,
    ) -> None:
        self.name = name
        self._resolver = resolver
        self._pool = connection_pool(redis_url, name, connect_timeout)
        self.connect_timeout = connect_timeout
        self._liveness = Liveness(liveness_timeout)
        self.ready = asyncio.Event()
        self._transport: asyncio.Transport | None = None
        self._protocol: _LinkProtocol | None = None
        self._init_writes(max_write_buffer)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._disconnect_callbacks: list[Callable[[], None]] = []
        # Connect only while this is set (a responder's subscriber waits for its publisher).
        self.gate: asyncio.Event | None = None
        self._reading_paused = False  # asked by pause_reading(); kept across reconnects
        # perf_counter() when the current read arrived: one clock read per socket read, shared
        # by every message in it (the metrics' timestamps, and liveness).
        self.read_at = 0.0
        self.reading = False  # True while the messages of one read are being handled
        # Called after each read's messages (the responder bins that read's latencies at once).
        self.on_read_end: Callable[[], None] | None = None
        # Plain ints for the metrics (pubsub_rpc.metrics reads them at scrape time).
        self.connects = 0
        self.connect_failures = 0
        self.task_restarts = 0
        self.liveness_failures: dict[str, int] = {"ping": 0, "probe": 0}
        self._connect_log = RateLimitedLog(log, interval=CONNECT_LOG_INTERVAL)

    @property
    def liveness_timeout(self) -> float:
        return self._liveness.timeout

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._closing = False
        if self._resolver is not None:
            self._resolver.attach(self)
        self._task = asyncio.create_task(self._run(), name=f"link:{self.name}")
        self._task.add_done_callback(self._task_ended)

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("%s: link task failed while closing", self.name, exc_info=task.exception())
        if self._resolver is not None:
            await self._resolver.detach(self)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
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
        self.disconnect(f"dropped ({reason})")

    def disconnect(self, why: str) -> None:
        """Abort the current connection, if any; the link task reconnects."""
        if self._protocol is not None:
            self._protocol.close(LinkDropped(why))
        if self._transport is not None:
            self._transport.abort()

    def pause_reading(self) -> None:
        """Stop reading from Redis (it buffers for us) until ``resume_reading()``; liveness
        does not count the silence meanwhile."""
        self._reading_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        self._liveness.restart(perf_counter())
        if self._transport is not None:
            self._transport.resume_reading()

    async def wait_ready(self, timeout: float | None) -> None:
        """Wait until connected (and subscribed); ``None`` waits as long as it takes."""
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            raise ConnectionLost(
                f"{self.name}: not ready within {timeout}s (Redis unreachable, or a subscription refused: see the log)"
            ) from None

    # -- the link task ---------------------------------------------------------------

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """The supervisor: the link task only ends through close(); otherwise restart it."""
        if self._closing or task is not self._task:
            return
        if task.cancelled():  # only close() or the event loop's own shutdown cancel it
            log.info("%s: link task cancelled; not restarting it", self.name)
            return
        self.task_restarts += 1
        log.error("%s: link task ended unexpectedly; restarting it", self.name, exc_info=task.exception())
        try:
            self._disconnected()
        except Exception:
            log.exception("%s: clean-up after the link task failed too", self.name)
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to restart
            # Not at once: a bug that kills it at every start must not spin.
            asyncio.get_running_loop().call_later(BACKOFF_MAX, self._restart)

    def _restart(self) -> None:
        if not self._closing:
            self.start()

    async def _run(self) -> None:
        delay = BACKOFF_INITIAL
        while True:
            await self._wait_for_gate()
            connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            transport = await self._connect(connection)
            if transport is None:
                await _back_off(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            became_ready = False
            try:
                if self.gate is not None and not self.gate.is_set():
                    raise LinkDropped("the link it waits for went down while connecting")
                self.connects += 1
                await self._serve(transport)
            except LINK_ERRORS as exc:
                why = str(exc) or type(exc).__name__
                if self.ready.is_set():  # an outage starts: always said
                    log.warning("%s: connection to Redis lost (%s); reconnecting", self.name, why)
                else:  # one more failed attempt of an outage (refused, not confirmed): rate-limited
                    self._connect_log.warning(
                        "unready", "%s: connection to Redis lost before ready (%s); retrying", self.name, why
                    )
            except Exception:
                log.exception("%s: link failed unexpectedly; reconnecting", self.name)
            finally:
                became_ready = self.ready.is_set()
                transport.abort()
                try:
                    self._disconnected()
                finally:
                    await _discard(connection)
            if became_ready:
                delay = BACKOFF_INITIAL
                self._connect_log = RateLimitedLog(log, interval=CONNECT_LOG_INTERVAL)  # this outage logs at once
            else:  # dropped before it was of use (refused, not confirmed): do not hammer Redis
                await _back_off(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _wait_for_gate(self) -> None:
        gate = self.gate
        while gate is not None and not gate.is_set():
            try:
                async with asyncio.timeout(GATE_LOG_INTERVAL):
                    await gate.wait()
            except TimeoutError:
                log.warning("%s: still waiting for its publisher before subscribing", self.name)

    async def _connect(self, connection: AbstractConnection) -> asyncio.Transport | None:
        """The redis-py handshake, bounded as a whole; the transport, or None on failure."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self._resolver is None:
                    await connection.connect()  # type: ignore[no-untyped-call]
                else:
                    await self._resolver.connect(self, connection)
        except (OSError, RedisError, TimeoutError) as exc:
            self.connect_failures += 1
            if isinstance(exc, TimeoutError) and not str(exc):
                reason = f"no answer within REDIS_CONNECT_TIMEOUT={self.connect_timeout:g}s"
            else:
                reason = str(exc) or type(exc).__name__
            refused = isinstance(exc, (AuthenticationError, ResponseError))
            self._connect_log.log(
                logging.ERROR if refused else logging.WARNING,
                "connect",
                "%s: cannot connect to Redis (%s); retrying with backoff",
                self.name,
                reason,
            )
            await _discard(connection)
            return None
        # redis-py keeps its StreamWriter private; after the handshake its transport is ours.
        return connection._writer.transport  # type: ignore[union-attr,return-value]

    async def _serve(self, transport: asyncio.Transport) -> None:
        """Own the connection until it closes or liveness finds it dead."""
        protocol = _LinkProtocol(self, asyncio.get_running_loop().create_future())
        transport.set_protocol(protocol)  # from here on, bytes go to our parser, not redis-py's
        self._transport = transport
        self._protocol = protocol
        self._writes_connected(transport)
        if self._reading_paused:
            transport.pause_reading()
        liveness = self._liveness
        liveness.restart(perf_counter())
        self._on_connected()
        closed = protocol.closed
        while not closed.done():
            await asyncio.wait((closed,), timeout=liveness.tick)
            if closed.done() or self._reading_paused:
                continue
            if liveness.dead(self, perf_counter()):
                self.liveness_failures["ping"] += 1
                raise LinkDropped(
                    f"no answer within REDIS_LIVENESS_TIMEOUT={liveness.timeout:g}s: Redis frozen, or the connection half-open"
                )
        raise closed.result()

    def _disconnected(self) -> None:
        self.ready.clear()
        self._transport = None
        if self._protocol is not None:
            self._protocol.close(LinkDropped("link closed"))
            self._protocol = None
        self._writes_disconnected()
        for callback in self._disconnect_callbacks:
            try:
                callback()
            except Exception:
                log.exception("%s: disconnect callback failed", self.name)

    # -- for subclasses --------------------------------------------------------------

    def _on_connected(self) -> None:
        raise NotImplementedError

    def _on_reply(self, reply: object) -> None:
        raise NotImplementedError

    def _send_ping(self) -> None:
        raise NotImplementedError

    def _expects_reply(self) -> bool:
        """Whether a command sent is still unanswered (liveness: silence then means dead)."""
        return False


async def _back_off(delay: float) -> None:
    await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto


async def _discard(connection: AbstractConnection) -> None:
    """Forget redis-py's side of a connection, bounded: the socket is aborted, not flushed
    (a frozen Redis would hold a graceful close forever)."""
    writer: Any = connection._writer
    if writer is not None:
        writer.transport.abort()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await connection.disconnect(nowait=True)


class _LinkProtocol(asyncio.Protocol):
    """Feeds a link's bytes to hiredis and hands over each complete reply, synchronously."""

    def __init__(self, link: Link, closed: asyncio.Future[BaseException]) -> None:
        self._link = link
        self._parser = hiredis.Reader()
        self.closed = closed  # its result: why the connection ended

    def data_received(self, data: bytes) -> None:
        link = self._link
        link.read_at = perf_counter()
        link.reading = True
        try:
            self._parser.feed(data)
            reply = self._parser.gets()
            while reply is not False:
                link._on_reply(reply)
                reply = self._parser.gets()
        except hiredis.ProtocolError as exc:
            self.close(exc)
        finally:
            link.reading = False
        if link.on_read_end is not None:
            link.on_read_end()

    def eof_received(self) -> bool:
        self.close(EOFError("closed by the server"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(exc or EOFError("connection closed"))

    def pause_writing(self) -> None:
        if self._link._protocol is self:
            self._link._writing_paused()

    def resume_writing(self) -> None:
        if self._link._protocol is self:
            self._link._writing_resumed()

    def close(self, reason: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        link = self._link
        if link._protocol is self:
            # Down from this instant, not from when the link task next runs: a reply or a
            # call in between fails ConnectionLost (counted) instead of vanishing in a
            # closed socket.
            link._transport = None
            link._blocked = True
