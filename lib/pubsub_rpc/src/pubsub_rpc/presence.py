"""Presence: each service says "I am here, ready, serving these actions" every few seconds.

A heartbeat is one small JSON object on ``<channel>.presence`` (``Settings.presence_channel``)
sent on the publisher connection the process already has, so it costs no connection and
proves that connection writes. Gateways subscribe that channel and show the services alive
on the demo page (``ws_gateway.presence``); a service that stops says so on its way out
(``ready: false, leaving: true``), one that dies is dropped after three missed beats.

    {"service": "laravel_like_responder", "kind": "responder", "instance": "3f9a0c1e",
     "actions": ["echo", "sum"], "ready": true, "ts": 1796000000.5, "interval": 2.0}

Heartbeats are informational: nothing decides routing on them, and readers must treat
them as untrusted input (anyone allowed to publish there can write one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .errors import Backpressure, ConnectionLost
from .link import Publisher
from .ratelog import RateLimitedLog

if TYPE_CHECKING:
    from .caller import Caller
    from .responder import Responder

log = logging.getLogger(__name__)
Kind = Literal["responder", "caller", "gateway"]
KINDS: frozenset[str] = frozenset({"responder", "caller", "gateway"})


def heartbeat(
    service: str, kind: Kind, instance: str, actions: Sequence[str], ready: bool, interval: float, *, leaving: bool = False
) -> bytes:
    body: dict[str, Any] = {
        "service": service,
        "kind": kind,
        "instance": instance,
        "actions": sorted(actions),
        "ready": ready,
        "ts": round(time.time(), 3),
        "interval": interval,
    }
    if leaving:
        body["leaving"] = True
    return orjson.dumps(body)


class Beacon:
    """Publishes this process's heartbeat every ``interval`` seconds while ``run()`` runs.

    ``run()`` never raises for Redis trouble (a dropped or refused PUBLISH is logged,
    rate-limited, and retried next beat), so a service can put it in its TaskGroup next to
    its other background work; cancelling it sends the leaving beat.
    """

    def __init__(
        self,
        publisher: Publisher,
        channel: str,
        *,
        service: str,
        kind: Kind,
        ready: Callable[[], bool],
        actions: Callable[[], Sequence[str]] = tuple,
        interval: float = 2.0,
    ) -> None:
        self.channel = channel
        self.service = service
        self.kind: Kind = kind
        self.instance = secrets.token_hex(4)  # random: hostnames and pids stay private
        self.interval = interval
        self.sent = 0
        self.skipped = 0  # beats due while the connection was down
        self._publisher = publisher
        self._ready = ready
        self._actions = actions
        self._log = RateLimitedLog(log, interval=60.0)

    def _beat(self, *, leaving: bool = False) -> bytes:
        ready = not leaving and self._ready()
        return heartbeat(self.service, self.kind, self.instance, list(self._actions()), ready, self.interval, leaving=leaving)

    async def run(self) -> None:
        if self.interval <= 0:
            return
        try:
            while True:
                if not self._publisher.ready.is_set():
                    self.skipped += 1
                else:
                    try:
                        await self._publisher.publish(self.channel, self._beat())
                        self.sent += 1
                    except (ConnectionLost, Backpressure) as exc:  # down, backpressured, or the ACL refuses the channel
                        self._log.warning("publish", "presence heartbeat on %s not sent: %s", self.channel, exc)
                await asyncio.sleep(self.interval)
        finally:
            # Best effort, not awaited: the link may be closing too.
            with contextlib.suppress(ConnectionLost, Backpressure, RuntimeError):
                if self._publisher.ready.is_set():
                    self._publisher.publish_nowait(self.channel, self._beat(leaving=True))


def beacon_for(
    runner: Caller | Responder, kind: Kind, *, service: str | None = None, ready: Callable[[], bool] | None = None
) -> Beacon:
    """A Beacon on ``runner``'s own publisher connection; a responder lists its actions.
    ``ready`` defaults to the runner's own readiness (a gateway passes its wider one).
    Presence must not cost a connection of its own, so it shares the runner's publisher.
    """
    settings = runner.settings
    publisher: Publisher = runner.publisher
    actions: Callable[[], Sequence[str]] = tuple
    responder_actions = getattr(runner, "actions", None)
    if isinstance(responder_actions, dict):
        actions = lambda: list(responder_actions)  # noqa: E731 - read at each beat: actions may be added later
    return Beacon(
        publisher,
        settings.presence_channel,
        service=service or settings.service,
        kind=kind,
        ready=ready or (lambda: runner.ready),
        actions=actions,
        interval=settings.presence_interval,
    )
