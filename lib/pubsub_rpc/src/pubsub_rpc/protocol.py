"""The wire format, in one place. See docs/protocol.md for the prose version.

A request is ``{action, data, requestId, source}`` on ``<channel>_sender`` (the seed's
format). Callers that speak version 1 add ``v: 1`` and may add ``replyTo`` (a private reply
channel), ``deadline`` (epoch milliseconds after which the answer is useless) and
``headers`` (an object of string values: W3C ``traceparent``/``tracestate``).

A reply repeats ``requestId`` and says ``ok``: ``result`` when true, ``error: {code,
message}`` when false. For seed-era callers (no ``v`` in the request), a dict result is
also merged into the top level, as the seed's Laravel command does, so
``reply.someConfigKey`` keeps working. Pushes are replies with ``requestId: null``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import InvalidRequest, RpcError, error_from_wire

VERSION = 1
ENVELOPE_KEYS = frozenset(
    {"action", "data", "requestId", "source", "v", "replyTo", "deadline", "headers", "ok", "result", "error"}
)


class MalformedMessage(ValueError):
    """A message that cannot be read as an envelope at all (no requestId to reply to)."""


def decode(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise MalformedMessage(f"message of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise MalformedMessage(f"not a JSON object but {type(message).__name__}")
    return message


@dataclass(slots=True)
class Request:
    action: str
    data: Any
    request_id: str | None
    source: str | None
    reply_to: str | None
    deadline_ms: float | None
    legacy: bool  # seed-era caller: wants the result merged into the reply envelope
    headers: dict[str, Any] | None = None  # trace context (traceparent, tracestate); not validated further
    received: float = 0.0  # time.perf_counter() when the responder read it
    span: Any = None  # the responder's OpenTelemetry span, when tracing is on
    stream_id: str | None = None  # streams mode: the entry id, acked once the reply is out

    def expired(self) -> bool:
        return self.deadline_ms is not None and time.time() * 1000 > self.deadline_ms


def parse_request(message: dict[str, Any]) -> Request:
    """Validate a decoded request; raises InvalidRequest (the request id is still usable)."""
    request_id = message.get("requestId")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest("requestId must be a string or null")
    action = message.get("action")
    if not isinstance(action, str) or not action:
        raise InvalidRequest("action must be a non-empty string")
    reply_to = message.get("replyTo")
    if reply_to is not None and not isinstance(reply_to, str):
        raise InvalidRequest("replyTo must be a string")
    deadline = message.get("deadline")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))):
        raise InvalidRequest("deadline must be a number (epoch milliseconds)")
    source = message.get("source")
    headers = message.get("headers")
    return Request(
        action=action,
        data=message.get("data"),
        request_id=request_id,
        source=source if isinstance(source, str) else None,
        reply_to=reply_to,
        deadline_ms=deadline,
        legacy="v" not in message,
        headers=headers if type(headers) is dict else None,  # anything else: ignored, like an unknown field
    )


def encode_request(
    action: str,
    data: Any,
    request_id: str | None,
    source: str,
    reply_to: str | None = None,
    deadline_ms: int | None = None,
    headers: dict[str, Any] | None = None,
) -> bytes:
    message: dict[str, Any] = {
        "action": action,
        "data": data,
        "requestId": request_id,
        "source": source,
        "v": VERSION,
    }
    if reply_to is not None:
        message["replyTo"] = reply_to
    if deadline_ms is not None:
        message["deadline"] = deadline_ms
    if headers:
        message["headers"] = headers
    return orjson.dumps(message)


def _merged(payload: Any, envelope: dict[str, Any]) -> dict[str, Any]:
    # The seed's `[...$configs, ...$response]`: payload keys first, envelope keys win.
    if isinstance(payload, dict):
        return {**payload, **envelope}
    return envelope


def encode_result(source: str, action: str, request_id: str | None, result: Any, legacy: bool) -> bytes:
    envelope = {"source": source, "action": action, "requestId": request_id, "v": VERSION, "ok": True, "result": result}
    return orjson.dumps(_merged(result, envelope) if legacy else envelope)


def encode_error(source: str, action: str | None, request_id: Any, error: RpcError) -> bytes:
    envelope = {"source": source, "action": action, "requestId": request_id, "v": VERSION, "ok": False}
    try:
        return orjson.dumps({**envelope, "error": error.to_wire()})
    except TypeError:  # details (or a message) JSON cannot carry: the code still goes out
        return orjson.dumps({**envelope, "error": {"code": str(error.code), "message": str(error.message)}})


def encode_push(source: str, action: str, data: Any) -> bytes:
    """A push is merged like a seed reply, so the seed's caller sees ``configs`` keys on top."""
    envelope = {"source": source, "action": action, "requestId": None, "v": VERSION, "data": data}
    return orjson.dumps(_merged(data, envelope))


def result_of(reply: dict[str, Any]) -> Any:
    """The result of a reply, or its named exception. Seed-era replies (no ``ok``) are the
    reply minus the envelope keys, which is what a Laravel command merged in."""
    ok = reply.get("ok")
    if ok is True:
        return reply.get("result")
    if ok is False:
        raise error_from_wire(reply.get("error"))
    return {key: value for key, value in reply.items() if key not in ENVELOPE_KEYS}


@dataclass(frozen=True, slots=True)
class Event:
    """A push: ``requestId`` null on the reply channel."""

    action: str | None
    data: Any
    source: str | None
    channel: str

    @classmethod
    def from_message(cls, message: dict[str, Any], channel: str) -> Event:
        data = (
            message["data"] if "data" in message else {key: value for key, value in message.items() if key not in ENVELOPE_KEYS}
        )
        action = message.get("action")
        source = message.get("source")
        return cls(
            action=action if isinstance(action, str) else None,
            data=data,
            source=source if isinstance(source, str) else None,
            channel=channel,
        )
