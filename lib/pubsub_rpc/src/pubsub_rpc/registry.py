"""The responder registry: who serves which actions on which channels, right now.

Each Responder announces itself (``Announcer``) on ``Settings.registry_name``, which is
both a Redis hash and a pub/sub channel of that name: on start and every
``announce_interval`` seconds it writes its entry (``HSET <registry> <instance> <json>``)
and publishes the same JSON with ``"event": "join" | "beat" | "leave"``; on stop it
deletes the field and publishes ``leave``. The entry::

    {"instance": "3f9a0c1e5b7d2a46", "service": "laravel_like_responder",
     "pattern": "laravel_database_general_sender", "actions": ["echo", "sum"],
     "claims": true, "interval": 1.0, "ts": 1796000000.5}

A ``Directory`` is a reader's view of the live responders: loaded with HGETALL each time
its subscription (re)starts, then kept current by the announcements. An entry is alive
until ``3 x interval`` passes without a beat by the *reader's* monotonic clock (the
writer's ``ts`` only ages entries loaded from the hash, and prunes fields dead for over
``PRUNE_AFTER`` seconds). A responder reads it to claim requests while others are alive
(pubsub_rpc.claims) and to answer ``unknown_action`` only when nobody serves the action;
a caller with RPC_FAIL_FAST reads it to fail before publishing. docs/scale-out.md.

Announcements are untrusted input (anyone allowed to publish there can write one): a
malformed one is counted and ignored, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import hiredis
import orjson

from .errors import ConnectionLost
from .globs import glob_matches
from .link import Publisher
from .ratelog import RateLimitedLog

log = logging.getLogger(__name__)

LIFETIME_INTERVALS = 3  # an entry lives this many of its intervals after its last beat
PRUNE_AFTER = 60.0  # seconds (writer's wall clock): fields older than this are HDELed at load
MAX_ENTRIES = 1024  # announcements beyond this many instances are ignored (untrusted input)
MAX_ACTIONS = 1024


def new_instance() -> str:
    """A random instance id: unique per process run, no host name or pid in it."""
    return secrets.token_hex(8)


@dataclass(slots=True)
class Entry:
    """One live responder as a reader sees it."""

    instance: str
    service: str
    pattern: str
    actions: frozenset[str]
    claims: bool
    interval: float
    expires: float  # perf_counter() after which it is dead, unless another beat comes
    matches: dict[str, bool] = field(default_factory=dict)  # request channel -> pattern matches it

    def hears(self, channel: str) -> bool:
        verdict = self.matches.get(channel)
        if verdict is None:
            if len(self.matches) >= 256:
                self.matches.clear()
            verdict = self.matches[channel] = glob_matches(self.pattern, channel)
        return verdict


def _entry(body: Any, now: float, age: float = 0.0) -> Entry | None:
    """An Entry from a decoded announcement, or None when it is not one."""
    if not isinstance(body, dict):
        return None
    instance, service, pattern, actions = body.get("instance"), body.get("service"), body.get("pattern"), body.get("actions")
    interval = body.get("interval", 1.0)
    if not (isinstance(instance, str) and instance and len(instance) <= 64 and isinstance(pattern, str) and pattern):
        return None
    if not isinstance(actions, list) or len(actions) > MAX_ACTIONS or not all(isinstance(a, str) for a in actions):
        return None
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= 3600:
        return None
    return Entry(
        instance=instance,
        service=service if isinstance(service, str) else "",
        pattern=pattern,
        actions=frozenset(actions),
        claims=body.get("claims") is True,
        interval=float(interval),
        expires=now + LIFETIME_INTERVALS * interval - age,
    )


class Directory:
    """The live responders of one registry, minus ``own`` (a responder's own instance).

    ``on_change(entry_or_None)`` is called for every join or beat of another (with its
    entry) and for every leave (None), so a responder can switch to claiming at once.
    """

    def __init__(self, name: str, own: str = "", on_change: Callable[[Entry | None], None] | None = None) -> None:
        self.name = name
        self.own = own
        self.entries: dict[str, Entry] = {}
        self.loaded = False  # HGETALL answered since the subscription (re)started
        self.announcements = 0
        self.malformed = 0
        self._on_change = on_change
        self._version = 0  # bumped when an instance or its actions come or go (verdict cache)
        self._verdicts: dict[tuple[str, str], tuple[str, int, float]] = {}
        self._bad_input = RateLimitedLog(log, interval=60.0)

    # -- reading ---------------------------------------------------------------------

    def live(self, now: float | None = None) -> list[Entry]:
        now = perf_counter() if now is None else now
        return [entry for entry in self.entries.values() if entry.expires > now]

    def others_until(self) -> float:
        """perf_counter() until which another responder counts as alive (-inf: none)."""
        return max((entry.expires for entry in self.entries.values()), default=-float("inf"))

    def serves(self, channel: str, action: str, now: float | None = None) -> bool:
        """Does a live responder whose pattern hears ``channel`` serve ``action``?"""
        return self.verdict(channel, action, now) == "ok"

    def verdict(self, channel: str, action: str, now: float | None = None) -> str:
        """``ok`` (a live responder hears the channel and serves the action),
        ``unknown_action`` (live responders hear it, none serves it) or ``no_responder``."""
        now = perf_counter() if now is None else now
        key = (channel, action)
        cached = self._verdicts.get(key)
        if cached is not None and cached[1] == self._version and now < cached[2]:
            return cached[0]
        verdict, until = "no_responder", float("inf")
        for entry in self.entries.values():
            if entry.expires <= now or not entry.hears(channel):
                continue
            if action in entry.actions:
                if verdict != "ok":
                    verdict, until = "ok", entry.expires
                else:
                    until = max(until, entry.expires)
            elif verdict != "ok":
                verdict, until = "unknown_action", min(until, entry.expires)
        if len(self._verdicts) >= 1024:
            self._verdicts.clear()
        self._verdicts[key] = (verdict, self._version, until)
        return verdict

    # -- keeping it current ----------------------------------------------------------

    def reset(self) -> None:
        """The subscription (re)starts: forget everything until the next load."""
        self.entries.clear()
        self.loaded = False
        self._version += 1

    def on_message(self, raw: bytes) -> None:
        """An announcement from the registry channel (the subscriber calls this)."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        event = body.get("event") if isinstance(body, dict) else None
        now = perf_counter()
        entry = _entry(body, now) if event in ("join", "beat", "leave") else None
        if entry is None:
            self.malformed += 1
            self._bad_input.warning("malformed", "%s: ignored a malformed announcement", self.name)
            return
        self.announcements += 1
        if entry.instance == self.own:
            return
        if event == "leave":
            if self.entries.pop(entry.instance, None) is not None:
                self._version += 1
            if self._on_change is not None:
                self._on_change(None)
            return
        self._put(entry)
        if self._on_change is not None:
            self._on_change(entry)

    def load(self, fields: Any, publisher: Publisher | None = None) -> None:
        """HGETALL's answer (a flat [field, value, ...] list). Entries heard on the channel
        meanwhile win; loaded ones are aged by their writer's ``ts``. With a ``publisher``
        (responders: the ACL lets them HDEL), fields dead for over PRUNE_AFTER are deleted."""
        now, wall = perf_counter(), time.time()
        dead: list[bytes] = []
        if isinstance(fields, list):
            for i in range(0, len(fields) - 1, 2):
                name, value = fields[i], fields[i + 1]
                try:
                    body = orjson.loads(value)
                except orjson.JSONDecodeError:
                    body = None
                ts = body.get("ts") if isinstance(body, dict) else None
                age = max(wall - ts, 0.0) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else PRUNE_AFTER + 1
                if age > PRUNE_AFTER:
                    dead.append(name)
                    continue
                entry = _entry(body, now, age)
                if entry is None or entry.instance == self.own or entry.instance in self.entries or entry.expires <= now:
                    continue
                self._put(entry)
                if self._on_change is not None:
                    self._on_change(entry)
        self.loaded = True
        if dead and publisher is not None:
            with contextlib.suppress(ConnectionLost):
                publisher.execute(_ignore, None, b"HDEL", self.name.encode(), *dead)

    def _put(self, entry: Entry) -> None:
        known = self.entries.get(entry.instance)
        if known is not None and known.actions == entry.actions and known.pattern == entry.pattern:
            known.expires = entry.expires
            known.interval = entry.interval
            return
        if known is None and len(self.entries) >= MAX_ENTRIES:
            self.prune()
            if len(self.entries) >= MAX_ENTRIES:
                self._bad_input.warning("full", "%s: more than %d responders announced; ignored one", self.name, MAX_ENTRIES)
                return
        self.entries[entry.instance] = entry
        self._version += 1

    def prune(self, now: float | None = None) -> None:
        """Forget entries dead by our clock (they come back with their next beat)."""
        now = perf_counter() if now is None else now
        for instance in [i for i, e in self.entries.items() if e.expires <= now]:
            del self.entries[instance]
            self._version += 1


def _ignore(_: Any, reply: Any) -> None:
    if isinstance(reply, hiredis.ReplyError):
        log.warning("registry command refused: %s", reply)


async def execute(publisher: Publisher, timeout: float, *parts: bytes) -> Any:
    """One command on the publisher, its reply awaited (bounded); ConnectionLost if the
    link drops or Redis refuses it."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def answered(_: Any, reply: Any) -> None:
        if future.done():
            return
        if isinstance(reply, Exception):
            future.set_exception(reply if isinstance(reply, ConnectionLost) else ConnectionLost(f"Redis refused it: {reply}"))
        else:
            future.set_result(reply)

    publisher.execute(answered, None, *parts)
    try:
        async with asyncio.timeout(timeout):
            return await future
    except TimeoutError:
        raise ConnectionLost(f"{publisher.name}: no answer to {parts[0].decode()} within {timeout:g}s") from None


async def load(directory: Directory, publisher: Publisher, timeout: float, prune: bool = False) -> None:
    """(Re)load a directory from the hash; the caller has subscribed the channel already."""
    fields = await execute(publisher, timeout, b"HGETALL", directory.name.encode())
    directory.load(fields, publisher if prune else None)


class Announcer:
    """A responder's registry entry and heartbeat, on the responder's own publisher.

    ``join()`` (awaited before the responder's PSUBSCRIBE, on every (re)subscription)
    returns once Redis has answered the PUBLISH; ``run()`` beats every interval, at once
    when the publisher comes back; ``leave()`` deletes the entry. ``on_ack(sent_at)``
    gets the perf_counter() at which each acknowledged beat (or join) was *sent*: the
    responder's stale rule measures from there (docs/scale-out.md).
    """

    def __init__(
        self,
        publisher: Publisher,
        registry: str,
        *,
        instance: str,
        service: str,
        pattern: str,
        actions: Callable[[], Sequence[str]],
        claims: bool,
        interval: float,
        on_ack: Callable[[float], None],
    ) -> None:
        self.registry = registry
        self.instance = instance
        self.interval = interval
        self.beats = 0  # acknowledged
        self._key = registry.encode()
        self._publisher = publisher
        self._service, self._pattern, self._actions, self._claims = service, pattern, actions, claims
        self._on_ack = on_ack
        self._log = RateLimitedLog(log, interval=60.0)

    def entry(self, event: str = "") -> bytes:
        body: dict[str, Any] = {
            "instance": self.instance,
            "service": self._service,
            "pattern": self._pattern,
            "actions": sorted(self._actions()),
            "claims": self._claims,
            "interval": self.interval,
            "ts": round(time.time(), 3),
        }
        if event:
            body["event"] = event
        return orjson.dumps(body)

    def _send(self, event: str, on_published: Callable[[Any, Any], None]) -> None:
        """HSET and PUBLISH, pipelined in one write; ConnectionLost if the link is down."""
        self._publisher.execute(_ignore, None, b"HSET", self._key, self.instance.encode(), self.entry())
        self._publisher.execute(on_published, perf_counter(), b"PUBLISH", self._key, self.entry(event))

    async def join(self, timeout: float) -> None:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        def published(sent_at: float, reply: Any) -> None:
            if future.done():
                return
            if isinstance(reply, Exception):
                future.set_exception(reply if isinstance(reply, ConnectionLost) else ConnectionLost(f"refused: {reply}"))
            else:
                future.set_result(sent_at)

        self._send("join", published)
        try:
            async with asyncio.timeout(timeout):
                sent_at = await future
        except TimeoutError:
            raise ConnectionLost(f"no answer to the join announcement within {timeout:g}s") from None
        self._on_ack(sent_at)

    def _beat_answered(self, sent_at: float, reply: Any) -> None:
        if isinstance(reply, Exception):
            self._log.warning("beat", "registry heartbeat on %s failed: %s", self.registry, reply)
            return
        self.beats += 1
        self._on_ack(sent_at)

    async def run(self, tick: Callable[[], None] = lambda: None) -> None:
        """Beat every interval while the publisher is up (at once when it comes back);
        ``tick()`` runs each interval too (the responder's stale check). Never raises for
        Redis trouble."""
        ready = self._publisher.ready
        while True:
            if ready.is_set():
                await asyncio.sleep(self.interval)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await ready.wait()  # back: beat now, not an interval later
            tick()
            if ready.is_set():
                with contextlib.suppress(ConnectionLost):
                    self._send("beat", self._beat_answered)

    def leave(self) -> None:
        """Best effort, not awaited (the publisher drains before it closes)."""
        with contextlib.suppress(ConnectionLost, RuntimeError):
            self._publisher.execute(_ignore, None, b"HDEL", self._key, self.instance.encode())
            self._publisher.execute(_ignore, None, b"PUBLISH", self._key, self.entry("leave"))
