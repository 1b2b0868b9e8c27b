"""The calling side: ``await caller.call("sum", [1, 2])`` and pushed events.

One subscriber and one publisher connection per process, whatever the number of calls.
Pending calls live in a dict keyed by requestId, so a reply costs one lookup however many
calls are in flight (the seed parsed every reply once per pending call).

Replies are asked for on a private channel (``replyTo``) so they do not fan out to every
caller; the shared channel is subscribed too, for pushes and for seed-era responders that
always answer there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from . import protocol
from .errors import CallTimeout, ConnectionLost, NoResponder
from .link import Publisher, Subscriber
from .protocol import Event, MalformedMessage
from .settings import Settings

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], None]


class Caller:
    """Use as ``async with Caller(settings) as caller:``; connections live inside the block."""

    def __init__(self, settings: Settings | None = None, *, name: str = "caller") -> None:
        self.settings = settings or Settings()
        self.name = name
        self.caller_id = uuid.uuid4().hex[:12]
        self.reply_channel = f"{self.settings.channel}.reply.{self.caller_id}"
        self._request_channel = self.settings.request_channel
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._event_handlers: list[EventHandler] = []
        channels = [self.settings.channel]
        if self.settings.private_replies:
            channels.append(self.reply_channel)
        url, interval = self.settings.redis_url, self.settings.health_check_interval
        self._subscriber = Subscriber(url, f"{name}-sub", self._on_message, channels=channels, health_check_interval=interval)
        self._publisher = Publisher(url, f"{name}-pub", interval)
        self._subscriber.on_disconnect(self._fail_pending)
        self.malformed = 0

    async def __aenter__(self) -> Caller:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self, connect_timeout: float = 10.0) -> None:
        """Open both connections and wait until the subscriptions are confirmed, so a reply
        can never beat us to the channel."""
        self._subscriber.start()
        self._publisher.start()
        await self._subscriber.wait_ready(connect_timeout)
        await self._publisher.wait_ready(connect_timeout)

    async def close(self) -> None:
        await self._subscriber.close()
        await self._publisher.close()
        self._fail_pending()

    @property
    def ready(self) -> bool:
        return self._subscriber.ready.is_set() and self._publisher.ready.is_set()

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # -- calls -----------------------------------------------------------------------

    async def call(self, action: str, data: Any = None, *, timeout: float | None = None) -> Any:
        """Run ``action`` remotely and return its result.

        Raises CallTimeout, NoResponder, ConnectionLost, or a RemoteError subclass named by
        the reply's code (UnknownAction, InvalidRequest, HandlerError, Overloaded, ...).
        """
        if not self._subscriber.ready.is_set():
            raise ConnectionLost(f"{self.name}: not subscribed to the reply channel (Redis down?)")
        timeout = self.settings.call_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        request_id = str(uuid.uuid4())
        payload = protocol.encode_request(
            action,
            data,
            request_id,
            self.settings.source,
            reply_to=self.reply_channel if self.settings.private_replies else None,
            deadline_ms=int((time.time() + timeout) * 1000),
        )
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[request_id] = future
        try:
            count = self._publisher.publish(self._request_channel, payload)
            count.add_done_callback(lambda c: _fail_if_unheard(c, future, action))
            timer = loop.call_later(timeout, _expire, future, action, timeout)
            try:
                reply = await future
            finally:
                timer.cancel()
        finally:
            del self._pending[request_id]
        return protocol.result_of(reply)

    async def notify(self, action: str, data: Any = None) -> int:
        """Fire-and-forget (the seed's ``call2``): no requestId, no reply. Returns how many
        subscribers received it; 0 means nobody is listening."""
        payload = protocol.encode_request(action, data, None, self.settings.source)
        return await self._publisher.publish(self._request_channel, payload)

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
        dropped (and logged), so a slow consumer cannot grow memory without bound."""
        queue: asyncio.Queue[Event] = asyncio.Queue(max_queued)

        def enqueue(event: Event) -> None:
            if queue.full():
                queue.get_nowait()
                log.warning("%s: event consumer is behind; dropped the oldest event", self.name)
            queue.put_nowait(event)

        async def iterate() -> AsyncIterator[Event]:
            while True:
                yield await queue.get()

        remove = self.add_event_handler(enqueue)
        try:
            yield iterate()
        finally:
            remove()

    # -- plumbing --------------------------------------------------------------------

    def _on_message(self, channel: str, raw: bytes) -> None:
        try:
            message = protocol.decode(raw, self.settings.max_message_bytes)
        except MalformedMessage as exc:
            self.malformed += 1
            log.warning("%s: ignored a malformed message on %s: %s", self.name, channel, exc)
            return
        request_id = message.get("requestId")
        if request_id is None:
            if "ok" not in message or message.get("ok") is not False:
                self._dispatch_event(Event.from_message(message, channel))
            return
        future = self._pending.get(request_id) if isinstance(request_id, str) else None
        if future is not None and not future.done():
            future.set_result(message)
        # Otherwise: another caller's reply on the shared channel, or one that came too late.

    def _dispatch_event(self, event: Event) -> None:
        for handler in list(self._event_handlers):
            try:
                handler(event)
            except Exception:
                log.exception("%s: event handler failed", self.name)

    def _fail_pending(self) -> None:
        """Replies sent while we were unsubscribed are gone for good: fail now, not at timeout."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(f"{self.name}: connection to Redis lost during the call"))


def _expire(future: asyncio.Future[Any], action: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(CallTimeout(f"no reply to {action!r} within {timeout:g}s"))


def _fail_if_unheard(count: asyncio.Future[int], future: asyncio.Future[Any], action: str) -> None:
    if future.done():
        return
    if count.cancelled():
        return
    exc = count.exception()
    if exc is not None:
        future.set_exception(exc)
    elif count.result() == 0:
        future.set_exception(NoResponder(f"no responder is subscribed to receive {action!r}"))
