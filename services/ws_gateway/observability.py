"""The gateway's metrics, served on its own port at GET /metrics, and the browser's trace
context checked before it goes into a call's envelope.

``install(app, caller=..., counters=..., connections=...)`` adds the route. The WebSocket
code bumps plain ints on its hot path (``limits.Counters``, also shown by /readyz);
prometheus-client families are built from them only when Prometheus scrapes. The
exposition runs on the event loop, so it reads the counters without locks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
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


# Counters (limits.Counters) that become their own metric; the rest are
# ws_gateway_events_total{event=...}. Refusals of a connection share one family by reason.
_OWN = {
    "connections": ("ws_connections_opened", "WebSockets accepted"),
    "frames_in": ("ws_frames_received", "Frames read from browsers"),
    "frames_out": ("ws_frames_sent", "Frames queued to browsers"),
    "slow_dropped": ("ws_slow_clients_dropped", "WebSockets closed because they read too slowly"),
    "pushes_fanned_out": ("ws_pushes_fanned_out", "Push frames delivered (one push to N sockets: N)"),
}
_REFUSED = {
    "refused_total": "too_many",
    "refused_per_ip": "per_ip",
    "refused_host": "host",
    "refused_origin": "origin",
    "refused_protocol": "protocol",
    "auth_failed": "auth",
    "auth_expired": "expired",
    "auth_timeout": "auth_timeout",
}


def gateway_families(counters: Mapping[str, int], connections: int) -> list[Family]:
    """The gateway's counters (the same numbers /readyz shows) as Prometheus families."""
    families: list[Family] = [gauge("ws_connections", "WebSockets open now", connections)]
    families += [counter(name, doc, counters.get(key, 0)) for key, (name, doc) in _OWN.items()]
    refused = {reason: counters.get(key, 0) for key, reason in _REFUSED.items()}
    families.append(
        counter("ws_connections_refused", "WebSockets refused or closed unauthenticated, by reason", refused, "reason")
    )
    events = {key: value for key, value in counters.items() if key not in _OWN and key not in _REFUSED}
    families.append(counter("ws_gateway_events", "Gateway outcomes (forbidden, rate_limited, bad_frames, ...)", events, "event"))
    return families


def install(
    app: web.Application,
    *,
    caller: Callable[[], Caller | None],
    counters: Callable[[], Mapping[str, int]],
    connections: Callable[[], int],
    path: str = "/metrics",
) -> None:
    """Add GET ``path`` (Prometheus text format) to ``app``: the gateway's counters plus its
    Caller's (calls by action and code, in flight, Redis links, readiness), all read at
    scrape time (the Caller exists only once the app started)."""
    exporter = Exporter()
    exporter.add(lambda: gateway_families(counters(), connections()))
    exporter.add(lambda: _caller_families(caller()))

    async def serve_metrics(request: web.Request) -> web.Response:
        body = generate_latest(exporter.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get(path, serve_metrics)


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
