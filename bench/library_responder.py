"""The library's Responder serving `echo`, until SIGTERM.

python -m bench.library_responder URL CHANNEL [METRICS_PORT] [--no-metrics] [--streams] [--cluster]:
it counts metrics (every feature on, as deployed), and serves /metrics on METRICS_PORT when
given; ``--no-metrics`` counts none (the metrics-cost row's baseline). ``--streams`` serves
RPC_TRANSPORT=streams (the scale-out rows); ``--cluster``: URL is a Redis Cluster node, the
responder runs in cluster mode."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from pubsub_rpc import Responder, Settings
from pubsub_rpc.lifecycle import run, stop_event_on_signals
from pubsub_rpc.metrics import served


async def main() -> None:
    args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    url, channel = args[0], args[1]
    metrics_port = int(args[2]) if len(args) > 2 else 0
    settings = Settings(
        redis_url=url,
        channel=channel,
        responder_pattern=channel + "_sender",
        push_interval=0,
        transport="streams" if "--streams" in sys.argv else "pubsub",
        redis_cluster="--cluster" in sys.argv,
    )
    metrics = "--no-metrics" not in sys.argv
    responder = Responder(settings, name="bench-responder", metrics=metrics, tracing=False)

    @responder.action("echo")
    def echo(data: Any) -> Any:
        return data

    stop = stop_event_on_signals()
    with served(metrics_port, "127.0.0.1", responder.metric_families):
        await serve(responder, stop)


async def serve(responder: Responder, stop: asyncio.Event) -> None:
    async with responder:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await stop.wait()


if __name__ == "__main__":
    run(main)
