"""Trace context: the envelope's ``headers`` reach the responder's handler and its log lines
(the real responder service, JSON logs), and with OpenTelemetry's SDK the caller's CLIENT
span is the parent of the responder's SERVER span."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pubsub_rpc import Caller, HandlerError, Responder, Settings, current_request

from scripts.redis_process import RedisProcess

from .conftest import eventually
from .live_service import live_responder


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def lines_with(path_lines: list[bytes], traceparent: str) -> list[dict[str, Any]]:
    parsed = [orjson.loads(line) for line in path_lines]
    return [line for line in parsed if line.get("traceparent") == traceparent]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_a_traceparent_sent_by_a_caller_is_on_the_responders_json_log_line(
    redis_server: RedisProcess, tmp_path: Path, level: str
) -> None:
    with live_responder(redis_server.url, tmp_path, LOG_LEVEL=level) as live:
        async with Caller(live.settings, name="trace-caller", tracing=False) as caller:
            await eventually(lambda: b"subscribed" in live.log.read_bytes(), 30, "the responder to subscribe")

            async def answered() -> bool:
                try:
                    await caller.call("actions", timeout=1)
                except Exception:  # noqa: BLE001 - not ready yet: asked again, bounded
                    return False
                return True

            await eventually(answered, 30, "the responder to answer")
            failing, _, _ = new_traceparent()
            with pytest.raises(HandlerError):
                await caller.call("fail", headers={"traceparent": failing, "tracestate": "vendor=1"})
            fine, _, _ = new_traceparent()
            assert await caller.call("echo", "hi", headers={"traceparent": fine}) == "hi"
            await eventually(lambda: bool(lines_with(live.log_lines(), failing)), 10, "the failure's log line")
            if level == "DEBUG":
                await eventually(lambda: bool(lines_with(live.log_lines(), fine)), 10, "the debug line of the good call")
        lines = live.log_lines()
    assert all(orjson.loads(line) for line in lines)  # every line is one JSON object
    (failure,) = [line for line in lines_with(lines, failing) if line["level"] == "ERROR"]
    assert failure["action"] == "fail" and failure["code"] == "handler_error"
    assert failure["caller"] == live.settings.source
    assert len(failure["requestId"]) == 32 and isinstance(failure["durationMs"], float)
    assert "RuntimeError: this action fails on purpose" in failure["exc"]
    good = lines_with(lines, fine)
    if level == "DEBUG":  # one line per handled request, only at DEBUG
        (handled,) = good
        assert (handled["action"], handled["code"], handled["level"]) == ("echo", "ok", "DEBUG")
        assert len(handled["requestId"]) == 32 and handled["durationMs"] >= 0
    else:
        assert good == []


async def test_handlers_see_the_current_requests_headers(settings: Settings) -> None:
    responder = Responder(settings, name="headers-responder", tracing=False)
    seen: list[Any] = []

    @responder.action("whoami")
    def whoami(data: Any) -> dict[str, Any]:
        request = current_request()
        assert request is not None
        return {"headers": request.headers, "source": request.source, "action": request.action}

    @responder.action("later")
    async def later(data: Any) -> Any:
        await asyncio.sleep(0)
        request = current_request()
        seen.append(request)
        return request.headers if request is not None else None

    traceparent, _, _ = new_traceparent()
    async with responder, Caller(settings, name="headers-caller", tracing=False) as caller:
        answer = await caller.call("whoami", headers={"traceparent": traceparent})
        assert answer == {"headers": {"traceparent": traceparent}, "source": settings.source, "action": "whoami"}
        assert await caller.call("later", headers={"traceparent": traceparent, "tracestate": "a=b"}) == {
            "traceparent": traceparent,
            "tracestate": "a=b",
        }
        assert await caller.call("whoami") == {"headers": None, "source": settings.source, "action": "whoami"}
    assert current_request() is None  # outside a handler


async def test_otel_spans_client_parent_of_server_and_a_given_traceparent_is_their_root(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    responder = Responder(settings, name="otel-responder", tracing=True, tracer_provider=provider)
    received: list[Any] = []

    @responder.action("echo")
    def echo(data: Any) -> Any:
        request = current_request()
        received.append(request.headers if request is not None else None)
        return data

    @responder.action("fail")
    def fail(data: Any) -> None:
        raise RuntimeError("no")

    browser, trace_id, browser_span = new_traceparent()
    async with responder, Caller(settings, name="otel-caller", tracing=True, tracer_provider=provider) as caller:
        assert await caller.call("echo", 1, headers={"traceparent": browser}) == 1
        with pytest.raises(HandlerError):
            await caller.call("fail")
    spans = exporter.get_finished_spans()
    by_kind = {(span.kind, span.name): span for span in spans}
    client = by_kind[(SpanKind.CLIENT, "pubsub_rpc/echo")]
    server = by_kind[(SpanKind.SERVER, "pubsub_rpc/echo")]
    assert f"{client.context.trace_id:032x}" == trace_id == f"{server.context.trace_id:032x}"
    assert client.parent is not None and f"{client.parent.span_id:016x}" == browser_span  # the browser's span
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert received[0]["traceparent"] == f"00-{trace_id}-{client.context.span_id:016x}-01"
    assert client.attributes is not None and client.attributes["rpc.method"] == "echo"
    assert client.attributes["rpc.system"] == "pubsub_rpc" and client.attributes["messaging.system"] == "redis"
    assert client.attributes["messaging.destination.name"] == settings.request_channel
    failed_client = by_kind[(SpanKind.CLIENT, "pubsub_rpc/fail")]
    failed_server = by_kind[(SpanKind.SERVER, "pubsub_rpc/fail")]
    for span in (failed_client, failed_server):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == "handler_error"
    assert failed_server.parent is not None and failed_server.parent.span_id == failed_client.context.span_id


async def test_without_a_tracer_provider_the_caller_makes_no_spans_and_passes_headers_on(settings: Settings) -> None:
    """The API without the SDK (no global provider here): spans would be no-ops, so the
    caller skips them and sends its headers as given, as without OpenTelemetry."""
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # no test sets a global one
    responder = Responder(settings, name="proxy-responder", tracing=False)

    @responder.action("whoami")
    def whoami(data: Any) -> Any:
        request = current_request()
        return request.headers if request is not None else None

    traceparent, _, _ = new_traceparent()
    async with responder, Caller(settings, name="proxy-caller", tracing=True) as caller:
        assert await caller.call("whoami", headers={"traceparent": traceparent, "tracestate": "a=b"}) == {
            "traceparent": traceparent,
            "tracestate": "a=b",
        }
        assert await caller.call("whoami") is None
        assert not caller._spans_on and caller._spans == {}
