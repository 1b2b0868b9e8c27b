"""The plain redis-py asyncio pair, no framework: a reference point, not our code path.

python -m bench.redispy_pair responder URL CHANNEL
python -m bench.redispy_pair caller URL CHANNEL INFLIGHT SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from .stats import cpu_seconds, emit, mark, summarise


async def responder(url: str, channel: str) -> None:
    client = aioredis.Redis.from_url(url, max_connections=2048)
    async with client.pubsub() as pubsub:
        await pubsub.subscribe(channel + "_sender")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        publishing: set[asyncio.Task[int]] = set()
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            request = json.loads(message["data"])
            reply = {"source": "py", "action": request["action"], "requestId": request["requestId"], "result": request["data"]}
            # Concurrent publishes over the pool, as a competent plain version would: awaiting
            # each one in turn would cap it at one Redis round trip per request.
            task = asyncio.create_task(_publish(client, channel, json.dumps(reply)))
            publishing.add(task)
            task.add_done_callback(publishing.discard)


async def _publish(client: aioredis.Redis, channel: str, body: str) -> int:
    receivers: int = await client.publish(channel, body)
    return receivers


async def caller(url: str, channel: str, inflight: int, seconds: float) -> None:
    # One pooled connection per call in flight is what plain redis-py needs to pipeline at all.
    client = aioredis.Redis.from_url(url, max_connections=inflight + 8)
    pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
    async with client.pubsub() as pubsub:
        await pubsub.subscribe(channel)

        async def listen() -> None:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    reply = json.loads(message["data"])
                    future = pending.pop(reply.get("requestId"), None)
                    if future is not None and not future.done():
                        future.set_result(reply)

        listener = asyncio.create_task(listen())
        payload = "x" * 100
        latencies: list[int] = []

        async def call() -> None:
            request_id = str(uuid.uuid4())
            future = asyncio.get_running_loop().create_future()
            pending[request_id] = future
            body = json.dumps({"action": "echo", "data": payload, "requestId": request_id, "source": "py"})
            await client.publish(channel + "_sender", body)
            await asyncio.wait_for(future, 10)

        stop_at = time.monotonic() + 0.5
        while time.monotonic() < stop_at:  # warm up with the same concurrency: the pool fills here
            await asyncio.gather(*(call() for _ in range(inflight)))
        stop_at = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < stop_at:
                started = time.perf_counter_ns()
                await call()
                latencies.append(time.perf_counter_ns() - started)

        mark("measuring")
        cpu_before, started = cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        result = summarise(latencies, 0, time.perf_counter() - started)
        mark("measured")
        result["cpu"] = cpu_seconds() - cpu_before
        emit(result)
        listener.cancel()
    await client.aclose()


if __name__ == "__main__":
    role, url, channel, *rest = sys.argv[1:]
    if role == "responder":
        asyncio.run(responder(url, channel))
    else:
        asyncio.run(caller(url, channel, int(rest[0]), float(rest[1])))
