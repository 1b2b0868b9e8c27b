"""Push fan-out: CLIENTS WebSockets on the gateway; EVENTS pushes published to Redis at a
fixed rate (open loop: OFFERED deliveries/s in total), so latency is measured under a known
load rather than under a queue the generator built. Reports achieved deliveries/s and
push-to-browser latency (publish time to client receive time, same host clock).

python -m bench.fanout WS_URL REDIS_URL CHANNEL CLIENTS EVENTS OFFERED
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time

import orjson
from pubsub_rpc import protocol
from pubsub_rpc.link import Publisher

from .stats import cpu_seconds, emit, mark, summarise
from .wsclient import bench_token, connect


async def main() -> None:
    ws_url, redis_url, channel = sys.argv[1:4]
    clients, events, offered = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    interval = clients / offered  # seconds between pushes
    latencies: list[int] = []
    expected = clients * events
    received = 0
    all_received = asyncio.Event()

    def on_text(payload: bytes, sampled: bool) -> None:
        # Latency from every 10th client (spread over fan-out order); the rest only count,
        # so the generator's CPU goes to reading sockets, not to parsing JSON.
        nonlocal received
        if b'"tick"' not in payload:
            return
        if sampled:
            latencies.append(time.time_ns() - orjson.loads(payload)["data"]["t"])
        received += 1
        if received == expected:
            all_received.set()

    publisher = Publisher(redis_url, "bench-pusher")
    publisher.start()
    await publisher.wait_ready(10)
    token = bench_token()
    sockets = [await connect(ws_url, functools.partial(on_text, sampled=i % 10 == 0), token) for i in range(clients)]
    loop = asyncio.get_running_loop()
    mark("measuring")
    cpu_before, started = cpu_seconds(), time.perf_counter()
    first = loop.time()
    for n in range(events):
        delay = first + n * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await publisher.publish(channel, protocol.encode_push("bench", "tick", {"n": n, "t": time.time_ns()}))
    await asyncio.wait_for(all_received.wait(), 120)
    elapsed = time.perf_counter() - started
    mark("measured")
    for sock in sockets:
        if sock.transport is not None:
            sock.transport.close()
    await publisher.close()
    result = summarise(latencies, 0, elapsed, count=received)  # latencies are a 1-in-10 sample
    result.update(clients=clients, events=events, offered=offered, loadgen_cpu=cpu_seconds() - cpu_before)
    emit(result)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
