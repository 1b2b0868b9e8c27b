"""``python -m ws_gateway``: serve the WebSocket bridge and the demo page until SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

from aiohttp import web
from pubsub_rpc.lifecycle import configure_logging, load_settings

from .app import create_app
from .auth import ConfigError

log = logging.getLogger("ws_gateway")

# Young objects between collections (CPython's default is 700). Every call allocates a
# few dozen short-lived objects; at 700 the collector ran about once per 150 calls.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Keep the cyclic collector off the hot path; call once the app is built.

    Measured (bench, 256 calls in flight): with CPython's defaults the collector took
    about 10 % of the gateway's CPU, and each full collection walked the ~60,000 objects
    that imports leave behind, a 30-60 ms pause that set the gateway's p99. ``gc.freeze``
    moves those start-up objects out of the collector's reach (they live as long as the
    process anyway), and a larger first threshold makes young collections rare. Cycles
    are still collected, only less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main() -> None:
    settings = load_settings("ws_gateway", source="ws_gateway", service="ws_gateway")
    configure_logging(settings.log_level, settings.log_format)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        log.error("refusing to start: %s", exc)
        sys.exit(2)
    tune_gc()
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
