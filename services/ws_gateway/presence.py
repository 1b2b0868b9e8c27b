"""The services alive, from their heartbeats on ``<channel>.presence`` (pubsub_rpc.presence).

The gateway SUBSCRIBEs that one channel on a connection of its own and keeps a board:
who beat last, ready or not, with which actions. An entry is *stale* once it missed a beat
(1.5 intervals without one) and is removed after three, or at once when it says it is
leaving. Heartbeats are untrusted input (anyone allowed to publish there can write one):
each is checked field by field and bounded, the board is capped, and a bad one is counted
(``presence_malformed``) and dropped. Only the page's live view reads the board.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pubsub_rpc import Settings
from pubsub_rpc.link import Subscriber, link_options
from pubsub_rpc.presence import KINDS

from .limits import Counters

log = logging.getLogger(__name__)
MAX_HEARTBEAT_BYTES = 16_384
MAX_NAME_CHARS = 64
MAX_ACTIONS = 200
MAX_ENTRIES = 256
STALE_AFTER = 1.5  # intervals without a beat: shown as stale
GONE_AFTER = 3.0  # intervals without a beat: removed
KIND_ORDER = {"responder": 0, "caller": 1, "gateway": 2}


class BadHeartbeat(ValueError):
    pass


@dataclass(slots=True)
class Entry:
    service: str
    kind: str
    instance: str
    actions: tuple[str, ...]
    ready: bool
    interval: float
    seen: float  # our clock, not the sender's
    stale: bool = False

    def shown(self) -> dict[str, Any]:
        state = "stale" if self.stale else "ready" if self.ready else "not ready"
        return {
            "service": self.service,
            "kind": self.kind,
            "instance": self.instance,
            "actions": list(self.actions),
            "ready": self.ready and not self.stale,
            "state": state,
        }


def _name(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS or not value.isprintable():
        raise BadHeartbeat(f"`{field}` must be a printable string of 1..{MAX_NAME_CHARS} characters")
    return value


def parse(raw: bytes, now: float) -> tuple[Entry, bool]:
    """An entry and whether it is leaving, or BadHeartbeat."""
    if len(raw) > MAX_HEARTBEAT_BYTES:
        raise BadHeartbeat("too large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadHeartbeat("not JSON") from None
    if not isinstance(body, dict):
        raise BadHeartbeat("not an object")
    kind = body.get("kind")
    if kind not in KINDS:
        raise BadHeartbeat("unknown kind")
    actions = body.get("actions", [])
    if not isinstance(actions, list) or len(actions) > MAX_ACTIONS:
        raise BadHeartbeat(f"`actions` must be a list of at most {MAX_ACTIONS} names")
    names = tuple(sorted({_name({"a": a}, "a") for a in actions}))
    interval = body.get("interval", 2.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0.1 <= interval <= 60:
        raise BadHeartbeat("`interval` must be 0.1..60 seconds")
    entry = Entry(
        _name(body, "service"), str(kind), _name(body, "instance"), names, body.get("ready") is True, float(interval), now
    )
    return entry, body.get("leaving") is True


class PresenceBoard:
    """Who is alive. ``version`` changes whenever what ``services()`` returns changes."""

    def __init__(self, counters: Counters, clock: Callable[[], float] = time.monotonic) -> None:
        self._counters = counters
        self._clock = clock
        self._entries: dict[tuple[str, str], Entry] = {}
        self.version = 0

    def heard(self, raw: bytes) -> None:
        now = self._clock()
        try:
            entry, leaving = parse(raw, now)
        except BadHeartbeat:
            self._counters.presence_malformed += 1
            return
        key = (entry.service, entry.instance)
        old = self._entries.get(key)
        if leaving:
            if self._entries.pop(key, None) is not None:
                self.version += 1
            return
        if old is None and len(self._entries) >= MAX_ENTRIES:
            self._counters.presence_malformed += 1  # a flood of made-up instances
            return
        if old is None or (old.kind, old.actions, old.ready, old.stale) != (entry.kind, entry.actions, entry.ready, False):
            self.version += 1
        self._entries[key] = entry

    def prune(self) -> None:
        """Mark entries that missed a beat stale and drop those that missed three."""
        now = self._clock()
        for key, entry in list(self._entries.items()):
            silent = (now - entry.seen) / entry.interval
            if silent > GONE_AFTER:
                del self._entries[key]
                self.version += 1
            elif silent > STALE_AFTER and not entry.stale:
                entry.stale = True
                self.version += 1

    def services(self) -> list[dict[str, Any]]:
        entries = sorted(self._entries.values(), key=lambda e: (KIND_ORDER.get(e.kind, 9), e.service, e.instance))
        return [entry.shown() for entry in entries]


class PresenceListener:
    """The board, fed by a Subscriber of its own on the presence channel."""

    def __init__(self, settings: Settings, counters: Counters) -> None:
        self.board = PresenceBoard(counters)
        self.subscriber = Subscriber(
            settings.redis_dsn,
            "ws_gateway-presence",
            lambda channel, raw: self.board.heard(raw),
            channels=[settings.presence_channel],
            **link_options(settings),
        )
