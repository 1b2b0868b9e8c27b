"""The live view's feed: `stats` frames once a second and `presence` frames on change,
to the sockets that asked with ``{"type": "watch", ...}``.

One task for the whole gateway, not a timer per socket: it runs while anyone watches and
ends when the last watcher leaves. Each frame is encoded once and queued for every
watcher (the same bytes, like a push).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import Any

import orjson

from .clients import WsClient, text_frame
from .livestats import LiveStats
from .presence import PresenceBoard

log = logging.getLogger(__name__)
TICK = 1.0  # seconds between stats frames
TICK_OFFSET = 0.01  # just after the second turns, so the second just ended is complete


def encode(value: dict[str, Any]) -> bytes:
    return text_frame(orjson.dumps(value))


class LiveFeed:
    def __init__(self, stats: LiveStats, board: PresenceBoard) -> None:
        self.stats = stats
        self.board = board
        self.stats_watchers: weakref.WeakSet[WsClient] = weakref.WeakSet()
        self.presence_watchers: weakref.WeakSet[WsClient] = weakref.WeakSet()
        self.ticks = 0
        self._sent_version = -1
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def presence_frame(self) -> bytes:
        return encode({"type": "presence", "services": self.board.services()})

    def watch(self, client: WsClient, stats: bool, presence: bool) -> None:
        """Start or stop this socket's feeds; a feed it starts begins with the current state."""
        for wanted, watchers in ((stats, self.stats_watchers), (presence, self.presence_watchers)):
            if wanted:
                watchers.add(client)
            else:
                watchers.discard(client)
        if stats:
            client.send(encode(self.stats.snapshot()))
        if presence:
            self.board.prune()
            client.send(self.presence_frame())
        if (self.stats_watchers or self.presence_watchers) and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="live-feed")
            self._task.add_done_callback(self._ended)

    def forget(self, client: WsClient) -> None:
        self.stats_watchers.discard(client)
        self.presence_watchers.discard(client)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the live feed stopped", exc_info=task.exception())

    async def _run(self) -> None:
        while self.stats_watchers or self.presence_watchers:
            now = time.time()
            await asyncio.sleep(TICK - now % TICK + TICK_OFFSET)
            try:
                self.tick()
            except Exception:  # a bug in one tick must not end the feed
                log.exception("live feed tick failed")

    def tick(self) -> None:
        self.ticks += 1
        stats_watchers = [c for c in self.stats_watchers if c.identity is not None and not c.closing]
        if stats_watchers:
            frame = encode(self.stats.snapshot())
            for client in stats_watchers:
                client.send(frame)
        self.board.prune()
        if self.board.version != self._sent_version:
            self._sent_version = self.board.version
            presence = self.presence_frame()
            for client in self.presence_watchers:
                if client.identity is not None and not client.closing:
                    client.send(presence)
