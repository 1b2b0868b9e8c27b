"""Load through the gateway: CLIENTS WebSockets, each with WINDOW calls in flight.

python -m bench.ws_load WS_URL CLIENTS WINDOW SECONDS
The generator is one Python process; the report says how much CPU it used, so a reader can
tell whether it, rather than the gateway, was the limit.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson

from .stats import cpu_seconds, emit, summarise


async def client(session: aiohttp.ClientSession, url: str, window: int, stop_at: float, latencies: list[int], errors: list[int]) -> None:
    async with session.ws_connect(url, max_msg_size=0) as ws:
        sent: dict[int, int] = {}
        next_id = 0
        payload = "x" * 100

        async def send() -> None:
            nonlocal next_id
            next_id += 1
            sent[next_id] = time.perf_counter_ns()
            await ws.send_str(orjson.dumps({"type": "call", "id": next_id, "action": "echo", "data": payload}).decode())

        for _ in range(window):
            await send()
        async for message in ws:
            frame = orjson.loads(message.data)
            started = sent.pop(frame.get("id"), None) if frame["type"] in ("result", "error") else None
            if started is None:
                continue
            if frame["type"] == "result":
                latencies.append(time.perf_counter_ns() - started)
            else:
                errors.append(1)
            if time.monotonic() < stop_at:
                await send()
            elif not sent:
                break


async def main() -> None:
    url, clients, window, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session, url, window, time.monotonic() + 0.5, [], []) for _ in range(clients)))  # warm-up
        latencies: list[int] = []
        errors: list[int] = []
        cpu_before, started = cpu_seconds(), time.perf_counter()
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(client(session, url, window, stop_at, latencies, errors) for _ in range(clients)))
        result = summarise(latencies, len(errors), time.perf_counter() - started)
        result["loadgen_cpu"] = cpu_seconds() - cpu_before
        emit(result)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
