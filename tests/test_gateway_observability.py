"""The gateway's /metrics glue (services/ws_gateway/observability.py) on a real aiohttp
server with a real Caller against a real Redis, and the browser trace-context filter."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from pubsub_rpc import Caller, Responder, Settings
from ws_gateway.observability import METRICS, install, trace_headers


async def test_metrics_route_serves_the_gateway_counters_and_its_callers(settings: Settings, responder: Responder) -> None:
    app = web.Application()
    holder: dict[str, Caller] = {}
    metrics = install(app, caller=lambda: holder.get("caller"), connections=lambda: 3)
    assert app[METRICS] is metrics
    async with TestClient(TestServer(app)) as client:
        before = await client.get("/metrics")
        assert before.status == 200 and before.headers["Content-Type"].startswith("text/plain")
        assert "ws_connections 3.0" in await before.text()  # no Caller yet: the gateway's own counters only
        async with Caller(settings, name="ws_gateway") as caller:
            holder["caller"] = caller
            assert await caller.call("sum", [1, 2]) == 3
            metrics.connections_opened += 2
            metrics.frames_in += 5
            metrics.frames_out += 7
            metrics.slow_clients_dropped += 1
            metrics.pushes_fanned_out += 40
            metrics.refused("origin")
            metrics.refused("origin")
            response = await client.get("/metrics")
            text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert samples[("ws_connections", ())] == 3
    assert samples[("ws_connections_opened_total", ())] == 2
    assert samples[("ws_frames_received_total", ())] == 5
    assert samples[("ws_frames_sent_total", ())] == 7
    assert samples[("ws_slow_clients_dropped_total", ())] == 1
    assert samples[("ws_pushes_fanned_out_total", ())] == 40
    assert samples[("ws_connections_refused_total", (("reason", "origin"),))] == 2
    assert samples[("rpc_client_call_duration_seconds_count", (("code", "ok"), ("rpc_method", "sum")))] == 1
    assert samples[("rpc_ready", (("component", "ws_gateway"),))] == 1
    assert samples[("rpc_redis_link_up", (("link", "ws_gateway-sub"),))] == 1


TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"traceparent": TP}, {"traceparent": TP}),
        ({"traceparent": TP, "tracestate": "congo=t61rcWkgMzE"}, {"traceparent": TP, "tracestate": "congo=t61rcWkgMzE"}),
        ({"traceparent": TP, "tracestate": "x" * 513}, {"traceparent": TP}),  # too long: dropped, the parent kept
        ({"traceparent": TP, "tracestate": "bad\nline"}, {"traceparent": TP}),
        ({"traceparent": TP.upper()}, None),
        ({"traceparent": TP + "\n"}, None),
        ({"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}, None),  # all-zero trace id is invalid
        ({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01"}, None),
        ({"traceparent": 42}, None),
        ({"tracestate": "a=b"}, None),
        ("00-...", None),
        (None, None),
    ],
)
def test_only_well_formed_w3c_trace_context_passes(given: object, expected: dict[str, str] | None) -> None:
    assert trace_headers(given) == expected
