"""The answering side: register actions with a decorator, then ``await responder.serve()``.

::

    responder = Responder(settings)

    @responder.action("sum", "Add a list of numbers")
    def total(data):
        ...

Plain functions run inline in the read loop (no task per request: the fast path, so keep
them short); ``async def`` handlers run as tasks, at most ``max_concurrency`` at once,
with up to ``max_backlog`` more queued; beyond that the caller gets ``overloaded`` at once.
Every request with a requestId gets exactly one reply: a result or a named error.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import protocol
from .errors import ConnectionLost, HandlerError, InvalidRequest, Overloaded, RemoteError, Unavailable, UnknownAction
from .link import Publisher, Subscriber
from .protocol import MalformedMessage, Request
from .settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Any], Any] | Callable[[Any], Awaitable[Any]]


@dataclass(slots=True)
class ActionSpec:
    name: str
    description: str
    handler: Handler
    is_async: bool


@dataclass(slots=True)
class ResponderStats:
    received: int = 0
    replied: int = 0
    errors: int = 0
    malformed: int = 0
    overloaded: int = 0
    expired: int = 0
    notifications: int = 0


class Responder:
    def __init__(self, settings: Settings | None = None, *, name: str = "responder") -> None:
        self.settings = settings or Settings()
        self.name = name
        self.actions: dict[str, ActionSpec] = {}
        self.stats = ResponderStats()
        url, interval = self.settings.redis_dsn, self.settings.health_check_interval
        self._subscriber = Subscriber(
            url, f"{name}-sub", self._on_message, patterns=[self.settings.responder_pattern], health_check_interval=interval
        )
        self._publisher = Publisher(url, f"{name}-pub", interval)
        self._running: set[asyncio.Task[None]] = set()
        self._backlog: deque[tuple[ActionSpec, Request, str]] = deque()
        self._accepting = False

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
        self._accepting = True
        self._publisher.start()
        try:
            await self._publisher.wait_ready(connect_timeout)
            self._subscriber.start()  # only once replies can be sent
            await self._subscriber.wait_ready(connect_timeout)
        except BaseException:
            await self._subscriber.close()  # `async with` will not call __aexit__ for us
            await self._publisher.close()
            raise

    @property
    def ready(self) -> bool:
        return self._subscriber.ready.is_set() and self._publisher.ready.is_set()

    @property
    def in_flight(self) -> int:
        return len(self._running) + len(self._backlog)

    async def stop(self) -> None:
        """Stop taking requests, give those already taken ``drain_timeout`` seconds to finish
        (their replies are sent), then answer the rest with ``unavailable``."""
        self._accepting = False
        await self._subscriber.close()
        deadline = asyncio.get_running_loop().time() + self.settings.drain_timeout
        while self._running and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(set(self._running), timeout=deadline - asyncio.get_running_loop().time())
        leftovers = len(self._running) + len(self._backlog)
        if leftovers:
            log.warning(
                "%s: %d requests unfinished after %.1fs drain; answering 'unavailable'",
                self.name,
                leftovers,
                self.settings.drain_timeout,
            )
        while self._backlog:
            spec, request, channel = self._backlog.popleft()
            self._reply_error(request, channel, Unavailable("responder shutting down"))
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(set(self._running))
        await self._publisher.drain()
        await self._publisher.close()
        log.info("%s: stopped; %s", self.name, self.stats)

    # -- pushes ----------------------------------------------------------------------

    async def push(self, action: str, data: Any = None, channel: str | None = None) -> int:
        """Publish an unsolicited event (``requestId: null``); returns the receiver count."""
        payload = protocol.encode_push(self.settings.source, action, data)
        return await self._publisher.publish(channel or self.settings.channel, payload)

    # -- requests --------------------------------------------------------------------

    def _on_message(self, channel: str, raw: bytes) -> None:
        self.stats.received += 1
        try:
            message = protocol.decode(raw, self.settings.max_message_bytes)
        except MalformedMessage as exc:
            self.stats.malformed += 1
            log.warning("%s: dropped a malformed message on %s: %s", self.name, channel, exc)
            return
        try:
            request = protocol.parse_request(message)
        except InvalidRequest as exc:
            self.stats.malformed += 1
            log.warning("%s: invalid request on %s: %s", self.name, channel, exc)
            request_id = message.get("requestId")
            if request_id is not None:
                action = message.get("action") if isinstance(message.get("action"), str) else None
                reply_to = message.get("replyTo") if isinstance(message.get("replyTo"), str) else None
                self._send(
                    reply_to or self._reply_channel(channel), protocol.encode_error(self.settings.source, action, request_id, exc)
                )
                self.stats.errors += 1
            return
        if request.expired():
            self.stats.expired += 1
            log.info("%s: skipped %r %s: its deadline has passed", self.name, request.action, request.request_id)
            return
        reply_channel = request.reply_to or self._reply_channel(channel)
        spec = self.actions.get(request.action)
        if spec is None:
            self._reply_error(request, reply_channel, UnknownAction(f"unknown action {request.action!r}; try 'actions'"))
            return
        if not self._accepting:
            self._reply_error(request, reply_channel, Unavailable("responder shutting down"))
            return
        if not spec.is_async:
            self._finish(request, reply_channel, *_run_sync(spec, request))
        elif len(self._running) < self.settings.max_concurrency:
            self._start_task(spec, request, reply_channel)
        elif len(self._backlog) < self.settings.max_backlog:
            self._backlog.append((spec, request, reply_channel))
        else:
            self.stats.overloaded += 1
            self._reply_error(
                request,
                reply_channel,
                Overloaded(f"{self.settings.max_concurrency} running and {self.settings.max_backlog} queued"),
            )

    def _reply_channel(self, request_channel: str) -> str:
        suffix = self.settings.request_suffix
        if suffix and request_channel.endswith(suffix):
            return request_channel[: -len(suffix)]
        return self.settings.channel

    def _start_task(self, spec: ActionSpec, request: Request, reply_channel: str) -> None:
        task = asyncio.create_task(self._run_async(spec, request, reply_channel))
        self._running.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        while self._backlog and len(self._running) < self.settings.max_concurrency:
            spec, request, reply_channel = self._backlog.popleft()
            if request.expired():
                self.stats.expired += 1
                continue
            self._start_task(spec, request, reply_channel)

    async def _run_async(self, spec: ActionSpec, request: Request, reply_channel: str) -> None:
        try:
            result = await spec.handler(request.data)
        except asyncio.CancelledError:
            self._finish(request, reply_channel, None, Unavailable("responder shutting down"))
            raise
        except Exception as exc:
            self._finish(request, reply_channel, None, _as_remote(spec, request, exc))
        else:
            self._finish(request, reply_channel, result, None)

    def _finish(self, request: Request, reply_channel: str, result: Any, error: RemoteError | None) -> None:
        if request.request_id is None:
            self.stats.notifications += 1  # fire-and-forget: nobody waits for a reply
            if error is not None:
                log.warning("%s: notification %r failed: %s", self.name, request.action, error)
            return
        if error is not None:
            self._reply_error(request, reply_channel, error)
            return
        try:
            payload = protocol.encode_result(self.settings.source, request.action, request.request_id, result, request.legacy)
        except TypeError as exc:
            self._reply_error(
                request, reply_channel, HandlerError(f"result of {request.action!r} is not JSON-serialisable: {exc}")
            )
            return
        self.stats.replied += 1
        self._send(reply_channel, payload)

    def _reply_error(self, request: Request, reply_channel: str, error: RemoteError) -> None:
        self.stats.errors += 1
        if request.request_id is None:
            return
        self._send(reply_channel, protocol.encode_error(self.settings.source, request.action, request.request_id, error))

    def _send(self, channel: str, payload: bytes) -> None:
        try:
            self._publisher.publish_nowait(channel, payload)
        except ConnectionLost:
            # The caller will see ConnectionLost or a timeout; nothing else we can do here.
            log.warning("%s: reply on %s lost: Redis connection down", self.name, channel)


def _run_sync(spec: ActionSpec, request: Request) -> tuple[Any, RemoteError | None]:
    try:
        return spec.handler(request.data), None
    except Exception as exc:
        return None, _as_remote(spec, request, exc)


def _as_remote(spec: ActionSpec, request: Request, exc: Exception) -> RemoteError:
    if isinstance(exc, RemoteError):
        return exc
    log.exception("%s failed for request %s", spec.name, request.request_id, exc_info=exc)
    return HandlerError(f"{spec.name} failed: {type(exc).__name__}: {exc}")
