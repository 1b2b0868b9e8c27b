"""The browser-facing JSON frames (docs/protocol.md, "WebSocket"), parsed and built here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pubsub_rpc import Event

from .clients import text_frame


class BadFrame(ValueError):
    def __init__(self, message: str, frame_id: Any = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id


@dataclass(slots=True)
class CallFrame:
    id: str | int
    action: str
    data: Any
    timeout: float | None


def parse_call(text: str, max_timeout: float) -> CallFrame:
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadFrame(f"not JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise BadFrame("a frame is a JSON object")
    frame_id = frame.get("id")
    if frame.get("type") != "call":
        raise BadFrame(f'unknown frame type {frame.get("type")!r}; send {{"type": "call", ...}}', frame_id)
    if isinstance(frame_id, bool) or not isinstance(frame_id, (str, int)):
        raise BadFrame("a call needs an `id` (string or integer) chosen by the client")
    action = frame.get("action")
    if not isinstance(action, str) or not action:
        raise BadFrame("`action` must be a non-empty string", frame_id)
    timeout = frame.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise BadFrame("`timeout` must be a positive number of seconds", frame_id)
        timeout = min(float(timeout), max_timeout)
    return CallFrame(frame_id, action, frame.get("data"), timeout)


# Builders return complete WebSocket frames (bytes), ready for WsClient.send.


def result(frame_id: Any, value: Any, elapsed_ms: float) -> bytes:
    return text_frame(orjson.dumps({"type": "result", "id": frame_id, "result": value, "ms": round(elapsed_ms, 3)}))


def error(frame_id: Any, code: str, message: str, elapsed_ms: float | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "error", "id": frame_id, "code": code, "message": message}
    if elapsed_ms is not None:
        frame["ms"] = round(elapsed_ms, 3)
    return text_frame(orjson.dumps(frame))


def event(ev: Event) -> bytes:
    return text_frame(orjson.dumps({"type": "event", "action": ev.action, "source": ev.source, "data": ev.data}))


def hello(max_timeout: float, max_calls: int) -> bytes:
    return text_frame(orjson.dumps({"type": "hello", "maxTimeout": max_timeout, "maxCalls": max_calls}))
