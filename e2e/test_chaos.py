"""The chaos suite (issue 9): faults injected into a compose stack of 3 responder replicas and
2 gateways under a steady load from the host (library Caller) and from browsers (WebSockets
through both gateways). Each test prints its figures and asserts them.

Runs alone with `make chaos` (or `make e2e PYTEST_ARGS='-m chaos'`). The stack is a compose
project of its own (e2e/chaos_stack.py); pub/sub tests run first, then the stack's
responders and gateways are recreated with RPC_TRANSPORT=streams for the Streams tests.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aredis
from pubsub_rpc import Caller

from tests.browser_flows import ARTIFACTS
from tests.ws_frames import DEMO, connect

from .chaos_load import Load, Outcome, ReplyTap, summary
from .chaos_redis import DETECTION_BOUND, MARGIN, fault_round
from .chaos_runs import Runs, settled_runs
from .chaos_stack import RESPONDER, VISIBILITY, ChaosStack, docker
from .conftest import PROJECT, _compose_command, _load_image_overrides

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

RECOVERY_TARGET = 2.0  # issue 9's target from Redis back to the first good call: printed
RECOVERY_BOUND = 5.0  # what is asserted (docs/operations.md promises under 5 s)
RECLAIM_MARGIN = 3.0  # past the visibility timeout: a reclaim scan or two, the rerun, the reply
FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def chaos() -> Iterator[ChaosStack]:
    _load_image_overrides()
    stack = ChaosStack(_compose_command(), f"{PROJECT}-chaos")
    stack.down()  # what an interrupted run left behind
    try:
        took = stack.up("pubsub", build=True)
        print(f"\nchaos stack (3 responders, 2 gateways) up and healthy in {took:.1f}s")
        yield stack
    finally:
        stack.down()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "chaos-figures.json").write_text(json.dumps(FIGURES, indent=2) + "\n")


@pytest.fixture
def pubsub(chaos: ChaosStack) -> ChaosStack:
    chaos.up("pubsub")
    return chaos


@pytest.fixture
def streams(chaos: ChaosStack) -> ChaosStack:
    took = chaos.up("streams")
    print(f"\nchaos stack ready with RPC_TRANSPORT={chaos.transport} in {took:.1f}s")
    return chaos


def record(test: str, line: str, **figures: Any) -> None:
    FIGURES[test] = figures
    print(f"\n[{test}] {line}".rstrip() + "\n  " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def tap_for(stack: ChaosStack, caller: Caller) -> ReplyTap:
    client = aredis.Redis(port=stack.redis_port, username="caller", password=stack.password("caller"))
    return ReplyTap(client, caller.reply_channel)


def unnamed(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.named]


def ok_count(outcomes: list[Outcome]) -> int:
    return sum(o.ok for o in outcomes)


def warmed_up(outcomes: list[Outcome]) -> bool:
    return ok_count(outcomes) >= 30


def lost(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.ok]


Killed = tuple[Load, Runs, str, float, ReplyTap]


async def kill_one_replica(stack: ChaosStack, prefix: str, timeout: float, after: float) -> Killed:
    """Load, SIGKILL replica 1, keep loading for ``after`` s; the load, the runs, the dead
    replica's host name, the kill time (monotonic) and the reply counts."""
    since = time.time()
    victim = stack.containers(RESPONDER)[0]
    async with Caller(stack.settings(call_timeout=timeout), name="chaos") as caller, tap_for(stack, caller) as tap:
        async with Load(caller, stack.gateway_urls(), stack.jwt_secret, prefix, timeout=timeout) as load:
            await load.until(warmed_up, 30, "the load to run")
            killed_at = time.monotonic()
            await asyncio.to_thread(docker, "kill", "-s", "KILL", victim)
            await load.run_for(after)
    replicas = stack.containers(RESPONDER)
    runs = await asyncio.to_thread(settled_runs, replicas, [c for c in replicas if c != victim], prefix, since)
    return load, runs, runs.replica_of[victim], killed_at, tap


# -- pub/sub mode ----------------------------------------------------------------------------


async def test_sigkill_a_replica_pubsub(pubsub: ChaosStack) -> None:
    """At most once, but exactly once among the living: 0 requests run twice, every call
    answered or failed with a named error, none hung."""
    prefix = f"kill-pubsub-{secrets.token_hex(2)}"
    load, runs, victim, killed_at, tap = await kill_one_replica(pubsub, prefix, timeout=5.0, after=5.0)
    outcomes = load.outcomes
    twice = runs.started_twice()
    in_flight = runs.unfinished_on(victim)
    after_kill = [o for o in outcomes if o.started > killed_at + 1]
    record(
        "sigkill_pubsub",
        summary(outcomes),
        calls=len(outcomes),
        answered=ok_count(outcomes),
        executed_twice=len(twice),
        replies_more_than_once=tap.more_than_once(),
        hung_or_unnamed=len(unnamed(outcomes)),
        in_flight_on_killed_replica=len(in_flight),
        answered_after_kill=ok_count(after_kill),
        runs_per_replica=runs.per_replica(),
    )
    assert not unnamed(outcomes), f"calls hung or failed without a named error: {unnamed(outcomes)[:5]}"
    assert not twice, f"{len(twice)} requests executed more than once, e.g. {list(twice.items())[:3]}"
    assert tap.more_than_once() == 0, "a request was answered more than once (only the owner answers)"
    assert ok_count(after_kill) > 0, "the surviving replicas answered nothing after the kill"


async def redis_rounds(stack: ChaosStack, test: str, faults: list[str]) -> None:
    """Under load, each fault in turn. Every call in flight or started while Redis is away
    ends, named, within the detection bound; the gateways say not-ready meanwhile; the
    first good call comes soon after Redis is back; no process exits."""
    redis_id = stack.containers("redis")[0]
    lives = stack.lives()
    prefix = f"{test}-{secrets.token_hex(2)}"
    gateways = stack.gateway_urls()
    rounds = []
    async with Caller(stack.settings(call_timeout=15.0), name="chaos") as caller:
        async with Load(caller, gateways, stack.jwt_secret, prefix, ms=500, timeout=15.0) as load:
            await load.until(warmed_up, 30, "the load to run")
            for fault in faults:
                rounds.append(await fault_round(stack, caller, load, fault, redis_id, gateways))
                await load.run_for(2)
    outcomes = load.outcomes
    for round_, next_round in zip(rounds, rounds[1:], strict=False):
        round_.next_fault_at = next_round.fault_at
    healthy_again, unhealthy = await asyncio.to_thread(stack.wait_healthy, stack.everything(), 60)
    # Redis itself is stopped or killed on purpose; nothing else may exit or restart.
    watched = {cid: life for cid, life in lives.items() if cid != redis_id or faults == ["pause"]}
    now = stack.lives()
    exited = {cid: (life, now.get(cid)) for cid, life in watched.items() if now.get(cid) != life}
    record(
        test,
        summary(outcomes),
        processes_exited=len(exited),
        not_healthy_at_the_end=unhealthy,
        healthy_again_s=round(healthy_again, 1),
    )
    for n, round_ in enumerate(rounds, 1):
        record(f"{test}-{n}-{round_.fault}", "", **round_.figures(outcomes))
    assert not unnamed(outcomes), f"calls hung or failed without a named error: {unnamed(outcomes)[:5]}"
    for round_ in rounds:
        late = round_.late(outcomes)
        assert not late, f"{round_.fault}: {len(late)} calls ended over {DETECTION_BOUND}+{MARGIN}s after the fault: {late[:3]}"
        unready = round_.unready
        assert all(u is not None for u in unready), f"{round_.fault}: a gateway stayed ready with Redis away: {unready}"
        recovery = max(round_.recovery)
        assert recovery < RECOVERY_BOUND, (
            f"{round_.fault}: first good calls {round_.recovery}s after Redis was back (target {RECOVERY_TARGET}s)"
        )
        assert round_.listening < RECOVERY_BOUND, f"{round_.fault}: every responder listening {round_.listening:.2f}s after"
        failed = lost(round_.after(outcomes))
        assert not failed, f"{round_.fault}: {len(failed)} calls failed once everything was back: {failed[:5]}"
    assert not exited, f"processes exited or restarted: {exited}"


async def test_redis_stopped_killed_and_started_under_load(pubsub: ChaosStack) -> None:
    await redis_rounds(pubsub, "redis_restart", ["stop", "kill", "stop"])


async def test_redis_frozen_for_10s_under_load(pubsub: ChaosStack) -> None:
    await redis_rounds(pubsub, "redis_pause", ["pause"])


async def test_two_gateways_answer_and_push(pubsub: ChaosStack) -> None:
    """A browser (demo token, as the page gets one) on each gateway: its calls are answered,
    and the responders' pushes reach both."""
    gateways = pubsub.gateway_urls()
    async with Caller(pubsub.settings(), name="chaos") as caller:
        async with Load(caller, [], pubsub.jwt_secret, f"gateways-{secrets.token_hex(2)}"):
            results = await asyncio.gather(*(browser_round(url) for url in gateways))
    record(
        "two_gateways",
        f"{len(gateways)} gateways",
        echo_answered=[r["echo"] for r in results],
        work_replicas=[r["replica"] for r in results],
        push_after_s=[r["push_after_s"] for r in results],
    )
    assert all(r["echo"] for r in results)
    assert all(r["replica"] for r in results)
    assert all(r["push_after_s"] is not None for r in results)


async def browser_round(gateway: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, connect(http, gateway.replace("http", "ws", 1) + "/ws", DEMO) as ws:
        began = time.monotonic()
        echo = await ws.call(1, "echo", {"via": gateway})
        work = await ws.call(2, "work", {"ms": 10, "tag": "gateways-browser"})
        push = await ws.next("event", timeout=10, action="configs")
    return {
        "echo": echo.get("result") == {"via": gateway},
        "replica": (work.get("result") or {}).get("replica"),
        "push_after_s": round(time.monotonic() - began, 2) if push else None,
    }


# -- Streams mode ----------------------------------------------------------------------------


async def test_sigkill_a_replica_streams(streams: ChaosStack) -> None:
    """At least once, deduplicated: 0 lost, 0 run to completion twice, and what the dead
    replica had taken is answered by another within the visibility timeout."""
    prefix = f"kill-streams-{secrets.token_hex(2)}"
    load, runs, victim, killed_at, tap = await kill_one_replica(streams, prefix, timeout=15.0, after=5.0)
    outcomes = load.outcomes
    by_tag = {o.tag: o for o in outcomes}
    taken = [by_tag[tag] for tag in runs.unfinished_on(victim) if tag in by_tag]
    rescued_in = [round(o.ended - killed_at, 2) for o in taken if o.ok]
    bound = VISIBILITY + RECLAIM_MARGIN + load.ms / 1000
    started_twice = runs.started_twice()
    record(
        "sigkill_streams",
        summary(outcomes),
        calls=len(outcomes),
        lost=len(lost(outcomes)),
        completed_twice=len(runs.done_twice()),
        started_twice=len(started_twice),
        replies_more_than_once=tap.more_than_once(),
        in_flight_on_killed_replica=len(taken),
        answered_by_another_within_s=max(rescued_in, default=None),
        stream_length=streams.stream_length(),
    )
    assert not lost(outcomes), f"{len(lost(outcomes))} calls not answered: {lost(outcomes)[:5]}"
    assert not runs.done_twice(), f"run to completion twice: {list(runs.done_twice().items())[:3]}"
    assert all(victim in replicas for replicas in started_twice.values()), "a rerun that the dead replica had not started"
    assert all(o.ok and o.result["replica"] != victim for o in taken), "the dead replica's requests were not answered by another"
    assert max(rescued_in, default=0) <= bound, f"reclaimed requests answered {max(rescued_in)}s after the kill (bound {bound}s)"
    assert streams.stream_length() > 0, "requests did not go through the stream"


async def test_pause_a_replica_past_the_visibility_timeout_streams(streams: ChaosStack) -> None:
    """A frozen replica's requests are reclaimed; when it thaws, every caller still has
    exactly one reply, nothing is lost, and only what it had started before freezing ran
    twice (the at-least-once window docs/ explain)."""
    prefix = f"pause-streams-{secrets.token_hex(2)}"
    since = time.time()
    victim = streams.containers(RESPONDER)[0]
    async with Caller(streams.settings(call_timeout=15.0), name="chaos") as caller, tap_for(streams, caller) as tap:
        async with Load(caller, streams.gateway_urls(), streams.jwt_secret, prefix, timeout=15.0) as load:
            await load.until(warmed_up, 30, "the load to run")
            await asyncio.to_thread(docker, "pause", victim)
            frozen_at, frozen_mono = time.time(), time.monotonic()  # the victim logs nothing from here until it thaws
            await load.run_for(VISIBILITY + 2)
            await asyncio.to_thread(docker, "unpause", victim)
            await load.run_for(3)
    replicas = streams.containers(RESPONDER)
    runs = await asyncio.to_thread(settled_runs, replicas, replicas, prefix, since)
    host = runs.replica_of[victim]
    outcomes = load.outcomes
    twice = runs.started_twice()
    outside = [tag for tag, replicas in twice.items() if runs.started_at.get((tag, host), frozen_at + 1) > frozen_at]
    # The frozen replica's calls still in flight when it froze, and who answered them.
    by_tag = {o.tag: o for o in outcomes}
    started_there = [tag for (tag, replica), at in runs.started_at.items() if replica == host and at < frozen_at]
    frozen_with = [by_tag[tag] for tag in started_there if tag in by_tag and by_tag[tag].ended > frozen_mono]
    record(
        "pause_streams",
        summary(outcomes),
        calls=len(outcomes),
        lost=len(lost(outcomes)),
        ran_twice=len(twice),
        completed_twice=len(runs.done_twice()),
        ran_twice_not_started_before_the_freeze=len(outside),
        replies_more_than_once=tap.more_than_once(),
        in_flight_on_frozen_replica=len(frozen_with),
        answered_by_another=sum(o.ok and o.result["replica"] != host for o in frozen_with),
        stream_length=streams.stream_length(),
    )
    assert not lost(outcomes), f"{len(lost(outcomes))} calls not answered: {lost(outcomes)[:5]}"
    assert len({o.tag for o in outcomes}) == len(outcomes), "a call resolved twice"
    assert not outside, f"ran twice though the frozen replica had not started them: {outside[:5]}"
    assert tap.more_than_once() == 0, f"{tap.more_than_once()} host calls got more than one reply"
    assert streams.stream_length() > 0, "requests did not go through the stream"
