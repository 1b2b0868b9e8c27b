"""``python -m ws_gateway``: serve the WebSocket bridge and the demo page until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web
from pubsub_rpc.lifecycle import configure_logging, load_settings, tune_gc

from .app import create_app
from .auth import ConfigError

log = logging.getLogger("ws_gateway")


def main() -> None:
    settings = load_settings("ws_gateway", source="ws_gateway", service="ws_gateway")
    configure_logging(settings.log_level, settings.log_format)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        log.error("refusing to start: %s", exc)
        sys.exit(2)
    tune_gc()  # the app is built: its objects are frozen too (the collector took ~10 % of the CPU)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        loop = None
    else:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
    # run_app handles SIGTERM/SIGINT: on_shutdown closes the sockets (1001 going away), then
    # cleanup_ctx closes Redis. shutdown_timeout stays under compose's stop_grace_period.
    web.run_app(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        shutdown_timeout=5.0,
        access_log=None,
        print=lambda text: log.info("%s", text.strip()),
        loop=loop,
    )


if __name__ == "__main__":
    main()
