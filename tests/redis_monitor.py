"""A raw ``PSUBSCRIBE *`` connection that records every message published on the server,
so a test can count what a responder really publishes (not what it says it did)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis


class Monitor:
    def __init__(self, client: aioredis.Redis, pattern: str = "*") -> None:
        self._pubsub = client.pubsub()
        self._pattern = pattern
        self.messages: list[tuple[bytes, bytes]] = []  # (channel, data), in Redis's order
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._pubsub.psubscribe(self._pattern)
        async with asyncio.timeout(5):
            while (message := await self._pubsub.get_message(timeout=1.0)) is None or message["type"] != "psubscribe":
                pass
        self._task = asyncio.create_task(self._read(), name="monitor")

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "pmessage":
                self.messages.append((message["channel"], message["data"]))

    def check(self) -> None:
        """Raise what the reader died of, if it did (a supervised background task)."""
        if self._task is not None and self._task.done():
            self._task.result()

    def on(self, channel: str | bytes) -> list[bytes]:
        name = channel.encode() if isinstance(channel, str) else channel
        return [data for ch, data in self.messages if ch == name]

    def channels(self) -> set[bytes]:
        return {channel for channel, _ in self.messages}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pubsub.aclose()


@contextlib.asynccontextmanager
async def monitoring(client: aioredis.Redis, pattern: str = "*") -> AsyncIterator[Monitor]:
    monitor = Monitor(client, pattern)
    await monitor.start()
    try:
        yield monitor
        monitor.check()
    finally:
        await monitor.stop()


async def publish_count(client: aioredis.Redis) -> int:
    """PUBLISH commands the server has run so far (INFO commandstats): evidence independent
    of any subscriber, for counting what a storm would have sent."""
    stats = await client.info("commandstats")
    entry = stats.get("cmdstat_publish")
    return int(entry["calls"]) if entry else 0
