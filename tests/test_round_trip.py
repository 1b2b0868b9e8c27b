"""Caller and responder through a real redis-server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from pubsub_rpc import (
    Caller,
    CallTimeout,
    HandlerError,
    InvalidRequest,
    NoResponder,
    Responder,
    RpcError,
    Settings,
    UnknownAction,
)

from .conftest import eventually


async def test_round_trip(responder: Responder, caller: Caller) -> None:
    assert await caller.call("echo", {"hello": "world"}) == {"hello": "world"}
    assert await caller.call("sum", [1, 2, 3.5]) == 6.5
    assert await caller.call("sum", {"numbers": [4, 5]}) == 9
    assert await caller.call("slow", {"ms": 10}) == {"sleptMs": 10}


async def test_introspection_lists_every_action_with_a_description(responder: Responder, caller: Caller) -> None:
    actions = await caller.call("actions")
    names = {a["name"] for a in actions}
    assert {"configs", "echo", "sum", "slow", "fail", "actions"} <= names
    assert all(a["description"] for a in actions)


async def test_thousand_concurrent_calls_are_each_answered_with_their_own_reply(responder: Responder, caller: Caller) -> None:
    results = await asyncio.gather(*(caller.call("echo", {"n": n}) for n in range(1000)))
    assert results == [{"n": n} for n in range(1000)]
    assert caller.pending_count == 0


async def test_timeout_is_a_named_exception_and_leaves_nothing_pending(responder: Responder, caller: Caller) -> None:
    started = time.monotonic()
    with pytest.raises(CallTimeout, match="slow"):
        await caller.call("slow", {"ms": 2000}, timeout=0.2)
    # Never early (a lower bound is causality, not speed); CallTimeout rather than the 2 s
    # result is the proof that it did not wait for the reply.
    assert time.monotonic() - started >= 0.2
    assert isinstance(CallTimeout(), TimeoutError)
    assert caller.pending_count == 0


async def test_cancelled_call_leaves_no_pending_entry(responder: Responder, caller: Caller) -> None:
    task = asyncio.create_task(caller.call("slow", {"ms": 2000}))
    await eventually(lambda: caller.pending_count == 1, what="the call to be pending")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert caller.pending_count == 0


@pytest.mark.parametrize(
    ("action", "data", "error", "code"),
    [
        ("no_such_action", None, UnknownAction, "unknown_action"),
        ("sum", "not a list", InvalidRequest, "invalid_request"),
        ("slow", {"ms": -1}, InvalidRequest, "invalid_request"),
        ("fail", None, HandlerError, "handler_error"),
    ],
)
async def test_errors_arrive_as_replies_with_their_code(
    responder: Responder, caller: Caller, action: str, data: object, error: type[RpcError], code: str
) -> None:
    # The error class (never CallTimeout) proves the error came back as a reply, before the
    # timeout, without a wall-clock bound (how fast it is is the benchmark's business).
    with pytest.raises(error) as info:
        await caller.call(action, data, timeout=30)
    assert info.value.code == code
    assert info.value.message


async def test_no_responder_fails_fast(caller: Caller) -> None:
    # NoResponder, not CallTimeout: the caller knew at once (PUBLISH reached nobody) and did
    # not wait out the 30 s.
    with pytest.raises(NoResponder):
        await caller.call("echo", 1, timeout=30)
    assert caller.pending_count == 0


async def test_malformed_messages_leave_the_responder_serving(
    responder: Responder, caller: Caller, raw_redis: aioredis.Redis, settings: Settings
) -> None:
    channel = settings.request_channel
    garbage = [
        b"not json at all",
        b"[1, 2, 3]",
        b"null",
        orjson.dumps({"data": 1}),  # no action, no requestId: nothing to reply to
        orjson.dumps({"action": 42, "requestId": None}),
        b"{" * 10_000,
        b"x" * (settings.max_message_bytes + 1),
    ]
    for message in garbage:
        assert await raw_redis.publish(channel, message) == 1
    await eventually(lambda: responder.stats.malformed == len(garbage), what="every malformed message counted")
    assert await caller.call("echo", "still here") == "still here"


async def test_invalid_request_with_a_request_id_gets_an_error_reply(
    responder: Responder, raw_redis: aioredis.Redis, settings: Settings
) -> None:
    async with raw_redis.pubsub() as pubsub:
        await pubsub.subscribe(settings.channel)
        await raw_redis.publish(settings.request_channel, orjson.dumps({"action": ["x"], "requestId": "bad-1"}))
        reply = await _next_message(pubsub)
    assert reply["requestId"] == "bad-1" and reply["ok"] is False
    assert reply["error"]["code"] == "invalid_request"


async def test_pushes_arrive(responder: Responder, caller: Caller) -> None:
    async with caller.events() as events:
        receivers = await responder.push("configs", {"locale": "en"})
        assert receivers >= 1
        event = await asyncio.wait_for(anext(events), 5)
    assert event.action == "configs" and event.data == {"locale": "en"} and event.source == "python"


async def test_seed_format_request_gets_a_seed_format_reply(
    responder: Responder, raw_redis: aioredis.Redis, settings: Settings
) -> None:
    """What the seed's LaravelService.js sends and reads: no `v`, reply on the shared channel,
    the result's keys at the top level."""
    async with raw_redis.pubsub() as pubsub:
        await pubsub.subscribe(settings.channel)
        request = {"action": "configs", "data": None, "requestId": "seed-1", "source": "nodejs"}
        await raw_redis.publish(settings.request_channel, orjson.dumps(request))
        reply = await _next_message(pubsub)
    assert reply["requestId"] == "seed-1" and reply["source"] == "python" and reply["action"] == "configs"
    assert reply["locale"] == "en" and reply["appName"]  # merged, as Laravel's [...$configs, ...$response]
    assert reply["ok"] is True and reply["result"]["locale"] == "en"


async def test_notify_runs_the_action_without_a_reply(responder: Responder, caller: Caller) -> None:
    assert await caller.notify("echo", "fire and forget") == 1
    await eventually(lambda: responder.stats.notifications == 1, what="the notification to run")
    assert responder.stats.replied == 0


async def test_expired_request_is_skipped(responder: Responder, raw_redis: aioredis.Redis, settings: Settings) -> None:
    request = {"action": "echo", "requestId": "late", "v": 1, "deadline": int(time.time() * 1000) - 1000}
    await raw_redis.publish(settings.request_channel, orjson.dumps(request))
    await eventually(lambda: responder.stats.expired == 1, what="the late request to be skipped")


async def test_private_replies_do_not_reach_the_shared_channel(
    responder: Responder, caller: Caller, raw_redis: aioredis.Redis, settings: Settings
) -> None:
    """Replies go to the caller's own channel; other callers on the shared one never see them.
    A push sent after the reply is the marker: Redis delivers in order, so anything the call
    leaked onto the shared channel would arrive before it."""
    async with raw_redis.pubsub() as pubsub:
        await pubsub.subscribe(settings.channel)
        assert await caller.call("echo", "mine") == "mine"
        await responder.push("marker")
        seen = await _next_message(pubsub)
    assert seen["action"] == "marker" and seen["requestId"] is None


async def _next_message(pubsub: aioredis.client.PubSub, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
            if message is not None:
                return orjson.loads(message["data"])
