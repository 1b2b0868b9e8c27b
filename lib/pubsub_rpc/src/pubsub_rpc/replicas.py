"""A Responder's part among competing replicas (docs/scale-out.md).

It owns the responder's registry entry (``registry.Announcer``), its view of the others
(``registry.Directory``) and its claims (``claims.Claims``), and decides, for each request
the responder reads, whether to run it at once, claim it first, leave it to its owner, or
drop it because this responder may be stale:

- the subscriber's join gate (``join``) claims for a grace, loads the registry and
  announces the join, acknowledged, before the request pattern is subscribed;
- ``fast_until`` (perf_counter) is the time until which a request may run unclaimed
  without a look at the stale rule: the responder's one comparison per message. Every
  registry event and heartbeat acknowledgement resets it, and ``gated`` (the slow path)
  computes it again;
- the stale rule: when our own last acknowledged heartbeat was sent more than an entry's
  lifetime ago, the others may have given us up and stopped claiming: run nothing more,
  drop the subscription and rejoin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import registry
from .claims import Claims
from .errors import ConnectionLost
from .link import Publisher, Subscriber
from .metrics import counter, gauge
from .protocol import Request
from .ratelog import RateLimitedLog
from .registry import LIFETIME_INTERVALS, Announcer, Directory, Entry
from .settings import Settings

if TYPE_CHECKING:
    from .responder import ResponderStats

log = logging.getLogger("pubsub_rpc.responder")

Accept = Callable[[Request, str, str, int], None]
Fields = Callable[[Request, str], dict[str, Any]]


class Replicas:
    def __init__(
        self,
        settings: Settings,
        name: str,
        publisher: Publisher,
        subscriber: Subscriber,
        stats: ResponderStats,
        actions: dict[str, Any],
        accept: Accept,
        fields: Fields,
    ) -> None:
        self.name = name
        self.instance = registry.new_instance()
        self.fast_until = -float("inf")
        self.claims_pending = 0  # claims sent, not answered yet: their messages have no outcome yet
        self._settings = settings
        self._publisher = publisher
        self._subscriber = subscriber
        self._stats = stats
        self._actions = actions
        self._accept = accept
        self._fields = fields
        self._log = RateLimitedLog(log)
        interval = settings.announce_interval
        self.lifetime = LIFETIME_INTERVALS * interval
        self.claims = Claims(publisher, settings.claim_prefix, self.instance, settings.claims, self.lifetime)
        self.directory = Directory(settings.registry_name, self.instance, self._on_registry_change)
        self._announcer = Announcer(
            publisher,
            settings.registry_name,
            instance=self.instance,
            service=settings.service,
            pattern=settings.responder_pattern,
            actions=lambda: list(actions),
            claims=settings.claims != "off",
            interval=interval,
            on_ack=self._beat_acked,
        )
        subscriber.add_side_channel(settings.registry_name, self.directory.on_message)
        subscriber.before_patterns = self.join
        subscriber.on_disconnect(self.directory.reset)
        self._fresh_until = -float("inf")  # our last acknowledged heartbeat's send time + lifetime
        self._rejoining = False
        self._announcing: asyncio.Task[None] | None = None

    @property
    def claiming(self) -> bool:
        return self.claims.active(perf_counter())

    # -- per request -----------------------------------------------------------------

    def gated(self, request: Request, channel: str, reply_channel: str, size: int, received: float) -> None:
        """The slow path: the stale rule, then run unclaimed, or claim first."""
        if self._stale(received):
            return
        stats = self._stats
        claims = self.claims
        if not claims.active(received):
            self.fast_until = self._fresh_until  # solo: the fast path until the next event
            self._accept(request, channel, reply_channel, size)
            return
        if request.request_id is None:
            self._accept(request, channel, reply_channel, size)  # notifications: every replica runs them
            return
        if request.expired():
            stats.expired += 1
            return
        if request.action not in self._actions and self.directory.serves(channel, request.action, received):
            self.not_ours(request)
            return
        self.claims_pending += 1
        claims.claim(request.request_id, request.deadline_ms, self._claimed, (request, channel, reply_channel, size))

    def once(self, request_id: str, received: float, answer: Callable[[], None]) -> None:
        """An answer without a handler (``invalid_request``): the stale rule, then sent by
        the one replica whose claim wins."""
        if self._stale(received):
            return
        if not self.claims.active(received):
            answer()
            return
        self.claims_pending += 1
        self.claims.claim(request_id, None, self._claimed_once, answer)

    def _stale(self, received: float) -> bool:
        """The stale rule: a message read after our entry may have expired is dropped
        (counted), and the first such one starts the rejoin."""
        if not (self._rejoining or received > self._fresh_until):
            return False
        if not self._rejoining:
            self._go_stale()
        self._stats.stale += 1
        self._stats.dropped += 1
        return True

    def _claimed_once(self, answer: Callable[[], None], reply: Any) -> None:
        self.claims_pending -= 1
        stats = self._stats
        if reply == b"OK":
            stats.claims_won += 1
            answer()
        else:
            stats.dropped += 1
            if reply is None:
                stats.claimed_elsewhere += 1
            else:
                stats.lost_claims += 1

    def _claimed(self, argument: tuple[Request, str, str, int], reply: Any) -> None:
        request, channel, reply_channel, size = argument
        stats = self._stats
        self.claims_pending -= 1
        if reply == b"OK":
            stats.claims_won += 1
            self._accept(request, channel, reply_channel, size)
        elif reply is None:
            stats.claimed_elsewhere += 1
            stats.dropped += 1
        else:
            stats.lost_claims += 1
            stats.dropped += 1
            self._log.warning("claim", "%s: claim failed: %s", self.name, reply, extra=self._fields(request, "lost_claim"))

    def not_ours(self, request: Request) -> None:
        """Another live responder serves this action: its answer, not ours."""
        self._stats.not_ours += 1
        self._stats.dropped += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: not ours: another live responder serves it", self.name, extra=self._fields(request, "not_ours"))

    # -- joining, heartbeats, the stale rule -----------------------------------------

    def start(self) -> None:
        self._announcing = asyncio.create_task(self._announcer.run(self._check_stale), name=f"announce:{self.name}")
        self._announcing.add_done_callback(self._announcer_done)

    async def stop(self) -> None:
        """After the subscription is closed (we hear no more requests): stop beating,
        leave, and send the claims still deferred so their answers come back."""
        task, self._announcing = self._announcing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._announcer.leave()
        self.claims.flush()

    def _announcer_done(self, task: asyncio.Task[None]) -> None:
        """Supervision: a heartbeat task that died of a bug is logged and restarted (without
        heartbeats the stale rule would stop this responder)."""
        if task.cancelled() or self._announcing is not task:
            return
        log.error("%s: registry announcer died; restarting it", self.name, exc_info=task.exception())
        self.start()

    async def join(self) -> None:
        """Before every PSUBSCRIBE (start, and each reconnect): claim for a grace, load the
        registry, announce our join and wait for Redis to take it. A responder already
        serving hears the join before any request we can hear, so it claims too."""
        interval = self._settings.announce_interval
        timeout = self._settings.connect_timeout
        publisher = self._publisher
        self.claims.joined(perf_counter())
        self.fast_until = -float("inf")
        while True:
            if not publisher.ready.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await publisher.ready.wait()
                continue
            try:
                await registry.load(self.directory, publisher, timeout, prune=True)
                await self._announcer.join(timeout)
            except ConnectionLost as exc:
                self._log.warning("join", "%s: registry join failed (%s); retrying", self.name, exc)
                await asyncio.sleep(interval)  # a retry pause, bounded: the join is retried until it works
                continue
            break
        self.claims.settled(perf_counter(), self.directory.others_until())
        self._update_members()
        self._rejoining = False

    def _beat_acked(self, sent_at: float) -> None:
        fresh = sent_at + self.lifetime
        if fresh > self._fresh_until:
            self._fresh_until = fresh
        self.fast_until = -float("inf")  # look again at the next message

    def _on_registry_change(self, entry: Entry | None) -> None:
        if entry is not None:
            self.claims.heard(entry.expires)
        else:
            self.claims.left(self.directory.others_until(), perf_counter())
        self.fast_until = -float("inf")
        self._update_members()

    def _update_members(self) -> None:
        """Who claims, for the claims' preferred-replica balance (pubsub_rpc.claims)."""
        members = tuple(sorted([self.instance, *(e.instance for e in self.directory.live() if e.claims)]))
        if members != self.claims.members:
            self.claims.members = members

    def _check_stale(self) -> None:
        """Each announce interval: the stale rule without waiting for a request."""
        if self._subscriber.ready.is_set() and not self._rejoining and perf_counter() > self._fresh_until:
            self._go_stale()
        self.directory.prune()
        self._update_members()

    def _go_stale(self) -> None:
        """Our heartbeat went unacknowledged for an entry's lifetime, so the others may have
        stopped claiming against us: run nothing more, drop the subscription and rejoin."""
        self._rejoining = True
        self.fast_until = -float("inf")
        self._stats.stale_rejoins += 1
        log.warning(
            "%s: own registry heartbeat unacknowledged for over %.1fs (frozen, or Redis unreachable): "
            "running no more requests; resubscribing after a new join",
            self.name,
            self.lifetime,
        )
        self._subscriber.drop("stale")

    # -- metrics ---------------------------------------------------------------------

    def families(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats
        return [
            counter(
                "rpc_server_claims",
                "Claims of competing replicas by result: won (ran it), elsewhere (another replica runs it), lost (no answer)",
                {"won": stats.claims_won, "elsewhere": stats.claimed_elsewhere, "lost": stats.lost_claims},
                "result",
            ),
            gauge("rpc_server_claiming", "1 while this responder claims each request", float(self.claiming)),
            counter(
                "rpc_server_stale_rejoins",
                "Subscriptions dropped because our own registry heartbeat went unacknowledged (a freeze, or Redis away)",
                stats.stale_rejoins,
            ),
            gauge("rpc_registry_responders", "Live responders in the registry, itself included", len(self.directory.live()) + 1),
        ]
