"""Push fan-out: CLIENTS WebSockets on the gateway; EVENTS pushes published to Redis, at most
WINDOW of them not yet delivered everywhere. Measures deliveries/s and push-to-browser latency.

python -m bench.fanout WS_URL REDIS_URL CHANNEL CLIENTS EVENTS
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson

from pubsub_rpc import protocol
from pubsub_rpc.link import Publisher

from .stats import cpu_seconds, emit, summarise

WINDOW = 4


async def main() -> None:
    ws_url, redis_url, channel, clients, events = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    latencies: list[int] = []
    delivered = [0] * events
    progress = asyncio.Condition()
    publisher = Publisher(redis_url, "bench-pusher")
    publisher.start()
    await publisher.wait_ready(10)
    connected = 0
    all_connected = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal connected
        async with session.ws_connect(ws_url, max_msg_size=0) as ws:
            connected += 1
            if connected == clients:
                all_connected.set()
            seen = 0
            async for message in ws:
                frame = orjson.loads(message.data)
                if frame["type"] != "event" or frame["action"] != "tick":
                    continue
                latencies.append(time.time_ns() - frame["data"]["t"])
                delivered[frame["data"]["n"]] += 1
                seen += 1
                if delivered[frame["data"]["n"]] == clients:
                    async with progress:
                        progress.notify_all()
                if seen == events:
                    return

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(clients)]
        await asyncio.wait_for(all_connected.wait(), 60)
        cpu_before, started = cpu_seconds(), time.perf_counter()
        for n in range(events):
            async with progress:
                await progress.wait_for(lambda n=n: n < WINDOW or delivered[n - WINDOW] == clients)
            payload = protocol.encode_push("bench", "tick", {"n": n, "t": time.time_ns()})
            await publisher.publish(channel, payload)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        elapsed = time.perf_counter() - started
    await publisher.close()
    result = summarise(latencies, 0, elapsed)
    result.update(clients=clients, events=events, loadgen_cpu=cpu_seconds() - cpu_before)
    emit(result)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
