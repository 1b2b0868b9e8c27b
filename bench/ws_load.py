"""Load through the gateway: CLIENTS WebSockets, each with WINDOW calls in flight.

python -m bench.ws_load WS_URL CLIENTS WINDOW SECONDS
The generator is one process with a lean client (bench/wsclient.py); the report gives its
CPU seconds, so a reader can tell whether it, rather than the gateway, was the limit. It
shares the 2 cores with the gateway, so it is kept lean but honest: real RFC 6455 frames
(masked, with an all-zero key), one JSON call per frame, every reply parsed; the frames a
socket sends in one loop tick leave in one write (issue 13: this took the generator from
about 8.5 to 3.3 us of CPU per call; the gateway reads the same frames either way).
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from .stats import cpu_seconds, emit, mark, summarise
from .wsclient import bench_token, connect

PAYLOAD = "x" * 100


async def run_clients(url: str, clients: int, window: int, seconds: float, latencies: list[int]) -> int:
    stop_at = time.monotonic() + seconds
    errors = 0
    finished = asyncio.Event()
    outstanding = 0

    def make_client() -> tuple[dict[int, int], list[int]]:
        return {}, [0]

    async def one(sent: dict[int, int], next_id: list[int]) -> None:
        nonlocal errors, outstanding

        def send() -> None:
            nonlocal outstanding
            next_id[0] += 1
            sent[next_id[0]] = time.perf_counter_ns()
            outstanding += 1
            sock.send_text(orjson.dumps({"type": "call", "id": next_id[0], "action": "echo", "data": PAYLOAD}))

        def on_text(payload: bytes) -> None:
            nonlocal errors, outstanding
            frame = orjson.loads(payload)
            started = sent.pop(frame.get("id"), None) if frame["type"] in ("result", "error") else None
            if started is None:
                return
            outstanding -= 1
            if frame["type"] == "result":
                latencies.append(time.perf_counter_ns() - started)
            else:
                errors += 1
            if time.monotonic() < stop_at:
                send()
            elif outstanding == 0:
                finished.set()

        sock = await connect(url, on_text, bench_token())
        for _ in range(window):
            send()

    await asyncio.gather(*(one(*make_client()) for _ in range(clients)))
    await asyncio.wait_for(finished.wait(), seconds + 30)
    return errors


async def main() -> None:
    url, clients, window, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    await run_clients(url, clients, window, 0.5, [])  # warm-up
    latencies: list[int] = []
    mark("measuring")
    cpu_before, started = cpu_seconds(), time.perf_counter()
    errors = await run_clients(url, clients, window, seconds, latencies)
    result = summarise(latencies, errors, time.perf_counter() - started)
    mark("measured")
    result["loadgen_cpu"] = cpu_seconds() - cpu_before
    emit(result)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
