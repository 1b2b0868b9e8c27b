"""``python -m laravel_like_responder``: serve the sample actions until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pubsub_rpc import Responder, Settings
from pubsub_rpc.errors import Backpressure, ConnectionLost
from pubsub_rpc.health import beat
from pubsub_rpc.lifecycle import configure_logging, load_settings, run, started, stop_event_on_signals
from pubsub_rpc.metrics import served
from pubsub_rpc.presence import beacon_for

from .actions import main_configs, register

log = logging.getLogger("laravel_like_responder")


async def push_configs(responder: Responder, interval: float) -> None:
    """The seed's Laravel-to-Node push: the configs, unprompted, every ``interval`` s."""
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(ConnectionLost, Backpressure):
            await responder.push("configs", main_configs())


async def main() -> None:
    settings = load_settings("laravel_like_responder", source="laravel", service="laravel_like_responder")
    configure_logging(settings.log_level, settings.log_format)
    stop = stop_event_on_signals()
    responder = Responder(settings, name="laravel_like_responder")
    register(responder)
    with served(settings.metrics_port, settings.metrics_host, responder.metric_families):
        await serve(responder, settings, stop)


async def serve(responder: Responder, settings: Settings, stop: asyncio.Event) -> None:
    # Waits for Redis however long it takes (SIGTERM still stops it): never exits for that.
    async with started(responder, stop) as up, asyncio.TaskGroup() as background:
        if not up:
            return
        log.info(
            "serving %d actions on pattern %s (replies on <channel> or replyTo)",
            len(responder.actions),
            settings.responder_pattern,
        )
        tasks = [background.create_task(beacon_for(responder, "responder").run())]
        if settings.push_interval > 0:
            tasks.append(background.create_task(push_configs(responder, settings.push_interval)))
        if settings.heartbeat_file:
            tasks.append(background.create_task(beat(settings.heartbeat_file, lambda: responder.ready)))
        await stop.wait()
        log.info("stopping: draining in-flight requests (up to %.1fs)", settings.drain_timeout)
        for task in tasks:
            task.cancel()


if __name__ == "__main__":
    raise SystemExit(run(main))
