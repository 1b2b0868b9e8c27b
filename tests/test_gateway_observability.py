"""The gateway's /metrics glue (services/ws_gateway/observability.py) on a real aiohttp
server with a real Caller against a real Redis, and the browser trace-context filter."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from pubsub_rpc import Caller, Responder, Settings
from ws_gateway.limits import Counters
from ws_gateway.observability import install, trace_headers

from scripts.redis_process import RedisProcess

from .conftest import eventually
from .live_service import live_responder
from .ws_frames import connect, mint, running_gateway


async def test_metrics_route_serves_the_gateway_counters_and_its_callers(settings: Settings, responder: Responder) -> None:
    app = web.Application()
    holder: dict[str, Caller] = {}
    counters = Counters()
    install(app, caller=lambda: holder.get("caller"), counters=counters.as_dict, connections=lambda: 3)
    async with TestClient(TestServer(app)) as client:
        before = await client.get("/metrics")
        assert before.status == 200 and before.headers["Content-Type"].startswith("text/plain")
        assert "ws_connections 3.0" in await before.text()  # no Caller yet: the gateway's own counters only
        async with Caller(settings, name="ws_gateway") as caller:
            holder["caller"] = caller
            assert await caller.call("sum", [1, 2]) == 3
            counters.connections += 2
            counters.frames_in += 5
            counters.frames_out += 7
            counters.slow_dropped += 1
            counters.pushes_fanned_out += 40
            counters.refused_origin += 2
            counters.forbidden += 4
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
    assert samples[("ws_gateway_events_total", (("event", "forbidden"),))] == 4
    assert samples[("rpc_client_call_duration_seconds_count", (("code", "ok"), ("rpc_method", "sum")))] == 1
    assert samples[("rpc_ready", (("component", "ws_gateway"),))] == 1
    assert samples[("rpc_redis_link_up", (("link", "ws_gateway-sub"),))] == 1


@pytest.mark.timeout(90)
async def test_a_browsers_traceparent_reaches_the_responders_log_line_and_the_gateway_counts_frames(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    """WebSocket call frame with headers -> real gateway -> real responder process (JSON logs)."""
    with live_responder(redis_server.url, tmp_path) as live:
        gateway_settings_ = dataclasses.replace(live.settings, service="ws_gateway", source="ws_gateway")
        async with running_gateway(gateway_settings_) as server, aiohttp.ClientSession() as http:
            async with connect(http, server.make_url("/ws"), mint()) as ws:

                async def answered() -> bool:
                    return (await ws.call(1, "echo", "up", 1))["type"] == "result"

                await eventually(answered, 30, "the responder to answer through the gateway")
                traceparent = "00-" + secrets.token_hex(16) + "-" + secrets.token_hex(8) + "-01"
                await ws.send({"type": "call", "id": 2, "action": "fail", "headers": {"traceparent": traceparent}})
                failed = await ws.next("error", timeout=10, id=2)
                await ws.send({"type": "call", "id": 3, "action": "echo", "data": 1, "headers": {"traceparent": "junk"}})
                assert (await ws.next("result", timeout=10, id=3))["result"] == 1
            async with http.get(server.make_url("/metrics"), headers={"Host": "ws_gateway:8080"}) as response:
                assert response.status == 200  # any Host: Prometheus scrapes by service name
                text = await response.text()
        await eventually(lambda: any(traceparent.encode() in line for line in live.log_lines()), 10, "the log line")
    assert failed["code"] == "handler_error"
    (line,) = [orjson.loads(raw) for raw in live.log_lines() if traceparent.encode() in raw]
    assert (line["action"], line["code"], line["caller"]) == ("fail", "handler_error", "ws_gateway")
    assert not any(b"junk" in raw for raw in live.log_lines())  # a malformed traceparent never travels
    frames_in = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "ws_frames_received_total"]
    assert frames_in and frames_in[0] >= 3


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
