"""``python -m template_service``: serve the actions of ``actions.py`` until SIGTERM, then
drain in-flight requests (up to RPC_DRAIN_TIMEOUT)."""

from __future__ import annotations

import asyncio
import logging

from pubsub_rpc import Responder, Settings
from pubsub_rpc.health import beat
from pubsub_rpc.lifecycle import configure_logging, load_settings, run, started, stop_event_on_signals
from pubsub_rpc.metrics import served
from pubsub_rpc.presence import beacon_for

from .actions import register

NAME = "template_service"
log = logging.getLogger(NAME)


async def main() -> None:
    settings = load_settings(NAME, source=NAME, service=NAME)
    configure_logging(settings.log_level, settings.log_format)
    stop = stop_event_on_signals()
    responder = Responder(settings, name=NAME)
    register(responder)
    # /metrics on METRICS_PORT (0 = off); the gateway's services panel hears the beacon.
    with served(settings.metrics_port, settings.metrics_host, responder.metric_families):
        await serve(responder, settings, stop)


async def serve(responder: Responder, settings: Settings, stop: asyncio.Event) -> None:
    # Waits for Redis however long it takes (SIGTERM still stops it): never exits for that.
    async with started(responder, stop) as up, asyncio.TaskGroup() as background:
        if not up:
            return
        log.info("serving %s on pattern %s", sorted(responder.actions), settings.responder_pattern)
        tasks = [background.create_task(beacon_for(responder, "responder").run())]
        if settings.heartbeat_file:  # the container's health check reads it
            tasks.append(background.create_task(beat(settings.heartbeat_file, lambda: responder.ready)))
        await stop.wait()
        log.info("stopping: draining in-flight requests (up to %.1fs)", settings.drain_timeout)
        for task in tasks:
            task.cancel()


if __name__ == "__main__":
    raise SystemExit(run(main))
