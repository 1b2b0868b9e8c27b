"""Trace context: W3C ``traceparent``/``tracestate`` in the envelope's ``headers`` object,
and OpenTelemetry spans when its API is installed (``pip install pubsub-rpc[otel]``).

Without OpenTelemetry, headers pass through untouched: a caller sends what it was given,
a responder shows ``traceparent`` on its log lines and hands the headers to handlers.
With it, the caller starts a CLIENT span (a child of the current span, or of a
``traceparent`` it was given, e.g. the browser's) and sends that span's context; the
responder starts a SERVER span under the received context and makes it current while the
handler runs. Names and attributes follow OpenTelemetry's RPC and messaging conventions.
Nothing here runs per call unless tracing is on (``enabled()``, decided once per object).
"""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - the optional extra is absent
    trace = None  # type: ignore[assignment]

RPC_SYSTEM = "pubsub_rpc"
MAX_HEADER_CHARS = 512  # longer values are not logged (traceparent is 55 characters)


def enabled() -> bool:
    """True when the OpenTelemetry API is importable."""
    return trace is not None


def recording(tracer: Any) -> bool:
    """False while ``tracer`` is the API's proxy and no tracer provider has been set (the
    OpenTelemetry API installed, often as some other package's dependency, without its
    SDK): every span would then be a no-op, and a caller skips them (about 2.5 us a call
    measured in the gateway) and passes its headers on untouched, as without OpenTelemetry.
    A provider set later is seen at the caller's next check (see Caller._new_ids)."""
    return not isinstance(tracer, trace.ProxyTracer) or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def tracer(provider: Any = None) -> Any:
    """The tracer spans come from: ``provider``'s (a TracerProvider), else the global one."""
    return trace.get_tracer(__name__, tracer_provider=provider)


def traceparent(headers: dict[str, Any] | None) -> str | None:
    """The ``traceparent`` of a request's headers, if it is a sane string (for log lines)."""
    if not headers:
        return None
    value = headers.get("traceparent")
    return value if isinstance(value, str) and len(value) <= MAX_HEADER_CHARS else None


def _attributes(action: str, channel: str, request_id: str | None) -> dict[str, str]:
    attributes = {
        "rpc.system": RPC_SYSTEM,
        "rpc.method": action,
        "messaging.system": "redis",
        "messaging.destination.name": channel,
    }
    if request_id is not None:
        attributes["messaging.message.id"] = request_id
    return attributes


def _str_headers(headers: dict[str, Any] | None) -> dict[str, str]:
    return {k: v for k, v in (headers or {}).items() if isinstance(v, str)}


def client_span(
    tracer: Any, action: str, channel: str, request_id: str, headers: dict[str, Any] | None
) -> tuple[Span, dict[str, Any]]:
    """Start the caller's span; returns it and the headers to send (with its context)."""
    parent = propagate.extract(_str_headers(headers)) if headers and "traceparent" in headers else None
    span: Span = tracer.start_span(
        f"{RPC_SYSTEM}/{action}", context=parent, kind=SpanKind.CLIENT, attributes=_attributes(action, channel, request_id)
    )
    out: dict[str, Any] = dict(headers or {})
    propagate.inject(out, context=trace.set_span_in_context(span))
    return span, out


def server_span(tracer: Any, action: str, channel: str, request_id: str | None, headers: dict[str, Any] | None) -> Span:
    """Start the responder's span under the context the request carries."""
    parent = propagate.extract(_str_headers(headers))
    span: Span = tracer.start_span(
        f"{RPC_SYSTEM}/{action}", context=parent, kind=SpanKind.SERVER, attributes=_attributes(action, channel, request_id)
    )
    return span


def activate(span: Span) -> object:
    """Make ``span`` current (for the handler and what it calls); returns the token for ``deactivate``."""
    return otel_context.attach(trace.set_span_in_context(span))


def deactivate(token: object) -> None:
    otel_context.detach(token)  # type: ignore[arg-type]


def end(span: Span, code: str) -> None:
    """End a span with the call's outcome: ``ok``, or an error code (``error.type``)."""
    if code != "ok":
        span.set_attribute("error.type", code)
        span.set_status(Status(StatusCode.ERROR, code))
    span.end()
