"""Property-based tests (hypothesis): the wire format's functions over arbitrary input, and
a real connected responder's dispatch fed arbitrary messages.

Properties, not examples: decoding never fails but with MalformedMessage, parsing never
but with InvalidRequest, every encoder round-trips, and the responder never raises and
accounts for every message (answered exactly once, or counted as dropped).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pubsub_rpc import RemoteError, Responder, Settings, protocol
from pubsub_rpc.errors import _REMOTE_BY_CODE, InvalidRequest
from pubsub_rpc.protocol import ENVELOPE_KEYS, MalformedMessage

from .conftest import eventually
from .redis_monitor import monitoring

FAST = hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)
envelopes = st.dictionaries(st.sampled_from(sorted(ENVELOPE_KEYS | {"x"})), json_values, max_size=8)


# -- the wire format ----------------------------------------------------------------------


@FAST
@given(st.binary(max_size=300) | json_values.map(orjson.dumps) | st.binary(max_size=40).map(lambda b: b'{"a":"' + b + b'"}'))
def test_decode_returns_a_dict_or_raises_malformed(raw: bytes) -> None:
    try:
        message = protocol.decode(raw, max_bytes=200)
    except MalformedMessage:
        return
    assert isinstance(message, dict)


@FAST
@given(json_objects)
def test_decode_round_trips_any_json_object(message: dict[str, Any]) -> None:
    assert protocol.decode(orjson.dumps(message), max_bytes=1 << 20) == message


@FAST
@given(envelopes)
def test_parse_request_returns_a_request_or_raises_invalid_request(message: dict[str, Any]) -> None:
    try:
        request = protocol.parse_request(message)
    except InvalidRequest:
        return
    assert request.action  # a non-empty string (the type says str)
    assert request.request_id is None or isinstance(request.request_id, str)
    assert request.reply_to is None or isinstance(request.reply_to, str)
    assert request.legacy == ("v" not in message)
    request.expired()  # whatever the deadline's value


@FAST
@given(
    action=st.text(min_size=1, max_size=20),
    data=json_values,
    request_id=st.none() | st.text(max_size=40),
    reply_to=st.none() | st.text(max_size=40),
    deadline=st.none() | st.integers(min_value=0, max_value=2**53),
)
def test_encode_request_round_trips(
    action: str, data: Any, request_id: str | None, reply_to: str | None, deadline: int | None
) -> None:
    raw = protocol.encode_request(action, data, request_id, "python", reply_to, deadline)
    request = protocol.parse_request(protocol.decode(raw, max_bytes=1 << 20))
    assert (request.action, request.data, request.request_id, request.reply_to) == (action, data, request_id, reply_to)
    assert request.deadline_ms == deadline and request.source == "python" and not request.legacy


@FAST
@given(result=json_values, legacy=st.booleans(), request_id=st.text(max_size=20))
def test_encode_result_round_trips(result: Any, legacy: bool, request_id: str) -> None:
    reply = protocol.decode(protocol.encode_result("python", "act", request_id, result, legacy), max_bytes=1 << 20)
    assert reply["requestId"] == request_id and reply["ok"] is True
    assert protocol.result_of(reply) == result


@FAST
@given(code=st.sampled_from(sorted(_REMOTE_BY_CODE)) | st.text(max_size=12), message=st.text(max_size=40), details=json_values)
def test_encode_error_round_trips_to_the_named_exception(code: str, message: str, details: Any) -> None:
    error = _REMOTE_BY_CODE.get(code, RemoteError)(message, details=details)
    error.code = code
    reply = protocol.decode(protocol.encode_error("python", "act", "r1", error), max_bytes=1 << 20)
    try:
        protocol.result_of(reply)
    except RemoteError as raised:
        assert raised.code == code and type(raised) is _REMOTE_BY_CODE.get(code, RemoteError)
        assert raised.details == details
    else:
        raise AssertionError("an error reply must raise")


def test_encode_error_survives_details_json_cannot_carry() -> None:
    error = InvalidRequest("bad", details={"thing": object()})
    reply = orjson.loads(protocol.encode_error("python", "act", "r1", error))
    assert reply["error"] == {"code": "invalid_request", "message": "bad"}


@FAST
@given(action=st.text(min_size=1, max_size=20), data=json_values)
def test_encode_push_round_trips_to_an_event(action: str, data: Any) -> None:
    message = protocol.decode(protocol.encode_push("python", action, data), max_bytes=1 << 20)
    event = protocol.Event.from_message(message, "ch")
    assert (event.action, event.data, event.source, event.channel) == (action, data, "python", "ch")


# -- the responder's dispatch, for real -----------------------------------------------------

hostile_strings = st.sampled_from(["", "*", "x" * 10_000, "elsewhere.reply.a", "{C}", "{C}_sender", "{C}.reply.x_sender"])
field_values = json_values | hostile_strings | st.just(10**18) | st.lists(st.just("x"), max_size=3)


@st.composite
def dispatch_inputs(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """(channel suffix, raw message, whether a reply is owed)."""
    kind = draw(st.sampled_from(["bytes", "envelope", "valid"]))
    channel = draw(st.sampled_from(["_sender", "x_sender", "_sender_sender"]))
    if kind == "bytes":
        return channel, draw(st.binary(max_size=200) | json_values.map(orjson.dumps)), False
    if kind == "envelope":
        message = draw(st.dictionaries(st.sampled_from(sorted(ENVELOPE_KEYS | {"x"})), field_values, max_size=8))
        return channel, orjson.dumps(message), False
    # A valid request that is owed exactly one reply: a good reply channel, no past deadline.
    message = {
        "action": draw(st.sampled_from(["echo", "later", "fail", "bad_result", "nope"])),
        "data": draw(json_values),
        "requestId": "owed",
    }
    if draw(st.booleans()):
        message["v"] = 1
        message["replyTo"] = "{REPLY}"
        if draw(st.booleans()):
            message["deadline"] = int(time.time() * 1000) + 60_000
        channel = draw(st.sampled_from(["_sender", "x_sender", "_sender_sender"]))
    else:
        channel = draw(st.sampled_from(["_sender", "x_sender"]))  # seed style: reply on the channel minus the suffix
    return channel, orjson.dumps(message), True


async def test_dispatch_never_raises_and_accounts_for_every_message(settings: Settings, raw_redis: aioredis.Redis) -> None:
    settings = dataclasses.replace(settings, max_concurrency=4, max_backlog=8)
    responder = Responder(settings, name="property")

    @responder.action("echo")
    def echo(data: Any) -> Any:
        return data

    @responder.action("later")
    async def later(data: Any) -> Any:
        await asyncio.sleep(0)
        return data

    @responder.action("fail")
    def fail(data: Any) -> Any:
        raise InvalidRequest("no", details={"not json": object()})

    @responder.action("bad_result")
    def bad_result(data: Any) -> Any:
        return {"set": {1, 2}}

    C = settings.channel
    reply_to = f"{settings.reply_prefix}property.0123456789abcdef"
    owed: list[str] = []
    counter = itertools.count()

    @FAST
    @given(dispatch_inputs())
    def feed(case: tuple[str, bytes, bool]) -> None:
        suffix, raw, is_owed = case
        raw = raw.replace(b"{C}", C.encode()).replace(b"{REPLY}", reply_to.encode())
        if is_owed:
            request_id = f"owed-{next(counter)}"
            raw = raw.replace(b'"owed"', orjson.dumps(request_id))
            owed.append(request_id)
        responder._on_message(C + suffix, raw)  # must not raise, whatever the bytes

    async with responder, monitoring(raw_redis, C + "*") as monitor:
        feed()
        stats = responder.stats
        await eventually(lambda: responder.in_flight == 0, what="every request to finish")
        probes = settings.probe_prefix.encode()  # the responder's own probe nonces (every 1.25 s) are not replies

        def replies() -> list[tuple[bytes, bytes]]:
            return [(channel, data) for channel, data in monitor.messages if not channel.startswith(probes)]

        await eventually(lambda: len(replies()) == stats.replied + stats.errors, what="every reply published")
        assert stats.received == stats.replied + stats.errors + stats.notifications + stats.expired + stats.dropped
        answered = [orjson.loads(data).get("requestId") for _, data in replies()]
        assert all(answered.count(request_id) == 1 for request_id in owed), "an owed reply missing or doubled"
        assert all(not channel.endswith(b"_sender") for channel, _ in replies())
        print(f"dispatch: {stats}")
