"""The gateway's metrics, served on its own port at GET /metrics, and the browser's trace
context checked before it goes into a call's envelope.

``install(app, caller=..., connections=...)`` adds the route and returns a
``GatewayMetrics``: plain ints the WebSocket code bumps on its hot path (``metrics.frames_in
+= 1``); prometheus-client families are built from them only when Prometheus scrapes. The
exposition runs on the event loop, so it reads the counters without locks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from pubsub_rpc import Caller
from pubsub_rpc.metrics import Exporter, counter, gauge

Family = HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily

# W3C Trace Context, level 1: version-traceid-parentid-flags, lowercase hex, ids not all zero.
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
TRACESTATE = re.compile(r"^[\x20-\x7e]{0,512}")


@dataclass(slots=True)
class GatewayMetrics:
    """Counters the WebSocket code increments; each a plain int (or a dict by reason)."""

    connections_opened: int = 0
    frames_in: int = 0  # text frames read from browsers
    frames_out: int = 0  # frames queued to browsers (results, errors, events, hello/ready)
    slow_clients_dropped: int = 0  # closed because their send buffer overflowed
    pushes_fanned_out: int = 0  # event frames delivered: one push to N sockets counts N
    connections_refused: dict[str, int] = field(default_factory=dict)  # reason -> count (origin, limit, auth, ...)

    def refused(self, reason: str) -> None:
        """Count a refused connection; ``reason`` is a constant of the gateway's code."""
        self.connections_refused[reason] = self.connections_refused.get(reason, 0) + 1

    def families(self, connections: int) -> list[Family]:
        return [
            gauge("ws_connections", "WebSockets open now", connections),
            counter("ws_connections_opened", "WebSockets accepted", self.connections_opened),
            counter("ws_connections_refused", "WebSockets refused, by reason", dict(self.connections_refused), "reason"),
            counter("ws_frames_received", "Frames read from browsers", self.frames_in),
            counter("ws_frames_sent", "Frames queued to browsers", self.frames_out),
            counter("ws_slow_clients_dropped", "WebSockets closed because they read too slowly", self.slow_clients_dropped),
            counter("ws_pushes_fanned_out", "Push frames delivered (one push to N sockets: N)", self.pushes_fanned_out),
        ]


METRICS = web.AppKey("gateway_metrics", GatewayMetrics)


def install(
    app: web.Application,
    *,
    caller: Callable[[], Caller | None],
    connections: Callable[[], int],
    path: str = "/metrics",
) -> GatewayMetrics:
    """Add GET ``path`` (Prometheus text format) to ``app``: the gateway's counters plus its
    Caller's (calls by action and code, in flight, Redis links, readiness). ``caller`` and
    ``connections`` are read at scrape time (the Caller exists only once the app started)."""
    metrics = GatewayMetrics()
    app[METRICS] = metrics
    exporter = Exporter()
    exporter.add(lambda: metrics.families(connections()))
    exporter.add(lambda: _caller_families(caller()))

    async def serve_metrics(request: web.Request) -> web.Response:
        body = generate_latest(exporter.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get(path, serve_metrics)
    return metrics


def _caller_families(caller: Caller | None) -> Iterable[Family]:
    return caller.metric_families() if caller is not None else []


def trace_headers(frame_headers: object) -> dict[str, str] | None:
    """The envelope ``headers`` for a browser's call frame ``{"headers": {"traceparent":
    ..., "tracestate": ...}}``: only well-formed W3C values pass (anything else is dropped,
    never an error: tracing is best effort), so nothing unbounded reaches Redis or the logs."""
    if not isinstance(frame_headers, Mapping):
        return None
    traceparent: Any = frame_headers.get("traceparent")
    if not isinstance(traceparent, str) or not TRACEPARENT.fullmatch(traceparent):
        return None
    headers = {"traceparent": traceparent}
    tracestate: Any = frame_headers.get("tracestate")
    if isinstance(tracestate, str) and tracestate and TRACESTATE.fullmatch(tracestate):
        headers["tracestate"] = tracestate
    return headers
