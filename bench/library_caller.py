"""Load from the library's Caller: N calls in flight for a fixed time (or a fixed count).

python -m bench.library_caller URL CHANNEL INFLIGHT SECONDS [--calls N] [--payload BYTES] [--metrics-port P]
    [--streams] [--cluster] [--no-metrics]

The caller counts metrics (every feature on, as deployed) and serves /metrics on
--metrics-port when given; --no-metrics counts none (the baseline of the metrics-cost row).
Tracing stays off, as in the images (which do not install OpenTelemetry).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from pubsub_rpc import Caller, RpcError, Settings
from pubsub_rpc.lifecycle import run
from pubsub_rpc.metrics import served

from .stats import cpu_seconds, emit, mark, rss_mib, summarise


async def main(args: argparse.Namespace) -> None:
    settings = Settings(
        redis_url=args.url,
        channel=args.channel,
        private_replies=not args.shared_replies,
        call_timeout=10,
        transport="streams" if args.streams else "pubsub",
        redis_cluster=args.cluster,
    )
    payload = "x" * args.payload
    latencies: list[int] = []
    caller = Caller(settings, name="bench-caller", metrics=not args.no_metrics, tracing=False)
    with served(args.metrics_port, "127.0.0.1", caller.metric_families):
        await load(caller, args, payload, latencies)


async def load(caller: Caller, args: argparse.Namespace, payload: str, latencies: list[int]) -> None:
    errors = 0
    async with caller:
        await caller.call("echo", payload)  # the responder is there
        warm_until = time.monotonic() + args.warmup
        while time.monotonic() < warm_until:
            await asyncio.gather(*(caller.call("echo", payload) for _ in range(args.inflight)))
        remaining = args.calls
        record = args.calls == 0  # the memory run records nothing, so RSS is the library's alone
        rss_before = rss_mib()
        stop_at = time.monotonic() + args.seconds

        async def worker() -> None:
            nonlocal errors, remaining
            clock = time.perf_counter_ns
            while time.monotonic() < stop_at if args.calls == 0 else remaining > 0:
                remaining -= 1
                started = clock()
                try:
                    await caller.call("echo", payload)
                except RpcError:
                    errors += 1
                else:
                    if record:
                        latencies.append(clock() - started)

        samples: list[float] = []
        sampler = asyncio.create_task(sample_rss(samples))  # a fixed-count (memory) run's RSS, every second
        mark("measuring")
        cpu_before, started = cpu_seconds(), time.perf_counter()
        try:
            await asyncio.gather(*(worker() for _ in range(args.inflight)))
        finally:
            sampler.cancel()
        elapsed = time.perf_counter() - started
        mark("measured")
        result = summarise(latencies, errors, elapsed, None if record else args.calls - errors)
        result.update(cpu=cpu_seconds() - cpu_before, rss_before=rss_before, rss_after=rss_mib(), rss_samples=samples)
        emit(result)


async def sample_rss(samples: list[float]) -> None:
    while True:
        await asyncio.sleep(1.0)
        samples.append(rss_mib())


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("channel")
    parser.add_argument("inflight", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--calls", type=int, default=0, help="a fixed number of calls instead of a duration")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--payload", type=int, default=100)
    parser.add_argument("--shared-replies", action="store_true", help="no replyTo: for seed-protocol responders")
    parser.add_argument("--streams", action="store_true", help="RPC_TRANSPORT=streams (at-least-once mode)")
    parser.add_argument("--cluster", action="store_true", help="URL is a Redis Cluster node: cluster mode")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics here (0: not served)")
    parser.add_argument("--no-metrics", action="store_true", help="count no metrics (the metrics-cost baseline)")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    run(lambda: main(arguments))
