"""Properties of the gateway's frame parser and builders (hypothesis): whatever a browser
sends, parsing either yields a well-formed frame or raises BadFrame whose error frame
encodes; builders either produce a valid RFC 6455 text frame or say they cannot (None)."""

from __future__ import annotations

import struct
from typing import Any

import orjson
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pubsub_rpc import Event
from ws_gateway import frames
from ws_gateway.clients import text_frame

MAX_TIMEOUT = 30.0

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
ids = st.text(max_size=300) | st.integers(-(2**63), 2**63 - 1)
call_frames: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"type": st.just("call"), "id": ids, "action": st.text(min_size=1, max_size=50)},
    optional={"data": json_values, "timeout": st.floats(min_value=0.001, max_value=1e6) | st.integers(1, 10**6)},
)
# Any object, with the fields a frame has, holding values of any type.
hostile_frames = st.dictionaries(
    st.sampled_from(["type", "id", "action", "data", "timeout", "token"]) | st.text(max_size=5),
    json_values | st.sampled_from(["call", "auth"]),
    max_size=6,
)


def payload_of(frame: bytes) -> bytes:
    """Undo text_frame, checking the header on the way (FIN + text opcode, no mask)."""
    assert frame[0] == 0x81
    size = frame[1]
    if size == 126:
        (size,) = struct.unpack_from("!H", frame, 2)
        body = frame[4:]
    elif size == 127:
        (size,) = struct.unpack_from("!Q", frame, 2)
        body = frame[10:]
    else:
        assert size < 126
        body = frame[2:]
    assert len(body) == size
    return body


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def check_parse(text: str | bytes) -> None:
    try:
        frame = frames.parse(text, MAX_TIMEOUT)
    except frames.BadFrame as exc:
        error = orjson.loads(payload_of(frames.error(exc.frame_id, "bad_frame", str(exc))))
        assert error["code"] == "bad_frame" and error["message"]
        assert error["id"] is None or isinstance(error["id"], (str, int))
        return
    if isinstance(frame, frames.CallFrame):
        assert not isinstance(frame.id, bool)  # a str or an int, as typed
        assert frame.action
        assert frame.timeout is None or 0 < frame.timeout <= MAX_TIMEOUT
    else:
        assert isinstance(frame, frames.AuthFrame | frames.WatchFrame)


@settings(deadline=None)  # no wall-clock bound: the machine may be busy
@given(st.text())
def test_any_text_parses_or_is_a_bad_frame(text: str) -> None:
    check_parse(text)


@settings(deadline=None)  # no wall-clock bound: the machine may be busy
@given(st.binary())
def test_any_bytes_parse_or_are_a_bad_frame(data: bytes) -> None:
    check_parse(data)


@settings(deadline=None)  # no wall-clock bound: the machine may be busy
@given(hostile_frames)
def test_any_object_parses_or_is_a_bad_frame(frame: dict[str, Any]) -> None:
    check_parse(orjson.dumps(frame))


@settings(deadline=None)  # no wall-clock bound: the machine may be busy
@given(call_frames)
def test_valid_calls_round_trip(frame: dict[str, Any]) -> None:
    assume(not (isinstance(frame["id"], str) and len(frame["id"]) > frames.MAX_ID_CHARS))  # refused: see above
    text = orjson.dumps(frame)  # what a browser sends (JSON has no inf/NaN: they go as null)
    parsed = frames.parse(text, MAX_TIMEOUT)
    assert isinstance(parsed, frames.CallFrame)
    assert (parsed.id, parsed.action, parsed.data) == (frame["id"], frame["action"], orjson.loads(text).get("data"))
    if "timeout" in frame:
        assert parsed.timeout == min(float(frame["timeout"]), MAX_TIMEOUT)


@settings(deadline=None)  # no wall-clock bound: the machine may be busy
@given(ids, json_values, st.floats(min_value=0, max_value=1e6))
def test_result_frames_carry_the_value(frame_id: str | int, value: Any, ms: float) -> None:
    built = frames.result(frame_id, value, ms)
    assert built is not None
    decoded = orjson.loads(payload_of(built))
    assert decoded["type"] == "result" and decoded["id"] == frame_id and decoded["result"] == orjson.loads(orjson.dumps(value))


@settings(deadline=None)  # no wall-clock bound: the machine may be busy
@given(st.integers(0, 600))
def test_deep_values_are_refused_not_raised(depth: int) -> None:
    """orjson re-encodes at most 254 levels: deeper results and pushes give None, not an exception."""
    built = frames.result(1, nested(depth), 0.0)
    pushed = frames.event(Event("tick", nested(depth), "test", "c"))
    assert (built is None) == (pushed is None)
    if built is not None:
        assert orjson.loads(payload_of(built))["result"] == nested(depth)


@settings(deadline=None)  # no wall-clock bound: the machine may be busy
@given(st.integers(1, 400))
def test_deep_ids_and_data_in_calls_are_bad_frames_or_calls(depth: int) -> None:
    deep = "[" * depth + "]" * depth
    check_parse('{"type": "call", "id": ' + deep + ', "action": "echo"}')
    check_parse('{"type": "call", "id": 1, "action": "echo", "data": ' + deep + "}")


@settings(deadline=None)  # no wall-clock bound: the machine may be busy
@given(st.none() | ids, st.text(), st.text(), st.none() | st.floats(min_value=0, max_value=1e9))
def test_error_frames_always_encode(frame_id: str | int | None, code: str, message: str, ms: float | None) -> None:
    decoded = orjson.loads(payload_of(frames.error(frame_id, code, message, ms)))
    assert (decoded["id"], decoded["code"], decoded["message"]) == (frame_id, code, message)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]))
def test_text_frame_lengths(size: int) -> None:
    assert payload_of(text_frame(b"x" * size)) == b"x" * size


def test_hello_and_ready_frames() -> None:
    hello = orjson.loads(payload_of(frames.hello(30.0, 256, True, 5.0)))
    assert hello == {"type": "hello", "maxTimeout": 30.0, "maxCalls": 256, "auth": "required", "authTimeout": 5.0, "demo": True}
    ready = orjson.loads(payload_of(frames.ready("alice", ["echo"], {"echo": "Return data"}, 1.5)))
    assert ready == {
        "type": "ready",
        "sub": "alice",
        "actions": ["echo"],
        "descriptions": {"echo": "Return data"},
        "expiresAt": 1.5,
    }
