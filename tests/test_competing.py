"""Competing responders on one channel, against a real redis-server (docs/scale-out.md):
every call with a requestId runs on exactly one replica, also while replicas join and
leave; an action is answered ``unknown_action`` only when no live responder serves it;
notifications still reach every replica; with claims off the duplicates come back (so
these tests can fail)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from pubsub_rpc import Caller, Responder, RpcError, Settings, UnknownAction, current_request

from scripts.redis_process import RedisProcess

from .conftest import eventually

CALLS = 2_000
IN_FLIGHT = 64  # calls in flight at once: concurrent, and bounded

Executions = dict[str, list[str]]  # requestId -> names of the replicas that ran it


def replica(settings: Settings, name: str, executions: Executions, actions: Iterable[str] = ("echo",)) -> Responder:
    """A responder whose handlers record, per requestId, which replica ran them."""
    responder = Responder(settings, name=name, metrics=False, tracing=False)

    def ran() -> None:
        request = current_request()
        assert request is not None
        executions[request.request_id or f"notification:{request.data}"].append(name)

    if "echo" in actions:

        @responder.action("echo")
        def echo(data: Any) -> Any:
            ran()
            return data

    if "sum" in actions:

        @responder.action("sum")
        def total(data: Any) -> Any:
            ran()
            return sum(data)

    return responder


async def knows_each_other(responders: list[Responder]) -> None:
    others = len(responders) - 1
    await eventually(lambda: all(len(r.directory.live()) == others for r in responders), 10, "every replica to see the others")


async def run_calls(caller: Caller, n: int, done: list[int] | None = None, action: str = "echo") -> None:
    """``n`` calls, IN_FLIGHT at a time; each must come back with its own answer."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    done = done if done is not None else [0]

    async def one(i: int) -> None:
        async with gate:
            result = await caller.call(action, i if action == "echo" else [i, 1], timeout=10)
            assert result == (i if action == "echo" else i + 1)
            done[0] += 1

    await asyncio.gather(*(one(i) for i in range(n)))


def spread(executions: Executions) -> Counter[str]:
    return Counter(name for names in executions.values() for name in names)


def twice(executions: Executions) -> int:
    return sum(1 for names in executions.values() if len(names) > 1)


@pytest.fixture
async def three(settings: Settings) -> AsyncIterator[tuple[list[Responder], Executions]]:
    executions: Executions = defaultdict(list)
    responders = [replica(settings, f"r{i}", executions) for i in range(3)]
    for responder in responders:
        await responder.start()
    try:
        yield responders, executions
    finally:
        for responder in responders:
            await responder.stop()


def outcomes(responder: Responder) -> int:
    s = responder.stats
    return s.replied + s.errors + s.notifications + s.expired + s.dropped


@pytest.mark.timeout(120)
async def test_three_replicas_run_each_call_exactly_once(settings: Settings, three: tuple[list[Responder], Executions]) -> None:
    responders, executions = three
    await knows_each_other(responders)
    async with Caller(settings, name="load") as caller:
        await run_calls(caller, CALLS)
    # The losers' claims may still be on their way back: every message ends in one outcome.
    await eventually(lambda: all(outcomes(r) == CALLS for r in responders), 10, "every claim to be answered")
    ran = spread(executions)
    print(f"\n{CALLS} calls over 3 replicas: ran {dict(sorted(ran.items()))}, twice: {twice(executions)}")
    assert len(executions) == CALLS
    assert twice(executions) == 0
    assert sum(ran.values()) == CALLS
    for responder in responders:
        stats = responder.stats
        assert responder.claiming
        assert stats.received == outcomes(responder) == CALLS
        assert stats.claims_won + stats.claimed_elsewhere == CALLS
        assert stats.replied == stats.claims_won == ran[responder.name]
        assert stats.lost_claims == stats.not_ours == stats.stale == 0


@pytest.mark.timeout(120)
async def test_replicas_joining_under_load_run_nothing_twice(settings: Settings) -> None:
    executions: Executions = defaultdict(list)
    first = replica(settings, "first", executions)
    late = [replica(settings, f"late{i}", executions) for i in range(2)]
    await first.start()
    try:
        async with Caller(settings, name="load") as caller:
            done = [0]
            load = asyncio.create_task(run_calls(caller, CALLS, done))
            await eventually(lambda: done[0] >= CALLS // 5 or load.done(), 30, "the load to get going")
            solo = done[0]
            for responder in late:
                await responder.start()
            await load
    finally:
        for responder in [first, *late]:
            await responder.stop()
    ran = spread(executions)
    print(f"\n{CALLS} calls, 2 replicas joined after {solo}: ran {dict(sorted(ran.items()))}, twice: {twice(executions)}")
    assert solo < CALLS, "the replicas must join while the load runs"
    assert len(executions) == CALLS
    assert twice(executions) == 0


@pytest.mark.timeout(120)
async def test_a_replica_stopped_under_load_leaves_the_calls_to_the_others(
    settings: Settings, three: tuple[list[Responder], Executions]
) -> None:
    responders, executions = three
    await knows_each_other(responders)
    async with Caller(settings, name="load") as caller:
        done = [0]
        load = asyncio.create_task(run_calls(caller, CALLS, done))
        await eventually(lambda: done[0] >= CALLS // 4 or load.done(), 30, "the load to get going")
        stopped_at = done[0]
        await responders[0].stop()
        await load
        await eventually(lambda: all(len(r.directory.live()) == 1 for r in responders[1:]), 5, "the leave to be heard")
    ran = spread(executions)
    print(f"\n{CALLS} calls, r0 stopped after {stopped_at}: ran {dict(sorted(ran.items()))}, twice: {twice(executions)}")
    assert stopped_at < CALLS
    assert len(executions) == CALLS
    assert twice(executions) == 0
    assert ran["r1"] + ran["r2"] > CALLS - stopped_at - IN_FLIGHT  # the rest went to the survivors


@pytest.mark.timeout(60)
async def test_with_claims_off_every_replica_runs_every_call(settings: Settings) -> None:
    """The control: without claims, pub/sub fan-out runs each call on every replica."""
    off = dataclasses.replace(settings, claims="off")
    executions: Executions = defaultdict(list)
    responders = [replica(off, f"r{i}", executions) for i in range(3)]
    for responder in responders:
        await responder.start()
    try:
        await knows_each_other(responders)
        async with Caller(off, name="load") as caller:
            await run_calls(caller, 200)
            await eventually(lambda: sum(len(v) for v in executions.values()) == 600, 10, "every replica to run every call")
    finally:
        for responder in responders:
            await responder.stop()
    print(f"\n200 calls, claims off: ran {dict(sorted(spread(executions).items()))}, twice: {twice(executions)}")
    assert twice(executions) == 200


class Replies:
    """Every message on a reply channel, by requestId: how many replies each call got."""

    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self.channel = channel
        self.by_id: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self._pubsub = client.pubsub()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Replies:
        await self._pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._pubsub.aclose()

    async def _read(self) -> None:
        async for message in self._pubsub.listen():
            if message["type"] != "message":
                continue
            body = orjson.loads(message["data"])
            self.by_id[body.get("requestId")] += 1
            self.codes[(body.get("error") or {}).get("code", "ok")] += 1

    async def settled(self, client: aioredis.Redis) -> None:
        """Everything published before now has been read: a marker went through after it."""
        before = self.by_id["marker"]
        await client.publish(self.channel, orjson.dumps({"requestId": "marker"}))
        await eventually(lambda: self.by_id["marker"] > before, 5, "the marker")


@pytest.mark.timeout(60)
async def test_migration_each_action_is_answered_by_its_owner_and_unknown_ones_once(
    settings: Settings, raw_redis: aioredis.Redis
) -> None:
    """A Laravel-like responder with {sum} and a Python one with {echo} on one pattern."""
    executions: Executions = defaultdict(list)
    a = replica(settings, "a-sum", executions, ["sum"])
    b = replica(settings, "b-echo", executions, ["echo"])
    async with a, b, Caller(settings, name="load") as caller, Replies(raw_redis, caller.reply_channel) as replies:
        await knows_each_other([a, b])
        await asyncio.gather(run_calls(caller, 300, action="echo"), run_calls(caller, 300, action="sum"))
        with pytest.raises(UnknownAction):
            await caller.call("nope", None)
        await replies.settled(raw_redis)
    ran = spread(executions)
    print(f"\nmigration: ran {dict(ran)}, not ours: a={a.stats.not_ours} b={b.stats.not_ours}, replies {dict(replies.codes)}")
    assert ran == {"a-sum": 300, "b-echo": 300}
    assert twice(executions) == 0
    assert a.stats.not_ours == b.stats.not_ours == 300
    assert replies.codes["unknown_action"] == 1  # one of them claimed it and answered, the other kept still
    assert all(n == 1 for rid, n in replies.by_id.items() if rid != "marker")
    assert len(replies.by_id) == 601 + 1


@pytest.mark.timeout(60)
async def test_an_action_nobody_serves_gets_exactly_one_unknown_action(
    settings: Settings, three: tuple[list[Responder], Executions], raw_redis: aioredis.Redis
) -> None:
    responders, _ = three
    await knows_each_other(responders)
    async with Caller(settings, name="asker") as caller, Replies(raw_redis, caller.reply_channel) as replies:
        for _ in range(20):
            with pytest.raises(UnknownAction):
                await caller.call("nobody_serves_this", None)
        await eventually(lambda: sum(r.stats.received for r in responders) == 60, 5, "every replica to read all")
        await replies.settled(raw_redis)
    assert replies.codes == {"unknown_action": 20, "ok": 1}  # the marker has no error
    assert sum(r.stats.errors for r in responders) == 20
    assert sum(r.stats.claimed_elsewhere for r in responders) == 40


@pytest.mark.timeout(60)
async def test_notifications_reach_every_replica(settings: Settings, three: tuple[list[Responder], Executions]) -> None:
    """No requestId, nothing to claim: broadcast, as documented."""
    responders, executions = three
    await knows_each_other(responders)
    async with Caller(settings, name="notifier") as caller:
        assert await caller.notify("echo", "hello") == 3
    await eventually(lambda: len(executions["notification:hello"]) == 3, 5, "all three to run it")
    assert sorted(executions["notification:hello"]) == ["r0", "r1", "r2"]


@pytest.mark.timeout(60)
async def test_a_solo_responder_stops_claiming_after_the_grace(settings: Settings) -> None:
    """Claims cost a round trip: a responder that finds nobody at its join never claims,
    and one alone again takes the fast path once the others are gone for the grace."""
    quick = dataclasses.replace(settings, announce_interval=0.2)
    executions: Executions = defaultdict(list)
    solo, other = replica(quick, "solo", executions), replica(quick, "other", executions)
    async with solo:
        assert not solo.claiming  # alone from the start: no grace
        async with other:
            await eventually(lambda: solo.claiming, 5, "the join to switch claims on")
        await eventually(lambda: not solo.claiming, 5, "the leave and the grace to switch them off")
        async with Caller(quick, name="c") as caller:
            assert await caller.call("echo", 1) == 1
        assert solo.stats.claims_won == 0
        assert solo.stats.replied == 1


@pytest.mark.timeout(60)
async def test_a_claim_key_names_the_winner_and_lives_until_the_deadline_plus_slack(
    settings: Settings, three: tuple[list[Responder], Executions], raw_redis: aioredis.Redis
) -> None:
    responders, executions = three
    await knows_each_other(responders)
    async with Caller(settings, name="one") as caller:
        assert await caller.call("echo", "x", timeout=5) == "x"
    (request_id, (ran_on,)) = next(iter(executions.items()))
    key = settings.claim_prefix + request_id
    winner = next(r for r in responders if r.name == ran_on)
    assert await raw_redis.get(key) == winner.instance.encode()
    assert 9_000 < await raw_redis.pttl(key) <= 15_000  # deadline (5 s) + 10 s, minus the time since


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server this test may stop and start again (same port)."""
    with RedisProcess() as server:
        yield server


@pytest.mark.timeout(120)
async def test_replicas_rejoin_after_a_redis_restart_and_still_run_each_call_once(
    own_redis: RedisProcess, settings: Settings
) -> None:
    """Redis goes away under load: claims, registry and subscriptions with it. Every call
    ends in a result or a named error, the replicas rejoin, and nothing runs twice."""
    own = dataclasses.replace(settings, redis_url=own_redis.url)
    executions: Executions = defaultdict(list)
    responders = [replica(own, f"r{i}", executions) for i in range(3)]
    for responder in responders:
        await responder.start()
    errors: Counter[str] = Counter()
    done = [0]
    try:
        await knows_each_other(responders)
        async with Caller(own, name="load") as caller:
            gate = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                async with gate:
                    try:
                        assert await caller.call("echo", i, timeout=3) == i
                    except RpcError as exc:
                        errors[exc.code] += 1
                        await eventually(lambda: caller.ready, 30, "the caller to come back")
                    done[0] += 1

            load = asyncio.create_task(asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1_000))), 90))
            await eventually(lambda: done[0] >= 200, 30, "the load to get going")
            await own_redis.stop_async()
            await own_redis.start_async()
            await load
            await eventually(lambda: all(r.ready for r in responders), 30, "every replica back")
            await knows_each_other(responders)
            assert await caller.call("echo", "after") == "after"
    finally:
        for responder in responders:
            await responder.stop()
    ran = spread(executions)
    print(f"\nRedis restarted under load: ran {dict(sorted(ran.items()))}, failed {dict(errors)}, twice: {twice(executions)}")
    assert twice(executions) == 0
    assert set(errors) <= {"connection_lost", "no_responder", "timeout"}
    assert sum(ran.values()) >= 1_000 - sum(errors.values())


@pytest.mark.timeout(60)
async def test_an_invalid_request_gets_exactly_one_invalid_request_answer(
    settings: Settings, three: tuple[list[Responder], Executions], raw_redis: aioredis.Redis
) -> None:
    responders, _ = three
    await knows_each_other(responders)
    reply_to = f"{settings.reply_prefix}test.{'0' * 32}"
    async with Replies(raw_redis, reply_to) as replies:
        for n in range(10):
            invalid = {"requestId": f"bad{n}", "replyTo": reply_to, "v": 1, "action": 7}
            assert await raw_redis.publish(settings.request_channel, orjson.dumps(invalid)) == 3
        await eventually(lambda: all(r.stats.received == 10 and r.in_flight == 0 for r in responders), 5, "all read")
        await replies.settled(raw_redis)
    assert replies.codes == {"invalid_request": 10, "ok": 1}  # and the marker
    assert all(replies.by_id[f"bad{n}"] == 1 for n in range(10))
    assert sum(r.stats.errors for r in responders) == 10
    assert all(outcomes(r) == 10 for r in responders)
