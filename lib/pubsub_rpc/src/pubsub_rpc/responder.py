"""The answering side: register actions with a decorator, then ``await responder.serve()``.

::

    responder = Responder(settings)

    @responder.action("sum", "Add a list of numbers")
    def total(data):
        ...

Plain functions run inline in the read loop (no task per request: the fast path, so keep
them short); ``async def`` handlers run as tasks, at most ``max_concurrency`` at once,
with up to ``max_backlog`` more queued (and ``max_backlog_bytes`` of raw requests); beyond
that the caller gets ``overloaded`` at once. An async handler still running at the
request's deadline is cancelled and its slot freed: the caller has given up, so no reply.

The request being handled is ``current_request()`` inside a handler (its ``headers`` carry
the trace context). Each outcome is counted in plain numbers (``stats``, ``latency``) and
turned into Prometheus families only when scraped (``metric_families``).

Every request with a requestId gets exactly one reply (a result or a named error), unless
its reply channel breaks the rules in channels.py: then nothing is published, and the
request is counted as dropped.

Replicas on one channel (docs/scale-out.md): each responder announces itself in the
registry (pubsub_rpc.registry) and, while others are alive, claims each request before
running it (pubsub_rpc.claims), so one replica runs it and the others count it as
``claimed_elsewhere``; an action it does not serve gets ``unknown_action`` only when no live
responder serves it. Notifications (no requestId) are not claimed: every replica runs them.
A solo responder pays one float comparison per message for all of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import logging
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from . import protocol
from . import tracing as traces
from .channels import ChannelRules
from .cluster import KeyRouted, Shards, is_shard_channel, shard_request_channel
from .errors import ConnectionLost, HandlerError, InvalidRequest, Overloaded, RemoteError, Unavailable, UnknownAction
from .link import Publisher, Subscriber, link_options
from .logs import call_fields
from .metrics import BUCKETS, READY_HELP, LatencyTable, counter, gauge, link_families
from .probe import Probe, probe_channel
from .protocol import MalformedMessage, Request
from .ratelog import RateLimitedLog
from .replicas import Replicas
from .settings import Settings
from .stream_consumer import EVENTS as STREAM_EVENTS
from .stream_consumer import StreamConsumer
from .stream_reclaim import Reclaimer

log = logging.getLogger(__name__)

_current: contextvars.ContextVar[Request | None] = contextvars.ContextVar("pubsub_rpc_request", default=None)


def current_request() -> Request | None:
    """The request the running handler serves (action, request_id, source, headers, ...),
    or None outside a handler. Tasks a handler starts inherit it."""
    return _current.get()


MAX_DEADLINE_DELAY = 86_400.0  # seconds; a deadline further off gets no cancel timer

Handler = Callable[[Any], Any] | Callable[[Any], Awaitable[Any]]


@dataclass(slots=True)
class ActionSpec:
    name: str
    description: str
    handler: Handler
    is_async: bool


@dataclass(slots=True)
class ResponderStats:
    """Counters, readable while serving (the sample ``info`` action reports them).

    Every message taken from Redis ends in exactly one outcome, so once nothing is in
    flight ``received == replied + errors + notifications + expired + dropped``. The other
    counters say why something was dropped or refused.
    """

    received: int = 0
    # outcomes
    replied: int = 0  # result replies published
    errors: int = 0  # error replies published (unknown action, invalid request, overloaded, ...)
    notifications: int = 0  # requests without a requestId, handled; never answered by design
    expired: int = 0  # deadline passed before the start, or the handler was cancelled at it
    dropped: int = 0  # neither answered nor run: one of the reasons below (or Redis was down)
    # reasons
    malformed: int = 0  # not a request envelope, too large or invalid (answered when it could be)
    overloaded: int = 0  # answered `overloaded`: every slot taken and the backlog full (count or bytes)
    bad_channel: int = 0  # request channel name too long or not UTF-8
    rejected_reply_channel: int = 0  # the reply would have gone where replies may not go
    rejected_push_channel: int = 0  # a push asked for a channel pushes may not go to (not a message outcome)
    lost_replies: int = 0  # the reply could not be sent: Redis connection down
    claimed_elsewhere: int = 0  # another replica won the claim and runs it (docs/scale-out.md)
    lost_claims: int = 0  # the claim got no answer (Redis connection down) or was refused
    not_ours: int = 0  # an action we do not serve, served by another live responder, which answers it
    stale: int = 0  # read while our own registry heartbeat was unacknowledged too long (frozen?)
    released: int = 0  # streams mode: left pending for another consumer (read while frozen, unfinished at stop)
    pushes: int = 0  # pushes published (not a message outcome)
    claims_won: int = 0  # claims that said run it (not a message outcome: it goes on to one)
    stale_rejoins: int = 0  # times the stale rule dropped the subscription to rejoin (not a message outcome)


# ResponderStats counters exported as rpc_server_messages_dropped_total{reason}: why a
# message was not served (overloaded and invalid requests are answered with an error).
DROP_REASONS = (
    "malformed",
    "bad_channel",
    "rejected_reply_channel",
    "expired",
    "overloaded",
    "lost_replies",
    "claimed_elsewhere",
    "lost_claims",
    "not_ours",
    "stale",
    "released",
)
OUTCOMES = ("replied", "errors", "notifications", "expired", "dropped")


class Responder:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        name: str = "responder",
        metrics: bool = True,
        tracing: bool | None = None,
        tracer_provider: Any = None,
    ) -> None:
        """``metrics=False`` skips the per-request latency count (the bench's baseline);
        ``tracing`` (default: whether OpenTelemetry's API is installed) creates spans,
        from ``tracer_provider`` (default: OpenTelemetry's global one)."""
        self.settings = settings or Settings()
        self.name = name
        self.actions: dict[str, ActionSpec] = {}
        self.stats = ResponderStats()
        self.channels = ChannelRules(self.settings, [self.settings.responder_pattern])
        self._reply_to_verdicts = self.channels.reply_to_verdicts
        url, options = self.settings.redis_dsn, link_options(self.settings)
        probe = probe_channel(self.settings.probe_prefix, self.settings.service)
        self._subscriber = Subscriber(
            url,
            f"{name}-sub",
            self._on_message,
            patterns=self.channels.patterns,
            max_channel_bytes=self.settings.max_channel_bytes,
            on_bad_channel=self._on_bad_channel,
            probe_channel=probe,
            **options,
        )
        self._publisher = Publisher(url, f"{name}-pub", **options)
        # Requests are taken only while replies can be sent: the subscriber connects only
        # while the publisher is up, goes when it goes, and stops reading while the
        # publisher is backpressured (Redis keeps the requests for us meanwhile).
        self._subscriber.gate = self._publisher.ready
        self._publisher.on_disconnect(lambda: self._subscriber.disconnect("its publisher is down: no reply could be sent"))
        self._publisher.on_backpressure(self._on_publisher_backpressure)
        self.probe = Probe(self._subscriber, self._publisher, probe, self.settings.probe_interval)
        # Cluster mode (pubsub_rpc.cluster): v1 requests also come SSUBSCRIBEd on the
        # service's sharded request channel; replies to a sharded reply channel are
        # SPUBLISHed. Seed-era traffic stays on the classic links above.
        self._reply = self._publisher.publish_nowait
        self._shards: Shards | None = None
        if self.settings.redis_cluster:
            self._shards = Shards(self.settings, name, self._on_shard_message)
            self._shards.subscribe(shard_request_channel(self.settings))
            self._reply = self._route_reply
        self.latency: LatencyTable | None = LatencyTable() if metrics else None
        self._ok_rows = self.latency.ok if self.latency is not None else None
        # Successes answered within the current read (sync handlers): they share a duration,
        # from the read's arrival to its end, after which their replies leave together; so
        # they are binned once per read (_count_read), not one bisect each.
        self._read_ok: list[str] = []
        if self.latency is not None:
            self._subscriber.on_read_end = self._count_read
        self._tracing = traces.enabled() if tracing is None else tracing and traces.enabled()
        self._tracer = traces.tracer(tracer_provider) if self._tracing else None
        self._debug = False  # a DEBUG line per request: decided once, at start()
        self._running: set[asyncio.Task[None]] = set()
        # Cancelled at their deadline but not finished yet: they hold no slot any more.
        self._abandoned: set[asyncio.Task[None]] = set()
        self._deadline_timers: dict[asyncio.Task[None], asyncio.TimerHandle] = {}
        self._backlog: deque[tuple[ActionSpec, Request, str, int]] = deque()
        self._backlog_bytes = 0
        self._accepting = False
        self._bad_input = RateLimitedLog(log)
        # Competing replicas (docs/scale-out.md): registry, claims, owner-only answers.
        # In cluster mode requests arrive on shard connections, not with the announcements on
        # the classic one, so the join-before-subscribe ordering of `auto` does not hold:
        # replicas claim every request there (`always`), through the key's own master.
        replica_settings = self.settings
        if self._shards is not None and self.settings.claims == "auto":
            replica_settings = dataclasses.replace(self.settings, claims="always")
        self._replicas = Replicas(
            replica_settings,
            name,
            self._publisher if self._shards is None else KeyRouted(self._publisher, self._shards),  # type: ignore[arg-type]
            self._subscriber,
            self.stats,
            self.actions,
            self._accept,
            _fields,
        )
        self.instance = self._replicas.instance
        self.directory = self._replicas.directory
        # Streams mode (RPC_TRANSPORT=streams): v1 requests from the stream, next to pub/sub.
        self._streams = StreamConsumer(self, self._publisher) if self.settings.transport == "streams" else None

    # -- registration ----------------------------------------------------------------

    def action(self, name: str | None = None, description: str = "") -> Callable[[Handler], Handler]:
        """Register a handler. It gets the request's ``data`` and returns a JSON-able result;
        raising InvalidRequest rejects the input, any other exception is a handler_error."""

        def register(handler: Handler) -> Handler:
            action_name = name or handler.__name__
            doc = description or (inspect.getdoc(handler) or "").split("\n")[0]
            self.actions[action_name] = ActionSpec(action_name, doc, handler, inspect.iscoroutinefunction(handler))
            return handler

        return register

    def describe(self) -> list[dict[str, str]]:
        return [
            {"name": spec.name, "description": spec.description} for spec in sorted(self.actions.values(), key=lambda s: s.name)
        ]

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Responder:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self, connect_timeout: float | None = 10.0) -> None:
        """Connect and subscribe; ``None`` waits as long as Redis takes (the links retry,
        logging why: services do this, see ``lifecycle.started``). On a timeout the
        connections are closed again and ConnectionLost is raised."""
        self._accepting = True
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._publisher.start()
        try:
            if self._shards is not None:  # the registry join routes its keys through the shards
                await self._shards.start(connect_timeout)
            self._subscriber.start()  # it subscribes once the publisher is up (its gate)
            async with asyncio.timeout(connect_timeout):
                await self._publisher.ready.wait()
                await self._subscriber.ready.wait()
                if self._streams is not None:
                    await self._streams.start(None, Reclaimer(self._streams).run)
        except (TimeoutError, ConnectionLost):
            await self._close_links()
            raise ConnectionLost(
                f"{self.name}: not ready within {connect_timeout}s (Redis unreachable, or a subscription refused: see the log)"
            ) from None
        except BaseException:
            await self._close_links()  # `async with` will not call __aexit__ for us
            raise
        self.probe.start()
        self._replicas.start()

    async def _close_links(self) -> None:
        await self._subscriber.close()
        if self._streams is not None:
            await self._streams.stop_reading()
            await self._streams.release()
        await self._publisher.close()
        if self._shards is not None:
            await self._shards.close()

    def _on_publisher_backpressure(self, on: bool) -> None:
        if on:
            self._subscriber.pause_reading()
        else:
            self._subscriber.resume_reading()

    @property
    def publisher(self) -> Publisher:
        """The process's publishing connection, for companions that must not cost one of
        their own (the presence beacon)."""
        return self._publisher

    @property
    def ready(self) -> bool:
        """Both connections up (and the stream reader, in streams mode) and the data path
        proven within RPC_PROBE_INTERVAL."""
        up = self._subscriber.ready.is_set() and self._publisher.ready.is_set() and self.probe.ok
        streams_ok = self._streams is None or self._streams.reader.ready.is_set()
        return up and streams_ok and (self._shards is None or self._shards.connected)

    @property
    def streams(self) -> StreamConsumer | None:
        """The consumer-group member in streams mode (its ``stats``, ``consumer`` name)."""
        return self._streams

    def free_slots(self) -> int:
        """Handler slots neither running nor promised to queued requests."""
        return self.settings.max_concurrency - len(self._running) - len(self._backlog)

    @property
    def claiming(self) -> bool:
        """Whether a request with a requestId read now would be claimed first."""
        return self._replicas.claiming

    @property
    def in_flight(self) -> int:
        """Requests taken and not ended yet: running, queued, or waiting for their claim."""
        return len(self._running) + len(self._backlog) + self._replicas.claims_pending

    @property
    def backlog_bytes(self) -> int:
        return self._backlog_bytes

    async def stop(self) -> None:
        """Stop taking requests, give those already taken ``drain_timeout`` seconds to finish
        (their replies are sent), then answer the rest with ``unavailable``."""
        await self.probe.close()
        await self._subscriber.close()
        if self._shards is not None:
            self._shards.stop_listening()
        if self._streams is not None:
            await self._streams.stop_reading()  # a consumer that stops reading leaves the rest to the others
        await self._replicas.stop()  # leave the registry: we hear no more requests
        # Claims still in flight were lost by the other replicas if we won them: run those.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.drain_timeout):
                await self._publisher.drain()
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_timeout
        while self._running and loop.time() < deadline:
            await asyncio.wait(set(self._running), timeout=deadline - loop.time())
        leftovers = len(self._running) + len(self._backlog)
        if leftovers:
            log.warning(
                "%s: %d requests unfinished after %.1fs drain; answering 'unavailable'",
                self.name,
                leftovers,
                self.settings.drain_timeout,
            )
        if self._streams is not None:
            await self._streams.release()  # unfinished stream entries stay pending: another consumer runs them
        while self._backlog:
            spec, request, channel, size = self._backlog.popleft()
            self._backlog_bytes -= size
            self._finish(request, channel, None, Unavailable("responder shutting down"))
        for task in self._running | self._abandoned:
            task.cancel()
        if self._running or self._abandoned:
            await asyncio.wait(self._running | self._abandoned)
        await self._publisher.drain()  # bounded by the liveness timeout
        await self._publisher.close()
        if self._shards is not None:
            await self._shards.close()
        log.info("%s: stopped; %s", self.name, self.stats)

    # -- pushes ----------------------------------------------------------------------

    async def push(self, action: str, data: Any = None, *, channel: str | None = None, user: str | None = None) -> int:
        """Publish an unsolicited event (``requestId: null``); returns the receiver count.

        It goes to the push channel (``settings.channel``), to ``channel``, or with
        ``user=sub`` to that user's channel (``user_prefix + sub``), which gateways deliver
        to that user's sockets only. A channel this responder's own patterns match, an
        over-long one or an empty ``user`` is refused: nothing is sent, 0 is returned and
        ``stats.rejected_push_channel`` counts it. Raises ConnectionLost while Redis is
        down, Backpressure while the publisher's connection is over REDIS_MAX_WRITE_BUFFER."""
        if channel is not None and user is not None:
            raise ValueError("push goes to a channel or to a user, not both")
        target = self.channels.push_target(channel, user)
        if target is None:
            self.stats.rejected_push_channel += 1
            self._bad_input.warning(
                "push-channel", "%s: refused to push %r to %s", self.name, action, _shown(channel if user is None else user)
            )
            return 0
        payload = protocol.encode_push(self.settings.source, action, data)
        receivers = await self._publisher.publish(target, payload)
        self.stats.pushes += 1
        return receivers

    # -- requests --------------------------------------------------------------------

    def _on_bad_channel(self, channel: bytes, reason: str) -> None:
        stats = self.stats
        stats.received += 1
        stats.bad_channel += 1
        stats.dropped += 1
        self._bad_input.warning("bad-channel", "%s: dropped a request on %s: %s", self.name, _shown(channel), reason)

    def _on_shard_message(self, channel: str, raw: bytes, read_at: float) -> None:
        # Under the request channel's classic name: a request without replyTo is answered
        # where a seed-era one would be (the shared channel, classic PUBLISH).
        self._on_message(self.settings.request_channel, raw, read_at)

    def _route_reply(self, channel: str, payload: bytes) -> None:
        assert self._shards is not None
        if is_shard_channel(channel):
            self._shards.publish_nowait(channel, payload)
        else:
            self._publisher.publish_nowait(channel, payload)

    def _on_message(self, channel: str, raw: bytes, received: float | None = None) -> None:
        if received is None:
            received = self._subscriber.read_at
        stats = self.stats
        stats.received += 1
        try:
            message = protocol.decode(raw, self.settings.max_message_bytes)
        except MalformedMessage as exc:
            stats.malformed += 1
            stats.dropped += 1
            self._bad_input.warning("malformed", "%s: dropped a malformed message on %s: %s", self.name, _shown(channel), exc)
            return
        try:
            request = protocol.parse_request(message)
        except InvalidRequest as exc:
            self._on_invalid(channel, message, exc, received)
            return
        request.received = received
        reply_to = request.reply_to
        if request.request_id is None:
            reply_channel = ""  # a notification: nobody waits for a reply
        elif reply_to is not None and self._reply_to_verdicts.get(reply_to):
            reply_channel = reply_to  # the hot path: a reply channel already found good
        else:
            allowed = self.channels.reply_channel(reply_to, channel)
            if allowed is None:
                self._reject_reply_channel(channel, request.request_id, reply_to, request)
                return
            reply_channel = allowed
        if received > self._replicas.fast_until:  # claiming, stale, or time to look again (replicas.py)
            self._replicas.gated(request, channel, reply_channel, len(raw), received)
            return
        self._accept(request, channel, reply_channel, len(raw))

    def _accept(self, request: Request, channel: str, reply_channel: str, size: int) -> None:
        """Run, queue or refuse a valid request whose reply channel is allowed (``""`` for
        a notification). Every request source ends here: pub/sub messages, claimed ones,
        stream entries."""
        stats = self.stats
        if request.expired():
            stats.expired += 1
            if self._streams is not None:
                self._streams.done(request)
            if self._debug:
                log.debug("%s: skipped: its deadline has passed", self.name, extra=_fields(request, "expired"))
            return
        if self._tracing:
            request.span = traces.server_span(self._tracer, request.action, channel, request.request_id, request.headers)
        spec = self.actions.get(request.action)
        if spec is None:
            # (A stream entry is answered here: the responder the registry knows may well
            # not read the stream, and one left pending would only be dead-lettered.)
            if request.stream_id is None and self.directory.serves(channel, request.action):
                self._replicas.not_ours(request)  # another live responder serves it: its answer
                self._end_span(request, "not_ours")
                return
            self._finish(request, reply_channel, None, UnknownAction(f"unknown action {request.action!r}; try 'actions'"))
        elif not self._accepting:
            self._finish(request, reply_channel, None, Unavailable("responder shutting down"))
        elif not spec.is_async:
            self._finish(request, reply_channel, *self._run_sync(spec, request))
        elif len(self._running) < self.settings.max_concurrency:
            self._start_task(spec, request, reply_channel)
        elif len(self._backlog) < self.settings.max_backlog and self._backlog_bytes + size <= self.settings.max_backlog_bytes:
            self._backlog.append((spec, request, reply_channel, size))
            self._backlog_bytes += size
        else:
            stats.overloaded += 1
            limits = (
                f"{self.settings.max_concurrency} running and {len(self._backlog)} queued "
                f"({self._backlog_bytes} of {self.settings.max_backlog_bytes} bytes)"
            )
            self._finish(request, reply_channel, None, Overloaded(limits))

    def _on_invalid(self, channel: str, message: dict[str, Any], exc: InvalidRequest, received: float) -> None:
        """An envelope with bad fields: answered ``invalid_request`` when it has a string
        requestId and an allowed reply channel (a caller is waiting), else dropped."""
        self.stats.malformed += 1
        request_id = message.get("requestId")
        reply_to = message.get("replyTo")
        action = message.get("action")
        action = action if isinstance(action, str) else None
        source = message.get("source")
        headers = message.get("headers")
        fields = call_fields(
            _bounded(request_id),
            _bounded(action),
            _bounded(source),
            exc.code,
            (perf_counter() - received) * 1000,
            traces.traceparent(headers if type(headers) is dict else None),
        )
        if not isinstance(request_id, str):
            self.stats.dropped += 1  # no caller can match a reply to it
            self._bad_input.warning(
                "invalid", "%s: dropped an invalid request on %s: %s", self.name, _shown(channel), exc, extra=fields
            )
            return
        reply_channel = self.channels.reply_channel(reply_to, channel) if reply_to is None or isinstance(reply_to, str) else None
        if reply_channel is None:
            self._reject_reply_channel(channel, request_id, reply_to, None, fields)
            return

        def answer() -> None:
            self._bad_input.warning("invalid", "%s: invalid request on %s: %s", self.name, _shown(channel), exc, extra=fields)
            self._send_error(action, request_id, reply_channel, exc)
            if self.latency is not None:
                self.latency.observe(action or "_none", exc.code, perf_counter() - received)

        if received > self._replicas.fast_until:
            self._replicas.once(request_id, received, answer)  # one replica answers (replicas.py)
        else:
            answer()

    def _reject_reply_channel(
        self, channel: str, request_id: str, reply_to: object, request: Request | None, fields: dict[str, Any] | None = None
    ) -> None:
        self.stats.rejected_reply_channel += 1
        self.stats.dropped += 1
        where = f"replyTo {_shown(reply_to)}" if reply_to is not None else f"the reply channel of {_shown(channel)}"
        if request is not None:
            fields = _fields(request, "rejected_reply_channel")
        self._bad_input.warning(
            "reply-channel",
            "%s: dropped a request: replies may not go to %s (outside %r, too long, or heard by our own pattern)",
            self.name,
            where,
            self.channels.reply_prefix,
            extra=fields,
        )

    def _start_task(self, spec: ActionSpec, request: Request, reply_channel: str) -> None:
        # The task copies the context as it is now: current_request() (and the span) inside.
        token = _current.set(request)
        span_token = traces.activate(request.span) if request.span is not None else None
        try:
            task = asyncio.create_task(self._run_async(spec, request, reply_channel))
        finally:
            if span_token is not None:
                traces.deactivate(span_token)
            _current.reset(token)
        self._running.add(task)
        task.add_done_callback(self._task_done)
        if request.deadline_ms is not None:
            # The caller gives up at its deadline: cancel the handler then and free the slot.
            delay = request.deadline_ms / 1000 - time.time()
            if delay < MAX_DEADLINE_DELAY:
                timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self._deadline_passed, task, request)
                self._deadline_timers[task] = timer

    def _deadline_passed(self, task: asyncio.Task[None], request: Request) -> None:
        self._deadline_timers.pop(task, None)
        if task.done() or task not in self._running:
            return
        self.stats.expired += 1
        self._running.discard(task)
        self._end_span(request, "expired")
        if self._streams is not None:
            self._streams.done(request)
        if self._debug:
            log.debug("%s: cancelled at its deadline", self.name, extra=_fields(request, "expired"))
        self._abandoned.add(task)
        task.cancel()
        self._fill_slots()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        timer = self._deadline_timers.pop(task, None)
        if timer is not None:
            timer.cancel()
        self._abandoned.discard(task)
        if task in self._running:
            self._running.discard(task)
            self._fill_slots()

    def _fill_slots(self) -> None:
        while self._backlog and len(self._running) < self.settings.max_concurrency:
            spec, request, reply_channel, size = self._backlog.popleft()
            self._backlog_bytes -= size
            if request.expired():
                self.stats.expired += 1
                self._end_span(request, "expired")
                if self._streams is not None:
                    self._streams.done(request)
                continue
            self._start_task(spec, request, reply_channel)

    async def _run_async(self, spec: ActionSpec, request: Request, reply_channel: str) -> None:
        try:
            result = await spec.handler(request.data)
        except asyncio.CancelledError:
            if asyncio.current_task() in self._abandoned:
                return  # cancelled at its deadline: counted as expired, nobody waits for it
            self._finish(request, reply_channel, None, Unavailable("responder shutting down"))
            raise
        except Exception as exc:
            error: RemoteError | None = self._as_remote(spec, request, exc)
            result = None
        else:
            error = None
        if asyncio.current_task() in self._abandoned:
            return  # finished after its deadline (it ignored the cancellation): too late
        self._finish(request, reply_channel, result, error)

    def _finish(self, request: Request, reply_channel: str, result: Any, error: RemoteError | None) -> None:
        if request.request_id is None:
            self.stats.notifications += 1  # fire-and-forget: nobody waits for a reply
            if self._streams is not None:
                self._streams.done(request)
            code = "ok" if error is None else error.code
            if error is not None:
                self._bad_input.warning(
                    "notification", "%s: notification failed: %s", self.name, error, extra=_fields(request, code)
                )
            self._done(request, code)
            return
        if error is None:
            try:
                payload = protocol.encode_result(self.settings.source, request.action, request.request_id, result, request.legacy)
            except TypeError as exc:
                error = HandlerError(f"result of {request.action!r} is not JSON-serialisable: {exc}")
            else:
                if self._publish(reply_channel, payload, request):
                    self.stats.replied += 1
                # A success, the busiest path: counted inline (see metrics.LatencyTable).
                ok_rows = self._ok_rows
                if ok_rows is not None:
                    if self._subscriber.reading:
                        self._read_ok.append(request.action)
                    else:  # an async handler's reply, in a tick of its own
                        row = ok_rows.get(request.action) or self.latency.row(request.action, "ok")  # type: ignore[union-attr]
                        seconds = perf_counter() - request.received
                        row[bisect_left(BUCKETS, seconds)] += 1
                        row[-1] += seconds
                if request.span is not None:
                    traces.end(request.span, "ok")
                if self._debug:
                    log.debug("%s: handled", self.name, extra=_fields(request, "ok"))
                return
        if error.code != HandlerError.code:  # handler errors were logged with their traceback
            self._bad_input.log(
                logging.INFO, error.code, "%s: answered %s: %s", self.name, error.code, error, extra=_fields(request, error.code)
            )
        self._send_error(request.action, request.request_id, reply_channel, error, request)
        self._done(request, error.code)

    def _count_read(self) -> None:
        """Bin the successes of the read that just ended: one clock read and one bisect."""
        actions = self._read_ok
        if not actions:
            return
        seconds = perf_counter() - self._subscriber.read_at
        bucket = bisect_left(BUCKETS, seconds)
        latency: LatencyTable = self.latency  # type: ignore[assignment]
        first = actions[0]
        counts = {first: len(actions)} if actions.count(first) == len(actions) else Counter(actions)
        for action, n in counts.items():
            row = latency.ok.get(action) or latency.row(action, "ok")
            row[bucket] += n
            row[-1] += seconds * n
        actions.clear()

    def _done(self, request: Request, code: str) -> None:
        """A request ended with ``code``: its duration counted, its span ended, and at
        DEBUG one line with its fields (the flag is read once, at start)."""
        latency = self.latency
        if latency is not None:
            latency.observe(request.action, code, perf_counter() - request.received)
        if request.span is not None:
            traces.end(request.span, code)
        if self._debug:
            log.debug("%s: handled", self.name, extra=_fields(request, code))

    def _end_span(self, request: Request, code: str) -> None:
        if request.span is not None:
            traces.end(request.span, code)
            request.span = None

    def _send_error(
        self, action: str | None, request_id: str, reply_channel: str, error: RemoteError, request: Request | None = None
    ) -> None:
        if self._publish(reply_channel, protocol.encode_error(self.settings.source, action, request_id, error), request):
            self.stats.errors += 1

    def _publish(self, channel: str, payload: bytes, request: Request | None = None) -> bool:
        try:
            if request is not None and request.stream_id is not None:
                return self._streams.reply(channel, payload, request)  # type: ignore[union-attr]
            self._reply(channel, payload)
        except ConnectionLost:
            # The caller will see ConnectionLost or a timeout; nothing else we can do here.
            self.stats.lost_replies += 1
            self.stats.dropped += 1
            fields = _fields(request, "lost_reply") if request is not None else None
            self._bad_input.warning("lost", "%s: reply on %s lost: Redis connection down", self.name, channel, extra=fields)
            return False
        return True

    def _run_sync(self, spec: ActionSpec, request: Request) -> tuple[Any, RemoteError | None]:
        token = _current.set(request)
        span_token = traces.activate(request.span) if request.span is not None else None
        try:
            return spec.handler(request.data), None
        except Exception as exc:
            return None, self._as_remote(spec, request, exc)
        finally:
            if span_token is not None:
                traces.deactivate(span_token)
            _current.reset(token)

    def _as_remote(self, spec: ActionSpec, request: Request, exc: Exception) -> RemoteError:
        if isinstance(exc, RemoteError):
            return exc
        log.error("%s: %s failed", self.name, spec.name, exc_info=exc, extra=_fields(request, HandlerError.code))
        return HandlerError(f"{spec.name} failed: {type(exc).__name__}: {exc}")

    # -- metrics ---------------------------------------------------------------------

    def metric_families(self) -> list[HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily]:
        """This responder's Prometheus families, built from its plain counters (at scrape time)."""
        stats = self.stats
        families: list[HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily] = []
        if self.latency is not None:
            families.append(
                self.latency.family(
                    "rpc_server_call_duration_seconds", "Requests handled, by action and outcome code, and their duration"
                )
            )
        families += [
            gauge("rpc_server_calls_in_flight", "Async handlers running", len(self._running)),
            gauge("rpc_server_backlog_requests", "Requests queued for a free slot", len(self._backlog)),
            gauge("rpc_server_backlog_bytes", "Bytes of requests queued for a free slot", self._backlog_bytes),
            counter("rpc_server_messages_received", "Messages taken from the request channels", stats.received),
            counter(
                "rpc_server_messages",
                "Each message's outcome: replied, errors (error replies), notifications, expired, dropped",
                {outcome: getattr(stats, outcome) for outcome in OUTCOMES},
                "outcome",
            ),
            counter(
                "rpc_server_messages_dropped",
                "Messages not served, by reason (malformed and overloaded ones are answered with an error when they can be)",
                {reason: getattr(stats, reason) for reason in DROP_REASONS},
                "reason",
            ),
            counter("rpc_server_pushes", "Pushes published", stats.pushes),
            *self._replicas.families(),
            counter("rpc_server_pushes_refused", "Pushes refused: the channel was not allowed", stats.rejected_push_channel),
            gauge("rpc_ready", READY_HELP, {self.name: float(self.ready)}, "component"),
            *link_families(
                [
                    self._subscriber,
                    self._publisher,
                    *(self._shards.links() if self._shards else ()),
                    *([self._streams.reader] if self._streams else []),
                ]
            ),
        ]
        if self._streams is not None:
            streams = self._streams
            families += [
                counter(
                    "rpc_server_stream_entries",
                    "Streams mode: entries read, acked, reclaimed, answered from the store, dead-lettered, trimmed, ...",
                    {event: getattr(streams.stats, event) for event in STREAM_EVENTS},
                    "event",
                ),
                gauge("rpc_server_stream_pending", "Streams mode: entries this consumer holds, not acked yet", streams.pending),
            ]
        return families


def _fields(request: Request, code: str) -> dict[str, Any]:
    """The log fields of one request (``logs.call_fields``), for lines about it."""
    return call_fields(
        _bounded(request.request_id),
        _bounded(request.action),
        _bounded(request.source),
        code,
        (perf_counter() - request.received) * 1000 if request.received else None,
        traces.traceparent(request.headers),
    )


def _bounded(value: object, limit: int = 100) -> str | None:
    """A string field from a request (anyone's choice, up to RPC_MAX_MESSAGE_BYTES long),
    cut to ``limit`` characters for a log line."""
    if not isinstance(value, str):
        return None
    return value if len(value) <= limit else value[:limit] + "..."


def _shown(value: object, limit: int = 80) -> str:
    """A value from a request, safe and short enough for a log line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"
