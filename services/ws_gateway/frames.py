"""The browser-facing JSON frames (docs/protocol.md, "WebSocket"), parsed and built here.

Parsing never raises anything but BadFrame, and a BadFrame only carries an ``id`` that can
be echoed (a string or integer), so the error frame itself always encodes. Builders that
carry values from elsewhere (results, pushes) return None when JSON cannot re-encode them
(orjson stops at 255 levels of nesting), and the caller answers with an error instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pubsub_rpc import Event

from .clients import SHORT_HEADERS, text_frame

MAX_ID_CHARS = 256


class BadFrame(ValueError):
    def __init__(self, message: str, frame_id: str | int | None = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id


@dataclass(slots=True)
class CallFrame:
    id: str | int
    action: str
    data: Any
    timeout: float | None
    headers: Any = None  # optional W3C trace context; observability.trace_headers filters it


@dataclass(slots=True)
class AuthFrame:
    token: Any  # checked by the verifier, which names what is wrong with it


@dataclass(slots=True)
class WatchFrame:
    """Start or stop the live view's feeds (`stats` each second, `presence` on change)."""

    stats: bool
    presence: bool
    id: None = None  # a watch has no id; error frames about it carry null


def _echoable_id(value: Any) -> str | int | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        return None
    return value


def _watch(frame: dict[str, Any]) -> WatchFrame:
    wanted = {name: frame.get(name, False) for name in ("stats", "presence")}
    for name, value in wanted.items():
        if not isinstance(value, bool):
            raise BadFrame(f"`{name}` must be true or false")
    return WatchFrame(wanted["stats"], wanted["presence"])


def parse(text: str | bytes, max_timeout: float) -> CallFrame | AuthFrame | WatchFrame:
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadFrame(f"not JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise BadFrame("a frame is a JSON object")
    kind = frame.get("type")
    if kind == "auth":
        return AuthFrame(frame.get("token"))
    if kind == "watch":
        return _watch(frame)
    frame_id = frame.get("id")
    if type(frame_id) is not int and not (type(frame_id) is str and len(frame_id) <= MAX_ID_CHARS):
        frame_id = _echoable_id(frame_id)  # the common cases above, inline; the rest here
    if kind != "call":
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else type(kind).__name__
        raise BadFrame(
            f'unknown frame type {shown!r}; send {{"type": "call", ...}}, {{"type": "auth", ...}} or {{"type": "watch", ...}}',
            frame_id,
        )
    if frame_id is None:
        raise BadFrame(f"a call needs an `id` (string of at most {MAX_ID_CHARS} characters, or integer) chosen by the client")
    action = frame.get("action")
    if not isinstance(action, str) or not action:
        raise BadFrame("`action` must be a non-empty string", frame_id)
    timeout = frame.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise BadFrame("`timeout` must be a positive number of seconds", frame_id)
        timeout = min(float(timeout), max_timeout)
    return CallFrame(frame_id, action, frame.get("data"), timeout, frame.get("headers"))


def parse_call(text: str | bytes, max_timeout: float) -> CallFrame:
    """A call frame, or BadFrame (auth frames included): for callers that only expect calls."""
    frame = parse(text, max_timeout)
    if not isinstance(frame, CallFrame):
        raise BadFrame("expected a call frame")
    return frame


# Builders return complete WebSocket frames (bytes), ready for WsClient.send.


def _frame(value: dict[str, Any]) -> bytes | None:
    try:
        return text_frame(orjson.dumps(value))
    except TypeError:  # orjson.JSONEncodeError: nested too deeply
        return None


def result(frame_id: str | int, value: Any, elapsed_ms: float) -> bytes | None:
    # One per call: _frame and text_frame inlined (the frame is almost always short).
    try:
        payload = orjson.dumps({"type": "result", "id": frame_id, "result": value, "ms": round(elapsed_ms, 3)})
    except TypeError:  # orjson.JSONEncodeError: nested too deeply
        return None
    size = len(payload)
    return SHORT_HEADERS[size] + payload if size < 126 else text_frame(payload)


def error(frame_id: str | int | None, code: str, message: str, elapsed_ms: float | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "error", "id": frame_id, "code": code, "message": message}
    if elapsed_ms is not None:
        frame["ms"] = round(elapsed_ms, 3)
    return text_frame(orjson.dumps(frame))


def event(ev: Event, private: bool = False) -> bytes | None:
    frame = {"type": "event", "action": ev.action, "source": ev.source, "data": ev.data}
    if private:
        frame["private"] = True
    return _frame(frame)


def hello(max_timeout: float, max_calls: int, demo: bool, auth_timeout: float) -> bytes:
    return text_frame(
        orjson.dumps(
            {
                "type": "hello",
                "maxTimeout": max_timeout,
                "maxCalls": max_calls,
                "auth": "required",
                "authTimeout": auth_timeout,
                "demo": demo,
            }
        )
    )


def ready(sub: str, actions: list[str], descriptions: dict[str, str], expires_at: float) -> bytes:
    frame = {"type": "ready", "sub": sub, "actions": actions, "descriptions": descriptions, "expiresAt": expires_at}
    return text_frame(orjson.dumps(frame))
