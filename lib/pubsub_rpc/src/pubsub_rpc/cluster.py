"""Cluster mode (REDIS_CLUSTER=true): v1 requests and replies on sharded pub/sub.

A Redis Cluster broadcasts every classic PUBLISH to every node, so classic pub/sub does not
scale with the nodes; a sharded channel lives on the master owning its slot, and each
message touches that shard only. ``Shards`` is the router a Caller or Responder uses for
its sharded traffic: one ``ShardPublisher`` and one ``ShardSubscriber`` per master in use
(pubsub_rpc.sharded), the slot map kept by redis-py (pubsub_rpc.topology).

Slot moves, handled so that no call hangs and no subscription is lost:

- ``SPUBLISH`` answered ``MOVED slot host:port``: nothing was published, so the message is
  sent once more, to the node the error names (the channel's owner is remembered from the
  error, and the slot map is read again in the background); a second ``MOVED``, or a node
  not connected yet, fails the call at once with ``connection_lost``.
- A key command (a claim's ``SET NX``, the registry's hash) follows one redirect the same
  way: ``MOVED`` to the new owner, ``ASK`` (its slot is being migrated and the key is not
  on the source) to the importing node, prefixed by ``ASKING`` on the same connection.
  Claim keys fall in every slot, so any slot move touches some of them: without this, a
  request whose claim met the move was dropped and its caller waited out its timeout.
- A subscription lost (unsolicited ``sunsubscribe`` after the slot moved, or ``MOVED`` to
  ``SSUBSCRIBE``): ``on_lost(channel)`` is told (a caller fails its pending calls: replies
  sent meanwhile are gone), then a supervised task re-reads the slot map and subscribes on
  the new owner, retrying with backoff until it succeeds. ``ready`` is clear meanwhile.

``SPUBLISH`` counts the subscribers on the node it ran on only. Every subscriber this
library opens is on the slot's master, the node SPUBLISH runs on, so a count of 0 means
none of ours heard it, and callers fail it with ``no_responder`` as in single-Redis mode;
a subscriber attached to a replica (another client's choice) would be missed by it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import hiredis

from .connection import BACKOFF_INITIAL, BACKOFF_MAX, Link
from .errors import ConnectionLost
from .link import link_options
from .publisher import _RawReply
from .settings import Settings
from .sharded import ShardPublisher, ShardSubscriber
from .topology import Topology, parse_redirect

log = logging.getLogger(__name__)

CountCallback = Callable[[Any, "int | Exception"], None]


def shard_request_channel(settings: Settings) -> str:
    """The sharded request channel of a service: its hash tag is the one of the Streams
    keys (``{<channel>_sender}``), so a service's requests, stream and stored replies share
    one slot."""
    return "{" + settings.request_channel + "}.requests"


def shard_reply_channel(settings: Settings, caller_id: str) -> str:
    """A cluster caller's private reply channel: under the reply prefix (the responders'
    reply rules), ending in a hash tag ``{<caller id>}`` that spreads callers over slots.
    Responders in cluster mode SPUBLISH to a reply channel that ends in ``}``."""
    return f"{settings.reply_prefix}{settings.service}.{{{caller_id}}}"


def is_shard_channel(channel: str) -> bool:
    """Replies go sharded when their channel ends in a hash tag (``shard_reply_channel``)."""
    return channel[-1:] == "}"


class Shards:
    def __init__(
        self,
        settings: Settings,
        name: str,
        handler: Callable[[str, bytes, float], None],
        on_lost: Callable[[str], None] = lambda channel: None,
    ) -> None:
        """``handler(channel, data, read_at)`` gets every sharded message; ``on_lost(channel)``
        is told when a subscription is gone (link down, slot moved)."""
        self.name = name
        self.topology = Topology(settings.redis_dsn, settings.connect_timeout)
        self._options = link_options(settings)
        self._handler = handler
        self._on_lost = on_lost
        self.on_read_end: Callable[[float], None] | None = None
        self._publishers: dict[str, ShardPublisher] = {}
        self._subscribers: dict[str, ShardSubscriber] = {}
        self._wanted: set[str] = set()  # channels to keep subscribed
        self._homeless: dict[str, str | None] = {}  # lost channels -> the node a MOVED named
        self._owners: dict[str, str] = {}  # channel -> master, from the slot map or a MOVED
        self._raw = _RawReply(self._published)
        self.ready = asyncio.Event()  # every wanted channel confirmed on its owner
        self._rehome_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._closing = False
        self.resent = 0  # SPUBLISHes answered MOVED and sent again to the new owner
        self.resubscribed = 0  # subscriptions moved to a slot's new owner
        self.redirected = 0  # key commands answered MOVED or ASK and sent to the node named

    # -- lifecycle -------------------------------------------------------------------

    def subscribe(self, channel: str) -> None:
        """Keep ``channel`` subscribed on whichever master owns it (call before start)."""
        self._wanted.add(channel)

    async def start(self, timeout: float | None) -> None:
        """Read the slot map (retried with backoff until every slot has an owner: a
        cluster still forming shows no slots, then each node its own), connect to every master, subscribe, and wait
        until all is confirmed; ``None`` waits as long as it takes. Raises ConnectionLost
        on the timeout."""
        self._closing = False
        try:
            async with asyncio.timeout(timeout):
                delay = BACKOFF_INITIAL
                while True:
                    try:
                        await self.topology.refresh(complete=True)
                        break
                    except ConnectionLost as exc:
                        log.warning("%s: %s; retrying", self.name, exc)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                    delay = min(delay * 2, BACKOFF_MAX)
                for node in self.topology.masters():
                    self._publisher(node)
                for channel in self._wanted:
                    self._subscriber(self.topology.node_for(channel)).add(channel)
                self._check_ready()
                await self.ready.wait()
                for publisher in list(self._publishers.values()):
                    await publisher.ready.wait()
        except TimeoutError:
            raise ConnectionLost(f"{self.name}: cluster links not ready within {timeout}s (see the log)") from None

    def stop_listening(self) -> None:
        """Stop taking sharded messages (a stopping responder); publishing goes on."""
        for subscriber in self._subscribers.values():
            subscriber.pause_reading()

    async def close(self) -> None:
        self._closing = True
        for task in (self._rehome_task, self._refresh_task):
            if task is not None:
                task.cancel()
        for link in self.links():
            await link.close()
        await self.topology.close()

    def links(self) -> list[Link]:
        return [*self._subscribers.values(), *self._publishers.values()]

    @property
    def connected(self) -> bool:
        return self.ready.is_set() and all(p.ready.is_set() for p in self._publishers.values())

    # -- publishing ------------------------------------------------------------------

    def publish_request(self, channel: str, payload: bytes, on_count: CountCallback, argument: Any) -> None:
        """SPUBLISH; ``on_count(argument, receivers_or_error)`` when it is answered (after
        one resend on MOVED). Raises ConnectionLost if the owner's link is down,
        Backpressure if it is backpressured."""
        self._send(channel, payload, on_count, argument, 0, True)

    def publish_nowait(self, channel: str, payload: bytes) -> None:
        """SPUBLISH a reply or push: nobody waits for the count; sent even when
        backpressured (as Publisher.publish_nowait). Raises ConnectionLost if down."""
        self._send(channel, payload, None, None, 0, False)

    def publish(self, channel: str, payload: bytes) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._send(channel, payload, _settle_future, future, 0, True)
        return future

    def _send(self, channel: str, payload: bytes, on_count: Any, argument: Any, attempt: int, refuse: bool) -> None:
        node = self._owners.get(channel)
        if node is None:
            try:
                node = self._owners[channel] = self.topology.node_for(channel)
            except ConnectionLost:
                self._refresh_soon()  # a slot our map lacks: read it again for the next message
                raise
        publisher = self._publishers.get(node)
        if publisher is None:
            publisher = self._publisher(node)
        publisher.spublish(channel, payload, (self._raw, (channel, payload, on_count, argument, attempt, refuse)), refuse)

    def _published(self, state: tuple[str, bytes, Any, Any, int, bool], reply: object) -> None:
        channel, payload, on_count, argument, attempt, refuse = state
        if isinstance(reply, hiredis.ReplyError):
            redirect = parse_redirect(reply)
            if redirect is None or attempt > 0:
                reply = ConnectionLost(f"Redis refused SPUBLISH on {channel}: {reply}")
            else:
                self._owners[channel] = redirect[1]  # the node that knows says so
                self._refresh_soon()
                try:
                    self._send(channel, payload, on_count, argument, 1, refuse)
                except Exception as exc:  # not connected to the new owner yet, backpressured
                    reply = ConnectionLost(f"{channel}: its slot moved to {redirect[1]}: {exc}")
                else:
                    self.resent += 1
                    return
        if on_count is not None:
            on_count(argument, reply)
        elif isinstance(reply, Exception):
            log.warning("%s: a reply on %s was lost: %s", self.name, channel, reply)

    def execute(self, key: str, on_reply: Callable[[Any, Any], None], argument: Any, *parts: bytes) -> None:
        """Any command on the master owning ``key`` (Publisher.execute routed by slot),
        following one ``MOVED`` or ``ASK``; a second redirect, or the node it names not
        connected, reaches ``on_reply`` as ConnectionLost. Raises ConnectionLost if the
        owner's link is down."""
        node = self._owners.get(key) or self.topology.node_for(key)
        self._publisher(node).execute(self._key_replied, (key, on_reply, argument, parts, 0), *parts)

    def _key_replied(self, state: tuple[str, Callable[[Any, Any], None], Any, tuple[bytes, ...], int], reply: object) -> None:
        key, on_reply, argument, parts, attempt = state
        if isinstance(reply, hiredis.ReplyError) and (redirect := parse_redirect(reply)) is not None:
            if attempt > 0:
                reply = ConnectionLost(f"{key}: redirected twice: {reply}")
            else:
                asking = str(reply).startswith("ASK")
                if not asking:  # moved for good: read the map again; ASK is for this key only
                    self._refresh_soon()
                try:
                    publisher = self._publisher(redirect[1])
                    if asking:
                        publisher.execute(_asked, key, b"ASKING")  # same connection, just before it
                    publisher.execute(self._key_replied, (key, on_reply, argument, parts, 1), *parts)
                except Exception as exc:  # not connected to that node yet, backpressured
                    reply = ConnectionLost(f"{key}: its slot is on {redirect[1]}: {exc}")
                else:
                    self.redirected += 1
                    return
        on_reply(argument, reply)

    def _publisher(self, node: str) -> ShardPublisher:
        publisher = self._publishers.get(node)
        if publisher is None:
            publisher = ShardPublisher(self.topology.url_for(node), f"{self.name}-spub-{node}", **self._options)
            self._publishers[node] = publisher
            publisher.start()
        return publisher

    # -- subscriptions ---------------------------------------------------------------

    def _subscriber(self, node: str) -> ShardSubscriber:
        subscriber = self._subscribers.get(node)
        if subscriber is None:
            subscriber = ShardSubscriber(
                self.topology.url_for(node), f"{self.name}-ssub-{node}", self._handler, self._lost, **self._options
            )
            subscriber.on_confirmed = self._check_ready
            subscriber.on_disconnect(lambda link=subscriber: self._link_down(link))  # type: ignore[misc]
            if self.on_read_end is not None:
                subscriber.on_read_end = _read_end(self.on_read_end, subscriber)
            self._subscribers[node] = subscriber
            subscriber.start()
        return subscriber

    def _check_ready(self) -> None:
        if self._homeless:
            self.ready.clear()
            return
        subscribed = all(link.ready.is_set() for link in self._subscribers.values() if link.channels)
        if subscribed:
            self.ready.set()
        else:
            self.ready.clear()

    def _link_down(self, subscriber: ShardSubscriber) -> None:
        """A subscriber's connection dropped: it reconnects and resubscribes by itself;
        meanwhile its channels hear nothing."""
        self.ready.clear()
        for channel in subscriber.channels:
            self._tell_lost(channel.decode())

    def _lost(self, channel: str, reason: str, redirect: tuple[int, str] | None) -> None:
        log.warning("%s: subscription to %s lost: %s; resubscribing on the slot's owner", self.name, channel, reason)
        self._owners.pop(channel, None)
        self._homeless[channel] = redirect[1] if redirect is not None else None
        self.ready.clear()
        self._tell_lost(channel)
        if self._rehome_task is None or self._rehome_task.done():
            self._rehome_task = asyncio.create_task(self._rehome(), name=f"rehome:{self.name}")
            self._rehome_task.add_done_callback(self._rehome_ended)

    def _tell_lost(self, channel: str) -> None:
        try:
            self._on_lost(channel)
        except Exception:
            log.exception("%s: on_lost callback failed", self.name)

    async def _rehome(self) -> None:
        """Subscribe every lost channel on its slot's current owner: the node a MOVED named,
        else the owner in a freshly read slot map; retried with backoff until done."""
        delay = BACKOFF_INITIAL
        while self._homeless and not self._closing:
            try:
                if None in self._homeless.values():
                    await self.topology.refresh()
                    self._owners.clear()
                for channel, hint in list(self._homeless.items()):
                    node = hint or self.topology.node_for(channel)
                    del self._homeless[channel]
                    if channel in self._wanted:
                        self._subscriber(node).add(channel)
                        self.resubscribed += 1
                        log.info("%s: %s now subscribed on %s", self.name, channel, node)
            except ConnectionLost as exc:
                log.warning("%s: %s; retrying", self.name, exc)
            self._check_ready()
            if self._homeless:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                delay = min(delay * 2, BACKOFF_MAX)

    def _rehome_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closing:
            return
        if task.exception() is not None:
            log.error("%s: resubscribing failed; retrying", self.name, exc_info=task.exception())
        if self._homeless:  # supervised: lost channels are never left behind
            self._rehome_task = asyncio.create_task(self._rehome(), name=f"rehome:{self.name}")
            self._rehome_task.add_done_callback(self._rehome_ended)

    def _refresh_soon(self) -> None:
        """Re-read the slot map in the background (one read at a time)."""
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.create_task(self._refresh(), name=f"refresh:{self.name}")

    async def _refresh(self) -> None:
        try:
            await self.topology.refresh()
        except ConnectionLost as exc:
            log.warning("%s: %s", self.name, exc)
            return
        self._owners.clear()


class KeyRouted:
    """The registry's and the claims' view of the publisher in cluster mode: a key command
    (``HSET``, ``HGETALL``, ``SET ... NX``) goes to the master owning its key (``parts[1]``)
    instead of the ``REDIS_URL`` node, which would answer ``MOVED``; ``PUBLISH`` and
    readiness stay on the classic publisher (a cluster broadcasts classic pub/sub)."""

    def __init__(self, publisher: Any, shards: Shards) -> None:
        self._publisher = publisher
        self._shards = shards
        self.name = publisher.name
        self.ready = publisher.ready

    def execute(self, on_reply: Callable[[Any, Any], None], argument: Any, *parts: bytes) -> None:
        if parts[0] == b"PUBLISH" or len(parts) < 2:
            self._publisher.execute(on_reply, argument, *parts)
        else:
            self._shards.execute(parts[1].decode(), on_reply, argument, *parts)


def _asked(key: str, reply: object) -> None:
    """The answer to ``ASKING``: ``OK``, or an error (an ACL without ``+asking``) that
    leaves the command after it answered ``MOVED`` back to the migrating node."""
    if isinstance(reply, (hiredis.ReplyError, Exception)):
        log.error("ASKING refused for %s (the ACL needs +asking in cluster mode): %s", key, reply)


def _settle_future(future: asyncio.Future[int], reply: int | Exception) -> None:
    if future.done():
        return
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)


def _read_end(on_read_end: Callable[[float], None], link: Link) -> Callable[[], None]:
    return lambda: on_read_end(link.read_at)
