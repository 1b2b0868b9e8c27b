"""The calling side: ``await caller.call("sum", [1, 2])`` and pushed events.

One subscriber and one publisher connection per process, whatever the number of calls.
Pending calls live in a dict keyed by requestId, so a reply costs one lookup however many
calls are in flight (the seed parsed every reply once per pending call).

Replies are asked for on a private channel (``replyTo``) so they do not fan out to every
caller; the shared channel is subscribed too, for pushes and for seed-era responders that
always answer there. The private channel is ``<reply prefix><service>.<32 random hex>``,
so a Redis ACL can confine each service to its own replies; request ids are 128 random
bits each, so nobody can guess one to spoof a reply.

With RPC_FAIL_FAST the caller also reads the responder registry (pubsub_rpc.registry) and
fails a call before publishing it when no live responder hears the request channel
(``no_responder``) or none serves the action (``unknown_action``). Off by default: a
responder that does not announce itself (the seed's PHP command) would look absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from time import perf_counter
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from . import protocol, registry
from . import tracing as traces
from .cluster import KeyRouted, Shards, shard_reply_channel, shard_request_channel
from .errors import (
    Backpressure,
    CallTimeout,
    ConnectionLost,
    InvalidRequest,
    NoResponder,
    RequestTooLarge,
    RpcError,
    UnknownAction,
)
from .link import Publisher, Subscriber, link_options
from .logs import call_fields
from .metrics import READY_HELP, LatencyTable, counter, gauge, link_families
from .probe import Probe, probe_channel
from .protocol import Event, MalformedMessage
from .ratelog import RateLimitedLog
from .registry import Directory
from .settings import Settings

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], None]
TIMEOUT_RESOLUTION = 0.01  # seconds
TIMER_SLACK = 0.001  # uvloop runs timers on whole milliseconds, up to 1 ms early: never time out early
ID_BYTES = 16  # random bytes per request id
ID_BATCH = 256  # ids drawn from one os.urandom call: a syscall per call would cost more


class Caller:
    """Use as ``async with Caller(settings) as caller:``; connections live inside the block."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        name: str = "caller",
        metrics: bool = True,
        tracing: bool | None = None,
        tracer_provider: Any = None,
    ) -> None:
        """``metrics=False`` skips the per-call latency count (for the bench's baseline);
        ``tracing`` (default: whether OpenTelemetry's API is installed) creates spans,
        from ``tracer_provider`` (default: OpenTelemetry's global one)."""
        self.settings = settings or Settings()
        self.name = name
        self.caller_id = secrets.token_hex(ID_BYTES)
        cluster = self.settings.redis_cluster
        if cluster:  # a sharded channel (pubsub_rpc.cluster): its hash tag spreads callers over slots
            self.reply_channel = shard_reply_channel(self.settings, self.caller_id)
        else:
            self.reply_channel = f"{self.settings.reply_prefix}{self.settings.service}.{self.caller_id}"
        if self.settings.private_replies and len(self.reply_channel.encode()) > self.settings.max_channel_bytes:
            raise ValueError(
                f"reply channel {self.reply_channel!r} is longer than RPC_MAX_CHANNEL_BYTES={self.settings.max_channel_bytes}, "
                "so responders would refuse it: shorten RPC_SERVICE or RPC_REPLY_NAMESPACE"
            )
        self._reply_to = self.reply_channel if self.settings.private_replies else None
        self._source = self.settings.source
        self._default_timeout = self.settings.call_timeout
        self._max_message_bytes = self.settings.max_message_bytes
        self._ids: list[str] = []
        self._request_channel = self.settings.request_channel
        # Streams mode: calls are appended to the request stream (at least once, docs/delivery.md);
        # the XADD command up to its payload, ready-made. Notifications stay pub/sub.
        self._xadd: tuple[bytes, ...] | None = None
        if self.settings.transport == "streams":
            maxlen = str(self.settings.stream_maxlen).encode()
            self._xadd = (b"XADD", self.settings.stream_key.encode(), b"MAXLEN", b"~", maxlen, b"*", b"r")
        # requestId -> (future, deadline tick, action, timeout, perf_counter at the start);
        # removed by whichever comes first: the reply, the timeout, "nobody listening",
        # cancellation or a lost connection.
        self._pending: dict[str, tuple[asyncio.Future[Any], int, str, float, float]] = {}
        self._deadlines: dict[int, set[str]] = {}  # tick -> requestIds due then
        self._deadline_timers: dict[int, asyncio.TimerHandle] = {}
        self._event_handlers: list[EventHandler] = []
        self._on_close: list[Callable[[], None]] = []  # ends the events() iterators
        self._closed = False
        # Set by start(): asyncio.get_running_loop() costs a getpid() system call per use on
        # CPython 3.11, about 3 % of a call's CPU on the caller (bench, py-spy + strace).
        self._loop: asyncio.AbstractEventLoop | None = None
        channels = [self.settings.channel]
        if self.settings.private_replies and not cluster:
            channels.append(self.reply_channel)
        url, options = self.settings.redis_dsn, link_options(self.settings)
        probe = probe_channel(self.settings.probe_prefix, self.settings.service)
        self._subscriber = Subscriber(url, f"{name}-sub", self._on_message, channels=channels, probe_channel=probe, **options)
        self._publisher = Publisher(url, f"{name}-pub", **options)
        # Either link found dead (closed, or silent past REDIS_LIVENESS_TIMEOUT): every call
        # in flight fails now with connection_lost, not at its timeout.
        self._subscriber.on_disconnect(self._fail_pending)
        self._publisher.on_disconnect(self._fail_pending)
        self.probe = Probe(self._subscriber, self._publisher, probe, self.settings.probe_interval)
        # Where requests go and what must be up to send one: the classic links, or in
        # cluster mode the sharded ones (requests SPUBLISHed, replies SSUBSCRIBEd).
        self._send_request = self._publisher.publish_request
        self._publish_counted = self._publisher.publish
        self._reply_ready = self._subscriber.ready
        self._shards: Shards | None = None
        if cluster:
            self._shards = Shards(self.settings, name, self._on_shard_message, on_lost=self._on_reply_channel_lost)
            self._request_channel = shard_request_channel(self.settings)
            self._send_request = self._shards.publish_request
            self._publish_counted = self._shards.publish
            if self.settings.private_replies:
                self._shards.subscribe(self.reply_channel)
                self._reply_ready = self._shards.ready
        self.malformed = 0
        self._bad_input = RateLimitedLog(log)  # anyone may publish on the shared channel
        # Hot-path metrics: plain numbers, turned into Prometheus families when scraped.
        self.latency: LatencyTable | None = LatencyTable() if metrics else None
        # Successes in the current socket read, by action: their start times. They all end
        # when the read arrived, so they are binned together at its end (_count_read).
        self._read_starts: dict[str, list[float]] | None = {} if self.latency is not None else None
        if self.latency is not None:
            self._subscriber.on_read_end = self._count_read
            if self._shards is not None:
                self._shards.on_read_end = self._count_read
        self._tracing = traces.enabled() if tracing is None else tracing and traces.enabled()
        self._tracer = traces.tracer(tracer_provider) if self._tracing else None
        # Spans only while they can record (traces.recording); rechecked with each batch of ids.
        self._spans_on = False
        self._spans: dict[str, Any] = {}  # requestId -> its CLIENT span, while tracing
        # RPC_FAIL_FAST: the registry's view of live responders, reloaded on each subscription.
        self.directory: Directory | None = None
        self.failed_fast = 0
        self._loading: asyncio.Task[None] | None = None
        if self.settings.fail_fast:
            self.directory = Directory(self.settings.registry_name)
            self._subscriber.add_side_channel(self.settings.registry_name, self.directory.on_message)
            self._subscriber.on_disconnect(self.directory.reset)
            self._subscriber.on_subscribed(self._load_directory)

    async def __aenter__(self) -> Caller:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self, connect_timeout: float | None = 10.0) -> None:
        """Open both connections and wait until the subscriptions are confirmed, so a reply
        can never beat us to the channel. ``None`` waits as long as Redis takes (the links
        retry, logging why; services do this, see ``lifecycle.started``); on a timeout the
        connections are closed again and ConnectionLost is raised."""
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._subscriber.start()
        self._publisher.start()
        try:
            await self._subscriber.wait_ready(connect_timeout)
            await self._publisher.wait_ready(connect_timeout)
            if self._shards is not None:
                await self._shards.start(connect_timeout)
        except BaseException:
            await self.close()  # `async with` will not call __aexit__ for us
            raise
        self.probe.start()

    async def close(self) -> None:
        self._closed = True
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
            self._loading = None
        await self.probe.close()
        await self._subscriber.close()
        await self._publisher.close()
        if self._shards is not None:
            await self._shards.close()
        self._fail_pending()
        for end in list(self._on_close):
            end()

    @property
    def publisher(self) -> Publisher:
        """The process's publishing connection, for companions that must not cost one of
        their own (the presence beacon)."""
        return self._publisher

    @property
    def ready(self) -> bool:
        """Both connections up and the data path proven within RPC_PROBE_INTERVAL."""
        up = self._subscriber.ready.is_set() and self._publisher.ready.is_set() and self.probe.ok
        return up and (self._shards is None or self._shards.connected)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # -- calls -----------------------------------------------------------------------

    async def call(
        self, action: str, data: Any = None, *, timeout: float | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        """Run ``action`` remotely and return its result.

        ``headers`` go in the envelope as they are (W3C ``traceparent``/``tracestate``: see
        pubsub_rpc.tracing). Raises CallTimeout, NoResponder, ConnectionLost, or a
        RemoteError subclass named by the reply's code (UnknownAction, InvalidRequest,
        HandlerError, Overloaded, ...); Backpressure at once when the publisher's
        connection holds more than REDIS_MAX_WRITE_BUFFER unsent bytes.
        """
        request_id, future = self._start(action, data, timeout, headers)
        try:
            return await future
        except asyncio.CancelledError:
            entry = self._settle(request_id)
            if entry is not None:
                self._done(request_id, entry[1], "cancelled", entry[3])
            raise

    def start_call(
        self, action: str, data: Any = None, *, timeout: float | None = None, headers: dict[str, str] | None = None
    ) -> asyncio.Future[Any]:
        """Send the request now and return a future for its result (or named error), for
        code that reacts in a callback rather than awaiting, like the gateway (which passes
        a browser's ``traceparent`` in ``headers``). Cancelling the future does not stop the
        remote work; its bookkeeping ends at the timeout."""
        return self._start(action, data, timeout, headers)[1]

    def _start(
        self, action: str, data: Any, timeout: float | None, headers: dict[str, str] | None = None
    ) -> tuple[str, asyncio.Future[Any]]:
        if not self._reply_ready.is_set():
            raise ConnectionLost(f"{self.name}: not subscribed to the reply channel (Redis down?)")
        directory = self.directory
        if directory is not None and directory.loaded:
            verdict = directory.verdict(self._request_channel, action)
            if verdict != "ok":
                self.failed_fast += 1
                if verdict == "no_responder":
                    raise NoResponder(f"no live responder hears {self._request_channel!r} (registry; RPC_FAIL_FAST)")
                raise UnknownAction(f"no live responder serves {action!r} (registry; RPC_FAIL_FAST)")
        timeout = self._default_timeout if timeout is None else timeout
        loop = self._loop or asyncio.get_running_loop()
        try:
            request_id = self._ids.pop()
        except IndexError:
            request_id = self._new_ids()
        span = None
        if self._spans_on:
            span, headers = traces.client_span(self._tracer, action, self._request_channel, request_id, headers)
        try:
            payload = protocol.encode_request(
                action, data, request_id, self._source, self._reply_to, int((time.time() + timeout) * 1000), headers
            )
        except TypeError as exc:
            if span is not None:
                traces.end(span, InvalidRequest.code)
            raise self._unencodable(action, exc) from None
        if len(payload) > self._max_message_bytes:
            if span is not None:
                traces.end(span, RequestTooLarge.code)
            raise self._too_large(action, payload)
        future: asyncio.Future[Any] = loop.create_future()
        # Published first: if Redis is down this raises before anything is registered.
        try:
            if self._xadd is None:
                self._send_request(self._request_channel, payload, self._after_publish, request_id)
            else:
                self._publisher.execute(self._after_xadd, request_id, *self._xadd, payload)
        except (ConnectionLost, Backpressure) as exc:
            if span is not None:
                traces.end(span, exc.code)
            raise
        if span is not None:
            self._spans[request_id] = span
        # Timeouts share one loop timer per 10 ms window of deadlines: a timer per call
        # costs more with every call in flight (bench: -20 % at 1,024); a call times out
        # at most TIMEOUT_RESOLUTION late.
        tick = math.ceil((loop.time() + timeout) / TIMEOUT_RESOLUTION)
        bucket = self._deadlines.get(tick)
        if bucket is None:
            bucket = self._deadlines[tick] = set()
            self._deadline_timers[tick] = loop.call_at(tick * TIMEOUT_RESOLUTION + TIMER_SLACK, self._expire, tick)
        bucket.add(request_id)
        self._pending[request_id] = (future, tick, action, timeout, perf_counter())
        return request_id, future

    def _new_ids(self) -> str:
        """Refill the pool of request ids from one os.urandom call; return one of them.
        Unguessable (128 bits each), so a reply can only settle the call it answers.
        Also where tracing looks again for a tracer provider: once per ID_BATCH calls."""
        self._spans_on = self._tracing and traces.recording(self._tracer)
        hexed = os.urandom(ID_BYTES * ID_BATCH).hex()
        width = 2 * ID_BYTES
        self._ids = [hexed[i : i + width] for i in range(0, len(hexed), width)]
        return self._ids.pop()

    def _unencodable(self, action: str, exc: TypeError) -> InvalidRequest:
        # orjson: not a JSON type, an int beyond 64 bits, or nested deeper than 255 levels.
        return InvalidRequest(f"{action!r}: data cannot be sent as JSON: {exc}")

    def _too_large(self, action: str, payload: bytes) -> RequestTooLarge:
        return RequestTooLarge(
            f"{action!r}: the request is {len(payload):,} bytes, over the {self._max_message_bytes:,}-byte limit "
            "(RPC_MAX_MESSAGE_BYTES) that responders enforce"
        )

    def _settle(self, request_id: str) -> tuple[asyncio.Future[Any], str, float, float] | None:
        """Take a call out of the books (reply, error, cancel): (future, action, timeout, start)."""
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return None
        future, tick, action, timeout, started = entry
        bucket = self._deadlines.get(tick)
        if bucket is not None:
            bucket.discard(request_id)
            if not bucket:  # drop it now: memory stays bounded by the calls in flight
                del self._deadlines[tick]
                self._deadline_timers.pop(tick).cancel()
        return future, action, timeout, started

    def _count_read(self, end: float | None = None) -> None:
        """Bin the successes of the read that just ended (``end``: when it arrived; by
        default the classic subscriber's read, else a shard subscriber's)."""
        read_starts = self._read_starts
        if read_starts:
            end, latency = self._subscriber.read_at if end is None else end, self.latency
            assert latency is not None
            for action, starts in read_starts.items():
                latency.add_ended(action, starts, end)
            read_starts.clear()

    def _done(self, request_id: str, action: str, code: str, started: float) -> None:
        """A call ended with ``code`` (``ok`` or its error's): count it, end its span."""
        latency = self.latency
        if latency is not None:
            latency.observe(action, code, perf_counter() - started)
        if self._spans:
            span = self._spans.pop(request_id, None)
            if span is not None:
                traces.end(span, code)

    def _failed(self, request_id: str, action: str, code: str, started: float, message: str) -> None:
        """A call that ended without a reply (timeout, nobody listening): counted, and logged
        rate-limited with its fields, since a flood of them must not flood the log."""
        self._done(request_id, action, code, started)
        fields = call_fields(request_id, action, self._source, code, (perf_counter() - started) * 1000)
        self._bad_input.log(logging.WARNING, code, "%s: %s", self.name, message, extra=fields)

    def _after_publish(self, request_id: str, receivers: int | Exception) -> None:
        """PUBLISH's answer: how many subscribers got the request. 0 means nobody is
        listening, so fail now rather than at the timeout."""
        if receivers == 0 or isinstance(receivers, Exception):
            entry = self._settle(request_id)
            if entry is not None:
                future, action, _, started = entry
                error = receivers if isinstance(receivers, Exception) else NoResponder(f"nobody listens for {action!r}")
                code = error.code if isinstance(error, RpcError) else ConnectionLost.code
                self._failed(request_id, action, code, started, str(error))
                if not future.done():
                    future.set_exception(error)

    def _after_xadd(self, request_id: str, reply: Any) -> None:
        """XADD's answer: the entry id, or an error (ACL, OOM, not a stream, link lost):
        then the request is not in the stream, so fail now, as ``connection_lost`` (the
        code a refused PUBLISH gets too), rather than at the timeout."""
        if isinstance(reply, bytes):
            return
        entry = self._settle(request_id)
        if entry is not None:
            future, action, _, started = entry
            error = reply if isinstance(reply, ConnectionLost) else ConnectionLost(f"Redis refused XADD: {reply}")
            self._failed(request_id, action, ConnectionLost.code, started, str(error))
            if not future.done():
                future.set_exception(error)

    def _expire(self, tick: int) -> None:
        self._deadline_timers.pop(tick, None)
        for request_id in self._deadlines.pop(tick, ()):
            entry = self._pending.pop(request_id, None)
            if entry is not None:
                message = f"no reply to {entry[2]!r} within {entry[3]:g}s"
                self._failed(request_id, entry[2], CallTimeout.code, entry[4], message)
                if not entry[0].done():
                    entry[0].set_exception(CallTimeout(message))

    async def notify(self, action: str, data: Any = None) -> int:
        """Fire-and-forget (the seed's ``call2``): no requestId, no reply. Returns how many
        subscribers received it; 0 means nobody is listening."""
        try:
            payload = protocol.encode_request(action, data, None, self._source)
        except TypeError as exc:
            raise self._unencodable(action, exc) from None
        if len(payload) > self._max_message_bytes:
            raise self._too_large(action, payload)
        return await self._publish_counted(self._request_channel, payload)

    # -- events ----------------------------------------------------------------------

    def add_event_handler(self, handler: EventHandler) -> Callable[[], None]:
        """Call ``handler(event)`` for every push, in the read loop (so it must not block).
        Returns a function that removes it."""
        self._event_handlers.append(handler)
        return lambda: self._event_handlers.remove(handler)

    @contextlib.asynccontextmanager
    async def events(self, max_queued: int = 1000) -> AsyncIterator[AsyncIterator[Event]]:
        """``async with caller.events() as events: async for event in events: ...``

        Each subscriber has its own bounded queue; when it is full the oldest event is
        dropped (and logged), so a slow consumer cannot grow memory without bound. The
        iteration ends when the caller closes (after the events queued before it)."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(max_queued)

        def enqueue(event: Event | None) -> None:
            if queue.full():
                queue.get_nowait()
                log.warning("%s: event consumer is behind; dropped the oldest event", self.name)
            queue.put_nowait(event)

        def end() -> None:
            enqueue(None)

        async def iterate() -> AsyncIterator[Event]:
            while (event := await queue.get()) is not None:
                yield event

        if self._closed:
            end()
        remove = self.add_event_handler(enqueue)
        self._on_close.append(end)
        try:
            yield iterate()
        finally:
            remove()
            self._on_close.remove(end)

    # -- plumbing --------------------------------------------------------------------

    def _on_message(self, channel: str, raw: bytes) -> None:
        try:
            message = protocol.decode(raw, self.settings.max_message_bytes)
        except MalformedMessage as exc:
            self.malformed += 1
            self._bad_input.warning("malformed", "%s: ignored a malformed message on %s: %s", self.name, channel, exc)
            return
        request_id = message.get("requestId")
        if request_id is None:
            # A push, whatever its data says (a push of {"ok": false} is still an event).
            self._dispatch_event(Event.from_message(message, channel))
            return
        entry = self._settle(request_id) if isinstance(request_id, str) else None
        if entry is None:
            return  # another caller's reply on the shared channel, or one that came too late
        future = entry[0]
        try:
            result = protocol.result_of(message)
        except RpcError as exc:
            self._done(request_id, entry[1], exc.code, entry[3])
            if not future.done():
                future.set_exception(exc)
        else:
            # A success, the busiest path: counted inline (see metrics.LatencyTable).
            read_starts = self._read_starts
            if read_starts is not None:
                starts = read_starts.get(entry[1])
                if starts is None:
                    starts = read_starts[entry[1]] = []
                starts.append(entry[3])
            if self._spans:
                span = self._spans.pop(request_id, None)
                if span is not None:
                    traces.end(span, "ok")
            if not future.done():
                future.set_result(result)

    def _load_directory(self) -> None:
        """Subscribed (again): load the registry's hash; its channel keeps it current."""
        if self._loading is None or self._loading.done():
            self._loading = asyncio.create_task(self._load(), name=f"registry:{self.name}")

    async def _load(self) -> None:
        """Until it worked once for this subscription: every wait bounded, every failure
        logged and retried (calls are not failed fast meanwhile)."""
        assert self.directory is not None
        interval = self.settings.announce_interval
        while not self.directory.loaded and self._subscriber.ready.is_set():
            if not self._publisher.ready.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._publisher.ready.wait()
                continue
            try:
                keys = self._publisher if self._shards is None else KeyRouted(self._publisher, self._shards)
                await registry.load(self.directory, keys, self.settings.connect_timeout)  # type: ignore[arg-type]
            except Exception as exc:  # ConnectionLost, or a refusal: logged and retried, never silent
                self._bad_input.warning("registry", "%s: registry not loaded (%s); retrying", self.name, exc)
                await asyncio.sleep(interval)  # a retry pause, bounded

    def _on_shard_message(self, channel: str, raw: bytes, read_at: float) -> None:
        self._on_message(channel, raw)

    def _on_reply_channel_lost(self, channel: str) -> None:
        """Cluster mode: the reply subscription is gone (link down, slot moved) until it
        is back on the slot's owner; replies sent meanwhile are lost, so fail now."""
        self._fail_pending()

    def _dispatch_event(self, event: Event) -> None:
        for handler in list(self._event_handlers):
            try:
                handler(event)
            except Exception:
                log.exception("%s: event handler failed", self.name)

    def _fail_pending(self) -> None:
        """Replies sent while we were unsubscribed are gone for good: fail now, not at timeout."""
        pending, self._pending = self._pending, {}
        self._deadlines.clear()
        for timer in self._deadline_timers.values():
            timer.cancel()
        self._deadline_timers.clear()
        for request_id, (future, _, action, _, started) in pending.items():
            self._done(request_id, action, ConnectionLost.code, started)
            if not future.done():
                future.set_exception(ConnectionLost(f"{self.name}: connection to Redis lost during the call"))

    # -- metrics ---------------------------------------------------------------------

    def metric_families(self) -> list[HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily]:
        """This caller's Prometheus families, built from its plain counters (at scrape time)."""
        families: list[HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily] = []
        if self.latency is not None:
            families.append(
                self.latency.family("rpc_client_call_duration_seconds", "Calls made, by action and outcome code, and duration")
            )
        families += [
            gauge("rpc_client_calls_in_flight", "Calls sent and not settled yet", len(self._pending)),
            counter("rpc_client_malformed_messages", "Unreadable messages on the reply and push channels", self.malformed),
            counter(
                "rpc_client_failed_fast",
                "Calls failed before publishing: no live responder serves them (RPC_FAIL_FAST)",
                self.failed_fast,
            ),
            gauge("rpc_ready", READY_HELP, {self.name: float(self.ready)}, "component"),
            *link_families([self._subscriber, self._publisher, *(self._shards.links() if self._shards else ())]),
        ]
        return families
