"""Where a responder publishes, whatever a request says (docs/protocol.md, "Reply rules"),
and the caller-side guards: unguessable ids, named errors before publishing, events.

Every count is taken from a raw ``PSUBSCRIBE *`` connection or Redis's own INFO, never from
what the responder says it did. Ordering is the synchronisation: Redis delivers a
subscriber's messages in order and the responder handles them in order, so once the reply
to a call published after a crafted message is back, the crafted one has been handled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, CallTimeout, InvalidRequest, Overloaded, RequestTooLarge, Responder, Settings
from pubsub_rpc.channels import CACHE_SIZE, ChannelRules
from pubsub_rpc.link import HEADER_CACHE_SIZE
from pubsub_rpc.ratelog import RateLimitedLog

from .conftest import eventually
from .redis_monitor import monitoring, publish_count


def _outside(monitor_channels: set[bytes], *ours: str) -> set[bytes]:
    """Channels published on besides ``ours`` and each process's own probe channel."""
    return {ch for ch in monitor_channels - {name.encode() for name in ours} if b".probe." not in ch}


# -- the storm of issue 8 ----------------------------------------------------------------


async def test_one_responder_never_answers_onto_its_own_pattern(settings: Settings, raw_redis: aioredis.Redis) -> None:
    """`x` + `_sender` x 100 as request channel and replyTo made the seed-style responder
    publish 101 times, each reply heard again as a request. Now: nothing is published."""
    # The default pattern, and a channel limit the crafted name fits in, so the reply rules
    # (not the length limit) are what stops it.
    # Probes (a PUBLISH every RPC_PROBE_INTERVAL / 4) are kept out of the PUBLISH count.
    settings = dataclasses.replace(settings, responder_pattern="*_sender", max_channel_bytes=2048, probe_interval=3600)
    crafted = f"{settings.channel}x" + "_sender" * 100
    responder = Responder(settings, name="app")
    register(responder)
    async with responder, Caller(settings) as caller, monitoring(raw_redis) as monitor:
        before = await publish_count(raw_redis)
        with_reply_to = {"action": "echo", "data": 1, "requestId": "storm-1", "replyTo": crafted, "v": 1}
        seed_style = {"action": "echo", "data": 1, "requestId": "storm-2"}  # reply to crafted minus one suffix
        assert await raw_redis.publish(crafted, orjson.dumps(with_reply_to)) == 2  # the responder and the monitor
        assert await raw_redis.publish(crafted, orjson.dumps(seed_style)) == 2
        for n in range(5):  # each round would let a storm take one more hop
            assert await caller.call("echo", n) == n
        await eventually(lambda: len(monitor.on(caller.reply_channel)) == 5, what="the monitor to see the replies")
        extra = _outside(monitor.channels(), crafted, settings.request_channel, caller.reply_channel)
        published = await publish_count(raw_redis) - before
        print(f"one responder, x_sender*100: {published} PUBLISH in all, {len(extra)} unexpected channels")
        assert extra == set()
        assert published == 2 + 5 + 5  # the two crafted requests, five calls, five replies
        assert responder.stats.rejected_reply_channel == 2 and responder.stats.dropped == 2


async def test_two_responders_sharing_the_default_pattern_do_not_storm(settings: Settings, raw_redis: aioredis.Redis) -> None:
    """Two apps on one Redis, both on `*_sender`: x 14 gave 65,534 publishes and kept going.
    Now the crafted message costs nothing, and good calls go on being answered."""
    # No probe, and no registry heartbeat, in the count (the joins come before `before`).
    settings = dataclasses.replace(settings, responder_pattern="*_sender", probe_interval=3600, announce_interval=3600)
    crafted = f"{settings.channel}x" + "_sender" * 14
    assert len(crafted) <= settings.max_channel_bytes  # it passes the length limit: the reply rules stop it
    first, second = Responder(settings, name="app1"), Responder(settings, name="app2")
    register(first)
    register(second)
    async with first, second, Caller(settings) as caller, monitoring(raw_redis) as monitor:
        before = await publish_count(raw_redis)
        message = {"action": "echo", "data": "x" * 10_000, "requestId": "storm", "replyTo": crafted}
        assert await raw_redis.publish(crafted, orjson.dumps(message)) == 3
        assert await raw_redis.publish(crafted, orjson.dumps({**message, "replyTo": None})) == 3  # seed style
        for n in range(5):
            assert await caller.call("echo", n) == n  # replicas of one channel: one claims it and answers
        await eventually(lambda: len(monitor.on(caller.reply_channel)) == 5, what="one reply to every call")
        extra = _outside(monitor.channels(), crafted, settings.request_channel, caller.reply_channel)
        published = await publish_count(raw_redis) - before
        print(f"two responders, x_sender*14: {published} PUBLISH in all, {len(extra)} unexpected channels")
        assert extra == set()
        assert published == 2 + 5 + 5
        assert not any(channel.endswith(b"_sender") for channel in extra)
        for responder in (first, second):
            assert responder.stats.rejected_reply_channel == 2


# -- the reply rules one by one ----------------------------------------------------------


def test_channel_rules() -> None:
    settings = Settings(channel="app", responder_pattern="*_sender", max_channel_bytes=64)
    rules = ChannelRules(settings, [settings.responder_pattern])
    assert rules.reply_to_allowed("app.reply.web.0123456789abcdef")
    assert not rules.reply_to_allowed("other.reply.web.0123456789abcdef")  # another namespace
    assert not rules.reply_to_allowed("app.reply.x_sender")  # heard by our own pattern
    assert not rules.reply_to_allowed("app.reply." + "x" * 60)  # too long
    assert not rules.reply_to_allowed("app.reply." + "é" * 30)  # 70 bytes, 40 characters
    assert not rules.reply_to_allowed("app")  # the push channel is not a reply channel
    assert rules.seed_reply_channel("app_sender") == "app"
    assert rules.seed_reply_channel("app_sender_sender") is None  # app_sender: our own pattern
    assert rules.seed_reply_channel("_sender") is None  # the empty name
    assert rules.push_target(None, None) == "app"
    assert rules.push_target(None, "alice") == "app.user.alice"
    assert rules.push_target("app.x_sender", None) is None
    assert rules.push_target(None, "") is None and rules.push_target(None, 42) is None
    assert rules.push_target(None, "x_sender") is None
    glob = ChannelRules(dataclasses.replace(settings, responder_pattern="app.req[0-9]"), ["app.req[0-9]"])
    assert glob.publishable("app.reqx") and not glob.publishable("app.req7")  # Redis glob semantics


def test_channel_rule_caches_are_bounded() -> None:
    settings = Settings(channel="app")
    rules = ChannelRules(settings, ["*_sender"])
    for n in range(3 * CACHE_SIZE):
        rules.reply_to_allowed(f"app.reply.web.{n}")
        rules.seed_reply_channel(f"app{n}_sender")
    assert len(rules.reply_to_verdicts) <= CACHE_SIZE and len(rules._seed) <= CACHE_SIZE


@pytest.mark.parametrize(
    "reply_to",
    [
        "elsewhere.reply.web.0123456789abcdef",  # another namespace
        "{channel}.reply.x_sender",  # inside the namespace but heard by the responder itself
        "{channel}.reply." + "x" * 300,  # over max_channel_bytes
        "{channel}",  # the push channel
        "",
    ],
)
async def test_a_reply_outside_the_rules_is_dropped_and_counted(
    responder: Responder, caller: Caller, raw_redis: aioredis.Redis, settings: Settings, reply_to: str
) -> None:
    target = reply_to.format(channel=settings.channel)
    async with monitoring(raw_redis) as monitor:
        request = {"action": "echo", "data": 1, "requestId": "r1", "replyTo": target, "v": 1}
        await raw_redis.publish(settings.request_channel, orjson.dumps(request))
        invalid = {"action": 42, "requestId": "r2", "replyTo": target, "v": 1}  # its error reply: same rule
        await raw_redis.publish(settings.request_channel, orjson.dumps(invalid))
        assert await caller.call("echo", "after") == "after"
        await eventually(lambda: monitor.on(caller.reply_channel) != [], what="the good reply")
    assert _outside(monitor.channels(), settings.request_channel, caller.reply_channel) == set()
    assert responder.stats.rejected_reply_channel == 2
    assert responder.stats.dropped == 2


async def test_seed_era_request_is_answered_on_the_shared_channel(
    responder: Responder, raw_redis: aioredis.Redis, settings: Settings, caller: Caller
) -> None:
    async with monitoring(raw_redis) as monitor:
        await raw_redis.publish(settings.request_channel, orjson.dumps({"action": "echo", "data": 7, "requestId": "s1"}))
        await eventually(lambda: monitor.on(settings.channel) != [], what="the seed-style reply")
    assert orjson.loads(monitor.on(settings.channel)[0])["requestId"] == "s1"


async def test_request_channel_too_long_or_not_utf8_is_dropped_without_a_traceback(
    responder: Responder, caller: Caller, raw_redis: aioredis.Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    request = orjson.dumps({"action": "echo", "data": 1, "requestId": "r"})
    long_name = f"{settings.channel}{'x' * 300}_sender".encode()
    bad_utf8 = settings.channel.encode() + b"\xff\xfe_sender"
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            await raw_redis.publish(long_name, request)
            await raw_redis.publish(bad_utf8, request)
        assert await caller.call("echo", "after") == "after"
    assert responder.stats.bad_channel == 100 and responder.stats.dropped == 100
    assert not [r for r in caplog.records if r.exc_info], "no traceback per message"
    lines = [r for r in caplog.records if "dropped a request on" in r.getMessage()]
    assert 1 <= len(lines) <= 2, "one line per reason per interval, not one per message"


# -- pushes ---------------------------------------------------------------------------


async def test_push_rules(responder: Responder, caller: Caller, raw_redis: aioredis.Redis, settings: Settings) -> None:
    async with monitoring(raw_redis) as monitor:
        assert await responder.push("configs", {"n": 1}) >= 1
        await responder.push("private", {"n": 2}, user="alice")
        assert await responder.push("bad", channel=settings.request_channel) == 0  # heard by our own pattern
        assert await responder.push("bad", user="") == 0
        assert await responder.push("bad", user="x" * 300) == 0
        assert await responder.push("bad", user="x_sender") == 0  # <channel>.user.x_sender: our own pattern hears it
        with pytest.raises(ValueError):
            await responder.push("bad", channel="a", user="b")
        await responder.push("marker")
        await eventually(lambda: len(monitor.on(settings.channel)) == 2, what="the marker push")
    assert monitor.on(settings.user_prefix + "alice") != []
    assert orjson.loads(monitor.on(settings.user_prefix + "alice")[0])["data"] == {"n": 2}
    assert responder.stats.rejected_push_channel == 4
    assert _outside(monitor.channels(), settings.channel, settings.user_prefix + "alice") == set()


# -- bounded memory ---------------------------------------------------------------------


async def test_three_thousand_reply_channels_leave_the_caches_bounded(
    responder: Responder, raw_redis: aioredis.Redis, settings: Settings, caller: Caller
) -> None:
    async with raw_redis.pipeline(transaction=False) as pipe:
        for n in range(3000):
            reply_to = f"{settings.reply_prefix}attacker.{n:04d}" + "x" * 200
            pipe.publish(settings.request_channel, orjson.dumps({"action": "echo", "requestId": str(n), "replyTo": reply_to}))
        await pipe.execute()
    assert await caller.call("echo", "after") == "after"
    assert responder.stats.replied >= 3000
    assert len(responder._publisher._headers) <= HEADER_CACHE_SIZE
    assert len(responder.channels.reply_to_verdicts) <= CACHE_SIZE


def _gated_responder(settings: Settings) -> tuple[Responder, asyncio.Event, list[str]]:
    """A responder whose async action waits for the test to open a gate; it records
    what happened to each run, so a test can see cancellations."""
    responder = Responder(settings, name="gated")
    gate = asyncio.Event()
    events: list[str] = []

    @responder.action("wait")
    async def wait(data: Any) -> Any:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            events.append(f"cancelled {data}")
            raise
        events.append(f"done {data}")
        return data

    @responder.action("stubborn")
    async def stubborn(data: Any) -> Any:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            events.append("ignored the cancel")
            await gate.wait()  # a handler that swallows the cancel still loses its slot
        return data

    @responder.action("now")
    async def now(data: Any) -> Any:
        return data

    return responder, gate, events


async def test_backlog_is_bounded_in_bytes(settings: Settings) -> None:
    settings = dataclasses.replace(settings, max_concurrency=1, max_backlog=100, max_backlog_bytes=3500)
    responder, gate, _ = _gated_responder(settings)
    async with responder, Caller(settings) as caller:
        first = caller.start_call("wait", "a")  # runs
        queued = [caller.start_call("wait", "b" * 900) for _ in range(3)]  # about 3,300 bytes queued
        await eventually(lambda: responder.in_flight == 4, what="one running, three queued")
        with pytest.raises(Overloaded, match="bytes"):
            await caller.call("wait", "c" * 900)  # the count limit (100) is far, the byte limit is not
        assert responder.stats.overloaded == 1 and responder.backlog_bytes > 3000
        gate.set()
        assert await first == "a"
        assert [await q for q in queued] == ["b" * 900] * 3
    assert responder.backlog_bytes == 0


async def test_async_handler_is_cancelled_at_the_deadline_and_its_slot_freed(
    settings: Settings, raw_redis: aioredis.Redis
) -> None:
    settings = dataclasses.replace(settings, max_concurrency=1)
    responder, gate, events = _gated_responder(settings)
    async with Caller(settings) as caller, monitoring(raw_redis) as monitor:
        async with responder:
            with pytest.raises(CallTimeout):
                await caller.call("wait", 1, timeout=0.2)
            await eventually(lambda: events == ["cancelled 1"], what="the handler to be cancelled at the deadline")
            assert responder.stats.expired == 1 and responder.in_flight == 0
            assert await caller.call("now", 2) == 2  # the only slot is free again
            with pytest.raises(CallTimeout):
                await caller.call("stubborn", 3, timeout=0.2)
            await eventually(lambda: "ignored the cancel" in events, what="the stubborn handler to be cancelled")
            assert await caller.call("now", 4) == 4  # freed at once, though the handler still runs
            assert responder.stats.expired == 2
            gate.set()
            await eventually(lambda: not responder._abandoned, what="the stubborn handler to finish")
        await raw_redis.publish("marker", b"")  # delivered after anything the responder sent
        await eventually(lambda: monitor.on("marker") != [], what="the marker")
    assert len(monitor.on(caller.reply_channel)) == 2, "no reply after the deadline: the caller has given up"
    assert responder.stats.received == responder.stats.replied + responder.stats.expired


# -- the caller's side ------------------------------------------------------------------


async def test_reply_channel_names_the_service_and_ids_are_unguessable(
    responder: Responder, settings: Settings, raw_redis: aioredis.Redis
) -> None:
    settings = dataclasses.replace(settings, service="billing")
    async with Caller(settings) as caller, monitoring(raw_redis, settings.request_channel) as monitor:
        prefix = f"{settings.reply_prefix}billing."
        assert caller.reply_channel.startswith(prefix)
        random_part = caller.reply_channel.removeprefix(prefix)
        assert len(random_part) >= 16 and int(random_part, 16) >= 0
        await asyncio.gather(*(caller.call("echo", n) for n in range(600)))  # more than one batch of ids
        await eventually(lambda: len(monitor.messages) == 600, what="every request seen")
    ids = [orjson.loads(data)["requestId"] for _, data in monitor.messages]
    assert len(set(ids)) == 600
    assert all(len(i) == 32 and int(i, 16) >= 0 and caller.caller_id not in i for i in ids)


async def test_guessed_request_ids_cannot_settle_a_pending_call(settings: Settings, raw_redis: aioredis.Redis) -> None:
    """The attack of issue 8: replies with guessed ids on a caller's (visible) reply channel."""
    responder, gate, _ = _gated_responder(settings)
    async with responder, Caller(settings) as caller:
        pending = caller.start_call("wait", "the real answer")
        await eventually(lambda: responder.in_flight == 1, what="the call to run")
        for guess in [f"{caller.caller_id}-{n}" for n in range(1, 21)] + [str(n) for n in range(20)]:
            fake = {"requestId": guess, "ok": True, "result": "spoofed", "v": 1, "action": "wait"}
            await raw_redis.publish(caller.reply_channel, orjson.dumps(fake))
        gate.set()  # the real reply is published after every fake one
        assert await pending == "the real answer"


async def test_oversized_request_fails_at_the_caller_before_publishing(
    responder: Responder, caller: Caller, settings: Settings
) -> None:
    with pytest.raises(RequestTooLarge) as raised:
        await caller.call("echo", "x" * settings.max_message_bytes)
    assert raised.value.code == "request_too_large"
    with pytest.raises(RequestTooLarge):
        await caller.notify("echo", "x" * settings.max_message_bytes)
    assert caller.pending_count == 0
    assert await caller.call("echo", "after") == "after"
    assert responder.stats.received == 1, "nothing oversized was published"


def _nested(depth: int) -> list[Any]:
    data: list[Any] = []
    for _ in range(depth):
        data = [data]
    return data


@pytest.mark.parametrize(
    "data", [object(), {1, 2}, 2**70, _nested(300), {"key": b"bytes"}], ids=["object", "set", "int-2**70", "nested-300", "bytes"]
)
async def test_data_json_cannot_carry_fails_at_the_caller_with_a_named_error(
    responder: Responder, caller: Caller, data: Any
) -> None:
    with pytest.raises(InvalidRequest, match="cannot be sent as JSON"):
        await caller.call("echo", data)
    with pytest.raises(InvalidRequest):
        caller.start_call("echo", data)
    assert caller.pending_count == 0
    assert await caller.call("echo", "after") == "after"
    assert responder.stats.received == 1, "nothing was published for it"


async def test_a_push_whose_data_says_ok_false_is_still_an_event(responder: Responder, caller: Caller) -> None:
    async with caller.events() as events:
        await responder.push("status", {"ok": False, "reason": "disk full"})
        event = await asyncio.wait_for(anext(events), 5)
    assert event.action == "status" and event.data == {"ok": False, "reason": "disk full"}


async def test_events_end_when_the_caller_closes(responder: Responder, settings: Settings) -> None:
    caller = Caller(settings)
    await caller.start()
    received: list[Any] = []
    async with caller.events() as events:

        async def consume() -> None:
            async for event in events:
                received.append(event.action)

        consumer = asyncio.create_task(consume())
        await responder.push("before")
        await eventually(lambda: received == ["before"], what="the push")
        await caller.close()
        await asyncio.wait_for(consumer, 5)  # ended, did not hang
    async with caller.events() as late:  # opened after close: ends at once
        assert [event async for event in late] == []


def test_rate_limited_log_says_one_line_per_reason_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.ratelog"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for _ in range(1000):
            limited.warning("a", "bad %s", "input")
        limited.warning("b", "other")
        assert limited.suppressed("a") == 999
        now[0] = 10.5
        limited.warning("a", "bad %s", "again")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad input", "other", "bad again (and 999 more like it in the last 10s)"]


async def test_garbage_on_the_shared_channel_is_counted_by_callers_and_logged_rate_limited(
    responder: Responder, caller: Caller, raw_redis: aioredis.Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pubsub_rpc.caller"):
        for n in range(50):
            await raw_redis.publish(settings.channel, b"not json %d" % n)
        await responder.push("marker")  # delivered after the garbage
        async with caller.events() as events:
            await responder.push("marker")
            await asyncio.wait_for(anext(events), 5)
    assert caller.malformed == 50
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 1
