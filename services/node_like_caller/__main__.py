"""``python -m node_like_caller`` runs the demo then prints pushes until SIGTERM;
``python -m node_like_caller call ACTION [JSON] [--timeout S]`` makes one call and exits
0 (result as JSON on stdout) or 1 (error code and message on stderr)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys

import orjson
from pubsub_rpc import Caller, Settings
from pubsub_rpc.cli import call as call_once
from pubsub_rpc.health import beat
from pubsub_rpc.lifecycle import configure_logging, load_settings, run, started, stop_event_on_signals
from pubsub_rpc.metrics import served
from pubsub_rpc.presence import beacon_for

from .scenario import _short, call_peer_forever, run_scenario

log = logging.getLogger("node_like_caller")


async def demo(settings: Settings) -> None:
    stop = stop_event_on_signals()
    caller = Caller(settings, name="node_like_caller")
    with served(settings.metrics_port, settings.metrics_host, caller.metric_families):
        await demo_with(caller, settings, stop)


async def demo_with(caller: Caller, settings: Settings, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        # Waits for Redis however long it takes (SIGTERM still stops it): never exits for that.
        if not await stack.enter_async_context(started(caller, stop)):
            return
        peer = None
        if settings.peer_channel:  # the `peers` profile: a PHP responder on its own base channel
            # A seed-protocol peer listens on classic pub/sub only: in cluster mode too, call it
            # the classic way (a cluster broadcasts classic PUBLISH to every node).
            peer_settings = dataclasses.replace(settings, channel=settings.peer_channel, redis_cluster=False)
            peer = Caller(peer_settings, name=f"peer:{settings.peer_channel}")
            if not await stack.enter_async_context(started(peer, stop)):
                return
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        background = [tasks.create_task(run_scenario(caller)), tasks.create_task(beacon_for(caller, "caller").run())]
        if peer is not None:
            background.append(tasks.create_task(call_peer_forever(peer, settings.peer_interval)))
        if settings.heartbeat_file:
            background.append(tasks.create_task(beat(settings.heartbeat_file, lambda: caller.ready)))
        caller.add_event_handler(lambda event: log.info("push %s from %s: %s", event.action, event.source, _short(event.data)))
        await stop.wait()
        log.info("stopping")
        for task in background:
            task.cancel()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="node_like_caller", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    call = commands.add_parser("call", help="make one call and print its result as JSON")
    call.add_argument("action")
    call.add_argument("data", nargs="?", default="null", help="JSON for `data` (default null)")
    call.add_argument("--timeout", type=float, default=None, help="seconds (default RPC_CALL_TIMEOUT)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = load_settings("node_like_caller", source="nodejs-like", service="node_like_caller")
    if args.command == "call":
        configure_logging("WARNING")
        try:
            data = orjson.loads(args.data)
        except orjson.JSONDecodeError as exc:
            sys.stderr.write(f"error: DATA is not valid JSON: {exc}\n")
            return 2
        return run(lambda: call_once(settings, args.action, data, args.timeout, name="node_like_caller-cli"))
    configure_logging(settings.log_level, settings.log_format)
    return run(lambda: demo(settings))


if __name__ == "__main__":
    raise SystemExit(main())
